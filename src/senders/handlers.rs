//! Handlers of the senders slice (admins): extract → service → view.

use std::time::Duration;

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::model::{NewSender, Sender, SenderId};
use super::service::{self, Verified};
use super::views::{SenderForm, SenderPage, SenderRow, SendersPage};
use super::{code, queries};
use crate::error::AppError;
use crate::providers::model::{Provider, ProviderId};
use crate::state::AppState;
use crate::web::forms::FieldErrors;
use crate::web::frame::{Level, flash};
use crate::web::{htmx, render, render_status};
use crate::workspaces::extract::WorkspaceCtx;

/// Everything a senders page shows: the senders as listed, and the workspace's providers.
async fn load_all(
    state: &AppState,
    ctx: &WorkspaceCtx,
) -> Result<(Vec<SenderRow>, Vec<Provider>), AppError> {
    let workspace = ctx.workspace.id;
    state
        .db
        .run(move |conn| {
            Ok((
                service::rows(conn, workspace)?,
                crate::providers::queries::list_by_workspace(conn, workspace)?,
            ))
        })
        .await
}

async fn list_page(
    state: &AppState,
    session: &Session,
    ctx: &WorkspaceCtx,
    form: SenderForm,
    errors: FieldErrors,
) -> Result<SendersPage, AppError> {
    let (rows, providers) = load_all(state, ctx).await?;
    Ok(SendersPage {
        frame: ctx.frame(session, "senders", "Senders"),
        rows,
        providers,
        form,
        errors,
    })
}

/// `GET /w/{slug}/senders` (admins).
pub async fn index(
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    render(
        &list_page(
            &state,
            &session,
            &ctx,
            SenderForm::default(),
            FieldErrors::new(),
        )
        .await?,
    )
}

fn timeout(state: &AppState) -> Duration {
    Duration::from_secs(state.settings.smtp_timeout_secs)
}

/// `POST /w/{slug}/senders` (admins): checks the address, asks the provider whether it
/// takes it as envelope sender (nothing is sent), stores the sender and mails it a code.
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    form: web::Form<SenderForm>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let form = form.into_inner();
    let mut errors = FieldErrors::new();
    let name = errors.check("name", service::parse_name(&form.name));
    let address = errors.check("address", service::parse_address(&form.address));
    let reply_to = if form.reply_to.trim().is_empty() {
        Some(String::new())
    } else {
        errors.check("reply_to", service::parse_address(&form.reply_to))
    };
    let workspace = ctx.workspace.id;
    let (providers, domains) = state
        .db
        .run(move |conn| {
            Ok((
                crate::providers::queries::list_by_workspace(conn, workspace)?,
                crate::domains::queries::list(conn, workspace)?,
            ))
        })
        .await?;
    let provider = form
        .provider
        .parse::<i64>()
        .ok()
        .and_then(|id| providers.iter().find(|p| p.id == ProviderId(id)))
        .cloned();
    if provider.is_none() {
        errors.add("provider", "Pick the provider its mail goes through.");
    }
    let reject = |errors: FieldErrors, form: SenderForm| async {
        let page = list_page(&state, &session, &ctx, form, errors).await?;
        render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
    };
    let (Some(name), Some(address), Some(reply_to), Some(provider)) =
        (name, address, reply_to, provider)
    else {
        return reject(errors, form).await;
    };
    if let Err(why) = service::may_send_as(&address, &provider, &domains) {
        errors.add("address", why);
        return reject(errors, form).await;
    }
    // Registered with the provider: its server must take the address as envelope sender.
    let endpoint = match crate::providers::service::endpoint(&provider, &state.sealer) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            errors.add(
                "provider",
                format!("{e}: enter its password again on its page."),
            );
            return reject(errors, form).await;
        }
    };
    let lettre_address: lettre::Address = address
        .parse()
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("a parsed address: {e}")))?;
    let policy = if provider.per_request {
        state.per_request_egress.clone()
    } else {
        state.egress.clone()
    };
    if let Err(failure) =
        crate::providers::smtp::accepts_sender(&endpoint, &policy, timeout(&state), &lettre_address)
            .await
    {
        errors.add(
            "address",
            format!("{} refused this sender: {failure}", provider.name),
        );
        return reject(errors, form).await;
    }
    let now = crate::db::now();
    let row = NewSender {
        workspace_id: ctx.workspace.id,
        name,
        address,
        provider_id: Some(provider.id),
        reply_to,
        code_tries: 0,
        created_at: now,
        updated_at: now,
    };
    let provider_name = provider.name.clone();
    let created = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            service::create(conn, workspace, actor, &row, &provider_name)
        })
        .await;
    let id = match created {
        Ok(id) => id,
        Err(AppError::Conflict(message)) => {
            errors.add("address", message);
            return reject(errors, form).await;
        }
        Err(e) => return Err(e),
    };
    let sender = load(&state, &ctx, id.0).await?;
    mail_code(&state, &session, &ctx, &sender, &provider).await?;
    Ok(htmx::redirect(
        &req,
        &ctx.path(&format!("/senders/{}", id.0)),
    ))
}

/// Makes a new code and mails it; says in a flash what happened.
async fn mail_code(
    state: &AppState,
    session: &Session,
    ctx: &WorkspaceCtx,
    sender: &Sender,
    provider: &Provider,
) -> Result<(), AppError> {
    let (sealer, to_code) = (state.sealer.clone(), sender.clone());
    let made = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            service::new_code(conn, workspace, actor, &sealer, &to_code, crate::db::now())
        })
        .await;
    let code = match made {
        Ok(code) => code,
        Err(AppError::Conflict(why)) => {
            flash(session, Level::Error, why);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match code::mail(state, sender, provider, &code).await {
        Ok(_) => flash(
            session,
            Level::Success,
            format!(
                "A 6-digit code was mailed to {}. Enter it below within 15 minutes.",
                sender.address
            ),
        ),
        Err(why) => flash(
            session,
            Level::Error,
            format!("The code could not be mailed to {}: {why}", sender.address),
        ),
    }
    Ok(())
}

/// Path of a sender.
#[derive(Deserialize)]
pub struct SenderPath {
    #[expect(
        dead_code,
        reason = "read by the WorkspaceCtx extractor from the match info"
    )]
    slug: String,
    id: i64,
}

async fn load(state: &AppState, ctx: &WorkspaceCtx, id: i64) -> Result<Sender, AppError> {
    let workspace = ctx.workspace.id;
    state
        .db
        .run(move |conn| queries::find(conn, workspace, SenderId(id))?.ok_or(AppError::NotFound))
        .await
}

async fn page(
    state: &AppState,
    session: &Session,
    ctx: &WorkspaceCtx,
    id: i64,
    errors: FieldErrors,
) -> Result<SenderPage, AppError> {
    let (rows, _) = load_all(state, ctx).await?;
    let row = rows
        .into_iter()
        .find(|r| r.sender.id == SenderId(id))
        .ok_or(AppError::NotFound)?;
    let workspace = ctx.workspace.id;
    let unsent = state
        .db
        .run(move |conn| Ok(queries::count_unsent(conn, workspace, SenderId(id))?))
        .await?;
    let title = row.sender.address.clone();
    Ok(SenderPage {
        frame: ctx.frame(session, "senders", title),
        row,
        unsent,
        errors,
    })
}

/// `GET /w/{slug}/senders/{id}` (admins).
pub async fn show(
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<SenderPath>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    render(&page(&state, &session, &ctx, path.id, FieldErrors::new()).await?)
}

async fn provider_of(
    state: &AppState,
    ctx: &WorkspaceCtx,
    sender: &Sender,
) -> Result<Option<Provider>, AppError> {
    let (workspace, provider) = (ctx.workspace.id, sender.provider_id);
    state
        .db
        .run(move |conn| match provider {
            Some(id) => Ok(crate::providers::queries::find_by_workspace_and_id(
                conn, workspace, id,
            )?),
            None => Ok(None),
        })
        .await
}

/// `POST /w/{slug}/senders/{id}/code` (admins): a new code (at most one a minute).
pub async fn send_code(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<SenderPath>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let sender = load(&state, &ctx, path.id).await?;
    if sender.validated_at.is_some() {
        flash(
            &session,
            Level::Success,
            format!("{} is already validated.", sender.address),
        );
    } else {
        match provider_of(&state, &ctx, &sender).await? {
            Some(provider) => mail_code(&state, &session, &ctx, &sender, &provider).await?,
            None => flash(
                &session,
                Level::Error,
                "Its provider was deleted: delete this sender and create it again with another provider.",
            ),
        }
    }
    Ok(htmx::redirect(
        &req,
        &ctx.path(&format!("/senders/{}", path.id)),
    ))
}

/// The code form.
#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

/// `POST /w/{slug}/senders/{id}/verify` (admins).
pub async fn verify(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<SenderPath>,
    form: web::Form<CodeForm>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let sender = load(&state, &ctx, path.id).await?;
    let (sealer, code, id) = (state.sealer.clone(), form.code.clone(), sender.id);
    let verified = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            service::verify(conn, workspace, actor, &sealer, id, &code, crate::db::now())
        })
        .await?;
    match verified {
        Verified::Validated | Verified::AlreadyValidated => {
            flash(
                &session,
                Level::Success,
                format!("{} is validated.", sender.address),
            );
            Ok(htmx::redirect(
                &req,
                &ctx.path(&format!("/senders/{}", path.id)),
            ))
        }
        Verified::Refused(why) => {
            let mut errors = FieldErrors::new();
            errors.add("code", why);
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &page(&state, &session, &ctx, path.id, errors).await?,
            )
        }
    }
}

/// `POST /w/{slug}/senders/{id}/delete` (admins): cancels its unsent messages.
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<SenderPath>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let id = SenderId(path.id);
    let (sender, cancelled) = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            service::delete(conn, workspace, actor, id)
        })
        .await?;
    flash(
        &session,
        Level::Success,
        match cancelled {
            0 => format!("Sender {} deleted.", sender.address),
            n => format!(
                "Sender {} deleted; {n} messages not yet sent were cancelled.",
                sender.address
            ),
        },
    );
    Ok(htmx::redirect(&req, &ctx.path("/senders")))
}
