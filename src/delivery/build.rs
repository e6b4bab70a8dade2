//! Turning a stored message into what goes over the wire: RFC 5322 headers (From, To, Cc,
//! Reply-To, Subject, Message-ID, Date, In-Reply-To and References for replies) and a
//! MIME body, plus the SMTP envelope: this copy's one recipient (a Bcc address is never a
//! header).

use lettre::address::Envelope;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Attachment as Part, Body, Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message as Email};

use crate::messages::model::{Attachment, Message, Send};

/// A message that cannot be built (a stored address no longer parses): fails the message.
#[derive(Debug, thiserror::Error)]
#[error("the message cannot be built: {0}")]
pub struct BuildError(String);

/// An address list entry as written (`Ann <ann@example.com>`, `"Doe, Jo" <jo@x.test>` or
/// `ann@example.com`).
fn mailbox(value: &str) -> Result<Mailbox, BuildError> {
    value
        .parse::<Mailbox>()
        .map_err(|e| BuildError(format!("{value:?}: {e}")))
}

fn address(value: &str) -> Result<Address, BuildError> {
    value
        .parse::<Address>()
        .map_err(|e| BuildError(format!("{value:?}: {e}")))
}

/// The envelope and the formatted message of one copy of a send. Every copy carries the
/// send's headers (its To and Cc, as a mail client writes them); the envelope names this
/// copy's recipient alone, so each address receives one copy.
pub fn build(
    message: &Message,
    body: &Send,
    files: &[Attachment],
) -> Result<(Envelope, Vec<u8>), BuildError> {
    let from = address(&body.from_address)?;
    let name = (!body.from_name.is_empty()).then(|| body.from_name.clone());
    // The same bytes at every attempt (the date the message was queued or scheduled for,
    // boundaries made from its Message-ID), so a DKIM signature made once stays valid.
    let date = wire_date(message).and_utc();
    let mut builder = Email::builder()
        .from(Mailbox::new(name, from.clone()))
        .subject(body.subject.clone())
        .message_id(Some(message.message_id.clone()))
        .date(std::time::SystemTime::from(date));
    let to = body.to_list();
    if to.is_empty() {
        builder = builder.to(mailbox(&message.recipient)?);
    }
    for entry in to {
        builder = builder.to(mailbox(entry)?);
    }
    for entry in body.cc_list() {
        builder = builder.cc(mailbox(entry)?);
    }
    if !body.reply_to.is_empty() {
        builder = builder.reply_to(mailbox(&body.reply_to)?);
    }
    // A reply (API `in_reply_to`): mail clients thread it under the original.
    if let Some(parent) = body.in_reply_to() {
        builder = builder.in_reply_to(parent.to_owned());
    }
    if let Some(references) = &body.references_header {
        builder = builder.references(references.clone());
    }
    let recipients = vec![mailbox(&message.recipient)?.email];
    let text = || text_part(ContentType::TEXT_PLAIN, &body.text_body);
    let content = match &body.html_body {
        Some(html) => MultiPart::alternative()
            .boundary(boundary(&message.message_id, "alt"))
            .singlepart(text())
            .singlepart(text_part(ContentType::TEXT_HTML, html)),
        None => MultiPart::mixed()
            .boundary(boundary(&message.message_id, "txt"))
            .singlepart(text()),
    };
    let email = if files.is_empty() {
        match &body.html_body {
            Some(_) => builder.multipart(content),
            None => builder.singlepart(text()),
        }
    } else {
        // multipart/mixed: the text (or text/HTML alternative) first, then each file.
        let mut mixed = MultiPart::mixed()
            .boundary(boundary(&message.message_id, "mix"))
            .multipart(content);
        for file in files {
            let kind = ContentType::parse(&file.content_type).unwrap_or(
                ContentType::parse("application/octet-stream")
                    .map_err(|e| BuildError(e.to_string()))?,
            );
            // Always base64: a file is bytes, not lines. Left to choose, lettre sends a file
            // of ASCII lines as 7bit with its bare LFs unchanged (a receiver that ends lines
            // at a bare LF would then read an ".\n" in it as the end of DATA).
            let body = Body::new_with_encoding(file.data.clone(), ContentTransferEncoding::Base64)
                .map_err(|_| BuildError("a file could not be encoded as base64".into()))?;
            mixed = mixed.singlepart(Part::new(file.file_name.clone()).body(body, kind));
        }
        builder.multipart(mixed)
    }
    .map_err(|e| BuildError(e.to_string()))?;
    let envelope = Envelope::new(Some(from), recipients).map_err(|e| BuildError(e.to_string()))?;
    let bytes = email.formatted();
    check_wire(&bytes)?;
    Ok((envelope, bytes))
}

/// The Date of a message (and the `t=` of its signature): when it was scheduled for, or
/// else queued; never before it was queued (a time in the past sends now: it must not
/// backdate signed mail) nor more than a year after (a schedule cannot be further ahead;
/// rows from before that rule are clamped too).
pub fn wire_date(message: &Message) -> chrono::NaiveDateTime {
    let latest = message.created_at + crate::messages::compose::SCHEDULE_AHEAD;
    message
        .send_at
        .unwrap_or(message.created_at)
        .clamp(message.created_at, latest)
}

/// A MIME boundary of this message's `part`: 128 bits of the Message-ID's SHA-256, the
/// same at every attempt, as unlikely to occur in the content as a random one.
fn boundary(message_id: &str, part: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(message_id.as_bytes());
    format!("mr-{part}-{}", hex::encode(&digest[..16]))
}

/// A text or HTML part. lettre picks 7bit, quoted-printable or base64 by itself, and would
/// send a NUL or another control character as it is: such text goes quoted-printable.
fn text_part(kind: ContentType, content: &str) -> SinglePart {
    let odd = content
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\r' | '\n' | '\t'));
    let body = if odd {
        Body::new_with_encoding(content.to_owned(), ContentTransferEncoding::QuotedPrintable)
            .unwrap_or_else(|_| Body::new(content.to_owned()))
    } else {
        Body::new(content.to_owned())
    };
    SinglePart::builder().header(kind).body(body)
}

/// The one check of what goes on the wire, whatever part it came from: every line ends in
/// CRLF (no bare CR or LF, RFC 5321 §2.3.8), no NUL, no line longer than 998 characters
/// (RFC 5322 §2.1.1). With that, the client's dot-stuffing after each CRLF (RFC 5321
/// §4.5.2) is complete, so no line of the message can end DATA early: nothing in a
/// message can be read by the server as SMTP commands ("SMTP smuggling"), and a receiver
/// that refuses bare line feeds (Postfix `smtpd_forbid_bare_newline`) takes every message.
pub fn check_wire(bytes: &[u8]) -> Result<(), BuildError> {
    const MAX_LINE: usize = 998;
    let mut line_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                if i - line_start > MAX_LINE {
                    return Err(BuildError(format!(
                        "a line of {} characters (at most {MAX_LINE})",
                        i - line_start
                    )));
                }
                i += 2;
                line_start = i;
                continue;
            }
            b'\r' => return Err(BuildError(format!("a bare CR at byte {i}"))),
            b'\n' => return Err(BuildError(format!("a bare LF at byte {i}"))),
            0 => return Err(BuildError(format!("a NUL at byte {i}"))),
            _ => {}
        }
        i += 1;
    }
    if bytes.len() - line_start > MAX_LINE {
        return Err(BuildError(format!(
            "a line of {} characters (at most {MAX_LINE})",
            bytes.len() - line_start
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_wire_check_refuses_bare_line_ends_nuls_and_long_lines() {
        use super::check_wire;
        assert!(check_wire(b"Subject: a\r\n\r\nbody\r\n.\r\n").is_ok());
        assert!(check_wire(b"").is_ok());
        for bad in [
            &b"a\nb\r\n"[..],
            b"a\rb\r\n",
            b"hello\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n\r",
            b"a\0b\r\n",
        ] {
            assert!(check_wire(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}\r\n", "x".repeat(999));
        assert!(check_wire(long.as_bytes()).is_err());
        let fits = format!("{}\r\n", "x".repeat(998));
        assert!(check_wire(fits.as_bytes()).is_ok());
    }
}
