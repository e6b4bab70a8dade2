//! Prometheus metrics of this process: what the delivery engine did (sent, failed, retried,
//! held, lease reclaims, SMTP latency per provider) and, at scrape time, the queue depth by
//! status. Served at `/metrics` behind a bearer token (`MAILROOM_METRICS_TOKEN`).

use std::sync::OnceLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    /// Messages accepted, by provider id.
    pub sent: IntCounterVec,
    /// Messages failed, by provider id.
    pub failed: IntCounterVec,
    /// Attempts that will be retried, by provider id.
    pub retried: IntCounterVec,
    /// Messages held because their provider refused the sign-in, by provider id.
    pub held: IntCounterVec,
    /// Messages taken over from a node whose lease expired.
    pub reclaimed: IntCounter,
    /// Seconds per SMTP transaction (MAIL … DATA), by provider id.
    pub smtp_seconds: HistogramVec,
    /// Unfinished messages by status, set at each scrape.
    pub queue: IntGaugeVec,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new_custom(Some("mailroom".into()), None)?;
    let counter = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["provider"]);
    let metrics = Metrics {
        sent: counter(
            "messages_sent_total",
            "Messages accepted by their provider (2xx)",
        )?,
        failed: counter(
            "messages_failed_total",
            "Messages failed (5xx, or out of retries)",
        )?,
        retried: counter(
            "messages_retried_total",
            "Attempts that failed temporarily and will be retried",
        )?,
        held: counter(
            "messages_held_total",
            "Messages held because their provider refused the sign-in",
        )?,
        reclaimed: IntCounter::new(
            "lease_reclaims_total",
            "Messages taken over after their node's lease expired",
        )?,
        smtp_seconds: HistogramVec::new(
            HistogramOpts::new(
                "smtp_transaction_seconds",
                "Seconds per SMTP transaction (MAIL to the reply after DATA)",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["provider"],
        )?,
        queue: IntGaugeVec::new(
            Opts::new("queue_messages", "Unfinished messages by status"),
            &["status"],
        )?,
        registry,
    };
    metrics.registry.register(Box::new(metrics.sent.clone()))?;
    metrics
        .registry
        .register(Box::new(metrics.failed.clone()))?;
    metrics
        .registry
        .register(Box::new(metrics.retried.clone()))?;
    metrics.registry.register(Box::new(metrics.held.clone()))?;
    metrics
        .registry
        .register(Box::new(metrics.reclaimed.clone()))?;
    metrics
        .registry
        .register(Box::new(metrics.smtp_seconds.clone()))?;
    metrics.registry.register(Box::new(metrics.queue.clone()))?;
    Ok(metrics)
}

/// The metrics of this process.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| build().expect("metric names and labels are valid"))
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
