//! Mailing a sender its one-time code: through the operator's SMTP server when one is set
//! (`system_smtp_host`, From the system address), otherwise through the sender's own
//! provider, From the sender itself — never only into the outbox folder, where nobody
//! would read it. The code goes straight to the server and is never stored in the
//! message log, where anyone who reads the history could copy it without owning the
//! mailbox.

use std::time::Duration;

use lettre::message::Mailbox;

use super::model::Sender;
use crate::delivery::system::{SystemProvider, SystemTransport};
use crate::providers::model::Provider;
use crate::providers::smtp::{self, SmtpFailure};
use crate::state::AppState;

/// The message, as bytes for the wire. The words are Mailroom's alone (no name or site
/// name a workspace chose: it reaches an address the workspace has not proven), and the
/// code is in the body only (subjects show in notifications and logs).
fn message(from: &Mailbox, sender: &Sender, code: &str) -> Result<Vec<u8>, String> {
    let to = Mailbox::new(None, sender.address.parse().map_err(|e| format!("{e}"))?);
    let subject = "Your Mailroom sender code";
    let text = format!(
        "Your code is {code}.\r\n\r\nEnter it in Mailroom to confirm that this address may be used as a sender. It works once, for 15 minutes.\r\n\r\nIf you did not ask for it, ignore this message.\r\n"
    );
    let email = lettre::Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .date_now()
        .body(text)
        .map_err(|e| e.to_string())?;
    let bytes = email.formatted();
    crate::delivery::build::check_wire(&bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Mails `code` to `sender`; the server's answer, or why it could not be sent.
pub async fn mail(
    state: &AppState,
    sender: &Sender,
    provider: &Provider,
    code: &str,
) -> Result<String, String> {
    let timeout = Duration::from_secs(state.settings.smtp_timeout_secs);
    let system = SystemProvider::from_settings(&state.settings);
    let (endpoint, policy, from) = match system.transport {
        SystemTransport::Smtp(endpoint) => (
            endpoint,
            state.egress.allowing_everything(),
            system
                .from
                .parse::<Mailbox>()
                .map_err(|e| format!("the system address: {e}"))?,
        ),
        SystemTransport::Outbox(_) => (
            crate::providers::service::endpoint(provider, &state.sealer)
                .map_err(|e| e.to_string())?,
            state.egress.clone(),
            Mailbox::new(None, sender.address.parse().map_err(|e| format!("{e}"))?),
        ),
    };
    let bytes = message(&from, sender, code)?;
    let to: lettre::Address = sender.address.parse().map_err(|e| format!("{e}"))?;
    let hello = lettre::transport::smtp::extension::ClientId::default();
    let failed = |f: SmtpFailure| f.detail;
    let mut session = smtp::connect(&endpoint, &policy, timeout, &hello)
        .await
        .map_err(failed)?;
    let sent = tokio::time::timeout(
        timeout * 4,
        session.send(Some(&from.email), std::slice::from_ref(&to), &bytes),
    )
    .await;
    session.quit(timeout).await;
    match sent {
        Ok(Ok(reply)) => Ok(smtp::server_text(
            &reply.message().collect::<Vec<_>>().join(" "),
        )),
        Ok(Err(failure)) => Err(failure.detail),
        Err(_) => Err(format!("no answer within {} s", (timeout * 4).as_secs())),
    }
}
