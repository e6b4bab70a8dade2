//! The recorder: writes outcomes in batches (whatever arrived while the last batch was
//! being written goes into the next transaction), retrying until they are stored.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::engine::Ctx;
use super::outcome::{Outcome, OutcomeKind, apply};
use crate::error::AppError;
use crate::messages::model::MessageId;
use crate::providers::model::ProviderId;

/// Records outcomes in batches: whatever arrived while the last batch was being written
/// goes into the next transaction.
pub(super) async fn writer(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<Outcome>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 5_000 {
            match rx.try_recv() {
                Ok(outcome) => batch.push(outcome),
                Err(_) => break,
            }
        }
        let count = batch.len();
        let tallies: Vec<(String, &'static str)> = batch.iter().map(tally).collect();
        let ids: Vec<MessageId> = batch.iter().map(|o| o.message.id).collect();
        let providers: Vec<Option<ProviderId>> =
            batch.iter().map(|o| o.message.provider_id).collect();
        let (owner, base, from) = (
            ctx.owner.clone(),
            ctx.cfg.retry_base,
            ctx.system.from.clone(),
        );
        let mut pending = Some(batch);
        loop {
            let attempt = pending.take().unwrap_or_default();
            let owner = owner.clone();
            let kept = attempt.clone();
            match ctx
                .db
                .write({
                    let from = from.clone();
                    move |conn| apply(conn, &owner, attempt, base, &from)
                })
                .await
            {
                Ok(alerted) => {
                    if alerted {
                        ctx.wake.notify_one();
                    }
                    ctx.settled.notify_waiters();
                    break;
                }
                Err(e) => {
                    // Outcomes must not be lost: keep them and try again.
                    match &e {
                        AppError::Unavailable(_) => ctx
                            .db
                            .warn_unless_fault(&e, "recording outcomes failed; retrying"),
                        _ => {
                            tracing::error!(error = %e, count, "recording outcomes failed; retrying")
                        }
                    }
                    pending = Some(kept);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let metrics = super::metrics::metrics();
        for (provider, kind) in tallies {
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
            for id in &ids {
                started.remove(id);
            }
        }
        ctx.release(&providers);
        ctx.recorded.fetch_add(count as u64, Ordering::AcqRel);
        ctx.in_flight.fetch_sub(count, Ordering::AcqRel);
        ctx.room.notify_one();
    }
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
        OutcomeKind::ProviderRefused(..) => "held",
        OutcomeKind::Orphaned => "cancelled",
    };
    (provider, kind)
}
