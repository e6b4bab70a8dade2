//! Messages: rows of the log and queue, their events, and the states a message goes through.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_derive_newtype::DieselNewType;
use serde::{Deserialize, Serialize};

use crate::accounts::model::UserId;
use crate::db::schema::{message_attachments, message_events, messages, sends};
use crate::providers::model::ProviderId;
use crate::workspaces::model::WorkspaceId;

/// A message's id.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, DieselNewType, Serialize, Deserialize,
)]
pub struct MessageId(pub i64);

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Sent by a person in the console.
    Web,
    /// Sent by another system through the API.
    Sys,
    /// Mailroom's own mail (alerts to admins): the only mail that may go through the
    /// operator's system provider. Never inferred from a missing provider, which is what a
    /// deleted provider leaves behind too.
    Alert,
}

impl Origin {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Web => "web",
            Origin::Sys => "sys",
            Origin::Alert => "alert",
        }
    }
}

/// A History tab (seed 001: Web = messages sent by hand, Sys = automatic ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// Sent in the console.
    Web,
    /// Sent through the API, and Mailroom's own alerts.
    Sys,
}

impl Tab {
    /// The stored origins the tab shows.
    pub fn origins(self) -> &'static [&'static str] {
        match self {
            Tab::Web => &["web"],
            Tab::Sys => &["sys", "alert"],
        }
    }
}

/// Text columns that hold one of an enum's stored forms: written as `as_str()`, read back
/// with `parse()`. A value the enum does not know is an error when read, never a guess.
macro_rules! text_enum {
    ($t:ty) => {
        impl<DB> diesel::serialize::ToSql<diesel::sql_types::Text, DB> for $t
        where
            DB: diesel::backend::Backend,
            str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, DB>,
            ) -> diesel::serialize::Result {
                self.as_str().to_sql(out)
            }
        }

        impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for $t
        where
            DB: diesel::backend::Backend,
            String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
                let value = String::from_sql(bytes)?;
                <$t>::parse(&value).ok_or_else(|| {
                    format!("{value:?} is not a {} the code knows", stringify!($t)).into()
                })
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A message's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::AsExpression, diesel::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub enum Status {
    /// Waiting for its send-at time.
    Scheduled,
    /// Due (or waiting for a retry).
    Queued,
    /// Claimed by a node, being sent.
    Sending,
    /// Accepted by the provider (2xx).
    Sent,
    /// Refused (5xx), or out of retries.
    Failed,
    /// Cancelled before it was sent.
    Cancelled,
    /// Waiting for its provider to sign in again (or its mailing to resume).
    Held,
    /// An inbound message that arrived (receiving).
    Received,
}

text_enum!(Status);

impl Status {
    /// Every status, in the order a filter lists them.
    pub const ALL: [Status; 8] = [
        Status::Scheduled,
        Status::Queued,
        Status::Sending,
        Status::Sent,
        Status::Failed,
        Status::Cancelled,
        Status::Held,
        Status::Received,
    ];

    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Held => "held",
            Status::Received => "received",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Badge colour class (UI.md: scheduled grey, queued/sending blue, sent green,
    /// failed red, held amber, cancelled grey struck).
    pub fn badge(self) -> &'static str {
        match self {
            Status::Scheduled => "grey",
            Status::Queued => "blue",
            Status::Sending => "blue sending",
            Status::Sent => "green",
            Status::Failed => "red",
            Status::Cancelled => "grey struck",
            Status::Held => "amber",
            Status::Received => "green",
        }
    }

    /// Whether the message may still change by itself (the page polls while it does).
    pub fn is_moving(self) -> bool {
        matches!(self, Status::Queued | Status::Sending | Status::Scheduled)
    }
}

/// A message's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::AsExpression, diesel::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub enum Channel {
    /// Email.
    Email,
    /// SMS (a later issue).
    Sms,
}

text_enum!(Channel);

impl Channel {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Channel> {
        [Channel::Email, Channel::Sms]
            .into_iter()
            .find(|c| c.as_str() == value)
    }
}

/// Whether a message goes out or came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::AsExpression, diesel::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub enum Direction {
    /// Sent by Mailroom.
    Outbound,
    /// Received (a later issue).
    Inbound,
}

text_enum!(Direction);

impl Direction {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Direction> {
        [Direction::Outbound, Direction::Inbound]
            .into_iter()
            .find(|d| d.as_str() == value)
    }
}

/// The field of the send a message's address came from: each address gets one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::AsExpression, diesel::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub enum RecipientKind {
    /// To.
    To,
    /// Cc.
    Cc,
    /// Bcc (never in a header).
    Bcc,
}

text_enum!(RecipientKind);

impl RecipientKind {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientKind::To => "to",
            RecipientKind::Cc => "cc",
            RecipientKind::Bcc => "bcc",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<RecipientKind> {
        [RecipientKind::To, RecipientKind::Cc, RecipientKind::Bcc]
            .into_iter()
            .find(|k| k.as_str() == value)
    }

    /// As a header name reads it.
    pub fn label(self) -> &'static str {
        match self {
            RecipientKind::To => "To",
            RecipientKind::Cc => "Cc",
            RecipientKind::Bcc => "Bcc",
        }
    }
}

/// A send's id: one compose, API call, alert or mailing content.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, DieselNewType, Serialize, Deserialize,
)]
pub struct SendId(pub i64);

/// A contact's id (contacts come in a later issue; messages refer to them already).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, DieselNewType, Serialize, Deserialize,
)]
pub struct ContactId(pub i64);

/// A mailing's id (mailings come in a later issue; messages refer to them already).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, DieselNewType, Serialize, Deserialize,
)]
pub struct MailingId(pub i64);

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

/// The compose form as submitted.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct ComposeForm {
    /// Provider id.
    pub provider: String,
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
    provider: Option<Text<String>>,
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
            provider: text(self.provider),
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
        let provider = errors.check(
            "provider",
            self.provider
                .trim()
                .parse::<i64>()
                .map(ProviderId)
                .map_err(|_| "Choose a provider.".to_string()),
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
        let subject = self.subject.trim();
        if subject.is_empty() {
            errors.add("subject", "Enter a subject.");
        } else if subject.chars().any(char::is_control) {
            errors.add(
                "subject",
                "A subject cannot contain line breaks or control characters.",
            );
        } else if subject.chars().count() > 900 {
            errors.add("subject", "A subject has at most 900 characters.");
        }
        if self.text.trim().is_empty() && self.html.trim().is_empty() {
            errors.add("text", "Write the message (text, HTML, or both).");
        }
        for (field, value) in [("text", &self.text), ("html", &self.html)] {
            if let Some(why) = body_problem(value) {
                errors.add(field, why);
            }
        }
        let send_at = errors.check("send_at", parse_send_at(&self.send_at));
        let retry_count = errors.check(
            "retry_count",
            match self.retry_count.trim() {
                "" => Ok(default_retries),
                value => value
                    .parse::<i32>()
                    .ok()
                    .filter(|n| (0..=10).contains(n))
                    .ok_or_else(|| "Retries are a number from 0 to 10.".to_string()),
            },
        );
        if !errors.is_empty() {
            return None;
        }
        let html = Some(self.html.trim())
            .filter(|h| !h.is_empty())
            .map(crate::delivery::build::crlf);
        Some(Compose {
            provider: provider?,
            to: to?,
            cc: cc?,
            bcc: bcc?,
            subject: subject.to_owned(),
            text: crate::delivery::build::crlf(&self.text),
            html,
            send_at: send_at?,
            retry_count: retry_count?,
            files: Vec::new(),
            reply_to: reply_to?,
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
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(Some)
        .ok_or_else(|| format!("{value:?} is not a date and time like 2026-12-01T09:30 (UTC)."))
}

#[cfg(test)]
mod tests {
    use super::{Status, file_name, parse_addresses, parse_mailbox, split_addresses};

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
    fn a_status_the_code_does_not_know_is_an_error() {
        assert_eq!(Status::parse("sent"), Some(Status::Sent));
        assert_eq!(Status::parse("received"), Some(Status::Received));
        assert_eq!(Status::parse("paused"), None);
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
