//! The provider form: every field as typed, parsed into `Settings` with a message next
//! to each wrong field.

use serde::Deserialize;

use super::model::*;
use crate::accounts::model::EmailAddress;
use crate::web::forms::FieldErrors;

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
