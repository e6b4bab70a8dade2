//! `GET /api/v1/providers`.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::api::auth::ApiCaller;
use crate::api::problem::responses;
use crate::error::AppError;
use crate::providers::queries as providers;
use crate::state::AppState;

/// A provider as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProviderView {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// `smtp`, `gmail`, `ses` or `outlook`.
    pub kind: String,
    /// `unchecked`, `active` or `error`.
    pub status: String,
}

/// `GET /api/v1/providers` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProviderList {
    /// By name.
    pub providers: Vec<ProviderView>,
}

#[utoipa::path(
    get,
    path = "/api/v1/providers",
    tag = "providers",
    responses(
        (status = 200, description = "The workspace's providers", body = ProviderList),
        (status = 401, response = responses::Unauthorized),
        (status = 429, response = responses::RateLimited)
    ),
    security(("bearer" = []))
)]
/// `GET /api/v1/providers`.
pub async fn list_providers(
    state: web::Data<AppState>,
    caller: ApiCaller,
) -> Result<HttpResponse, AppError> {
    let workspace = caller.workspace.id;
    let rows = state
        .db
        .run(move |conn| Ok(providers::list_by_workspace(conn, workspace)?))
        .await?;
    let providers: Vec<ProviderView> = rows
        .into_iter()
        .map(|p| ProviderView {
            id: p.id.0,
            name: p.name,
            kind: p.kind,
            status: p.status,
        })
        .collect();
    Ok(HttpResponse::Ok().json(ProviderList { providers }))
}
