//! Messages: rows of the log and queue (a send, one message per address), their events.

use chrono::NaiveDateTime;
use diesel::prelude::*;

pub use super::kinds::*;
use crate::accounts::model::UserId;
use crate::db::schema::{message_attachments, message_events, messages, sends};
pub use crate::ids::{ContactId, MailingId, MessageId, SendId};
use crate::providers::model::ProviderId;
use crate::workspaces::model::WorkspaceId;

/// A stored message: one recipient's delivery, the queue and the log row.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = messages)]
pub struct Message {
    /// Id.
    pub id: MessageId,
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// The send it is a copy of (who, how, what).
    pub send_id: SendId,
    /// Email (SMS later).
    pub channel: Channel,
    /// Outbound (inbound later).
    pub direction: Direction,
    /// The field of the send its address came from.
    pub recipient_kind: RecipientKind,
    /// `web`, `sys` or `alert` ([`Origin`]): the History tab (also on the row: the log's
    /// tabs, tallies and indexes read it).
    pub origin: String,
    /// The provider it goes through.
    pub provider_id: Option<ProviderId>,
    /// The send's From address (also on the row: the log's sender filter reads it).
    pub from_address: String,
    /// This copy's address.
    pub recipient: String,
    /// The contact it was sent to.
    pub contact_id: Option<ContactId>,
    /// The mailing it belongs to.
    pub mailing_id: Option<MailingId>,
    /// RFC 5322 Message-ID, kept across retries and reclaims.
    pub message_id: String,
    /// State.
    pub status: Status,
    /// Why it is held: `provider`, `api` or `mailing`.
    pub hold_reason: Option<String>,
    /// Attempts made.
    pub attempts: i32,
    /// Attempts allowed (retry count + 1).
    pub max_attempts: i32,
    /// When it is next due.
    pub due_at: NaiveDateTime,
    /// The send-at the sender asked for, if any.
    pub send_at: Option<NaiveDateTime>,
    /// The node holding it while sending.
    pub lease_owner: Option<String>,
    /// The lease ends then; after it, another node may take the message over.
    pub lease_until: Option<NaiveDateTime>,
    /// An attempt may have been accepted before a crash: a copy may exist.
    pub possible_duplicate: bool,
    /// The last result in words (the server's reply).
    pub result: String,
    /// The last basic SMTP reply code.
    pub smtp_code: Option<i32>,
    /// The last enhanced status code (RFC 3463), e.g. `5.1.1`.
    pub smtp_enhanced: Option<String>,
    /// Creation time.
    pub created_at: NaiveDateTime,
    /// When it was accepted.
    pub sent_at: Option<NaiveDateTime>,
    /// Last change.
    pub updated_at: NaiveDateTime,
    /// The DKIM-Signature of an attempt that ended in a retry (the next sends it again).
    pub dkim_signature: Option<String>,
}

impl Message {
    /// The status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Whether it went through a provider that has since been deleted: it cannot go out
    /// any other way (Mailroom's own alerts never have a provider).
    pub fn provider_deleted(&self) -> bool {
        self.provider_id.is_none() && self.origin != Origin::Alert.as_str()
    }

    /// Whether a Retry may queue it again.
    pub fn can_retry(&self) -> bool {
        self.status == Status::Failed && !self.provider_deleted()
    }

    /// Whether it was sent successfully (the send record's "Successful").
    pub fn successful(&self) -> bool {
        self.status == Status::Sent
    }
}

/// A stored send: who sent it and how, its From, copies and contents, shared by the
/// messages of all its recipients.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = sends)]
pub struct Send {
    /// Id.
    pub id: SendId,
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// Text (CRLF line endings).
    pub text_body: String,
    /// HTML (CRLF line endings).
    pub html_body: Option<String>,
    /// How many files are attached.
    pub attachments: i32,
    /// Creation time.
    pub created_at: NaiveDateTime,
    /// When retention deleted the text, HTML and files.
    pub purged_at: Option<NaiveDateTime>,
    /// Who sent it (console), or for whom (API `owner`).
    pub user_id: Option<UserId>,
    /// The public id of the session it was sent from (never the cookie value).
    pub session_public_id: Option<String>,
    /// The API key that sent it.
    pub api_key_id: Option<crate::api::model::ApiKeyId>,
    /// From address.
    pub from_address: String,
    /// From display name.
    pub from_name: String,
    /// Reply-To address (empty: none).
    pub reply_to: String,
    /// The To addresses as written, one per line: the `To` header of every copy (empty:
    /// each copy is addressed to its own recipient alone, as a mailing's are).
    pub to_addresses: String,
    /// CC addresses as written (`Name <address>` or an address), comma-separated.
    pub cc: String,
    /// BCC addresses, comma-separated (envelope only).
    pub bcc: String,
    /// Subject, with the site-name prefix.
    pub subject: String,
    /// `References` of a reply: the thread's Message-IDs, oldest first; the last one is
    /// the message it answers (`In-Reply-To`).
    pub references_header: Option<String>,
    /// The caller's contact ids (JSON array), as an API call gave them.
    pub contact_ids: Option<String>,
    /// The mailing whose content it is.
    pub mailing_id: Option<MailingId>,
}

impl Send {
    /// To addresses.
    pub fn to_list(&self) -> Vec<&str> {
        split_list(&self.to_addresses)
    }

    /// CC addresses.
    pub fn cc_list(&self) -> Vec<&str> {
        split_list(&self.cc)
    }

    /// BCC addresses.
    pub fn bcc_list(&self) -> Vec<&str> {
        split_list(&self.bcc)
    }

    /// The Message-ID this one answers (`In-Reply-To`): the last of its `References`.
    pub fn in_reply_to(&self) -> Option<&str> {
        self.references_header.as_deref()?.split_whitespace().last()
    }
}

/// The addresses of a stored list: one per line (a quoted display name may hold commas).
fn split_list(value: &str) -> Vec<&str> {
    value
        .split('\n')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// A message to store.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = messages)]
pub struct NewMessage {
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// The send (filled in by the writer that stores it).
    pub send_id: SendId,
    /// Channel.
    pub channel: Channel,
    /// Direction.
    pub direction: Direction,
    /// The field the address came from.
    pub recipient_kind: RecipientKind,
    /// `web`, `sys` or `alert` ([`Origin`]).
    pub origin: String,
    /// Provider.
    pub provider_id: Option<ProviderId>,
    /// The send's From address.
    pub from_address: String,
    /// This copy's address.
    pub recipient: String,
    /// Contact.
    pub contact_id: Option<ContactId>,
    /// Mailing.
    pub mailing_id: Option<MailingId>,
    /// Message-ID.
    pub message_id: String,
    /// `scheduled`, `queued` or `held`.
    pub status: Status,
    /// `api` when stored held until released.
    pub hold_reason: Option<String>,
    /// 0.
    pub attempts: i32,
    /// Retry count + 1.
    pub max_attempts: i32,
    /// When due.
    pub due_at: NaiveDateTime,
    /// Requested send-at.
    pub send_at: Option<NaiveDateTime>,
    /// False.
    pub possible_duplicate: bool,
    /// Empty.
    pub result: String,
    /// Now.
    pub created_at: NaiveDateTime,
    /// Now.
    pub updated_at: NaiveDateTime,
}

impl NewMessage {
    /// An outbound email to `recipient` (To) of a send, queued now: what callers change
    /// is set on the result.
    pub fn email(
        workspace: WorkspaceId,
        send: SendId,
        origin: Origin,
        from_address: &str,
        recipient: String,
        now: NaiveDateTime,
    ) -> Self {
        Self {
            workspace_id: workspace,
            send_id: send,
            channel: Channel::Email,
            direction: Direction::Outbound,
            recipient_kind: RecipientKind::To,
            origin: origin.as_str().into(),
            provider_id: None,
            from_address: from_address.to_owned(),
            recipient,
            contact_id: None,
            mailing_id: None,
            message_id: crate::messages::service::new_message_id(from_address),
            status: Status::Queued,
            hold_reason: None,
            attempts: 0,
            max_attempts: 4,
            due_at: now,
            send_at: None,
            possible_duplicate: false,
            result: String::new(),
            created_at: now,
            updated_at: now,
        }
    }
}

impl NewSend {
    /// A send of `workspace` from `from_address`, made now, saying `subject` and `text`:
    /// what callers change is set on the result.
    pub fn new(
        workspace: WorkspaceId,
        from_address: &str,
        subject: String,
        text: String,
        now: NaiveDateTime,
    ) -> Self {
        Self {
            workspace_id: workspace,
            text_body: text,
            html_body: None,
            attachments: 0,
            created_at: now,
            user_id: None,
            session_public_id: None,
            api_key_id: None,
            from_address: from_address.to_owned(),
            from_name: String::new(),
            reply_to: String::new(),
            to_addresses: String::new(),
            cc: String::new(),
            bcc: String::new(),
            subject,
            references_header: None,
            contact_ids: None,
            mailing_id: None,
            sender_id: None,
        }
    }
}

/// A file attached to a send.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = message_attachments)]
pub struct Attachment {
    /// The send it belongs to.
    pub send_id: SendId,
    /// File name (one line, as uploaded).
    pub file_name: String,
    /// MIME type.
    pub content_type: String,
    /// Bytes.
    pub size: i64,
    /// The file.
    pub data: Vec<u8>,
}

/// A send to store.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = sends)]
pub struct NewSend {
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// Text.
    pub text_body: String,
    /// HTML.
    pub html_body: Option<String>,
    /// How many files will be attached.
    pub attachments: i32,
    /// Now.
    pub created_at: NaiveDateTime,
    /// Sender (console) or owner (API).
    pub user_id: Option<UserId>,
    /// Sender's session public id.
    pub session_public_id: Option<String>,
    /// API key.
    pub api_key_id: Option<crate::api::model::ApiKeyId>,
    /// From address.
    pub from_address: String,
    /// From name.
    pub from_name: String,
    /// Reply-To (empty: none).
    pub reply_to: String,
    /// To, one per line (empty: each copy to its recipient alone).
    pub to_addresses: String,
    /// CC, one per line.
    pub cc: String,
    /// BCC, one per line.
    pub bcc: String,
    /// Subject.
    pub subject: String,
    /// `References`.
    pub references_header: Option<String>,
    /// Contact ids (JSON array).
    pub contact_ids: Option<String>,
    /// Mailing.
    pub mailing_id: Option<MailingId>,
    /// The sender it goes out as (`None`: Mailroom's own alerts, older sends).
    pub sender_id: Option<crate::ids::SenderId>,
}

/// A stored event.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = message_events)]
pub struct MessageEvent {
    /// Id.
    pub id: i64,
    /// Message.
    pub message_id: MessageId,
    /// `queued`, `attempt`, `sent`, `retry`, `failed`, `held`, `released`, `reclaimed`, `cancelled`.
    pub kind: String,
    /// Which attempt.
    pub attempt: i32,
    /// Basic reply code.
    pub smtp_code: Option<i32>,
    /// Enhanced code.
    pub smtp_enhanced: Option<String>,
    /// Words.
    pub detail: String,
    /// When.
    pub created_at: NaiveDateTime,
}

/// An event to store.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = message_events)]
pub struct NewMessageEvent {
    /// Message.
    pub message_id: MessageId,
    /// Kind.
    pub kind: &'static str,
    /// Attempt.
    pub attempt: i32,
    /// Basic reply code.
    pub smtp_code: Option<i32>,
    /// Enhanced code.
    pub smtp_enhanced: Option<String>,
    /// Words.
    pub detail: String,
    /// When.
    pub created_at: NaiveDateTime,
}
