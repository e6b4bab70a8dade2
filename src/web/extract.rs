//! Extractors: the signed-in user, and the workspace of a `/w/{slug}/…` URL with the user's
//! role in it. A workspace the user is not a member of answers 404, never 403, so its
//! existence does not leak.

use actix_session::SessionExt;
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use super::AppState;
use crate::accounts::model::User;
use crate::accounts::queries as accounts;
use crate::accounts::session_store::{PUBLIC_ID_KEY, SIGNED_IN_AT_KEY, USER_KEY};
use crate::error::AppError;
use crate::workspaces::model::{Role, Workspace};
use crate::workspaces::queries as workspaces;
use crate::workspaces::service::Actor;

/// The signed-in user and the public id of their session.
pub struct CurrentUser {
    /// The account (never disabled).
    pub user: User,
    /// The session's public id (recorded on what the user does; never the cookie value).
    pub session_id: String,
    /// Client address.
    pub ip: String,
}

impl CurrentUser {
    /// The user as the actor of a change.
    pub fn actor(&self) -> Actor<'_> {
        Actor {
            user: &self.user,
            ip: &self.ip,
        }
    }
}

/// The client's address: the TCP peer, or what a trusted reverse proxy says
/// (`trust_forwarded_for`). Sign-in throttling and the audit log key on it.
pub fn client_ip(req: &HttpRequest) -> String {
    let trust_proxy = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| s.settings.trust_forwarded_for);
    if trust_proxy && let Some(ip) = req.connection_info().realip_remote_addr() {
        return ip.to_owned();
    }
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

async fn current_user(req: HttpRequest) -> Result<CurrentUser, AppError> {
    let session = req.get_session();
    let user_id = session.get::<i64>(USER_KEY).ok().flatten();
    let session_id = session.get::<String>(PUBLIC_ID_KEY).ok().flatten();
    let signed_in_at = session
        .get::<chrono::NaiveDateTime>(SIGNED_IN_AT_KEY)
        .ok()
        .flatten();
    let (Some(user_id), Some(session_id), Some(signed_in_at)) = (user_id, session_id, signed_in_at)
    else {
        return Err(AppError::Unauthenticated);
    };
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("application state missing")))?;
    let user = state
        .db
        .run(move |conn| {
            Ok(accounts::find_user_by_id(
                conn,
                crate::accounts::model::UserId(user_id),
            )?)
        })
        .await?;
    match user {
        Some(user) if !user.is_disabled() && user.accepts_session_from(signed_in_at) => {
            Ok(CurrentUser {
                user,
                session_id,
                ip: client_ip(&req),
            })
        }
        _ => {
            session.purge();
            Err(AppError::Unauthenticated)
        }
    }
}

impl FromRequest for CurrentUser {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(current_user(req.clone()))
    }
}

/// A workspace page's context: who, where, with which role.
pub struct WorkspaceCtx {
    /// The signed-in user.
    pub user: User,
    /// The session's public id.
    pub session_id: String,
    /// Client address.
    pub ip: String,
    /// The workspace of the URL.
    pub workspace: Workspace,
    /// The user's role in it.
    pub role: Role,
    /// All of the user's workspaces with their roles, for the switcher.
    pub workspaces: Vec<(Workspace, Role)>,
}

impl WorkspaceCtx {
    /// 403 unless the user administers the workspace.
    pub fn require_admin(&self) -> Result<(), AppError> {
        if self.role.is_admin() {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }

    /// The user as the actor of a change.
    pub fn actor(&self) -> Actor<'_> {
        Actor {
            user: &self.user,
            ip: &self.ip,
        }
    }

    /// Runs a write transaction as this user in this workspace: `f` gets the workspace and
    /// the actor (for the audit log) without the caller cloning them into the closure.
    pub async fn write_as<T, F>(&self, db: &crate::db::Db, f: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut crate::db::DbConn, &Workspace, &Actor<'_>) -> Result<T, AppError>
            + Send
            + 'static,
        T: Send + 'static,
    {
        let (workspace, user, ip) = (self.workspace.clone(), self.user.clone(), self.ip.clone());
        db.write(move |conn| {
            f(
                conn,
                &workspace,
                &Actor {
                    user: &user,
                    ip: &ip,
                },
            )
        })
        .await
    }

    /// 403 unless the user may compose and send (editors and admins).
    pub fn require_composer(&self) -> Result<(), AppError> {
        if self.role.can_compose() {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }

    /// A path inside the workspace: `path("/members")` → `/w/{slug}/members`.
    pub fn path(&self, rest: &str) -> String {
        format!("/w/{}{rest}", self.workspace.slug)
    }
}

impl FromRequest for WorkspaceCtx {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let slug = req
                .match_info()
                .get("slug")
                .ok_or(AppError::NotFound)?
                .to_owned();
            let current = current_user(req.clone()).await?;
            let state = req.app_data::<web::Data<AppState>>().ok_or_else(|| {
                AppError::Unexpected(anyhow::anyhow!("application state missing"))
            })?;
            let user_id = current.user.id;
            let all = state
                .db
                .run(move |conn| Ok(workspaces::list_for_user(conn, user_id)?))
                .await?;
            let all: Vec<(Workspace, Role)> = all.into_iter().map(|(w, m)| (w, m.role())).collect();
            let (workspace, role) = all
                .iter()
                .find(|(w, _)| w.slug == slug)
                .cloned()
                .ok_or(AppError::NotFound)?;
            Ok(WorkspaceCtx {
                user: current.user,
                session_id: current.session_id,
                ip: current.ip,
                workspace,
                role,
                workspaces: all,
            })
        })
    }
}
