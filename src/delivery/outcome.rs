//! What became of each attempt, and writing it down: status, reply, events, retries with
//! exponential backoff and jitter, and holding a provider's messages when it refuses the
//! sign-in.

use std::collections::HashMap;
use std::time::Duration;

use lettre::transport::smtp::response::Response;

use super::queries::{self as queue, Finish};
use crate::db::DbConn;
use crate::error::AppError;
use crate::messages::model::{Message, NewMessageEvent, Status};
use crate::messages::queries as messages;
use crate::providers::model::ProviderId;
use crate::providers::queries as providers;
use crate::providers::smtp::SmtpFailure;
use crate::providers::smtp::server_text;
use crate::workspaces::model::WorkspaceId;

/// A server's reply (or a failure without one), split for the log.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Basic code, e.g. 250.
    pub code: Option<u16>,
    /// Enhanced code (RFC 3463), e.g. `2.0.0`.
    pub enhanced: Option<String>,
    /// The whole reply in words.
    pub text: String,
}

impl Reply {
    /// A failure that is not a server reply.
    pub fn text(text: &str) -> Self {
        Self {
            code: None,
            enhanced: None,
            text: server_text(text),
        }
    }

    /// From a failed exchange.
    pub fn from_failure(failure: &SmtpFailure) -> Self {
        let enhanced = failure
            .detail
            .split_whitespace()
            .nth(1)
            .filter(|w| is_enhanced(w))
            .map(str::to_owned);
        Self {
            code: failure.code,
            enhanced,
            text: server_text(&failure.detail),
        }
    }

    /// From an accepted message's reply.
    pub fn from_response(response: &Response) -> Self {
        let code = u16::from(response.code());
        let said: Vec<&str> = response.message().collect();
        let said = said.join(" ");
        let enhanced = said
            .split_whitespace()
            .next()
            .filter(|w| is_enhanced(w))
            .map(str::to_owned);
        Self {
            code: Some(code),
            enhanced,
            text: server_text(&format!("{code} {said}")),
        }
    }
}

/// `2.0.0`, `5.1.1`: class.subject.detail (RFC 3463 §2).
fn is_enhanced(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit()))
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum OutcomeKind {
    /// 2xx: accepted.
    Sent(Reply),
    /// 5xx, or a message that cannot be built: failed at once.
    Failed(Reply),
    /// 4xx, or no connection: again later, while retries last.
    Retry(Reply),
    /// The exchange broke off without a reply after it began (timeout, dropped
    /// connection): the server may have accepted the message, so the retry is flagged as a
    /// possible duplicate.
    CutOff(Reply),
    /// Its provider was deleted before it could be sent: cancelled, the attempt not
    /// counted (nothing reached a server).
    Orphaned,
    /// The provider refused the sign-in: hold, do not fail. Carries when the provider was
    /// last checked as the refusing pool knew it: a refusal older than the provider's last
    /// check is stale and turns nothing red.
    ProviderRefused(Reply, Option<chrono::NaiveDateTime>),
    /// From a domain of its workspace that is not authenticated (any more): held, the
    /// attempt not counted, until the domain checks again.
    DomainHeld(Reply),
}

/// The hold reason of mail whose domain is not authenticated.
pub const DOMAIN_HOLD: &str = "domain";

/// One attempt's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The message as claimed.
    pub message: Message,
    /// What happened.
    pub kind: OutcomeKind,
}

/// The delay before retry number `attempt` (1-based): `base × 2^(attempt−1)`, ±25 % jitter,
/// at most an hour.
pub fn backoff(base: Duration, attempt: i32) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(16);
    let delay = base
        .saturating_mul(1 << exponent)
        .min(Duration::from_secs(3600));
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    delay.mul_f64(jitter)
}

/// Writes a batch of outcomes (in the caller's transaction). Returns whether it queued
/// alerts (a provider turned red), which the engine should send at once.
pub fn apply(
    conn: &mut DbConn,
    owner: &str,
    batch: Vec<Outcome>,
    retry_base: Duration,
    system_from: &str,
) -> Result<bool, AppError> {
    let now = crate::db::now();
    let mut finishes = Vec::with_capacity(batch.len());
    let mut events = Vec::with_capacity(batch.len());
    let mut refused: HashMap<ProviderId, (WorkspaceId, Reply)> = HashMap::new();
    let mut current: HashMap<ProviderId, Option<chrono::NaiveDateTime>> = HashMap::new();
    for outcome in &batch {
        if let (OutcomeKind::ProviderRefused(..), Some(provider)) =
            (&outcome.kind, outcome.message.provider_id)
            && !current.contains_key(&provider)
        {
            let row =
                providers::find_by_workspace_and_id(conn, outcome.message.workspace_id, provider)?;
            current.insert(provider, row.and_then(|p| p.checked_at));
        }
    }
    for Outcome { message, kind } in batch {
        let base = |status: Status, reply: &Reply| Finish {
            id: message.id,
            status,
            due_at: None,
            result: reply.text.clone(),
            smtp_code: reply.code.map(i32::from),
            smtp_enhanced: reply.enhanced.clone(),
            sent_at: None,
            hold_reason: None,
            uncount_attempt: false,
            possible_duplicate: false,
            attempt: message.attempts,
            dkim_signature: None,
        };
        let (finish, event, detail) = match &kind {
            OutcomeKind::Sent(reply) => (
                Finish {
                    sent_at: Some(now),
                    ..base(Status::Sent, reply)
                },
                "sent",
                reply.text.clone(),
            ),
            OutcomeKind::Failed(reply) => {
                (base(Status::Failed, reply), "failed", reply.text.clone())
            }
            OutcomeKind::Orphaned => {
                let reply = Reply::text(queue::PROVIDER_DELETED);
                (
                    Finish {
                        uncount_attempt: true,
                        ..base(Status::Cancelled, &reply)
                    },
                    "cancelled",
                    format!("{}: it is not sent any other way", reply.text),
                )
            }
            OutcomeKind::CutOff(reply) if message.attempts < message.max_attempts => {
                let delay = backoff(retry_base, message.attempts);
                let due = now + chrono::Duration::from_std(delay).unwrap_or_default();
                let detail = format!(
                    "{} — cut off after the message began; may have been delivered; attempt {} of {}; next in {} s",
                    reply.text,
                    message.attempts,
                    message.max_attempts,
                    delay.as_secs()
                );
                (
                    Finish {
                        due_at: Some(due),
                        possible_duplicate: true,
                        ..base(Status::Queued, reply)
                    },
                    "retry",
                    detail,
                )
            }
            OutcomeKind::CutOff(reply) => {
                let detail = format!(
                    "{} — cut off after the message began (may have been delivered); no retries left",
                    reply.text
                );
                (
                    Finish {
                        result: detail.clone(),
                        possible_duplicate: true,
                        ..base(Status::Failed, reply)
                    },
                    "failed",
                    detail,
                )
            }
            OutcomeKind::Retry(reply) if message.attempts < message.max_attempts => {
                let delay = backoff(retry_base, message.attempts);
                let due = now + chrono::Duration::from_std(delay).unwrap_or_default();
                let detail = format!(
                    "{} — attempt {} of {}; next in {} s",
                    reply.text,
                    message.attempts,
                    message.max_attempts,
                    delay.as_secs()
                );
                (
                    Finish {
                        due_at: Some(due),
                        ..base(Status::Queued, reply)
                    },
                    "retry",
                    detail,
                )
            }
            OutcomeKind::Retry(reply) => {
                let detail = format!(
                    "{} — no retries left after {} attempts",
                    reply.text, message.attempts
                );
                (
                    Finish {
                        result: detail.clone(),
                        ..base(Status::Failed, reply)
                    },
                    "failed",
                    detail,
                )
            }
            OutcomeKind::ProviderRefused(reply, seen)
                if message
                    .provider_id
                    .and_then(|p| current.get(&p))
                    .is_some_and(|now_checked| now_checked > seen) =>
            {
                // The provider was checked again since this pool saw it: the refusal is
                // stale. Queue the message again, uncounted; a fresh pool will send it.
                let detail = format!(
                    "{} — from before the provider's last check; queued again",
                    reply.text
                );
                (
                    Finish {
                        uncount_attempt: true,
                        due_at: Some(now),
                        result: detail.clone(),
                        ..base(Status::Queued, reply)
                    },
                    "retry",
                    detail,
                )
            }
            OutcomeKind::DomainHeld(reply) => {
                let detail = format!(
                    "held: {}; released when the domain checks again",
                    reply.text
                );
                (
                    Finish {
                        hold_reason: Some(DOMAIN_HOLD),
                        uncount_attempt: true,
                        result: detail.clone(),
                        ..base(Status::Held, reply)
                    },
                    "held",
                    detail,
                )
            }
            OutcomeKind::ProviderRefused(reply, _) => {
                if let Some(provider) = message.provider_id {
                    refused.insert(provider, (message.workspace_id, reply.clone()));
                }
                let detail = format!("held: the provider refused the sign-in ({})", reply.text);
                (
                    Finish {
                        hold_reason: Some("provider"),
                        uncount_attempt: true,
                        result: detail.clone(),
                        ..base(Status::Held, reply)
                    },
                    "held",
                    detail,
                )
            }
        };
        // Tried again later: with the signature this attempt was signed with (the same
        // bytes are built again; a message is signed once).
        let finish = if matches!(finish.status, Status::Queued | Status::Held) {
            Finish {
                dkim_signature: message.dkim_signature.clone(),
                ..finish
            }
        } else {
            finish
        };
        events.push(NewMessageEvent {
            message_id: message.id,
            kind: event,
            attempt: message.attempts,
            smtp_code: finish.smtp_code,
            smtp_enhanced: finish.smtp_enhanced.clone(),
            detail,
            created_at: now,
        });
        finishes.push(finish);
    }
    // A message another node took over meanwhile is not overwritten, nor given an event.
    let written: std::collections::HashSet<_> = queue::finish_many(conn, owner, &finishes, now)?
        .into_iter()
        .collect();
    events.retain(|e| written.contains(&e.message_id));
    messages::insert_events(conn, &events)?;
    // A message whose provider was deleted while it was being sent must not come back to
    // the queue (nothing would send it) nor go out any other way.
    let back: Vec<_> = finishes
        .iter()
        .filter(|f| written.contains(&f.id) && matches!(f.status, Status::Queued | Status::Held))
        .map(|f| f.id)
        .collect();
    if !back.is_empty() {
        queue::cancel_orphaned(conn, &back, now)?;
    }
    let mut alerted = false;
    for (provider, (workspace, reply)) in refused {
        let was = providers::find_by_workspace_and_id(conn, workspace, provider)?;
        providers::mark_red(conn, workspace, provider, &reply.text)?;
        let detail = format!("held: the provider refused the sign-in ({})", reply.text);
        let held = queue::hold_for_provider(conn, provider, &detail, now)?;
        if let Some(was) = was.filter(|p| p.is_active()) {
            let text = format!(
                "The provider {} turned red: the server refused the sign-in.\n\n{}\n\nIts messages are held, not failed ({} more were waiting). Check the username and password on the provider's page; once it checks green again, they go out.",
                was.name, reply.text, held
            );
            crate::delivery::alerts::notify_admins(
                conn,
                workspace,
                system_from,
                &format!("Provider {} turned red", was.name),
                &text,
            )?;
            alerted = true;
        }
    }
    Ok(alerted)
}
