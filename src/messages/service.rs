//! Message rules: composing (one send, one message per address: To, Cc and Bcc each get
//! one copy), cancelling, retrying now. No actix types.

use super::compose::{Compose, address_of};
use super::ingest::Prepared;
use super::model::*;
use super::queries;
use crate::accounts::model::UserId;
use crate::db::{self, DbConn};
use crate::error::AppError;
use crate::providers::model::{Provider, ProviderId};
use crate::providers::queries as providers;
use crate::workspaces::model::{Workspace, WorkspaceId};

/// Who composes, for the send record.
pub struct Sender<'a> {
    /// The user.
    pub user: UserId,
    /// The public id of their session.
    pub session_public_id: &'a str,
}

/// A fresh RFC 5322 Message-ID on the sender's domain: the time in milliseconds (12 hex
/// digits), then 80 random bits. Ids made later sort later, so the unique index on them
/// grows at its right-hand edge: a commit of many messages rewrites a page or two of it
/// rather than one page per message (a random id put each new message on its own page:
/// about 8 KB of writes per message, WAL and checkpoint, measured with `bench api`).
/// The random part keeps an id unguessable, so a forged reply cannot name it.
pub fn new_message_id(from: &str) -> String {
    let domain = from.rsplit_once('@').map_or("mailroom.invalid", |(_, d)| d);
    let millis = chrono::Utc::now().timestamp_millis().max(0);
    format!(
        "<{millis:012x}{}@{domain}>",
        hex::encode(rand::random::<[u8; 10]>())
    )
}

/// The subject with the workspace's site name in front: `[Acme] Hello`.
pub fn prefixed_subject(workspace: &Workspace, subject: &str) -> String {
    match workspace.site_name.trim() {
        "" => subject.to_owned(),
        site => format!("[{site}] {subject}"),
    }
}

/// Where a send comes from and what rides along, beyond its content.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// `web` (console) or `sys` (API, Mailroom itself).
    pub origin: Option<Origin>,
    /// The user it is sent for (the console's user; the API's owner).
    pub user: Option<UserId>,
    /// The console session it was sent from.
    pub session_public_id: Option<String>,
    /// The API key that sent it.
    pub api_key: Option<crate::api::model::ApiKeyId>,
    /// `References` of a reply (its last id is `In-Reply-To`).
    pub references: Option<String>,
    /// The caller's contact ids, JSON.
    pub contact_ids: Option<String>,
    /// Stored, not sent, until released.
    pub hold: bool,
}

/// The provider a send goes through: the workspace's own, and green. One rule for the
/// console and the API (`provider` names the field either way).
pub fn green_provider(found: Option<Provider>) -> Result<Provider, AppError> {
    match found {
        Some(p) if p.is_active() => Ok(p),
        Some(p) => Err(AppError::Invalid {
            field: "provider",
            message: format!(
                "The provider {} is {}; only a provider that checked green sends.",
                p.name, p.status
            ),
        }),
        None => Err(AppError::Invalid {
            field: "provider",
            message: "No such provider in this workspace.".into(),
        }),
    }
}

/// The workspace's provider `id`, if it may send (see [`green_provider`]).
pub fn sending_provider(
    conn: &mut DbConn,
    workspace: &Workspace,
    id: crate::providers::model::ProviderId,
) -> Result<Provider, AppError> {
    green_provider(providers::find_by_workspace_and_id(conn, workspace.id, id)?)
}

/// The console's envelope: sent by this user from this session.
pub fn console(sender: &Sender<'_>) -> Envelope {
    Envelope {
        origin: Some(Origin::Web),
        user: Some(sender.user),
        session_public_id: Some(sender.session_public_id.to_owned()),
        ..Envelope::default()
    }
}

/// Who a send comes from: a ready sender (its name and address, its Reply-To unless the
/// send has its own) and the provider it goes through.
#[derive(Debug, Clone)]
pub struct FromSender {
    /// The provider (checked green by the caller).
    pub provider: Provider,
    /// The address on From.
    pub address: String,
    /// The name on From.
    pub name: String,
    /// The sender's Reply-To (empty: none).
    pub reply_to: String,
    /// The sender.
    pub sender: Option<crate::ids::SenderId>,
}

impl FromSender {
    /// Sending as a ready sender through its provider.
    pub fn of(sender: &crate::senders::model::Sender, provider: Provider) -> Self {
        Self {
            provider,
            address: sender.address.clone(),
            name: sender.name.clone(),
            reply_to: sender.reply_to.clone(),
            sender: Some(sender.id),
        }
    }
}

/// Prepares a send as `from` (checked by the caller) for the ingest writer: the send once,
/// its files, one message per address. An address listed twice (in To and Cc, say) gets
/// one copy, under the first field that names it.
pub fn prepare(
    workspace: &Workspace,
    from: &FromSender,
    input: Compose,
    envelope: &Envelope,
) -> Prepared {
    let provider = &from.provider;
    let now = db::now();
    let due = input.send_at.filter(|at| *at > now);
    let status = if envelope.hold {
        Status::Held
    } else if due.is_some() {
        Status::Scheduled
    } else {
        Status::Queued
    };
    let origin = envelope.origin.unwrap_or(Origin::Sys);
    let mut seen = std::collections::HashSet::new();
    let copies = input
        .to
        .iter()
        .map(|a| (RecipientKind::To, a))
        .chain(input.cc.iter().map(|a| (RecipientKind::Cc, a)))
        .chain(input.bcc.iter().map(|a| (RecipientKind::Bcc, a)))
        .filter(|(_, a)| seen.insert(address_of(a).to_lowercase()));
    let rows: Vec<NewMessage> = copies
        .map(|(kind, recipient)| NewMessage {
            workspace_id: workspace.id,
            send_id: super::ingest::UNSTORED,
            channel: Channel::Email,
            direction: Direction::Outbound,
            recipient_kind: kind,
            origin: origin.as_str().into(),
            provider_id: Some(provider.id),
            from_address: from.address.clone(),
            recipient: recipient.clone(),
            contact_id: None,
            mailing_id: None,
            message_id: new_message_id(&from.address),
            status,
            hold_reason: envelope.hold.then(|| "api".to_owned()),
            attempts: 0,
            max_attempts: input.retry_count + 1,
            due_at: due.unwrap_or(now),
            send_at: input.send_at,
            possible_duplicate: false,
            result: String::new(),
            created_at: now,
            updated_at: now,
        })
        .collect();
    Prepared {
        send: NewSend {
            workspace_id: workspace.id,
            text_body: input.text,
            html_body: input.html,
            attachments: i32::try_from(input.files.len()).unwrap_or(i32::MAX),
            created_at: now,
            user_id: envelope.user,
            session_public_id: envelope.session_public_id.clone(),
            api_key_id: envelope.api_key,
            from_address: from.address.clone(),
            from_name: from.name.clone(),
            reply_to: input
                .reply_to
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| from.reply_to.clone()),
            to_addresses: input.to.join("\n"),
            cc: input.cc.join("\n"),
            bcc: input.bcc.join("\n"),
            subject: prefixed_subject(workspace, &input.subject),
            references_header: envelope.references.clone(),
            contact_ids: envelope.contact_ids.clone(),
            mailing_id: None,
            sender_id: from.sender,
        },
        files: input.files,
        rows,
        after: None,
    }
}

fn event(id: MessageId, kind: &'static str, attempt: i32, detail: String) -> NewMessageEvent {
    NewMessageEvent {
        message_id: id,
        kind,
        attempt,
        smtp_code: None,
        smtp_enhanced: None,
        detail,
        created_at: db::now(),
    }
}

/// Cancels a message that has not been sent (scheduled, queued or held).
pub fn cancel(
    conn: &mut DbConn,
    workspace: &Workspace,
    id: MessageId,
    by: &str,
) -> Result<Message, AppError> {
    let message =
        queries::find_by_workspace_and_id(conn, workspace.id, id)?.ok_or(AppError::NotFound)?;
    let cancelled = queries::cancel(conn, workspace.id, id, db::now())?;
    if !cancelled {
        return Err(AppError::Conflict(format!(
            "This message is {} and can no longer be cancelled.",
            message.status
        )));
    }
    queries::insert_events(
        conn,
        &[event(
            id,
            "cancelled",
            message.attempts,
            format!("cancelled by {by}"),
        )],
    )?;
    Ok(message)
}

/// Queues a failed message for one more attempt now.
pub fn retry_now(
    conn: &mut DbConn,
    workspace: &Workspace,
    id: MessageId,
    by: &str,
) -> Result<Message, AppError> {
    let message =
        queries::find_by_workspace_and_id(conn, workspace.id, id)?.ok_or(AppError::NotFound)?;
    let now = db::now();
    if message.status() == Status::Failed && message.provider_deleted() {
        return Err(AppError::Conflict(format!(
            "This message cannot be retried: {}; it is not sent any other way.",
            crate::delivery::queries::PROVIDER_DELETED
        )));
    }
    let queued = queries::requeue_failed(conn, workspace.id, id, now)?;
    if !queued {
        return Err(AppError::Conflict(format!(
            "Only a failed message can be retried; this one is {}.",
            message.status
        )));
    }
    queries::insert_events(
        conn,
        &[event(
            id,
            "retry",
            message.attempts,
            format!("retry requested by {by}"),
        )],
    )?;
    Ok(message)
}

/// Releases a message the API stored held (`hold: true`).
pub fn release(
    conn: &mut DbConn,
    workspace: &Workspace,
    id: MessageId,
    by: &str,
) -> Result<Message, AppError> {
    let message =
        queries::find_by_workspace_and_id(conn, workspace.id, id)?.ok_or(AppError::NotFound)?;
    if !queries::release_held(conn, workspace.id, id, db::now())? {
        return Err(AppError::Conflict(format!(
            "Only a message stored with hold can be released; this one is {}.",
            message.status
        )));
    }
    queries::insert_events(
        conn,
        &[event(
            id,
            "released",
            message.attempts,
            format!("released by {by}"),
        )],
    )?;
    Ok(message)
}

/// Releases the messages held because their domain was not authenticated, now that
/// `domain` is. How many.
pub fn release_for_domain(
    conn: &mut DbConn,
    workspace: &Workspace,
    domain: &str,
) -> Result<usize, AppError> {
    let released =
        crate::delivery::queries::release_for_domain(conn, workspace.id, domain, db::now())?;
    let events: Vec<NewMessageEvent> = released
        .iter()
        .map(|(id, attempts)| {
            event(
                *id,
                "released",
                *attempts,
                format!("domain {domain} is authenticated again"),
            )
        })
        .collect();
    queries::insert_events(conn, &events)?;
    Ok(released.len())
}

/// Releases the messages held for a provider that checked green again.
pub fn release_for_provider(
    conn: &mut DbConn,
    workspace: &Workspace,
    provider: &Provider,
) -> Result<usize, AppError> {
    let released =
        crate::delivery::queries::release_for_provider(conn, workspace.id, provider.id, db::now())?;
    let events: Vec<NewMessageEvent> = released
        .iter()
        .map(|(id, attempts)| {
            event(
                *id,
                "released",
                *attempts,
                format!("provider {} checked green again", provider.name),
            )
        })
        .collect();
    queries::insert_events(conn, &events)?;
    Ok(released.len())
}

/// Applies the retention setting: the contents of messages older than `days` days are
/// deleted (their rows stay), in batches so no transaction grows large. `days == 0`
/// keeps everything. Returns how many contents were purged.
pub fn apply_retention(db: &crate::db::Db, days: u32) -> Result<usize, AppError> {
    if days == 0 {
        return Ok(0);
    }
    let now = db::now();
    let cutoff = now - chrono::Duration::days(i64::from(days));
    let mut conn = db.get()?;
    let mut total = 0;
    loop {
        let purged = db::write(&mut conn, |conn| -> Result<usize, AppError> {
            Ok(queries::purge_sends(conn, cutoff, now, 5_000)?)
        })?;
        total += purged;
        if purged < 5_000 {
            return Ok(total);
        }
    }
}

/// What one page of the history reads.
pub struct History {
    /// The page's messages (one more than the page when there are older ones), or a
    /// search's matches.
    pub messages: Vec<Message>,
    /// The workspace's provider names.
    pub names: std::collections::HashMap<ProviderId, String>,
    /// The messages' sends, by id: subject, From name, who sent it, and their text (for a
    /// page, the first 400 characters of each).
    pub sends: std::collections::HashMap<SendId, queries::SendHead>,
    /// The workspace's API key names.
    pub keys: std::collections::HashMap<crate::api::model::ApiKeyId, String>,
    /// Messages per origin under the status and day filters, when `count`.
    pub counts: Option<Vec<(String, i64)>>,
}

/// Which messages a history page shows.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// None (the filters were wrong).
    Nothing,
    /// A keyset page of this many.
    Page(i64),
    /// The newest matches of a search.
    Search(&'a super::search::Search),
}

/// Characters of each text a history page reads for its preview (which shows 80 of them,
/// whitespace flattened).
const PREVIEW_SOURCE: u32 = 400;

/// Reads one page of the history under the filter; with `count`, the tab counts from the
/// tallies.
pub fn history(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    filter: &queries::LogFilter,
    rows: Rows<'_>,
    count: bool,
) -> Result<History, AppError> {
    let messages = match rows {
        Rows::Nothing => Vec::new(),
        Rows::Page(limit) => queries::page(conn, workspace, filter, limit)?,
        Rows::Search(search) => queries::search(conn, workspace, filter, search)?,
    };
    let names = crate::providers::queries::names(conn, workspace)?
        .into_iter()
        .collect();
    let keys = crate::api::queries::list(conn, workspace)?
        .into_iter()
        .map(|k| (k.id, k.name))
        .collect();
    let mut send_ids: Vec<SendId> = messages.iter().map(|m| m.send_id).collect();
    send_ids.sort_unstable();
    send_ids.dedup();
    // A search shows a snippet around the first match, anywhere in the text; a page
    // previews the start of each text.
    let chars = match rows {
        Rows::Search(_) => None,
        _ => Some(PREVIEW_SOURCE),
    };
    let sends = queries::find_send_heads_in(conn, workspace, &send_ids, chars)?
        .into_iter()
        .map(|head| (head.id, head))
        .collect();
    let counts = if count {
        Some(queries::tab_counts(
            conn,
            workspace,
            filter.status,
            filter.since.map(|t| t.date()),
            filter.until.map(|t| t.date()),
        )?)
    } else {
        None
    };
    Ok(History {
        messages,
        names,
        sends,
        keys,
        counts,
    })
}

/// Messages of one day of the overview's chart, by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayCounts {
    /// The day (UTC).
    pub day: chrono::NaiveDate,
    /// Sent.
    pub sent: i64,
    /// Failed.
    pub failed: i64,
    /// Scheduled, queued, sending or held.
    pub waiting: i64,
    /// Cancelled.
    pub cancelled: i64,
}

impl DayCounts {
    /// Every message of the day.
    pub fn total(&self) -> i64 {
        self.sent + self.failed + self.waiting + self.cancelled
    }

    fn add(&mut self, status: &str, n: i64) {
        match Status::parse(status) {
            Some(Status::Sent) => self.sent += n,
            Some(Status::Failed | Status::Bounced) => self.failed += n,
            Some(Status::Cancelled) => self.cancelled += n,
            _ => self.waiting += n,
        }
    }
}

/// What the overview shows of the log: the last 30 days by day and outcome, and the
/// queue right now.
#[derive(Debug, Clone, Default)]
pub struct LogOverview {
    /// 30 days, oldest first, ending today.
    pub days: Vec<DayCounts>,
    /// Messages per status over all time (`status`, count).
    pub statuses: Vec<(String, i64)>,
}

impl LogOverview {
    /// Sums the last `days` days (1 = today).
    pub fn last(&self, days: usize) -> DayCounts {
        let mut sum = DayCounts::default();
        for day in self.days.iter().rev().take(days) {
            sum.sent += day.sent;
            sum.failed += day.failed;
            sum.waiting += day.waiting;
            sum.cancelled += day.cancelled;
        }
        sum
    }

    /// Messages of one status right now.
    pub fn now(&self, status: Status) -> i64 {
        self.statuses
            .iter()
            .filter(|(s, _)| s == status.as_str())
            .map(|(_, n)| n)
            .sum()
    }
}

/// Reads the overview's counts from the tallies (a few hundred rows, whatever the size of
/// the log).
pub fn log_overview(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    today: chrono::NaiveDate,
) -> Result<LogOverview, AppError> {
    let first = today - chrono::Duration::days(29);
    let mut days: Vec<DayCounts> = (0..30)
        .map(|i| DayCounts {
            day: first + chrono::Duration::days(i),
            ..DayCounts::default()
        })
        .collect();
    for (day, status, n) in queries::daily_counts(conn, workspace, first)? {
        let index = (day - first).num_days();
        if let Some(counts) = usize::try_from(index).ok().and_then(|i| days.get_mut(i)) {
            counts.add(&status, n);
        }
    }
    Ok(LogOverview {
        days,
        statuses: queries::status_counts(conn, workspace)?,
    })
}

#[cfg(test)]
mod tests {
    use super::new_message_id;

    #[test]
    fn message_ids_made_later_sort_later_and_keep_80_random_bits() {
        let mut ids = Vec::new();
        for _ in 0..20 {
            ids.push(new_message_id("ann@example.com"));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(
            ids, sorted,
            "later ids sort later (the unique index grows at its end)"
        );
        for id in &ids {
            let local = id
                .strip_prefix('<')
                .and_then(|rest| rest.strip_suffix("@example.com>"))
                .unwrap_or_default();
            assert_eq!(local.len(), 32, "{id}");
            assert!(local.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
        let random: std::collections::HashSet<&str> = ids.iter().map(|id| &id[13..33]).collect();
        assert_eq!(random.len(), ids.len(), "the random part differs");
    }
}
