//! Pages of the senders slice.

use askama::Template;
use serde::Deserialize;

use crate::providers::model::Provider;
use crate::web::forms::FieldErrors;
use crate::web::frame::Frame;

/// The add-sender form as typed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SenderForm {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Address.
    #[serde(default)]
    pub address: String,
    /// Provider id.
    #[serde(default)]
    pub provider: String,
    /// Reply-To (optional).
    #[serde(default)]
    pub reply_to: String,
}

pub use super::model::SenderRow;

/// `GET /w/{slug}/senders`.
#[derive(Template)]
#[template(path = "senders/index.html")]
pub struct SendersPage {
    /// Frame.
    pub frame: Frame,
    /// Senders by name.
    pub rows: Vec<SenderRow>,
    /// Providers to pick from.
    pub providers: Vec<Provider>,
    /// The add form.
    pub form: SenderForm,
    /// Its errors.
    pub errors: FieldErrors,
}

/// `GET /w/{slug}/senders/{id}`.
#[derive(Template)]
#[template(path = "senders/show.html")]
pub struct SenderPage {
    /// Frame.
    pub frame: Frame,
    /// The sender.
    pub row: SenderRow,
    /// Its messages not yet sent (what deleting it would cancel).
    pub unsent: i64,
    /// Errors of the code form.
    pub errors: FieldErrors,
}
