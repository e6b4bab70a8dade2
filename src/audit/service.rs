//! Writing audit entries.

use super::model::NewAuditEntry;
use super::queries;
use crate::accounts::model::User;
use crate::db::{self, DbConn};
use crate::error::AppError;

/// Starts an entry for `action` by `actor` from `ip`; fill in workspace, target and detail.
pub fn entry(action: &str, actor: Option<&User>, ip: &str) -> NewAuditEntry {
    NewAuditEntry {
        workspace_id: None,
        actor_user_id: actor.map(|u| u.id),
        actor_email: actor.map(|u| u.email.clone()).unwrap_or_default(),
        action: action.to_owned(),
        target: String::new(),
        detail: String::new(),
        ip: ip.to_owned(),
        created_at: db::now(),
    }
}

/// Writes an entry (in the caller's transaction, so the change and its record go together).
pub fn record(conn: &mut DbConn, entry: NewAuditEntry) -> Result<(), AppError> {
    queries::insert(conn, &entry)?;
    Ok(())
}
