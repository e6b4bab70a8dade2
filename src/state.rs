//! The state every handler shares: the database, the settings, the engine and ingest of
//! this process, and what the API keeps per process. Assembled by `startup`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::Settings;
use crate::db::Db;

/// State shared by every handler.
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Settings.
    pub settings: Arc<Settings>,
    /// First-run state.
    pub setup: SetupGate,
    /// Seals provider passwords.
    pub sealer: crate::crypto::Sealer,
    /// Where providers may connect.
    pub egress: crate::providers::egress::EgressPolicy,
    /// The reverse proxies whose `X-Forwarded-For` is believed (`trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where API calls' own SMTP servers may be (stricter: no private networks).
    pub per_request_egress: crate::providers::egress::EgressPolicy,
    /// The delivery engine of this process.
    pub engine: crate::delivery::EngineHandle,
    /// The one write path for new messages (group commit).
    pub ingest: crate::messages::ingest::Ingest,
    /// API keys' rate limiters.
    pub api: Arc<crate::api::runtime::ApiRuntime>,
    /// The nameservers domain checks ask.
    pub dns: crate::domains::dns::Resolver,
}

/// Until the first admin exists, every page leads to `/setup`, which needs the one-time
/// token printed to the log at start.
pub struct SetupGate {
    token: String,
    done: AtomicBool,
}

impl SetupGate {
    /// A gate; `done` when accounts already exist.
    pub fn new(done: bool) -> Self {
        Self {
            token: crate::crypto::token(),
            done: AtomicBool::new(done),
        }
    }

    /// The setup token (printed at start while setup is pending).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether the first admin exists (as far as this process knows).
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Records that the first admin exists.
    pub fn mark_done(&self) {
        self.done.store(true, Ordering::Release);
    }
}
