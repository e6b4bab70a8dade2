//! The delivery engine, on its own actix Arbiter thread, in three named parts: the
//! **claimer** (`claimer`: what is due, within each provider's limits) hands each claimed
//! message to the **sender of its channel** (`sender::ChannelSender`; SMTP in
//! `smtp_sender`), and every outcome goes to the **recorder** (`recorder`: batched
//! transactions). A heartbeat renews this node's leases and takes over messages whose
//! node died.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::transport::smtp::extension::ClientId;
use tokio::sync::{Notify, mpsc};

use super::outcome::Outcome;
use crate::crypto::Sealer;
use crate::db::{self, Db};
use crate::messages::model::MessageId;
use crate::providers::egress::EgressPolicy;
use crate::providers::model::{Provider, ProviderId};

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Messages claimed per transaction at most.
    pub batch: i64,
    /// Messages claimed and not yet recorded, at most (bounds memory).
    pub max_in_flight: usize,
    /// How long a claim holds a message; renewed while the node lives.
    pub lease: Duration,
    /// How long to wait for new work when the queue is empty (ingest wakes it sooner).
    pub poll: Duration,
    /// First retry delay; doubles each attempt, with ±25 % jitter, at most an hour.
    pub retry_base: Duration,
    /// SMTP timeout.
    pub smtp_timeout: Duration,
}

pub(crate) struct Ctx {
    pub(super) db: Db,
    pub(super) sealer: Sealer,
    pub(super) egress: EgressPolicy,
    /// For the hidden providers of per-request SMTP (API calls' own servers).
    pub(super) per_request_egress: EgressPolicy,
    pub(super) cfg: EngineConfig,
    pub(super) owner: String,
    pub(super) in_flight: AtomicUsize,
    pub(super) recorded: std::sync::atomic::AtomicU64,
    pub(super) room: Notify,
    pub(super) wake: Arc<Notify>,
    /// Woken after each batch of outcomes is committed (`?wait=` answers then).
    pub(super) settled: Notify,
    /// Connection slots shared with the other nodes (PostgreSQL).
    pub(super) slots: super::slots::Slots,
    /// Claim turns that found nothing to send with nothing in flight (`until_idle`).
    pub(super) idle_turns: std::sync::atomic::AtomicU64,
    /// Notified after each such turn.
    pub(super) idle: Notify,
    pub(super) stopping: AtomicBool,
    pub(super) closing: AtomicBool,
    pub(super) started: Mutex<HashSet<MessageId>>,
    /// Per provider: messages held by this node and the most it may hold.
    pub(super) per_provider: Mutex<HashMap<ProviderId, Room>>,
    pub(super) hello: ClientId,
    pub(super) system: super::system::SystemProvider,
    /// Threads that make DKIM signatures.
    pub(super) signing: super::signing::SigningPool,
    /// Opened signing keys.
    pub(super) signers: super::signing::Signers,
}

/// A handle on the running engine.
#[derive(Clone)]
pub struct EngineHandle {
    ctx: Arc<Ctx>,
}

impl EngineHandle {
    /// Tells the engine new messages are due (ingest calls it after committing).
    pub fn wake(&self) {
        self.ctx.wake.notify_one();
    }

    /// Outcomes committed since start (for the benchmark and metrics).
    pub fn recorded(&self) -> u64 {
        self.ctx.recorded.load(Ordering::Acquire)
    }

    /// Resolves once outcomes were next committed by this node: a caller waiting for
    /// messages to settle reads them again then. Create it before reading, so a commit
    /// between the read and the wait is not missed.
    pub fn settled(&self) -> tokio::sync::futures::Notified<'_> {
        self.ctx.settled.notified()
    }

    /// Resolves once a claim turn that began after this call found nothing this node may
    /// send now, with nothing in flight and every outcome recorded: whatever was due when
    /// it was called has been sent, failed or put back to wait. Messages waiting for their
    /// time, a retry or a provider that is not green do not keep it waiting. `None` when
    /// that takes longer than `limit`.
    pub async fn until_idle(&self, limit: Duration) -> Option<()> {
        // The turn running now may have begun before the call; the one after it did not.
        let wanted = self.ctx.idle_turns.load(Ordering::Acquire) + 2;
        tokio::time::timeout(limit, async {
            loop {
                let next = self.ctx.idle.notified();
                tokio::pin!(next);
                next.as_mut().enable();
                if self.ctx.idle_turns.load(Ordering::Acquire) >= wanted {
                    return;
                }
                self.wake();
                next.await;
            }
        })
        .await
        .ok()
    }

    /// This node's lease owner token.
    pub fn owner(&self) -> &str {
        &self.ctx.owner
    }

    /// Stops claiming at once (no waiting): for tests tearing down.
    pub fn stop_now(&self) {
        self.ctx.stopping.store(true, Ordering::Release);
        self.ctx.wake.notify_one();
    }

    /// Graceful stop (SIGTERM): stop claiming, let what is in flight finish within `grace`,
    /// then release the rest to other nodes (or the next start).
    pub async fn stop(&self, grace: Duration) {
        self.stop_now();
        let deadline = tokio::time::Instant::now() + grace;
        while self.ctx.in_flight.load(Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // From here no worker starts another message; the snapshot is taken under the same
        // lock, so every started one is flagged and every other one is given back.
        let started: Vec<MessageId> = {
            let started = self.ctx.started.lock().expect("lock");
            self.ctx.closing.store(true, Ordering::Release);
            started.iter().copied().collect()
        };
        let owner = self.ctx.owner.clone();
        match self
            .ctx
            .db
            .write(move |conn| {
                Ok(super::queries::release_owned(
                    conn,
                    &owner,
                    &started,
                    db::now(),
                )?)
            })
            .await
        {
            Ok(released) if released > 0 => {
                tracing::info!(released, "unsent messages released at shutdown")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not release messages at shutdown; their leases will expire")
            }
        }
    }
}

/// Starts the engine on its own Arbiter thread.
pub fn start(
    db: Db,
    sealer: Sealer,
    egress: EgressPolicy,
    per_request_egress: EgressPolicy,
    system: super::system::SystemProvider,
    cfg: EngineConfig,
) -> EngineHandle {
    let owner = format!("{}-{}", hostname(), hex::encode(rand::random::<[u8; 6]>()));
    let slots = super::slots::Slots::for_db(&db);
    let ctx = Arc::new(Ctx {
        signing: super::signing::SigningPool::start(),
        signers: super::signing::Signers::default(),
        slots,
        db,
        sealer,
        egress,
        per_request_egress,
        cfg,
        owner,
        in_flight: AtomicUsize::new(0),
        recorded: std::sync::atomic::AtomicU64::new(0),
        room: Notify::new(),
        wake: Arc::new(Notify::new()),
        settled: Notify::new(),
        idle_turns: std::sync::atomic::AtomicU64::new(0),
        idle: Notify::new(),
        stopping: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        started: Mutex::new(HashSet::new()),
        per_provider: Mutex::new(HashMap::new()),
        hello: ClientId::default(),
        system,
    });
    let arbiter = actix_rt::Arbiter::new();
    let run_ctx = ctx.clone();
    arbiter.spawn_fn(move || {
        actix_web::rt::spawn(super::claimer::run(run_ctx));
    });
    EngineHandle { ctx }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".into())
}

impl Ctx {
    /// Messages each provider holds on this node (claimed, not yet sent).
    pub(super) fn held(&self) -> HashMap<ProviderId, usize> {
        self.per_provider
            .lock()
            .expect("lock")
            .iter()
            .map(|(id, room)| (*id, room.held))
            .collect()
    }

    pub(super) fn hold(&self, provider: ProviderId) {
        let mut rooms = self.per_provider.lock().expect("lock");
        rooms.entry(provider).or_default().held += 1;
    }

    pub(super) fn release(&self, providers: &[Option<ProviderId>]) {
        let mut rooms = self.per_provider.lock().expect("lock");
        for provider in providers.iter().flatten() {
            if let Some(room) = rooms.get_mut(provider) {
                room.held = room.held.saturating_sub(1);
            }
        }
    }

    /// What a claim found per provider: its cap, and whether it took all it wanted (if
    /// not, nothing more is due for it, or its rate allows no more now).
    pub(super) fn claimed(&self, asked: &[Asked]) {
        let mut rooms = self.per_provider.lock().expect("lock");
        for a in asked {
            let room = rooms.entry(a.provider).or_default();
            room.cap = a.cap;
            room.drained = a.got < a.wanted;
        }
    }

    /// Whether a claim is worth its transaction now: some provider with more due has
    /// half of its room free (so claims come in batches, not one per sent message).
    pub(super) fn worth_claiming(&self) -> bool {
        self.per_provider
            .lock()
            .expect("lock")
            .values()
            .any(|room| {
                !room.drained && room.cap.saturating_sub(room.held) >= (room.cap / 2).max(1)
            })
    }
}

/// One provider's room on this node.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Room {
    /// Claimed and not yet through a connection.
    held: usize,
    /// The most it may hold ([`provider_cap`]).
    cap: usize,
    /// The last claim found no more due for it (or no rate left).
    drained: bool,
}

/// A claim's dealings with one provider.
#[derive(Debug, Clone, Copy)]
pub(super) struct Asked {
    pub(super) provider: ProviderId,
    pub(super) cap: usize,
    pub(super) wanted: usize,
    pub(super) got: usize,
}

/// Messages a connection may have waiting for it: what a node may claim ahead of sending.
pub(super) const PER_CONNECTION: usize = 8;

/// How many claimed messages a provider may have waiting on this node at once (claimed
/// and not yet through a connection): 8 per connection, and no more than about two
/// seconds of its rate limit. After a crash only these, and those sent whose outcome was
/// not yet stored, are flagged as possible duplicates. The room is freed when an outcome
/// is handed to the recorder, not when it is stored, so the second kind is bounded by
/// the engine's `max_in_flight`, not by this cap; the recorder commits whatever arrived
/// as soon as its previous commit is done, so in practice they are few (the crash test
/// measures both together against 8 per connection per kill).
pub(super) fn provider_cap(p: &Provider) -> usize {
    let by_connections =
        usize::try_from(p.max_connections.clamp(1, 100)).unwrap_or(1) * PER_CONNECTION;
    let two_seconds = [
        p.per_second.map(|n| f64::from(n) * 2.0),
        p.per_minute.map(|n| f64::from(n) / 30.0),
        p.per_hour.map(|n| f64::from(n) / 1800.0),
    ]
    .into_iter()
    .flatten()
    .reduce(f64::min);
    match two_seconds {
        Some(n) => (n.ceil().max(1.0) as usize).min(by_connections),
        None => by_connections,
    }
}

/// Outcomes flow from the connection workers to the recorder. Sending one ends the
/// message's hold on its provider's room (it is no longer waiting for a connection), so
/// the claimer may take the next at once, while the recorder stores this one.
#[derive(Clone)]
pub(super) struct OutcomeTx {
    tx: mpsc::UnboundedSender<Outcome>,
    ctx: Arc<Ctx>,
}

impl OutcomeTx {
    pub(super) fn new(tx: mpsc::UnboundedSender<Outcome>, ctx: Arc<Ctx>) -> Self {
        Self { tx, ctx }
    }

    /// Hands an outcome to the recorder (gone only when the engine is stopping, and
    /// then a lease expiry or the next start takes the message back).
    pub(super) fn send(&self, outcome: Outcome) {
        self.ctx.release(&[outcome.message.provider_id]);
        self.ctx.room.notify_one();
        let _ = self.tx.send(outcome);
    }
}

/// Renews this node's leases and takes over expired ones, every third of a lease.
pub(super) async fn heartbeat(ctx: Arc<Ctx>) {
    let every = (ctx.cfg.lease / 3).max(Duration::from_millis(200));
    loop {
        let owner = ctx.owner.clone();
        let lease = chrono::Duration::from_std(ctx.cfg.lease)
            .unwrap_or_else(|_| chrono::Duration::minutes(2));
        let result = ctx
            .db
            .write(move |conn| {
                let now = db::now();
                super::queries::renew_leases(conn, &owner, now + lease)?;
                Ok(super::queries::reclaim_expired_with_events(conn, now)?)
            })
            .await;
        match result {
            Ok(reclaimed) if reclaimed > 0 => {
                super::metrics::metrics().reclaimed.inc_by(reclaimed as u64);
                tracing::warn!(
                    reclaimed,
                    "took over messages whose node stopped; they are flagged as possible duplicates"
                );
                ctx.wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => ctx.db.warn_unless_fault(&e, "lease heartbeat failed"),
        }
        if ctx.stopping.load(Ordering::Acquire) && ctx.in_flight.load(Ordering::Acquire) == 0 {
            break;
        }
        tokio::time::sleep(every).await;
    }
}
