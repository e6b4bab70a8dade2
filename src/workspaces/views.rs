//! Pages of the workspaces slice.

use askama::Template;

use crate::web::forms::FieldErrors;
use crate::web::frame::Frame;
use crate::workspaces::model::Role;

/// `GET /w/{slug}/`.
#[derive(Template)]
#[template(path = "workspaces/overview.html")]
pub struct OverviewPage {
    /// Frame.
    pub frame: Frame,
    /// Members of the workspace.
    pub member_count: usize,
    /// Admins of the workspace.
    pub admin_count: usize,
    /// The viewer's role.
    pub role: Role,
    /// Site name (subject prefix).
    pub site_name: String,
}

/// A row of the members table.
pub struct MemberRow {
    /// Account id.
    pub user_id: i64,
    /// Address.
    pub email: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// `active`, `invited` or `disabled`.
    pub status: &'static str,
    /// When they joined (UTC).
    pub joined: chrono::NaiveDateTime,
    /// Whether this is the signed-in user.
    pub is_self: bool,
}

/// A one-time set-password link, shown once after it is made.
pub struct OneTimeLink {
    /// For whom.
    pub email: String,
    /// The full URL.
    pub url: String,
    /// What it does, in words.
    pub what: &'static str,
}

/// Values of the add-member form.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default)]
pub struct AddMemberForm {
    /// Address.
    pub email: String,
    /// Role.
    pub role: String,
}

/// `GET /w/{slug}/members`.
#[derive(Template)]
#[template(path = "workspaces/members.html")]
pub struct MembersPage {
    /// Frame.
    pub frame: Frame,
    /// Members by address.
    pub members: Vec<MemberRow>,
    /// Every role, for the selects.
    pub roles: [Role; 4],
    /// The add-member form's values.
    pub form: AddMemberForm,
    /// Its errors.
    pub errors: FieldErrors,
    /// A link made by the last action, shown once.
    pub link: Option<OneTimeLink>,
}

/// `GET /w/{slug}/settings`.
#[derive(Template)]
#[template(path = "workspaces/settings.html")]
pub struct SettingsPage {
    /// Frame.
    pub frame: Frame,
    /// URL name (fixed).
    pub slug: String,
    /// Name.
    pub name: String,
    /// Subject prefix.
    pub site_name: String,
    /// Errors by field.
    pub errors: FieldErrors,
}
