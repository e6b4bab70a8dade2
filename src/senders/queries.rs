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
/// Only when the last code was sent before `not_since` (one statement, so requests at
/// once cannot both pass the throttle): whether it was stored.
pub fn set_code(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: SenderId,
    hash: &str,
    expires: NaiveDateTime,
    now: NaiveDateTime,
    not_since: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        senders::table
            .filter(senders::workspace_id.eq(workspace))
            .filter(senders::id.eq(id))
            .filter(senders::validated_at.is_null())
            .filter(
                senders::code_sent_at
                    .is_null()
                    .or(senders::code_sent_at.le(not_since)),
            ),
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

/// Spends one try of the current code `hash`, if it has one left and has not expired
/// (one statement, so requests at once cannot spend more tries than there are): whether
/// a try was spent.
pub fn spend_try(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: SenderId,
    hash: &str,
    tries: i32,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let spent = diesel::update(
        senders::table
            .filter(senders::workspace_id.eq(workspace))
            .filter(senders::id.eq(id))
            .filter(senders::validated_at.is_null())
            .filter(senders::code_hash.eq(hash))
            .filter(senders::code_expires_at.gt(now))
            .filter(senders::code_tries.lt(tries)),
    )
    .set(senders::code_tries.eq(senders::code_tries + 1))
    .execute(conn)?;
    Ok(spent == 1)
}

/// Marks the address validated if the code `hash` is still the current one; the code is
/// used up. Whether it was.
pub fn validate(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: SenderId,
    hash: &str,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let done = diesel::update(
        senders::table
            .filter(senders::workspace_id.eq(workspace))
            .filter(senders::id.eq(id))
            .filter(senders::code_hash.eq(hash)),
    )
    .set((
        senders::validated_at.eq(now),
        senders::code_hash.eq(None::<String>),
        senders::code_expires_at.eq(None::<NaiveDateTime>),
        senders::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(done == 1)
}

/// Codes mailed since `since` in the workspace, and to `address` (from the audit log,
/// which outlives the senders: deleting and creating one again does not reset them).
pub fn codes_mailed_since(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    address: &str,
    hour: NaiveDateTime,
    day: NaiveDateTime,
) -> QueryResult<(i64, i64)> {
    use crate::db::schema::audit_log;
    let in_workspace = audit_log::table
        .filter(audit_log::workspace_id.eq(workspace.0))
        .filter(audit_log::action.eq(super::service::CODE_MAILED))
        .filter(audit_log::created_at.gt(hour))
        .count()
        .get_result(conn)?;
    let to_address = audit_log::table
        .filter(audit_log::workspace_id.eq(workspace.0))
        .filter(audit_log::action.eq(super::service::CODE_MAILED))
        .filter(audit_log::target.eq(address))
        .filter(audit_log::created_at.gt(day))
        .count()
        .get_result(conn)?;
    Ok((in_workspace, to_address))
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
