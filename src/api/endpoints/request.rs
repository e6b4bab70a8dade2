//! What `POST /api/v1/messages` takes, and the checks that need no database.

use serde::{Deserialize, Serialize};

use super::*;
use crate::error::AppError;
use crate::error::FieldProblem;
use crate::messages::compose::{Compose, address_of};
use crate::providers::model::ProviderId;

/// The provider to send through: its id, or its name.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ProviderRef {
    /// Id.
    Id(i64),
    /// Name.
    Name(String),
}

/// A contact id as the caller's system knows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ContactId {
    /// Numeric.
    Number(i64),
    /// Text.
    Text(String),
}

/// `POST /api/v1/messages`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// To recipients (1–50), one address per entry as people write it
    /// (`ann@example.com`, `Ann Lee <ann@example.com>`, `"Lee, Ann" <ann@example.com>`).
    /// Every address of `to`, `cc` and `bcc` gets one copy (one message each); every copy
    /// carries the To and Cc headers.
    pub to: Vec<String>,
    /// CC, one address per entry.
    #[serde(default)]
    pub cc: Vec<String>,
    /// BCC, one address per entry: never in a header.
    #[serde(default)]
    pub bcc: Vec<String>,
    /// Reply-To: one address.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Subject (the workspace's site name is put in front).
    pub subject: String,
    /// From: the address of one of the workspace's ready senders; without it, the key's
    /// default sender.
    #[serde(default)]
    pub from: Option<String>,
    /// The sender's provider, by id or name (optional: a sender sends through its own);
    /// or, instead, `smtp`.
    #[serde(default)]
    pub provider: Option<ProviderRef>,
    /// This call's own SMTP server instead of a provider (only when the workspace turned
    /// per-request SMTP on; always under the egress policy).
    #[serde(default)]
    pub smtp: Option<SmtpOverride>,
    /// Text body.
    #[serde(default)]
    pub text: Option<String>,
    /// HTML body.
    #[serde(default)]
    pub html: Option<String>,
    /// Ids of files uploaded with `POST /api/v1/files`, attached to every message.
    #[serde(default)]
    pub attachments: Vec<i64>,
    /// Id of an earlier message of the workspace this one answers.
    #[serde(default)]
    pub in_reply_to: Option<i64>,
    /// The caller's contact ids (stored).
    #[serde(default)]
    pub contact_ids: Vec<ContactId>,
    /// The member the messages are sent for (default: the key's creator).
    #[serde(default)]
    pub owner: Option<i64>,
    /// Retries after temporary failures (0–10; default from the settings).
    #[serde(default)]
    pub retry_count: Option<i32>,
    /// When to send, RFC 3339 (e.g. `2026-12-01T09:30:00Z`).
    #[serde(default)]
    pub send_at: Option<String>,
    /// Store without sending until released.
    #[serde(default)]
    pub hold: bool,
}

/// SMTP settings brought by one API call.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpOverride {
    /// Host name or address.
    pub server: String,
    /// Port (e.g. 587, 465, 25).
    pub port: u16,
    /// `starttls` (default), `tls` (implicit) or `none`.
    #[serde(default)]
    pub tls: Option<String>,
    /// User name for AUTH (none: no AUTH).
    #[serde(default)]
    pub user: Option<String>,
    /// Password for AUTH; stored sealed, never shown.
    #[serde(default)]
    pub password: Option<String>,
}

/// Most To recipients of one API call.
const MAX_TO: usize = 50;

/// Checks every field that needs no database; collects every problem.
pub(super) fn validate(request: &SendRequest, default_retries: i32) -> Result<Compose, AppError> {
    let mut problems = Vec::new();
    let mut problem = |field: String, detail: String| problems.push(FieldProblem { field, detail });
    let mut addresses = |field: &str, list: &[String], required: bool, max: usize| {
        if required && list.is_empty() {
            problem(field.into(), format!("Give at least one {field} address."));
        }
        if list.len() > max {
            problem(field.into(), format!("At most {max} {field} addresses."));
        }
        let mut parsed: Vec<String> = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            // One address per entry, as people write it (`"Lee, Ann" <ann@x.test>` is one);
            // the whole entry must be that one address, so nothing more rides along.
            match crate::messages::compose::parse_mailbox(entry) {
                Ok(mailbox) => {
                    let address = address_of(&mailbox).to_lowercase();
                    if !parsed
                        .iter()
                        .any(|m| address_of(m).to_lowercase() == address)
                    {
                        parsed.push(mailbox);
                    }
                }
                Err(why) => problem(
                    format!("{field}[{i}]"),
                    format!("{why} One address per entry."),
                ),
            }
        }
        parsed
    };
    let to = addresses("to", &request.to, true, MAX_TO);
    let cc = addresses(
        "cc",
        &request.cc,
        false,
        crate::messages::compose::MAX_COPIES,
    );
    let bcc = addresses(
        "bcc",
        &request.bcc,
        false,
        crate::messages::compose::MAX_COPIES,
    );
    // The console's rules, shared (`messages::compose`).
    let subject = crate::messages::compose::parse_subject(&request.subject)
        .map_err(|why| problem("subject".into(), why))
        .ok();
    if let Some(from) = &request.from
        && from.chars().any(char::is_control)
    {
        problem(
            "from".into(),
            "From cannot contain line breaks or control characters.".into(),
        );
    }
    if let Some(ProviderRef::Name(name)) = &request.provider
        && name.chars().any(char::is_control)
    {
        problem(
            "provider".into(),
            "A provider name has no line breaks.".into(),
        );
    }
    if request.provider.is_some() && request.smtp.is_some() {
        problem(
            "smtp".into(),
            "Give either a provider or `smtp` settings, not both.".into(),
        );
    }
    if let Some(smtp) = &request.smtp {
        let server = smtp.server.trim();
        if server.is_empty()
            || server.len() > 253
            || server.contains(|c: char| c.is_control() || c.is_whitespace())
        {
            problem("smtp.server".into(), "A host name or address.".into());
        }
        if smtp.port == 0 {
            problem("smtp.port".into(), "From 1 to 65535.".into());
        }
        if smtp
            .tls
            .as_deref()
            .is_some_and(|t| crate::providers::model::TlsMode::parse(t).is_none())
        {
            problem("smtp.tls".into(), "One of starttls, tls or none.".into());
        }
        for (field, value) in [("smtp.user", &smtp.user), ("smtp.password", &smtp.password)] {
            if value
                .as_deref()
                .is_some_and(|v| v.chars().any(char::is_control) || v.len() > 500)
            {
                problem(
                    field.into(),
                    "At most 500 characters, no line breaks.".into(),
                );
            }
        }
        match request.from.as_deref().map(str::trim) {
            None | Some("") => problem(
                "from".into(),
                "With `smtp` settings, give the From address.".into(),
            ),
            Some(from) if from.parse::<lettre::Address>().is_err() => problem(
                "from".into(),
                format!("{from:?} is not an email address like name@example.com."),
            ),
            Some(_) => {}
        }
    }
    let bodies = crate::messages::compose::Bodies::parse(
        request.text.as_deref().unwrap_or_default(),
        request.html.as_deref().unwrap_or_default(),
    )
    .map_err(|wrong| {
        for (field, why) in wrong {
            problem(field.into(), why);
        }
    })
    .ok();
    let retry_count =
        crate::messages::compose::retries(request.retry_count.unwrap_or(default_retries))
            .map_err(|why| problem("retry_count".into(), why))
            .ok();
    let send_at = rfc3339(request.send_at.as_deref())
        .and_then(|at| at.map(crate::messages::compose::within_a_year).transpose())
        .unwrap_or_else(|why| {
            problem("send_at".into(), why);
            None
        });
    if request.contact_ids.len() > 1_000 {
        problem("contact_ids".into(), "At most 1,000 contact ids.".into());
    }
    let reply_to = match request.reply_to.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(entry) => match crate::messages::compose::parse_mailbox(entry) {
            Ok(mailbox) => Some(mailbox),
            Err(why) => {
                problem("reply_to".into(), why);
                None
            }
        },
    };
    for (i, id) in request.contact_ids.iter().enumerate() {
        if let ContactId::Text(text) = id
            && (text.is_empty() || text.len() > 100 || text.chars().any(char::is_control))
        {
            problem(
                format!("contact_ids[{i}]"),
                "A contact id is a number or 1–100 characters without line breaks.".into(),
            );
        }
    }
    let (Some(subject), Some(bodies), Some(retry_count)) = (subject, bodies, retry_count) else {
        return Err(AppError::Fields(problems));
    };
    if !problems.is_empty() {
        return Err(AppError::Fields(problems));
    }
    Ok(Compose {
        provider: ProviderId(0),
        sender: None,
        to,
        cc,
        bcc,
        subject,
        text: bodies.text,
        html: bodies.html,
        send_at,
        retry_count,
        files: Vec::new(),
        reply_to,
    })
}
