//! All SQL of the messages slice: ingest, the claim with leases, outcomes, the log.

use chrono::NaiveDateTime;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::model::*;
use crate::db::DbConn;
use crate::db::schema::{message_attachments, message_events, messages, sends};
use crate::per_backend;
use crate::providers::model::ProviderId;
use crate::workspaces::model::WorkspaceId;

/// States a message is claimed from.
const CLAIMABLE: [&str; 2] = ["scheduled", "queued"];

/// Rows per multi-row INSERT: SQLite binds at most 32,766 parameters per statement
/// (a message's 22 columns × 1,000 rows stays under it).
const INSERT_CHUNK: usize = 1_000;

/// Storing messages on PostgreSQL: each array is a column of the batch; one statement of
/// fixed text whatever the batch size, so the server parses and plans it once per
/// connection instead of a VALUES list of thousands of parameters every time.
const INSERT_MANY_PG: &str = "INSERT INTO messages (workspace_id, send_id, channel, direction, \
     recipient_kind, origin, provider_id, from_address, recipient, contact_id, mailing_id, \
     message_id, status, hold_reason, attempts, max_attempts, due_at, send_at, \
     possible_duplicate, result, created_at, updated_at) \
     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
       $6::text[], $7::bigint[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], \
       $12::text[], $13::text[], $14::text[], $15::int[], $16::int[], $17::timestamp[], \
       $18::timestamp[], $19::bool[], $20::text[], $21::timestamp[], $22::timestamp[]) \
     RETURNING id, message_id";

#[derive(QueryableByName)]
struct Inserted {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    message_id: String,
}

/// Stores messages; returns their ids in order. PostgreSQL: one `unnest` statement per
/// chunk, ids matched back by Message-ID (unique); SQLite: multi-row VALUES.
pub fn insert_batch(conn: &mut DbConn, rows: &[NewMessage]) -> QueryResult<Vec<MessageId>> {
    use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamp};
    if let DbConn::Pg(c) = conn {
        let mut ids = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(INSERT_CHUNK * 5) {
            let column = |f: fn(&NewMessage) -> String| chunk.iter().map(f).collect::<Vec<_>>();
            let ids_of =
                |f: fn(&NewMessage) -> Option<i64>| chunk.iter().map(f).collect::<Vec<_>>();
            let inserted: Vec<Inserted> = diesel::sql_query(INSERT_MANY_PG)
                .bind::<Array<BigInt>, _>(
                    chunk.iter().map(|r| r.workspace_id.0).collect::<Vec<_>>(),
                )
                .bind::<Array<BigInt>, _>(chunk.iter().map(|r| r.send_id.0).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(column(|r| r.channel.as_str().into()))
                .bind::<Array<Text>, _>(column(|r| r.direction.as_str().into()))
                .bind::<Array<Text>, _>(column(|r| r.recipient_kind.as_str().into()))
                .bind::<Array<Text>, _>(column(|r| r.origin.clone()))
                .bind::<Array<Nullable<BigInt>>, _>(ids_of(|r| r.provider_id.map(|p| p.0)))
                .bind::<Array<Text>, _>(column(|r| r.from_address.clone()))
                .bind::<Array<Text>, _>(column(|r| r.recipient.clone()))
                .bind::<Array<Nullable<BigInt>>, _>(ids_of(|r| r.contact_id.map(|c| c.0)))
                .bind::<Array<Nullable<BigInt>>, _>(ids_of(|r| r.mailing_id.map(|m| m.0)))
                .bind::<Array<Text>, _>(column(|r| r.message_id.clone()))
                .bind::<Array<Text>, _>(column(|r| r.status.as_str().into()))
                .bind::<Array<Nullable<Text>>, _>(
                    chunk
                        .iter()
                        .map(|r| r.hold_reason.clone())
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Integer>, _>(chunk.iter().map(|r| r.attempts).collect::<Vec<_>>())
                .bind::<Array<Integer>, _>(chunk.iter().map(|r| r.max_attempts).collect::<Vec<_>>())
                .bind::<Array<Timestamp>, _>(chunk.iter().map(|r| r.due_at).collect::<Vec<_>>())
                .bind::<Array<Nullable<Timestamp>>, _>(
                    chunk.iter().map(|r| r.send_at).collect::<Vec<_>>(),
                )
                .bind::<Array<Bool>, _>(
                    chunk
                        .iter()
                        .map(|r| r.possible_duplicate)
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Text>, _>(column(|r| r.result.clone()))
                .bind::<Array<Timestamp>, _>(chunk.iter().map(|r| r.created_at).collect::<Vec<_>>())
                .bind::<Array<Timestamp>, _>(chunk.iter().map(|r| r.updated_at).collect::<Vec<_>>())
                .load(c)?;
            let by_message_id: std::collections::HashMap<String, i64> = inserted
                .into_iter()
                .map(|row| (row.message_id, row.id))
                .collect();
            for row in chunk {
                let id = by_message_id
                    .get(&row.message_id)
                    .copied()
                    .ok_or(diesel::result::Error::NotFound)?;
                ids.push(MessageId(id));
            }
        }
        return Ok(ids);
    }
    let mut ids = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut chunk_ids: Vec<MessageId> =
            per_backend!(conn, |c| diesel::insert_into(messages::table)
                .values(chunk)
                .returning(messages::id)
                .get_results(c))?;
        ids.append(&mut chunk_ids);
    }
    if let (Some(first), Some(last)) = (ids.iter().min(), ids.iter().max()) {
        index_batch(conn, *first, *last)?;
    }
    Ok(ids)
}

/// Adds messages just stored in this transaction to SQLite's search indexes and tallies,
/// with one statement each for the whole batch: FTS5 writes its pending terms out as a new
/// segment at every statement that touches it, so a trigger per row (a segment per
/// INSERT of 1,000 rows) made loading a large log mostly segment merging (measured).
/// Ids between the batch's first and last are all this transaction's: SQLite has one
/// writer and AUTOINCREMENT ids only grow. PostgreSQL does this in a statement trigger.
fn index_batch(conn: &mut DbConn, first: MessageId, last: MessageId) -> QueryResult<()> {
    let DbConn::Sqlite(c) = conn else {
        return Ok(());
    };
    for statement in INDEX_BATCH_SQLITE {
        diesel::sql_query(statement)
            .bind::<diesel::sql_types::BigInt, _>(first.0)
            .bind::<diesel::sql_types::BigInt, _>(last.0)
            .execute(c)?;
    }
    Ok(())
}

/// What `index_batch` runs for the messages with ids between its two values: the word
/// index, the address index, and the tallies (a row per day, origin and status of the
/// batch; a row trigger made the INSERT larger to prepare and wrote a tally row per
/// message).
const INDEX_BATCH_SQLITE: [&str; 3] = [
    "INSERT INTO message_words (rowid, subject, body, ws) \
     SELECT m.id, s.subject, substr(s.text_body, 1, 100000), 'w' || m.workspace_id || 'w' \
     FROM messages m JOIN sends s ON s.id = m.send_id \
     WHERE m.id BETWEEN ? AND ?",
    "INSERT INTO message_addresses (rowid, addresses, ws) \
     SELECT m.id, m.recipient || ' ' || s.cc || ' ' || s.bcc || ' ' || s.from_address || ' ' \
        || s.from_name, 'w' || m.workspace_id || 'w' \
     FROM messages m JOIN sends s ON s.id = m.send_id WHERE m.id BETWEEN ? AND ?",
    "INSERT INTO message_tallies (workspace_id, day, origin, status, n, first_id, last_id) \
     SELECT workspace_id, date(created_at), origin, status, count(*), min(id), max(id) \
     FROM messages WHERE id BETWEEN ? AND ? GROUP BY 1, 2, 3, 4 \
     ON CONFLICT (workspace_id, day, origin, status) DO UPDATE \
     SET n = n + excluded.n, first_id = min(first_id, excluded.first_id), \
         last_id = max(last_id, excluded.last_id)",
];

/// Stores sends; returns their ids in order.
pub fn insert_sends(conn: &mut DbConn, rows: &[NewSend]) -> QueryResult<Vec<SendId>> {
    let mut ids = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut chunk_ids: Vec<SendId> = per_backend!(conn, |c| diesel::insert_into(sends::table)
            .values(chunk)
            .returning(sends::id)
            .get_results(c))?;
        ids.append(&mut chunk_ids);
    }
    Ok(ids)
}

/// Stores attached files.
pub fn insert_attachments(conn: &mut DbConn, rows: &[Attachment]) -> QueryResult<()> {
    for row in rows {
        diesel::insert_into(message_attachments::table)
            .values(row)
            .execute(conn)?;
    }
    Ok(())
}

/// Removes messages just stored in this transaction, and their send (an ingest request
/// undone before commit).
pub fn delete_unsent(conn: &mut DbConn, ids: &[MessageId], send: SendId) -> QueryResult<()> {
    diesel::delete(messages::table.filter(messages::id.eq_any(ids))).execute(conn)?;
    diesel::delete(sends::table.find(send)).execute(conn)?;
    Ok(())
}

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

/// Stores events: multi-row statements on PostgreSQL (one round trip per chunk); on
/// in-process SQLite one cached single-row statement per event, which skips parsing a
/// statement of thousands of parameters on every batch (measured: SQL parsing was a
/// seventh of the database thread).
pub fn insert_events(conn: &mut DbConn, rows: &[NewMessageEvent]) -> QueryResult<()> {
    match conn {
        DbConn::Pg(c) => {
            for chunk in rows.chunks(INSERT_CHUNK * 3) {
                diesel::insert_into(message_events::table)
                    .values(chunk)
                    .execute(c)?;
            }
        }
        DbConn::Sqlite(c) => {
            for row in rows {
                diesel::insert_into(message_events::table)
                    .values(row)
                    .execute(c)?;
            }
        }
    }
    Ok(())
}

/// The claim: due messages of active providers, oldest first. `{lock}` is
/// `FOR UPDATE SKIP LOCKED` on PostgreSQL (nodes never wait on each other's rows) and empty
/// on SQLite, where the caller's immediate transaction already serializes claimers.
const CLAIM_SQL: &str = "UPDATE messages SET status = 'sending', lease_owner = $1, lease_until = $2, \
     attempts = attempts + 1, updated_at = $3 \
     WHERE id IN (SELECT m.id FROM messages m \
        WHERE m.status IN ('scheduled', 'queued') AND m.due_at <= $3 \
        AND (m.provider_id IN (SELECT p.id FROM providers p WHERE p.status = 'active') \
             OR (m.provider_id IS NULL AND m.origin = 'alert')) \
        AND (m.provider_id IS NULL OR {skip}) \
        ORDER BY m.due_at, m.id LIMIT $4 {lock}) \
     RETURNING *";

/// Claims up to `limit` due messages of active providers for `owner` until `lease_until`,
/// counting the attempt (recorded before any SMTP DATA is sent). Providers in `skip`
/// already have all this node will hold for them (a rate-limited provider must not fill
/// the window and starve everyone else).
pub fn claim_due(
    conn: &mut DbConn,
    owner: &str,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
    limit: i64,
    skip: &[ProviderId],
) -> QueryResult<Vec<Message>> {
    use diesel::sql_types::{Array, BigInt, Text, Timestamp};
    match conn {
        DbConn::Pg(c) => {
            // Take the due rows in index order (messages_due is on due_at, id) and stop at
            // the limit. Without fresh statistics (a large mailing just landed) the planner
            // would rather sort every due row on every claim: quadratic work. SET LOCAL
            // lasts until the end of this (claim) transaction only.
            c.batch_execute("SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off")?;
            let sql = CLAIM_SQL
                .replace("{lock}", "FOR UPDATE SKIP LOCKED")
                .replace("{skip}", "m.provider_id <> ALL($5::bigint[])");
            diesel::sql_query(sql)
                .bind::<Text, _>(owner)
                .bind::<Timestamp, _>(lease_until)
                .bind::<Timestamp, _>(now)
                .bind::<BigInt, _>(limit)
                .bind::<Array<BigInt>, _>(skip.iter().map(|p| p.0).collect::<Vec<_>>())
                .load(c)
        }
        DbConn::Sqlite(c) => {
            // SQLite numbers `$N` parameters in order of first appearance; `?N` binds by
            // number, as the query means.
            let sql = CLAIM_SQL
                .replace("{lock}", "")
                .replace(
                    "{skip}",
                    "m.provider_id NOT IN (SELECT value FROM json_each($5))",
                )
                .replace('$', "?");
            let ids = serde_json::to_string(&skip.iter().map(|p| p.0).collect::<Vec<_>>())
                .unwrap_or_else(|_| "[]".into());
            diesel::sql_query(sql)
                .bind::<Text, _>(owner)
                .bind::<Timestamp, _>(lease_until)
                .bind::<Timestamp, _>(now)
                .bind::<BigInt, _>(limit)
                .bind::<Text, _>(ids)
                .load(c)
        }
    }
}

/// Extends every lease this node holds (its heartbeat): a live node never loses a message
/// to another; a dead one stops renewing and its messages are taken over.
pub fn renew_leases(
    conn: &mut DbConn,
    owner: &str,
    lease_until: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        messages::table
            .filter(messages::status.eq(Status::Sending.as_str()))
            .filter(messages::lease_owner.eq(owner)),
    )
    .set(messages::lease_until.eq(lease_until))
    .execute(conn)
}

/// Reclaiming messages whose node died (see [`reclaim_expired`]).
const RECLAIM_SQL: &str = "UPDATE messages SET status = 'queued', lease_owner = NULL, lease_until = NULL, \
     possible_duplicate = TRUE, due_at = $1, updated_at = $1 \
     WHERE id IN (SELECT m.id FROM messages m WHERE m.status = 'sending' AND m.lease_until < $1 {lock}) \
     RETURNING id, attempts";

#[derive(QueryableByName)]
struct Reclaimed {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempts: i32,
}

/// Takes back messages whose lease expired (their node died): queued again, flagged as
/// possible duplicates (the attempt may have been accepted), Message-ID kept.
pub fn reclaim_expired(
    conn: &mut DbConn,
    now: NaiveDateTime,
) -> QueryResult<Vec<(MessageId, i32)>> {
    use diesel::sql_types::Timestamp;
    let rows: Vec<Reclaimed> = match conn {
        DbConn::Pg(c) => diesel::sql_query(RECLAIM_SQL.replace("{lock}", "FOR UPDATE SKIP LOCKED"))
            .bind::<Timestamp, _>(now)
            .load(c)?,
        DbConn::Sqlite(c) => diesel::sql_query(RECLAIM_SQL.replace("{lock}", ""))
            .bind::<Timestamp, _>(now)
            .load(c)?,
    };
    Ok(rows
        .into_iter()
        .map(|r| (MessageId(r.id), r.attempts))
        .collect())
}

/// What to write for one finished attempt.
#[derive(Debug, Clone)]
pub struct Finish {
    /// The message.
    pub id: MessageId,
    /// The state it ends the attempt in.
    pub status: Status,
    /// Next due time (retries).
    pub due_at: Option<NaiveDateTime>,
    /// Result text.
    pub result: String,
    /// Basic code.
    pub smtp_code: Option<i32>,
    /// Enhanced code.
    pub smtp_enhanced: Option<String>,
    /// Accepted at.
    pub sent_at: Option<NaiveDateTime>,
    /// `provider` when held for its provider.
    pub hold_reason: Option<&'static str>,
    /// The attempt did not reach the server (held before MAIL): do not count it.
    pub uncount_attempt: bool,
    /// The attempt may have been accepted (cut off after DATA began): flag it.
    pub possible_duplicate: bool,
    /// The attempt number as claimed: an outcome of an older claim never overwrites a
    /// newer one.
    pub attempt: i32,
}

/// Writes an attempt's outcome, only while this node still holds the lease (a message
/// taken over by another node is not overwritten). Returns whether it was written.
pub fn finish(conn: &mut DbConn, owner: &str, f: &Finish, now: NaiveDateTime) -> QueryResult<bool> {
    let target = messages::table
        .filter(messages::id.eq(f.id))
        .filter(messages::lease_owner.eq(owner))
        .filter(messages::attempts.eq(f.attempt))
        .filter(messages::status.eq(Status::Sending.as_str()));
    // On the backend's own connection: its statement cache keeps this prepared (through
    // the multi-backend wrapper SQLite parsed it again for every message, measured).
    let mut changed = per_backend!(conn, |c| diesel::update(target)
        .set((
            messages::status.eq(f.status.as_str()),
            messages::result.eq(&f.result),
            messages::smtp_code.eq(f.smtp_code),
            messages::smtp_enhanced.eq(&f.smtp_enhanced),
            messages::sent_at.eq(f.sent_at),
            messages::hold_reason.eq(f.hold_reason),
            messages::attempts.eq(messages::attempts - i32::from(f.uncount_attempt)),
            messages::possible_duplicate.eq(messages::possible_duplicate.or(
                diesel::IntoSql::into_sql::<diesel::sql_types::Bool>(f.possible_duplicate),
            )),
            messages::lease_owner.eq(None::<String>),
            messages::lease_until.eq(None::<NaiveDateTime>),
            messages::updated_at.eq(now),
        ))
        .execute(c))?;
    if changed == 1
        && let Some(due) = f.due_at
    {
        changed = diesel::update(messages::table.find(f.id))
            .set(messages::due_at.eq(due))
            .execute(conn)?;
    }
    Ok(changed == 1)
}

/// Writing a batch of outcomes on PostgreSQL in one statement: each array is a column of
/// the batch, `unnest` turns them back into rows. Only rows this node still holds change.
const FINISH_MANY_PG: &str = "UPDATE messages AS m SET \
     status = v.status, result = v.result, smtp_code = v.smtp_code, smtp_enhanced = v.smtp_enhanced, \
     sent_at = v.sent_at, hold_reason = v.hold_reason, attempts = m.attempts - v.uncount, \
     due_at = COALESCE(v.due_at, m.due_at), lease_owner = NULL, lease_until = NULL, updated_at = $1, \
     possible_duplicate = m.possible_duplicate OR v.flag \
     FROM unnest($2::bigint[], $3::text[], $4::text[], $5::int[], $6::text[], $7::timestamp[], \
                 $8::text[], $9::int[], $10::timestamp[], $12::bool[], $13::int[]) \
          AS v(id, status, result, smtp_code, smtp_enhanced, sent_at, hold_reason, uncount, due_at, flag, attempt) \
     WHERE m.id = v.id AND m.id = ANY($2::bigint[]) \
       AND m.lease_owner = $11 AND m.status = 'sending' AND m.attempts = v.attempt \
     RETURNING m.id";

#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

/// Writes many outcomes; returns the ids that were written (still held by `owner`).
pub fn finish_many(
    conn: &mut DbConn,
    owner: &str,
    batch: &[Finish],
    now: NaiveDateTime,
) -> QueryResult<Vec<MessageId>> {
    use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Timestamp};
    match conn {
        DbConn::Pg(c) => {
            // The planner believes almost no row is `sending` (statistics are taken
            // between bursts) and would loop over the whole batch once per held row:
            // quadratic, 300 ms for 300 rows, measured. A hash join stays linear; the
            // batch's rows are read by id (`m.id = ANY`), not by walking every row held
            // (through `messages_leased`, which without a vacuum keeps an entry for
            // every message ever sent: 412 ms a batch after 80,000, measured).
            c.batch_execute("SET LOCAL enable_nestloop = off; SET LOCAL enable_bitmapscan = off")?;
            let written: Vec<Written> = diesel::sql_query(FINISH_MANY_PG)
                .bind::<Timestamp, _>(now)
                .bind::<Array<BigInt>, _>(batch.iter().map(|f| f.id.0).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(batch.iter().map(|f| f.status.as_str()).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(batch.iter().map(|f| f.result.as_str()).collect::<Vec<_>>())
                .bind::<Array<Nullable<Integer>>, _>(
                    batch.iter().map(|f| f.smtp_code).collect::<Vec<_>>(),
                )
                .bind::<Array<Nullable<Text>>, _>(
                    batch
                        .iter()
                        .map(|f| f.smtp_enhanced.as_deref())
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Nullable<Timestamp>>, _>(
                    batch.iter().map(|f| f.sent_at).collect::<Vec<_>>(),
                )
                .bind::<Array<Nullable<Text>>, _>(
                    batch.iter().map(|f| f.hold_reason).collect::<Vec<_>>(),
                )
                .bind::<Array<Integer>, _>(
                    batch
                        .iter()
                        .map(|f| i32::from(f.uncount_attempt))
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Nullable<Timestamp>>, _>(
                    batch.iter().map(|f| f.due_at).collect::<Vec<_>>(),
                )
                .bind::<Text, _>(owner)
                .bind::<Array<diesel::sql_types::Bool>, _>(
                    batch
                        .iter()
                        .map(|f| f.possible_duplicate)
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Integer>, _>(batch.iter().map(|f| f.attempt).collect::<Vec<_>>())
                .load(c)?;
            c.batch_execute("RESET enable_nestloop; RESET enable_bitmapscan")?;
            Ok(written.into_iter().map(|w| MessageId(w.id)).collect())
        }
        // In-process SQLite has no round trips: one prepared UPDATE per row is as fast.
        DbConn::Sqlite(_) => {
            let mut written = Vec::with_capacity(batch.len());
            for f in batch {
                if finish(conn, owner, f, now)? {
                    written.push(f.id);
                }
            }
            Ok(written)
        }
    }
}

/// Holds the queued messages of a provider that cannot sign in.
pub fn hold_for_provider(
    conn: &mut DbConn,
    provider: ProviderId,
    detail: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        messages::table
            .filter(messages::provider_id.eq(provider))
            .filter(messages::status.eq_any(CLAIMABLE)),
    )
    .set((
        messages::status.eq(Status::Held.as_str()),
        messages::hold_reason.eq("provider"),
        messages::result.eq(detail),
        messages::updated_at.eq(now),
    ))
    .execute(conn)
}

/// Releases what was held for a provider that checks green again: due now, or at its
/// send-at if that is still ahead (scheduled again).
pub fn release_for_provider(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    provider: ProviderId,
    now: NaiveDateTime,
) -> QueryResult<Vec<(MessageId, i32)>> {
    let held = || {
        messages::table
            .filter(messages::workspace_id.eq(workspace))
            .filter(messages::provider_id.eq(provider))
            .filter(messages::status.eq(Status::Held.as_str()))
            .filter(messages::hold_reason.eq("provider"))
    };
    let mut released: Vec<(MessageId, i32)> =
        diesel::update(held().filter(messages::send_at.gt(now)))
            .set((
                messages::status.eq(Status::Scheduled.as_str()),
                messages::hold_reason.eq(None::<String>),
                messages::due_at.eq(messages::send_at.assume_not_null()),
                messages::updated_at.eq(now),
            ))
            .returning((messages::id, messages::attempts))
            .get_results(conn)?;
    released.extend(
        diesel::update(held())
            .set((
                messages::status.eq(Status::Queued.as_str()),
                messages::hold_reason.eq(None::<String>),
                messages::due_at.eq(now),
                messages::updated_at.eq(now),
            ))
            .returning((messages::id, messages::attempts))
            .get_results::<(MessageId, i32)>(conn)?,
    );
    Ok(released)
}

/// Cancels what a deleted provider would still have sent (in the deletion's transaction):
/// with no provider left it must not go out any other way.
pub fn cancel_for_provider(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    provider: ProviderId,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        messages::table
            .filter(messages::workspace_id.eq(workspace))
            .filter(messages::provider_id.eq(provider))
            .filter(messages::status.eq_any(["scheduled", "queued", "held"])),
    )
    .set((
        messages::status.eq(Status::Cancelled.as_str()),
        messages::hold_reason.eq(None::<String>),
        messages::result.eq(PROVIDER_DELETED),
        messages::updated_at.eq(now),
    ))
    .execute(conn)
}

/// The result of a message whose provider was deleted before it went out.
pub const PROVIDER_DELETED: &str = "provider deleted";

/// Cancels those of `ids` that came back to the queue (a retry after a 4xx, a hold, a
/// reclaimed lease) after their provider was deleted: with no provider they cannot go out
/// any other way (only Mailroom's own alerts use the system provider). Logs a `cancelled`
/// event for each; returns their ids.
pub fn cancel_orphaned(
    conn: &mut DbConn,
    ids: &[MessageId],
    now: NaiveDateTime,
) -> QueryResult<Vec<MessageId>> {
    let mut cancelled = Vec::new();
    for chunk in ids.chunks(INSERT_CHUNK * 10) {
        cancelled.extend(
            diesel::update(
                messages::table
                    .filter(messages::id.eq_any(chunk))
                    .filter(messages::provider_id.is_null())
                    .filter(messages::origin.ne(Origin::Alert.as_str()))
                    .filter(messages::status.eq_any(["scheduled", "queued", "held"])),
            )
            .set((
                messages::status.eq(Status::Cancelled.as_str()),
                messages::hold_reason.eq(None::<String>),
                messages::result.eq(PROVIDER_DELETED),
                messages::updated_at.eq(now),
            ))
            .returning((messages::id, messages::attempts))
            .get_results::<(MessageId, i32)>(conn)?,
        );
    }
    let events: Vec<NewMessageEvent> = cancelled
        .iter()
        .map(|(id, attempts)| NewMessageEvent {
            message_id: *id,
            kind: "cancelled",
            attempt: *attempts,
            smtp_code: None,
            smtp_enhanced: None,
            detail: format!("{PROVIDER_DELETED}: it is not sent any other way"),
            created_at: now,
        })
        .collect();
    insert_events(conn, &events)?;
    Ok(cancelled.into_iter().map(|(id, _)| id).collect())
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

/// Reclaims expired leases and logs a `reclaimed` event for each (those whose provider was
/// deleted meanwhile are cancelled instead of queued); returns how many.
pub fn reclaim_expired_with_events(conn: &mut DbConn, now: NaiveDateTime) -> QueryResult<usize> {
    let reclaimed = reclaim_expired(conn, now)?;
    let events: Vec<NewMessageEvent> = reclaimed
        .iter()
        .map(|(id, attempts)| NewMessageEvent {
            message_id: *id,
            kind: "reclaimed",
            attempt: *attempts,
            smtp_code: None,
            smtp_enhanced: None,
            detail:
                "its node stopped while sending; queued again and flagged as a possible duplicate"
                    .into(),
            created_at: now,
        })
        .collect();
    insert_events(conn, &events)?;
    let ids: Vec<MessageId> = reclaimed.iter().map(|(id, _)| *id).collect();
    cancel_orphaned(conn, &ids, now)?;
    Ok(reclaimed.len())
}

/// At a graceful stop: gives back what this node claimed and did not finish. Messages that
/// were never started are queued again as if unclaimed; those cut off mid-send (`started`)
/// are flagged as possible duplicates; those whose provider was deleted meanwhile are
/// cancelled.
pub fn release_owned(
    conn: &mut DbConn,
    owner: &str,
    started: &[MessageId],
    now: NaiveDateTime,
) -> QueryResult<usize> {
    let mine = messages::table
        .filter(messages::lease_owner.eq(owner))
        .filter(messages::status.eq(Status::Sending.as_str()));
    let orphans: Vec<MessageId> = mine
        .filter(messages::provider_id.is_null())
        .select(messages::id)
        .load(conn)?;
    let cut_off = diesel::update(mine.filter(messages::id.eq_any(started)))
        .set((
            messages::status.eq(Status::Queued.as_str()),
            messages::possible_duplicate.eq(true),
            messages::lease_owner.eq(None::<String>),
            messages::lease_until.eq(None::<NaiveDateTime>),
            messages::updated_at.eq(now),
        ))
        .execute(conn)?;
    let untouched = diesel::update(mine)
        .set((
            messages::status.eq(Status::Queued.as_str()),
            messages::attempts.eq(messages::attempts - 1),
            messages::lease_owner.eq(None::<String>),
            messages::lease_until.eq(None::<NaiveDateTime>),
            messages::updated_at.eq(now),
        ))
        .execute(conn)?;
    cancel_orphaned(conn, &orphans, now)?;
    Ok(cut_off + untouched)
}

/// Unfinished messages by status, across the instance (for `/metrics`); each state is
/// read through its partial index.
pub fn queue_depth(conn: &mut DbConn) -> QueryResult<Vec<(String, i64)>> {
    messages::table
        .filter(messages::status.eq_any(["scheduled", "queued", "sending", "held"]))
        .group_by(messages::status)
        .select((messages::status, diesel::dsl::count_star()))
        .load(conn)
}

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

/// A value bound to a search statement.
#[derive(Clone)]
enum Bind {
    Int(i64),
    Text(String),
    Time(NaiveDateTime),
}

/// A statement of raw SQL and its values, with the backend's placeholders.
struct RawSql {
    text: String,
    binds: Vec<Bind>,
    pg: bool,
}

impl RawSql {
    /// Binds a value; returns its placeholder.
    fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        if self.pg {
            format!("${}", self.binds.len())
        } else {
            "?".to_owned()
        }
    }

    /// Appends ` AND m.{column} {op} {value}`.
    fn and(&mut self, column: &str, op: &str, value: Bind) {
        let placeholder = self.bind(value);
        self.text
            .push_str(&format!(" AND m.{column} {op} {placeholder}"));
    }

    /// The workspace and the log filter, on `messages m` (the filter `page` applies,
    /// written for the search's raw SQL; every field named, as there).
    fn narrow(&mut self, workspace: WorkspaceId, filter: &LogFilter) {
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
        self.and("workspace_id", "=", Bind::Int(workspace.0));
        if let Some(tab) = tab {
            let placeholders: Vec<String> = tab
                .origins()
                .iter()
                .map(|o| self.bind(Bind::Text((*o).into())))
                .collect();
            self.text
                .push_str(&format!(" AND m.origin IN ({})", placeholders.join(", ")));
        }
        if let Some(key) = key {
            let placeholder = self.bind(Bind::Int(key.0));
            self.text.push_str(&format!(
                " AND m.send_id IN (SELECT id FROM sends WHERE api_key_id = {placeholder})"
            ));
        }
        if let Some(status) = status {
            self.and("status", "=", Bind::Text(status.as_str().into()));
        }
        if let Some(provider) = provider {
            self.and("provider_id", "=", Bind::Int(provider.0));
        }
        if let Some(sender) = sender {
            self.and("from_address", "=", Bind::Text(sender.clone()));
        }
        if let Some(since) = since {
            self.and("created_at", ">=", Bind::Time(*since));
        }
        if let Some(until) = until {
            self.and("created_at", "<", Bind::Time(*until));
        }
        if let Some(before) = before {
            self.and("id", "<", Bind::Int(before.0));
        }
    }
}

#[derive(QueryableByName)]
struct Found {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    hit: bool,
}

/// A statement of `search_index`: what it reads and how it answers.
struct IndexQuery<'a> {
    /// Names `messages m` and holds a `{name}` for each value (in the order the values
    /// come: SQLite's placeholders are positional).
    from: String,
    /// Whether a row is a match (`TRUE`, or a test a candidate must pass).
    hit: &'a str,
    /// The order, e.g. `m.id DESC` (an FTS5 index must be ordered by its own rowid to
    /// stop at the limit instead of sorting every match).
    order: &'a str,
    /// At most `search::LIMIT` rows, or every one (candidates counted by the caller).
    limited: bool,
    values: Vec<(&'a str, Bind)>,
}

/// Ids of messages `m` matching a search, each with whether it is a match or only a
/// candidate; the workspace and the filter are appended to `query.from`.
fn search_index(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    filter: &LogFilter,
    query: IndexQuery,
) -> QueryResult<Vec<Found>> {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    let mut sql = RawSql {
        text: String::new(),
        binds: Vec::new(),
        pg: matches!(conn, DbConn::Pg(_)),
    };
    let IndexQuery {
        from,
        hit,
        order,
        limited,
        values,
    } = query;
    let mut text = format!("SELECT m.id AS id, {hit} AS hit FROM {from}");
    for (name, value) in values {
        let placeholder = sql.bind(value);
        text = text.replace(&format!("{{{name}}}"), &placeholder);
    }
    sql.text = text;
    sql.narrow(workspace, filter);
    sql.text.push_str(&format!(" ORDER BY {order}"));
    if limited {
        sql.text
            .push_str(&format!(" LIMIT {}", super::search::LIMIT));
    }
    let RawSql { text, binds, .. } = sql;
    per_backend!(conn, |c| {
        let mut query = diesel::sql_query(text).into_boxed();
        for value in binds {
            query = match value {
                Bind::Int(v) => query.bind::<BigInt, _>(v),
                Bind::Text(v) => query.bind::<Text, _>(v),
                Bind::Time(v) => query.bind::<Timestamp, _>(v),
            };
        }
        query.load(c)
    })
}

/// Messages whose subject or text holds every searched word, or whose addresses hold the
/// searched fragment, narrowed by the filter: at most `search::LIMIT`, newest first. No
/// ranking of every match: each index is read newest first and stops at the limit.
pub fn search(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    filter: &LogFilter,
    search: &super::search::Search,
) -> QueryResult<Vec<Message>> {
    let mut ids = if let DbConn::Pg(_) = conn {
        // Every step has one good plan (GIN, or a lookup per message); a sequential
        // scan or parallel workers are never it, whatever the estimates say (a
        // common word made the planner scan the whole search table in parallel).
        conn.transaction(|conn| {
            conn.batch_execute(
                "SET LOCAL enable_seqscan = off; SET LOCAL max_parallel_workers_per_gather = 0",
            )?;
            search_pg(conn, workspace, filter, search)
        })?
    } else {
        let mut ids = Vec::new();
        // How to read FTS5 for this workspace (see migration `search_by_workspace`):
        // * a small one: its own token and the search intersected inside the index, every
        //   match read oldest first, the newest kept below. FTS5 reads a doclist backwards
        //   slowly (a common word of a 1,000-message workspace beside a 1,000,000-message
        //   one: 5–13 ms newest first for 100 rows, 0.2–0.4 ms oldest first for all 980);
        // * one under a tenth of the log: intersected too, the newest 100 read backwards
        //   (without it, the other workspaces' matches would be read and dropped);
        // * a larger one: the search alone, newest first, the others' matches dropped by
        //   the join (one in ten at most). Its own token's doclist is nearly the whole
        //   index, and reading it backwards costs more than it saves (a phrase at 1M:
        //   11.6 ms alone, 27.3 ms intersected).
        let size = workspace_size(conn, workspace)?;
        let small = size <= FORWARD_SEARCH;
        let own = if small || size.saturating_mul(10) < newest_id(conn)? {
            format!("ws : w{}w AND ", workspace.0)
        } else {
            String::new()
        };
        let (order, limited) = if small {
            ("x.rowid ASC", false)
        } else {
            ("x.rowid DESC", true)
        };
        // A part of an address is a phrase of trigrams, which FTS5 matches against the
        // whole index whatever the workspace (a fragment no address has: 10 ms at 1M
        // messages): a small workspace reads its own addresses instead (0.4 ms for 1,000).
        let fragment = match search.fts5_fragment() {
            Some(_) if small => {
                ids.extend(scan_addresses(conn, workspace, filter, search)?);
                None
            }
            other => other,
        };
        let indexes = [
            (
                search
                    .fts5()
                    .map(|q| format!("{own}{{subject body}} : ({q})")),
                "message_words",
            ),
            (
                fragment.map(|q| format!("{own}addresses : {q}")),
                "message_addresses",
            ),
        ];
        for (query, index) in indexes {
            if let Some(query) = query {
                let found = search_index(
                    conn,
                    workspace,
                    filter,
                    IndexQuery {
                        from: format!(
                            "{index} x JOIN messages m ON m.id = x.rowid WHERE {index} MATCH {{q}}"
                        ),
                        hit: "1 = 1",
                        order,
                        limited,
                        values: vec![("q", Bind::Text(query))],
                    },
                )?;
                ids.extend(found.into_iter().map(|f| f.id));
            }
        }
        ids
    };
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.dedup();
    ids.truncate(super::search::LIMIT as usize);
    let ids: Vec<MessageId> = ids.into_iter().map(MessageId).collect();
    find_many(conn, workspace, &ids)
}

#[derive(QueryableByName)]
struct Addressed {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    addresses: String,
}

/// The messages of a (small) workspace, under the filter, whose addresses hold the
/// search's fragment: at most `search::LIMIT`, newest first.
fn scan_addresses(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    filter: &LogFilter,
    search: &super::search::Search,
) -> QueryResult<Vec<i64>> {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    let mut sql = RawSql {
        text: "SELECT m.id AS id, m.recipient || ' ' || s.cc || ' ' || s.bcc || ' ' || \
               s.from_address || ' ' || s.from_name AS addresses \
               FROM messages m JOIN sends s ON s.id = m.send_id WHERE 1 = 1"
            .into(),
        binds: Vec::new(),
        pg: false,
    };
    sql.narrow(workspace, filter);
    sql.text.push_str(" ORDER BY m.id DESC");
    let RawSql { text, binds, .. } = sql;
    let rows: Vec<Addressed> = per_backend!(conn, |c| {
        let mut query = diesel::sql_query(text).into_boxed();
        for value in binds {
            query = match value {
                Bind::Int(v) => query.bind::<BigInt, _>(v),
                Bind::Text(v) => query.bind::<Text, _>(v),
                Bind::Time(v) => query.bind::<Timestamp, _>(v),
            };
        }
        query.load(c)
    })?;
    Ok(rows
        .into_iter()
        .filter(|r| search.fragment_in(&r.addresses))
        .map(|r| r.id)
        .take(super::search::LIMIT as usize)
        .collect())
}

/// Up to how many messages a workspace's SQLite search reads every match oldest first
/// (each match a rowid: 10,000 of them take a few ms) instead of the newest 100 backwards.
const FORWARD_SEARCH: i64 = 10_000;

/// The newest message id of the whole log (about how many messages it holds).
fn newest_id(conn: &mut DbConn) -> QueryResult<i64> {
    messages::table
        .select(diesel::dsl::max(messages::id))
        .first::<Option<MessageId>>(conn)
        .map(|id| id.map_or(0, |id| id.0))
}

/// A workspace's messages, from the tallies.
fn workspace_size(conn: &mut DbConn, workspace: WorkspaceId) -> QueryResult<i64> {
    use crate::db::schema::message_counts as t;
    t::table
        .filter(t::workspace_id.eq(workspace))
        .select(diesel::dsl::sql::<
            diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
        >("CAST(SUM(n) AS BIGINT)"))
        .first::<Option<i64>>(conn)
        .map(Option::unwrap_or_default)
}

/// How many of a workspace's newest messages PostgreSQL checks one by one before it turns
/// to the indexes (a word in one message of 10 finds its 100 there).
pub const WINDOW: i64 = 1_000;

/// How many matches a group of days is chosen to hold, at the rate seen so far.
const GROUP_MATCHES: f64 = 300.0;

/// How many candidates the first group of days is chosen to hold (doubling with each
/// group): rows GIN finds that are read to be checked (a phrase's word order), a few µs
/// each.
const GROUP_CANDIDATES: f64 = 4_000.0;

/// Up to how many matches expected in all the older days are read in one query.
const EVERYTHING_MATCHES: f64 = 2_000.0;

/// Up to how many candidates expected in all the older days are read in one query (a
/// rare phrase of common words: its rows all read in one pass, ~3 µs each, rather than
/// group after group).
const EVERYTHING_CANDIDATES: f64 = 20_000.0;

/// Matches seen before their rate is trusted over the planner's estimate.
const TRUSTED_HITS: f64 = 20.0;

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
    line: String,
}

#[derive(QueryableByName)]
struct TableRows {
    #[diesel(sql_type = diesel::sql_types::Double)]
    rows: f64,
}

/// The rows a line of `EXPLAIN` expects (`… (cost=0.00..1.00 rows=42 width=8)`).
fn plan_rows(line: &str) -> Option<f64> {
    line.split(" rows=").nth(1)?.split(' ').next()?.parse().ok()
}

/// The share of a search table's rows PostgreSQL's statistics expect to pass `test` (the
/// row count of its plan over the table's), 0 when unknown. A fraction of a
/// millisecond: planned, not run.
fn estimated_rate(
    conn: &mut DbConn,
    table: &str,
    test: &str,
    values: &[(&str, Bind)],
) -> QueryResult<f64> {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    let DbConn::Pg(c) = conn else {
        return Ok(0.0);
    };
    let mut text = format!("EXPLAIN SELECT 1 FROM {table} WHERE {test}");
    let mut binds = Vec::new();
    for (name, value) in values {
        if text.contains(&format!("{{{name}}}")) {
            binds.push(value.clone());
            text = text.replace(&format!("{{{name}}}"), &format!("${}", binds.len()));
        }
    }
    let mut query = diesel::sql_query(text).into_boxed();
    for value in binds {
        query = match value {
            Bind::Int(v) => query.bind::<BigInt, _>(v),
            Bind::Text(v) => query.bind::<Text, _>(v),
            Bind::Time(v) => query.bind::<Timestamp, _>(v),
        };
    }
    let plan: Vec<PlanLine> = query.load(c)?;
    let expected = plan
        .first()
        .and_then(|first| plan_rows(&first.line))
        .unwrap_or(0.0);
    let total: TableRows = diesel::sql_query(format!(
        "SELECT reltuples::float8 AS rows FROM pg_class WHERE oid = '{table}'::regclass"
    ))
    .get_result(c)?;
    // A table never analyzed has no statistics to go by (`reltuples` is -1).
    if total.rows < 1.0 {
        return Ok(0.0);
    }
    Ok((expected / total.rows).clamp(0.0, 1.0))
}

/// The search bucket of a workspace's day, as SQL's `message_bucket` computes it.
fn bucket(workspace: WorkspaceId, day: chrono::NaiveDate) -> i64 {
    let epoch = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default();
    workspace.0 * 100_000 + (day - epoch).num_days()
}

/// A day of a workspace's log older than the window: its search bucket, how many messages
/// it holds and the newest id among them.
#[derive(Debug, Clone, Copy)]
struct Day {
    bucket: i64,
    messages: i64,
    last_id: i64,
}

/// The workspace's days (within the filter's dates) holding messages at or below `floor`,
/// newest first, from the tallies; the newest id of each is counted at most `floor`.
fn days_below(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    filter: &LogFilter,
    floor: i64,
) -> QueryResult<Vec<Day>> {
    use crate::db::schema::message_counts as t;
    let mut query = t::table
        .filter(t::workspace_id.eq(workspace))
        .group_by(t::day)
        .select((
            t::day,
            summed(),
            diesel::dsl::min(t::first_id),
            diesel::dsl::max(t::last_id),
        ))
        .order(t::day.desc())
        .into_boxed();
    if let Some(since) = filter.since {
        query = query.filter(t::day.ge(since.date()));
    }
    if let Some(until) = filter.until {
        query = query.filter(t::day.le(until.date()));
    }
    let rows: Vec<(chrono::NaiveDate, i64, Option<i64>, Option<i64>)> = query.load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(day, messages, first, last)| {
            let (first, last_id) = (first?, last?);
            (messages > 0 && first <= floor).then(|| Day {
                bucket: bucket(workspace, day),
                messages,
                last_id: last_id.min(floor),
            })
        })
        .collect())
}

/// PostgreSQL, in steps, each with a plan that cannot go wrong (read with EXPLAIN
/// ANALYZE): first the workspace's `WINDOW` newest messages read backwards, the condition
/// checked on each (a common word or a short prefix finds 100 at once; a GIN bitmap would
/// collect every match of the log before sorting them); then, if fewer than 100 matched,
/// the older days through the GIN indexes, newest first, a group of days at a time sized
/// by the rate of matches seen so far, until 100 are found or the days run out. The
/// address condition only looks for messages newer than the 100th the words found.
fn search_pg(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    filter: &LogFilter,
    search: &super::search::Search,
) -> QueryResult<Vec<i64>> {
    let floor: Option<i64> = messages::table
        .filter(messages::workspace_id.eq(workspace))
        .select(messages::id)
        .order(messages::id.desc())
        .offset(WINDOW)
        .first(conn)
        .optional()?;
    let words = |query: &str| format!("to_tsquery('simple'::regconfig, {query})");
    let conditions = [
        search.tsquery().map(|query| {
            let mut values = vec![("q", Bind::Text(query))];
            match search.tsquery_candidates() {
                Some(candidates) => {
                    values.push(("c", Bind::Text(candidates)));
                    Condition {
                        table: "message_search",
                        gin: format!("words @@ {}", words("{c}")),
                        // The function behind `@@`: a check on each candidate that the
                        // planner cannot hand to GIN as well.
                        check: Some(format!("ts_match_vq(words, {})", words("{q}"))),
                        values,
                        estimate: format!("words @@ {}", words("{q}")),
                    }
                }
                None => Condition {
                    table: "message_search",
                    gin: format!("words @@ {}", words("{q}")),
                    check: None,
                    values,
                    estimate: format!("words @@ {}", words("{q}")),
                },
            }
        }),
        search.like_fragment().map(|query| {
            let mut values = vec![("q", Bind::Text(query))];
            let gin = match search.like_squashed() {
                Some(squashed) => {
                    values.push(("s", Bind::Text(squashed)));
                    "squashed LIKE lower({s}) AND addresses ILIKE {q}"
                }
                None => "addresses ILIKE {q}",
            };
            Condition {
                table: "message_search_addresses",
                gin: gin.to_owned(),
                check: None,
                values,
                estimate: "addresses ILIKE {q}".to_owned(),
            }
        }),
    ];
    let days = match floor {
        Some(floor) => days_below(conn, workspace, filter, floor)?,
        None => Vec::new(),
    };
    let limit = super::search::LIMIT as usize;
    let mut ids: Vec<i64> = Vec::new();
    for condition in conditions.into_iter().flatten() {
        // Only what is newer than the 100th match so far can still be shown.
        let above = (ids.len() >= limit).then(|| ids[limit - 1]);
        ids.extend(search_days(
            conn, workspace, filter, &condition, floor, &days, above,
        )?);
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        ids.truncate(limit);
    }
    Ok(ids)
}

/// What a search looks for in one of PostgreSQL's search tables (each row a message's
/// `message_id` and `bucket`).
struct Condition {
    table: &'static str,
    /// The test GIN answers: its rows are the candidates.
    gin: String,
    /// What a candidate must also pass to match (read from its row), when GIN's rows
    /// are not all matches (a phrase's word order, words being typed).
    check: Option<String>,
    /// The values `gin` and `check` name (`{q}`, …).
    values: Vec<(&'static str, Bind)>,
    /// A test of a match the planner's statistics can estimate (names the same values).
    estimate: String,
}

/// One condition of `search_pg`: the window, then the days below `floor`; only messages
/// newer than `above` when given.
fn search_days(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    filter: &LogFilter,
    condition: &Condition,
    floor: Option<i64>,
    days: &[Day],
    above: Option<i64>,
) -> QueryResult<Vec<i64>> {
    let limit = super::search::LIMIT as usize;
    let Condition {
        table,
        gin,
        check,
        values,
        estimate,
    } = condition;
    let newer = above.map_or(String::new(), |above| format!(" AND m.id > {above}"));
    let window = floor.map_or(String::new(), |floor| format!(" AND m.id > {floor}"));
    // The window: the log read backwards, each message's row looked up (the `OFFSET 0`
    // keeps the subquery a lookup per message rather than a join the planner may turn
    // into a scan of the whole index). Candidates that need a check come back with
    // whether they pass it: their rate sizes the groups of days below, where each one
    // is read.
    let found = search_index(
        conn,
        workspace,
        filter,
        IndexQuery {
            from: format!(
                "messages m JOIN LATERAL (SELECT {hit} AS hit FROM {table} x \
                 WHERE x.message_id = m.id AND {gin} OFFSET 0) c ON TRUE \
                 WHERE TRUE{window}{newer}",
                hit = check.as_deref().unwrap_or("TRUE"),
            ),
            hit: "c.hit",
            order: "m.id DESC",
            limited: check.is_none(),
            values: values.clone(),
        },
    )?;
    let candidates = found.len() as f64;
    let mut found: Vec<i64> = found.into_iter().filter(|f| f.hit).map(|f| f.id).collect();
    let Some(floor) = floor else {
        return Ok(found);
    };
    // The rates of matches so far, and of candidates in the window, size the next
    // group of days; groups of candidates grow, so a rare match costs a few groups.
    // Until enough matches were seen, the planner's estimate over the whole log counts
    // too: the newest messages may be unlike the rest (a mailing of 185,000 copies of one
    // text made a common word look rare, and the whole log was read for it in one
    // query: 1.2 s, measured).
    let (mut hits, mut seen) = (found.len() as f64, WINDOW as f64);
    let prior = if found.len() >= limit {
        0.0
    } else {
        estimated_rate(conn, table, estimate, values)?
    };
    let candidate_prior = match check {
        Some(_) if found.len() < limit => estimated_rate(conn, table, gin, values)?,
        _ => prior,
    };
    let candidate_rate = ((candidates + 0.5) / WINDOW as f64).max(candidate_prior);
    let mut group_candidates = GROUP_CANDIDATES;
    let mut days = days
        .iter()
        .filter(|day| above.is_none_or(|above| day.last_id > above))
        .peekable();
    let check = check
        .as_ref()
        .map_or(String::new(), |check| format!(" AND {check}"));
    loop {
        // The query for all older days also reads the days groups read before it.
        found.sort_unstable_by(|a, b| b.cmp(a));
        found.dedup();
        found.truncate(limit);
        // Done with 100 unless an older day still holds newer ids (ids and creation
        // times of concurrent writers may cross at midnight).
        let complete = found.len() >= limit;
        let Some(next) = days.peek() else { break };
        if complete && found.last().is_some_and(|oldest| next.last_id < *oldest) {
            break;
        }
        let rate = if hits >= TRUSTED_HITS {
            hits / seen
        } else {
            ((hits + 0.5) / seen).max(prior)
        };
        // Few matches and candidates expected in all the older days: one query for them
        // all, by the words alone (a rare word's posting list read once rather than once
        // per day: 91 days of a word in 0.6 % of a log, 25 ms against 2 ms, measured); a
        // date filter keeps to its days, and only newer messages than `above` are wanted
        // from the few days that hold them.
        let left: f64 = days.clone().map(|day| day.messages as f64).sum();
        let everything = rate * left <= EVERYTHING_MATCHES
            && candidate_rate * left <= EVERYTHING_CANDIDATES
            && above.is_none()
            && filter.since.is_none()
            && filter.until.is_none();
        // The candidates of these days through GIN (bucket first), checked, then their
        // messages looked up by id, the filter checked on each.
        let mut values = values.clone();
        let rows = if everything {
            days.by_ref().for_each(drop);
            format!("SELECT message_id FROM {table} WHERE {gin}{check} AND message_id <= {floor}")
        } else {
            let mut buckets = Vec::new();
            let (mut expected, mut expected_candidates) = (0.0, 0.0);
            while let Some(day) =
                days.next_if(|_| expected < GROUP_MATCHES && expected_candidates < group_candidates)
            {
                buckets.push(day.bucket.to_string());
                expected += rate * day.messages as f64;
                expected_candidates += candidate_rate * day.messages as f64;
                seen += day.messages as f64;
            }
            group_candidates *= 2.0;
            values.push(("b", Bind::Text(format!("{{{}}}", buckets.join(",")))));
            // One GIN scan per day, each keyed by its bucket: with `bucket = ANY(…)` the
            // planner may check the buckets after a scan of the whole log instead (seen
            // once statistics were taken: 746 ms for a phrase, against 9 ms).
            format!(
                "SELECT x.message_id FROM unnest(CAST({{b}} AS BIGINT[])) AS d(bucket) \
                 CROSS JOIN LATERAL (SELECT message_id FROM {table} s \
                 WHERE s.bucket = d.bucket AND {gin}{check} AND message_id <= {floor}) x"
            )
        };
        let group = search_index(
            conn,
            workspace,
            filter,
            IndexQuery {
                from: format!(
                    "messages m WHERE m.id = ANY(ARRAY({rows})) AND m.id <= {floor}{newer}"
                ),
                hit: "TRUE",
                order: "m.id DESC",
                limited: true,
                values,
            },
        )?;
        hits += group.len() as f64;
        found.extend(group.into_iter().map(|f| f.id));
    }
    Ok(found)
}

/// `SUM(n)` of the counts as a BIGINT on both backends (PostgreSQL's SUM of a bigint is a
/// numeric).
fn summed() -> diesel::expression::SqlLiteral<diesel::sql_types::BigInt> {
    diesel::dsl::sql::<diesel::sql_types::BigInt>("CAST(SUM(n) AS BIGINT)")
}

/// Messages per origin (`web`, `sys`), from the tallies, narrowed by status and by days
/// (`since` included, `until` excluded).
pub fn tab_counts(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    status: Option<Status>,
    since: Option<chrono::NaiveDate>,
    until: Option<chrono::NaiveDate>,
) -> QueryResult<Vec<(String, i64)>> {
    use crate::db::schema::message_counts as t;
    let mut query = t::table
        .filter(t::workspace_id.eq(workspace))
        .group_by(t::origin)
        .select((t::origin, summed()))
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(t::status.eq(status.as_str()));
    }
    if let Some(since) = since {
        query = query.filter(t::day.ge(since));
    }
    if let Some(until) = until {
        query = query.filter(t::day.lt(until));
    }
    query.load(conn)
}

/// Messages per creation day and status since a day (the overview's chart and totals).
pub fn daily_counts(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    since: chrono::NaiveDate,
) -> QueryResult<Vec<(chrono::NaiveDate, String, i64)>> {
    use crate::db::schema::message_counts as t;
    t::table
        .filter(t::workspace_id.eq(workspace))
        .filter(t::day.ge(since))
        .group_by((t::day, t::status))
        .select((t::day, t::status, summed()))
        .load(conn)
}

/// Messages per status over all days (the queue's depth).
pub fn status_counts(conn: &mut DbConn, workspace: WorkspaceId) -> QueryResult<Vec<(String, i64)>> {
    use crate::db::schema::message_counts as t;
    t::table
        .filter(t::workspace_id.eq(workspace))
        .group_by(t::status)
        .select((t::status, summed()))
        .load(conn)
}

/// Folds the tallies' pending changes into them (PostgreSQL; nothing to do on SQLite).
pub fn fold_tallies(conn: &mut DbConn) -> QueryResult<()> {
    if let DbConn::Pg(c) = conn {
        diesel::sql_query("SELECT message_tallies_fold()").execute(c)?;
    }
    Ok(())
}

/// Vacuums the tallies and their pending changes (PostgreSQL; outside any transaction).
/// Every fold deletes what it folded and rewrites counter rows: without a vacuum the dead
/// rows pile up and every count reads them (measured with autovacuum off: the pending
/// changes grew to 780 pages in minutes, read by every history page). Both tables are
/// small, so this is cheap whatever autovacuum does.
pub fn vacuum_tallies(conn: &mut DbConn) -> QueryResult<()> {
    if let DbConn::Pg(c) = conn {
        c.batch_execute("VACUUM message_tally_deltas, message_tallies")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::plan_rows;

    #[test]
    fn the_rows_a_plan_expects_are_read_from_its_first_line() {
        assert_eq!(
            plan_rows("Bitmap Heap Scan on message_search  (cost=12.50..345.00 rows=1234 width=8)"),
            Some(1234.0)
        );
        assert_eq!(
            plan_rows("Result  (cost=0.00..0.01 rows=1 width=4)"),
            Some(1.0)
        );
        assert_eq!(plan_rows("nothing here"), None);
    }
}
