//! Providers: rows, kinds with their presets, and the parsed form.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Deserialize;

use crate::accounts::model::EmailAddress;
use crate::db::schema::providers;
pub use crate::ids::ProviderId;
use crate::web::forms::FieldErrors;
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

/// The provider form as submitted (every field a string, so a wrong one gets a message
/// next to it instead of a 400 for the whole form). Its `Debug` never shows the password.
#[derive(Default, Clone, Deserialize)]
#[serde(default)]
pub struct ProviderForm {
    /// Name.
    pub name: String,
    /// Kind (fixed after creation).
    pub kind: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: String,
    /// TLS mode.
    pub tls: String,
    /// SES region.
    pub region: String,
    /// Username.
    pub username: String,
    /// New password (blank: keep the stored one).
    pub password: String,
    /// Account address.
    pub account_address: String,
    /// From name.
    pub from_name: String,
    /// Connections.
    pub max_connections: String,
    /// Per second.
    pub per_second: String,
    /// Per minute.
    pub per_minute: String,
    /// Per hour.
    pub per_hour: String,
    /// Checkbox: "on" when ticked.
    pub receive_enabled: String,
    /// IMAP host.
    pub imap_host: String,
    /// IMAP port.
    pub imap_port: String,
}

impl std::fmt::Debug for ProviderForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderForm")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"***")
            .finish_non_exhaustive()
    }
}

impl ProviderForm {
    /// The form filled from a stored provider (the password is never filled in).
    pub fn from_provider(p: &Provider) -> Self {
        let opt = |v: Option<i32>| v.map(|n| n.to_string()).unwrap_or_default();
        Self {
            name: p.name.clone(),
            kind: p.kind.clone(),
            host: p.host.clone(),
            port: p.port.to_string(),
            tls: p.tls.clone(),
            region: p.region.clone().unwrap_or_default(),
            username: p.username.clone(),
            password: String::new(),
            account_address: p.account_address.clone(),
            from_name: p.from_name.clone(),
            max_connections: p.max_connections.to_string(),
            per_second: opt(p.per_second),
            per_minute: opt(p.per_minute),
            per_hour: opt(p.per_hour),
            receive_enabled: if p.receive_enabled {
                "on".into()
            } else {
                String::new()
            },
            imap_host: p.imap_host.clone().unwrap_or_default(),
            imap_port: opt(p.imap_port),
        }
    }

    /// A blank form for a new provider of `kind`, with the preset filled in.
    pub fn new_of(kind: Kind) -> Self {
        let (host, port, tls) =
            kind.preset(None)
                .unwrap_or((String::new(), 587, TlsMode::StartTls));
        Self {
            kind: kind.as_str().into(),
            host,
            port: port.to_string(),
            tls: tls.as_str().into(),
            region: if kind == Kind::Ses {
                "us-east-1".into()
            } else {
                String::new()
            },
            max_connections: "4".into(),
            imap_port: "993".into(),
            ..Self::default()
        }
    }

    /// The kind the form is for.
    pub fn kind(&self) -> Kind {
        Kind::parse(&self.kind).unwrap_or(Kind::Smtp)
    }

    /// Whether the receive box is ticked.
    pub fn receives(&self) -> bool {
        self.receive_enabled == "on"
    }

    /// Parses every field; each wrong one gets its message in `errors`.
    pub fn parse(&self, errors: &mut FieldErrors) -> Option<Settings> {
        let kind = Kind::parse(&self.kind);
        if kind.is_none() {
            errors.add("kind", "Choose SMTP, Gmail, Amazon SES or Outlook.");
        }
        let name = errors.check("name", one_line(&self.name, "a name", true, 100));
        let region = match kind {
            Some(Kind::Ses) => errors.check(
                "region",
                SES_REGIONS
                    .contains(&self.region.trim())
                    .then(|| Some(self.region.trim().to_owned()))
                    .ok_or_else(|| "Choose the region of your SES account.".to_string()),
            ),
            _ => Some(None),
        };
        let (host, port, tls) =
            match kind.and_then(|k| k.preset(region.clone().flatten().as_deref())) {
                Some((host, port, tls)) => (Some(host), Some(port), Some(tls)),
                None => (
                    errors.check("host", parse_host(&self.host, "the SMTP server")),
                    errors.check("port", parse_port(&self.port)),
                    errors.check(
                        "tls",
                        TlsMode::parse(self.tls.trim())
                            .ok_or_else(|| "Choose STARTTLS, implicit TLS or none.".to_string()),
                    ),
                ),
            };
        let username = errors.check(
            "username",
            one_line(&self.username, "a username", false, 320),
        );
        let account_address = errors.check(
            "account_address",
            EmailAddress::parse(&self.account_address).map(|a| a.as_str().to_owned()),
        );
        let from_name = errors.check(
            "from_name",
            one_line(&self.from_name, "a from name", false, 100),
        );
        let max_connections = errors.check(
            "max_connections",
            parse_number(&self.max_connections, 1, 100, true).map(|n| n.unwrap_or(4)),
        );
        let per_second = errors.check(
            "per_second",
            parse_number(&self.per_second, 1, 100_000, false),
        );
        let per_minute = errors.check(
            "per_minute",
            parse_number(&self.per_minute, 1, 10_000_000, false),
        );
        let per_hour = errors.check(
            "per_hour",
            parse_number(&self.per_hour, 1, 100_000_000, false),
        );
        let receive_enabled = self.receives();
        let (imap_host, imap_port) = if receive_enabled {
            (
                errors.check(
                    "imap_host",
                    parse_host(&self.imap_host, "the IMAP server").map(Some),
                ),
                errors.check(
                    "imap_port",
                    parse_port(&self.imap_port).map(|p| Some(i32::from(p))),
                ),
            )
        } else {
            (Some(None), Some(None))
        };
        if self.password.chars().any(|c| c == '\r' || c == '\n') {
            errors.add("password", "A password cannot contain line breaks.");
        }
        if self.password.len() > 1024 {
            errors.add("password", "A password has at most 1024 characters.");
        }
        if !errors.is_empty() {
            return None;
        }
        Some(Settings {
            name: name?,
            kind: kind?,
            host: host?,
            port: port?,
            tls: tls?,
            region: region?,
            username: username?,
            account_address: account_address?,
            from_name: from_name?,
            max_connections: max_connections?,
            per_second: per_second?,
            per_minute: per_minute?,
            per_hour: per_hour?,
            receive_enabled,
            imap_host: imap_host?,
            imap_port: imap_port?,
        })
    }
}

/// One line of text: no CR, LF or other control characters (they would inject headers or
/// SMTP commands).
fn one_line(input: &str, what: &str, required: bool, max: usize) -> Result<String, String> {
    let value = input.trim();
    if required && value.is_empty() {
        return Err(format!("Enter {what}."));
    }
    if value.chars().any(char::is_control) {
        return Err("Line breaks and control characters are not allowed here.".into());
    }
    if value.chars().count() > max {
        return Err(format!("At most {max} characters."));
    }
    Ok(value.to_owned())
}

/// A host name or IP address.
fn parse_host(input: &str, what: &str) -> Result<String, String> {
    let value = input.trim().trim_end_matches('.').to_lowercase();
    if value.is_empty() {
        return Err(format!("Enter {what}'s host name, e.g. smtp.example.com."));
    }
    if value.parse::<std::net::IpAddr>().is_ok() {
        return Ok(value);
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if value.len() > 253 || !value.split('.').all(label_ok) {
        return Err(format!(
            "{:?} is not a host name like smtp.example.com.",
            input.trim()
        ));
    }
    Ok(value)
}

fn parse_port(input: &str) -> Result<u16, String> {
    match input.trim().parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err("A port is a number from 1 to 65535.".into()),
    }
}

fn parse_number(input: &str, min: i32, max: i32, required: bool) -> Result<Option<i32>, String> {
    let value = input.trim();
    if value.is_empty() {
        return if required {
            Err(format!("Enter a number from {min} to {max}."))
        } else {
            Ok(None)
        };
    }
    match value.parse::<i32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "Enter a whole number from {min} to {max}{}.",
            if required {
                ""
            } else {
                ", or leave it empty for no limit"
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(kind: &str) -> ProviderForm {
        ProviderForm {
            name: "Main".into(),
            account_address: "me@example.com".into(),
            ..ProviderForm::new_of(Kind::parse(kind).expect("kind"))
        }
    }

    #[test]
    fn preset_kinds_use_their_endpoints_whatever_was_typed() {
        let mut errors = FieldErrors::new();
        let gmail = ProviderForm {
            host: "evil.example".into(),
            port: "25".into(),
            ..form("gmail")
        }
        .parse(&mut errors)
        .expect("valid");
        assert_eq!(
            (gmail.host.as_str(), gmail.port, gmail.tls),
            ("smtp.gmail.com", 587, TlsMode::StartTls)
        );
        let outlook = form("outlook").parse(&mut errors).expect("valid");
        assert_eq!(outlook.host, "smtp.office365.com");
        let ses = ProviderForm {
            region: "eu-west-1".into(),
            ..form("ses")
        }
        .parse(&mut errors)
        .expect("valid");
        assert_eq!(ses.host, "email-smtp.eu-west-1.amazonaws.com");
        assert!(errors.is_empty());
        let bad_region = ProviderForm {
            region: "mars-1".into(),
            ..form("ses")
        }
        .parse(&mut errors);
        assert!(bad_region.is_none() && errors.get("region").is_some());
    }
}
