//! Sending domains (issue 17, seed 001 "Set up the sender"): what a workspace publishes in
//! DNS to prove a domain and to have its mail DKIM-signed: the keys and records (`dkim`,
//! `records`), the checks of what DNS says (`dns` asks, `check` judges), and the pages.

pub mod check;
pub mod dkim;
pub mod dns;
pub mod handlers;
pub mod model;
pub mod queries;
pub mod recheck;
pub mod records;
pub mod service;
pub mod sign;
pub mod views;

use actix_web::web;

/// Routes of the domains slice.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/w/{slug}/domains", web::get().to(handlers::index))
        .route("/w/{slug}/domains", web::post().to(handlers::create))
        .route("/w/{slug}/domains/{id}", web::get().to(handlers::show))
        .route(
            "/w/{slug}/domains/{id}/check",
            web::post().to(handlers::check),
        )
        .route(
            "/w/{slug}/domains/{id}/rotate",
            web::post().to(handlers::rotate),
        )
        .route(
            "/w/{slug}/domains/{id}/delete",
            web::post().to(handlers::delete),
        );
}
