//! Handlers of the providers slice: extract → service → view.

use std::time::Duration;

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::egress::EgressError;
use super::model::{Kind, Provider, ProviderForm, ProviderId, Settings};
use super::queries;
use super::service::{self, SecretOutcome};
use super::smtp::{self, Endpoint};
use super::views::{ProviderPage, ProvidersPage};
use crate::error::AppError;
use crate::state::AppState;
use crate::web::forms::FieldErrors;
use crate::web::frame::{Level, flash};
use crate::web::{htmx, render, render_status};
use crate::workspaces::extract::WorkspaceCtx;

fn timeout(state: &AppState) -> Duration {
    Duration::from_secs(state.settings.smtp_timeout_secs)
}

/// `GET /w/{slug}/providers` (admins).
pub async fn index(
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let workspace = ctx.workspace.id;
    let providers = state
        .db
        .run(move |conn| Ok(queries::list_by_workspace(conn, workspace)?))
        .await?;
    render(&ProvidersPage {
        frame: ctx.frame(&session, "providers", "Providers"),
        providers,
        kinds: Kind::ALL,
    })
}

/// Query of the new-provider page.
#[derive(Deserialize)]
pub struct NewQuery {
    #[serde(default)]
    kind: String,
}

/// `GET /w/{slug}/providers/new?kind=…` (admins).
pub async fn new_form(
    session: Session,
    ctx: WorkspaceCtx,
    query: web::Query<NewQuery>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let kind = Kind::parse(&query.kind).unwrap_or(Kind::Smtp);
    let title = format!("Add {} provider", kind.label());
    render(&ProviderPage::new(
        ctx.frame(&session, "providers", title),
        None,
        ProviderForm::new_of(kind),
        FieldErrors::new(),
    ))
}

fn form_page(
    session: &Session,
    ctx: &WorkspaceCtx,
    provider: Option<Provider>,
    form: ProviderForm,
    errors: FieldErrors,
) -> ProviderPage {
    let title = match &provider {
        Some(p) => p.name.clone(),
        None => format!("Add {} provider", form.kind().label()),
    };
    ProviderPage::new(
        ctx.frame(session, "providers", title),
        provider,
        form,
        errors,
    )
}

/// The form again with its errors (422), keeping what was typed but never the password.
fn reject(
    session: &Session,
    ctx: &WorkspaceCtx,
    provider: Option<Provider>,
    form: ProviderForm,
    errors: FieldErrors,
) -> Result<HttpResponse, AppError> {
    let form = ProviderForm {
        password: String::new(),
        ..form
    };
    render_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        &form_page(session, ctx, provider, form, errors),
    )
}

/// Parses the form and applies the egress policy to its hosts. A refused address is an
/// error on the field; a host that does not resolve now may still be saved (the check will
/// say so, and the policy is applied again at every connect).
async fn parse_and_police(
    state: &AppState,
    form: &ProviderForm,
    errors: &mut FieldErrors,
) -> Option<Settings> {
    let settings = form.parse(errors)?;
    let mut hosts = vec![("host", settings.host.clone(), settings.port)];
    if let (Some(host), Some(port)) = (&settings.imap_host, settings.imap_port) {
        hosts.push((
            "imap_host",
            host.clone(),
            u16::try_from(port).unwrap_or(993),
        ));
    }
    for (field, host, port) in hosts {
        let lookup = tokio::time::timeout(timeout(state), state.egress.resolve(&host, port)).await;
        if let Ok(Err(EgressError::Refused(why))) = lookup {
            errors.add(field, why);
        }
    }
    errors.is_empty().then_some(settings)
}

/// Checks a provider and records the outcome; returns it for the flash message.
async fn check_and_record(
    state: &AppState,
    ctx: &WorkspaceCtx,
    id: ProviderId,
    endpoint: Endpoint,
) -> Result<Result<String, smtp::SmtpFailure>, AppError> {
    let outcome = smtp::check(&endpoint, &state.egress, timeout(state)).await;
    let (workspace, recorded) = (ctx.workspace.clone(), outcome.clone());
    let from = state.settings.system_from.clone();
    let released = state
        .db
        .write(move |conn| {
            if service::record_check(conn, &workspace, id, &recorded, &from)? {
                return Ok(1); // alerts queued: wake the engine
            }
            // Green again: what was held for this provider goes out now.
            match (
                &recorded,
                queries::find_by_workspace_and_id(conn, workspace.id, id)?,
            ) {
                (Ok(_), Some(provider)) => {
                    crate::messages::service::release_for_provider(conn, &workspace, &provider)
                }
                _ => Ok(0),
            }
        })
        .await?;
    if released > 0 {
        state.engine.wake();
    }
    Ok(outcome)
}

fn flash_outcome(
    session: &Session,
    name: &str,
    saved: &str,
    outcome: &Result<String, smtp::SmtpFailure>,
) {
    match outcome {
        Ok(_) => flash(
            session,
            Level::Success,
            format!("Provider {name} {saved}and verified: it can send."),
        ),
        Err(failure) if failure.is_auth_failure() => flash(
            session,
            Level::Error,
            format!(
                "Provider {name} {saved}but the server refused the sign-in: {failure}. Check the username and password."
            ),
        ),
        Err(failure) => flash(
            session,
            Level::Error,
            format!("Provider {name} {saved}but the check failed: {failure}"),
        ),
    }
}

/// Signs in with the settings and password of a form before anything is stored (seed 002:
/// a provider whose sign-in is refused is not created, and a working one is not changed
/// to credentials that fail). `None` when the server accepted them (the words it said);
/// otherwise the field the answer belongs to and what to show there.
async fn verify_first(
    state: &AppState,
    settings: &Settings,
    password: Option<String>,
) -> Result<String, (&'static str, String)> {
    if !settings.username.is_empty() && password.is_none() {
        return Err((
            "password",
            "Enter the password: the server signs in with it before the provider is saved.".into(),
        ));
    }
    let endpoint = Endpoint {
        host: settings.host.clone(),
        port: settings.port,
        tls: settings.tls,
        username: settings.username.clone(),
        password,
    };
    smtp::check(&endpoint, &state.egress, timeout(state))
        .await
        .map_err(|failure| {
            if failure.is_auth_failure() {
                (
                    "password",
                    format!("The server refused the sign-in: {failure}. Check the username and password."),
                )
            } else if failure.detail.contains("TLS") {
                ("tls", format!("The server could not be reached over TLS: {failure}"))
            } else {
                ("host", format!("The server could not be reached: {failure}"))
            }
        })
}

/// `POST /w/{slug}/providers` (admins): verifies the settings by signing in, then saves
/// the provider green; a refused sign-in, an unreachable host or a timeout stores
/// nothing and shows the form again with the server's answer (every value kept but the
/// password).
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    form: web::Form<ProviderForm>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let mut form = form.into_inner();
    let mut errors = FieldErrors::new();
    let Some(settings) = parse_and_police(&state, &form, &mut errors).await else {
        return reject(&session, &ctx, None, form, errors);
    };
    let password = (!form.password.is_empty()).then(|| form.password.clone());
    let said = match verify_first(&state, &settings, password.clone()).await {
        Ok(said) => said,
        Err((field, why)) => {
            errors.add(field, why);
            form.password.clear();
            return reject(&session, &ctx, None, form, errors);
        }
    };
    let sealed = password.as_deref().map(|p| {
        state
            .sealer
            .seal(p, &Provider::seal_context(ctx.workspace.id))
    });
    let (to_save, from) = (settings.clone(), state.settings.system_from.clone());
    let created = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            let id = service::create(conn, workspace, actor, &to_save, sealed.as_deref())?;
            service::record_check(conn, workspace, id, &Ok(said), &from)?;
            Ok(id)
        })
        .await;
    let id = match created {
        Ok(id) => id,
        Err(AppError::Conflict(message)) => {
            errors.add("name", message);
            form.password.clear();
            return reject(&session, &ctx, None, form, errors);
        }
        Err(e) => return Err(e),
    };
    flash(
        &session,
        Level::Success,
        format!(
            "Provider {} saved and verified: it can send.",
            settings.name
        ),
    );
    Ok(htmx::redirect(
        &req,
        &ctx.path(&format!("/providers/{}", id.0)),
    ))
}

/// Checks a stored provider, records the outcome, says it in a flash, and shows its page.
async fn check_and_show(
    req: &HttpRequest,
    state: &AppState,
    session: &Session,
    ctx: &WorkspaceCtx,
    provider: &Provider,
    verb: &str,
) -> Result<HttpResponse, AppError> {
    let endpoint = service::endpoint_for_check(provider, &state.sealer);
    let outcome = check_and_record(state, ctx, provider.id, endpoint).await?;
    flash_outcome(session, &provider.name, verb, &outcome);
    Ok(htmx::redirect(
        req,
        &ctx.path(&format!("/providers/{}", provider.id.0)),
    ))
}

async fn load(state: &AppState, ctx: &WorkspaceCtx, id: i64) -> Result<Provider, AppError> {
    let workspace = ctx.workspace.id;
    state
        .db
        .run(move |conn| {
            queries::find_by_workspace_and_id(conn, workspace, ProviderId(id))?
                .ok_or(AppError::NotFound)
        })
        .await
}

/// Path of a provider.
#[derive(Deserialize)]
pub struct ProviderPath {
    #[expect(
        dead_code,
        reason = "read by the WorkspaceCtx extractor from the match info"
    )]
    slug: String,
    id: i64,
}

/// `GET /w/{slug}/providers/{id}` (admins).
pub async fn edit_form(
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<ProviderPath>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let provider = load(&state, &ctx, path.id).await?;
    let form = ProviderForm::from_provider(&provider);
    render(&form_page(
        &session,
        &ctx,
        Some(provider),
        form,
        FieldErrors::new(),
    ))
}

/// `POST /w/{slug}/providers/{id}` (admins). A change of the server, port, TLS mode,
/// username or password is verified by signing in first: refused, the provider keeps its
/// working settings and the form says why (a stored password is never sent to other
/// settings: those need it typed again). Other changes are saved, then checked.
pub async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<ProviderPath>,
    form: web::Form<ProviderForm>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let provider = load(&state, &ctx, path.id).await?;
    // The kind is fixed once a provider exists.
    let mut form = ProviderForm {
        kind: provider.kind.clone(),
        ..form.into_inner()
    };
    let mut errors = FieldErrors::new();
    let Some(settings) = parse_and_police(&state, &form, &mut errors).await else {
        return reject(&session, &ctx, Some(provider), form, errors);
    };
    let typed = (!form.password.is_empty()).then(|| form.password.clone());
    let endangered = settings.endangers_secret_of(&provider);
    let verified = if typed.is_some() || endangered {
        match verify_first(&state, &settings, typed.clone()).await {
            Ok(said) => Some(said),
            Err((field, why)) => {
                let why = if endangered && typed.is_none() {
                    "The server, port, TLS mode or username changed: enter the password for the new settings (the stored one is never sent anywhere else).".to_owned()
                } else {
                    why
                };
                errors.add(field, why);
                flash(
                    &session,
                    Level::Error,
                    format!(
                        "The change was not saved: provider {} keeps its working settings.",
                        provider.name
                    ),
                );
                form.password.clear();
                return reject(&session, &ctx, Some(provider), form, errors);
            }
        }
    } else {
        None
    };
    let id = provider.id;
    let sealed = typed.as_deref().map(|p| {
        state
            .sealer
            .seal(p, &Provider::seal_context(ctx.workspace.id))
    });
    let (to_save, from, recorded) = (
        settings.clone(),
        state.settings.system_from.clone(),
        verified.clone(),
    );
    let saved = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            let outcome = service::update(conn, workspace, actor, id, &to_save, sealed.as_deref())?;
            if let Some(said) = recorded {
                service::record_check(conn, workspace, id, &Ok(said), &from)?;
                // Green again: what was held for it goes out now.
                let stored = queries::find_by_workspace_and_id(conn, workspace.id, id)?
                    .ok_or(AppError::NotFound)?;
                crate::messages::service::release_for_provider(conn, workspace, &stored)?;
            }
            Ok(outcome)
        })
        .await;
    match saved {
        Ok(SecretOutcome::Cleared) => {
            return Err(AppError::Unexpected(anyhow::anyhow!(
                "a provider's password was cleared although its change was verified"
            )));
        }
        Ok(_) => {}
        Err(AppError::Conflict(message)) => {
            errors.add("name", message);
            form.password.clear();
            return reject(&session, &ctx, Some(provider), form, errors);
        }
        Err(e) => return Err(e),
    }
    let stored = load(&state, &ctx, path.id).await?;
    if verified.is_some() {
        state.engine.wake();
        flash(
            &session,
            Level::Success,
            format!("Provider {} saved and verified: it can send.", stored.name),
        );
        return Ok(htmx::redirect(
            &req,
            &ctx.path(&format!("/providers/{}", stored.id.0)),
        ));
    }
    check_and_show(&req, &state, &session, &ctx, &stored, "saved ").await
}

/// `POST /w/{slug}/providers/{id}/check` (admins).
pub async fn check(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<ProviderPath>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let provider = load(&state, &ctx, path.id).await?;
    check_and_show(&req, &state, &session, &ctx, &provider, "checked ").await
}

/// `POST /w/{slug}/providers/{id}/delete` (admins).
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<ProviderPath>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let id = ProviderId(path.id);
    let deleted = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            service::delete(conn, workspace, actor, id)
        })
        .await?;
    flash(
        &session,
        Level::Success,
        format!("Provider {} deleted.", deleted.name),
    );
    Ok(htmx::redirect(&req, &ctx.path("/providers")))
}
