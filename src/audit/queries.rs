//! All SQL of the audit log.

use diesel::prelude::*;

use super::model::{AuditEntry, NewAuditEntry};
use crate::db::DbConn;
use crate::db::schema::{audit_log, memberships};

/// Writes one entry.
pub fn insert(conn: &mut DbConn, entry: &NewAuditEntry) -> QueryResult<()> {
    diesel::insert_into(audit_log::table)
        .values(entry)
        .execute(conn)
        .map(drop)
}

/// Where a page of the log starts.
#[derive(Debug, Clone, Copy)]
pub enum Cursor {
    /// The newest entries.
    Newest,
    /// Entries older than this id.
    Before(i64),
    /// Entries newer than this id.
    After(i64),
}

/// A page of a workspace's log, newest first, and whether more lie beyond it in the
/// direction of the cursor: the workspace's own entries and the account events (sign-ins,
/// password changes) of its current members since they joined. Keyset pagination on the id.
pub fn page_for_workspace(
    conn: &mut DbConn,
    workspace_id: i64,
    cursor: Cursor,
    limit: i64,
) -> QueryResult<(Vec<AuditEntry>, bool)> {
    // Account events (no workspace) of a member count only from when they joined: adding
    // someone must not reveal their earlier sign-ins to this workspace's admins.
    let while_member = memberships::table
        .filter(memberships::workspace_id.eq(workspace_id))
        .filter(memberships::user_id.nullable().eq(audit_log::actor_user_id))
        .filter(memberships::created_at.le(audit_log::created_at));
    let mut query = audit_log::table
        .filter(
            audit_log::workspace_id
                .eq(workspace_id)
                .or(audit_log::workspace_id
                    .is_null()
                    .and(diesel::dsl::exists(while_member))),
        )
        .select(AuditEntry::as_select())
        .limit(limit + 1)
        .into_boxed();
    query = match cursor {
        Cursor::Newest => query.order(audit_log::id.desc()),
        Cursor::Before(id) => query
            .filter(audit_log::id.lt(id))
            .order(audit_log::id.desc()),
        Cursor::After(id) => query
            .filter(audit_log::id.gt(id))
            .order(audit_log::id.asc()),
    };
    let mut rows = query.load(conn)?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    if matches!(cursor, Cursor::After(_)) {
        rows.reverse();
    }
    Ok((rows, more))
}
