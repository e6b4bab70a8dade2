//! The page frame every full page renders in: title, CSRF token, flash messages, and the
//! navigation of the current workspace (only the items the role can use).

use actix_session::Session;
use serde::{Deserialize, Serialize};

use super::csrf;

/// How a flash message looks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Something was done.
    Success,
    /// Something needs attention.
    Warning,
    /// Something failed.
    Error,
}

impl Level {
    /// CSS class suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Success => "success",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// A message shown once under the page header, after a redirect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flash {
    /// How it looks.
    pub level: Level,
    /// What happened, in words.
    pub text: String,
}

const FLASH_KEY: &str = "flash";

/// Queues a flash message for the next page this session renders.
pub fn flash(session: &Session, level: Level, text: impl Into<String>) {
    let mut list: Vec<Flash> = session.get(FLASH_KEY).ok().flatten().unwrap_or_default();
    list.push(Flash {
        level,
        text: text.into(),
    });
    let _ = session.insert(FLASH_KEY, list);
}

fn take_flashes(session: &Session) -> Vec<Flash> {
    // `remove` marks the session changed (a database write); only when there is something.
    if !session.contains_key(FLASH_KEY) {
        return Vec::new();
    }
    session
        .remove_as::<Vec<Flash>>(FLASH_KEY)
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// One workspace in the switcher.
#[derive(Debug, Clone)]
pub struct WorkspaceLink {
    /// URL name.
    pub slug: String,
    /// Name.
    pub name: String,
    /// The user's role there.
    pub role: &'static str,
}

/// The workspace navigation.
#[derive(Debug, Clone)]
pub struct Nav {
    /// Current workspace slug.
    pub slug: String,
    /// Current workspace name.
    pub name: String,
    /// The signed-in user's role label.
    pub role: &'static str,
    /// Whether the Setup group is shown.
    pub is_admin: bool,
    /// Whether Compose is shown.
    pub can_compose: bool,
    /// Every workspace of the user, for the switcher.
    pub workspaces: Vec<WorkspaceLink>,
    /// Which item is highlighted.
    pub active: &'static str,
}

impl Nav {
    /// `aria-current` value for an item.
    pub fn current(&self, item: &str) -> &'static str {
        if self.active == item { "page" } else { "false" }
    }
}

/// What `templates/base.html` needs.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Page title.
    pub title: String,
    /// CSRF token for forms and htmx.
    pub csrf: String,
    /// Messages to show once.
    pub flashes: Vec<Flash>,
    /// The signed-in user's address.
    pub user_email: Option<String>,
    /// Workspace navigation, inside a workspace.
    pub nav: Option<Nav>,
}

impl Frame {
    /// A page outside any workspace (sign-in, setup, account).
    pub fn new(session: &Session, title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            csrf: csrf::token(session),
            flashes: take_flashes(session),
            user_email: None,
            nav: None,
        }
    }

    /// A page outside a workspace for a signed-in user.
    pub fn signed_in(session: &Session, title: impl Into<String>, email: &str) -> Self {
        Self {
            user_email: Some(email.to_owned()),
            ..Self::new(session, title)
        }
    }

    /// A page of a workspace, with its navigation, for its signed-in user.
    pub fn workspace(session: &Session, nav: Nav, title: impl Into<String>, email: &str) -> Self {
        Self {
            nav: Some(nav),
            ..Self::signed_in(session, title, email)
        }
    }

    /// An error page: no session work at all.
    pub fn bare(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            csrf: String::new(),
            flashes: Vec::new(),
            user_email: None,
            nav: None,
        }
    }

    /// The versioned URL of a static file.
    pub fn asset(&self, name: &str) -> String {
        super::assets::url(name)
    }

    /// The `hx-headers` attribute value that makes htmx send the CSRF token.
    pub fn hx_headers(&self) -> String {
        serde_json::json!({ csrf::HEADER: self.csrf }).to_string()
    }
}
