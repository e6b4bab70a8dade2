//! Audit log rows.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::accounts::model::UserId;
use crate::db::schema::audit_log;

/// An entry to write.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_log)]
pub struct NewAuditEntry {
    /// The workspace it concerns; `None` for account events (sign-in, password).
    pub workspace_id: Option<i64>,
    /// Who did it (`None`: unknown, e.g. a failed sign-in for an unknown address).
    pub actor_user_id: Option<UserId>,
    /// The address of who did it (kept if the user goes away).
    pub actor_email: String,
    /// What happened, e.g. `login.success`, `member.role_changed`.
    pub action: String,
    /// What it happened to.
    pub target: String,
    /// Details in words.
    pub detail: String,
    /// Client address.
    pub ip: String,
    /// When.
    pub created_at: NaiveDateTime,
}

/// A stored entry.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_log)]
pub struct AuditEntry {
    /// Id (newest is largest).
    pub id: i64,
    /// Workspace.
    pub workspace_id: Option<i64>,
    /// Actor.
    pub actor_user_id: Option<UserId>,
    /// Actor's address.
    pub actor_email: String,
    /// What happened.
    pub action: String,
    /// To what.
    pub target: String,
    /// Details.
    pub detail: String,
    /// Client address.
    pub ip: String,
    /// When.
    pub created_at: NaiveDateTime,
}
