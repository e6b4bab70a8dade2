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
        .route(
            "/w/{slug}/api-keys/{id}/sender",
            web::post().to(handlers::default_sender),
        )
        .service(
            web::scope("/api/v1")
                .app_data(web::PayloadConfig::new(body_limit))
                .service(resource("/openapi.json").route(web::get().to(openapi::document)))
                .service(
                    resource("/messages")
                        .route(web::post().to(endpoints::send))
                        .route(web::get().to(endpoints::list)),
                )
                .service(resource("/messages/{id}").route(web::get().to(endpoints::show)))
                .service(resource("/messages/{id}/cancel").route(web::post().to(endpoints::cancel)))
                .service(
                    resource("/messages/{id}/release").route(web::post().to(endpoints::release)),
                )
                .service(resource("/providers").route(web::get().to(endpoints::list_providers)))
                .service(resource("/files").route(web::post().to(files::upload)))
                .service(
                    resource("/files/{id}")
                        .route(web::get().to(files::show))
                        .route(web::delete().to(files::delete)),
                )
                .default_service(web::to(endpoints::not_found)),
        )
        .service(web::scope("/api").default_service(web::to(endpoints::not_found)));
}

/// One path of the API: a method it does not serve answers 405 with `Allow` naming the
/// ones it does (a problem document).
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(endpoints::not_allowed))
}
