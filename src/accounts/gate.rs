//! The first-run gate: until the first admin exists, every page leads to `/setup`.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, web};

use crate::state::AppState;
use crate::web::htmx;

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
