//! All SQL of the accounts slice.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::model::*;
use crate::db::DbConn;
use crate::db::schema::{login_failures, memberships, password_tokens, sessions, users};

type QResult<T> = Result<T, diesel::result::Error>;

/// Number of accounts (0 means the instance still needs its first admin).
pub fn count_users(conn: &mut DbConn) -> QResult<i64> {
    users::table.count().get_result(conn)
}

/// The user with this sign-in address.
pub fn find_user_by_email(conn: &mut DbConn, email: &str) -> QResult<Option<User>> {
    users::table
        .filter(users::email.eq(email))
        .select(User::as_select())
        .first(conn)
        .optional()
}

/// The user with this id.
pub fn find_user_by_id(conn: &mut DbConn, id: UserId) -> QResult<Option<User>> {
    users::table
        .find(id)
        .select(User::as_select())
        .first(conn)
        .optional()
}

/// Creates an account.
pub fn insert_user(conn: &mut DbConn, new: &NewUser<'_>) -> QResult<UserId> {
    diesel::insert_into(users::table)
        .values(new)
        .returning(users::id)
        .get_result(conn)
}

/// Replaces the password hash.
pub fn update_password(
    conn: &mut DbConn,
    id: UserId,
    hash: &str,
    at: NaiveDateTime,
) -> QResult<()> {
    diesel::update(users::table.find(id))
        .set((
            users::password_hash.eq(hash),
            users::password_changed_at.eq(at),
        ))
        .execute(conn)
        .map(drop)
}

/// Disables (`Some(time)`) or enables (`None`) an account.
pub fn update_disabled(conn: &mut DbConn, id: UserId, at: Option<NaiveDateTime>) -> QResult<()> {
    diesel::update(users::table.find(id))
        .set(users::disabled_at.eq(at))
        .execute(conn)
        .map(drop)
}

/// The live session whose key hashes to `key_hash`.
pub fn find_session_by_key_hash(
    conn: &mut DbConn,
    key_hash: &str,
    now: NaiveDateTime,
) -> QResult<Option<SessionRow>> {
    sessions::table
        .filter(sessions::key_hash.eq(key_hash))
        .filter(sessions::expires_at.gt(now))
        .select(SessionRow::as_select())
        .first(conn)
        .optional()
}

/// Stores a new session.
pub fn insert_session(conn: &mut DbConn, new: &NewSession) -> QResult<()> {
    diesel::insert_into(sessions::table)
        .values(new)
        .execute(conn)
        .map(drop)
}

/// Replaces a session's state and expiry; returns how many rows changed (0: it was revoked).
pub fn update_session(
    conn: &mut DbConn,
    key_hash: &str,
    user_id: Option<UserId>,
    state: &str,
    expires_at: NaiveDateTime,
) -> QResult<usize> {
    diesel::update(sessions::table.filter(sessions::key_hash.eq(key_hash)))
        .set((
            sessions::user_id.eq(user_id),
            sessions::state.eq(state),
            sessions::expires_at.eq(expires_at),
        ))
        .execute(conn)
}

/// Moves a session's expiry.
pub fn update_session_expiry(
    conn: &mut DbConn,
    key_hash: &str,
    expires_at: NaiveDateTime,
) -> QResult<()> {
    diesel::update(sessions::table.filter(sessions::key_hash.eq(key_hash)))
        .set(sessions::expires_at.eq(expires_at))
        .execute(conn)
        .map(drop)
}

/// Deletes one session.
pub fn delete_session_by_key_hash(conn: &mut DbConn, key_hash: &str) -> QResult<()> {
    diesel::delete(sessions::table.filter(sessions::key_hash.eq(key_hash)))
        .execute(conn)
        .map(drop)
}

/// Voids every session of the user signed in before `at` (even one that a request in
/// flight is saving right now), then deletes their rows except the one with public id `keep`.
pub fn revoke_sessions(
    conn: &mut DbConn,
    user: UserId,
    at: NaiveDateTime,
    keep: Option<&str>,
) -> QResult<usize> {
    diesel::update(users::table.find(user))
        .set(users::sessions_revoked_at.eq(at))
        .execute(conn)?;
    delete_sessions_of_user(conn, user, keep)
}

/// Deletes every session row of a user, except the one with public id `keep`.
pub fn delete_sessions_of_user(
    conn: &mut DbConn,
    user: UserId,
    keep: Option<&str>,
) -> QResult<usize> {
    let scope = sessions::table.filter(sessions::user_id.eq(user));
    match keep {
        Some(public_id) => {
            diesel::delete(scope.filter(sessions::public_id.ne(public_id))).execute(conn)
        }
        None => diesel::delete(scope).execute(conn),
    }
}

/// Deletes sessions that have expired.
pub fn delete_expired_sessions(conn: &mut DbConn, now: NaiveDateTime) -> QResult<usize> {
    diesel::delete(sessions::table.filter(sessions::expires_at.le(now))).execute(conn)
}

/// Stores a one-time link.
pub fn insert_password_token(conn: &mut DbConn, new: &NewPasswordToken<'_>) -> QResult<()> {
    diesel::insert_into(password_tokens::table)
        .values(new)
        .execute(conn)
        .map(drop)
}

/// The unused, unexpired link whose token hashes to `token_hash`.
pub fn find_live_password_token(
    conn: &mut DbConn,
    token_hash: &str,
    now: NaiveDateTime,
) -> QResult<Option<PasswordToken>> {
    password_tokens::table
        .filter(password_tokens::token_hash.eq(token_hash))
        .filter(password_tokens::used_at.is_null())
        .filter(password_tokens::expires_at.gt(now))
        .select(PasswordToken::as_select())
        .first(conn)
        .optional()
}

/// Whether `actor` administers every workspace `target` belongs to, and `target` belongs
/// to at least one: one workspace's admin never acts on an account that another workspace
/// relies on (disabling it, or setting its password through a link).
pub fn administers_every_workspace_of(
    conn: &mut DbConn,
    actor: UserId,
    target: UserId,
) -> QResult<bool> {
    let of_target: Vec<i64> = memberships::table
        .filter(memberships::user_id.eq(target))
        .select(memberships::workspace_id)
        .load(conn)?;
    let administered: Vec<i64> = memberships::table
        .filter(memberships::user_id.eq(actor))
        .filter(memberships::role.eq("admin"))
        .filter(memberships::workspace_id.eq_any(&of_target))
        .select(memberships::workspace_id)
        .load(conn)?;
    Ok(!of_target.is_empty() && of_target.iter().all(|w| administered.contains(w)))
}

/// Voids every open link of a user (a new link replaces older ones; a used one is spent).
pub fn void_password_tokens_of_user(
    conn: &mut DbConn,
    user: UserId,
    now: NaiveDateTime,
) -> QResult<()> {
    diesel::update(
        password_tokens::table
            .filter(password_tokens::user_id.eq(user))
            .filter(password_tokens::used_at.is_null()),
    )
    .set(password_tokens::used_at.eq(now))
    .execute(conn)
    .map(drop)
}

/// Records a failed sign-in (provisionally, before the password is checked).
pub fn insert_login_failure(conn: &mut DbConn, new: &NewLoginFailure<'_>) -> QResult<i64> {
    diesel::insert_into(login_failures::table)
        .values(new)
        .returning(login_failures::id)
        .get_result(conn)
}

/// Deletes provisional failures once the password proved right.
pub fn delete_login_failures_by_id(conn: &mut DbConn, ids: &[i64]) -> QResult<()> {
    diesel::delete(login_failures::table.filter(login_failures::id.eq_any(ids)))
        .execute(conn)
        .map(drop)
}

/// Serializes sign-in attempts on one subject, so parallel guesses cannot all pass the
/// count before any is recorded. SQLite's immediate transaction already serializes writers.
pub fn lock_login_subject(conn: &mut DbConn, subject: &str) -> QResult<()> {
    match conn {
        DbConn::Pg(c) => diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1))::text")
            .bind::<diesel::sql_types::Text, _>(subject)
            .execute(c)
            .map(drop),
        DbConn::Sqlite(_) => Ok(()),
    }
}

/// Failures of one subject since `since`: how many, and the oldest time among them.
pub fn count_login_failures_since(
    conn: &mut DbConn,
    scope: &str,
    subject: &str,
    since: NaiveDateTime,
) -> QResult<(i64, Option<NaiveDateTime>)> {
    let filtered = login_failures::table
        .filter(login_failures::scope.eq(scope))
        .filter(login_failures::subject.eq(subject))
        .filter(login_failures::created_at.gt(since));
    let count = filtered.count().get_result(conn)?;
    let oldest = filtered
        .select(diesel::dsl::min(login_failures::created_at))
        .first(conn)?;
    Ok((count, oldest))
}

/// Forgets the failures of one subject (after a successful sign-in).
pub fn delete_login_failures(conn: &mut DbConn, scope: &str, subject: &str) -> QResult<()> {
    diesel::delete(
        login_failures::table
            .filter(login_failures::scope.eq(scope))
            .filter(login_failures::subject.eq(subject)),
    )
    .execute(conn)
    .map(drop)
}

/// Deletes failures older than the throttling window.
pub fn delete_login_failures_before(conn: &mut DbConn, before: NaiveDateTime) -> QResult<usize> {
    diesel::delete(login_failures::table.filter(login_failures::created_at.le(before)))
        .execute(conn)
}
