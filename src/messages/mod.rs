//! Messages: the log and the queue (one row per recipient), compose, history, detail.

pub mod compose;
pub mod export;
pub mod handlers;
pub mod ingest;
pub mod kinds;
pub mod model;
pub mod queries;
pub mod search;
pub mod service;
pub mod views;

use actix_web::web;

/// Routes of the messages slice.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/w/{slug}/compose", web::get().to(handlers::compose_form))
        .route("/w/{slug}/compose", web::post().to(handlers::compose))
        .route("/w/{slug}/messages", web::get().to(handlers::index))
        .route("/w/{slug}/messages.csv", web::get().to(export::export))
        .route("/w/{slug}/messages/{id}", web::get().to(handlers::show))
        .route(
            "/w/{slug}/messages/{id}/cancel",
            web::post().to(handlers::cancel),
        )
        .route(
            "/w/{slug}/messages/{id}/retry",
            web::post().to(handlers::retry),
        );
}
