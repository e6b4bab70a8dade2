//! API keys: rows, scopes, the parsed form, and the key format.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Deserialize;

use crate::accounts::model::UserId;
use crate::db::schema::api_keys;
pub use crate::ids::ApiKeyId;
use crate::web::forms::FieldErrors;
use crate::workspaces::model::WorkspaceId;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Send, and read back what it sent.
    Send,
    /// Send, and read every message and provider of the workspace.
    SendRead,
}

impl Scope {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::SendRead => "send+read",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Scope> {
        match value {
            "send" => Some(Scope::Send),
            "send+read" => Some(Scope::SendRead),
            _ => None,
        }
    }
}

/// A stored key (never the key itself: its hash).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    /// Id.
    pub id: ApiKeyId,
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// A name for people ("Help desk"); shown as the origin of its messages.
    pub name: String,
    /// `send` or `send+read`.
    pub scope: String,
    /// The visible start of the key, e.g. `mr_1a2b3c4d`.
    pub prefix: String,
    /// SHA-256 of the whole key, hex.
    pub secret_hash: String,
    /// Requests per minute, if limited.
    pub per_minute: Option<i32>,
    /// The admin who created it (the default owner of its messages).
    pub created_by: Option<UserId>,
    /// Creation time.
    pub created_at: NaiveDateTime,
    /// Last request (updated at most once a minute).
    pub last_used_at: Option<NaiveDateTime>,
    /// Revocation time; a revoked key answers 401.
    pub revoked_at: Option<NaiveDateTime>,
    /// The sender its sends go out as when they name none in `from`.
    pub default_sender_id: Option<crate::ids::SenderId>,
}

impl ApiKey {
    /// The scope.
    pub fn scope(&self) -> Scope {
        Scope::parse(&self.scope).unwrap_or(Scope::Send)
    }

    /// Whether it may read every message and provider (not only its own sends).
    pub fn can_read(&self) -> bool {
        self.scope() == Scope::SendRead
    }
}

/// A key to store.
#[derive(Debug, Insertable)]
#[diesel(table_name = api_keys)]
pub struct NewApiKey {
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Name.
    pub name: String,
    /// Scope.
    pub scope: String,
    /// Visible prefix.
    pub prefix: String,
    /// Hash of the key.
    pub secret_hash: String,
    /// Requests per minute.
    pub per_minute: Option<i32>,
    /// Creator.
    pub created_by: Option<UserId>,
    /// Now.
    pub created_at: NaiveDateTime,
}

/// The new-key form as posted.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeyForm {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// `send` or `send+read`.
    #[serde(default)]
    pub scope: String,
    /// Requests per minute (empty: unlimited).
    #[serde(default)]
    pub per_minute: String,
}

/// A parsed key request.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    /// Name.
    pub name: String,
    /// Scope.
    pub scope: Scope,
    /// Requests per minute.
    pub per_minute: Option<i32>,
}

impl KeyForm {
    /// Parses every field, naming what is wrong.
    pub fn parse(&self, errors: &mut FieldErrors) -> Option<KeyRequest> {
        let name = self.name.trim();
        if name.is_empty() {
            errors.add("name", "Give the key a name, e.g. the system that uses it.");
        } else if name.chars().any(char::is_control) || name.chars().count() > 100 {
            errors.add(
                "name",
                "A name has at most 100 characters and no line breaks.",
            );
        }
        let scope = Scope::parse(self.scope.trim());
        if scope.is_none() {
            errors.add("scope", "Choose send, or send and read.");
        }
        let per_minute = errors.check(
            "per_minute",
            match self.per_minute.trim() {
                "" => Ok(None),
                value => value
                    .parse::<i32>()
                    .ok()
                    .filter(|n| (1..=1_000_000).contains(n))
                    .map(Some)
                    .ok_or_else(|| {
                        "Requests per minute is a number from 1 to 1,000,000, or empty for no limit."
                            .to_string()
                    }),
            },
        );
        Some(KeyRequest {
            name: name.to_owned(),
            scope: scope?,
            per_minute: per_minute?,
        })
        .filter(|_| errors.is_empty())
    }
}

/// Splits a presented key `mr_<prefix>_<secret>` into its lookup prefix; `None` when it
/// is not shaped like one of ours.
pub fn prefix_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("mr_")?;
    let (prefix, secret) = rest.split_once('_')?;
    (prefix.len() == 8
        && prefix.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.len() >= 32
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then(|| &key[..11])
}

#[cfg(test)]
mod tests {
    use super::prefix_of;

    #[test]
    fn only_keys_shaped_like_ours_have_a_prefix() {
        let key = format!("mr_0a1b2c3d_{}", "x".repeat(43));
        assert_eq!(prefix_of(&key), Some("mr_0a1b2c3d"));
        assert_eq!(prefix_of("mr_0a1b2c3d_short"), None);
        assert_eq!(prefix_of(&format!("mr_0a1b2c3z_{}", "x".repeat(43))), None);
        assert_eq!(prefix_of(&format!("xx_0a1b2c3d_{}", "x".repeat(43))), None);
        assert_eq!(
            prefix_of(&format!("mr_0a1b2c3d_{}\r\n", "x".repeat(43))),
            None
        );
    }
}

/// A remembered `Idempotency-Key`: the request's fingerprint and the answer it got.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = crate::db::schema::idempotency_keys)]
pub struct Remembered {
    /// The key that used it.
    pub api_key_id: ApiKeyId,
    /// The header's value.
    pub idempotency_key: String,
    /// SHA-256 of the request (query and body).
    pub request_hash: String,
    /// The answer's status.
    pub status_code: Option<i32>,
    /// The answer's body.
    pub response: Option<String>,
    /// First use; kept 24 h.
    pub created_at: NaiveDateTime,
}

/// A remembered key to store.
#[derive(Debug, Insertable)]
#[diesel(table_name = crate::db::schema::idempotency_keys)]
pub struct NewRemembered {
    /// Key.
    pub api_key_id: ApiKeyId,
    /// Header value.
    pub idempotency_key: String,
    /// Fingerprint.
    pub request_hash: String,
    /// Status.
    pub status_code: Option<i32>,
    /// Body.
    pub response: Option<String>,
    /// Now.
    pub created_at: NaiveDateTime,
}

/// A file uploaded through the API, attached by id to later messages.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = crate::db::schema::api_files)]
pub struct ApiFile {
    /// Id.
    pub id: i64,
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// Safe file name.
    pub file_name: String,
    /// MIME type.
    pub content_type: String,
    /// Bytes.
    pub size: i64,
    /// Contents.
    pub data: Vec<u8>,
    /// Upload time.
    pub created_at: NaiveDateTime,
}

/// A file to store.
#[derive(Debug, Insertable)]
#[diesel(table_name = crate::db::schema::api_files)]
pub struct NewApiFile {
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Safe file name.
    pub file_name: String,
    /// MIME type.
    pub content_type: String,
    /// Bytes.
    pub size: i64,
    /// Contents.
    pub data: Vec<u8>,
    /// Now.
    pub created_at: NaiveDateTime,
}

/// A file's name, type, size and upload time, without its contents.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = crate::db::schema::api_files)]
pub struct ApiFileInfo {
    /// Id.
    pub id: i64,
    /// Safe file name.
    pub file_name: String,
    /// MIME type.
    pub content_type: String,
    /// Bytes.
    pub size: i64,
    /// Upload time.
    pub created_at: NaiveDateTime,
}
