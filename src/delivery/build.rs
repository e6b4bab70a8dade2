//! Turning a stored message into what goes over the wire: RFC 5322 headers (From, To, Cc,
//! Subject, Message-ID, Date, In-Reply-To and References for replies) and a MIME body, plus the SMTP envelope, which also carries
//! the BCC recipients (never a header).

use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::message::{Attachment as Part, Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message as Email};

use crate::messages::model::{Attachment, Message, MessageBody};

/// A message that cannot be built (a stored address no longer parses): fails the message.
#[derive(Debug, thiserror::Error)]
#[error("the message cannot be built: {0}")]
pub struct BuildError(String);

fn address(value: &str) -> Result<Address, BuildError> {
    value
        .parse::<Address>()
        .map_err(|e| BuildError(format!("{value:?}: {e}")))
}

/// The envelope and the formatted message.
pub fn build(
    message: &Message,
    body: &MessageBody,
    files: &[Attachment],
) -> Result<(Envelope, Vec<u8>), BuildError> {
    let from = address(&message.from_address)?;
    let name = (!message.from_name.is_empty()).then(|| message.from_name.clone());
    let mut builder = Email::builder()
        .from(Mailbox::new(name, from.clone()))
        .to(Mailbox::new(None, address(&message.recipient)?))
        .subject(message.subject.clone())
        .message_id(Some(message.message_id.clone()))
        .date_now();
    // A reply (API `in_reply_to`): mail clients thread it under the original.
    if let Some(parent) = message.in_reply_to() {
        builder = builder.in_reply_to(parent.to_owned());
    }
    if let Some(references) = &message.references_header {
        builder = builder.references(references.clone());
    }
    let mut recipients = vec![address(&message.recipient)?];
    for cc in message.cc_list() {
        let cc = address(cc)?;
        builder = builder.cc(Mailbox::new(None, cc.clone()));
        recipients.push(cc);
    }
    for bcc in message.bcc_list() {
        recipients.push(address(bcc)?);
    }
    let text = body.text_body.clone();
    let content = match &body.html_body {
        Some(html) => MultiPart::alternative_plain_html(text, html.clone()),
        None => MultiPart::mixed().singlepart(SinglePart::plain(text)),
    };
    let email = if files.is_empty() {
        match &body.html_body {
            Some(_) => builder.multipart(content),
            None => builder.singlepart(SinglePart::plain(body.text_body.clone())),
        }
    } else {
        // multipart/mixed: the text (or text/HTML alternative) first, then each file.
        let mut mixed = MultiPart::mixed().multipart(content);
        for file in files {
            let kind = ContentType::parse(&file.content_type).unwrap_or(
                ContentType::parse("application/octet-stream")
                    .map_err(|e| BuildError(e.to_string()))?,
            );
            mixed =
                mixed.singlepart(Part::new(file.file_name.clone()).body(file.data.clone(), kind));
        }
        builder.multipart(mixed)
    }
    .map_err(|e| BuildError(e.to_string()))?;
    let envelope = Envelope::new(Some(from), recipients).map_err(|e| BuildError(e.to_string()))?;
    Ok((envelope, email.formatted()))
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
    use super::crlf;

    #[test]
    fn every_line_ending_becomes_crlf() {
        assert_eq!(crlf("a\nb\r\nc\rd\n.\ne"), "a\r\nb\r\nc\r\nd\r\n.\r\ne");
        assert_eq!(crlf("\r\r\n\n"), "\r\n\r\n\r\n");
    }
}
