//! Retention: deleting old contents, keeping every record.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConn;
use crate::db::schema::{message_attachments, messages, sends};
use crate::messages::model::*;

/// Retention: deletes the text, HTML and files of sends created before `cutoff` whose
/// messages are all final (none scheduled, queued, sending or held), at most `limit` per
/// call; the sends' and messages' records stay. Returns how many sends were purged.
pub fn purge_sends(
    conn: &mut DbConn,
    cutoff: NaiveDateTime,
    now: NaiveDateTime,
    limit: i64,
) -> QueryResult<usize> {
    let waiting = messages::table
        .filter(messages::send_id.eq(sends::id))
        .filter(messages::status.eq_any(["scheduled", "queued", "sending", "held"]));
    let due: Vec<SendId> = sends::table
        .filter(sends::created_at.lt(cutoff))
        .filter(sends::purged_at.is_null())
        .filter(diesel::dsl::not(diesel::dsl::exists(waiting)))
        .select(sends::id)
        .order(sends::id.asc())
        .limit(limit)
        .load(conn)?;
    if due.is_empty() {
        return Ok(0);
    }
    diesel::delete(message_attachments::table.filter(message_attachments::send_id.eq_any(&due)))
        .execute(conn)?;
    diesel::update(sends::table.filter(sends::id.eq_any(&due)))
        .set((
            sends::text_body.eq(""),
            sends::html_body.eq(None::<String>),
            sends::attachments.eq(0),
            sends::purged_at.eq(now),
        ))
        .execute(conn)
}
