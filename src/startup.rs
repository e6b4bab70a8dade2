//! Building and running the application: testable (port 0, `port()`), as in
//! zero-to-production's `startup.rs`.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_session::SessionMiddleware;
use actix_session::config::{BrowserSession, CookieContentSecurity};
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::Server;
use actix_web::middleware::{Compress, ErrorHandlers, from_fn};
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;

use crate::accounts::gate::setup_gate;
use crate::accounts::session_store::DbSessionStore;
use crate::config::Settings;
use crate::db::{Db, StartupDbError};
use crate::error::AppError;
use crate::state::{AppState, SetupGate};
use crate::web::{RequestSpan, csrf, errors, faults, request_id_header, security_headers};

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be opened (exit code 2).
    #[error(transparent)]
    Database(#[from] StartupDbError),
    /// A setting is unusable (exit code 2).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A built, bound, not yet running application.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

/// Connections of the delivery engine's own pool: its claimer, its outcome writer and
/// its heartbeat each hold one at a time, plus one spare.
const ENGINE_CONNECTIONS: u32 = 4;

impl Application {
    /// Opens the database (applying migrations), binds the listener and builds the server.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let db = Db::open(&settings.database_url(), settings.pool_size)?;
        let key = settings.secret_key().map_err(|e| {
            crate::config::ConfigError(format!(
                "secret_key (MAILROOM_SECRET_KEY or <data_dir>/secret.key): {e:#}"
            ))
        })?;
        let users = db
            .run(|conn| Ok(crate::accounts::queries::count_users(conn)?))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let egress = settings.egress_policy()?;
        let per_request_egress = settings.per_request_policy(&egress)?;
        let sealer = crate::crypto::Sealer::new(&key, "provider secrets v1");
        let dns = crate::domains::dns::Resolver::new(
            settings.dns_servers()?,
            Duration::from_secs(settings.smtp_timeout_secs.clamp(1, 10)),
        );
        // The engine has connections of its own: a busy console must not make delivery
        // wait for one (measured: 32 clients on the history page held the shared pool and
        // sending fell from 1,000 to 183 messages a second).
        let engine = crate::delivery::start(
            db.another(ENGINE_CONNECTIONS)?,
            sealer.clone(),
            egress.clone(),
            per_request_egress.clone(),
            crate::delivery::system::SystemProvider::from_settings(&settings),
            crate::delivery::EngineConfig {
                batch: settings.delivery_batch,
                max_in_flight: settings.delivery_in_flight,
                lease: Duration::from_secs(settings.lease_secs),
                poll: Duration::from_millis(500),
                retry_base: Duration::from_secs(settings.retry_base_secs),
                smtp_timeout: Duration::from_secs(settings.smtp_timeout_secs),
            },
        );
        let writers = if settings.database_url().starts_with("postgres") {
            2
        } else {
            1
        };
        let ingest = crate::messages::ingest::Ingest::start(db.clone(), engine.clone(), writers);
        let state = web::Data::new(AppState {
            db,
            settings: Arc::new(settings.clone()),
            setup: SetupGate::new(users > 0),
            sealer,
            egress,
            per_request_egress,
            trusted_proxies: settings.trusted_proxies()?,
            ingest,
            engine,
            api: Arc::default(),
            dns,
        });

        let listener = TcpListener::bind(&settings.bind)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.bind))?;
        let port = listener.local_addr().map_err(anyhow::Error::from)?.port();
        if users == 0 {
            let host = settings.public_url.clone().unwrap_or_else(|| {
                format!(
                    "http://{}",
                    listener
                        .local_addr()
                        .map(|a| a.to_string())
                        .unwrap_or_default()
                )
            });
            tracing::warn!(
                setup_token = state.setup.token(),
                "no account exists yet: open {host}/setup and enter this setup token to create the first admin"
            );
        }
        let cookie_key = Key::derive_from(&key);
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            let session = SessionMiddleware::builder(
                DbSessionStore::new(app_state.db.clone()),
                cookie_key.clone(),
            )
            .cookie_name("mailroom_session".into())
            .cookie_http_only(true)
            .cookie_same_site(SameSite::Lax)
            .cookie_secure(app_state.settings.secure_cookies())
            .cookie_content_security(CookieContentSecurity::Private)
            .session_lifecycle(BrowserSession::default().state_ttl(
                actix_web::cookie::time::Duration::hours(
                    app_state.settings.session_ttl_hours.into(),
                ),
            ))
            .build();
            App::new()
                .app_data(app_state.clone())
                .app_data(web::FormConfig::default().limit(256 * 1024))
                .app_data(multipart_config(app_state.settings.attachment_limit_mb))
                .configure(|cfg| routes(cfg, &app_state.settings))
                .default_service(web::to(|| async {
                    Err::<actix_web::HttpResponse, _>(AppError::NotFound)
                }))
                .wrap(from_fn(setup_gate))
                .wrap(from_fn(csrf::protect))
                .wrap(session)
                .wrap(from_fn(faults::answer))
                .wrap(ErrorHandlers::new().default_handler(errors::render))
                .wrap(security_headers())
                .wrap(Compress::default())
                .wrap(from_fn(request_id_header))
                .wrap(TracingLogger::<RequestSpan>::new())
        })
        .shutdown_timeout(10)
        // Our own signal handling (below): actix-server's stops the whole actix System on
        // SIGTERM, which would kill the delivery engine's Arbiter mid-send.
        .disable_signals();
        if settings.workers > 0 {
            server = server.workers(settings.workers);
        }
        let server = server.listen(listener).map_err(anyhow::Error::from)?.run();
        Ok(Self {
            port,
            server,
            state,
        })
    }

    /// The bound port (tests bind port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The application's state (tests run background work with it, e.g. the domain
    /// re-check).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// The one-time setup token (tests read it here instead of from the log).
    pub fn setup_token(&self) -> String {
        self.state.setup.token().to_owned()
    }

    /// A handle that stops the HTTP server (the API benchmark stops it before printing).
    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// The delivery engine (tests stop it when they end).
    pub fn engine(&self) -> crate::delivery::EngineHandle {
        self.state.engine.clone()
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let db = self.state.db.clone();
        let retention_days = self.state.settings.body_retention_days;
        if self.state.settings.database_url().starts_with("postgres") {
            // PostgreSQL's triggers append tally changes; fold them in every 2 s so counts
            // read a few rows (SQLite adds to the tallies at once), and vacuum both small
            // tables every 30 s so their dead rows do not pile up.
            let db = db.clone();
            actix_web::rt::spawn(async move {
                let mut every = actix_web::rt::time::interval(Duration::from_secs(2));
                for fold in 1u64.. {
                    every.tick().await;
                    if let Err(e) = db
                        .write(|conn| Ok(crate::messages::queries::fold_tallies(conn)?))
                        .await
                    {
                        db.warn_unless_fault(&e, "folding the tallies failed");
                    }
                    if fold % 15 == 0
                        && let Err(e) = db
                            .run(|conn| Ok(crate::messages::queries::vacuum_tallies(conn)?))
                            .await
                    {
                        db.warn_unless_fault(&e, "vacuuming the tallies failed");
                    }
                }
            });
        }
        actix_web::rt::spawn(crate::health::watch(db.clone()));
        actix_web::rt::spawn(crate::domains::recheck::run(self.state.clone()));
        actix_web::rt::spawn(async move {
            let mut every = actix_web::rt::time::interval(Duration::from_secs(600));
            loop {
                every.tick().await;
                let retained = db.clone();
                match crate::db::blocking(move || {
                    crate::messages::service::apply_retention(&retained, retention_days)
                })
                .await
                {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(
                        purged,
                        days = retention_days,
                        "message contents past the retention period deleted"
                    ),
                    Err(e) => db.warn_unless_fault(&e, "retention failed"),
                }
                match db.write(crate::accounts::service::sweep).await {
                    Ok((sessions, failures)) if sessions + failures > 0 => {
                        tracing::debug!(
                            sessions,
                            failures,
                            "expired sessions and sign-in failures deleted"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => db.warn_unless_fault(&e, "sweep failed"),
                }
            }
        });
        let handle = self.server.handle();
        let mut server = actix_web::rt::spawn(self.server);
        let served = tokio::select! {
            served = &mut server => served.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            signal = shutdown_signal() => {
                tracing::info!(signal, "stopping: no new requests or claims; finishing what is in flight");
                // Stop claiming at once; the HTTP drain and the engine's grace overlap.
                self.state.engine.stop_now();
                handle.stop(true).await;
                Ok(())
            }
        };
        // Let messages in flight finish, then give back the rest to the next start.
        self.state.engine.stop(Duration::from_secs(10)).await;
        served
    }
}

/// Uploads: the attachment limit plus room for the text fields, in memory; anything larger
/// is refused with a message that says so.
fn multipart_config(limit_mb: usize) -> actix_multipart::form::MultipartFormConfig {
    let limit = (limit_mb + 2) * 1024 * 1024;
    actix_multipart::form::MultipartFormConfig::default()
        .total_limit(limit)
        .memory_limit(limit)
        .error_handler(move |err, _req| {
            AppError::Validation(format!(
                "The upload could not be read ({err}). Files may total at most {limit_mb} MB."
            ))
            .into()
        })
}

/// Resolves at SIGTERM or SIGINT, naming it.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => std::future::pending().await,
    }
}

/// The route table of the whole console: every slice mounts its own routes here.
fn routes(cfg: &mut web::ServiceConfig, settings: &Settings) {
    cfg.route(
        "/static/{name:.*}",
        web::get().to(crate::web::assets::serve),
    )
    .route("/favicon.ico", web::get().to(crate::web::assets::favicon));
    crate::health::routes(cfg);
    crate::accounts::routes(cfg);
    crate::workspaces::routes(cfg);
    crate::audit::routes(cfg);
    crate::providers::routes(cfg);
    crate::domains::routes(cfg);
    crate::senders::routes(cfg);
    crate::messages::routes(cfg);
    // An API body carries the message and its text; files come separately.
    crate::api::routes(cfg, settings.attachment_limit_mb.max(1) * 1024 * 1024);
}
