//! The compose form and what the console and the API share of it: addresses as people
//! write them, file names safe for a header, texts nothing can carry.

use chrono::NaiveDateTime;
use serde::Deserialize;

use crate::providers::model::ProviderId;

/// The compose form as submitted.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct ComposeForm {
    /// Sender id (one of the workspace's ready senders).
    pub sender: String,
    /// To: addresses separated by commas, semicolons or new lines.
    pub to: String,
    /// CC.
    pub cc: String,
    /// BCC.
    pub bcc: String,
    /// Reply-To (optional).
    pub reply_to: String,
    /// Subject (the site name is put in front).
    pub subject: String,
    /// Text body.
    pub text: String,
    /// HTML body (optional).
    pub html: String,
    /// `YYYY-MM-DDTHH:MM` in UTC, empty for now.
    pub send_at: String,
    /// Retries after a temporary failure.
    pub retry_count: String,
}

/// The compose form as uploaded (`multipart/form-data`, for the files).
#[derive(actix_multipart::form::MultipartForm)]
pub struct ComposeUpload {
    sender: Option<Text<String>>,
    to: Option<Text<String>>,
    cc: Option<Text<String>>,
    bcc: Option<Text<String>>,
    reply_to: Option<Text<String>>,
    subject: Option<Text<String>>,
    text: Option<Text<String>>,
    html: Option<Text<String>>,
    send_at: Option<Text<String>>,
    retry_count: Option<Text<String>>,
    attachments: Vec<actix_multipart::form::bytes::Bytes>,
}

type Text<T> = actix_multipart::form::text::Text<T>;

/// A file as uploaded: (name, MIME type, bytes).
pub type Upload = (String, String, Vec<u8>);

impl ComposeUpload {
    /// The text fields as a form, and the files that were chosen (browsers send an empty
    /// part when none was).
    pub fn split(self) -> (ComposeForm, Vec<Upload>) {
        let text = |t: Option<Text<String>>| t.map(|t| t.into_inner()).unwrap_or_default();
        let files = self
            .attachments
            .into_iter()
            .filter(|f| !f.data.is_empty() || f.file_name.as_deref().is_some_and(|n| !n.is_empty()))
            .map(|f| {
                let name = file_name(f.file_name.as_deref().unwrap_or_default());
                let kind = f
                    .content_type
                    .map(|m| m.essence_str().to_owned())
                    .filter(|m| m != "application/octet-stream")
                    .unwrap_or_else(|| {
                        mime_guess::from_path(&name)
                            .first_or_octet_stream()
                            .essence_str()
                            .to_owned()
                    });
                (name, kind, f.data.to_vec())
            })
            .collect();
        let form = ComposeForm {
            sender: text(self.sender),
            to: text(self.to),
            cc: text(self.cc),
            bcc: text(self.bcc),
            reply_to: text(self.reply_to),
            subject: text(self.subject),
            text: text(self.text),
            html: text(self.html),
            send_at: text(self.send_at),
            retry_count: text(self.retry_count),
        };
        (form, files)
    }
}

/// An uploaded file's name, made safe for a MIME header: the last path segment, no control
/// characters or quotes, at most 200 characters.
pub fn file_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = base
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .take(200)
        .collect();
    let clean = clean.trim().to_owned();
    if clean.is_empty() {
        "attachment".into()
    } else {
        clean
    }
}

/// A parsed compose form.
#[derive(Debug, Clone)]
pub struct Compose {
    /// Provider.
    pub provider: ProviderId,
    /// The sender the console picked (the API names its sender by address).
    pub sender: Option<crate::ids::SenderId>,
    /// To recipients: one message each.
    pub to: Vec<String>,
    /// CC (on every message).
    pub cc: Vec<String>,
    /// BCC (on every message's envelope).
    pub bcc: Vec<String>,
    /// Subject as typed.
    pub subject: String,
    /// Text body, CRLF.
    pub text: String,
    /// HTML body, CRLF.
    pub html: Option<String>,
    /// When to send (None: now).
    pub send_at: Option<NaiveDateTime>,
    /// Retries.
    pub retry_count: i32,
    /// Files to attach: (name, MIME type, bytes).
    pub files: Vec<(String, String, Vec<u8>)>,
    /// Reply-To, if any.
    pub reply_to: Option<String>,
}

/// The address of a list entry as written: `Ann <ann@example.com>` or `ann@example.com`.
pub fn address_of(entry: &str) -> &str {
    match (entry.rfind('<'), entry.rfind('>')) {
        (Some(open), Some(close)) if open < close => entry[open + 1..close].trim(),
        _ => entry.trim(),
    }
}

/// Most To recipients one compose takes.
pub const MAX_TO: usize = 100;

/// Most CC or BCC recipients.
pub const MAX_COPIES: usize = 50;

/// Parses one address as people write it (RFC 5322 `mailbox`): `ann@example.com`,
/// `Ann Lee <ann@example.com>` or `"Lee, Ann" <ann@example.com>`. The display name
/// travels into the header. Returns it as it will be written (names quoted where they must
/// be). Line breaks and other control characters are refused: they would start a header.
pub fn parse_mailbox(entry: &str) -> Result<String, String> {
    let entry = entry.trim();
    let wrong = || {
        format!(
            "{entry:?} is not an email address like name@example.com or Ann Lee <ann@example.com>."
        )
    };
    if entry.chars().any(char::is_control) {
        return Err(format!(
            "{entry:?} holds a line break or another control character."
        ));
    }
    let mailbox: lettre::message::Mailbox = entry.parse().map_err(|_| wrong())?;
    // The parser stops at the end of the first mailbox: the whole entry must be it.
    let whole = match entry.find('<') {
        Some(_) => entry.ends_with('>'),
        None => entry.eq_ignore_ascii_case(mailbox.email.as_ref()),
    };
    if !whole {
        return Err(wrong());
    }
    Ok(mailbox.to_string())
}

/// Splits a list of addresses at commas, semicolons and line breaks, except inside a
/// quoted name or angle brackets (`"Lee, Ann" <ann@example.com>` is one entry).
pub fn split_addresses(input: &str) -> Vec<&str> {
    let (mut entries, mut start) = (Vec::new(), 0);
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    for (i, c) in input.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' | ';' | '\n' | '\r' if !quoted && !angle => {
                entries.push(&input[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    entries.push(&input[start..]);
    entries
        .into_iter()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect()
}

/// Parses a list of addresses (see [`parse_mailbox`]); an address listed twice is kept
/// once.
pub fn parse_addresses(
    input: &str,
    field: &str,
    max: usize,
    required: bool,
) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for part in split_addresses(input) {
        let mailbox = parse_mailbox(part)?;
        let address = address_of(&mailbox).to_lowercase();
        if !out.iter().any(|m| address_of(m).to_lowercase() == address) {
            out.push(mailbox);
        }
    }
    if required && out.is_empty() {
        return Err(format!("Enter at least one {field} address."));
    }
    if out.len() > max {
        return Err(format!("At most {max} {field} addresses at once."));
    }
    Ok(out)
}

impl ComposeForm {
    /// Parses every field; `default_retries` fills an empty retry count.
    pub fn parse(
        &self,
        errors: &mut crate::web::forms::FieldErrors,
        default_retries: i32,
    ) -> Option<Compose> {
        let sender = errors.check(
            "sender",
            self.sender
                .trim()
                .parse::<i64>()
                .map(crate::ids::SenderId)
                .map_err(|_| "Choose a sender.".to_string()),
        );
        let to = errors.check("to", parse_addresses(&self.to, "To", MAX_TO, true));
        let cc = errors.check("cc", parse_addresses(&self.cc, "CC", MAX_COPIES, false));
        let bcc = errors.check("bcc", parse_addresses(&self.bcc, "BCC", MAX_COPIES, false));
        let reply_to = errors.check(
            "reply_to",
            match self.reply_to.trim() {
                "" => Ok(None),
                entry => parse_mailbox(entry).map(Some),
            },
        );
        let subject = errors.check("subject", parse_subject(&self.subject));
        let bodies = match Bodies::parse(&self.text, &self.html) {
            Ok(bodies) => Some(bodies),
            Err(problems) => {
                for (field, why) in problems {
                    errors.add(field, why);
                }
                None
            }
        };
        let send_at = errors.check("send_at", parse_send_at(&self.send_at));
        let retry_count = errors.check(
            "retry_count",
            match self.retry_count.trim() {
                "" => Ok(default_retries),
                value => value
                    .parse::<i32>()
                    .map_err(|_| RETRIES.to_string())
                    .and_then(retries),
            },
        );
        if !errors.is_empty() {
            return None;
        }
        let Bodies { text, html } = bodies?;
        Some(Compose {
            // The sender's, once it is found ready.
            provider: ProviderId(0),
            sender: Some(sender?),
            to: to?,
            cc: cc?,
            bcc: bcc?,
            subject: subject?,
            text,
            html,
            send_at: send_at?,
            retry_count: retry_count?,
            files: Vec::new(),
            reply_to: reply_to?,
        })
    }
}

/// A subject as the console and the API take it: trimmed, present, on one line (a line
/// break would start a header), at most 900 characters (the site name goes in front).
pub fn parse_subject(input: &str) -> Result<String, String> {
    let subject = input.trim();
    if subject.is_empty() {
        Err("Enter a subject.".into())
    } else if subject.chars().any(char::is_control) {
        Err("A subject cannot contain line breaks or control characters.".into())
    } else if subject.chars().count() > 900 {
        Err("A subject has at most 900 characters.".into())
    } else {
        Ok(subject.to_owned())
    }
}

const RETRIES: &str = "Retries are a number from 0 to 10.";

/// A retry count: 0 to 10.
pub fn retries(count: i32) -> Result<i32, String> {
    (0..=10)
        .contains(&count)
        .then_some(count)
        .ok_or_else(|| RETRIES.to_string())
}

/// The text and HTML of a send, line endings made CRLF (what goes on the wire).
#[derive(Debug, Clone)]
pub struct Bodies {
    /// The text (possibly empty when there is HTML).
    pub text: String,
    /// The HTML, when there is any.
    pub html: Option<String>,
}

impl Bodies {
    /// At least one of the two, neither holding what nothing can carry; otherwise what is
    /// wrong, by field (`text`, `html`).
    pub fn parse(text: &str, html: &str) -> Result<Bodies, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        if text.trim().is_empty() && html.trim().is_empty() {
            problems.push((
                "text",
                "Write the message (text, HTML, or both).".to_owned(),
            ));
        }
        for (field, value) in [("text", text), ("html", html)] {
            if let Some(why) = body_problem(value) {
                problems.push((field, why.to_owned()));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Bodies {
            text: crlf(text),
            html: Some(html.trim()).filter(|h| !h.is_empty()).map(crlf),
        })
    }
}

/// What is wrong with a text or HTML body that nothing can carry: a NUL character
/// (PostgreSQL cannot store it in text, and RFC 5322 §2.3 forbids it in a message).
pub fn body_problem(value: &str) -> Option<&'static str> {
    value
        .contains('\0')
        .then_some("This cannot contain a NUL character (U+0000).")
}

fn parse_send_at(input: &str) -> Result<Option<NaiveDateTime>, String> {
    let value = input.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let at = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .ok_or_else(|| format!("{value:?} is not a date and time like 2026-12-01T09:30 (UTC)."))?;
    within_a_year(at).map(Some)
}

/// How far ahead a send may be scheduled.
pub const SCHEDULE_AHEAD: chrono::TimeDelta = chrono::TimeDelta::days(366);

/// A scheduled time at most a year ahead (a time in the past sends now).
pub fn within_a_year(at: NaiveDateTime) -> Result<NaiveDateTime, String> {
    if at > crate::db::now() + SCHEDULE_AHEAD {
        return Err("A send can be scheduled at most a year ahead.".into());
    }
    Ok(at)
}

/// Normalizes every line ending to CRLF. lettre 0.11.23 still dot-stuffs only after CRLF
/// (RUSTSEC-2026-0561): a line holding a lone "." after a bare LF would end DATA early and
/// let the rest of the body be read as SMTP commands.
pub fn crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\r\n");
            }
            '\n' => out.push_str("\r\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{crlf, file_name, parse_addresses, parse_mailbox, split_addresses};

    #[test]
    fn every_line_ending_becomes_crlf() {
        assert_eq!(crlf("a\nb\r\nc\rd\n.\ne"), "a\r\nb\r\nc\r\nd\r\n.\r\ne");
        assert_eq!(crlf("\r\r\n\n"), "\r\n\r\n\r\n");
    }

    #[test]
    fn addresses_are_taken_as_people_write_them() {
        assert_eq!(
            split_addresses("a@x.test, \"Lee, Ann\" <ann@x.test>; Bo <bo@x.test>\nc@x.test"),
            [
                "a@x.test",
                "\"Lee, Ann\" <ann@x.test>",
                "Bo <bo@x.test>",
                "c@x.test"
            ]
        );
        assert_eq!(parse_mailbox("ann@x.test"), Ok("ann@x.test".into()));
        assert_eq!(
            parse_mailbox("Ann Lee <ann@x.test>"),
            Ok("Ann Lee <ann@x.test>".into())
        );
        assert_eq!(
            parse_mailbox("\"Lee, Ann\" <ann@x.test>"),
            Ok("\"Lee, Ann\" <ann@x.test>".into())
        );
        for wrong in [
            "not an address",
            "a@x.test, b@x.test",
            "Ann <ann@x.test> trailing",
            "Ann\r\nBcc: <ann@x.test>",
            "a@x.test\nb@x.test",
            "<>",
        ] {
            assert!(parse_mailbox(wrong).is_err(), "{wrong:?}");
        }
        assert_eq!(
            parse_addresses("Ann <a@x.test>, A@X.test, b@x.test", "To", 10, true),
            Ok(vec!["Ann <a@x.test>".to_owned(), "b@x.test".to_owned()]),
            "an address listed twice is kept once"
        );
    }

    #[test]
    fn uploaded_file_names_are_made_safe_for_headers() {
        assert_eq!(file_name("../../etc/passwd"), "passwd");
        assert_eq!(file_name("C:\\Users\\me\\report.pdf"), "report.pdf");
        assert_eq!(
            file_name("a\r\nBcc: x@evil.example.txt"),
            "aBcc: x@evil.example.txt"
        );
        assert_eq!(file_name("say \"hi\".txt"), "say hi.txt");
        assert_eq!(file_name("   "), "attachment");
        assert_eq!(file_name(&"x".repeat(500)).len(), 200);
    }
}
