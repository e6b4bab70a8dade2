//! Recording outcomes: one statement per batch on PostgreSQL (arrays unnested), one
//! statement prepared once per connection on SQLite.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConn;
use crate::messages::model::*;
use diesel::connection::SimpleConnection;

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
    /// The DKIM-Signature to send again at the next attempt (retries of signed mail).
    pub dkim_signature: Option<String>,
}

/// Writes an attempt's outcome on SQLite, only while this node still holds the lease (a
/// message taken over by another node is not overwritten).
///
/// Diesel prepares every `UPDATE` anew (its changesets vary), and SQLite compiles the
/// log's status trigger into each one: 70 % of the statement preparation of a delivery
/// run, measured with `perf`. This statement's text never changes, so it says so
/// (a static query id, cacheable) and is prepared once per connection.
struct FinishOne<'a> {
    f: &'a Finish,
    status: &'static str,
    owner: &'a str,
    uncount: i32,
    now: NaiveDateTime,
}

impl diesel::query_builder::QueryId for FinishOne<'_> {
    type QueryId = FinishOne<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite> for FinishOne<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::sqlite::Sqlite>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamp};
        out.push_sql("UPDATE messages SET status = ");
        out.push_bind_param::<Text, _>(&self.status)?;
        out.push_sql(", result = ");
        out.push_bind_param::<Text, _>(&self.f.result)?;
        out.push_sql(", smtp_code = ");
        out.push_bind_param::<Nullable<Integer>, _>(&self.f.smtp_code)?;
        out.push_sql(", smtp_enhanced = ");
        out.push_bind_param::<Nullable<Text>, _>(&self.f.smtp_enhanced)?;
        out.push_sql(", sent_at = ");
        out.push_bind_param::<Nullable<Timestamp>, _>(&self.f.sent_at)?;
        out.push_sql(", hold_reason = ");
        out.push_bind_param::<Nullable<Text>, _>(&self.f.hold_reason)?;
        out.push_sql(", attempts = attempts - ");
        out.push_bind_param::<Integer, _>(&self.uncount)?;
        out.push_sql(", possible_duplicate = (possible_duplicate OR ");
        out.push_bind_param::<Bool, _>(&self.f.possible_duplicate)?;
        out.push_sql("), due_at = COALESCE(");
        out.push_bind_param::<Nullable<Timestamp>, _>(&self.f.due_at)?;
        out.push_sql(", due_at), dkim_signature = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.f.dkim_signature)?;
        out.push_sql(", dkim_signature), lease_owner = NULL, lease_until = NULL, updated_at = ");
        out.push_bind_param::<Timestamp, _>(&self.now)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<BigInt, _>(&self.f.id.0)?;
        out.push_sql(" AND lease_owner = ");
        out.push_bind_param::<Text, _>(&self.owner)?;
        out.push_sql(" AND attempts = ");
        out.push_bind_param::<Integer, _>(&self.f.attempt)?;
        out.push_sql(" AND status = 'sending'");
        Ok(())
    }
}

impl diesel::query_dsl::RunQueryDsl<diesel::sqlite::SqliteConnection> for FinishOne<'_> {}

/// Writing a batch of outcomes on PostgreSQL in one statement: each array is a column of
/// the batch, `unnest` turns them back into rows. Only rows this node still holds change.
const FINISH_MANY_PG: &str = "UPDATE messages AS m SET \
     status = v.status, result = v.result, smtp_code = v.smtp_code, smtp_enhanced = v.smtp_enhanced, \
     sent_at = v.sent_at, hold_reason = v.hold_reason, attempts = m.attempts - v.uncount, \
     due_at = COALESCE(v.due_at, m.due_at), lease_owner = NULL, lease_until = NULL, updated_at = $1, \
     possible_duplicate = m.possible_duplicate OR v.flag, \
     dkim_signature = COALESCE(v.dkim_signature, m.dkim_signature) \
     FROM unnest($2::bigint[], $3::text[], $4::text[], $5::int[], $6::text[], $7::timestamp[], \
                 $8::text[], $9::int[], $10::timestamp[], $12::bool[], $13::int[], $14::text[]) \
          AS v(id, status, result, smtp_code, smtp_enhanced, sent_at, hold_reason, uncount, due_at, flag, attempt, dkim_signature) \
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
                .bind::<Array<Nullable<Text>>, _>(
                    batch
                        .iter()
                        .map(|f| f.dkim_signature.as_deref())
                        .collect::<Vec<_>>(),
                )
                .load(c)?;
            c.batch_execute("RESET enable_nestloop; RESET enable_bitmapscan")?;
            Ok(written.into_iter().map(|w| MessageId(w.id)).collect())
        }
        // In-process SQLite has no round trips: one prepared UPDATE per row is as fast.
        DbConn::Sqlite(c) => {
            let mut written = Vec::with_capacity(batch.len());
            for f in batch {
                let one = FinishOne {
                    f,
                    status: f.status.as_str(),
                    owner,
                    uncount: i32::from(f.uncount_attempt),
                    now,
                };
                if one.execute(c)? == 1 {
                    written.push(f.id);
                }
            }
            Ok(written)
        }
    }
}
