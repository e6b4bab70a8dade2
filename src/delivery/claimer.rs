//! The claimer: claims what is due in batches with a lease (never more than a provider may
//! hold on this node), reads the claimed messages' sends, files and providers, and hands
//! each to the sender of its channel. Every claimed message yields exactly one outcome.
//! Its loop ([`run`]) is the engine's: on SQLite each turn records outcomes and claims in
//! one transaction; on PostgreSQL the recorder has a loop of its own beside it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::engine::{Asked, Ctx, OutcomeTx, heartbeat, provider_cap};
use super::outcome::{Outcome, OutcomeKind, Reply};
use super::sender::{ChannelSender, Job};
use super::smtp_sender::SmtpSender;
use crate::db;
use crate::domains::sign::Signer;
use crate::messages::model::{Attachment, Channel, Message, Send, SendId};
use crate::messages::queries as messages;
use crate::providers::model::{Provider, ProviderId};
use crate::providers::queries as providers;

/// The engine's loop. Each turn is one transaction that claims what there is room for
/// (the claimer) and, on SQLite, records the outcomes that came in (the recorder); after
/// it commits, the claimed messages go to their channel's sender. One commit per turn,
/// whatever the mix, keeps the SQLite writer free for the API; on PostgreSQL the recorder
/// runs beside it ([`super::recorder::run`]).
pub(super) async fn run(ctx: Arc<Ctx>) {
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let done_tx = OutcomeTx::new(done_tx, ctx.clone());
    // On PostgreSQL the recorder has a loop and transactions of its own, beside the
    // claims (each turn is mostly round trips there, and two connections overlap them);
    // on SQLite, with one writer, one commit per turn records and claims together.
    let split = ctx.db.is_postgres();
    let mut done_rx = if split {
        let recorder = actix_web::rt::spawn(super::recorder::run(ctx.clone(), done_rx));
        let watched = ctx.clone();
        actix_web::rt::spawn(async move {
            // The recorder ends only after the claimer; ending before it (a panic) would
            // leave every outcome unrecorded: nothing more is claimed then.
            let ended = recorder.await;
            if !watched.stopping.load(Ordering::Acquire) {
                tracing::error!(
                    ended = ?ended.err(),
                    "the delivery recorder stopped; this node claims nothing more until it restarts"
                );
                watched.stopping.store(true, Ordering::Release);
                watched.wake.notify_one();
            }
        });
        None
    } else {
        Some(done_rx)
    };
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
    // Claim at once at start; then when new work comes (ingest wakes), when a provider
    // with more due has half of its room free again, or every `poll` (due retries,
    // scheduled messages, rate buckets refilled).
    let mut claim_now = true;
    // Outcomes not yet recorded (kept across a failed write).
    let mut outcomes: Vec<Outcome> = Vec::new();
    // After a failed turn the next records only, so a claim's error cannot hold outcomes.
    let mut record_only = false;
    loop {
        let stopping = ctx.stopping.load(Ordering::Acquire);
        if stopping
            && (split || (outcomes.is_empty() && ctx.in_flight.load(Ordering::Acquire) == 0))
        {
            break;
        }
        if pruned.elapsed() >= prune_every {
            prune(&ctx, &mut senders).await;
            pruned = std::time::Instant::now();
        }
        if outcomes.is_empty() && (!claim_now || stopping) {
            let woke = tokio::time::timeout(ctx.cfg.poll, async {
                tokio::select! {
                    outcome = super::recorder::next(&mut done_rx) => {
                        outcomes.extend(outcome);
                        false
                    }
                    _ = ctx.wake.notified() => true,
                    _ = ctx.room.notified() => ctx.worth_claiming(),
                }
            })
            .await;
            claim_now |= woke.unwrap_or(true);
        }
        if let Some(done_rx) = &mut done_rx {
            super::recorder::gather(done_rx, &mut outcomes);
        }
        claim_now |= ctx.worth_claiming();
        let room = ctx
            .cfg
            .max_in_flight
            .saturating_sub(ctx.in_flight.load(Ordering::Acquire));
        let limit = if claim_now && !stopping && !record_only {
            (room as i64).min(ctx.cfg.batch)
        } else {
            0
        };
        if outcomes.is_empty() && limit == 0 {
            continue;
        }
        claim_now = false;
        record_only = false;
        // With the recorder apart, every outcome counted out before the claim began was
        // committed before it: an alert it queued is seen by this claim.
        let settled_before = ctx.in_flight.load(Ordering::Acquire) == 0;
        let held = ctx.held();
        let mine = ctx.slots.mine();
        turn = turn.wrapping_add(1);
        let batch = outcomes.clone();
        let turned = {
            let ctx = ctx.clone();
            ctx.db
                .clone()
                .write(move |conn| {
                    let alerted = if batch.is_empty() {
                        false
                    } else {
                        super::recorder::record(conn, &ctx, batch)?
                    };
                    let claimed = if limit > 0 {
                        let (claimed, asked, mut loaded) = claim(
                            conn,
                            &ctx.owner,
                            ctx.cfg.lease,
                            limit,
                            &held,
                            mine.as_ref(),
                            turn,
                        )?;
                        loaded.find_signers(&ctx);
                        Some((claimed, asked, loaded))
                    } else {
                        None
                    };
                    Ok((alerted, claimed))
                })
                .await
        };
        let (alerted, claimed) = match turned {
            Ok(turned) => turned,
            Err(e) => {
                if outcomes.is_empty() {
                    ctx.db.warn_unless_fault(&e, "claim failed; retrying");
                } else {
                    super::recorder::failed(&ctx, &e, outcomes.len());
                    if limit == 0 && !matches!(e, crate::error::AppError::Unavailable(_)) {
                        // Recording alone failed and the database is not at fault: one
                        // outcome it refuses must not hold back the others (nor every
                        // claim after them). Each alone; what still fails is left to
                        // its lease (reclaimed, flagged, tried again).
                        outcomes =
                            super::recorder::one_by_one(&ctx, std::mem::take(&mut outcomes)).await;
                    }
                    record_only = true;
                }
                claim_now = true;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if !outcomes.is_empty() {
            super::recorder::recorded(&ctx, &outcomes, alerted);
            outcomes.clear();
        }
        let Some((claimed, asked, loaded)) = claimed else {
            continue;
        };
        let settled = if split {
            settled_before
        } else {
            ctx.in_flight.load(Ordering::Acquire) == 0
        };
        if claimed.is_empty() && settled {
            ctx.idle_turns.fetch_add(1, Ordering::AcqRel);
            ctx.idle.notify_waiters();
        }
        ctx.claimed(&asked);
        if claimed.len() as i64 >= limit {
            // The whole window was taken: more may be due.
            claim_now = true;
        }
        if !claimed.is_empty() {
            ctx.in_flight.fetch_add(claimed.len(), Ordering::AcqRel);
            let loaded = read_files(&ctx, loaded).await;
            dispatch(&ctx, &mut senders, claimed, loaded, &done_tx);
        }
    }
    tracing::info!(owner = %ctx.owner, "delivery engine stopped");
}

/// Most of Mailroom's own alerts claimed at once.
const ALERTS_AT_ONCE: i64 = 16;

/// One claim, in one transaction: for each active provider in turn, as many due messages
/// as it has room for on this node (see [`provider_cap`]) and, on PostgreSQL, as its
/// shared rate buckets allow and its connection slots can send (`mine`: the slots this
/// node holds); then Mailroom's own alerts.
fn claim(
    conn: &mut db::DbConn,
    owner: &str,
    lease: Duration,
    limit: i64,
    held: &HashMap<ProviderId, usize>,
    mine: Option<&HashMap<ProviderId, usize>>,
    turn: usize,
) -> Result<(Vec<Message>, Vec<Asked>, Loaded), crate::error::AppError> {
    use super::queries::{Buckets, active_providers, claim_due};
    let now = db::now();
    let lease_until =
        now + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::minutes(2));
    let providers = active_providers(conn)?;
    // Slots taken by every node, per provider (PostgreSQL).
    let taken = match mine {
        Some(_) => Some(super::slots::taken(conn)?),
        None => None,
    };
    let mut left = limit;
    let mut claimed = Vec::new();
    let mut asked = Vec::new();
    for k in 0..providers.len() {
        if left <= 0 {
            break;
        }
        let provider = &providers[(turn + k) % providers.len()];
        let mut cap = provider_cap(provider);
        if let (Some(mine), Some(taken)) = (mine, &taken) {
            // Only as much as the connections this node holds or could still take can
            // send: what another node's connections are busy with is not claimed here.
            let max = usize::try_from(provider.max_connections.clamp(1, 100)).unwrap_or(1);
            let ours = mine.get(&provider.id).copied().unwrap_or(0);
            let all = taken.get(&provider.id).copied().unwrap_or(0);
            let usable = (max.saturating_sub(all) + ours).min(max);
            cap = cap.min(usable * super::engine::PER_CONNECTION);
        }
        let room = cap.saturating_sub(held.get(&provider.id).copied().unwrap_or(0));
        let wanted = i64::try_from(room).unwrap_or(i64::MAX).min(left);
        if wanted <= 0 {
            continue;
        }
        let buckets = Buckets::lock(conn, provider, now)?;
        let take = match &buckets {
            Some(buckets) => wanted.min(buckets.available()),
            None => wanted,
        };
        let got = if take > 0 {
            claim_due(conn, owner, now, lease_until, Some(provider.id), take)?
        } else {
            Vec::new()
        };
        if let Some(buckets) = buckets {
            buckets.spend(conn, got.len(), now)?;
        }
        left -= i64::try_from(got.len()).unwrap_or(i64::MAX);
        asked.push(Asked {
            provider: provider.id,
            cap,
            wanted: usize::try_from(wanted).unwrap_or(0),
            got: got.len(),
        });
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
    let loaded = load(conn, &claimed, providers)?;
    Ok((claimed, asked, loaded))
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

/// What the claimed messages need: their providers, sends and files.
pub(super) struct Loaded {
    providers: HashMap<ProviderId, Provider>,
    sends: HashMap<SendId, Arc<Send>>,
    files: HashMap<SendId, Arc<Vec<Attachment>>>,
    /// Sends with files, read after the claim commits (`read_files`).
    with_files: Vec<SendId>,
    /// The workspaces' domains the sends' From addresses are on.
    domains: Vec<crate::domains::model::SigningDomain>,
    /// Per send from one of its workspace's domains: how it is signed.
    signers: HashMap<SendId, Signing>,
}

/// How a send from one of its workspace's domains goes out.
enum Signing {
    /// Signed with this key.
    Sign(Arc<Signer>),
    /// Its domain is authenticated but its key cannot be used: tried again later.
    Broken(String),
    /// Its domain is not authenticated (any more): held back until it is, unless it is
    /// its provider's own account (whose provider signs it).
    Unauthenticated(String),
}

impl Loaded {
    /// Finds each send's signer: the most specific authenticated domain of its workspace
    /// its From address is on (keys opened once, then kept).
    fn find_signers(&mut self, ctx: &Ctx) {
        for send in self.sends.values() {
            let found = crate::domains::service::signing_candidates(&send.from_address)
                .into_iter()
                .find_map(|name| {
                    self.domains
                        .iter()
                        .find(|d| d.workspace_id == send.workspace_id && d.name == name)
                });
            let Some(domain) = found else { continue };
            let signing = if !domain.authenticated {
                Signing::Unauthenticated(domain.name.clone())
            } else {
                match ctx.signers.of(&ctx.sealer, domain) {
                    Ok(signer) => Signing::Sign(signer),
                    Err(why) => {
                        tracing::warn!(domain = %domain.name, error = %why, "cannot open a DKIM key");
                        Signing::Broken(why)
                    }
                }
            };
            self.signers.insert(send.id, signing);
        }
    }
}

/// Reads the files of the claimed sends after the claim committed, never while holding
/// the write lock: a claim of many large files would make every other writer wait past
/// its timeout. A send whose files cannot be read has none in `files`, and its messages
/// are tried again later (`dispatch`).
async fn read_files(ctx: &Arc<Ctx>, mut loaded: Loaded) -> Loaded {
    if loaded.with_files.is_empty() {
        return loaded;
    }
    let wanted = std::mem::take(&mut loaded.with_files);
    for _ in 0..3 {
        let ids = wanted.clone();
        match ctx
            .db
            .run(move |conn| Ok(messages::find_attachments(conn, &ids)?))
            .await
        {
            Ok(found) => {
                let mut files: HashMap<SendId, Vec<Attachment>> = HashMap::new();
                for file in found {
                    files.entry(file.send_id).or_default().push(file);
                }
                loaded.files = files.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
                return loaded;
            }
            Err(e) => {
                ctx.db
                    .warn_unless_fault(&e, "cannot read the files of claimed messages");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    loaded
}

/// Reads what the claimed messages need but their files, in the claim's own transaction
/// (one round trip to the database per claim).
fn load(
    conn: &mut db::DbConn,
    claimed: &[Message],
    providers: Vec<Provider>,
) -> Result<Loaded, crate::error::AppError> {
    let send_ids: Vec<SendId> = claimed
        .iter()
        .map(|m| m.send_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let sends = messages::find_sends(conn, &send_ids)?;
    // Files only for the contents that have any: most messages have none.
    let with_files: Vec<SendId> = sends
        .iter()
        .filter(|b| b.attachments > 0)
        .map(|b| b.id)
        .collect();
    let workspaces: Vec<_> = sends
        .iter()
        .map(|s| s.workspace_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let names: Vec<String> = sends
        .iter()
        .flat_map(|s| crate::domains::service::signing_candidates(&s.from_address))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let domains = crate::domains::queries::among(conn, &workspaces, &names)?;
    Ok(Loaded {
        providers: providers.into_iter().map(|p| (p.id, p)).collect(),
        sends: sends.into_iter().map(|b| (b.id, Arc::new(b))).collect(),
        files: HashMap::new(),
        with_files,
        domains,
        signers: HashMap::new(),
    })
}

/// Hands each claimed message to the sender of its channel.
fn dispatch(
    ctx: &Arc<Ctx>,
    senders: &mut HashMap<Channel, Box<dyn ChannelSender>>,
    claimed: Vec<Message>,
    loaded: Loaded,
    done: &OutcomeTx,
) {
    let Loaded {
        providers: rows,
        sends: bodies,
        files,
        signers,
        ..
    } = loaded;
    let no_files = Arc::new(Vec::new());
    for message in claimed {
        // Counted before anything else: every claimed message yields exactly one outcome,
        // and the writer uncounts it then.
        if let Some(provider) = message.provider_id {
            ctx.hold(provider);
        }
        let Some(body) = bodies.get(&message.send_id).cloned() else {
            done.send(Outcome {
                kind: OutcomeKind::Failed(Reply::text("its content is missing")),
                message,
            });
            continue;
        };
        if message.provider_deleted() {
            done.send(Outcome {
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
                    done.send(Outcome {
                        kind: OutcomeKind::Orphaned,
                        message,
                    });
                    continue;
                }
            },
        };
        let files = match files.get(&message.send_id) {
            Some(files) => files.clone(),
            None if body.attachments == 0 => no_files.clone(),
            None => {
                // Never sent without the files it carries: tried again later.
                done.send(Outcome {
                    kind: OutcomeKind::Retry(Reply::text("its files could not be read")),
                    message,
                });
                continue;
            }
        };
        // Mailroom's own alerts go out through the system provider, unsigned.
        let signer = match (provider, signers.get(&message.send_id)) {
            (Some(_), Some(Signing::Sign(signer))) => Some(signer.clone()),
            (Some(_), Some(Signing::Broken(why))) => {
                // Never sent unsigned from an authenticated domain: tried again later.
                done.send(Outcome {
                    kind: OutcomeKind::Retry(Reply::text(&format!(
                        "its domain's DKIM key cannot be used: {why}"
                    ))),
                    message,
                });
                continue;
            }
            // Its provider's own account is signed by the provider; an API call's own
            // server signs nothing.
            (Some(provider), Some(Signing::Unauthenticated(domain)))
                if provider.per_request
                    || !provider
                        .account_address
                        .eq_ignore_ascii_case(&body.from_address) =>
            {
                // Queued before its domain lost its authentication: never sent unsigned
                // from it; held until the domain checks again (then released).
                done.send(Outcome {
                    kind: OutcomeKind::DomainHeld(Reply::text(&format!(
                        "its domain {domain} is not authenticated"
                    ))),
                    message,
                });
                continue;
            }
            _ => None,
        };
        let job = Job {
            files,
            message,
            body,
            signer,
            prepared: None,
        };
        match senders.get_mut(&job.message.channel) {
            Some(sender) => sender.take(job, provider),
            None => {
                let channel = job.message.channel;
                done.send(Outcome {
                    kind: OutcomeKind::Failed(Reply::text(&format!(
                        "this node cannot send {channel} messages"
                    ))),
                    message: job.message,
                });
            }
        }
    }
}
