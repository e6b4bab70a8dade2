//! The JSON API for other systems (`/api/v1`, bearer keys, problem documents) and the
//! console pages that manage its keys.

pub mod auth;
pub mod endpoints;
pub mod files;
pub mod handlers;
pub mod model;
pub mod openapi;
pub mod problem;
pub mod queries;
pub mod runtime;
pub mod service;
pub mod views;

use actix_web::web;

/// Routes of the API slice: the console pages, and the `/api/v1` scope with its own body
/// limit. No session or CSRF applies there: only the bearer key authorizes.
pub fn routes(cfg: &mut web::ServiceConfig, body_limit: usize) {
    cfg.route("/w/{slug}/api-keys", web::get().to(handlers::index))
        .route(
            "/w/{slug}/api-reference",
            web::get().to(handlers::reference),
        )
        .route("/w/{slug}/api-keys", web::post().to(handlers::create))
        .route(
            "/w/{slug}/api-keys/smtp",
            web::post().to(handlers::per_request_smtp),
        )
        .route(
            "/w/{slug}/api-keys/{id}/revoke",
            web::post().to(handlers::revoke),
        )
        .service(
            web::scope("/api/v1")
                .app_data(web::PayloadConfig::new(body_limit))
                .route("/openapi.json", web::get().to(openapi::document))
                .route("/messages", web::post().to(endpoints::send))
                .route("/messages", web::get().to(endpoints::list))
                .route("/messages/{id}", web::get().to(endpoints::show))
                .route("/messages/{id}/cancel", web::post().to(endpoints::cancel))
                .route("/messages/{id}/release", web::post().to(endpoints::release))
                .route("/providers", web::get().to(endpoints::list_providers))
                .route("/files", web::post().to(files::upload))
                .route("/files/{id}", web::get().to(files::show))
                .route("/files/{id}", web::delete().to(files::delete))
                .default_service(web::to(endpoints::not_found)),
        )
        .service(web::scope("/api").default_service(web::to(endpoints::not_found)));
}
