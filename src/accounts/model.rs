//! Users, sessions and one-time password links: rows and the parsed input types.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::{login_failures, password_tokens, sessions, users};
pub use crate::ids::UserId;

/// An account. A user without a password hash has been invited and not yet set one.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Sign-in address, lower case.
    pub email: String,
    /// Display name (may be empty).
    pub name: String,
    /// argon2id PHC string; `None` until the user sets a password.
    pub password_hash: Option<String>,
    /// When an admin disabled the account.
    pub disabled_at: Option<NaiveDateTime>,
    /// When the password was last changed.
    pub password_changed_at: Option<NaiveDateTime>,
    /// Sessions signed in before this are void.
    pub sessions_revoked_at: Option<NaiveDateTime>,
    /// Creation time.
    pub created_at: NaiveDateTime,
}

impl User {
    /// The name if there is one, else the address.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.email
        } else {
            &self.name
        }
    }

    /// Whether the account is disabled.
    pub fn is_disabled(&self) -> bool {
        self.disabled_at.is_some()
    }

    /// Whether a session signed in at `signed_in_at` is still valid.
    pub fn accepts_session_from(&self, signed_in_at: NaiveDateTime) -> bool {
        self.sessions_revoked_at
            .is_none_or(|revoked| signed_in_at >= revoked)
    }

    /// Whether the user has set a password (an invited user has not).
    pub fn has_password(&self) -> bool {
        self.password_hash.is_some()
    }
}

/// A new account.
#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    /// Sign-in address.
    pub email: &'a str,
    /// Display name.
    pub name: &'a str,
    /// argon2id hash, or `None` for an invited user.
    pub password_hash: Option<&'a str>,
    /// Set with the hash.
    pub password_changed_at: Option<NaiveDateTime>,
    /// Now.
    pub created_at: NaiveDateTime,
}

/// A stored server-side session.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sessions)]
pub struct SessionRow {
    /// Row id.
    pub id: i64,
    /// Public id: safe to show and to record on messages; never the cookie value.
    pub public_id: String,
    /// SHA-256 of the cookie's session key.
    pub key_hash: String,
    /// The signed-in user, if any.
    pub user_id: Option<UserId>,
    /// actix-session state as a JSON object of JSON strings.
    pub state: String,
    /// Creation time.
    pub created_at: NaiveDateTime,
    /// The session is void after this.
    pub expires_at: NaiveDateTime,
}

/// A session to store.
#[derive(Debug, Insertable)]
#[diesel(table_name = sessions)]
pub struct NewSession {
    /// Public id.
    pub public_id: String,
    /// SHA-256 of the key.
    pub key_hash: String,
    /// Signed-in user.
    pub user_id: Option<UserId>,
    /// State JSON.
    pub state: String,
    /// Now.
    pub created_at: NaiveDateTime,
    /// Expiry.
    pub expires_at: NaiveDateTime,
}

/// What a one-time password link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// A new member sets their first password.
    Invite,
    /// A member who forgot their password sets a new one.
    Reset,
}

impl TokenPurpose {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invite => "invite",
            Self::Reset => "reset",
        }
    }
}

/// A one-time set-password link (only its hash is stored).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = password_tokens)]
pub struct PasswordToken {
    /// Row id.
    pub id: i64,
    /// Whose password it sets.
    pub user_id: UserId,
    /// SHA-256 of the token.
    pub token_hash: String,
    /// `invite` or `reset`.
    pub purpose: String,
    /// The admin who created it.
    pub created_by: Option<UserId>,
    /// Creation time.
    pub created_at: NaiveDateTime,
    /// Void after this.
    pub expires_at: NaiveDateTime,
    /// Set when used; a used link never works again.
    pub used_at: Option<NaiveDateTime>,
}

/// A new one-time link.
#[derive(Debug, Insertable)]
#[diesel(table_name = password_tokens)]
pub struct NewPasswordToken<'a> {
    /// Whose password it sets.
    pub user_id: UserId,
    /// SHA-256 of the token.
    pub token_hash: &'a str,
    /// `invite` or `reset`.
    pub purpose: &'a str,
    /// The admin who created it.
    pub created_by: Option<UserId>,
    /// Now.
    pub created_at: NaiveDateTime,
    /// Expiry.
    pub expires_at: NaiveDateTime,
}

/// A failed sign-in, counted per account and per client address.
#[derive(Debug, Insertable)]
#[diesel(table_name = login_failures)]
pub struct NewLoginFailure<'a> {
    /// `account` or `ip`.
    pub scope: &'a str,
    /// The address tried, or the client IP.
    pub subject: &'a str,
    /// Now.
    pub created_at: NaiveDateTime,
}

/// A sign-in address: trimmed, lower case, one `@`, no spaces or control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses what a person typed.
    pub fn parse(input: &str) -> Result<Self, String> {
        let value = input.trim().to_lowercase();
        if value.is_empty() {
            return Err("Enter an email address.".into());
        }
        if value.len() > 254 {
            return Err("An email address has at most 254 characters.".into());
        }
        if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("An email address cannot contain spaces or line breaks.".into());
        }
        match value.split_once('@') {
            Some((local, domain))
                if !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.') =>
            {
                Ok(Self(value))
            }
            _ => Err(format!(
                "{:?} is not an email address like name@example.com.",
                input.trim()
            )),
        }
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password: 8 to 128 characters, used whole (never truncated).
#[derive(Clone)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// Minimum length in characters.
    pub const MIN: usize = 8;
    /// Maximum length in characters.
    pub const MAX: usize = 128;

    /// Checks the length rules.
    pub fn parse(input: &str) -> Result<Self, String> {
        let n = input.chars().count();
        if n < Self::MIN {
            return Err(format!(
                "A password needs at least {} characters.",
                Self::MIN
            ));
        }
        if n > Self::MAX {
            return Err(format!("A password has at most {} characters.", Self::MAX));
        }
        Ok(Self(input.to_owned()))
    }

    /// The password.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A display name: optional, one line, at most 100 characters.
pub fn parse_name(input: &str) -> Result<String, String> {
    let value = input.trim();
    if value.chars().any(char::is_control) {
        return Err("A name cannot contain line breaks or control characters.".into());
    }
    if value.chars().count() > 100 {
        return Err("A name has at most 100 characters.".into());
    }
    Ok(value.to_owned())
}
