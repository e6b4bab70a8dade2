//! All SQL of the providers slice. Every query is scoped by workspace.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::model::*;
use crate::db::DbConn;
use crate::db::schema::providers;
use crate::workspaces::model::WorkspaceId;

/// The workspace's providers by name.
///
/// On the backend's own connection, so the statement stays prepared: every API send
/// reads it.
pub fn list_by_workspace(conn: &mut DbConn, workspace: WorkspaceId) -> QueryResult<Vec<Provider>> {
    crate::per_backend!(conn, |c| providers::table
        .filter(providers::workspace_id.eq(workspace))
        .filter(providers::per_request.eq(false))
        .order(providers::name.asc())
        .select(Provider::as_select())
        .load(c))
}

/// One provider of the workspace.
pub fn find_by_workspace_and_id(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: ProviderId,
) -> QueryResult<Option<Provider>> {
    providers::table
        .filter(providers::workspace_id.eq(workspace))
        .filter(providers::id.eq(id))
        .select(Provider::as_select())
        .first(conn)
        .optional()
}

/// Providers by id (for the delivery engine, which serves every workspace).
pub fn find_many(conn: &mut DbConn, ids: &[ProviderId]) -> QueryResult<Vec<Provider>> {
    providers::table
        .filter(providers::id.eq_any(ids))
        .select(Provider::as_select())
        .load(conn)
}

/// Whether another provider of the workspace has this name.
pub fn name_taken(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    name: &str,
    except: Option<ProviderId>,
) -> QueryResult<bool> {
    let mut query = providers::table
        .filter(providers::workspace_id.eq(workspace))
        .filter(providers::name.eq(name))
        .select(providers::id)
        .into_boxed();
    if let Some(id) = except {
        query = query.filter(providers::id.ne(id));
    }
    Ok(query.first::<ProviderId>(conn).optional()?.is_some())
}

/// Creates a provider (unchecked) with its sealed secret.
pub fn insert(
    conn: &mut DbConn,
    row: &ProviderRow<'_>,
    secret: Option<&str>,
    now: NaiveDateTime,
) -> QueryResult<ProviderId> {
    diesel::insert_into(providers::table)
        .values((
            row,
            providers::secret.eq(secret),
            providers::status.eq(Status::Unchecked.as_str()),
            providers::status_detail.eq(""),
            providers::created_at.eq(now),
        ))
        .returning(providers::id)
        .get_result(conn)
}

/// Replaces a provider's settings and secret; it must be checked again.
pub fn update(
    conn: &mut DbConn,
    id: ProviderId,
    row: &ProviderRow<'_>,
    secret: Option<&str>,
    detail: &str,
) -> QueryResult<usize> {
    diesel::update(
        providers::table
            .filter(providers::workspace_id.eq(row.workspace_id))
            .filter(providers::id.eq(id)),
    )
    .set((
        row,
        providers::secret.eq(secret),
        providers::status.eq(Status::Unchecked.as_str()),
        providers::status_detail.eq(detail),
    ))
    .execute(conn)
}

/// Records the outcome of a check.
pub fn update_status(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: ProviderId,
    status: Status,
    detail: &str,
    at: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        providers::table
            .filter(providers::workspace_id.eq(workspace))
            .filter(providers::id.eq(id)),
    )
    .set((
        providers::status.eq(status.as_str()),
        providers::status_detail.eq(detail),
        providers::checked_at.eq(Some(at)),
    ))
    .execute(conn)
}

/// Turns a provider red from delivery (a refused sign-in): status and detail only; its
/// `checked_at` stays that of the last real check.
pub fn mark_red(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: ProviderId,
    detail: &str,
) -> QueryResult<usize> {
    diesel::update(
        providers::table
            .filter(providers::workspace_id.eq(workspace))
            .filter(providers::id.eq(id)),
    )
    .set((
        providers::status.eq(Status::Error.as_str()),
        providers::status_detail.eq(detail),
    ))
    .execute(conn)
}

/// Deletes a provider.
pub fn delete(conn: &mut DbConn, workspace: WorkspaceId, id: ProviderId) -> QueryResult<usize> {
    diesel::delete(
        providers::table
            .filter(providers::workspace_id.eq(workspace))
            .filter(providers::id.eq(id)),
    )
    .execute(conn)
}

/// The per-request SMTP provider of the workspace for these settings, if one exists.
pub fn find_per_request(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    host: &str,
    port: u16,
    tls: TlsMode,
    username: &str,
) -> QueryResult<Option<Provider>> {
    providers::table
        .filter(providers::workspace_id.eq(workspace))
        .filter(providers::per_request.eq(true))
        .filter(providers::host.eq(host))
        .filter(providers::port.eq(i32::from(port)))
        .filter(providers::tls.eq(tls.as_str()))
        .filter(providers::username.eq(username))
        .select(Provider::as_select())
        .first(conn)
        .optional()
}

/// How many per-request SMTP providers the workspace has.
pub fn count_per_request(conn: &mut DbConn, workspace: WorkspaceId) -> QueryResult<i64> {
    providers::table
        .filter(providers::workspace_id.eq(workspace))
        .filter(providers::per_request.eq(true))
        .count()
        .get_result(conn)
}

/// The workspace's per-request SMTP providers, least recently changed first.
pub fn list_per_request(conn: &mut DbConn, workspace: WorkspaceId) -> QueryResult<Vec<ProviderId>> {
    providers::table
        .filter(providers::workspace_id.eq(workspace))
        .filter(providers::per_request.eq(true))
        .order((providers::updated_at.asc(), providers::id.asc()))
        .select(providers::id)
        .load(conn)
}

/// Locks a provider's row until the transaction ends (PostgreSQL; SQLite's write
/// transaction holds the whole database already). A message inserted for it takes a share
/// lock through its foreign key, so once this returns, every such insert has committed
/// or will wait for this transaction. Returns whether the provider (still) exists.
pub fn lock(conn: &mut DbConn, id: ProviderId) -> QueryResult<bool> {
    match conn {
        DbConn::Pg(c) => diesel::sql_query("SELECT id FROM providers WHERE id = $1 FOR UPDATE")
            .bind::<diesel::sql_types::BigInt, _>(id.0)
            .execute(c)
            .map(|rows| rows == 1),
        DbConn::Sqlite(_) => {
            diesel::select(diesel::dsl::exists(providers::table.find(id))).get_result(conn)
        }
    }
}

/// Whether any of the provider's messages may still be sent (scheduled, queued, being
/// sent or held).
pub fn has_unfinished(conn: &mut DbConn, id: ProviderId) -> QueryResult<bool> {
    use crate::db::schema::messages;
    diesel::select(diesel::dsl::exists(
        messages::table
            .filter(messages::provider_id.eq(id))
            .filter(messages::status.eq_any(["scheduled", "queued", "sending", "held"])),
    ))
    .get_result(conn)
}

/// Stores per-request SMTP settings as a hidden provider, active at once (the caller
/// vouches for them; failures show on its messages).
pub fn insert_per_request(
    conn: &mut DbConn,
    row: &ProviderRow<'_>,
    secret: Option<&str>,
    now: NaiveDateTime,
) -> QueryResult<ProviderId> {
    diesel::insert_into(providers::table)
        .values((
            row,
            providers::secret.eq(secret),
            providers::status.eq(Status::Active.as_str()),
            providers::status_detail.eq("per-request SMTP settings of an API call; not checked"),
            providers::checked_at.eq(now),
            providers::created_at.eq(now),
            providers::per_request.eq(true),
        ))
        .returning(providers::id)
        .get_result(conn)
}

/// Replaces a per-request provider's password (its pool is rebuilt: `updated_at` moves).
pub fn set_secret(
    conn: &mut DbConn,
    id: ProviderId,
    secret: Option<&str>,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(providers::table.find(id))
        .set((providers::secret.eq(secret), providers::updated_at.eq(now)))
        .execute(conn)
}

/// Every provider's name in the workspace, per-request ones too (for the history).
pub fn names(conn: &mut DbConn, workspace: WorkspaceId) -> QueryResult<Vec<(ProviderId, String)>> {
    providers::table
        .filter(providers::workspace_id.eq(workspace))
        .select((providers::id, providers::name))
        .load(conn)
}
