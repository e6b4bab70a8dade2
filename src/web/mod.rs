//! Shared HTTP plumbing: application state, the route table, middleware (CSRF, first-run
//! gate, security headers, request ids), rendering helpers and static assets.

pub mod assets;
pub mod csrf;
pub mod errors;
pub mod extract;
pub mod fmt;
pub mod forms;
pub mod frame;
pub mod htmx;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{Error, HttpMessage, HttpResponse, web};
use askama::Template;
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};

use crate::config::Settings;
use crate::db::Db;
use crate::error::AppError;

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
    pub api: Arc<crate::api::auth::ApiRuntime>,
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
            token: crate::accounts::service::new_token(),
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

/// Renders a template as a 200 HTML response.
pub fn render<T: Template>(page: &T) -> Result<HttpResponse, AppError> {
    render_status(StatusCode::OK, page)
}

/// Renders a template as an HTML response with this status (422 for a form with errors).
pub fn render_status<T: Template>(status: StatusCode, page: &T) -> Result<HttpResponse, AppError> {
    let body = page
        .render()
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("template: {e}")))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body))
}

/// The route table of the whole console.
pub fn routes(cfg: &mut web::ServiceConfig, settings: &Settings) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics))
        .route("/static/{name:.*}", web::get().to(assets::serve));
    crate::accounts::routes(cfg);
    crate::workspaces::routes(cfg);
    crate::audit::routes(cfg);
    crate::providers::routes(cfg);
    crate::messages::routes(cfg);
    // An API body carries the message and its text; files come separately.
    crate::api::routes(cfg, settings.attachment_limit_mb.max(1) * 1024 * 1024);
}

/// `GET /healthz`: 200 when the database answers, 503 when it does not.
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let result = state
        .db
        .run(|conn| {
            use diesel::connection::SimpleConnection;
            conn.batch_execute("SELECT 1").map_err(AppError::from)
        })
        .await;
    match result {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ok"),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body("database unavailable")
        }
    }
}

/// `GET /metrics` (Prometheus text format) with `Authorization: Bearer <MAILROOM_METRICS_TOKEN>`.
async fn metrics(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    use subtle::ConstantTimeEq;
    let Some(expected) = state.settings.metrics_token.as_deref() else {
        return Err(AppError::NotFound);
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        return Ok(HttpResponse::Unauthorized()
            .insert_header((
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"mailroom metrics\"",
            ))
            .content_type("text/plain; charset=utf-8")
            .body("a valid bearer token is required\n"));
    }
    let depth = state
        .db
        .run(|conn| Ok(crate::delivery::queries::queue_depth(conn)?))
        .await?;
    let metrics = crate::delivery::metrics::metrics();
    for status in ["scheduled", "queued", "sending", "held"] {
        let count = depth
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n);
        metrics.queue.with_label_values(&[status]).set(count);
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render()))
}

/// Security headers on every response: a CSP without inline script, no framing, no
/// sniffing, same-origin referrers, and nothing kept in a cache (pages show a workspace's
/// mail, and some show a secret once: a new API key, a set-password link; only static
/// assets set a cache policy of their own). <https://owasp.org/www-project-secure-headers/>
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CACHE_CONTROL, "no-store"))
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
             form-action 'self'; object-src 'none'",
        ))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "same-origin"))
        .add(("Cross-Origin-Opener-Policy", "same-origin"))
        .add((
            "Permissions-Policy",
            "camera=(), microphone=(), geolocation=()",
        ))
}

/// Sends every page to `/setup` until the first admin exists.
pub async fn setup_gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let open_path = req.path() == "/setup"
        || req.path().starts_with("/static/")
        || req.path() == "/healthz"
        || req.path() == "/metrics"
        || req.path().starts_with("/api/");
    let state = req.app_data::<web::Data<AppState>>().cloned();
    if let Some(state) = state.filter(|s| !open_path && !s.setup.is_done()) {
        let users = state
            .db
            .run(|conn| Ok(crate::accounts::queries::count_users(conn)?))
            .await?;
        if users > 0 {
            state.setup.mark_done();
        } else {
            let (http_req, _) = req.into_parts();
            let response = htmx::redirect_full(&http_req, "/setup");
            return Ok(ServiceResponse::new(http_req, response).map_into_boxed_body());
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

/// Echoes the request id in an `X-Request-Id` response header.
pub async fn request_id_header(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req.extensions().get::<RequestId>().map(ToString::to_string);
    let mut res = next.call(req).await?;
    if let Some(value) = id.and_then(|id| header::HeaderValue::from_str(&id).ok()) {
        res.headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), value);
    }
    Ok(res)
}

/// One span per request with method, path (never the query string: it may carry a
/// one-time token) and request id; one line when it ends.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.path(),
            request_id = %request_id,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let status = match outcome {
            Ok(res) => res.status().as_u16(),
            Err(e) => e.as_response_error().status_code().as_u16(),
        };
        span.in_scope(|| tracing::info!(status, "request finished"));
    }
}
