//! API key rules: creation (the key shown once, stored hashed), revocation, and finding
//! the key a request presents. Every change writes an audit entry in its transaction.

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::model::*;
use super::queries;
use crate::accounts::model::UserId;
use crate::audit;
use crate::db::{self, DbConn};
use crate::error::AppError;
use crate::workspaces::model::Workspace;
use crate::workspaces::service::Actor;

/// SHA-256 of a key, hex. Keys carry 256 random bits, so a fast hash is enough (no
/// password stretching needed) and lookups stay cheap on every request.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A fresh key: `mr_` + 8 hex characters (the visible prefix) + `_` + 43 characters of
/// URL-safe base64 (256 random bits).
fn generate() -> String {
    let prefix = hex::encode(rand::random::<[u8; 4]>());
    let secret =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    format!("mr_{prefix}_{secret}")
}

/// Who creates a key: a signed-in admin, or the command line.
pub enum Creator<'a> {
    /// An admin in the console.
    Admin(&'a Actor<'a>),
    /// `mailroom api-key create`, on behalf of an admin of the workspace.
    Cli(UserId),
}

/// Creates a key; returns it with the key itself, which is never stored or shown again.
pub fn create(
    conn: &mut DbConn,
    workspace: &Workspace,
    creator: &Creator<'_>,
    request: &KeyRequest,
) -> Result<(ApiKey, String), AppError> {
    let key = generate();
    let prefix = prefix_of(&key)
        .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("generated key has no prefix")))?
        .to_owned();
    let created_by = match creator {
        Creator::Admin(actor) => actor.user.id,
        Creator::Cli(user) => *user,
    };
    let stored = queries::insert(
        conn,
        &NewApiKey {
            workspace_id: workspace.id,
            name: request.name.clone(),
            scope: request.scope.as_str().into(),
            prefix,
            secret_hash: hash(&key),
            per_minute: request.per_minute,
            created_by: Some(created_by),
            created_at: db::now(),
        },
    )?;
    let detail = format!(
        "{} ({}), {}",
        stored.prefix,
        request.scope.as_str(),
        request
            .per_minute
            .map_or("no rate limit".to_owned(), |n| format!("{n} requests/min"))
    );
    let mut entry = match creator {
        Creator::Admin(actor) => audit::entry("api_key.created", Some(actor.user), actor.ip),
        Creator::Cli(_) => {
            let mut entry = audit::entry("api_key.created", None, "cli");
            entry.actor_email = "mailroom api-key create".into();
            entry
        }
    };
    entry.workspace_id = Some(workspace.id.0);
    entry.target = stored.name.clone();
    entry.detail = detail;
    audit::record(conn, entry)?;
    Ok((stored, key))
}

/// Revokes a key of the workspace: it answers 401 from the next request on.
pub fn revoke(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    id: ApiKeyId,
) -> Result<ApiKey, AppError> {
    let revoked = queries::revoke(conn, workspace.id, id, db::now())?.ok_or(AppError::NotFound)?;
    let mut entry = audit::entry("api_key.revoked", Some(actor.user), actor.ip);
    entry.workspace_id = Some(workspace.id.0);
    entry.target = revoked.name.clone();
    entry.detail = revoked.prefix.clone();
    audit::record(conn, entry)?;
    Ok(revoked)
}

/// Sets the sender a key's sends go out as when they name none (`None`: no default). The
/// key and the sender must be this workspace's. Returns the key and the sender's address.
pub fn set_default_sender(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    id: ApiKeyId,
    sender: Option<crate::ids::SenderId>,
) -> Result<(ApiKey, Option<String>), AppError> {
    let key = queries::find(conn, workspace.id, id)?
        .filter(|k| k.revoked_at.is_none())
        .ok_or(AppError::NotFound)?;
    let address = match sender {
        Some(sender) => Some(
            crate::senders::queries::find(conn, workspace.id, sender)?
                .ok_or(AppError::NotFound)?
                .address,
        ),
        None => None,
    };
    queries::set_default_sender(conn, workspace.id, id, sender)?;
    let mut entry = audit::entry("api_key.default_sender", Some(actor.user), actor.ip);
    entry.workspace_id = Some(workspace.id.0);
    entry.target = key.name.clone();
    entry.detail = address.clone().unwrap_or_else(|| "none".into());
    audit::record(conn, entry)?;
    Ok((key, address))
}

/// The live key a request presents, with its workspace, or `None` (unknown, wrong or
/// revoked: the caller answers 401 alike).
pub fn authenticate(
    conn: &mut DbConn,
    presented: &str,
) -> Result<Option<(ApiKey, Workspace)>, AppError> {
    let Some(prefix) = prefix_of(presented) else {
        return Ok(None);
    };
    let Some((key, workspace)) = queries::find_by_prefix(conn, prefix)? else {
        return Ok(None);
    };
    let matches: bool = hash(presented)
        .as_bytes()
        .ct_eq(key.secret_hash.as_bytes())
        .into();
    Ok((matches && key.revoked_at.is_none()).then_some((key, workspace)))
}

/// Turns per-request SMTP settings in API calls on or off.
pub fn set_per_request_smtp(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    on: bool,
) -> Result<(), AppError> {
    crate::workspaces::queries::set_per_request_smtp(conn, workspace.id, on)?;
    let mut entry = audit::entry("workspace.per_request_smtp", Some(actor.user), actor.ip);
    entry.workspace_id = Some(workspace.id.0);
    entry.target = workspace.slug.clone();
    entry.detail = if on { "on" } else { "off" }.into();
    audit::record(conn, entry)?;
    Ok(())
}
