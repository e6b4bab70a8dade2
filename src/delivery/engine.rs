//! The delivery loop, on its own actix Arbiter thread: claim due messages in batches with a
//! lease → hand each to its provider's pool of SMTP connections (concurrency cap and rate
//! limits) → record every outcome in batched transactions. A heartbeat renews this node's
//! leases and takes over messages whose node died.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use tokio::sync::{Notify, mpsc};

use super::build::build;
use super::outcome::{Outcome, OutcomeKind, Reply, apply};
use crate::crypto::Sealer;
use crate::db::{self, Db};
use crate::messages::model::{Attachment, Message, MessageId, Send, SendId};
use crate::messages::queries as messages;
use crate::providers::egress::EgressPolicy;
use crate::providers::model::{Provider, ProviderId};
use crate::providers::smtp::{self, Endpoint, SmtpFailure};
use crate::providers::{queries as providers, service as provider_rules};

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
    pub(crate) db: Db,
    sealer: Sealer,
    egress: EgressPolicy,
    /// For the hidden providers of per-request SMTP (API calls' own servers).
    per_request_egress: EgressPolicy,
    pub(crate) cfg: EngineConfig,
    pub(crate) owner: String,
    in_flight: AtomicUsize,
    recorded: std::sync::atomic::AtomicU64,
    room: Notify,
    wake: Arc<Notify>,
    /// Woken after each batch of outcomes is committed (`?wait=` answers then).
    settled: Notify,
    stopping: AtomicBool,
    closing: AtomicBool,
    started: Mutex<HashSet<MessageId>>,
    /// Per provider: messages held by this node and the most it may hold.
    per_provider: Mutex<HashMap<ProviderId, (usize, usize)>>,
    hello: ClientId,
    system: super::system::SystemProvider,
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
    let ctx = Arc::new(Ctx {
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
        actix_web::rt::spawn(run(run_ctx));
    });
    EngineHandle { ctx }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".into())
}

impl Ctx {
    /// Providers that hold as many messages as they may.
    fn saturated(&self) -> Vec<ProviderId> {
        self.per_provider
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, (held, cap))| held >= cap)
            .map(|(id, _)| *id)
            .collect()
    }

    fn hold(&self, provider: ProviderId, cap: usize) {
        let mut counts = self.per_provider.lock().expect("lock");
        let entry = counts.entry(provider).or_insert((0, cap));
        entry.0 += 1;
        entry.1 = cap;
    }

    fn release(&self, providers: &[Option<ProviderId>]) {
        let mut counts = self.per_provider.lock().expect("lock");
        for provider in providers.iter().flatten() {
            if let Some(entry) = counts.get_mut(provider) {
                entry.0 = entry.0.saturating_sub(1);
            }
        }
    }
}

/// How many claimed messages a provider may have on this node at once: about a minute of
/// its rate limit, or 500 per connection when it has none (enough to keep a fast server's
/// connections busy between claims).
fn provider_cap(p: &Provider) -> usize {
    let by_connections = usize::try_from(p.max_connections.max(1)).unwrap_or(1) * 500;
    let per_minute = [
        p.per_second.map(|n| n * 60),
        p.per_minute,
        p.per_hour.map(|n| n / 60),
    ]
    .into_iter()
    .flatten()
    .min();
    match per_minute {
        Some(n) => usize::try_from(n.max(1)).unwrap_or(1).min(by_connections),
        None => by_connections,
    }
}

/// Outcomes flow from the connection workers to the writer.
type OutcomeTx = mpsc::UnboundedSender<Outcome>;

async fn run(ctx: Arc<Ctx>) {
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    actix_web::rt::spawn(writer(ctx.clone(), done_rx));
    actix_web::rt::spawn(heartbeat(ctx.clone()));
    let mut senders: HashMap<ProviderId, ProviderSender> = HashMap::new();
    let prune_every = (ctx.cfg.lease / 3).max(Duration::from_millis(200));
    let mut pruned = std::time::Instant::now();
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
        let owner = ctx.owner.clone();
        let skip = ctx.saturated();
        let lease = chrono::Duration::from_std(ctx.cfg.lease)
            .unwrap_or_else(|_| chrono::Duration::minutes(2));
        let claimed = ctx
            .db
            .write(move |conn| {
                let now = db::now();
                Ok(super::queries::claim_due(
                    conn,
                    &owner,
                    now,
                    now + lease,
                    limit,
                    &skip,
                )?)
            })
            .await;
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "claim failed; retrying");
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
            tracing::warn!(error = %e, "dispatch failed");
        }
    }
    tracing::info!(owner = %ctx.owner, "delivery engine stopped claiming");
}

/// Closes the pools of providers that were deleted or are no longer active: their workers
/// finish what they hold, then say QUIT. A provider that checks green again gets a new
/// pool at its next message.
async fn prune(ctx: &Ctx, senders: &mut HashMap<ProviderId, ProviderSender>) {
    let ids: Vec<ProviderId> = senders.keys().copied().filter(|id| *id != SYSTEM).collect();
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
            senders.retain(|id, _| *id == SYSTEM || active.contains(id));
        }
        Err(e) => tracing::warn!(error = %e, "cannot read providers to close unused pools"),
    }
}

/// Hands claimed messages to their providers' pools, (re)building a pool when its provider
/// changed since.
async fn dispatch(
    ctx: &Arc<Ctx>,
    senders: &mut HashMap<ProviderId, ProviderSender>,
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
        if message.provider_id.is_none() {
            // Mailroom's own mail: through the system provider.
            let sender = senders
                .entry(SYSTEM)
                .or_insert_with(|| ProviderSender::start_system(ctx, done.clone()));
            if let Err(mpsc::error::SendError(Job { message, .. })) = sender.tx.send(Job {
                files: files
                    .get(&message.send_id)
                    .cloned()
                    .unwrap_or_else(|| no_files.clone()),
                message,
                body,
            }) {
                let _ = done.send(Outcome {
                    kind: OutcomeKind::Retry(Reply::text("the system pool closed")),
                    message,
                });
            }
            continue;
        }
        let Some(provider) = message.provider_id.and_then(|id| rows.get(&id)) else {
            // Deleted between the claim and this read.
            let _ = done.send(Outcome {
                kind: OutcomeKind::Orphaned,
                message,
            });
            continue;
        };
        let fresh = senders
            .get(&provider.id)
            .is_some_and(|s| s.version == version(provider));
        if !fresh {
            match ProviderSender::start(ctx, provider, done.clone()) {
                Ok(sender) => {
                    senders.insert(provider.id, sender);
                }
                Err(e) => {
                    // Its password cannot be opened (the secret key changed): like a
                    // refused sign-in, the provider turns red and its mail is held.
                    let _ = done.send(Outcome {
                        kind: OutcomeKind::ProviderRefused(
                            Reply::text(&format!(
                                "{e}: enter the password again on the provider's page"
                            )),
                            provider.checked_at,
                        ),
                        message,
                    });
                    continue;
                }
            }
        }
        if let Some(sender) = senders.get(&provider.id)
            && let Err(mpsc::error::SendError(Job { message, .. })) = sender.tx.send(Job {
                files: files
                    .get(&message.send_id)
                    .cloned()
                    .unwrap_or_else(|| no_files.clone()),
                message,
                body,
            })
        {
            let _ = done.send(Outcome {
                kind: OutcomeKind::Retry(Reply::text("the connection pool closed")),
                message,
            });
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

/// The key of the system provider's pool (no stored provider has id 0).
const SYSTEM: ProviderId = ProviderId(0);

fn version(p: &Provider) -> (String, chrono::NaiveDateTime, Option<chrono::NaiveDateTime>) {
    (p.status.clone(), p.updated_at, p.checked_at)
}

/// A claimed message and its content, on its way to a connection.
struct Job {
    message: Message,
    body: Arc<Send>,
    files: Arc<Vec<Attachment>>,
}

/// One provider's pool: `max_connections` workers sharing a queue and its rate limits.
struct ProviderSender {
    version: (String, chrono::NaiveDateTime, Option<chrono::NaiveDateTime>),
    tx: mpsc::UnboundedSender<Job>,
}

/// How a pool's messages leave.
enum Transport {
    /// SMTP, under this egress policy.
    Smtp(Endpoint, EgressPolicy),
    /// `.eml` files (the system provider without SMTP settings).
    Outbox(lettre::AsyncFileTransport<lettre::Tokio1Executor>),
}

struct Pool {
    ctx: Arc<Ctx>,
    name: String,
    /// The system provider's pool.
    system: bool,
    transport: Transport,
    limits: Vec<DefaultDirectRateLimiter>,
    /// Set when the provider refused the sign-in: everything left is held, nothing sent.
    refused: Mutex<Option<Reply>>,
    /// When the provider had last been checked as this pool was built.
    checked_at: Option<chrono::NaiveDateTime>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>,
    done: OutcomeTx,
    latency: prometheus::Histogram,
}

impl ProviderSender {
    fn start(
        ctx: &Arc<Ctx>,
        provider: &Provider,
        done: OutcomeTx,
    ) -> Result<Self, crate::error::AppError> {
        let endpoint = provider_rules::endpoint(provider, &ctx.sealer)?;
        let quota = |n: Option<i32>, make: fn(NonZeroU32) -> Quota| {
            n.and_then(|n| NonZeroU32::new(n.max(1) as u32)).map(make)
        };
        let limits = [
            quota(provider.per_second, Quota::per_second),
            quota(provider.per_minute, Quota::per_minute),
            quota(provider.per_hour, Quota::per_hour),
        ]
        .into_iter()
        .flatten()
        .map(RateLimiter::direct)
        .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let pool = Arc::new(Pool {
            ctx: ctx.clone(),
            name: provider.name.clone(),
            system: false,
            checked_at: provider.checked_at,
            transport: Transport::Smtp(
                endpoint,
                if provider.per_request {
                    ctx.per_request_egress.clone()
                } else {
                    ctx.egress.clone()
                },
            ),
            limits,
            refused: Mutex::new(None),
            rx: tokio::sync::Mutex::new(rx),
            done,
            latency: super::metrics::metrics()
                .smtp_seconds
                .with_label_values(&[provider.id.0.to_string().as_str()]),
        });
        for _ in 0..provider.max_connections.clamp(1, 100) {
            actix_web::rt::spawn(worker(pool.clone()));
        }
        Ok(Self {
            version: version(provider),
            tx,
        })
    }

    /// The system provider's pool: two connections (or the outbox), no rate limits; the
    /// operator's own server is not subject to the providers' egress policy.
    fn start_system(ctx: &Arc<Ctx>, done: OutcomeTx) -> Self {
        let transport = match &ctx.system.transport {
            super::system::SystemTransport::Smtp(endpoint) => {
                Transport::Smtp(endpoint.clone(), ctx.egress.allowing_everything())
            }
            super::system::SystemTransport::Outbox(dir) => {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    tracing::warn!(error = %e, dir = %dir.display(), "cannot create the outbox");
                }
                Transport::Outbox(lettre::AsyncFileTransport::new(dir))
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let pool = Arc::new(Pool {
            ctx: ctx.clone(),
            name: "system".into(),
            system: true,
            checked_at: None,
            transport,
            limits: Vec::new(),
            refused: Mutex::new(None),
            rx: tokio::sync::Mutex::new(rx),
            done,
            latency: super::metrics::metrics()
                .smtp_seconds
                .with_label_values(&["system"]),
        });
        for _ in 0..2 {
            actix_web::rt::spawn(worker(pool.clone()));
        }
        Self {
            version: (String::new(), chrono::NaiveDateTime::MIN, None),
            tx,
        }
    }
}

/// One SMTP connection of a pool: opened on first need, reused, reopened after a failure.
/// How long a pooled connection may sit idle before it is probed before use.
const IDLE_PROBE: Duration = Duration::from_secs(20);

async fn worker(pool: Arc<Pool>) {
    let mut conn: Option<AsyncSmtpConnection> = None;
    let mut last_used = std::time::Instant::now();
    loop {
        let next = pool.rx.lock().await.recv().await;
        let Some(Job {
            message,
            body,
            files,
        }) = next
        else {
            break;
        };
        // A connection idle for a while may have been closed by the server: ask (NOOP)
        // before spending an attempt on it.
        if let Some(open) = conn.as_mut()
            && last_used.elapsed() > IDLE_PROBE
            && !open.test_connected().await
        {
            conn = None;
        }
        let kind = deliver(&pool, &mut conn, &message, &body, &files).await;
        last_used = std::time::Instant::now();
        let _ = pool.done.send(Outcome { message, kind });
    }
    if let Some(mut conn) = conn {
        let _ = conn.quit().await;
    }
}

async fn deliver(
    pool: &Pool,
    conn: &mut Option<AsyncSmtpConnection>,
    message: &Message,
    body: &Send,
    files: &[Attachment],
) -> OutcomeKind {
    if let Some(reply) = pool.refused.lock().expect("lock").clone() {
        return OutcomeKind::ProviderRefused(reply, pool.checked_at);
    }
    let (envelope, bytes) = match build(message, body, files) {
        Ok(built) => built,
        Err(e) => return OutcomeKind::Failed(Reply::text(&e.to_string())),
    };
    for limit in &pool.limits {
        limit.until_ready().await;
    }
    let (endpoint, egress) = match &pool.transport {
        Transport::Smtp(endpoint, egress) => (endpoint, egress),
        Transport::Outbox(files) => {
            use lettre::AsyncTransport;
            return match files.send_raw(&envelope, &bytes).await {
                Ok(id) => {
                    OutcomeKind::Sent(Reply::text(&format!("written to the outbox as {id}.eml")))
                }
                Err(e) => {
                    OutcomeKind::Retry(Reply::text(&format!("cannot write to the outbox: {e}")))
                }
            };
        }
    };
    if conn.is_none() {
        match smtp::connect(endpoint, egress, pool.ctx.cfg.smtp_timeout, &pool.ctx.hello).await {
            Ok(opened) => *conn = Some(opened),
            // The system provider is the operator's: its mail is never held (nothing would
            // release it); it is retried like any temporary failure.
            Err(failure) if failure.is_auth_failure() && !pool.system => {
                let reply = Reply::from_failure(&failure);
                *pool.refused.lock().expect("lock") = Some(reply.clone());
                tracing::warn!(provider = %pool.name, detail = %failure, "provider refused the sign-in; holding its messages");
                return OutcomeKind::ProviderRefused(reply, pool.checked_at);
            }
            Err(failure) => return OutcomeKind::Retry(Reply::from_failure(&failure)),
        }
    }
    let Some(open) = conn.as_mut() else {
        return OutcomeKind::Retry(Reply::text("no connection"));
    };
    {
        // At a graceful stop the untouched messages are given back; one that is given
        // back must not be sent as well.
        let mut started = pool.ctx.started.lock().expect("lock");
        if pool.ctx.closing.load(Ordering::Acquire) {
            return OutcomeKind::Retry(Reply::text("stopping"));
        }
        started.insert(message.id);
    }
    let clock = std::time::Instant::now();
    let sent =
        tokio::time::timeout(pool.ctx.cfg.smtp_timeout * 4, open.send(&envelope, &bytes)).await;
    pool.latency.observe(clock.elapsed().as_secs_f64());
    match sent {
        Ok(Ok(response)) => OutcomeKind::Sent(Reply::from_response(&response)),
        Ok(Err(e)) => {
            // lettre aborts the connection after any refusal: open a new one next time.
            *conn = None;
            let failure = SmtpFailure::from(e);
            match failure.code {
                Some(code) if code >= 500 => OutcomeKind::Failed(Reply::from_failure(&failure)),
                Some(_) => OutcomeKind::Retry(Reply::from_failure(&failure)),
                // Refused on our side (e.g. an address the server cannot take): final.
                None if failure.client => OutcomeKind::Failed(Reply::from_failure(&failure)),
                // No reply after the exchange began: it may have been accepted.
                None => OutcomeKind::CutOff(Reply::from_failure(&failure)),
            }
        }
        Err(_) => {
            *conn = None;
            OutcomeKind::CutOff(Reply::text(&format!(
                "no answer within {} s",
                (pool.ctx.cfg.smtp_timeout * 4).as_secs()
            )))
        }
    }
}

/// Records outcomes in batches: whatever arrived while the last batch was being written
/// goes into the next transaction.
async fn writer(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<Outcome>) {
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
                    tracing::error!(error = %e, count, "recording outcomes failed; retrying");
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

/// Renews this node's leases and takes over expired ones, every third of a lease.
async fn heartbeat(ctx: Arc<Ctx>) {
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
            Err(e) => tracing::warn!(error = %e, "lease heartbeat failed"),
        }
        if ctx.stopping.load(Ordering::Acquire) && ctx.in_flight.load(Ordering::Acquire) == 0 {
            break;
        }
        tokio::time::sleep(every).await;
    }
}
