//! The audit log page.

use askama::Template;

use super::model::AuditEntry;
use crate::web::frame::Frame;

/// `GET /w/{slug}/audit`.
#[derive(Template)]
#[template(path = "audit/index.html")]
pub struct AuditPage {
    /// Frame.
    pub frame: Frame,
    /// Entries, newest first.
    pub entries: Vec<AuditEntry>,
    /// Link to newer entries, if any.
    pub newer: Option<String>,
    /// Link to older entries, if any.
    pub older: Option<String>,
}
