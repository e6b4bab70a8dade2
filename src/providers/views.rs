//! Pages of the providers slice.

use askama::Template;

use super::model::{Kind, Provider, ProviderForm, SES_REGIONS, TlsMode};
use crate::web::forms::FieldErrors;
use crate::web::frame::Frame;

/// `GET /w/{slug}/providers`.
#[derive(Template)]
#[template(path = "providers/index.html")]
pub struct ProvidersPage {
    /// Frame.
    pub frame: Frame,
    /// Providers by name.
    pub providers: Vec<Provider>,
    /// Kinds, for the add buttons.
    pub kinds: [Kind; 4],
}

/// `GET /w/{slug}/providers/new` and `GET /w/{slug}/providers/{id}`.
#[derive(Template)]
#[template(path = "providers/form.html")]
pub struct ProviderPage {
    /// Frame.
    pub frame: Frame,
    /// The stored provider (editing), or `None` (adding).
    pub provider: Option<Provider>,
    /// Values of the form.
    pub form: ProviderForm,
    /// Errors by field.
    pub errors: FieldErrors,
    /// TLS modes.
    pub tls_modes: [TlsMode; 3],
    /// SES regions.
    pub regions: &'static [&'static str],
}

impl ProviderPage {
    /// A page for `form`.
    pub fn new(
        frame: Frame,
        provider: Option<Provider>,
        form: ProviderForm,
        errors: FieldErrors,
    ) -> Self {
        Self {
            frame,
            provider,
            form,
            errors,
            tls_modes: TlsMode::ALL,
            regions: SES_REGIONS,
        }
    }

    /// Where the form posts.
    pub fn action(&self, slug: &str) -> String {
        match &self.provider {
            Some(p) => format!("/w/{slug}/providers/{}", p.id.0),
            None => format!("/w/{slug}/providers"),
        }
    }

    /// The help under the password field.
    pub fn password_help(&self) -> &'static str {
        match &self.provider {
            Some(p) if p.has_secret() => {
                "Stored — leave blank to keep. Changing the server, port, TLS mode or username clears it."
            }
            Some(_) => "Not stored: enter it to sign in to the server.",
            None => "Stored encrypted; never shown again.",
        }
    }
}
