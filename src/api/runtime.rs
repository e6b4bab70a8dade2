//! What the API keeps per process: each key's rate limiter, when its use was last
//! recorded, the Idempotency-Keys being served, and the workspaces' provider lists.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::model::{ApiKey, ApiKeyId};
use crate::providers::model::Provider;
use crate::senders::model::Sender;
use crate::workspaces::model::WorkspaceId;

/// Per-process API state: each key's rate limiter and when its use was last recorded.
#[derive(Default)]
pub struct ApiRuntime {
    limits: Mutex<HashMap<ApiKeyId, (i32, DefaultDirectRateLimiter)>>,
    touched: Mutex<HashMap<ApiKeyId, Instant>>,
    in_flight: Arc<Mutex<std::collections::HashSet<(ApiKeyId, String)>>>,
    providers: Mutex<HashMap<WorkspaceId, ProviderList>>,
    senders: Mutex<HashMap<WorkspaceId, SenderList>>,
}

/// A workspace's ready senders (each with its provider) and when they were read.
type SenderList = (Instant, Arc<Vec<(Sender, Provider)>>);

/// A workspace's providers and when they were read.
type ProviderList = (Instant, Arc<Vec<Provider>>);

/// How long a workspace's provider list is reused by API sends. A change shows within
/// this time; a provider that turned red meanwhile only makes its new messages wait
/// (the engine sends through active providers only), one deleted meanwhile fails the
/// send with a conflict.
const PROVIDERS_FRESH: Duration = Duration::from_secs(1);

/// An `Idempotency-Key` being served by this process; released when dropped.
pub struct InFlight {
    set: Arc<Mutex<std::collections::HashSet<(ApiKeyId, String)>>>,
    entry: (ApiKeyId, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set.lock().expect("lock").remove(&self.entry);
    }
}

/// `last_used_at` is written at most this often per key (not once per request).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

impl ApiRuntime {
    /// Counts a request against the key's limit; `Err(seconds)` when it must wait.
    pub(super) fn admit(&self, key: &ApiKey) -> Result<(), u64> {
        let Some(per_minute) = key.per_minute else {
            return Ok(());
        };
        let mut limits = self.limits.lock().expect("lock");
        let stale = limits.get(&key.id).is_none_or(|(n, _)| *n != per_minute);
        if stale {
            let n = NonZeroU32::new(u32::try_from(per_minute.max(1)).unwrap_or(1))
                .unwrap_or(NonZeroU32::MIN);
            limits.insert(
                key.id,
                (per_minute, RateLimiter::direct(Quota::per_minute(n))),
            );
        }
        let (_, limiter) = limits.get(&key.id).expect("inserted above");
        limiter.check().map_err(|not_until| {
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                .max(1)
        })
    }

    /// Marks an `Idempotency-Key` as being served; `None` when it already is (409).
    pub fn begin(&self, key: ApiKeyId, idempotency_key: &str) -> Option<InFlight> {
        let entry = (key, idempotency_key.to_owned());
        self.in_flight
            .lock()
            .expect("lock")
            .insert(entry.clone())
            .then(|| InFlight {
                set: self.in_flight.clone(),
                entry,
            })
    }

    /// The workspace's providers as last read, if that was less than `PROVIDERS_FRESH` ago.
    pub fn fresh_providers(&self, workspace: WorkspaceId) -> Option<Arc<Vec<Provider>>> {
        self.providers
            .lock()
            .expect("lock")
            .get(&workspace)
            .filter(|(at, _)| at.elapsed() < PROVIDERS_FRESH)
            .map(|(_, list)| list.clone())
    }

    /// The workspace's providers, read at most once per `PROVIDERS_FRESH` (every API send
    /// needs them: a query per request was a tenth of PostgreSQL's work, measured).
    pub fn providers(
        &self,
        conn: &mut crate::db::DbConn,
        workspace: WorkspaceId,
    ) -> Result<Arc<Vec<Provider>>, crate::error::AppError> {
        if let Some(list) = self.fresh_providers(workspace) {
            return Ok(list);
        }
        let list = Arc::new(crate::providers::queries::list_by_workspace(
            conn, workspace,
        )?);
        self.providers
            .lock()
            .expect("lock")
            .insert(workspace, (Instant::now(), list.clone()));
        Ok(list)
    }

    /// The workspace's ready senders, read at most once per `PROVIDERS_FRESH` (every API
    /// send needs them). A sender that stopped being ready meanwhile sends for at most
    /// that long; its provider turning red only makes its messages wait.
    pub fn ready_senders(
        &self,
        conn: &mut crate::db::DbConn,
        workspace: &crate::workspaces::model::Workspace,
    ) -> Result<Arc<Vec<(Sender, Provider)>>, crate::error::AppError> {
        if let Some(list) = self.fresh_senders(workspace.id) {
            return Ok(list);
        }
        let list = Arc::new(crate::senders::service::ready_senders(conn, workspace)?);
        self.senders
            .lock()
            .expect("lock")
            .insert(workspace.id, (Instant::now(), list.clone()));
        Ok(list)
    }

    /// The workspace's ready senders as last read, if that was less than
    /// `PROVIDERS_FRESH` ago.
    pub fn fresh_senders(&self, workspace: WorkspaceId) -> Option<Arc<Vec<(Sender, Provider)>>> {
        self.senders
            .lock()
            .expect("lock")
            .get(&workspace)
            .filter(|(at, _)| at.elapsed() < PROVIDERS_FRESH)
            .map(|(_, list)| list.clone())
    }

    /// Whether the key's use should be written now.
    pub(super) fn should_touch(&self, key: ApiKeyId) -> bool {
        let mut touched = self.touched.lock().expect("lock");
        let now = Instant::now();
        match touched.get(&key) {
            Some(at) if now.duration_since(*at) < TOUCH_EVERY => false,
            _ => {
                touched.insert(key, now);
                true
            }
        }
    }
}
