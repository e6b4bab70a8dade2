//! All SQL of the queue: claiming due messages, renewing and reclaiming leases, recording
//! outcomes in batches, holding and releasing a provider's messages, giving back at a stop.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConn;
use crate::db::schema::messages;
use crate::messages::model::*;
use crate::providers::model::ProviderId;
use crate::workspaces::model::WorkspaceId;
use diesel::connection::SimpleConnection;

use crate::messages::queries::{INSERT_CHUNK, insert_events};

mod record;
pub use record::*;

/// States a message is claimed from.
const CLAIMABLE: [&str; 2] = ["scheduled", "queued"];

/// One provider's claim: its due messages, oldest first, read along
/// `messages_provider_due` (provider_id, due_at, id). `{lock}` is `FOR UPDATE SKIP LOCKED`
/// on PostgreSQL (nodes never wait on each other's rows) and empty on SQLite, where the
/// caller's immediate transaction already serializes claimers. `{provider}` is either a
/// provider's id or Mailroom's own alerts (no provider).
const CLAIM_SQL: &str = "UPDATE messages SET status = 'sending', lease_owner = $1, lease_until = $2, \
     attempts = attempts + 1, updated_at = $3 \
     WHERE id IN (SELECT m.id FROM messages m \
        WHERE {provider} AND m.status IN ('scheduled', 'queued') AND m.due_at <= $3 \
        ORDER BY m.due_at, m.id LIMIT $4 {lock}) \
     RETURNING *";

/// The active providers (green: only they are claimed for; a red or grey provider's mail
/// stays queued, not leased), with their limits.
pub fn active_providers(conn: &mut DbConn) -> QueryResult<Vec<crate::providers::model::Provider>> {
    use crate::db::schema::providers;
    providers::table
        .filter(providers::status.eq("active"))
        .order(providers::id.asc())
        .load(conn)
}

/// Claims up to `limit` due messages of one provider (`None`: Mailroom's own alerts) for
/// `owner` until `lease_until`, counting the attempt (recorded before any SMTP DATA is
/// sent).
pub fn claim_due(
    conn: &mut DbConn,
    owner: &str,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
    provider: Option<ProviderId>,
    limit: i64,
) -> QueryResult<Vec<Message>> {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    let which = match provider {
        Some(_) => "m.provider_id = $5",
        None => "m.provider_id IS NULL AND m.origin = 'alert' AND $5 = 0",
    };
    let id = provider.map_or(0, |p| p.0);
    match conn {
        DbConn::Pg(c) => {
            // Take the due rows in index order and stop at the limit. Without fresh
            // statistics (a large mailing just landed) the planner would rather sort every
            // due row on every claim: quadratic work. SET LOCAL lasts until the end of this
            // (claim) transaction only.
            c.batch_execute("SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off")?;
            let sql = CLAIM_SQL
                .replace("{lock}", "FOR UPDATE SKIP LOCKED")
                .replace("{provider}", which);
            diesel::sql_query(sql)
                .bind::<Text, _>(owner)
                .bind::<Timestamp, _>(lease_until)
                .bind::<Timestamp, _>(now)
                .bind::<BigInt, _>(limit)
                .bind::<BigInt, _>(id)
                .load(c)
        }
        DbConn::Sqlite(c) => {
            // SQLite numbers `$N` parameters in order of first appearance; `?N` binds by
            // number, as the query means.
            let sql = CLAIM_SQL
                .replace("{lock}", "")
                .replace("{provider}", which)
                .replace('$', "?");
            diesel::sql_query(sql)
                .bind::<Text, _>(owner)
                .bind::<Timestamp, _>(lease_until)
                .bind::<Timestamp, _>(now)
                .bind::<BigInt, _>(limit)
                .bind::<BigInt, _>(id)
                .load(c)
        }
    }
}

/// A provider's rate limits as token buckets shared by every node (PostgreSQL): each
/// window refills at its rate and holds about a second of it.
pub struct Buckets {
    provider: ProviderId,
    /// (window in seconds, tokens available now, rate per second).
    windows: Vec<(i32, f64, f64)>,
}

#[derive(QueryableByName)]
struct BucketRow {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    window_secs: i32,
    #[diesel(sql_type = diesel::sql_types::Double)]
    tokens: f64,
    #[diesel(sql_type = diesel::sql_types::Timestamp)]
    refilled_at: NaiveDateTime,
}

impl Buckets {
    /// Locks the provider's buckets (created full on first use) and refills them to `now`.
    /// `None` on SQLite (one process: its own limiter is the whole limit) and for a
    /// provider without limits.
    pub fn lock(
        conn: &mut DbConn,
        provider: &crate::providers::model::Provider,
        now: NaiveDateTime,
    ) -> QueryResult<Option<Self>> {
        use diesel::sql_types::{BigInt, Double, Integer, Timestamp};
        let DbConn::Pg(c) = conn else {
            return Ok(None);
        };
        let limits: Vec<(i32, f64)> = [
            (1, provider.per_second),
            (60, provider.per_minute),
            (3600, provider.per_hour),
        ]
        .into_iter()
        .filter_map(|(window, limit)| limit.map(|n| (window, f64::from(n.max(1)))))
        .collect();
        if limits.is_empty() {
            return Ok(None);
        }
        for (window, limit) in &limits {
            diesel::sql_query(
                "INSERT INTO provider_tokens (provider_id, window_secs, tokens, refilled_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind::<BigInt, _>(provider.id.0)
            .bind::<Integer, _>(*window)
            .bind::<Double, _>(capacity(*limit, *window))
            .bind::<Timestamp, _>(now)
            .execute(c)?;
        }
        let rows: Vec<BucketRow> = diesel::sql_query(
            "SELECT window_secs, tokens, refilled_at FROM provider_tokens \
             WHERE provider_id = $1 ORDER BY window_secs FOR UPDATE",
        )
        .bind::<BigInt, _>(provider.id.0)
        .load(c)?;
        let windows = limits
            .into_iter()
            .map(|(window, limit)| {
                let rate = limit / f64::from(window);
                let tokens = rows.iter().find(|r| r.window_secs == window).map_or(
                    capacity(limit, window),
                    |r| {
                        let elapsed = (now - r.refilled_at).as_seconds_f64().max(0.0);
                        (r.tokens + elapsed * rate).min(capacity(limit, window))
                    },
                );
                (window, tokens, rate)
            })
            .collect();
        Ok(Some(Self {
            provider: provider.id,
            windows,
        }))
    }

    /// Whole tokens available in every window.
    pub fn available(&self) -> i64 {
        self.windows
            .iter()
            .map(|(_, tokens, _)| tokens.floor() as i64)
            .min()
            .unwrap_or(0)
            .max(0)
    }

    /// Takes `spent` tokens from every window and stores them, refilled as of `now`.
    pub fn spend(self, conn: &mut DbConn, spent: usize, now: NaiveDateTime) -> QueryResult<()> {
        use diesel::sql_types::{BigInt, Double, Integer, Timestamp};
        let DbConn::Pg(c) = conn else {
            return Ok(());
        };
        for (window, tokens, _) in self.windows {
            diesel::sql_query(
                "UPDATE provider_tokens SET tokens = $3, refilled_at = $4 \
                 WHERE provider_id = $1 AND window_secs = $2",
            )
            .bind::<BigInt, _>(self.provider.0)
            .bind::<Integer, _>(window)
            .bind::<Double, _>(tokens - spent as f64)
            .bind::<Timestamp, _>(now)
            .execute(c)?;
        }
        Ok(())
    }
}

/// A bucket holds about a second of its rate (at least one message).
fn capacity(limit: f64, window: i32) -> f64 {
    (limit / f64::from(window)).clamp(1.0, limit)
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

/// Releases the messages held because their From domain was not authenticated, now that
/// `domain` is (those on it or on a subdomain of it): scheduled ones wait for their time
/// again, the others are due now.
pub fn release_for_domain(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    domain: &str,
    now: NaiveDateTime,
) -> QueryResult<Vec<(MessageId, i32)>> {
    let held: Vec<(MessageId, String)> = messages::table
        .filter(messages::workspace_id.eq(workspace))
        .filter(messages::status.eq(Status::Held.as_str()))
        .filter(messages::hold_reason.eq(super::outcome::DOMAIN_HOLD))
        .select((messages::id, messages::from_address))
        .load(conn)?;
    let ids: Vec<MessageId> = held
        .into_iter()
        .filter(|(_, from)| {
            crate::domains::service::signing_candidates(from)
                .iter()
                .any(|name| name == domain)
        })
        .map(|(id, _)| id)
        .collect();
    let mut released = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let held = || {
            messages::table
                .filter(messages::id.eq_any(chunk))
                .filter(messages::status.eq(Status::Held.as_str()))
        };
        released.extend(
            diesel::update(held().filter(messages::send_at.gt(now)))
                .set((
                    messages::status.eq(Status::Scheduled.as_str()),
                    messages::hold_reason.eq(None::<String>),
                    messages::due_at.eq(messages::send_at.assume_not_null()),
                    messages::updated_at.eq(now),
                ))
                .returning((messages::id, messages::attempts))
                .get_results::<(MessageId, i32)>(conn)?,
        );
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
    }
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
