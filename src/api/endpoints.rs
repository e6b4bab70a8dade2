//! The JSON API (`/api/v1`): send messages, read them back, list providers. Every query
//! filters by the key's workspace; input errors are problem documents naming the field.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::NaiveDateTime;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::auth::ApiCaller;
use super::problem::{ApiError, FieldProblem, responses};
use crate::error::AppError;
use crate::messages::model::{Compose, Message, MessageEvent, MessageId, Status, address_of};
use crate::messages::{queries as messages, service as message_rules};
use crate::providers::model::{Provider, ProviderId};
use crate::providers::queries as providers;
use crate::web::AppState;

/// Parses a JSON body: malformed JSON is a 400 with line and column; a well-formed body
/// with a wrong, missing or unknown field is a 422 naming the field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m)
            .to_owned();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::Malformed {
                message,
                line: inner.line(),
                column: inner.column(),
            };
        }
        // serde names missing and unknown fields in the message, not the path.
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|start| message.strip_prefix(start))
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name.to_owned());
        // A missing field is named in the message, at its parent's path; an unknown one
        // is at its own path already.
        let field = match (path.as_str(), named) {
            ("." | "", Some(name)) => name,
            ("." | "", None) => "body".to_owned(),
            (path, Some(name)) if message.starts_with("missing") => format!("{path}.{name}"),
            (path, _) => path.to_owned(),
        };
        ApiError::field(field, message)
    })?;
    de.end().map_err(|e| ApiError::Malformed {
        message: "trailing characters after the JSON value".into(),
        line: e.line(),
        column: e.column(),
    })?;
    Ok(value)
}

/// The provider to send through: its id, or its name.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ProviderRef {
    /// Id.
    Id(i64),
    /// Name.
    Name(String),
}

/// A contact id as the caller's system knows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ContactId {
    /// Numeric.
    Number(i64),
    /// Text.
    Text(String),
}

/// `POST /api/v1/messages`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// To recipients (1–50), one address per entry as people write it
    /// (`ann@example.com`, `Ann Lee <ann@example.com>`, `"Lee, Ann" <ann@example.com>`).
    /// Every address of `to`, `cc` and `bcc` gets one copy (one message each); every copy
    /// carries the To and Cc headers.
    pub to: Vec<String>,
    /// CC, one address per entry.
    #[serde(default)]
    pub cc: Vec<String>,
    /// BCC, one address per entry: never in a header.
    #[serde(default)]
    pub bcc: Vec<String>,
    /// Reply-To: one address.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Subject (the workspace's site name is put in front).
    pub subject: String,
    /// From: the provider's account address (for now), or any address with `smtp`.
    #[serde(default)]
    pub from: Option<String>,
    /// Provider id or name; or, instead, `smtp`.
    #[serde(default)]
    pub provider: Option<ProviderRef>,
    /// This call's own SMTP server instead of a provider (only when the workspace turned
    /// per-request SMTP on; always under the egress policy).
    #[serde(default)]
    pub smtp: Option<SmtpOverride>,
    /// Text body.
    #[serde(default)]
    pub text: Option<String>,
    /// HTML body.
    #[serde(default)]
    pub html: Option<String>,
    /// Ids of files uploaded with `POST /api/v1/files`, attached to every message.
    #[serde(default)]
    pub attachments: Vec<i64>,
    /// Id of an earlier message of the workspace this one answers.
    #[serde(default)]
    pub in_reply_to: Option<i64>,
    /// The caller's contact ids (stored).
    #[serde(default)]
    pub contact_ids: Vec<ContactId>,
    /// The member the messages are sent for (default: the key's creator).
    #[serde(default)]
    pub owner: Option<i64>,
    /// Retries after temporary failures (0–10; default from the settings).
    #[serde(default)]
    pub retry_count: Option<i32>,
    /// When to send, RFC 3339 (e.g. `2026-12-01T09:30:00Z`).
    #[serde(default)]
    pub send_at: Option<String>,
    /// Store without sending until released.
    #[serde(default)]
    pub hold: bool,
}

/// SMTP settings brought by one API call.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpOverride {
    /// Host name or address.
    pub server: String,
    /// Port (e.g. 587, 465, 25).
    pub port: u16,
    /// `starttls` (default), `tls` (implicit) or `none`.
    #[serde(default)]
    pub tls: Option<String>,
    /// User name for AUTH (none: no AUTH).
    #[serde(default)]
    pub user: Option<String>,
    /// Password for AUTH; stored sealed, never shown.
    #[serde(default)]
    pub password: Option<String>,
}

/// Most To recipients of one API call.
const MAX_TO: usize = 50;

/// Checks every field that needs no database; collects every problem.
fn validate(request: &SendRequest, default_retries: i32) -> Result<Compose, ApiError> {
    let mut problems = Vec::new();
    let mut problem = |field: String, detail: String| problems.push(FieldProblem { field, detail });
    let mut addresses = |field: &str, list: &[String], required: bool, max: usize| {
        if required && list.is_empty() {
            problem(field.into(), format!("Give at least one {field} address."));
        }
        if list.len() > max {
            problem(field.into(), format!("At most {max} {field} addresses."));
        }
        let mut parsed: Vec<String> = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            // One address per entry, as people write it (`"Lee, Ann" <ann@x.test>` is one);
            // the whole entry must be that one address, so nothing more rides along.
            match crate::messages::model::parse_mailbox(entry) {
                Ok(mailbox) => {
                    let address = address_of(&mailbox).to_lowercase();
                    if !parsed
                        .iter()
                        .any(|m| address_of(m).to_lowercase() == address)
                    {
                        parsed.push(mailbox);
                    }
                }
                Err(why) => problem(
                    format!("{field}[{i}]"),
                    format!("{why} One address per entry."),
                ),
            }
        }
        parsed
    };
    let to = addresses("to", &request.to, true, MAX_TO);
    let cc = addresses("cc", &request.cc, false, crate::messages::model::MAX_COPIES);
    let bcc = addresses(
        "bcc",
        &request.bcc,
        false,
        crate::messages::model::MAX_COPIES,
    );
    let subject = request.subject.trim();
    if subject.is_empty() {
        problem("subject".into(), "Give a subject.".into());
    } else if subject.chars().any(char::is_control) {
        problem(
            "subject".into(),
            "A subject cannot contain line breaks or control characters.".into(),
        );
    } else if subject.chars().count() > 900 {
        problem(
            "subject".into(),
            "A subject has at most 900 characters.".into(),
        );
    }
    if let Some(from) = &request.from
        && from.chars().any(char::is_control)
    {
        problem(
            "from".into(),
            "From cannot contain line breaks or control characters.".into(),
        );
    }
    if let Some(ProviderRef::Name(name)) = &request.provider
        && name.chars().any(char::is_control)
    {
        problem(
            "provider".into(),
            "A provider name has no line breaks.".into(),
        );
    }
    match (&request.provider, &request.smtp) {
        (None, None) => problem(
            "provider".into(),
            "Give a provider (id or name), or `smtp` settings.".into(),
        ),
        (Some(_), Some(_)) => problem(
            "smtp".into(),
            "Give either a provider or `smtp` settings, not both.".into(),
        ),
        _ => {}
    }
    if let Some(smtp) = &request.smtp {
        let server = smtp.server.trim();
        if server.is_empty()
            || server.len() > 253
            || server.contains(|c: char| c.is_control() || c.is_whitespace())
        {
            problem("smtp.server".into(), "A host name or address.".into());
        }
        if smtp.port == 0 {
            problem("smtp.port".into(), "From 1 to 65535.".into());
        }
        if smtp
            .tls
            .as_deref()
            .is_some_and(|t| crate::providers::model::TlsMode::parse(t).is_none())
        {
            problem("smtp.tls".into(), "One of starttls, tls or none.".into());
        }
        for (field, value) in [("smtp.user", &smtp.user), ("smtp.password", &smtp.password)] {
            if value
                .as_deref()
                .is_some_and(|v| v.chars().any(char::is_control) || v.len() > 500)
            {
                problem(
                    field.into(),
                    "At most 500 characters, no line breaks.".into(),
                );
            }
        }
        match request.from.as_deref().map(str::trim) {
            None | Some("") => problem(
                "from".into(),
                "With `smtp` settings, give the From address.".into(),
            ),
            Some(from) if from.parse::<lettre::Address>().is_err() => problem(
                "from".into(),
                format!("{from:?} is not an email address like name@example.com."),
            ),
            Some(_) => {}
        }
    }
    let text = request.text.as_deref().unwrap_or_default();
    let html = request.html.as_deref().unwrap_or_default();
    if text.trim().is_empty() && html.trim().is_empty() {
        problem(
            "text".into(),
            "Give a text or an HTML body (or both).".into(),
        );
    }
    for (field, value) in [("text", text), ("html", html)] {
        if let Some(why) = crate::messages::model::body_problem(value) {
            problem(field.into(), why.into());
        }
    }
    let retry_count = request.retry_count.unwrap_or(default_retries);
    if !(0..=10).contains(&retry_count) {
        problem("retry_count".into(), "From 0 to 10.".into());
    }
    let send_at = rfc3339(request.send_at.as_deref()).unwrap_or_else(|why| {
        problem("send_at".into(), why);
        None
    });
    if request.contact_ids.len() > 1_000 {
        problem("contact_ids".into(), "At most 1,000 contact ids.".into());
    }
    let reply_to = match request.reply_to.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(entry) => match crate::messages::model::parse_mailbox(entry) {
            Ok(mailbox) => Some(mailbox),
            Err(why) => {
                problem("reply_to".into(), why);
                None
            }
        },
    };
    for (i, id) in request.contact_ids.iter().enumerate() {
        if let ContactId::Text(text) = id
            && (text.is_empty() || text.len() > 100 || text.chars().any(char::is_control))
        {
            problem(
                format!("contact_ids[{i}]"),
                "A contact id is a number or 1–100 characters without line breaks.".into(),
            );
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    Ok(Compose {
        provider: ProviderId(0),
        to,
        cc,
        bcc,
        subject: subject.to_owned(),
        text: crate::delivery::build::crlf(text),
        html: Some(html.trim())
            .filter(|h| !h.is_empty())
            .map(crate::delivery::build::crlf),
        send_at,
        retry_count,
        files: Vec::new(),
        reply_to,
    })
}

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
const MAX_WAIT: u64 = 30;

/// The 202 answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AcceptedList {
    /// One per To recipient, in order.
    pub messages: Vec<Accepted>,
}

#[utoipa::path(
    post,
    path = "/api/v1/messages",
    tag = "messages",
    params(SendQuery, ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: remembered 24 h per API key")),
    request_body(content = SendRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Stored (committed): one message per To recipient", body = AcceptedList),
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
/// `POST /api/v1/messages[?wait=SECONDS]`: stores one message per To recipient; answers
/// 202 once they are committed, or with `wait`, 200 once every one is sent or failed
/// (with the reply code and text), 202 with what is known if that takes longer.
pub async fn send(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    caller: ApiCaller,
    query: web::Query<SendQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let idempotency = idempotency_key(&req)?;
    // Only a request with an Idempotency-Key needs its fingerprint.
    let fingerprint = match &idempotency {
        Some(_) => super::service::hash(&format!(
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
                ApiError::Conflict(
                    "A request with this Idempotency-Key is still being served; retry when it has answered."
                        .into(),
                )
            })?;
            let (key, wanted) = (caller.key.id, idem.clone());
            let remembered = state
                .db
                .run(move |conn| Ok(super::queries::find_remembered(conn, key, &wanted)?))
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
        None | Some("") => None,
        Some(value) => Some(
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= MAX_WAIT)
                .ok_or_else(|| ApiError::field("wait", format!("Seconds from 0 to {MAX_WAIT}.")))?,
        ),
    };
    let request: SendRequest = parse_json(&body)?;
    let mut input = validate(&request, state.settings.retry_count)?;
    let ApiCaller { key, workspace } = caller;
    let (workspace_id, caller_key) = (workspace.id, key.id);
    let attachment_limit = state.settings.attachment_limit_mb;
    let (remember_key, remember_idem, remember_hash) =
        (key.id, idempotency.clone(), fingerprint.clone());
    let per_request = match &request.smtp {
        Some(smtp) => Some(
            per_request_provider(
                &state,
                &workspace,
                smtp,
                request.from.as_deref().unwrap_or_default(),
            )
            .await?,
        ),
        None => None,
    };
    // Everything the send needs to read, checked here (requests read in parallel); the
    // writer only inserts.
    let (provider, owner, references, files) = {
        let (workspace, request, api) = (workspace.clone(), request.clone(), state.api.clone());
        let default_owner = key.created_by;
        state
            .db
            .run(move |conn| {
                let provider = match (per_request, &request.provider) {
                    (Some(provider), _) => provider,
                    (None, Some(wanted)) => {
                        find_provider(&api.providers(conn, workspace.id)?, wanted)?
                    }
                    (None, None) => {
                        return Err(AppError::Invalid {
                            field: "provider",
                            message: "Give a provider (id or name), or `smtp` settings.".into(),
                        });
                    }
                };
                if let Some(from) = request.from.as_deref().map(str::trim)
                    && !from.eq_ignore_ascii_case(&provider.account_address)
                {
                    return Err(AppError::Invalid {
                        field: "from",
                        message: format!(
                            "Send from the provider's account address, {}.",
                            provider.account_address
                        ),
                    });
                }
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
                Ok((provider, owner, references, files))
            })
            .await?
    };
    input.provider = provider.id;
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
    let mut prepared = message_rules::prepare(&workspace, &provider, input, &envelope);
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
            super::queries::forget_before(conn, now - remember_for())?;
            let body = accepted_list(ids, &answered);
            Ok(super::queries::remember(
                conn,
                &super::model::NewRemembered {
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
        let all_final = done.len() == messages.len()
            && done.iter().all(|m| {
                matches!(
                    m.status(),
                    Status::Sent | Status::Failed | Status::Cancelled
                )
            });
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
                Ok(super::queries::update_remembered(
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
fn idempotency_key(req: &actix_web::HttpRequest) -> Result<Option<String>, ApiError> {
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
            ApiError::field(
                "Idempotency-Key",
                "1–255 visible ASCII characters, e.g. a UUID.",
            )
        })
}

/// The remembered answer again, if the request is the same one.
fn replay(
    remembered: &super::model::Remembered,
    fingerprint: &str,
) -> Result<HttpResponse, ApiError> {
    if remembered.request_hash != fingerprint {
        return Err(ApiError::field(
            "Idempotency-Key",
            "This key was used for a different request in the last 24 hours; use a new key for a new request.",
        ));
    }
    let (Some(code), Some(body)) = (remembered.status_code, remembered.response.clone()) else {
        return Err(ApiError::Conflict(
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
) -> Result<Vec<Message>, ApiError> {
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
        let done = rows.iter().all(|m| {
            matches!(
                m.status(),
                Status::Sent | Status::Failed | Status::Cancelled
            )
        });
        if done || tokio::time::Instant::now() >= deadline {
            return Ok(rows);
        }
        let next = (tokio::time::Instant::now() + std::time::Duration::from_secs(1)).min(deadline);
        let _ = tokio::time::timeout_at(next, settled).await;
    }
}

/// The hidden provider for a call's own SMTP settings: only when the workspace allows
/// them, only to public hosts on SMTP ports (the per-request egress policy); reused for
/// the same server, port, TLS mode and user (a new password replaces the sealed one, and
/// its pool is rebuilt). A workspace has at most `per_request_smtp_limit` of them: past
/// it, the least recently changed one with nothing left to send is replaced (deleted: its
/// history stays, and its failed messages can no longer be retried, so no mail moves to
/// another server), or the call is refused with 429.
async fn per_request_provider(
    state: &AppState,
    workspace: &crate::workspaces::model::Workspace,
    smtp: &SmtpOverride,
    from: &str,
) -> Result<Provider, ApiError> {
    use crate::providers::model::{Kind, ProviderRow, Settings, TlsMode};
    if !workspace.per_request_smtp {
        return Err(ApiError::field(
            "smtp",
            "Per-request SMTP is off for this workspace; an admin can turn it on under API keys.",
        ));
    }
    let server = smtp.server.trim().to_owned();
    state
        .per_request_egress
        .resolve(&server, smtp.port)
        .await
        .map_err(|e| {
            let field = match e {
                crate::providers::egress::EgressError::Refused(ref why)
                    if why.starts_with("port ") =>
                {
                    "smtp.port"
                }
                _ => "smtp.server",
            };
            ApiError::field(field, e.to_string())
        })?;
    let tls = smtp
        .tls
        .as_deref()
        .and_then(TlsMode::parse)
        .unwrap_or(TlsMode::StartTls);
    let username = smtp.user.clone().unwrap_or_default();
    let settings = Settings {
        name: match username.as_str() {
            "" => format!("API SMTP {server}:{} ({})", smtp.port, tls.as_str()),
            user => format!("API SMTP {user}@{server}:{} ({})", smtp.port, tls.as_str()),
        },
        kind: Kind::Smtp,
        host: server,
        port: smtp.port,
        tls,
        region: None,
        username,
        account_address: from.trim().to_owned(),
        from_name: String::new(),
        max_connections: 2,
        per_second: None,
        per_minute: None,
        per_hour: None,
        receive_enabled: false,
        imap_host: None,
        imap_port: None,
    };
    let context = Provider::seal_context(workspace.id);
    let sealed = smtp
        .password
        .as_deref()
        .map(|password| state.sealer.seal(password, &context));
    let (sealer, password, workspace) = (
        state.sealer.clone(),
        smtp.password.clone(),
        workspace.clone(),
    );
    let limit = state.settings.per_request_smtp_limit;
    let provider = state
        .db
        .write(move |conn| {
            let now = crate::db::now();
            // Finding, counting and inserting under the workspace's lock: parallel calls
            // can neither each see room under the limit nor each insert the same settings
            // (PostgreSQL; SQLite writes one transaction at a time).
            crate::workspaces::queries::lock_for_update(conn, workspace.id)?;
            let existing = providers::find_per_request(
                conn,
                workspace.id,
                &settings.host,
                settings.port,
                settings.tls,
                &settings.username,
            )?;
            let id = match existing {
                Some(found) => {
                    let stored = found
                        .secret
                        .as_deref()
                        .and_then(|s| sealer.open(s, &context).ok());
                    if stored != password {
                        providers::set_secret(conn, found.id, sealed.as_deref(), now)?;
                    }
                    found.id
                }
                None => {
                    if providers::count_per_request(conn, workspace.id)? >= i64::from(limit) {
                        let Some(idle) = idle_per_request(conn, workspace.id)? else {
                            return Ok(None);
                        };
                        let gone = providers::find_by_workspace_and_id(conn, workspace.id, idle)?
                            .map(|p| p.name)
                            .unwrap_or_default();
                        providers::delete(conn, workspace.id, idle)?;
                        let mut entry =
                            crate::audit::entry("provider.per_request_replaced", None, "api");
                        entry.workspace_id = Some(workspace.id.0);
                        entry.target = gone;
                        entry.detail = format!(
                            "replaced by {} (at most {limit} per-request SMTP servers)",
                            settings.name
                        );
                        crate::audit::record(conn, entry)?;
                    }
                    let id = providers::insert_per_request(
                        conn,
                        &ProviderRow::from_settings(workspace.id, &settings, now),
                        sealed.as_deref(),
                        now,
                    )?;
                    let mut entry = crate::audit::entry("provider.per_request", None, "api");
                    entry.workspace_id = Some(workspace.id.0);
                    entry.target = settings.name.clone();
                    entry.detail = "SMTP settings of an API call".into();
                    crate::audit::record(conn, entry)?;
                    id
                }
            };
            providers::find_by_workspace_and_id(conn, workspace.id, id)
                .map_err(AppError::from)?
                .ok_or(AppError::NotFound)
                .map(Some)
        })
        .await?
        .ok_or(ApiError::ServersInUse(limit))?;
    // Its From is the call's: the provider's account follows the latest call.
    Ok(Provider {
        account_address: from.trim().to_owned(),
        ..provider
    })
}

/// The least recently changed per-request provider of the workspace with nothing left to
/// send, locked (a message being stored for it meanwhile either committed before, and is
/// seen here, or fails on its foreign key after).
fn idle_per_request(
    conn: &mut crate::db::DbConn,
    workspace: crate::workspaces::model::WorkspaceId,
) -> Result<Option<ProviderId>, AppError> {
    for id in providers::list_per_request(conn, workspace)? {
        if providers::lock(conn, id)? && !providers::has_unfinished(conn, id)? {
            return Ok(Some(id));
        }
    }
    Ok(None)
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
    let found = super::queries::find_files(conn, workspace.id, ids)?;
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

/// The workspace's active provider with this id or name.
fn find_provider(all: &[Provider], wanted: &ProviderRef) -> Result<Provider, AppError> {
    let found = all
        .iter()
        .find(|p| match wanted {
            ProviderRef::Id(id) => p.id.0 == *id,
            ProviderRef::Name(name) => p.name.eq_ignore_ascii_case(name.trim()),
        })
        .cloned();
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
            message: "No such provider in this workspace (give its id or name).".into(),
        }),
    }
}

/// An optional RFC 3339 time from a request, as UTC; empty is none.
fn rfc3339(value: Option<&str>) -> Result<Option<NaiveDateTime>, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(value) => chrono::DateTime::parse_from_rfc3339(value)
            .map(|at| Some(at.naive_utc()))
            .map_err(|_| format!("{value:?} is not an RFC 3339 time like 2026-12-01T09:30:00Z.")),
    }
}

/// A stored (UTC) time as the API writes it: RFC 3339 with `Z`.
pub(super) fn timestamp(at: NaiveDateTime) -> String {
    at.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

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
) -> Result<HttpResponse, ApiError> {
    let id = message_id(&path)?;
    let found = state
        .db
        .run(move |conn| {
            let Some((message, send)) = visible(conn, &caller, id)? else {
                return Ok(None);
            };
            let events = messages::events_of(conn, message.id)?;
            let source = match send.api_key_id {
                Some(id) => super::queries::find(conn, message.workspace_id, id)?.map(|k| k.name),
                None => None,
            };
            Ok(Some((message, send, events, source)))
        })
        .await?;
    let (message, send, events, source) = found.ok_or(ApiError::NotFound("message"))?;
    Ok(HttpResponse::Ok().json(MessageView::new(message, &send, events, source)))
}

/// A provider as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProviderView {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// `smtp`, `gmail`, `ses` or `outlook`.
    pub kind: String,
    /// `unchecked`, `active` or `error`.
    pub status: String,
}

/// `GET /api/v1/providers` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProviderList {
    /// By name.
    pub providers: Vec<ProviderView>,
}

#[utoipa::path(
    get,
    path = "/api/v1/providers",
    tag = "providers",
    responses(
        (status = 200, description = "The workspace's providers", body = ProviderList),
        (status = 401, response = responses::Unauthorized),
        (status = 429, response = responses::RateLimited)
    ),
    security(("bearer" = []))
)]
/// `GET /api/v1/providers`.
pub async fn list_providers(
    state: web::Data<AppState>,
    caller: ApiCaller,
) -> Result<HttpResponse, ApiError> {
    let workspace = caller.workspace.id;
    let rows = state
        .db
        .run(move |conn| Ok(providers::list_by_workspace(conn, workspace)?))
        .await?;
    let providers: Vec<ProviderView> = rows
        .into_iter()
        .map(|p| ProviderView {
            id: p.id.0,
            name: p.name,
            kind: p.kind,
            status: p.status,
        })
        .collect();
    Ok(HttpResponse::Ok().json(ProviderList { providers }))
}

/// Any other path under `/api/`: a problem document, not a page.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("endpoint"))
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

fn message_id(path: &str) -> Result<i64, ApiError> {
    path.parse::<i64>()
        .map_err(|_| ApiError::NotFound("message"))
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
) -> Result<HttpResponse, ApiError> {
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
                Some(key) => super::queries::find(conn, message.workspace_id, key)?.map(|k| k.name),
                None => None,
            };
            Ok(Some((message, send, events, source)))
        })
        .await?;
    let (message, send, events, source) = changed.ok_or(ApiError::NotFound("message"))?;
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
) -> Result<HttpResponse, ApiError> {
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
) -> Result<HttpResponse, ApiError> {
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
) -> Result<HttpResponse, ApiError> {
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
            ApiError::field(name, e.to_string())
        })?;
    let mut problems = Vec::new();
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(value) => {
            let parsed = crate::messages::model::Status::parse(value);
            if parsed.is_none() {
                problems.push(FieldProblem {
                    field: "status".into(),
                    detail: "One of scheduled, queued, sending, sent, failed, cancelled, held."
                        .into(),
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
        None | Some("") => None,
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
        None | Some("") => 50,
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
        return Err(ApiError::Invalid(problems));
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
