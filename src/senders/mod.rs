//! Senders (issue 17, seed 001 "Set up the sender"): the names and addresses a workspace
//! sends from, each through one of its providers; proven by a one-time code mailed to the
//! address, ready once its domain is authenticated (or it is its provider's own account).

pub mod code;
pub mod handlers;
pub mod model;
pub mod queries;
pub mod service;
pub mod views;

use actix_web::web;

/// Routes of the senders slice.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/w/{slug}/senders", web::get().to(handlers::index))
        .route("/w/{slug}/senders", web::post().to(handlers::create))
        .route("/w/{slug}/senders/{id}", web::get().to(handlers::show))
        .route(
            "/w/{slug}/senders/{id}/code",
            web::post().to(handlers::send_code),
        )
        .route(
            "/w/{slug}/senders/{id}/verify",
            web::post().to(handlers::verify),
        )
        .route(
            "/w/{slug}/senders/{id}/delete",
            web::post().to(handlers::delete),
        );
}
