//! Pages of the API slice.

use askama::Template;

use super::model::{ApiKey, KeyForm};
use crate::web::forms::FieldErrors;
use crate::web::frame::Frame;

/// `GET /w/{slug}/api-keys`, and the same page right after a key was created.
#[derive(Template)]
#[template(path = "api/keys.html")]
pub struct KeysPage {
    /// Frame.
    pub frame: Frame,
    /// The workspace's keys, newest first.
    pub keys: Vec<ApiKey>,
    /// The workspace's senders (for each key's default sender).
    pub senders: Vec<crate::senders::model::Sender>,
    /// The new-key form.
    pub form: KeyForm,
    /// Its errors.
    pub errors: FieldErrors,
    /// A key just created: shown this once.
    pub created: Option<(ApiKey, String)>,
    /// Whether API calls may bring their own SMTP settings.
    pub per_request_smtp: bool,
    /// The console's address, for the curl example.
    pub base_url: String,
}

/// `GET /w/{slug}/api-reference`: the OpenAPI document, readable.
#[derive(Template)]
#[template(path = "api/reference.html")]
pub struct ReferencePage {
    /// Frame.
    pub frame: Frame,
    /// Every operation.
    pub operations: Vec<super::openapi::Operation>,
}
