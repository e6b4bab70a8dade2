//! Operating endpoints: `/healthz` for load balancers and orchestrators, `/metrics` for
//! Prometheus.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use std::time::{Duration, Instant};

use crate::db::{self, Db, DbConn};
use crate::error::AppError;
use crate::state::AppState;

/// Routes of the operating endpoints.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics));
}

/// How long a write probe's answer is reused; `/healthz` writes at most this often.
const PROBE_EVERY: Duration = Duration::from_secs(3);
/// A refusal this recent makes `/healthz` unhealthy even when the probe's small write
/// went through (a full disk may still take one row).
const REFUSAL_WINDOW: Duration = Duration::from_secs(5);

/// Writes this node's row of `health_probes` in a write transaction: proves the database
/// takes writes, not only that it answers.
fn write_probe(conn: &mut DbConn) -> Result<(), AppError> {
    use diesel::RunQueryDsl;
    use diesel::sql_types::{Text, Timestamp};
    let node = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".into());
    let now = crate::db::now();
    let sql = match conn {
        DbConn::Pg(_) => {
            "INSERT INTO health_probes (node, checked_at) VALUES ($1, $2) \
             ON CONFLICT (node) DO UPDATE SET checked_at = excluded.checked_at"
        }
        DbConn::Sqlite(_) => {
            "INSERT INTO health_probes (node, checked_at) VALUES (?, ?) \
             ON CONFLICT (node) DO UPDATE SET checked_at = excluded.checked_at"
        }
    };
    db::write(conn, |conn| {
        crate::per_backend!(conn, |c| diesel::sql_query(sql)
            .bind::<Text, _>(&node)
            .bind::<Timestamp, _>(now)
            .execute(c))?;
        Ok(())
    })
}

/// Probes now, or answers the probe of the last few seconds.
pub async fn probe(db: &Db) -> Result<(), String> {
    let last = &db.faults().last_probe;
    if let Some((at, result)) = last.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        && at.elapsed() < PROBE_EVERY
    {
        return result.clone();
    }
    let result = db.run(write_probe).await.map_err(|e| match e {
        AppError::Unavailable(fault) => fault.describe().to_owned(),
        other => other.to_string(),
    });
    *last.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), result.clone()));
    result
}

/// While an incident is open, probes every few seconds and closes it (logging how long it
/// lasted and how many requests were refused) once writes succeed again.
pub async fn watch(db: Db) {
    let mut every = actix_web::rt::time::interval(PROBE_EVERY);
    loop {
        every.tick().await;
        if db.faults().any_open() && probe(&db).await.is_ok() {
            db.faults().recovered(PROBE_EVERY);
        }
    }
}

/// `GET /healthz`: 200 when the database takes writes; 503 saying why when it does not
/// (a failed write probe, or requests refused in the last seconds).
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let unhealthy = match probe(&state.db).await {
        Err(why) => Some(format!("database refuses writes: {why}")),
        Ok(()) => state
            .db
            .faults()
            .refusing_within(REFUSAL_WINDOW)
            .map(|fault| {
                format!(
                    "database refused requests in the last {} seconds: {}",
                    REFUSAL_WINDOW.as_secs(),
                    fault.describe()
                )
            }),
    };
    match unhealthy {
        None => HttpResponse::Ok().content_type("text/plain").body("ok"),
        Some(why) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain; charset=utf-8")
            .body(why),
    }
}

/// `GET /metrics` (Prometheus text format) with `Authorization: Bearer <MAILROOM_METRICS_TOKEN>`;
/// answers while the database is down (the queue depth keeps its last values then).
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
    // The queue depth needs the database; the rest (refusals above all) is most wanted
    // when the database cannot answer, so it is served regardless.
    let depth = state
        .db
        .run(|conn| Ok(crate::delivery::queries::queue_depth(conn)?))
        .await;
    let metrics = crate::delivery::metrics::metrics();
    if let Ok(depth) = depth {
        for status in ["scheduled", "queued", "sending", "held"] {
            let count = depth
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            metrics.queue.with_label_values(&[status]).set(count);
        }
    }
    let mut body = metrics.render();
    body.push_str(
        "# HELP mailroom_requests_refused_total Requests answered 503 because the database could not serve them\n\
         # TYPE mailroom_requests_refused_total counter\n",
    );
    for (fault, count) in state.db.faults().refused_totals() {
        body.push_str(&format!(
            "mailroom_requests_refused_total{{cause=\"{}\"}} {count}\n",
            fault.label()
        ));
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body))
}
