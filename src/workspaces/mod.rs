//! Workspaces: overview, members and roles, settings.

pub mod extract;
pub mod handlers;
pub mod model;
pub mod operator;
pub mod queries;
pub mod service;
pub mod views;

use actix_web::web;

/// Routes of the workspaces slice.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/w/{slug}", web::get().to(handlers::overview))
        .route("/w/{slug}/", web::get().to(handlers::overview))
        .route("/w/{slug}/members", web::get().to(handlers::members))
        .route("/w/{slug}/members", web::post().to(handlers::add_member))
        .route(
            "/w/{slug}/members/{user_id}/role",
            web::post().to(handlers::change_role),
        )
        .route(
            "/w/{slug}/members/{user_id}/remove",
            web::post().to(handlers::remove_member),
        )
        .route(
            "/w/{slug}/members/{user_id}/disable",
            web::post().to(handlers::disable_account),
        )
        .route(
            "/w/{slug}/members/{user_id}/enable",
            web::post().to(handlers::enable_account),
        )
        .route(
            "/w/{slug}/members/{user_id}/reset-link",
            web::post().to(handlers::reset_link),
        )
        .route("/w/{slug}/settings", web::get().to(handlers::settings_form))
        .route("/w/{slug}/settings", web::post().to(handlers::settings));
}
