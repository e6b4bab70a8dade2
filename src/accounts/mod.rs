//! Accounts: first-run setup, sign-in with throttling, sign-out, one-time set-password
//! links, changing one's password, and server-side sessions.

pub mod extract;
pub mod gate;
pub mod handlers;
pub mod model;
pub mod queries;
pub mod service;
pub mod session_store;
pub mod views;

use actix_web::web;

/// Routes of the accounts slice.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(handlers::home))
        .route("/login", web::get().to(handlers::login_form))
        .route("/login", web::post().to(handlers::login))
        .route("/logout", web::post().to(handlers::logout))
        .route("/setup", web::get().to(handlers::setup_form))
        .route("/setup", web::post().to(handlers::setup))
        .route("/password/set", web::get().to(handlers::set_password_form))
        .route("/password/set", web::post().to(handlers::set_password))
        .route("/account", web::get().to(handlers::account))
        .route(
            "/account/password",
            web::post().to(handlers::change_password),
        );
}
