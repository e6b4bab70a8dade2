//! Providers (admins): SMTP, Gmail, Amazon SES and Outlook accounts the workspace sends
//! through, with sealed passwords, an egress policy, and verification.

pub mod egress;
pub mod form;
pub mod handlers;
pub mod model;
pub mod queries;
pub mod service;
pub mod smtp;
pub mod views;

use actix_web::web;

/// Routes of the providers slice.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/w/{slug}/providers", web::get().to(handlers::index))
        .route("/w/{slug}/providers", web::post().to(handlers::create))
        .route("/w/{slug}/providers/new", web::get().to(handlers::new_form))
        .route(
            "/w/{slug}/providers/{id}",
            web::get().to(handlers::edit_form),
        )
        .route("/w/{slug}/providers/{id}", web::post().to(handlers::update))
        .route(
            "/w/{slug}/providers/{id}/check",
            web::post().to(handlers::check),
        )
        .route(
            "/w/{slug}/providers/{id}/delete",
            web::post().to(handlers::delete),
        );
}
