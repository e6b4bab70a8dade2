//! Operating endpoints: `/healthz` for load balancers and orchestrators, `/metrics` for
//! Prometheus.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use crate::error::AppError;
use crate::state::AppState;

/// Routes of the operating endpoints.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics));
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
