//! SQL of API keys.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::model::*;
use crate::db::DbConn;
use crate::db::schema::api_keys;
use crate::per_backend;
use crate::workspaces::model::WorkspaceId;

/// Stores a key; returns it.
pub fn insert(conn: &mut DbConn, row: &NewApiKey) -> QueryResult<ApiKey> {
    per_backend!(conn, |c| diesel::insert_into(api_keys::table)
        .values(row)
        .returning(ApiKey::as_returning())
        .get_result(c))
}

/// The workspace's keys, newest first (revoked ones too: the page shows them greyed).
pub fn list(conn: &mut DbConn, workspace: WorkspaceId) -> QueryResult<Vec<ApiKey>> {
    api_keys::table
        .filter(api_keys::workspace_id.eq(workspace))
        .order(api_keys::id.desc())
        .select(ApiKey::as_select())
        .load(conn)
}

/// A key of the workspace by id.
pub fn find(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: ApiKeyId,
) -> QueryResult<Option<ApiKey>> {
    api_keys::table
        .filter(api_keys::workspace_id.eq(workspace))
        .filter(api_keys::id.eq(id))
        .select(ApiKey::as_select())
        .first(conn)
        .optional()
}

/// A key by its visible prefix (any workspace: the caller checks the hash), with its
/// workspace: one query on every API request, prepared once per connection.
pub fn find_by_prefix(
    conn: &mut DbConn,
    prefix: &str,
) -> QueryResult<Option<(ApiKey, crate::workspaces::model::Workspace)>> {
    use crate::db::schema::workspaces;
    use crate::workspaces::model::Workspace;
    // Not `.first()`: SQLite plans around a bound LIMIT's value, so each new binding
    // re-prepares the statement (measured: a ninth of the API's database time); the
    // prefix is unique anyway.
    let found: Vec<(ApiKey, Workspace)> = per_backend!(conn, |c| api_keys::table
        .inner_join(workspaces::table)
        .filter(api_keys::prefix.eq(prefix))
        .select((ApiKey::as_select(), Workspace::as_select()))
        .load(c))?;
    Ok(found.into_iter().next())
}

/// Revokes a key of the workspace that is not revoked yet; returns it.
pub fn revoke(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: ApiKeyId,
    now: NaiveDateTime,
) -> QueryResult<Option<ApiKey>> {
    let target = api_keys::table
        .filter(api_keys::workspace_id.eq(workspace))
        .filter(api_keys::id.eq(id))
        .filter(api_keys::revoked_at.is_null());
    per_backend!(conn, |c| diesel::update(target)
        .set(api_keys::revoked_at.eq(now))
        .returning(ApiKey::as_returning())
        .get_result(c)
        .optional())
}

/// Sets a key's default sender.
pub fn set_default_sender(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: ApiKeyId,
    sender: Option<crate::ids::SenderId>,
) -> QueryResult<usize> {
    diesel::update(
        api_keys::table
            .filter(api_keys::workspace_id.eq(workspace))
            .filter(api_keys::id.eq(id)),
    )
    .set(api_keys::default_sender_id.eq(sender))
    .execute(conn)
}

/// Records that a key was used.
pub fn touch(conn: &mut DbConn, id: ApiKeyId, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(api_keys::table.find(id))
        .set(api_keys::last_used_at.eq(now))
        .execute(conn)
}

/// A remembered `Idempotency-Key` of an API key.
pub fn find_remembered(
    conn: &mut DbConn,
    key: ApiKeyId,
    idempotency_key: &str,
) -> QueryResult<Option<Remembered>> {
    use crate::db::schema::idempotency_keys as t;
    t::table
        .filter(t::api_key_id.eq(key))
        .filter(t::idempotency_key.eq(idempotency_key))
        .select(Remembered::as_select())
        .first(conn)
        .optional()
}

/// Remembers an answer; 0 when another request remembered the same key first.
pub fn remember(conn: &mut DbConn, row: &NewRemembered) -> QueryResult<usize> {
    use crate::db::schema::idempotency_keys as t;
    per_backend!(conn, |c| diesel::insert_into(t::table)
        .values(row)
        .on_conflict((t::api_key_id, t::idempotency_key))
        .do_nothing()
        .execute(c))
}

/// Replaces a remembered answer (after `wait` learned the final one).
pub fn update_remembered(
    conn: &mut DbConn,
    key: ApiKeyId,
    idempotency_key: &str,
    status_code: i32,
    response: &str,
) -> QueryResult<usize> {
    use crate::db::schema::idempotency_keys as t;
    diesel::update(
        t::table
            .filter(t::api_key_id.eq(key))
            .filter(t::idempotency_key.eq(idempotency_key)),
    )
    .set((t::status_code.eq(status_code), t::response.eq(response)))
    .execute(conn)
}

/// Forgets remembered keys older than `cutoff` (24 h).
pub fn forget_before(conn: &mut DbConn, cutoff: NaiveDateTime) -> QueryResult<usize> {
    use crate::db::schema::idempotency_keys as t;
    diesel::delete(t::table.filter(t::created_at.lt(cutoff))).execute(conn)
}

/// Stores an uploaded file; returns its id.
pub fn insert_file(conn: &mut DbConn, row: &NewApiFile) -> QueryResult<i64> {
    use crate::db::schema::api_files as t;
    per_backend!(conn, |c| diesel::insert_into(t::table)
        .values(row)
        .returning(t::id)
        .get_result(c))
}

/// Files of the workspace by id (with their contents).
pub fn find_files(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    ids: &[i64],
) -> QueryResult<Vec<ApiFile>> {
    use crate::db::schema::api_files as t;
    t::table
        .filter(t::workspace_id.eq(workspace))
        .filter(t::id.eq_any(ids))
        .select(ApiFile::as_select())
        .load(conn)
}

/// A file's name, type, size and upload time, without its contents.
pub fn file_info(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: i64,
) -> QueryResult<Option<ApiFileInfo>> {
    use crate::db::schema::api_files as t;
    t::table
        .filter(t::workspace_id.eq(workspace))
        .filter(t::id.eq(id))
        .select(ApiFileInfo::as_select())
        .first(conn)
        .optional()
}

/// Deletes a file of the workspace; returns whether it existed.
pub fn delete_file(conn: &mut DbConn, workspace: WorkspaceId, id: i64) -> QueryResult<bool> {
    use crate::db::schema::api_files as t;
    let deleted = diesel::delete(
        t::table
            .filter(t::workspace_id.eq(workspace))
            .filter(t::id.eq(id)),
    )
    .execute(conn)?;
    Ok(deleted == 1)
}
