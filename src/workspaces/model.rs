//! Workspaces, memberships and roles.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::accounts::model::UserId;
use crate::db::schema::{memberships, workspaces};
pub use crate::ids::WorkspaceId;

/// A workspace: the unit that owns providers, contacts, messages and members.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = workspaces)]
pub struct Workspace {
    /// Id.
    pub id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// URL name: `/w/{slug}/…`.
    pub slug: String,
    /// Prefix of message subjects.
    pub site_name: String,
    /// Creation time.
    pub created_at: NaiveDateTime,
    /// Whether API calls may bring their own SMTP settings.
    pub per_request_smtp: bool,
}

/// A new workspace.
#[derive(Debug, Insertable)]
#[diesel(table_name = workspaces)]
pub struct NewWorkspace<'a> {
    /// Display name.
    pub name: &'a str,
    /// URL name.
    pub slug: &'a str,
    /// Subject prefix.
    pub site_name: &'a str,
    /// Now.
    pub created_at: NaiveDateTime,
}

/// A member's role in a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Providers, senders, domains, members, API keys, settings, audit log.
    Admin,
    /// Contacts, templates, compose, mailings.
    Editor,
    /// Approves or rejects mailings.
    Reviewer,
    /// Reads only.
    Viewer,
}

impl Role {
    /// Every role, strongest first.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Editor, Role::Reviewer, Role::Viewer];

    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Reviewer => "reviewer",
            Role::Viewer => "viewer",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == value)
            .ok_or_else(|| {
                format!("{value:?} is not a role: choose admin, editor, reviewer or viewer.")
            })
    }

    /// Label for people.
    pub fn label(self) -> &'static str {
        match self {
            Role::Admin => "Admin",
            Role::Editor => "Editor",
            Role::Reviewer => "Reviewer",
            Role::Viewer => "Viewer",
        }
    }

    /// What the role may do, in a line.
    pub fn summary(self) -> &'static str {
        match self {
            Role::Admin => "Providers, senders and domains, members, API keys, settings",
            Role::Editor => "Contacts, templates, compose, mailings",
            Role::Reviewer => "Approves or rejects mailings",
            Role::Viewer => "Reads only",
        }
    }

    /// Whether this role composes and sends (editors and admins).
    pub fn can_compose(self) -> bool {
        matches!(self, Role::Admin | Role::Editor)
    }

    /// Whether this role administers the workspace.
    pub fn is_admin(self) -> bool {
        self == Role::Admin
    }
}

/// A membership row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = memberships)]
pub struct Membership {
    /// Row id.
    pub id: i64,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// User.
    pub user_id: UserId,
    /// Stored role.
    pub role: String,
    /// When the user joined.
    pub created_at: NaiveDateTime,
}

impl Membership {
    /// The role (stored values are constrained by a CHECK; unknown ones read as viewer).
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Viewer)
    }
}

/// A new membership.
#[derive(Debug, Insertable)]
#[diesel(table_name = memberships)]
pub struct NewMembership<'a> {
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// User.
    pub user_id: UserId,
    /// Role.
    pub role: &'a str,
    /// Now.
    pub created_at: NaiveDateTime,
}

/// A workspace's URL name: 3–40 of a–z, 0–9 and inner hyphens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    /// Parses what a person typed.
    pub fn parse(input: &str) -> Result<Self, String> {
        let value = input.trim().to_lowercase();
        let ok_chars = value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !(3..=40).contains(&value.len())
            || !ok_chars
            || value.starts_with('-')
            || value.ends_with('-')
        {
            return Err(
                "Use 3 to 40 lower-case letters, digits and hyphens (not at the start or end)."
                    .into(),
            );
        }
        Ok(Self(value))
    }

    /// The slug.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A workspace name or site name: one line, `max` characters at most, required if `required`.
pub fn parse_label(input: &str, what: &str, required: bool, max: usize) -> Result<String, String> {
    let value = input.trim();
    if required && value.is_empty() {
        return Err(format!("Enter a {what}."));
    }
    if value.chars().any(char::is_control) {
        return Err(format!(
            "A {what} cannot contain line breaks or control characters."
        ));
    }
    if value.chars().count() > max {
        return Err(format!("A {what} has at most {max} characters."));
    }
    Ok(value.to_owned())
}
