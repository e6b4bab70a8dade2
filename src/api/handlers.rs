//! Console pages of the API slice (admins): keys and the per-request SMTP switch.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::model::{ApiKeyId, KeyForm};
use super::service::{self, Creator};
use super::views::KeysPage;
use crate::error::AppError;
use crate::state::AppState;
use crate::web::forms::FieldErrors;
use crate::web::frame::{Level, flash};
use crate::web::{htmx, render, render_status};
use crate::workspaces::extract::WorkspaceCtx;

async fn page(
    state: &AppState,
    session: &Session,
    ctx: &WorkspaceCtx,
    form: KeyForm,
    errors: FieldErrors,
    created: Option<(super::model::ApiKey, String)>,
) -> Result<KeysPage, AppError> {
    let workspace = ctx.workspace.id;
    let (keys, current, senders) = state
        .db
        .run(move |conn| {
            Ok((
                super::queries::list(conn, workspace)?,
                crate::workspaces::queries::find_by_id(conn, workspace)?,
                crate::senders::queries::list(conn, workspace)?,
            ))
        })
        .await?;
    Ok(KeysPage {
        frame: ctx.frame(session, "api-keys", "API keys"),
        keys,
        senders,
        form,
        errors,
        created,
        per_request_smtp: current.is_some_and(|w| w.per_request_smtp),
        base_url: state
            .settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", state.settings.bind))
            .trim_end_matches('/')
            .to_owned(),
    })
}

/// `GET /w/{slug}/api-keys` (admins).
pub async fn index(
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let form = KeyForm {
        scope: "send".into(),
        ..KeyForm::default()
    };
    render(&page(&state, &session, &ctx, form, FieldErrors::new(), None).await?)
}

/// `POST /w/{slug}/api-keys`: creates a key and shows it this once (the answer is the page
/// itself, never a redirect: the key must not travel in a URL or a flash).
pub async fn create(
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    form: web::Form<KeyForm>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let form = form.into_inner();
    let mut errors = FieldErrors::new();
    let Some(request) = form.parse(&mut errors) else {
        let page = page(&state, &session, &ctx, form, errors, None).await?;
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };
    let created = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            service::create(conn, workspace, &Creator::Admin(actor), &request)
        })
        .await?;
    let fresh = KeyForm {
        scope: "send".into(),
        ..KeyForm::default()
    };
    let page = page(
        &state,
        &session,
        &ctx,
        fresh,
        FieldErrors::new(),
        Some(created),
    )
    .await?;
    render_status(StatusCode::CREATED, &page)
}

/// Path of a key.
#[derive(Deserialize)]
pub struct KeyPath {
    #[expect(
        dead_code,
        reason = "read by the WorkspaceCtx extractor from the match info"
    )]
    slug: String,
    id: i64,
}

/// `POST /w/{slug}/api-keys/{id}/revoke` (admins).
pub async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<KeyPath>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let id = ApiKeyId(path.id);
    let revoked = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            service::revoke(conn, workspace, actor, id)
        })
        .await?;
    flash(
        &session,
        Level::Success,
        format!("Key {} revoked: it answers 401 from now on.", revoked.name),
    );
    Ok(htmx::redirect(&req, &ctx.path("/api-keys")))
}

/// The default-sender form.
#[derive(Deserialize)]
pub struct DefaultSender {
    #[serde(default)]
    sender: String,
}

/// `POST /w/{slug}/api-keys/{id}/sender` (admins): the sender the key's sends go out as
/// when they name none (empty: none).
pub async fn default_sender(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<KeyPath>,
    form: web::Form<DefaultSender>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let id = ApiKeyId(path.id);
    let sender = match form.sender.trim() {
        "" => None,
        value => Some(crate::ids::SenderId(
            value.parse::<i64>().map_err(|_| AppError::NotFound)?,
        )),
    };
    let (key, chosen) = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            service::set_default_sender(conn, workspace, actor, id, sender)
        })
        .await?;
    flash(
        &session,
        Level::Success,
        match chosen {
            Some(address) => format!(
                "Sends with key {} that name no sender go out as {address}.",
                key.name
            ),
            None => format!(
                "Key {} has no default sender: its sends must name one in `from`.",
                key.name
            ),
        },
    );
    Ok(htmx::redirect(&req, &ctx.path("/api-keys")))
}

/// The per-request SMTP switch.
#[derive(Deserialize)]
pub struct SmtpSwitch {
    on: bool,
}

/// `POST /w/{slug}/api-keys/smtp` (admins).
pub async fn per_request_smtp(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    form: web::Form<SmtpSwitch>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let on = form.on;
    ctx.write_as(&state.db, move |conn, workspace, actor| {
        service::set_per_request_smtp(conn, workspace, actor, on)
    })
    .await?;
    let text = if on {
        "Per-request SMTP is on: API calls may bring their own SMTP settings."
    } else {
        "Per-request SMTP is off."
    };
    flash(&session, Level::Success, text);
    Ok(htmx::redirect(&req, &ctx.path("/api-keys")))
}

/// `GET /w/{slug}/api-reference` (every member).
pub async fn reference(session: Session, ctx: WorkspaceCtx) -> Result<HttpResponse, AppError> {
    render(&super::views::ReferencePage {
        frame: ctx.frame(&session, "api-keys", "API reference"),
        operations: super::openapi::operations(),
    })
}
