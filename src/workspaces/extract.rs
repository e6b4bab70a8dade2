//! The workspace of a `/w/{slug}/…` URL with the signed-in user's role in it (an
//! extractor). A workspace the user is not a member of answers 404, never 403, so its
//! existence does not leak.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use super::model::{Role, Workspace};
use super::queries as workspaces;
use super::service::Actor;
use crate::accounts::extract::current_user;
use crate::accounts::model::User;
use crate::error::AppError;
use crate::state::AppState;
use crate::web::frame::{Frame, Nav, WorkspaceLink};

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
    /// The frame of a page of this workspace; `active` names the highlighted navigation
    /// item.
    pub fn frame(
        &self,
        session: &actix_session::Session,
        active: &'static str,
        title: impl Into<String>,
    ) -> Frame {
        let nav = Nav {
            slug: self.workspace.slug.clone(),
            name: self.workspace.name.clone(),
            role: self.role.label(),
            is_admin: self.role.is_admin(),
            can_compose: self.role.can_compose(),
            workspaces: self
                .workspaces
                .iter()
                .map(|(w, r)| WorkspaceLink {
                    slug: w.slug.clone(),
                    name: w.name.clone(),
                    role: r.label(),
                })
                .collect(),
            active,
        };
        Frame::workspace(session, nav, title, &self.user.email)
    }

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
