//! Reading messages back (`GET /api/v1/messages[/{id}]`) and changing one (cancel, release).

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::*;
use crate::api::auth::ApiCaller;
use crate::api::problem::responses;
use crate::error::AppError;
use crate::error::FieldProblem;
use crate::messages::model::{Message, MessageEvent, MessageId, Status};
use crate::messages::{queries as messages, service as message_rules};
use crate::state::AppState;

/// One attempt or state change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// `retry`, `sent`, `failed`, `held`, …
    pub kind: String,
    /// Attempt number.
    pub attempt: i32,
    /// Basic SMTP reply code.
    pub smtp_code: Option<i32>,
    /// Enhanced status code.
    pub smtp_enhanced: Option<String>,
    /// The reply or what happened.
    pub detail: String,
    /// When.
    pub at: String,
}

/// The whole send record of a message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    /// Id.
    pub id: i64,
    /// Status.
    pub status: String,
    /// Whether it was sent.
    pub successful: bool,
    /// Result in words (the last reply).
    pub result: String,
    /// Last basic SMTP reply code.
    pub smtp_code: Option<i32>,
    /// Last enhanced status code.
    pub smtp_enhanced: Option<String>,
    /// This copy's recipient.
    pub to: String,
    /// The field of the send it came from: `to`, `cc` or `bcc` (each address gets one
    /// copy).
    pub recipient_kind: String,
    /// The send's To addresses (every copy's `To` header).
    pub to_all: Vec<String>,
    /// CC.
    pub cc: Vec<String>,
    /// BCC.
    pub bcc: Vec<String>,
    /// From address.
    pub from: String,
    /// From name.
    pub from_name: String,
    /// Reply-To, if any.
    pub reply_to: Option<String>,
    /// Subject as sent.
    pub subject: String,
    /// Provider id.
    pub provider: Option<i64>,
    /// `web` (the console), `sys` (the API) or `alert` (Mailroom's own alerts).
    pub origin: String,
    /// The API key's name, for messages sent through the API.
    pub source: Option<String>,
    /// The member it was sent for.
    pub owner: Option<i64>,
    /// RFC 5322 Message-ID.
    pub message_id: String,
    /// The Message-ID it answers.
    pub in_reply_to: Option<String>,
    /// Contact ids given.
    pub contact_ids: Vec<ContactId>,
    /// Attempts made.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// May have been delivered twice (crash mid-send).
    pub possible_duplicate: bool,
    /// Created.
    pub created_at: String,
    /// Requested send time.
    pub send_at: Option<String>,
    /// Accepted by the server at.
    pub sent_at: Option<String>,
    /// Every attempt and state change, oldest first.
    pub events: Vec<EventView>,
}

impl MessageView {
    fn new(
        message: Message,
        send: &crate::messages::model::Send,
        events: Vec<MessageEvent>,
        source: Option<String>,
    ) -> Self {
        let list = |items: Vec<&str>| items.into_iter().map(str::to_owned).collect();
        Self {
            in_reply_to: send.in_reply_to().map(str::to_owned),
            id: message.id.0,
            successful: message.successful(),
            to_all: list(send.to_list()),
            cc: list(send.cc_list()),
            bcc: list(send.bcc_list()),
            contact_ids: send
                .contact_ids
                .as_deref()
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default(),
            status: message.status.to_string(),
            result: message.result,
            smtp_code: message.smtp_code,
            smtp_enhanced: message.smtp_enhanced,
            to: message.recipient,
            recipient_kind: message.recipient_kind.to_string(),
            from: send.from_address.clone(),
            from_name: send.from_name.clone(),
            reply_to: (!send.reply_to.is_empty()).then(|| send.reply_to.clone()),
            subject: send.subject.clone(),
            provider: message.provider_id.map(|p| p.0),
            origin: message.origin,
            source,
            owner: send.user_id.map(|u| u.0),
            message_id: message.message_id,
            attempts: message.attempts,
            max_attempts: message.max_attempts,
            possible_duplicate: message.possible_duplicate,
            created_at: timestamp(message.created_at),
            send_at: message.send_at.map(timestamp),
            sent_at: message.sent_at.map(timestamp),
            events: events
                .into_iter()
                .map(|e| EventView {
                    kind: e.kind,
                    attempt: e.attempt,
                    smtp_code: e.smtp_code,
                    smtp_enhanced: e.smtp_enhanced,
                    detail: e.detail,
                    at: timestamp(e.created_at),
                })
                .collect(),
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/messages/{id}",
    tag = "messages",
    params(("id" = i64, Path, description = "Message id")),
    responses(
        (status = 200, description = "The whole send record and every attempt", body = MessageView),
        (status = 401, response = responses::Unauthorized),
        (status = 404, response = responses::NotFound),
        (status = 429, response = responses::RateLimited)
    ),
    security(("bearer" = []))
)]
/// `GET /api/v1/messages/{id}`: a `send` key reads what it sent; a `send+read` key any
/// message of the workspace.
pub async fn show(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = message_id(&path)?;
    let found = state
        .db
        .run(move |conn| {
            let Some((message, send)) = visible(conn, &caller, id)? else {
                return Ok(None);
            };
            let events = messages::events_of(conn, message.id)?;
            let source = match send.api_key_id {
                Some(id) => {
                    crate::api::queries::find(conn, message.workspace_id, id)?.map(|k| k.name)
                }
                None => None,
            };
            Ok(Some((message, send, events, source)))
        })
        .await?;
    let (message, send, events, source) = found.ok_or(AppError::NoSuch("message"))?;
    Ok(HttpResponse::Ok().json(MessageView::new(message, &send, events, source)))
}

/// Reads a message the caller may see: any of the workspace with `send+read`, only its
/// own sends with `send`.
fn visible(
    conn: &mut crate::db::DbConn,
    caller: &ApiCaller,
    id: i64,
) -> Result<Option<(Message, crate::messages::model::Send)>, AppError> {
    let workspace = caller.workspace.id;
    let Some(message) = messages::find_by_workspace_and_id(conn, workspace, MessageId(id))? else {
        return Ok(None);
    };
    let Some(send) = messages::find_sends_in(conn, workspace, &[message.send_id])?.pop() else {
        return Ok(None);
    };
    let mine = caller.key.can_read() || send.api_key_id == Some(caller.key.id);
    Ok(mine.then_some((message, send)))
}

/// A state change on one message (`cancel`, `release`), answered with its record.
async fn change(
    state: &AppState,
    caller: ApiCaller,
    id: i64,
    apply: fn(
        &mut crate::db::DbConn,
        &crate::workspaces::model::Workspace,
        MessageId,
        &str,
    ) -> Result<Message, AppError>,
) -> Result<HttpResponse, AppError> {
    let changed = state
        .db
        .write(move |conn| {
            if visible(conn, &caller, id)?.is_none() {
                return Ok(None);
            }
            let by = format!("API key {}", caller.key.name);
            apply(conn, &caller.workspace, MessageId(id), &by)?;
            let (message, send) = visible(conn, &caller, id)?.ok_or(AppError::NotFound)?;
            let events = messages::events_of(conn, message.id)?;
            let source = match send.api_key_id {
                Some(key) => {
                    crate::api::queries::find(conn, message.workspace_id, key)?.map(|k| k.name)
                }
                None => None,
            };
            Ok(Some((message, send, events, source)))
        })
        .await?;
    let (message, send, events, source) = changed.ok_or(AppError::NoSuch("message"))?;
    state.engine.wake();
    Ok(HttpResponse::Ok().json(MessageView::new(message, &send, events, source)))
}

#[utoipa::path(
    post,
    path = "/api/v1/messages/{id}/cancel",
    tag = "messages",
    params(("id" = i64, Path, description = "Message id")),
    responses(
        (status = 200, description = "Cancelled", body = MessageView),
        (status = 401, response = responses::Unauthorized),
        (status = 404, response = responses::NotFound),
        (status = 409, response = responses::Conflict),
        (status = 429, response = responses::RateLimited)
    ),
    security(("bearer" = []))
)]
/// `POST /api/v1/messages/{id}/cancel`: a message not sent yet (scheduled, queued, held).
pub async fn cancel(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = message_id(&path)?;
    change(&state, caller, id, message_rules::cancel).await
}

#[utoipa::path(
    post,
    path = "/api/v1/messages/{id}/release",
    tag = "messages",
    params(("id" = i64, Path, description = "Message id")),
    responses(
        (status = 200, description = "Released: queued, or scheduled at its send-at", body = MessageView),
        (status = 401, response = responses::Unauthorized),
        (status = 404, response = responses::NotFound),
        (status = 409, response = responses::Conflict),
        (status = 429, response = responses::RateLimited)
    ),
    security(("bearer" = []))
)]
/// `POST /api/v1/messages/{id}/release`: sends a message stored with `hold`.
pub async fn release(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = message_id(&path)?;
    change(&state, caller, id, message_rules::release).await
}

/// Query of `GET /api/v1/messages`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// One status.
    #[serde(default)]
    pub status: Option<String>,
    /// Created at or after (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    #[serde(default)]
    pub limit: Option<String>,
}

/// A message in a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageSummary {
    /// Id.
    pub id: i64,
    /// Status.
    pub status: String,
    /// To.
    pub to: String,
    /// Subject as sent.
    pub subject: String,
    /// Last basic SMTP reply code.
    pub smtp_code: Option<i32>,
    /// Result in words.
    pub result: String,
    /// Created.
    pub created_at: String,
    /// Accepted at.
    pub sent_at: Option<String>,
    /// Its whole record.
    pub url: String,
}

/// A page of messages.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    /// Newest first.
    pub messages: Vec<MessageSummary>,
    /// Pass as `cursor` for older ones; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/messages",
    tag = "messages",
    params(ListQuery),
    responses(
        (status = 200, description = "Newest first", body = MessagePage),
        (status = 400, response = responses::Malformed),
        (status = 401, response = responses::Unauthorized),
        (status = 422, response = responses::Invalid),
        (status = 429, response = responses::RateLimited)
    ),
    security(("bearer" = []))
)]
/// `GET /api/v1/messages?status=&since=&cursor=&limit=`: newest first, cursor pages.
pub async fn list(
    state: web::Data<AppState>,
    caller: ApiCaller,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> Result<HttpResponse, AppError> {
    let raw = query.into_inner();
    let query: ListQuery = serde_json::to_value(&raw)
        .and_then(serde_json::from_value)
        .map_err(|e| {
            let name = e
                .to_string()
                .split('`')
                .nth(1)
                .unwrap_or("query")
                .to_owned();
            AppError::field(name, e.to_string())
        })?;
    let mut problems = Vec::new();
    let status = match query.status.as_deref() {
        None => None,
        Some(value) => {
            let parsed = Status::parse(value);
            if parsed.is_none() {
                problems.push(FieldProblem {
                    field: "status".into(),
                    detail: format!("One of {}.", Status::ALL.map(Status::as_str).join(", ")),
                });
            }
            parsed
        }
    };
    let since = rfc3339(query.since.as_deref()).unwrap_or_else(|detail| {
        problems.push(FieldProblem {
            field: "since".into(),
            detail,
        });
        None
    });
    let before = match query.cursor.as_deref() {
        None => None,
        Some(value) => match value.parse::<i64>() {
            Ok(id) if id > 0 => Some(MessageId(id)),
            _ => {
                problems.push(FieldProblem {
                    field: "cursor".into(),
                    detail: "Pass the next_cursor of the previous page.".into(),
                });
                None
            }
        },
    };
    let limit = match query.limit.as_deref() {
        None => 50,
        Some(value) => match value.parse::<i64>() {
            Ok(n) if (1..=200).contains(&n) => n,
            _ => {
                problems.push(FieldProblem {
                    field: "limit".into(),
                    detail: "From 1 to 200.".into(),
                });
                50
            }
        },
    };
    if !problems.is_empty() {
        return Err(AppError::Fields(problems));
    }
    let filter = messages::LogFilter {
        key: (!caller.key.can_read()).then_some(caller.key.id),
        status,
        since,
        before,
        ..messages::LogFilter::default()
    };
    let workspace = caller.workspace.id;
    let (mut rows, subjects) = state
        .db
        .run(move |conn| {
            let rows = messages::page(conn, workspace, &filter, limit)?;
            let mut ids: Vec<_> = rows.iter().map(|m| m.send_id).collect();
            ids.sort_unstable();
            ids.dedup();
            let subjects: std::collections::HashMap<_, _> =
                messages::find_send_heads_in(conn, workspace, &ids, Some(0))?
                    .into_iter()
                    .map(|head| (head.id, head.subject))
                    .collect();
            Ok((rows, subjects))
        })
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(50));
    let next_cursor = more
        .then(|| rows.last().map(|m| m.id.0.to_string()))
        .flatten();
    let messages = rows
        .into_iter()
        .map(|m| MessageSummary {
            id: m.id.0,
            url: format!("/api/v1/messages/{}", m.id.0),
            created_at: timestamp(m.created_at),
            sent_at: m.sent_at.map(timestamp),
            status: m.status.to_string(),
            subject: subjects.get(&m.send_id).cloned().unwrap_or_default(),
            to: m.recipient,
            smtp_code: m.smtp_code,
            result: m.result,
        })
        .collect();
    Ok(HttpResponse::Ok().json(MessagePage {
        messages,
        next_cursor,
    }))
}
