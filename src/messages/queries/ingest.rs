//! Storing new messages and their sends in one batch (the ingest writer's statements), and
//! events.

use diesel::prelude::*;

use crate::db::DbConn;
use crate::db::schema::{message_attachments, message_events, messages, sends};
use crate::messages::model::*;
use crate::per_backend;

/// Rows per multi-row INSERT: SQLite binds at most 32,766 parameters per statement
/// (a message's 22 columns × 1,000 rows stays under it).
pub(crate) const INSERT_CHUNK: usize = 1_000;

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
