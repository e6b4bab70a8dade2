//! The recorder: writes outcomes in batches (whatever arrived while the last batch was
//! being written goes into the next transaction: on SQLite the next claim's, on
//! PostgreSQL one of its own beside the claims), retrying until they are stored.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::engine::Ctx;
use super::outcome::{Outcome, OutcomeKind, apply};
use crate::error::AppError;

/// Most outcomes recorded in one transaction.
const MOST_AT_ONCE: usize = 5_000;

/// The recorder's own loop (PostgreSQL): whatever outcomes are waiting, up to a batch,
/// in one transaction, beside the claimer's. A failed batch is kept and written again;
/// when it fails a second time in a row and the database is not at fault, its outcomes
/// are written one by one, so one the database refuses cannot hold back the others (see
/// [`one_by_one`]). Ends when every sender of outcomes is gone (the claimer stopped and
/// its connections finished), never before: a claim committing while the engine stops
/// still has its outcomes recorded.
pub(super) async fn run(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<Outcome>) {
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut failed_before = false;
    loop {
        if outcomes.is_empty() {
            match rx.recv().await {
                Some(outcome) => outcomes.push(outcome),
                None => break,
            }
        }
        gather(&mut rx, &mut outcomes);
        let batch = outcomes.clone();
        let written = {
            let ctx = ctx.clone();
            ctx.db
                .clone()
                .write(move |conn| record(conn, &ctx, batch))
                .await
        };
        match written {
            Ok(alerted) => {
                recorded(&ctx, &outcomes, alerted);
                outcomes.clear();
                failed_before = false;
            }
            Err(e) => {
                failed(&ctx, &e, outcomes.len());
                if failed_before && !matches!(e, AppError::Unavailable(_)) {
                    outcomes = one_by_one(&ctx, std::mem::take(&mut outcomes)).await;
                }
                failed_before = true;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The next outcome when the claimer's loop records them itself (`Some`); never when the
/// recorder has its own loop.
pub(super) async fn next(rx: &mut Option<mpsc::UnboundedReceiver<Outcome>>) -> Option<Outcome> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Adds every outcome that is waiting (up to a batch) to `batch`.
pub(super) fn gather(rx: &mut mpsc::UnboundedReceiver<Outcome>, batch: &mut Vec<Outcome>) {
    while batch.len() < MOST_AT_ONCE {
        match rx.try_recv() {
            Ok(outcome) => batch.push(outcome),
            Err(_) => break,
        }
    }
}

/// Writes `batch` in the caller's transaction; whether an alert was queued (its own
/// mail must then be claimed).
pub(super) fn record(
    conn: &mut crate::db::DbConn,
    ctx: &Ctx,
    batch: Vec<Outcome>,
) -> Result<bool, AppError> {
    apply(
        conn,
        &ctx.owner,
        batch,
        ctx.cfg.retry_base,
        &ctx.system.from,
    )
}

/// After the transaction that recorded `batch` committed: metrics, and room for more.
pub(super) fn recorded(ctx: &Ctx, batch: &[Outcome], alerted: bool) {
    if alerted {
        ctx.wake.notify_one();
    }
    ctx.settled.notify_waiters();
    let metrics = super::metrics::metrics();
    for outcome in batch {
        let (provider, kind) = tally(outcome);
        let counter = match kind {
            "sent" => &metrics.sent,
            "failed" => &metrics.failed,
            "retried" => &metrics.retried,
            "held" => &metrics.held,
            _ => continue,
        };
        counter.with_label_values(&[provider.as_str()]).inc();
    }
    {
        let mut started = ctx.started.lock().expect("lock");
        for outcome in batch {
            started.remove(&outcome.message.id);
        }
    }
    ctx.recorded.fetch_add(batch.len() as u64, Ordering::AcqRel);
    ctx.in_flight.fetch_sub(batch.len(), Ordering::AcqRel);
    ctx.room.notify_one();
}

/// A failed write of outcomes: they are kept and written again (a database fault is
/// logged once per incident).
pub(super) fn failed(ctx: &Ctx, error: &AppError, count: usize) {
    match error {
        AppError::Unavailable(_) => ctx
            .db
            .warn_unless_fault(error, "recording outcomes failed; retrying"),
        _ => tracing::error!(error = %error, count, "recording outcomes failed; retrying"),
    }
}

/// Records each outcome in a transaction of its own. Returns what must be tried again
/// (all that was left when the database itself failed); an outcome the database refuses
/// alone is given up: logged, and its message left `sending`. This node's heartbeat keeps
/// its lease, so another node (or this one's next start) takes it over, flagged as a
/// possible duplicate, only once this node stops: never a send loop while the database
/// keeps refusing the outcome.
pub(super) async fn one_by_one(ctx: &std::sync::Arc<Ctx>, batch: Vec<Outcome>) -> Vec<Outcome> {
    let mut left = batch.into_iter();
    while let Some(outcome) = left.next() {
        let one = outcome.clone();
        let written = {
            let ctx = ctx.clone();
            ctx.db
                .clone()
                .write(move |conn| record(conn, &ctx, vec![one]))
                .await
        };
        match written {
            Ok(alerted) => recorded(ctx, std::slice::from_ref(&outcome), alerted),
            Err(AppError::Unavailable(_)) => {
                let mut again = vec![outcome];
                again.extend(left);
                return again;
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    message = outcome.message.id.0,
                    "an outcome the database refuses was given up; the message stays sending until this node stops, then it is taken over and flagged"
                );
                ctx.started
                    .lock()
                    .expect("lock")
                    .remove(&outcome.message.id);
                ctx.in_flight.fetch_sub(1, Ordering::AcqRel);
                ctx.room.notify_one();
            }
        }
    }
    Vec::new()
}

/// The metric an outcome counts under, with its provider label.
fn tally(outcome: &Outcome) -> (String, &'static str) {
    let provider = outcome
        .message
        .provider_id
        .map(|p| p.0.to_string())
        .unwrap_or_default();
    let kind = match &outcome.kind {
        OutcomeKind::Sent(_) => "sent",
        OutcomeKind::Failed(_) => "failed",
        OutcomeKind::Retry(_) if outcome.message.attempts < outcome.message.max_attempts => {
            "retried"
        }
        OutcomeKind::Retry(_) => "failed",
        OutcomeKind::CutOff(_) if outcome.message.attempts < outcome.message.max_attempts => {
            "retried"
        }
        OutcomeKind::CutOff(_) => "failed",
        OutcomeKind::ProviderRefused(..) | OutcomeKind::DomainHeld(_) => "held",
        OutcomeKind::Orphaned => "cancelled",
    };
    (provider, kind)
}
