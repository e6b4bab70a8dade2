//! The claimer: claims what is due in batches with a lease (never more than a provider may
//! hold on this node), reads the claimed messages' sends, files and providers, and hands
//! each to the sender of its channel. Every claimed message yields exactly one outcome.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::engine::{Ctx, OutcomeTx, heartbeat, provider_cap};
use super::outcome::{Outcome, OutcomeKind, Reply};
use super::recorder::writer;
use super::sender::{ChannelSender, Job};
use super::smtp_sender::SmtpSender;
use crate::db;
use crate::messages::model::{Attachment, Channel, Message, Send, SendId};
use crate::messages::queries as messages;
use crate::providers::model::{Provider, ProviderId};
use crate::providers::queries as providers;

pub(super) async fn run(ctx: Arc<Ctx>) {
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    actix_web::rt::spawn(writer(ctx.clone(), done_rx));
    actix_web::rt::spawn(heartbeat(ctx.clone()));
    let mut senders: HashMap<Channel, Box<dyn ChannelSender>> = HashMap::new();
    senders.insert(
        Channel::Email,
        Box::new(SmtpSender::new(ctx.clone(), done_tx.clone())),
    );
    let prune_every = (ctx.cfg.lease / 3).max(Duration::from_millis(200));
    let mut pruned = std::time::Instant::now();
    // Which provider is asked first this time: each in turn, so none waits behind another.
    let mut turn = 0usize;
    tracing::info!(owner = %ctx.owner, "delivery engine started");
    while !ctx.stopping.load(Ordering::Acquire) {
        if pruned.elapsed() >= prune_every {
            prune(&ctx, &mut senders).await;
            pruned = std::time::Instant::now();
        }
        let room = ctx
            .cfg
            .max_in_flight
            .saturating_sub(ctx.in_flight.load(Ordering::Acquire));
        if room == 0 {
            let _ = tokio::time::timeout(ctx.cfg.poll, ctx.room.notified()).await;
            continue;
        }
        let limit = (room as i64).min(ctx.cfg.batch);
        let held = ctx.held();
        turn = turn.wrapping_add(1);
        let claimed = {
            let (owner, lease) = (ctx.owner.clone(), ctx.cfg.lease);
            ctx.db
                .write(move |conn| claim(conn, &owner, lease, limit, &held, turn))
                .await
        };
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                ctx.db.warn_unless_fault(&e, "claim failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if claimed.is_empty() {
            // Nothing due, or only providers that are full: new work (ingest) or room
            // (an outcome recorded) is worth another claim.
            let _ = tokio::time::timeout(ctx.cfg.poll, async {
                tokio::select! {
                    _ = ctx.wake.notified() => {}
                    _ = ctx.room.notified() => {}
                }
            })
            .await;
            continue;
        }
        ctx.in_flight.fetch_add(claimed.len(), Ordering::AcqRel);
        if let Err(e) = dispatch(&ctx, &mut senders, claimed, &done_tx).await {
            ctx.db.warn_unless_fault(&e, "dispatch failed");
        }
    }
    tracing::info!(owner = %ctx.owner, "delivery engine stopped claiming");
}

/// Most of Mailroom's own alerts claimed at once.
const ALERTS_AT_ONCE: i64 = 16;

/// One claim, in one transaction: for each active provider in turn, as many due messages
/// as it has room for on this node (see [`provider_cap`]) and, on PostgreSQL, as its
/// shared rate buckets allow; then Mailroom's own alerts.
fn claim(
    conn: &mut db::DbConn,
    owner: &str,
    lease: Duration,
    limit: i64,
    held: &HashMap<ProviderId, usize>,
    turn: usize,
) -> Result<Vec<Message>, crate::error::AppError> {
    use super::queries::{Buckets, active_providers, claim_due};
    let now = db::now();
    let lease_until =
        now + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::minutes(2));
    let providers = active_providers(conn)?;
    let mut left = limit;
    let mut claimed = Vec::new();
    for k in 0..providers.len() {
        if left <= 0 {
            break;
        }
        let provider = &providers[(turn + k) % providers.len()];
        let room =
            provider_cap(provider).saturating_sub(held.get(&provider.id).copied().unwrap_or(0));
        let mut want = i64::try_from(room).unwrap_or(i64::MAX).min(left);
        if want <= 0 {
            continue;
        }
        let buckets = Buckets::lock(conn, provider, now)?;
        if let Some(buckets) = &buckets {
            want = want.min(buckets.available());
        }
        if want <= 0 {
            continue;
        }
        let got = claim_due(conn, owner, now, lease_until, Some(provider.id), want)?;
        if let Some(buckets) = buckets {
            buckets.spend(conn, got.len(), now)?;
        }
        left -= i64::try_from(got.len()).unwrap_or(i64::MAX);
        claimed.extend(got);
    }
    if left > 0 {
        claimed.extend(claim_due(
            conn,
            owner,
            now,
            lease_until,
            None,
            left.min(ALERTS_AT_ONCE),
        )?);
    }
    Ok(claimed)
}

/// Closes the pools of providers that were deleted or are no longer active: their workers
/// finish what they hold, then say QUIT. A provider that checks green again gets a new
/// pool at its next message.
async fn prune(ctx: &Ctx, senders: &mut HashMap<Channel, Box<dyn ChannelSender>>) {
    let ids: Vec<ProviderId> = senders
        .values()
        .flat_map(|s| s.providers())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if ids.is_empty() {
        return;
    }
    match ctx
        .db
        .run(move |conn| Ok(providers::find_many(conn, &ids)?))
        .await
    {
        Ok(found) => {
            let active: HashSet<ProviderId> = found
                .iter()
                .filter(|p| p.is_active())
                .map(|p| p.id)
                .collect();
            for sender in senders.values_mut() {
                sender.keep_only(&active);
            }
        }
        Err(e) => ctx
            .db
            .warn_unless_fault(&e, "cannot read providers to close unused pools"),
    }
}

/// Reads what the claimed messages need (their sends, files and providers) and hands each
/// to the sender of its channel.
async fn dispatch(
    ctx: &Arc<Ctx>,
    senders: &mut HashMap<Channel, Box<dyn ChannelSender>>,
    claimed: Vec<Message>,
    done: &OutcomeTx,
) -> Result<(), crate::error::AppError> {
    let ids: Vec<ProviderId> = claimed
        .iter()
        .filter_map(|m| m.provider_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let body_ids: Vec<SendId> = claimed
        .iter()
        .map(|m| m.send_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let (rows, bodies) = match ctx
        .db
        .run(move |conn| {
            Ok((
                providers::find_many(conn, &ids)?,
                messages::find_sends(conn, &body_ids)?,
            ))
        })
        .await
    {
        Ok(loaded) => loaded,
        Err(e) => return Err(give_back(claimed, done, e)),
    };
    let rows: HashMap<ProviderId, Provider> = rows.into_iter().map(|p| (p.id, p)).collect();
    // Files only for the contents that have any: most messages have none.
    let with_files: Vec<SendId> = bodies
        .iter()
        .filter(|b| b.attachments > 0)
        .map(|b| b.id)
        .collect();
    let mut files: HashMap<SendId, Vec<Attachment>> = HashMap::new();
    if !with_files.is_empty() {
        let found = match ctx
            .db
            .run(move |conn| Ok(messages::find_attachments(conn, &with_files)?))
            .await
        {
            Ok(found) => found,
            Err(e) => return Err(give_back(claimed, done, e)),
        };
        for file in found {
            files.entry(file.send_id).or_default().push(file);
        }
    }
    let files: HashMap<SendId, Arc<Vec<Attachment>>> =
        files.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
    let no_files = Arc::new(Vec::new());
    let bodies: HashMap<SendId, Arc<Send>> =
        bodies.into_iter().map(|b| (b.id, Arc::new(b))).collect();
    for message in claimed {
        // Counted before anything else: every claimed message yields exactly one outcome,
        // and the writer uncounts it then.
        if let Some(provider) = message.provider_id {
            ctx.hold(provider, rows.get(&provider).map_or(1, provider_cap));
        }
        let Some(body) = bodies.get(&message.send_id).cloned() else {
            let _ = done.send(Outcome {
                kind: OutcomeKind::Failed(Reply::text("its content is missing")),
                message,
            });
            continue;
        };
        if message.provider_deleted() {
            let _ = done.send(Outcome {
                kind: OutcomeKind::Orphaned,
                message,
            });
            continue;
        }
        let provider = match message.provider_id {
            // Mailroom's own alert: the sender takes it through the system provider.
            None => None,
            Some(id) => match rows.get(&id) {
                Some(provider) => Some(provider),
                None => {
                    // Deleted between the claim and this read.
                    let _ = done.send(Outcome {
                        kind: OutcomeKind::Orphaned,
                        message,
                    });
                    continue;
                }
            },
        };
        let job = Job {
            files: files
                .get(&message.send_id)
                .cloned()
                .unwrap_or_else(|| no_files.clone()),
            message,
            body,
        };
        match senders.get_mut(&job.message.channel) {
            Some(sender) => sender.take(job, provider),
            None => {
                let channel = job.message.channel;
                let _ = done.send(Outcome {
                    kind: OutcomeKind::Failed(Reply::text(&format!(
                        "this node cannot send {channel} messages"
                    ))),
                    message: job.message,
                });
            }
        }
    }
    Ok(())
}

/// Claimed messages whose data could not be read go back as a retry, so none is left
/// claimed and forgotten while this node renews its leases.
fn give_back(
    claimed: Vec<Message>,
    done: &OutcomeTx,
    error: crate::error::AppError,
) -> crate::error::AppError {
    for message in claimed {
        let _ = done.send(Outcome {
            kind: OutcomeKind::Retry(Reply::text(&format!(
                "its content could not be read: {error}"
            ))),
            message,
        });
    }
    error
}
