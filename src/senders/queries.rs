//! All SQL of the senders slice. Every query is scoped by workspace.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::model::{NewSender, Sender, SenderId};
use crate::db::DbConn;
use crate::db::schema::{messages, senders, sends};
use crate::workspaces::model::WorkspaceId;

/// The workspace's senders by name.
pub fn list(conn: &mut DbConn, workspace: WorkspaceId) -> QueryResult<Vec<Sender>> {
    senders::table
        .filter(senders::workspace_id.eq(workspace))
        .order((senders::name.asc(), senders::id.asc()))
        .select(Sender::as_select())
        .load(conn)
}

/// One sender of the workspace.
pub fn find(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: SenderId,
) -> QueryResult<Option<Sender>> {
    senders::table
        .filter(senders::workspace_id.eq(workspace))
        .filter(senders::id.eq(id))
        .select(Sender::as_select())
        .first(conn)
        .optional()
}

/// Whether the workspace has a sender with this address (any case).
pub fn address_taken(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    address: &str,
) -> QueryResult<bool> {
    let all: Vec<String> = senders::table
        .filter(senders::workspace_id.eq(workspace))
        .select(senders::address)
        .load(conn)?;
    Ok(all.iter().any(|a| a.eq_ignore_ascii_case(address)))
}

/// Stores a new sender.
pub fn insert(conn: &mut DbConn, row: &NewSender) -> QueryResult<SenderId> {
    diesel::insert_into(senders::table)
        .values(row)
        .returning(senders::id)
        .get_result(conn)
}

/// Stores a new code (hashed), its expiry and when it was sent; its tries start again.
pub fn set_code(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: SenderId,
    hash: &str,
    expires: NaiveDateTime,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        senders::table
            .filter(senders::workspace_id.eq(workspace))
            .filter(senders::id.eq(id)),
    )
    .set((
        senders::code_hash.eq(hash),
        senders::code_expires_at.eq(expires),
        senders::code_tries.eq(0),
        senders::code_sent_at.eq(now),
        senders::updated_at.eq(now),
    ))
    .execute(conn)
}

/// Counts a wrong try of the current code.
pub fn count_wrong_try(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: SenderId,
) -> QueryResult<usize> {
    diesel::update(
        senders::table
            .filter(senders::workspace_id.eq(workspace))
            .filter(senders::id.eq(id)),
    )
    .set(senders::code_tries.eq(senders::code_tries + 1))
    .execute(conn)
}

/// Marks the address validated; the code is used up.
pub fn validate(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: SenderId,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        senders::table
            .filter(senders::workspace_id.eq(workspace))
            .filter(senders::id.eq(id)),
    )
    .set((
        senders::validated_at.eq(now),
        senders::code_hash.eq(None::<String>),
        senders::code_expires_at.eq(None::<NaiveDateTime>),
        senders::updated_at.eq(now),
    ))
    .execute(conn)
}

/// Deletes a sender (its sends keep their history; `sends.sender_id` is cleared).
pub fn delete(conn: &mut DbConn, workspace: WorkspaceId, id: SenderId) -> QueryResult<usize> {
    diesel::delete(
        senders::table
            .filter(senders::workspace_id.eq(workspace))
            .filter(senders::id.eq(id)),
    )
    .execute(conn)
}

/// The statuses of messages that have not gone out yet.
const UNSENT: [&str; 3] = ["scheduled", "queued", "held"];

/// Messages of the sender's sends not yet sent (what deleting it cancels).
pub fn count_unsent(conn: &mut DbConn, workspace: WorkspaceId, id: SenderId) -> QueryResult<i64> {
    messages::table
        .filter(messages::workspace_id.eq(workspace))
        .filter(messages::status.eq_any(UNSENT))
        .filter(
            messages::send_id.eq_any(
                sends::table
                    .filter(sends::sender_id.eq(id))
                    .select(sends::id),
            ),
        )
        .count()
        .get_result(conn)
}

/// Cancels the sender's messages not yet sent, with `reason`.
pub fn cancel_unsent(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: SenderId,
    reason: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        messages::table
            .filter(messages::workspace_id.eq(workspace))
            .filter(messages::status.eq_any(UNSENT))
            .filter(
                messages::send_id.eq_any(
                    sends::table
                        .filter(sends::sender_id.eq(id))
                        .select(sends::id),
                ),
            ),
    )
    .set((
        messages::status.eq("cancelled"),
        messages::hold_reason.eq(None::<String>),
        messages::result.eq(reason),
        messages::updated_at.eq(now),
    ))
    .execute(conn)
}

/// Email messages sent per sender of the workspace (the overview's send count).
pub fn sent_counts(conn: &mut DbConn, workspace: WorkspaceId) -> QueryResult<Vec<(SenderId, i64)>> {
    let rows: Vec<(Option<SenderId>, i64)> = messages::table
        .inner_join(sends::table)
        .filter(messages::workspace_id.eq(workspace))
        .filter(messages::status.eq("sent"))
        .filter(sends::sender_id.is_not_null())
        .group_by(sends::sender_id)
        .select((sends::sender_id, diesel::dsl::count_star()))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, n)| id.map(|id| (id, n)))
        .collect())
}
