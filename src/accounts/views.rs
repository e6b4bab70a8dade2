//! Pages of the accounts slice.

use askama::Template;

use crate::web::forms::FieldErrors;
use crate::web::frame::Frame;

/// `GET /login`.
#[derive(Template)]
#[template(path = "auth/login.html")]
pub struct LoginPage {
    /// Frame.
    pub frame: Frame,
    /// Address typed so far.
    pub email: String,
    /// Where to go after signing in.
    pub next: String,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

/// Values of the setup form, kept after an error.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default)]
pub struct SetupForm {
    /// The token from the server log.
    pub setup_token: String,
    /// Admin's name.
    pub name: String,
    /// Admin's address.
    pub email: String,
    /// Admin's password.
    pub password: String,
    /// First workspace's name.
    pub workspace_name: String,
    /// Its URL name.
    pub slug: String,
    /// Its subject prefix.
    pub site_name: String,
}

/// `GET /setup`.
#[derive(Template)]
#[template(path = "auth/setup.html")]
pub struct SetupPage {
    /// Frame.
    pub frame: Frame,
    /// Values (the password and token are never echoed back).
    pub form: SetupForm,
    /// Errors by field.
    pub errors: FieldErrors,
}

/// `GET /password/set`.
#[derive(Template)]
#[template(path = "auth/set_password.html")]
pub struct SetPasswordPage {
    /// Frame.
    pub frame: Frame,
    /// The one-time token (hidden field).
    pub token: String,
    /// Whose password it sets; `None` when the link is dead.
    pub email: Option<String>,
    /// Errors by field.
    pub errors: FieldErrors,
}

/// `GET /account`.
#[derive(Template)]
#[template(path = "auth/account.html")]
pub struct AccountPage {
    /// Frame.
    pub frame: Frame,
    /// The user's address.
    pub email: String,
    /// The user's workspaces: (slug, name, role label).
    pub workspaces: Vec<(String, String, &'static str)>,
    /// Errors of the password form.
    pub errors: FieldErrors,
}
