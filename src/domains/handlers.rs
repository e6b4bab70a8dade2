//! Handlers of the domains slice (admins): extract → service → view.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::model::{Domain, DomainId};
use super::service::{self, Change, NewDomainSpec};
use super::views::{DomainForm, DomainPage, DomainsPage};
use super::{dns, queries, records};
use crate::error::AppError;
use crate::state::AppState;
use crate::web::forms::FieldErrors;
use crate::web::frame::{Level, flash};
use crate::web::{htmx, render, render_status};
use crate::workspaces::extract::WorkspaceCtx;

async fn list_page(
    state: &AppState,
    session: &Session,
    ctx: &WorkspaceCtx,
    form: DomainForm,
    errors: FieldErrors,
) -> Result<DomainsPage, AppError> {
    let workspace = ctx.workspace.id;
    let domains = state
        .db
        .run(move |conn| Ok(queries::list(conn, workspace)?))
        .await?;
    Ok(DomainsPage {
        frame: ctx.frame(session, "domains", "Domains"),
        domains,
        form,
        errors,
    })
}

/// `GET /w/{slug}/domains` (admins).
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
            DomainForm::default(),
            FieldErrors::new(),
        )
        .await?,
    )
}

/// Parses the add form: the domain, two different selectors, a plain report address.
pub fn parse_form(form: &DomainForm, errors: &mut FieldErrors) -> Option<NewDomainSpec> {
    let name = errors.check("name", service::parse_name(&form.name));
    let selector = |typed: &str, default: &str| {
        service::parse_selector(if typed.trim().is_empty() {
            default
        } else {
            typed
        })
    };
    let (active_default, standby_default) = service::DEFAULT_SELECTORS;
    let active = errors.check(
        "active_selector",
        selector(&form.active_selector, active_default),
    );
    let standby = errors.check(
        "standby_selector",
        selector(&form.standby_selector, standby_default),
    );
    if let (Some(a), Some(s)) = (&active, &standby)
        && a == s
    {
        errors.add(
            "standby_selector",
            "The standby key needs a selector of its own.",
        );
    }
    let rua = match (&name, form.dmarc_rua.trim()) {
        (Some(name), "") => Some(format!("dmarc@{name}")),
        (_, typed) => errors.check(
            "dmarc_rua",
            records::recommended_dmarc(typed).map(|_| typed.to_owned()),
        ),
    };
    if !errors.is_empty() {
        return None;
    }
    Some(NewDomainSpec {
        name: name?,
        active_selector: active?,
        standby_selector: standby?,
        dmarc_rua: rua?,
    })
}

/// `POST /w/{slug}/domains` (admins): generates the token and both keys, stores the
/// domain, and shows its records.
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    form: web::Form<DomainForm>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let form = form.into_inner();
    let mut errors = FieldErrors::new();
    let Some(spec) = parse_form(&form, &mut errors) else {
        let page = list_page(&state, &session, &ctx, form, errors).await?;
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };
    // A name the workspace has is refused before any key is made.
    let (workspace_id, name) = (ctx.workspace.id, spec.name.clone());
    let taken = state
        .db
        .run(move |conn| Ok(queries::find_by_name(conn, workspace_id, &name)?.is_some()))
        .await?;
    if taken {
        errors.add(
            "name",
            format!("{} is already one of this workspace's domains.", spec.name),
        );
        let page = list_page(&state, &session, &ctx, form, errors).await?;
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
    }
    let (sealer, workspace, to_prepare) =
        (state.sealer.clone(), ctx.workspace.clone(), spec.clone());
    // Two RSA keys take a fraction of a second of CPU: not on the async threads.
    let row =
        web::block(move || service::prepare(&sealer, &workspace, &to_prepare, crate::db::now()))
            .await
            .map_err(|e| AppError::Unexpected(anyhow::anyhow!("key generation stopped: {e}")))??;
    let created = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            service::create(conn, workspace, actor, &row)
        })
        .await;
    let id = match created {
        Ok(id) => id,
        Err(AppError::Conflict(message)) => {
            errors.add("name", message);
            let page = list_page(&state, &session, &ctx, form, errors).await?;
            return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
        Err(e) => return Err(e),
    };
    flash(
        &session,
        Level::Success,
        format!(
            "Domain {} added. Publish its records at your DNS host, then check it.",
            spec.name
        ),
    );
    Ok(to_domain(&req, &ctx, id))
}

/// To the page of domain `id`.
fn to_domain(req: &HttpRequest, ctx: &WorkspaceCtx, id: DomainId) -> HttpResponse {
    htmx::redirect(req, &ctx.path(&format!("/domains/{}", id.0)))
}

/// Path of a domain.
#[derive(Deserialize)]
pub struct DomainPath {
    #[expect(
        dead_code,
        reason = "read by the WorkspaceCtx extractor from the match info"
    )]
    slug: String,
    id: i64,
}

async fn load(state: &AppState, ctx: &WorkspaceCtx, id: i64) -> Result<Domain, AppError> {
    let workspace = ctx.workspace.id;
    state
        .db
        .run(move |conn| queries::find(conn, workspace, DomainId(id))?.ok_or(AppError::NotFound))
        .await
}

/// `GET /w/{slug}/domains/{id}` (admins).
pub async fn show(
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<DomainPath>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let domain = load(&state, &ctx, path.id).await?;
    let title = domain.name.clone();
    render(&DomainPage::new(
        ctx.frame(&session, "domains", title),
        domain,
    ))
}

/// Looks the domain's records up and records the outcome (shared by the page, the API
/// and the background re-check). Returns the change and the stored domain.
pub async fn check_and_record(
    state: &AppState,
    workspace: &crate::workspaces::model::Workspace,
    actor: Option<(crate::accounts::model::User, String)>,
    domain: &Domain,
) -> Result<(Change, Domain), AppError> {
    let workspace_id = workspace.id;
    let providers = state
        .db
        .run(move |conn| {
            Ok(crate::providers::queries::list_by_workspace(
                conn,
                workspace_id,
            )?)
        })
        .await?;
    let report = dns::check_domain(&state.dns, domain, &dns::spf_hints(&providers)).await;
    let (workspace, looked_up, from) = (
        workspace.clone(),
        domain.clone(),
        state.settings.system_from.clone(),
    );
    let (change, stored) = state
        .db
        .write(move |conn| {
            let actor = actor
                .as_ref()
                .map(|(user, ip)| crate::workspaces::service::Actor { user, ip });
            let (change, alerted) = service::record_check(
                conn,
                &workspace,
                actor.as_ref(),
                &looked_up,
                &report,
                &from,
            )?;
            let stored =
                queries::find(conn, workspace.id, looked_up.id)?.ok_or(AppError::NotFound)?;
            Ok(((change, alerted), stored))
        })
        .await?;
    if change.1 {
        state.engine.wake();
    }
    Ok((change.0, stored))
}

/// `POST /w/{slug}/domains/{id}/check` (admins).
pub async fn check(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<DomainPath>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let domain = load(&state, &ctx, path.id).await?;
    let actor = Some((ctx.user.clone(), ctx.ip.clone()));
    let (change, stored) = match check_and_record(&state, &ctx.workspace, actor, &domain).await {
        Ok(checked) => checked,
        Err(AppError::Conflict(why)) => {
            flash(&session, Level::Error, why);
            return Ok(to_domain(&req, &ctx, domain.id));
        }
        Err(e) => return Err(e),
    };
    let (level, text) = match (change, stored.authenticated) {
        (Change::Authenticated, _) => (
            Level::Success,
            format!(
                "Domain {} is authenticated: its mail is signed from now on.",
                stored.name
            ),
        ),
        (Change::Lost, _) => (
            Level::Error,
            format!(
                "Domain {} is no longer authenticated: a required record was wrong twice an hour apart.",
                stored.name
            ),
        ),
        (Change::FailingOnce, _) => (
            Level::Error,
            format!(
                "A required record of {} is wrong. The domain stays authenticated until a check an hour from now still finds it wrong.",
                stored.name
            ),
        ),
        (Change::None, true) => (
            Level::Success,
            format!("Domain {} checked: still authenticated.", stored.name),
        ),
        (Change::None, false) => (
            Level::Error,
            format!(
                "Domain {} checked: not authenticated yet. See each record below.",
                stored.name
            ),
        ),
    };
    flash(&session, level, text);
    Ok(to_domain(&req, &ctx, stored.id))
}

/// `POST /w/{slug}/domains/{id}/rotate` (admins).
pub async fn rotate(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<DomainPath>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let domain = load(&state, &ctx, path.id).await?;
    // Refused before a key is made when the standby key is not published.
    if let Err(why) = service::may_rotate(&domain) {
        flash(&session, Level::Error, why);
        return Ok(to_domain(&req, &ctx, domain.id));
    }
    let fresh = new_standby(&state, &domain).await?;
    let id = domain.id;
    let rotated = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            service::rotate(conn, workspace, actor, id, fresh)
        })
        .await;
    match rotated {
        Ok(d) => flash(
            &session,
            Level::Success,
            format!(
                "{} signs now. Publish the new standby key at {}._domainkey.{} (below), then check the domain.",
                d.active_selector, d.standby_selector, d.name
            ),
        ),
        Err(AppError::Conflict(why)) => flash(&session, Level::Error, why),
        Err(e) => return Err(e),
    }
    Ok(to_domain(&req, &ctx, domain.id))
}

/// A fresh standby key for `domain`, sealed (made off the async threads).
pub async fn new_standby(state: &AppState, domain: &Domain) -> Result<(String, String), AppError> {
    let (sealer, context) = (
        state.sealer.clone(),
        Domain::seal_context(domain.workspace_id, &domain.name),
    );
    web::block(move || {
        let key = super::dkim::generate().map_err(|e| AppError::Unexpected(e.into()))?;
        Ok::<_, AppError>(service::seal_key(&sealer, &key, &context))
    })
    .await
    .map_err(|e| AppError::Unexpected(anyhow::anyhow!("key generation stopped: {e}")))?
}

/// `POST /w/{slug}/domains/{id}/delete` (admins).
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<DomainPath>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let id = DomainId(path.id);
    let deleted = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            service::delete(conn, workspace, actor, id)
        })
        .await?;
    flash(
        &session,
        Level::Success,
        format!("Domain {} deleted.", deleted.name),
    );
    Ok(htmx::redirect(&req, &ctx.path("/domains")))
}
