//! Who calls the API: the bearer key, its workspace, its rate limit. Only the
//! `Authorization` header counts; a browser's session cookie never authorizes an API call.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, http::header, web};
use futures_util::future::LocalBoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::model::{ApiKey, ApiKeyId};
use super::{queries, service};
use crate::error::AppError;
use crate::providers::model::Provider;
use crate::web::AppState;
use crate::workspaces::model::{Workspace, WorkspaceId};

/// An authenticated API request.
pub struct ApiCaller {
    /// The key.
    pub key: ApiKey,
    /// Its workspace: every query of the request filters by it.
    pub workspace: Workspace,
}

/// Per-process API state: each key's rate limiter and when its use was last recorded.
#[derive(Default)]
pub struct ApiRuntime {
    limits: Mutex<HashMap<ApiKeyId, (i32, DefaultDirectRateLimiter)>>,
    touched: Mutex<HashMap<ApiKeyId, Instant>>,
    in_flight: Arc<Mutex<std::collections::HashSet<(ApiKeyId, String)>>>,
    providers: Mutex<HashMap<WorkspaceId, ProviderList>>,
}

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
    fn admit(&self, key: &ApiKey) -> Result<(), u64> {
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

    /// The workspace's providers, read at most once per `PROVIDERS_FRESH` (every API send
    /// needs them: a query per request was a tenth of PostgreSQL's work, measured).
    pub fn providers(
        &self,
        conn: &mut crate::db::DbConn,
        workspace: WorkspaceId,
    ) -> Result<Arc<Vec<Provider>>, crate::error::AppError> {
        if let Some((at, list)) = self.providers.lock().expect("lock").get(&workspace)
            && at.elapsed() < PROVIDERS_FRESH
        {
            return Ok(list.clone());
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

    /// Whether the key's use should be written now.
    fn should_touch(&self, key: ApiKeyId) -> bool {
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

/// The key in `Authorization: Bearer <key>`.
fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

impl FromRequest for ApiCaller {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| {
                AppError::Unexpected(anyhow::anyhow!("application state missing"))
            })?;
            let token = token.ok_or(AppError::Unauthorized)?;
            let found = state
                .db
                .run(move |conn| service::authenticate(conn, &token))
                .await?;
            let (key, workspace) = found.ok_or(AppError::Unauthorized)?;
            state
                .api
                .admit(&key)
                .map_err(|retry_after| AppError::Limited {
                    message: format!(
                        "This API key's rate limit is reached; retry after {retry_after} s."
                    ),
                    retry_after,
                })?;
            if state.api.should_touch(key.id) {
                let id = key.id;
                let db = state.db.clone();
                actix_web::rt::spawn(async move {
                    let written = db
                        .run(move |conn| Ok(queries::touch(conn, id, crate::db::now())?))
                        .await;
                    if let Err(e) = written {
                        tracing::warn!(error = %e, "cannot record an API key's use");
                    }
                });
            }
            Ok(ApiCaller { key, workspace })
        })
    }
}
