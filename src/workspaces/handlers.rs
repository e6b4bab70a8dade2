//! Handlers of the workspaces slice: extract → service → view.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::model::{Role, parse_label};
use super::service::AddedMember;
use super::views::*;
use super::{queries, service};
use crate::accounts::model::{EmailAddress, UserId};
use crate::error::AppError;
use crate::state::AppState;
use crate::web::forms::FieldErrors;
use crate::web::frame::{Level, flash};
use crate::web::{htmx, render, render_status};
use crate::workspaces::extract::WorkspaceCtx;

/// `GET /w/{slug}/`.
pub async fn overview(
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
) -> Result<HttpResponse, AppError> {
    let workspace_id = ctx.workspace.id;
    let today = crate::db::now().date();
    let (members, log, providers, senders, domains) = state
        .db
        .run(move |conn| {
            Ok((
                queries::list_members(conn, workspace_id)?,
                crate::messages::service::log_overview(conn, workspace_id, today)?,
                crate::providers::queries::list_by_workspace(conn, workspace_id)?,
                crate::senders::service::rows(conn, workspace_id)?,
                crate::domains::queries::list(conn, workspace_id)?,
            ))
        })
        .await?;
    render(&OverviewPage {
        chart: Chart::new(&log.days),
        log,
        providers,
        senders,
        domains,
        frame: ctx.frame(&session, "overview", "Overview"),
        member_count: members.len(),
        admin_count: members.iter().filter(|(_, m)| m.role().is_admin()).count(),
        role: ctx.role,
        site_name: ctx.workspace.site_name.clone(),
    })
}

/// The console's own base URL, for one-time links.
fn base_url(state: &AppState, req: &HttpRequest) -> String {
    match &state.settings.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

fn link_for(
    state: &AppState,
    req: &HttpRequest,
    email: String,
    token: &str,
    what: &'static str,
) -> OneTimeLink {
    OneTimeLink {
        email,
        url: format!("{}/password/set?token={token}", base_url(state, req)),
        what,
    }
}

async fn members_page(
    state: &AppState,
    session: &Session,
    ctx: &WorkspaceCtx,
    form: AddMemberForm,
    errors: FieldErrors,
    link: Option<OneTimeLink>,
) -> Result<MembersPage, AppError> {
    let workspace_id = ctx.workspace.id;
    let rows = state
        .db
        .run(move |conn| Ok(queries::list_members(conn, workspace_id)?))
        .await?;
    let members = rows
        .into_iter()
        .map(|(user, membership)| MemberRow {
            user_id: user.id.0,
            status: if user.is_disabled() {
                "disabled"
            } else if user.has_password() {
                "active"
            } else {
                "invited"
            },
            is_self: user.id == ctx.user.id,
            role: membership.role(),
            joined: membership.created_at,
            email: user.email,
            name: user.name,
        })
        .collect();
    Ok(MembersPage {
        frame: ctx.frame(session, "members", "Members"),
        members,
        roles: Role::ALL,
        form,
        errors,
        link,
    })
}

/// `GET /w/{slug}/members` (admins).
pub async fn members(
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let form = AddMemberForm {
        role: Role::Editor.as_str().into(),
        ..Default::default()
    };
    render(&members_page(&state, &session, &ctx, form, FieldErrors::new(), None).await?)
}

/// `POST /w/{slug}/members`: adds an existing account, or invites a new one and shows its
/// one-time link once.
pub async fn add_member(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    form: web::Form<AddMemberForm>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let form = form.into_inner();
    let mut errors = FieldErrors::new();
    let email = errors.check("email", EmailAddress::parse(&form.email));
    let role = errors.check("role", Role::parse(&form.role));
    let (Some(email), Some(role)) = (email, role) else {
        let page = members_page(&state, &session, &ctx, form, errors, None).await?;
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };
    let added = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            service::add_member(conn, workspace, actor, &email, role)
        })
        .await;
    match added {
        Ok(AddedMember::Existing(user)) => {
            flash(
                &session,
                Level::Success,
                format!("{} was added as {}.", user.email, role.label()),
            );
            Ok(htmx::redirect(&req, &ctx.path("/members")))
        }
        Ok(AddedMember::Invited { user, token }) => {
            flash(
                &session,
                Level::Success,
                format!("{} was invited as {}.", user.email, role.label()),
            );
            let link = link_for(
                &state,
                &req,
                user.email,
                &token,
                "sets their first password",
            );
            let page = members_page(
                &state,
                &session,
                &ctx,
                AddMemberForm {
                    role: role.as_str().into(),
                    ..Default::default()
                },
                FieldErrors::new(),
                Some(link),
            )
            .await?;
            render(&page)
        }
        Err(AppError::Conflict(message)) => {
            errors.add("email", message);
            let page = members_page(&state, &session, &ctx, form, errors, None).await?;
            render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(e) => Err(e),
    }
}

/// The change-role form.
#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    role: String,
}

/// Path of a member action.
#[derive(Deserialize)]
pub struct MemberPath {
    #[expect(
        dead_code,
        reason = "read by the WorkspaceCtx extractor from the match info"
    )]
    slug: String,
    user_id: i64,
}

/// Runs a member change and flashes its outcome: conflicts (last admin, foreign account)
/// become an error message on the members page rather than an error page.
async fn member_change<F>(
    req: &HttpRequest,
    state: &AppState,
    session: &Session,
    ctx: &WorkspaceCtx,
    change: F,
    done: impl FnOnce(&str) -> String,
) -> Result<HttpResponse, AppError>
where
    F: FnOnce(
            &mut crate::db::DbConn,
            &service::Actor<'_>,
            &crate::workspaces::model::Workspace,
        ) -> Result<crate::accounts::model::User, AppError>
        + Send
        + 'static,
{
    ctx.require_admin()?;
    let result = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            change(conn, actor, workspace)
        })
        .await;
    match result {
        Ok(member) => flash(session, Level::Success, done(&member.email)),
        Err(AppError::Conflict(message)) => flash(session, Level::Error, message),
        Err(e) => return Err(e),
    }
    Ok(htmx::redirect(req, &ctx.path("/members")))
}

/// `POST /w/{slug}/members/{user_id}/role`.
pub async fn change_role(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<MemberPath>,
    form: web::Form<RoleForm>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let role = Role::parse(&form.role).map_err(AppError::Validation)?;
    let target = UserId(path.user_id);
    member_change(
        &req,
        &state,
        &session,
        &ctx,
        move |conn, actor, ws| service::change_role(conn, ws, actor, target, role),
        |email| format!("{email} is now {}.", role.label()),
    )
    .await
}

/// `POST /w/{slug}/members/{user_id}/remove`.
pub async fn remove_member(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<MemberPath>,
) -> Result<HttpResponse, AppError> {
    let target = UserId(path.user_id);
    member_change(
        &req,
        &state,
        &session,
        &ctx,
        move |conn, actor, ws| service::remove_member(conn, ws, actor, target),
        |email| format!("{email} was removed from this workspace."),
    )
    .await
}

/// `POST /w/{slug}/members/{user_id}/disable`.
pub async fn disable_account(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<MemberPath>,
) -> Result<HttpResponse, AppError> {
    let target = UserId(path.user_id);
    member_change(
        &req,
        &state,
        &session,
        &ctx,
        move |conn, actor, ws| service::set_disabled(conn, ws, actor, target, true),
        |email| format!("The account {email} is disabled and signed out everywhere."),
    )
    .await
}

/// `POST /w/{slug}/members/{user_id}/enable`.
pub async fn enable_account(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<MemberPath>,
) -> Result<HttpResponse, AppError> {
    let target = UserId(path.user_id);
    member_change(
        &req,
        &state,
        &session,
        &ctx,
        move |conn, actor, ws| service::set_disabled(conn, ws, actor, target, false),
        |email| format!("The account {email} is enabled again."),
    )
    .await
}

/// `POST /w/{slug}/members/{user_id}/reset-link`: shows a one-time link once.
pub async fn reset_link(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    path: web::Path<MemberPath>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let target = UserId(path.user_id);
    let made = ctx
        .write_as(&state.db, move |conn, workspace, actor| {
            service::create_reset_link(conn, workspace, actor, target)
        })
        .await;
    let (member, token) = match made {
        Ok(made) => made,
        Err(AppError::Conflict(message)) => {
            flash(&session, Level::Error, message);
            return Ok(htmx::redirect(&req, &ctx.path("/members")));
        }
        Err(e) => return Err(e),
    };
    let link = link_for(
        &state,
        &req,
        member.email,
        &token,
        "sets a new password (valid for 24 hours, once)",
    );
    let form = AddMemberForm {
        role: Role::Editor.as_str().into(),
        ..Default::default()
    };
    render(&members_page(&state, &session, &ctx, form, FieldErrors::new(), Some(link)).await?)
}

/// `GET /w/{slug}/settings` (admins).
pub async fn settings_form(session: Session, ctx: WorkspaceCtx) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    render(&SettingsPage {
        frame: ctx.frame(&session, "settings", "Settings"),
        slug: ctx.workspace.slug.clone(),
        name: ctx.workspace.name.clone(),
        site_name: ctx.workspace.site_name.clone(),
        errors: FieldErrors::new(),
    })
}

/// The settings form.
#[derive(Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    site_name: String,
}

/// `POST /w/{slug}/settings`.
pub async fn settings(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    form: web::Form<SettingsForm>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let SettingsForm { name, site_name } = form.into_inner();
    let mut errors = FieldErrors::new();
    let parsed_name = errors.check("name", parse_label(&name, "workspace name", true, 100));
    let parsed_site = errors.check(
        "site_name",
        parse_label(&site_name, "site name", false, 100),
    );
    let (Some(new_name), Some(new_site)) = (parsed_name, parsed_site) else {
        let page = SettingsPage {
            frame: ctx.frame(&session, "settings", "Settings"),
            slug: ctx.workspace.slug.clone(),
            name,
            site_name,
            errors,
        };
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };
    ctx.write_as(&state.db, move |conn, workspace, actor| {
        service::update_settings(conn, workspace, actor, &new_name, &new_site)
    })
    .await?;
    flash(&session, Level::Success, "Settings saved.");
    Ok(htmx::redirect(&req, &ctx.path("/settings")))
}
