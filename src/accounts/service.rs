//! Account rules: password hashing, sign-in with throttling, one-time links, password
//! changes that revoke other sessions. No actix types here.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::Duration;
use sha2::{Digest, Sha256};

use super::model::*;
use super::queries;
use crate::audit;
use crate::db::{self, DbConn};
use crate::error::AppError;

/// Failed sign-ins allowed per account and per client address within the window.
pub const THROTTLE_LIMIT: i64 = 10;
/// The throttling window.
pub const THROTTLE_WINDOW_MINUTES: i64 = 15;
/// How long an invitation link stays valid.
pub const INVITE_VALID_HOURS: i64 = 7 * 24;
/// How long a password-reset link stays valid.
pub const RESET_VALID_HOURS: i64 = 24;

/// argon2id with OWASP's minimum (m = 19 MiB, t = 2, p = 1):
/// <https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html>.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19_456, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password (CPU-heavy: call through `db::blocking`).
pub fn hash_password(password: &Password) -> Result<String, AppError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("argon2 salt: {e}")))?;
    argon2()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("argon2: {e}")))
}

/// Checks a password against a stored hash. Without a hash (unknown user, invited user)
/// it still spends the same work on a dummy hash, so timing does not tell them apart.
pub fn verify_password(hash: Option<&str>, password: &str) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| {
        hash_password(&Password::parse("dummy password").expect("valid")).expect("hash")
    });
    let (stored, real) = match hash {
        Some(h) => (h, true),
        None => (dummy.as_str(), false),
    };
    let ok = PasswordHash::new(stored)
        .map(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false);
    ok && real
}

/// A fresh random token (256 bits, URL-safe).
pub fn new_token() -> String {
    crate::crypto::token()
}

/// The stored form of a token: its SHA-256, hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A password check counted as a failure until it proves right: counting first, in the same
/// transaction as the throttle check, means parallel guesses cannot slip past the limit.
pub struct PendingAttempt {
    failure_ids: Vec<i64>,
    /// The account of the typed address, if any.
    pub user: Option<User>,
}

/// Starts a password check for `email` from `ip` (run in a write transaction): refuses with
/// 429 when the account or the address has had too many failures within the window,
/// otherwise records this attempt as a failure and returns the account. No argon2 work
/// happens for a throttled attempt.
pub fn begin_attempt(conn: &mut DbConn, email: &str, ip: &str) -> Result<PendingAttempt, AppError> {
    let now = db::now();
    let since = now - Duration::minutes(THROTTLE_WINDOW_MINUTES);
    let subjects = [("account", email), ("ip", ip)];
    for (scope, subject) in subjects {
        queries::lock_login_subject(conn, &format!("{scope}:{subject}"))?;
    }
    for (scope, subject) in subjects {
        let (count, oldest) = queries::count_login_failures_since(conn, scope, subject, since)?;
        if count >= THROTTLE_LIMIT {
            let free_at = oldest.unwrap_or(now) + Duration::minutes(THROTTLE_WINDOW_MINUTES);
            let retry_after = (free_at - now).num_seconds().max(1) as u64;
            return Err(AppError::TooManyRequests { retry_after });
        }
    }
    let mut failure_ids = Vec::with_capacity(2);
    for (scope, subject) in subjects {
        failure_ids.push(queries::insert_login_failure(
            conn,
            &NewLoginFailure {
                scope,
                subject,
                created_at: now,
            },
        )?);
    }
    let user = queries::find_user_by_email(conn, email)?;
    Ok(PendingAttempt { failure_ids, user })
}

/// Ends a password check: a right password takes back this attempt's failures and the
/// account's earlier ones; a wrong one leaves them counted.
pub fn settle_attempt(
    conn: &mut DbConn,
    attempt: &PendingAttempt,
    password_ok: bool,
    email: &str,
) -> Result<(), AppError> {
    if password_ok {
        queries::delete_login_failures_by_id(conn, &attempt.failure_ids)?;
        queries::delete_login_failures(conn, "account", email)?;
    }
    Ok(())
}

/// Records the outcome of a sign-in whose password was checked (`password_ok`). Unknown
/// address, wrong password, invited and disabled accounts all come back as `None`.
pub fn record_login(
    conn: &mut DbConn,
    attempt: PendingAttempt,
    password_ok: bool,
    email: &str,
    ip: &str,
) -> Result<Option<User>, AppError> {
    let signed_in = password_ok && attempt.user.as_ref().is_some_and(|u| !u.is_disabled());
    settle_attempt(conn, &attempt, signed_in, email)?;
    match attempt.user {
        Some(user) if signed_in => {
            audit::record(conn, audit::entry("login.success", Some(&user), ip))?;
            Ok(Some(user))
        }
        user => {
            let mut entry = audit::entry("login.failure", user.as_ref(), ip);
            entry.actor_email = email.to_owned();
            entry.detail = match &user {
                None => "unknown address".into(),
                Some(u) if u.is_disabled() => "account disabled".into(),
                Some(u) if !u.has_password() => "invitation not accepted yet".into(),
                Some(_) => "wrong password".into(),
            };
            audit::record(conn, entry)?;
            tracing::info!(ip, "sign-in failed");
            Ok(None)
        }
    }
}

/// Creates a one-time set-password link for `user`, voiding older ones. Returns the token.
pub fn create_password_link(
    conn: &mut DbConn,
    user: UserId,
    purpose: TokenPurpose,
    created_by: Option<UserId>,
) -> Result<String, AppError> {
    let now = db::now();
    let token = new_token();
    let hours = match purpose {
        TokenPurpose::Invite => INVITE_VALID_HOURS,
        TokenPurpose::Reset => RESET_VALID_HOURS,
    };
    queries::void_password_tokens_of_user(conn, user, now)?;
    queries::insert_password_token(
        conn,
        &NewPasswordToken {
            user_id: user,
            token_hash: &hash_token(&token),
            purpose: purpose.as_str(),
            created_by,
            created_at: now,
            expires_at: now + Duration::hours(hours),
        },
    )?;
    Ok(token)
}

/// A link that may still be redeemed: unused, not expired, and its creator (when an admin
/// made it for someone else) still an active admin of every workspace the account belongs
/// to. An account another workspace has come to rely on since is no longer theirs to set
/// a password for, so the link answers as expired (in the same words as an expired one).
fn live_link(
    conn: &mut DbConn,
    token: &str,
    now: chrono::NaiveDateTime,
) -> Result<Option<PasswordToken>, AppError> {
    let Some(link) = queries::find_live_password_token(conn, &hash_token(token), now)? else {
        return Ok(None);
    };
    let creator_may = match link.created_by {
        // Every link has a creator; none left means the creator's account was deleted.
        None => false,
        // Made by the account's owner.
        Some(creator) if creator == link.user_id => true,
        Some(creator) => {
            queries::find_user_by_id(conn, creator)?
                .is_some_and(|c| !c.is_disabled() && c.has_password())
                && queries::administers_every_workspace_of(conn, creator, link.user_id)?
        }
    };
    Ok(creator_may.then_some(link))
}

/// The account a live link belongs to (for showing the form).
pub fn find_link_owner(conn: &mut DbConn, token: &str) -> Result<Option<User>, AppError> {
    let Some(link) = live_link(conn, token, db::now())? else {
        return Ok(None);
    };
    Ok(queries::find_user_by_id(conn, link.user_id)?.filter(|u| !u.is_disabled()))
}

/// Spends a link: sets the password (hashed by the caller), voids every link of the user
/// and signs out all of their sessions. Run inside a write transaction.
pub fn redeem_password_link(
    conn: &mut DbConn,
    token: &str,
    hash: &str,
    ip: &str,
) -> Result<User, AppError> {
    let now = db::now();
    let link = live_link(conn, token, now)?.ok_or_else(|| {
        AppError::Validation(
            "This link has expired or was already used. Ask an admin for a new one.".into(),
        )
    })?;
    let user = queries::find_user_by_id(conn, link.user_id)?
        .filter(|u| !u.is_disabled())
        .ok_or_else(|| AppError::Validation("This account is disabled.".into()))?;
    queries::update_password(conn, user.id, hash, now)?;
    queries::void_password_tokens_of_user(conn, user.id, now)?;
    queries::revoke_sessions(conn, user.id, now, None)?;
    let mut entry = audit::entry("password.set", Some(&user), ip);
    entry.detail = format!("through a one-time {} link", link.purpose);
    audit::record(conn, entry)?;
    Ok(user)
}

/// Changes one's own password: signs out every other session of the user.
pub fn change_password(
    conn: &mut DbConn,
    user: &User,
    new_hash: &str,
    current_session: &str,
    ip: &str,
) -> Result<(), AppError> {
    let now = db::now();
    queries::update_password(conn, user.id, new_hash, now)?;
    queries::revoke_sessions(conn, user.id, now, Some(current_session))?;
    audit::record(conn, audit::entry("password.changed", Some(user), ip))?;
    Ok(())
}

/// Deletes expired sessions and throttling records; run periodically.
pub fn sweep(conn: &mut DbConn) -> Result<(usize, usize), AppError> {
    let now = db::now();
    let sessions = queries::delete_expired_sessions(conn, now)?;
    let failures = queries::delete_login_failures_before(
        conn,
        now - Duration::minutes(THROTTLE_WINDOW_MINUTES),
    )?;
    Ok((sessions, failures))
}
