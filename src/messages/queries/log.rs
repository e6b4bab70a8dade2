//! Reading the log: messages and their sends by id, a keyset page under a filter, the
//! events of a message; and the changes a person makes to one message (cancel, retry,
//! release).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConn;
use crate::db::schema::{message_attachments, message_events, messages, sends};
use crate::messages::model::*;
use crate::providers::model::ProviderId;
use crate::workspaces::model::WorkspaceId;

/// The files of these sends, in upload order.
pub fn find_attachments(conn: &mut DbConn, send_ids: &[SendId]) -> QueryResult<Vec<Attachment>> {
    message_attachments::table
        .filter(message_attachments::send_id.eq_any(send_ids))
        .order(message_attachments::id.asc())
        .select(Attachment::as_select())
        .load(conn)
}

/// Names, types and sizes of a send's files (for the message page).
pub fn list_attachments(
    conn: &mut DbConn,
    send: SendId,
) -> QueryResult<Vec<(String, String, i64)>> {
    message_attachments::table
        .filter(message_attachments::send_id.eq(send))
        .order(message_attachments::id.asc())
        .select((
            message_attachments::file_name,
            message_attachments::content_type,
            message_attachments::size,
        ))
        .load(conn)
}

/// Sends by id (for the delivery engine, which serves every workspace).
pub fn find_sends(conn: &mut DbConn, ids: &[SendId]) -> QueryResult<Vec<Send>> {
    sends::table
        .filter(sends::id.eq_any(ids))
        .select(Send::as_select())
        .load(conn)
}

/// Sends of the workspace by id (for pages).
pub fn find_sends_in(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    ids: &[SendId],
) -> QueryResult<Vec<Send>> {
    sends::table
        .filter(sends::workspace_id.eq(workspace))
        .filter(sends::id.eq_any(ids))
        .select(Send::as_select())
        .load(conn)
}

/// What a history page shows of each send: its subject, From name, and the first
/// `chars` characters of its text (50 whole texts were most of what a page read and
/// copied), or all of it (`None`: a search's snippet may be anywhere).
pub fn find_send_heads_in(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    ids: &[SendId],
    chars: Option<u32>,
) -> QueryResult<Vec<SendHead>> {
    let text = match chars {
        Some(chars) => format!("substr(text_body, 1, {chars})"),
        None => "text_body".to_owned(),
    };
    sends::table
        .filter(sends::workspace_id.eq(workspace))
        .filter(sends::id.eq_any(ids))
        .select((
            sends::id,
            sends::subject,
            sends::from_name,
            sends::cc,
            sends::api_key_id,
            sends::user_id,
            diesel::dsl::sql::<diesel::sql_types::Text>(&text),
        ))
        .load(conn)
}

/// What a history page shows of a send.
#[derive(Debug, Clone, Queryable)]
pub struct SendHead {
    /// The send.
    pub id: SendId,
    /// Its subject.
    pub subject: String,
    /// Its From name.
    pub from_name: String,
    /// Its CC addresses, one per line.
    pub cc: String,
    /// The API key that sent it.
    pub api_key_id: Option<crate::api::model::ApiKeyId>,
    /// Who sent it.
    pub user_id: Option<crate::accounts::model::UserId>,
    /// The start of its text (or the whole text, for a search's snippet).
    pub text: String,
}

/// One message of the workspace.
pub fn find_by_workspace_and_id(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: MessageId,
) -> QueryResult<Option<Message>> {
    messages::table
        .filter(messages::workspace_id.eq(workspace))
        .filter(messages::id.eq(id))
        .select(Message::as_select())
        .first(conn)
        .optional()
}

/// Messages of the workspace by id, newest first (a page's or a search's rows, the
/// API's waited-for sends).
pub fn find_many(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    ids: &[MessageId],
) -> QueryResult<Vec<Message>> {
    messages::table
        .filter(messages::workspace_id.eq(workspace))
        .filter(messages::id.eq_any(ids))
        .select(Message::as_select())
        .order(messages::id.desc())
        .load(conn)
}

/// A message's events, oldest first.
pub fn events_of(conn: &mut DbConn, id: MessageId) -> QueryResult<Vec<MessageEvent>> {
    message_events::table
        .filter(message_events::message_id.eq(id))
        .order(message_events::id.asc())
        .select(MessageEvent::as_select())
        .load(conn)
}

/// What the log (the history page, the API's list) filters by. Every field narrows.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// A tab: console (`web`) or system and API (`sys`).
    pub tab: Option<Tab>,
    /// Only what this API key sent (a `send` key).
    pub key: Option<crate::api::model::ApiKeyId>,
    /// One status.
    pub status: Option<Status>,
    /// One provider.
    pub provider: Option<ProviderId>,
    /// One From address.
    pub sender: Option<String>,
    /// Created at or after.
    pub since: Option<NaiveDateTime>,
    /// Created before.
    pub until: Option<NaiveDateTime>,
    /// Older than this id (the keyset cursor).
    pub before: Option<MessageId>,
}

/// A page of the workspace's log, newest first, keyset-paginated on the id (no OFFSET);
/// one row more than `limit` when there are older ones.
pub fn page(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    filter: &LogFilter,
    limit: i64,
) -> QueryResult<Vec<Message>> {
    // Every field named, so a new one cannot be forgotten here (or in `RawSql::narrow`,
    // which writes the same filter for search).
    let LogFilter {
        tab,
        key,
        status,
        provider,
        sender,
        since,
        until,
        before,
    } = filter;
    // The page's ids first, then their rows: an index holds the ids of each filter
    // (`messages_log_origin`, `_status`, …) in order, so the ids come from it alone.
    // Asked for whole rows, the planner would rather walk the primary key backwards and
    // check each row, cheaper on statistics of an even log, and read 80,000 newer API
    // messages to find the Web tab's 50 (measured: 50–150 ms a page).
    // A tab of several origins reads each origin's newest ids from its own index, and
    // keeps the newest of them all (`origin IN (…)` would sort the whole tab).
    let origins: &[&str] = tab.map_or(&[], |t| t.origins());
    let mut ids: Vec<MessageId> = Vec::new();
    for origin in origins
        .iter()
        .map(Some)
        .chain(origins.is_empty().then_some(None))
    {
        // The days' id bounds of this origin: an origin the days do not have is not read
        // at all. Without statistics SQLite reads a tab's days through `messages_log`
        // and checks the origin of each row: 720 ms for a week of 77,000 messages holding
        // no alert, measured at 1M.
        let bounds = match (since, until) {
            (None, None) => None,
            _ => match id_bounds(conn, workspace, *since, *until, origin.copied())? {
                Some(bounds) => Some(bounds),
                None => continue,
            },
        };
        let mut query = messages::table
            .filter(messages::workspace_id.eq(workspace))
            .select(messages::id)
            .order(messages::id.desc())
            .limit(limit + 1)
            .into_boxed();
        if let Some(origin) = origin {
            query = query.filter(messages::origin.eq(*origin));
        }
        if let Some(key) = key {
            query = query.filter(
                messages::send_id.eq_any(
                    sends::table
                        .filter(sends::api_key_id.eq(*key))
                        .select(sends::id),
                ),
            );
        }
        if let Some(status) = status {
            query = query.filter(messages::status.eq(status.as_str()));
        }
        if let Some(provider) = provider {
            query = query.filter(messages::provider_id.eq(*provider));
        }
        if let Some(sender) = sender {
            query = query.filter(messages::from_address.eq(sender));
        }
        if let Some(since) = since {
            query = query.filter(messages::created_at.ge(*since));
        }
        if let Some(until) = until {
            query = query.filter(messages::created_at.lt(*until));
        }
        if let Some(before) = before {
            query = query.filter(messages::id.lt(*before));
        }
        if let Some((first, last)) = bounds {
            query = query
                .filter(messages::id.ge(first))
                .filter(messages::id.le(last));
        }
        ids.extend(query.load::<MessageId>(conn)?);
    }
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.truncate(usize::try_from(limit + 1).unwrap_or(usize::MAX));
    find_many(conn, workspace, &ids)
}

/// The lowest and highest id of the messages created in the days a time range touches
/// (from the tallies), so a day filter starts reading the log at the right place; `None`
/// when those days have no messages.
fn id_bounds(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    since: Option<NaiveDateTime>,
    until: Option<NaiveDateTime>,
    origin: Option<&str>,
) -> QueryResult<Option<(i64, i64)>> {
    use crate::db::schema::message_counts as t;
    use diesel::dsl::{max, min};
    let mut query = t::table
        .filter(t::workspace_id.eq(workspace))
        .select((min(t::first_id), max(t::last_id)))
        .into_boxed();
    if let Some(origin) = origin {
        query = query.filter(t::origin.eq(origin.to_owned()));
    }
    if let Some(since) = since {
        query = query.filter(t::day.ge(since.date()));
    }
    if let Some(until) = until {
        // A range ending at midnight does not touch the day that starts then.
        query = if until.time() == chrono::NaiveTime::MIN {
            query.filter(t::day.lt(until.date()))
        } else {
            query.filter(t::day.le(until.date()))
        };
    }
    let (first, last): (Option<i64>, Option<i64>) = query.first(conn)?;
    Ok(first.zip(last))
}

/// Releases a message stored held by the API: due now, or scheduled at its send-at if
/// that is still ahead. Returns whether it applied.
pub fn release_held(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: MessageId,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let target = messages::table
        .filter(messages::workspace_id.eq(workspace))
        .filter(messages::id.eq(id))
        .filter(messages::status.eq(Status::Held.as_str()))
        .filter(messages::hold_reason.eq("api"));
    let scheduled = diesel::update(target.filter(messages::send_at.gt(now)))
        .set((
            messages::status.eq(Status::Scheduled.as_str()),
            messages::hold_reason.eq(None::<String>),
            messages::due_at.eq(messages::send_at.assume_not_null()),
            messages::updated_at.eq(now),
        ))
        .execute(conn)?;
    let queued = diesel::update(target)
        .set((
            messages::status.eq(Status::Queued.as_str()),
            messages::hold_reason.eq(None::<String>),
            messages::due_at.eq(now),
            messages::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(scheduled + queued == 1)
}

/// Cancels a message that is still scheduled, queued or held; returns whether it applied.
pub fn cancel(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: MessageId,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let target = messages::table
        .filter(messages::workspace_id.eq(workspace))
        .filter(messages::id.eq(id))
        .filter(messages::status.eq_any(["scheduled", "queued", "held"]));
    let changed = diesel::update(target)
        .set((
            messages::status.eq(Status::Cancelled.as_str()),
            messages::hold_reason.eq(None::<String>),
            messages::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

/// Queues a failed message for one more attempt now; returns whether it applied.
pub fn requeue_failed(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    id: MessageId,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let target = messages::table
        .filter(messages::workspace_id.eq(workspace))
        .filter(messages::id.eq(id))
        .filter(messages::status.eq(Status::Failed.as_str()))
        .filter(
            messages::provider_id
                .is_not_null()
                .or(messages::origin.eq(Origin::Alert.as_str())),
        );
    let changed = diesel::update(target)
        .set((
            messages::status.eq(Status::Queued.as_str()),
            messages::due_at.eq(now),
            messages::max_attempts.eq(messages::attempts + 1),
            messages::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}
