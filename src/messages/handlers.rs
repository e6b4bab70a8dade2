//! Handlers of the messages slice: extract → service → view.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use actix_multipart::form::MultipartForm;

use super::compose::{ComposeForm, ComposeUpload};
use super::model::{MessageId, Status, Tab};
use super::search::{self, Search};
use super::views::*;
use super::{queries, service};
use crate::error::AppError;
use crate::providers::model::ProviderId;
use crate::providers::queries as providers;
use crate::state::AppState;
use crate::web::forms::FieldErrors;
use crate::web::frame::{Level, flash};
use crate::web::{csrf, htmx, render, render_status};
use crate::workspaces::extract::WorkspaceCtx;

/// Rows per history page.
const PAGE: i64 = 50;

async fn compose_page(
    state: &AppState,
    session: &Session,
    ctx: &WorkspaceCtx,
    form: ComposeForm,
    errors: FieldErrors,
) -> Result<ComposePage, AppError> {
    let workspace = ctx.workspace.clone();
    let senders = state
        .db
        .run(move |conn| crate::senders::service::ready_senders(conn, &workspace))
        .await?;
    Ok(ComposePage {
        frame: ctx.frame(session, "compose", "Compose email"),
        senders,
        form,
        errors,
        site_name: ctx.workspace.site_name.clone(),
        attachment_limit_mb: state.settings.attachment_limit_mb,
    })
}

/// `GET /w/{slug}/compose` (editors and admins).
pub async fn compose_form(
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
) -> Result<HttpResponse, AppError> {
    ctx.require_composer()?;
    let form = ComposeForm {
        retry_count: state.settings.retry_count.to_string(),
        ..Default::default()
    };
    render(&compose_page(&state, &session, &ctx, form, FieldErrors::new()).await?)
}

/// `POST /w/{slug}/compose` (`multipart/form-data`): one message per address (To, Cc, Bcc),
/// queued (or scheduled), with the files attached to each.
pub async fn compose(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    upload: MultipartForm<ComposeUpload>,
) -> Result<HttpResponse, AppError> {
    ctx.require_composer()?;
    let (form, files) = upload.into_inner().split();
    let mut errors = FieldErrors::new();
    let limit = state.settings.attachment_limit_mb * 1024 * 1024;
    let total: usize = files.iter().map(|(_, _, data)| data.len()).sum();
    if total > limit {
        errors.add(
            "attachments",
            format!(
                "The files total {:.1} MB; at most {} MB can be attached.",
                total as f64 / 1_048_576.0,
                state.settings.attachment_limit_mb
            ),
        );
    }
    let parsed = form.parse(&mut errors, state.settings.retry_count);
    let Some(mut input) = parsed.filter(|_| errors.is_empty()) else {
        let page = compose_page(&state, &session, &ctx, form, errors).await?;
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };
    input.files = files;
    let (workspace, user, session_id) =
        (ctx.workspace.clone(), ctx.user.id, ctx.session_id.clone());
    // Only a ready sender of the workspace sends (seed 001).
    let checked = match input.sender {
        Some(id) => {
            let workspace = workspace.clone();
            state
                .db
                .run(move |conn| {
                    crate::senders::service::ready_sender(conn, &workspace, id, "sender")
                })
                .await
        }
        None => Err(AppError::Invalid {
            field: "sender",
            message: "Choose a sender.".into(),
        }),
    };
    let stored = match checked {
        Ok(from) => {
            let envelope = service::console(&service::Sender {
                user,
                session_public_id: &session_id,
            });
            input.provider = from.provider.id;
            let prepared = service::prepare(&workspace, &from, input, &envelope);
            state.ingest.submit(prepared).await
        }
        Err(e) => Err(e),
    };
    let ids = match stored {
        Ok(ids) => ids,
        Err(AppError::Invalid { field, message }) => {
            errors.add(field, message);
            let page = compose_page(&state, &session, &ctx, form, errors).await?;
            return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
        Err(e) => return Err(e),
    };
    let text = match ids.len() {
        1 => "Message queued.".to_owned(),
        count => format!("{count} messages queued, one per address."),
    };
    flash(&session, Level::Success, text);
    let to = match ids.as_slice() {
        [one] => ctx.path(&format!("/messages/{}", one.0)),
        _ => ctx.path("/messages?tab=web"),
    };
    Ok(htmx::redirect(&req, &to))
}

/// Query of the history: the tab, the filters (every one a string, so a wrong one gets
/// a message instead of a bare 400), the keyset cursor.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct HistoryQuery {
    #[serde(default)]
    pub tab: String,
    /// What to search for (words, or a part of an address).
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub sender: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub before: Option<i64>,
}

impl HistoryQuery {
    /// The filters as a query string (for the tabs, the pager and the polling).
    pub fn filters(&self) -> String {
        [
            ("q", &self.q),
            ("status", &self.status),
            ("provider", &self.provider),
            ("sender", &self.sender),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| {
            format!(
                "&{k}={}",
                url::form_urlencoded::byte_serialize(v.trim().as_bytes()).collect::<String>()
            )
        })
        .collect()
    }

    /// Parses the filters, naming what is wrong.
    pub(super) fn parse(&self, tab: Option<Tab>, errors: &mut FieldErrors) -> queries::LogFilter {
        let day = |field: &'static str, value: &str, errors: &mut FieldErrors| {
            let value = value.trim();
            if value.is_empty() {
                return None;
            }
            errors.check(
                field,
                chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
                    .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
                    .map_err(|_| format!("{value:?} is not a date like 2026-12-01.")),
            )
        };
        let status = match self.status.trim() {
            "" => None,
            value => errors.check(
                "status",
                Status::parse(value).ok_or_else(|| format!("{value:?} is not a status.")),
            ),
        };
        let provider = match self.provider.trim() {
            "" => None,
            value => errors.check(
                "provider",
                value
                    .parse::<i64>()
                    .map(ProviderId)
                    .map_err(|_| "Choose a provider from the list.".to_string()),
            ),
        };
        let sender = match self.sender.trim() {
            "" => None,
            value if value.chars().any(char::is_control) || value.len() > 320 => {
                errors.add("sender", "An address, without line breaks.");
                None
            }
            value => Some(value.to_owned()),
        };
        let since = day("from", &self.from, errors);
        let until = day("to", &self.to, errors).map(|d| d + chrono::Duration::days(1));
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            errors.add("to", "The end date is before the start date.");
        }
        queries::LogFilter {
            tab,
            status,
            provider,
            sender,
            since,
            until,
            before: self.before.map(MessageId),
            key: None,
        }
    }
}

/// Which tab a query names.
pub(super) fn tab_of(query: &HistoryQuery) -> (&'static str, Option<Tab>) {
    match query.tab.as_str() {
        "web" => ("web", Some(Tab::Web)),
        "sys" => ("sys", Some(Tab::Sys)),
        _ => ("all", None),
    }
}

/// The search of a query, or what is wrong with it (added to `errors`).
pub(super) fn search_of(query: &HistoryQuery, errors: &mut FieldErrors) -> Option<Search> {
    Search::parse(&query.q).unwrap_or_else(|message| {
        errors.add("q", message);
        None
    })
}

/// `GET /w/{slug}/messages`: newest first, or the newest matches of a search; the table
/// alone for htmx (polling, search-as-you-type).
pub async fn index(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AppError> {
    let (tab, shown) = tab_of(&query);
    let mut errors = FieldErrors::new();
    let filter = query.parse(shown, &mut errors);
    let search = search_of(&query, &mut errors);
    let valid = errors.is_empty();
    let (workspace, before) = (ctx.workspace.id, filter.before);
    // Tab counts come from the tallies, which know status and day but not provider or
    // sender: with those filters, no counts rather than wrong ones.
    let countable = valid && filter.provider.is_none() && filter.sender.is_none();
    let searched = search.clone();
    let loaded = state
        .db
        .run(move |conn| {
            let rows = match (&searched, valid) {
                (_, false) => service::Rows::Nothing,
                (Some(search), true) => service::Rows::Search(search),
                (None, true) => service::Rows::Page(PAGE),
            };
            service::history(conn, workspace, &filter, rows, countable)
        })
        .await?;
    let service::History {
        mut messages,
        names,
        sends,
        keys,
        counts,
    } = loaded;
    let counts = counts.map(|rows| TabCounts::from_rows(&rows));
    let (more, capped) = if search.is_some() {
        (false, messages.len() as i64 >= super::search::LIMIT)
    } else {
        (messages.len() as i64 > PAGE, false)
    };
    if search.is_none() {
        messages.truncate(PAGE as usize);
    }
    let filters = query.filters();
    let base = ctx.path(&format!("/messages?tab={tab}{filters}"));
    let older = more
        .then(|| messages.last().map(|m| format!("{base}&before={}", m.id.0)))
        .flatten();
    let here = match before {
        Some(id) => format!("{base}&before={}", id.0),
        None => base,
    };
    let rows: Vec<Row> = messages
        .into_iter()
        .map(|message| {
            let send = sends.get(&message.send_id);
            let text = send.map_or("", |s| s.text.as_str());
            let subject_text = send.map_or("", |s| s.subject.as_str());
            let (subject, preview, recipient, from) = match &search {
                Some(s) => (
                    s.mark(subject_text),
                    s.snippet(text, 120),
                    s.mark_address(&message.recipient),
                    s.mark_address(&message.from_address),
                ),
                None => (
                    search::plain(subject_text),
                    search::plain(&preview(text)),
                    search::plain(&message.recipient),
                    search::plain(&message.from_address),
                ),
            };
            Row {
                provider: message
                    .provider_id
                    .and_then(|id| names.get(&id).cloned())
                    .unwrap_or_else(|| "—".into()),
                subject,
                preview,
                recipient,
                from,
                origin: match (message.origin.as_str(), send.and_then(|s| s.api_key_id)) {
                    ("web", _) => "Console".into(),
                    (_, Some(key)) => format!(
                        "API · {}",
                        keys.get(&key).map_or("a deleted key", String::as_str)
                    ),
                    _ => "Mailroom".into(),
                },
                message,
            }
        })
        .collect();
    let moving = rows.iter().any(|r| r.status().is_moving());
    let slug = ctx.workspace.slug.clone();
    let mut provider_choices: Vec<(i64, String)> =
        names.into_iter().map(|(id, name)| (id.0, name)).collect();
    provider_choices.sort_by_key(|(_, name)| name.to_lowercase());
    let table = HistoryTable {
        rows,
        older,
        here,
        moving,
        slug,
        searching: search.is_some(),
        capped,
        problems: errors
            .iter()
            .map(|(field, message)| format!("{}: {message}", filter_label(field)))
            .collect(),
    };
    // Search-as-you-type swaps the table, also to show what is wrong with the search.
    if htmx::targets(&req, "history-table") {
        return render(&table);
    }
    let page = HistoryPage {
        frame: ctx.frame(&session, "history", "History"),
        tab,
        table,
        query: query.into_inner(),
        filters,
        errors,
        counts,
        providers: provider_choices,
        statuses: Status::ALL,
    };
    if valid {
        render(&page)
    } else {
        render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
    }
}

/// How the history's form names a field.
pub(super) fn filter_label(field: &str) -> &'static str {
    match field {
        "q" => "Search",
        "status" => "Status",
        "provider" => "Provider",
        "sender" => "Sender",
        "from" => "From day",
        "to" => "To day",
        _ => "Filter",
    }
}

/// Path of a message.
#[derive(Deserialize)]
pub struct MessagePath {
    #[expect(
        dead_code,
        reason = "read by the WorkspaceCtx extractor from the match info"
    )]
    slug: String,
    id: i64,
}

/// `GET /w/{slug}/messages/{id}`: every field of the send record and its timeline.
pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<MessagePath>,
) -> Result<HttpResponse, AppError> {
    let (workspace, id) = (ctx.workspace.id, MessageId(path.id));
    let (message, events, provider, sender, (send, files)) = state
        .db
        .run(move |conn| {
            let message = queries::find_by_workspace_and_id(conn, workspace, id)?
                .ok_or(AppError::NotFound)?;
            let events = queries::events_of(conn, id)?;
            let send = queries::find_sends_in(conn, workspace, &[message.send_id])?
                .pop()
                .ok_or(AppError::NotFound)?;
            let files = if send.attachments > 0 {
                queries::list_attachments(conn, send.id)?
            } else {
                Vec::new()
            };
            let provider = match message.provider_id {
                Some(p) => providers::find_by_workspace_and_id(conn, workspace, p)?.map(|p| p.name),
                None => None,
            };
            let sender = match send.user_id {
                Some(user) => {
                    crate::accounts::queries::find_user_by_id(conn, user)?.map(|u| u.email)
                }
                None => None,
            };
            Ok((message, events, provider, sender, (send, files)))
        })
        .await?;
    let title = format!("Message to {}", message.recipient);
    let live = MessageLive {
        here: ctx.path(&format!("/messages/{}", path.id)),
        can_act: ctx.role.can_compose(),
        slug: ctx.workspace.slug.clone(),
        csrf: csrf::token(&session),
        message,
        events,
        send,
        files,
        provider: provider.unwrap_or_else(|| "—".into()),
        sender: sender.unwrap_or_else(|| "Mailroom (system)".into()),
    };
    if htmx::targets(&req, "message-live") {
        return render(&live);
    }
    render(&MessagePage {
        frame: ctx.frame(&session, "history", title),
        live,
    })
}

/// A change an editor makes to one message (cancel, retry now).
type Action = fn(
    &mut crate::db::DbConn,
    &crate::workspaces::model::Workspace,
    MessageId,
    &str,
) -> Result<super::model::Message, AppError>;

/// Runs `action` on the message, says in a flash what happened (a conflict — the message
/// moved on — is said too), and returns to the message page.
async fn act(
    req: &HttpRequest,
    state: &AppState,
    session: &Session,
    ctx: &WorkspaceCtx,
    id: i64,
    action: Action,
    done: &str,
) -> Result<HttpResponse, AppError> {
    ctx.require_composer()?;
    let (workspace, by) = (ctx.workspace.clone(), ctx.user.email.clone());
    match state
        .db
        .write(move |conn| action(conn, &workspace, MessageId(id), &by))
        .await
    {
        Ok(message) => {
            state.engine.wake();
            flash(
                session,
                Level::Success,
                format!("The message to {} {done}.", message.recipient),
            );
        }
        Err(AppError::Conflict(text)) => flash(session, Level::Error, text),
        Err(e) => return Err(e),
    }
    Ok(htmx::redirect(req, &ctx.path(&format!("/messages/{id}"))))
}

/// `POST /w/{slug}/messages/{id}/cancel` (editors and admins).
pub async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<MessagePath>,
) -> Result<HttpResponse, AppError> {
    act(
        &req,
        &state,
        &session,
        &ctx,
        path.id,
        service::cancel,
        "is cancelled",
    )
    .await
}

/// `POST /w/{slug}/messages/{id}/retry` (editors and admins).
pub async fn retry(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<MessagePath>,
) -> Result<HttpResponse, AppError> {
    act(
        &req,
        &state,
        &session,
        &ctx,
        path.id,
        service::retry_now,
        "is queued again",
    )
    .await
}
