//! The email sender: per provider, a pool of our own SMTP connections (TCP_NODELAY,
//! TLS, AUTH) with its concurrency cap and rate limits; the system provider's pool for
//! Mailroom's own alerts.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::mpsc;

use super::build::build;
use super::engine::{Ctx, OutcomeTx};
use super::outcome::{Outcome, OutcomeKind, Reply};
use super::sender::{ChannelSender, Job};
use super::slots::Slot;
use crate::domains::sign::Signer;
use crate::messages::model::{Attachment, Message, Send};
use crate::providers::egress::EgressPolicy;
use crate::providers::model::{Provider, ProviderId};
use crate::providers::service as provider_rules;
use crate::providers::smtp::{self, Endpoint, SmtpSession};

/// The key of the system provider's pool (no stored provider has id 0).
const SYSTEM: ProviderId = ProviderId(0);

fn version(p: &Provider) -> (String, chrono::NaiveDateTime, Option<chrono::NaiveDateTime>) {
    (p.status.clone(), p.updated_at, p.checked_at)
}

/// One provider's pool: `max_connections` workers sharing a queue and its rate limits.
struct ProviderSender {
    version: (String, chrono::NaiveDateTime, Option<chrono::NaiveDateTime>),
    tx: mpsc::UnboundedSender<Job>,
    /// Jobs sent and not yet taken by a worker (`Pool::waiting`).
    waiting: Arc<Waiting>,
}

/// Jobs waiting in a pool's queue: a worker without a slot competes for one only when
/// there is work, so a node with nothing to send takes no other node's slots.
#[derive(Default)]
struct Waiting {
    jobs: std::sync::atomic::AtomicUsize,
    /// Workers of the pool holding a slot: another worker competes for one only while
    /// there are more jobs waiting than these.
    holders: std::sync::atomic::AtomicUsize,
    more: tokio::sync::Notify,
    /// The pool was closed (its sender dropped).
    closed: std::sync::atomic::AtomicBool,
}

impl Drop for ProviderSender {
    fn drop(&mut self) {
        self.waiting.closed.store(true, Ordering::Release);
        self.waiting.more.notify_waiters();
    }
}

impl ProviderSender {
    /// Queues `job`; gives it back when the pool is closed.
    fn send(&self, job: Job) -> Option<Job> {
        self.waiting.jobs.fetch_add(1, Ordering::AcqRel);
        match self.tx.send(job) {
            Ok(()) => {
                self.waiting.more.notify_waiters();
                None
            }
            Err(mpsc::error::SendError(job)) => {
                self.waiting.jobs.fetch_sub(1, Ordering::AcqRel);
                Some(job)
            }
        }
    }
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
    /// The provider and its connection cap, shared with other nodes through slots (none
    /// for the system provider: the operator's own server).
    slotted: Option<(ProviderId, i32)>,
    waiting: Arc<Waiting>,
    /// The system provider's pool.
    system: bool,
    transport: Transport,
    limits: Vec<DefaultDirectRateLimiter>,
    /// Set when the provider refused the sign-in: everything left is held, nothing sent.
    refused: Mutex<Option<Reply>>,
    /// When the provider had last been checked as this pool was built.
    checked_at: Option<chrono::NaiveDateTime>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Job>>,
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
        let waiting = Arc::new(Waiting::default());
        let pool = Arc::new(Pool {
            ctx: ctx.clone(),
            name: provider.name.clone(),
            slotted: Some((provider.id, provider.max_connections.clamp(1, 100))),
            waiting: waiting.clone(),
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
            rx: tokio::sync::Mutex::new(presign(ctx, done.clone(), rx, provider.max_connections)),
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
            waiting,
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
        let waiting = Arc::new(Waiting::default());
        let pool = Arc::new(Pool {
            ctx: ctx.clone(),
            name: "system".into(),
            slotted: None,
            waiting: waiting.clone(),
            system: true,
            checked_at: None,
            transport,
            limits: Vec::new(),
            refused: Mutex::new(None),
            rx: tokio::sync::Mutex::new(presign(ctx, done.clone(), rx, 2)),
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
            waiting,
        }
    }
}

/// The stage between a pool's queue and its connections: each message to be DKIM-signed
/// is built and handed to the signing threads here, a few messages ahead of the
/// connections, so signing overlaps sending instead of waiting in front of it. At most
/// `2 × connections + 8` jobs are ahead (built messages are held in memory).
fn presign(
    ctx: &Arc<Ctx>,
    done: OutcomeTx,
    mut queue: mpsc::UnboundedReceiver<Job>,
    connections: i32,
) -> mpsc::Receiver<Job> {
    let ahead = usize::try_from(connections.clamp(1, 100)).unwrap_or(1) * 8 + 64;
    let (tx, rx) = mpsc::channel(ahead);
    let ctx = ctx.clone();
    actix_web::rt::spawn(async move {
        while let Some(mut job) = queue.recv().await {
            if let Some(signer) = &job.signer
                && !job
                    .message
                    .dkim_signature
                    .as_ref()
                    .is_some_and(|header| signer.made(header))
            {
                job.prepared = Some(match build(&job.message, &job.body, &job.files) {
                    Ok((envelope, bytes)) => {
                        let timestamp = signing_time(&job.message);
                        Ok((
                            envelope,
                            ctx.signing.submit(signer.clone(), bytes, timestamp),
                        ))
                    }
                    Err(e) => Err(e.to_string()),
                });
            }
            if let Err(mpsc::error::SendError(job)) = tx.send(job).await {
                // Every worker ended (the engine stopped): what is left goes back, each
                // with its outcome.
                let stopped = || OutcomeKind::Retry(Reply::text("stopping"));
                done.send(Outcome {
                    message: job.message,
                    kind: stopped(),
                });
                queue.close();
                while let Some(job) = queue.recv().await {
                    done.send(Outcome {
                        message: job.message,
                        kind: stopped(),
                    });
                }
                break;
            }
        }
    });
    rx
}

/// The `t=` of a message's signature: when it was queued (or scheduled for), like its
/// Date, so a retry builds the same bytes.
fn signing_time(message: &Message) -> i64 {
    super::build::wire_date(message).and_utc().timestamp()
}

/// One SMTP connection of a pool: opened on first need, reused, reopened after a failure.
/// How long a pooled connection may sit idle before it is probed before use.
const IDLE_PROBE: Duration = Duration::from_secs(20);

/// How long a connection holding a slot shared with other nodes may sit idle before it
/// is closed and the slot given back.
const IDLE_RELEASE: Duration = Duration::from_millis(500);

async fn worker(pool: Arc<Pool>) {
    let mut conn: Option<SmtpSession> = None;
    let mut slot: Option<Slot> = None;
    let mut last_used = std::time::Instant::now();
    let stopping = || pool.ctx.stopping.load(Ordering::Acquire);
    loop {
        // A connection to a provider is open only while it holds one of the provider's
        // slots (shared by every node on PostgreSQL). A worker takes a slot before it
        // takes a job, and only while more jobs wait than the pool's workers holding one:
        // it never holds a message it cannot send while another node's connections are
        // busy, and a node with little to send takes few slots.
        if slot.is_none()
            && let Some((provider, max)) = pool.slotted
            && !stopping()
        {
            loop {
                let more = pool.waiting.more.notified();
                tokio::pin!(more);
                more.as_mut().enable();
                if pool.waiting.jobs.load(Ordering::Acquire)
                    > pool.waiting.holders.load(Ordering::Acquire)
                    || pool.waiting.closed.load(Ordering::Acquire)
                    || stopping()
                {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(500), more).await;
            }
            let drained = pool.waiting.closed.load(Ordering::Acquire)
                && pool.waiting.jobs.load(Ordering::Acquire) == 0;
            if !drained && !stopping() {
                let ctx = pool.ctx.clone();
                match pool
                    .ctx
                    .slots
                    .acquire(provider, max, move || ctx.stopping.load(Ordering::Acquire))
                    .await
                {
                    Some(held) => {
                        pool.waiting.holders.fetch_add(1, Ordering::AcqRel);
                        slot = Some(held);
                    }
                    None => continue,
                }
            }
        }
        // The queue, the lock on it included: a worker holding a shared slot gives it
        // back once it has waited IDLE_RELEASE for a job.
        let next = if slot.is_some() && pool.ctx.slots.shared() {
            let waited =
                tokio::time::timeout(IDLE_RELEASE, async { pool.rx.lock().await.recv().await })
                    .await;
            match waited {
                Ok(next) => next,
                Err(_) => {
                    close(&mut conn, pool.ctx.cfg.smtp_timeout).await;
                    if let Some(held) = slot.take() {
                        pool.waiting.holders.fetch_sub(1, Ordering::AcqRel);
                        pool.ctx.slots.release(held).await;
                    }
                    continue;
                }
            }
        } else {
            pool.rx.lock().await.recv().await
        };
        let Some(Job {
            mut message,
            body,
            files,
            signer,
            prepared,
        }) = next
        else {
            break;
        };
        pool.waiting.jobs.fetch_sub(1, Ordering::AcqRel);
        // Stopping: a message without a slot is given back, never sent.
        if pool.slotted.is_some() && slot.is_none() {
            pool.done.send(Outcome {
                message,
                kind: OutcomeKind::Retry(Reply::text("stopping")),
            });
            continue;
        }
        // The slot's session was lost while waiting: its connection is no longer
        // counted anywhere, so it closes; the message waits for a slot again.
        if let Some(held) = &slot
            && !pool.ctx.slots.holds(held)
        {
            close(&mut conn, pool.ctx.cfg.smtp_timeout).await;
            slot = None;
            pool.waiting.holders.fetch_sub(1, Ordering::AcqRel);
            let again = match pool.slotted {
                Some((provider, max)) => {
                    let ctx = pool.ctx.clone();
                    pool.ctx
                        .slots
                        .acquire(provider, max, move || ctx.stopping.load(Ordering::Acquire))
                        .await
                }
                None => None,
            };
            match again {
                Some(held) => {
                    pool.waiting.holders.fetch_add(1, Ordering::AcqRel);
                    slot = Some(held);
                }
                None => {
                    pool.done.send(Outcome {
                        message,
                        kind: OutcomeKind::Retry(Reply::text("stopping")),
                    });
                    continue;
                }
            }
        }
        // A connection idle for a while may have been closed by the server: ask (NOOP)
        // before spending an attempt on it.
        if let Some(open) = conn.as_mut()
            && last_used.elapsed() > IDLE_PROBE
            && !open.is_connected(pool.ctx.cfg.smtp_timeout).await
        {
            conn = None;
        }
        let (kind, signature) = deliver(
            &pool,
            &mut conn,
            &message,
            (&body, &files, signer.as_ref(), prepared),
        )
        .await;
        // Kept for a retry, so the next attempt is not signed again.
        message.dkim_signature = signature;
        last_used = std::time::Instant::now();
        pool.done.send(Outcome { message, kind });
    }
    close(&mut conn, pool.ctx.cfg.smtp_timeout).await;
    if let Some(held) = slot {
        pool.waiting.holders.fetch_sub(1, Ordering::AcqRel);
        pool.ctx.slots.release(held).await;
    }
}

/// Says QUIT on an open connection (waiting at most `within` for the server).
async fn close(conn: &mut Option<SmtpSession>, within: Duration) {
    if let Some(open) = conn.take() {
        open.quit(within).await;
    }
}

/// Builds the message and signs it when `signer` is given (once: a retry sends the
/// signature its first attempt made). The signature goes back with the outcome.
async fn build_signed(
    pool: &Pool,
    message: &Message,
    (body, files, signer, prepared): Content<'_>,
) -> Result<(lettre::address::Envelope, Vec<u8>, Option<String>), OutcomeKind> {
    let failed = |e: String| OutcomeKind::Failed(Reply::text(&e));
    let unsigned =
        |why: String| OutcomeKind::Retry(Reply::text(&format!("cannot DKIM-sign it: {why}")));
    let (envelope, bytes, header) = match (signer, prepared) {
        (Some(_), Some(prepared)) => {
            let (envelope, signing) = prepared.map_err(failed)?;
            let (bytes, signed) = signing
                .await
                .unwrap_or_else(|_| (Vec::new(), Err("the signing thread stopped".into())));
            (envelope, bytes, signed.map_err(unsigned)?)
        }
        (Some(signer), None) => {
            let (envelope, bytes) =
                build(message, body, files).map_err(|e| failed(e.to_string()))?;
            // A signature kept from an attempt before a rotation is for a key that may
            // no longer be published: signed again (the same bytes, the new key).
            match message
                .dkim_signature
                .as_ref()
                .filter(|header| signer.made(header))
            {
                Some(header) => (envelope, bytes, header.clone()),
                None => {
                    let (bytes, signed) = pool
                        .ctx
                        .signing
                        .sign(signer.clone(), bytes, signing_time(message))
                        .await;
                    (envelope, bytes, signed.map_err(unsigned)?)
                }
            }
        }
        (None, _) => {
            let (envelope, bytes) =
                build(message, body, files).map_err(|e| failed(e.to_string()))?;
            return Ok((envelope, bytes, None));
        }
    };
    let mut signed = Vec::with_capacity(header.len() + bytes.len());
    signed.extend_from_slice(header.as_bytes());
    signed.extend_from_slice(&bytes);
    super::build::check_wire(&signed).map_err(|e| failed(e.to_string()))?;
    Ok((envelope, signed, Some(header)))
}

/// What a message is built from: its send, files, signer, and what the presign stage
/// already made of it.
type Content<'a> = (
    &'a Send,
    &'a [Attachment],
    Option<&'a Arc<Signer>>,
    Option<super::sender::Prepared>,
);

async fn deliver(
    pool: &Pool,
    conn: &mut Option<SmtpSession>,
    message: &Message,
    content: Content<'_>,
) -> (OutcomeKind, Option<String>) {
    if let Some(reply) = pool.refused.lock().expect("lock").clone() {
        return (
            OutcomeKind::ProviderRefused(reply, pool.checked_at),
            message.dkim_signature.clone(),
        );
    }
    let (envelope, bytes, signature) = match build_signed(pool, message, content).await {
        Ok(built) => built,
        Err(kind) => return (kind, message.dkim_signature.clone()),
    };
    (
        send_built(pool, conn, message, envelope, bytes).await,
        signature,
    )
}

/// Sends a built message over the pool's transport.
async fn send_built(
    pool: &Pool,
    conn: &mut Option<SmtpSession>,
    message: &Message,
    envelope: lettre::address::Envelope,
    bytes: Vec<u8>,
) -> OutcomeKind {
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
    let sent = tokio::time::timeout(
        pool.ctx.cfg.smtp_timeout * 4,
        open.send(envelope.from(), envelope.to(), &bytes),
    )
    .await;
    pool.latency.observe(clock.elapsed().as_secs_f64());
    match sent {
        Ok(Ok(response)) => {
            if !open.is_in_step() {
                // The server said more than it was asked: its next replies would answer
                // the wrong commands.
                *conn = None;
            }
            OutcomeKind::Sent(Reply::from_response(&response))
        }
        Ok(Err(failure)) => {
            // After a refusal the session may be out of step: open a new one next time.
            *conn = None;
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

/// The email channel's sender: a pool per provider, rebuilt when the provider changed
/// since it was built, and the system provider's pool.
pub(super) struct SmtpSender {
    ctx: Arc<Ctx>,
    done: OutcomeTx,
    pools: HashMap<ProviderId, ProviderSender>,
}

impl SmtpSender {
    /// A sender with no pool yet (each opens at its provider's first message).
    pub(super) fn new(ctx: Arc<Ctx>, done: OutcomeTx) -> Self {
        Self {
            ctx,
            done,
            pools: HashMap::new(),
        }
    }

    fn fail(&self, job: Job, kind: OutcomeKind) {
        self.done.send(Outcome {
            kind,
            message: job.message,
        });
    }
}

impl ChannelSender for SmtpSender {
    fn take(&mut self, job: Job, provider: Option<&Provider>) {
        let Some(provider) = provider else {
            // Mailroom's own mail: through the system provider.
            let pool = self
                .pools
                .entry(SYSTEM)
                .or_insert_with(|| ProviderSender::start_system(&self.ctx, self.done.clone()));
            if let Some(job) = pool.send(job) {
                self.fail(
                    job,
                    OutcomeKind::Retry(Reply::text("the system pool closed")),
                );
            }
            return;
        };
        let fresh = self
            .pools
            .get(&provider.id)
            .is_some_and(|s| s.version == version(provider));
        if !fresh {
            match ProviderSender::start(&self.ctx, provider, self.done.clone()) {
                Ok(pool) => {
                    self.pools.insert(provider.id, pool);
                }
                Err(e) => {
                    // Its password cannot be opened (the secret key changed): like a
                    // refused sign-in, the provider turns red and its mail is held.
                    let reply = Reply::text(&format!(
                        "{e}: enter the password again on the provider's page"
                    ));
                    self.fail(
                        job,
                        OutcomeKind::ProviderRefused(reply, provider.checked_at),
                    );
                    return;
                }
            }
        }
        if let Some(pool) = self.pools.get(&provider.id)
            && let Some(job) = pool.send(job)
        {
            self.fail(
                job,
                OutcomeKind::Retry(Reply::text("the connection pool closed")),
            );
        }
    }

    fn keep_only(&mut self, active: &HashSet<ProviderId>) {
        self.pools
            .retain(|id, _| *id == SYSTEM || active.contains(id));
    }

    fn providers(&self) -> Vec<ProviderId> {
        self.pools
            .keys()
            .copied()
            .filter(|id| *id != SYSTEM)
            .collect()
    }
}
