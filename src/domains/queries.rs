//! All SQL of the domains slice. Every query but the background re-check's is scoped by
//! workspace.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::model::{Domain, DomainId, NewDomain};
use crate::db::DbConn;
use crate::db::schema::domains;
use crate::workspaces::model::WorkspaceId;

/// The workspace's domains by name.
pub fn list(conn: &mut DbConn, workspace: WorkspaceId) -> QueryResult<Vec<Domain>> {
    domains::table
        .filter(domains::workspace_id.eq(workspace))
        .order(domains::name.asc())
        .select(Domain::as_select())
        .load(conn)
}

/// One domain of the workspace.
pub fn find(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: DomainId,
) -> QueryResult<Option<Domain>> {
    domains::table
        .filter(domains::workspace_id.eq(workspace))
        .filter(domains::id.eq(id))
        .select(Domain::as_select())
        .first(conn)
        .optional()
}

/// One domain of the workspace, by name.
pub fn find_by_name(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    name: &str,
) -> QueryResult<Option<Domain>> {
    domains::table
        .filter(domains::workspace_id.eq(workspace))
        .filter(domains::name.eq(name))
        .select(Domain::as_select())
        .first(conn)
        .optional()
}

/// Stores a new domain.
pub fn insert(conn: &mut DbConn, row: &NewDomain) -> QueryResult<DomainId> {
    diesel::insert_into(domains::table)
        .values(row)
        .returning(domains::id)
        .get_result(conn)
}

/// Stores a check's outcome.
pub fn record_check(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: DomainId,
    report: &str,
    authenticated: bool,
    failing_since: Option<NaiveDateTime>,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        domains::table
            .filter(domains::workspace_id.eq(workspace))
            .filter(domains::id.eq(id)),
    )
    .set((
        domains::checks.eq(report),
        domains::authenticated.eq(authenticated),
        domains::failing_since.eq(failing_since),
        domains::checked_at.eq(now),
        domains::updated_at.eq(now),
    ))
    .execute(conn)
}

/// A key: selector, public key (base64 SPKI), sealed private key.
pub type KeyColumns = (String, String, String);

/// Makes `active` the signing key and `standby` the next one. The last check is kept
/// (the page marks it as made before the rotation).
pub fn rotate(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: DomainId,
    active: KeyColumns,
    standby: KeyColumns,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        domains::table
            .filter(domains::workspace_id.eq(workspace))
            .filter(domains::id.eq(id)),
    )
    .set((
        domains::active_selector.eq(active.0),
        domains::active_public.eq(active.1),
        domains::active_private.eq(active.2),
        domains::standby_selector.eq(standby.0),
        domains::standby_public.eq(standby.1),
        domains::standby_private.eq(standby.2),
        domains::updated_at.eq(now),
    ))
    .execute(conn)
}

/// Deletes a domain.
pub fn delete(conn: &mut DbConn, workspace: WorkspaceId, id: DomainId) -> QueryResult<usize> {
    diesel::delete(
        domains::table
            .filter(domains::workspace_id.eq(workspace))
            .filter(domains::id.eq(id)),
    )
    .execute(conn)
}

/// Domains of every workspace due for the background re-check, oldest check first: not
/// checked since `daily`, or found failing and not checked since `again`.
pub fn due_for_check(
    conn: &mut DbConn,
    daily: NaiveDateTime,
    again: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<(WorkspaceId, DomainId)>> {
    domains::table
        .filter(
            domains::checked_at
                .is_null()
                .or(domains::checked_at.lt(daily))
                .or(domains::failing_since
                    .is_not_null()
                    .and(domains::checked_at.lt(again))),
        )
        .order(domains::checked_at.asc())
        .select((domains::workspace_id, domains::id))
        .limit(limit)
        .load(conn)
}

/// The domains of these workspaces with one of these names (the delivery engine: the
/// sends it signs, and those it holds back while their domain is not authenticated).
pub fn among(
    conn: &mut DbConn,
    workspaces: &[WorkspaceId],
    names: &[String],
) -> QueryResult<Vec<super::model::SigningDomain>> {
    if workspaces.is_empty() || names.is_empty() {
        return Ok(Vec::new());
    }
    domains::table
        .filter(domains::workspace_id.eq_any(workspaces))
        .filter(domains::name.eq_any(names))
        .select(super::model::SigningDomain::as_select())
        .load(conn)
}
