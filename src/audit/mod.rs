//! The audit log: who did what, when, from where. Admins read it per workspace.

pub mod handlers;
pub mod model;
pub mod queries;
pub mod service;
pub mod views;

pub use service::{entry, record};

use actix_web::web;

/// Routes of the audit slice.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/w/{slug}/audit", web::get().to(handlers::index));
}
