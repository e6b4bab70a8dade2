//! Providers: rows, kinds with their presets (the form they are parsed from: `form`).

use chrono::NaiveDateTime;
use diesel::prelude::*;

pub use super::form::ProviderForm;
use crate::db::schema::providers;
pub use crate::ids::ProviderId;
use crate::workspaces::model::WorkspaceId;

/// What kind of service a provider is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any SMTP server.
    Smtp,
    /// Gmail / Google Workspace with an app password.
    Gmail,
    /// Amazon SES with SMTP credentials.
    Ses,
    /// Outlook / Microsoft 365.
    Outlook,
}

/// Amazon SES regions with an SMTP endpoint (`email-smtp.<region>.amazonaws.com`).
pub const SES_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "sa-east-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "il-central-1",
    "me-south-1",
    "me-central-1",
    "af-south-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
];

impl Kind {
    /// Every kind, in menu order.
    pub const ALL: [Kind; 4] = [Kind::Smtp, Kind::Gmail, Kind::Ses, Kind::Outlook];

    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Smtp => "smtp",
            Kind::Gmail => "gmail",
            Kind::Ses => "ses",
            Kind::Outlook => "outlook",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == value)
    }

    /// Label for people.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Smtp => "SMTP",
            Kind::Gmail => "Gmail",
            Kind::Ses => "Amazon SES",
            Kind::Outlook => "Outlook / Microsoft 365",
        }
    }

    /// The fixed endpoint of a preset kind (`None` for SMTP, whose server is typed in).
    /// SES's host depends on the region.
    pub fn preset(self, region: Option<&str>) -> Option<(String, u16, TlsMode)> {
        match self {
            Kind::Smtp => None,
            Kind::Gmail => Some(("smtp.gmail.com".into(), 587, TlsMode::StartTls)),
            Kind::Outlook => Some(("smtp.office365.com".into(), 587, TlsMode::StartTls)),
            Kind::Ses => Some((
                format!("email-smtp.{}.amazonaws.com", region.unwrap_or("us-east-1")),
                587,
                TlsMode::StartTls,
            )),
        }
    }

    /// What the password field holds for this kind.
    pub fn secret_label(self) -> &'static str {
        match self {
            Kind::Smtp => "Password",
            Kind::Gmail => "App password",
            Kind::Ses => "SMTP password",
            Kind::Outlook => "Password",
        }
    }

    /// What the username field holds for this kind.
    pub fn username_label(self) -> &'static str {
        match self {
            Kind::Ses => "SMTP username",
            Kind::Gmail | Kind::Outlook => "Account (sign-in address)",
            Kind::Smtp => "Username",
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text (only for relays on a trusted network).
    None,
    /// Plain connect, then STARTTLS (RFC 3207), usually port 587.
    StartTls,
    /// TLS from the first byte (RFC 8314), usually port 465.
    Tls,
}

impl TlsMode {
    /// Every mode.
    pub const ALL: [TlsMode; 3] = [TlsMode::StartTls, TlsMode::Tls, TlsMode::None];

    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::StartTls => "starttls",
            TlsMode::Tls => "tls",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<TlsMode> {
        TlsMode::ALL.into_iter().find(|m| m.as_str() == value)
    }

    /// Label for people.
    pub fn label(self) -> &'static str {
        match self {
            TlsMode::None => "None (plain text)",
            TlsMode::StartTls => "STARTTLS",
            TlsMode::Tls => "Implicit TLS",
        }
    }
}

/// Whether a provider can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Saved, never checked (or changed since).
    Unchecked,
    /// The last check connected and authenticated: it can send.
    Active,
    /// The last check or send failed; `status_detail` says how.
    Error,
}

impl Status {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unchecked => "unchecked",
            Status::Active => "active",
            Status::Error => "error",
        }
    }
}

/// A stored provider.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = providers)]
pub struct Provider {
    /// Id.
    pub id: ProviderId,
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// Name, unique in the workspace.
    pub name: String,
    /// Stored kind.
    pub kind: String,
    /// SMTP host.
    pub host: String,
    /// SMTP port.
    pub port: i32,
    /// Stored TLS mode.
    pub tls: String,
    /// SES region.
    pub region: Option<String>,
    /// SMTP username (empty: no AUTH).
    pub username: String,
    /// Sealed password.
    pub secret: Option<String>,
    /// The account's address (the From for now).
    pub account_address: String,
    /// Display name on From.
    pub from_name: String,
    /// Connections at once.
    pub max_connections: i32,
    /// Messages per second at most.
    pub per_second: Option<i32>,
    /// Per minute at most.
    pub per_minute: Option<i32>,
    /// Per hour at most.
    pub per_hour: Option<i32>,
    /// Whether replies are read from the inbox (IMAP).
    pub receive_enabled: bool,
    /// IMAP host.
    pub imap_host: Option<String>,
    /// IMAP port.
    pub imap_port: Option<i32>,
    /// Stored status.
    pub status: String,
    /// The last check's reply, e.g. `535 5.7.8 …`.
    pub status_detail: String,
    /// When last checked.
    pub checked_at: Option<NaiveDateTime>,
    /// Creation time.
    pub created_at: NaiveDateTime,
    /// Last change.
    pub updated_at: NaiveDateTime,
    /// SMTP settings an API call brought (hidden from lists).
    pub per_request: bool,
}

impl Provider {
    /// The kind (constrained by a CHECK).
    pub fn kind(&self) -> Kind {
        Kind::parse(&self.kind).unwrap_or(Kind::Smtp)
    }

    /// The TLS mode (constrained by a CHECK).
    pub fn tls(&self) -> TlsMode {
        TlsMode::parse(&self.tls).unwrap_or(TlsMode::StartTls)
    }

    /// Whether the last check passed.
    pub fn is_active(&self) -> bool {
        self.status == Status::Active.as_str()
    }

    /// Whether a password is stored.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// The context a secret is sealed to.
    pub fn seal_context(workspace: WorkspaceId) -> String {
        format!("provider-secret:workspace:{}", workspace.0)
    }
}

/// A provider as typed in the form, parsed: everything but the password, which is handled
/// on its own (kept, replaced, or cleared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: Kind,
    /// Host (from the preset for Gmail/SES/Outlook).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// SES region.
    pub region: Option<String>,
    /// SMTP username.
    pub username: String,
    /// Account address.
    pub account_address: String,
    /// From name.
    pub from_name: String,
    /// Connections at once.
    pub max_connections: i32,
    /// Per-second limit.
    pub per_second: Option<i32>,
    /// Per-minute limit.
    pub per_minute: Option<i32>,
    /// Per-hour limit.
    pub per_hour: Option<i32>,
    /// Receive toggle.
    pub receive_enabled: bool,
    /// IMAP host.
    pub imap_host: Option<String>,
    /// IMAP port.
    pub imap_port: Option<i32>,
}

impl Settings {
    /// Whether a change from `old` to `self` must clear the stored password: it was given
    /// for one server and account, and must not be sent to another.
    pub fn endangers_secret_of(&self, old: &Provider) -> bool {
        self.host != old.host
            || i32::from(self.port) != old.port
            || self.tls.as_str() != old.tls
            || self.username != old.username
            || self.imap_host != old.imap_host
            || self.imap_port != old.imap_port
    }
}

/// A new provider row.
#[derive(Debug, Insertable, AsChangeset)]
#[diesel(table_name = providers)]
pub struct ProviderRow<'a> {
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// Name.
    pub name: &'a str,
    /// Kind.
    pub kind: &'a str,
    /// Host.
    pub host: &'a str,
    /// Port.
    pub port: i32,
    /// TLS mode.
    pub tls: &'a str,
    /// SES region.
    pub region: Option<&'a str>,
    /// Username.
    pub username: &'a str,
    /// Account address.
    pub account_address: &'a str,
    /// From name.
    pub from_name: &'a str,
    /// Connections.
    pub max_connections: i32,
    /// Per second.
    pub per_second: Option<i32>,
    /// Per minute.
    pub per_minute: Option<i32>,
    /// Per hour.
    pub per_hour: Option<i32>,
    /// Receive toggle.
    pub receive_enabled: bool,
    /// IMAP host.
    pub imap_host: Option<&'a str>,
    /// IMAP port.
    pub imap_port: Option<i32>,
    /// Now.
    pub updated_at: NaiveDateTime,
}

impl<'a> ProviderRow<'a> {
    /// The row for these settings.
    pub fn from_settings(workspace_id: WorkspaceId, s: &'a Settings, now: NaiveDateTime) -> Self {
        Self {
            workspace_id,
            name: &s.name,
            kind: s.kind.as_str(),
            host: &s.host,
            port: i32::from(s.port),
            tls: s.tls.as_str(),
            region: s.region.as_deref(),
            username: &s.username,
            account_address: &s.account_address,
            from_name: &s.from_name,
            max_connections: s.max_connections,
            per_second: s.per_second,
            per_minute: s.per_minute,
            per_hour: s.per_hour,
            receive_enabled: s.receive_enabled,
            imap_host: s.imap_host.as_deref(),
            imap_port: s.imap_port,
            updated_at: now,
        }
    }
}
