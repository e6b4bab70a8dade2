//! Who calls the API: the bearer key, its workspace, its rate limit. Only the
//! `Authorization` header counts; a browser's session cookie never authorizes an API call.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, http::header, web};
use futures_util::future::LocalBoxFuture;

use super::model::ApiKey;
use super::{queries, service};
use crate::error::AppError;
use crate::state::AppState;
use crate::workspaces::model::Workspace;

/// An authenticated API request.
pub struct ApiCaller {
    /// The key.
    pub key: ApiKey,
    /// Its workspace: every query of the request filters by it.
    pub workspace: Workspace,
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
