//! `POST /api/v1/messages`: store a send (once, with an Idempotency-Key), optionally wait for its outcome.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::per_request::per_request_provider;
use super::*;
use crate::api::auth::ApiCaller;
use crate::api::problem::responses;
use crate::error::AppError;
use crate::messages::model::{Message, MessageId};
use crate::messages::{queries as messages, service as message_rules};
use crate::providers::model::Provider;
use crate::senders::model::Sender;
use crate::state::AppState;

/// One stored message in a 202 answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Id.
    pub id: i64,
    /// Its To recipient.
    pub to: String,
    /// `queued`, `scheduled` or `held`; with `wait`, `sent` or `failed` once final.
    pub status: String,
    /// Where to read it back.
    pub url: String,
    /// With `wait`: the server's basic reply code once final.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_code: Option<i32>,
    /// With `wait`: the enhanced status code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_enhanced: Option<String>,
    /// With `wait`: the reply text (the flow's "response").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// Query of `POST /api/v1/messages`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SendQuery {
    /// Seconds (at most 30) to wait for every message to be sent or to fail.
    #[serde(default)]
    pub wait: Option<String>,
}

/// Most seconds `wait` may ask for.
pub const MAX_WAIT: u64 = 30;

/// The 202 answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AcceptedList {
    /// One per address (To, then Cc, then Bcc), in order.
    pub messages: Vec<Accepted>,
}

#[utoipa::path(
    post,
    path = "/api/v1/messages",
    tag = "messages",
    params(SendQuery, ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: remembered 24 h per API key")),
    request_body(content = SendRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Stored (committed): one message per address (To, Cc and Bcc)", body = AcceptedList),
        (status = 200, description = "With `wait`: every message is sent or failed", body = AcceptedList),
        (status = 400, response = responses::Malformed),
        (status = 401, response = responses::Unauthorized),
        (status = 409, response = responses::Conflict),
        (status = 413, response = responses::TooLarge),
        (status = 422, response = responses::Invalid),
        (status = 429, response = responses::RateLimited)
    ),
    security(("bearer" = []))
)]
/// `POST /api/v1/messages[?wait=SECONDS]`: stores one message per address (To, Cc, Bcc); answers
/// 202 once they are committed, or with `wait`, 200 once every one is sent or failed
/// (with the reply code and text), 202 with what is known if that takes longer.
pub async fn send(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    caller: ApiCaller,
    query: web::Query<SendQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let idempotency = idempotency_key(&req)?;
    // Only a request with an Idempotency-Key needs its fingerprint.
    let fingerprint = match &idempotency {
        Some(_) => crate::api::service::hash(&format!(
            "{}\n{}",
            req.query_string(),
            String::from_utf8_lossy(&body)
        )),
        None => String::new(),
    };
    // A key still being served here: 409. A remembered one: the same request gets the
    // same answer; another request, 422.
    let _in_flight = match &idempotency {
        Some(idem) => {
            let guard = state.api.begin(caller.key.id, idem).ok_or_else(|| {
                AppError::Conflict(
                    "A request with this Idempotency-Key is still being served; retry when it has answered."
                        .into(),
                )
            })?;
            let (key, wanted) = (caller.key.id, idem.clone());
            let remembered = state
                .db
                .run(move |conn| Ok(crate::api::queries::find_remembered(conn, key, &wanted)?))
                .await?
                .filter(|r| r.created_at > crate::db::now() - remember_for());
            if let Some(remembered) = remembered {
                return replay(&remembered, &fingerprint);
            }
            Some(guard)
        }
        None => None,
    };
    let wait = match query.wait.as_deref().map(str::trim) {
        None => None,
        Some(value) => Some(
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= MAX_WAIT)
                .ok_or_else(|| AppError::field("wait", format!("Seconds from 0 to {MAX_WAIT}.")))?,
        ),
    };
    let request: SendRequest = parse_json(&body)?;
    let mut input = validate(&request, state.settings.retry_count)?;
    let ApiCaller { key, workspace } = caller;
    let (workspace_id, caller_key) = (workspace.id, key.id);
    let attachment_limit = state.settings.attachment_limit_mb;
    let (remember_key, remember_idem, remember_hash) =
        (key.id, idempotency.clone(), fingerprint.clone());
    // Only a ready sender of the workspace sends: the one `from` names, or the key's
    // default sender (seed 001).
    let ready = match state.api.fresh_senders(workspace.id) {
        Some(ready) => ready,
        None => {
            let (api, workspace) = (state.api.clone(), workspace.clone());
            state
                .db
                .run(move |conn| api.ready_senders(conn, &workspace))
                .await?
        }
    };
    let mut from = choose_sender(&ready, &request, key.default_sender_id)?;
    if let Some(smtp) = &request.smtp {
        from.provider = per_request_provider(&state, &workspace, smtp, &from.address).await?;
    }
    // A plain send needs nothing more from the database before the writer: no hop to a
    // database thread (measured: a fifth of a request).
    let plain =
        request.owner.is_none() && request.in_reply_to.is_none() && request.attachments.is_empty();
    // Everything else the send needs to read, checked here (requests read in parallel);
    // the writer only inserts.
    let (owner, references, files) = if plain {
        (key.created_by, None, Vec::new())
    } else {
        let (workspace, request) = (workspace.clone(), request.clone());
        let default_owner = key.created_by;
        state
            .db
            .run(move |conn| {
                let owner = match request.owner {
                    Some(id) => {
                        let user = crate::accounts::model::UserId(id);
                        crate::workspaces::queries::find_membership(conn, workspace.id, user)?
                            .ok_or(AppError::Invalid {
                                field: "owner",
                                message: "The owner must be a member of this workspace.".into(),
                            })?;
                        Some(user)
                    }
                    None => default_owner,
                };
                let references = match request.in_reply_to {
                    Some(id) => {
                        let parent =
                            messages::find_by_workspace_and_id(conn, workspace.id, MessageId(id))?
                                .ok_or(AppError::Invalid {
                                    field: "in_reply_to",
                                    message: format!("No message {id} in this workspace."),
                                })?;
                        let thread =
                            messages::find_sends_in(conn, workspace.id, &[parent.send_id])?
                                .pop()
                                .and_then(|send| send.references_header);
                        Some(match thread {
                            Some(earlier) => format!("{earlier} {}", parent.message_id),
                            None => parent.message_id.clone(),
                        })
                    }
                    None => None,
                };
                let files = if request.attachments.is_empty() {
                    Vec::new()
                } else {
                    attachments(conn, &workspace, &request.attachments, attachment_limit)?
                };
                Ok((owner, references, files))
            })
            .await?
    };
    input.provider = from.provider.id;
    input.files = files;
    let envelope = message_rules::Envelope {
        origin: Some(crate::messages::model::Origin::Sys),
        user: owner,
        session_public_id: None,
        api_key: Some(key.id),
        references,
        contact_ids: (!request.contact_ids.is_empty())
            .then(|| serde_json::to_string(&request.contact_ids).unwrap_or_default()),
        hold: request.hold,
    };
    let mut prepared = message_rules::prepare(&workspace, &from, input, &envelope);
    // Each message's recipient and status as stored: the answer is built from them.
    let stored: Vec<(String, String)> = prepared
        .rows
        .iter()
        .map(|row| (row.recipient.clone(), row.status.to_string()))
        .collect();
    let answered = stored.clone();
    if let Some(idem) = remember_idem {
        // Remembered in the same transaction as the messages: a retry after this commit
        // is a replay, never a second send.
        prepared.after = Some(Box::new(move |conn, ids| {
            let now = crate::db::now();
            crate::api::queries::forget_before(conn, now - remember_for())?;
            let body = accepted_list(ids, &answered);
            Ok(crate::api::queries::remember(
                conn,
                &crate::api::model::NewRemembered {
                    api_key_id: remember_key,
                    idempotency_key: idem.clone(),
                    request_hash: remember_hash.clone(),
                    status_code: Some(202),
                    response: Some(serde_json::to_string(&body).unwrap_or_default()),
                    created_at: now,
                },
            )? == 1)
        }));
    }
    let ids = state.ingest.submit(prepared).await?;
    let AcceptedList { mut messages } = accepted_list(&ids, &stored);
    let mut answer = StatusCode::ACCEPTED;
    if let Some(seconds) = wait.filter(|s| *s > 0) {
        let done = wait_until_final(&state, workspace_id, &ids, seconds).await?;
        let all_final = done.len() == messages.len() && done.iter().all(|m| m.status().is_final());
        for accepted in &mut messages {
            if let Some(m) = done.iter().find(|m| m.id.0 == accepted.id) {
                accepted.status = m.status.to_string();
                accepted.smtp_code = m.smtp_code;
                accepted.smtp_enhanced = m.smtp_enhanced.clone();
                accepted.result = Some(m.result.clone());
            }
        }
        if all_final {
            answer = StatusCode::OK;
        }
    }
    let body = AcceptedList { messages };
    if let Some(idem) = idempotency.filter(|_| answer == StatusCode::OK) {
        // The waited answer is the one to replay from now on.
        let (key, json) = (caller_key, serde_json::to_string(&body).unwrap_or_default());
        state
            .db
            .run(move |conn| {
                Ok(crate::api::queries::update_remembered(
                    conn, key, &idem, 200, &json,
                )?)
            })
            .await?;
    }
    Ok(HttpResponse::build(answer).json(body))
}

/// How long an `Idempotency-Key` is remembered.
fn remember_for() -> chrono::Duration {
    chrono::Duration::hours(24)
}

/// The `Idempotency-Key` header: 1–255 visible ASCII characters.
fn idempotency_key(req: &actix_web::HttpRequest) -> Result<Option<String>, AppError> {
    let Some(value) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 255 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(|v| Some(v.to_owned()))
        .ok_or_else(|| {
            AppError::field(
                "Idempotency-Key",
                "1–255 visible ASCII characters, e.g. a UUID.",
            )
        })
}

/// The remembered answer again, if the request is the same one.
fn replay(
    remembered: &crate::api::model::Remembered,
    fingerprint: &str,
) -> Result<HttpResponse, AppError> {
    if remembered.request_hash != fingerprint {
        return Err(AppError::field(
            "Idempotency-Key",
            "This key was used for a different request in the last 24 hours; use a new key for a new request.",
        ));
    }
    let (Some(code), Some(body)) = (remembered.status_code, remembered.response.clone()) else {
        return Err(AppError::Conflict(
            "A request with this Idempotency-Key is still being served; retry when it has answered."
                .into(),
        ));
    };
    Ok(HttpResponse::build(
        StatusCode::from_u16(u16::try_from(code).unwrap_or(202)).unwrap_or(StatusCode::ACCEPTED),
    )
    .content_type("application/json")
    .insert_header(("Idempotent-Replayed", "true"))
    .body(body))
}

/// The 202 answer for stored messages.
fn accepted_list(ids: &[MessageId], stored: &[(String, String)]) -> AcceptedList {
    AcceptedList {
        messages: ids
            .iter()
            .zip(stored)
            .map(|(id, (to, status))| Accepted {
                id: id.0,
                to: to.clone(),
                status: status.clone(),
                url: format!("/api/v1/messages/{}", id.0),
                smtp_code: None,
                smtp_enhanced: None,
                result: None,
            })
            .collect(),
    }
}

/// Reads the messages again each time this node's engine commits outcomes (and at least
/// every second, for what other nodes send or a person cancels) until every one is final
/// or `seconds` pass; returns them as last read.
async fn wait_until_final(
    state: &AppState,
    workspace: crate::workspaces::model::WorkspaceId,
    ids: &[MessageId],
    seconds: u64,
) -> Result<Vec<Message>, AppError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        // Registered before the read: a commit between the read and the wait still wakes it.
        let settled = state.engine.settled();
        tokio::pin!(settled);
        settled.as_mut().enable();
        let wanted = ids.to_vec();
        let rows = state
            .db
            .run(move |conn| Ok(messages::find_many(conn, workspace, &wanted)?))
            .await?;
        let done = rows.iter().all(|m| m.status().is_final());
        if done || tokio::time::Instant::now() >= deadline {
            return Ok(rows);
        }
        let next = (tokio::time::Instant::now() + std::time::Duration::from_secs(1)).min(deadline);
        let _ = tokio::time::timeout_at(next, settled).await;
    }
}

/// The uploaded files to attach, in the order given; all must be the workspace's and
/// total at most the attachment limit.
fn attachments(
    conn: &mut crate::db::DbConn,
    workspace: &crate::workspaces::model::Workspace,
    ids: &[i64],
    limit_mb: usize,
) -> Result<Vec<(String, String, Vec<u8>)>, AppError> {
    if ids.len() > 50 {
        return Err(AppError::Invalid {
            field: "attachments",
            message: "At most 50 files.".into(),
        });
    }
    let found = crate::api::queries::find_files(conn, workspace.id, ids)?;
    let mut files = Vec::with_capacity(ids.len());
    for id in ids {
        let file = found
            .iter()
            .find(|f| f.id == *id)
            .ok_or(AppError::Invalid {
                field: "attachments",
                message: format!(
                    "No file {id} in this workspace (upload it with POST /api/v1/files)."
                ),
            })?;
        files.push((
            file.file_name.clone(),
            file.content_type.clone(),
            file.data.clone(),
        ));
    }
    let total: usize = files.iter().map(|(_, _, data)| data.len()).sum();
    if total > limit_mb * 1024 * 1024 {
        return Err(AppError::Invalid {
            field: "attachments",
            message: format!("The files total more than {limit_mb} MB."),
        });
    }
    Ok(files)
}

/// The address in `from` as written: `news@example.com` or `Acme <news@example.com>`.
fn address_in(from: &str) -> &str {
    let from = from.trim();
    match (from.rfind('<'), from.rfind('>')) {
        (Some(open), Some(close)) if open < close => from[open + 1..close].trim(),
        _ => from,
    }
}

/// The sender a send goes out as: the ready sender `from` names, or the key's default
/// sender; with `provider` named, it must be the sender's own.
fn choose_sender(
    ready: &[(Sender, Provider)],
    request: &SendRequest,
    default: Option<crate::ids::SenderId>,
) -> Result<message_rules::FromSender, AppError> {
    let refused = |message: String| AppError::Invalid {
        field: "from",
        message,
    };
    let found = match request.from.as_deref().map(address_in) {
        Some(address) => ready
            .iter()
            .find(|(s, _)| s.address.eq_ignore_ascii_case(address))
            .ok_or_else(|| {
                refused(format!(
                    "{address} is not a ready sender of this workspace: an admin creates and validates senders under Senders."
                ))
            })?,
        None => {
            let id = default.ok_or_else(|| {
                refused("Name a ready sender in `from`, or have an admin set this key's default sender under API keys.".into())
            })?;
            ready.iter().find(|(s, _)| s.id == id).ok_or_else(|| {
                refused("This key's default sender cannot send now (not ready, or deleted): name a ready sender in `from`.".into())
            })?
        }
    };
    let (sender, provider) = found;
    if let Some(wanted) = &request.provider {
        let same = match wanted {
            ProviderRef::Id(id) => provider.id.0 == *id,
            ProviderRef::Name(name) => provider.name.eq_ignore_ascii_case(name.trim()),
        };
        if !same {
            return Err(AppError::Invalid {
                field: "provider",
                message: format!(
                    "{} sends through its provider, {}: leave `provider` out or name that one.",
                    sender.address, provider.name
                ),
            });
        }
    }
    Ok(message_rules::FromSender::of(sender, provider.clone()))
}
