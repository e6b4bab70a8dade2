//! The signed-in user of a request (an extractor): the session's account, never disabled,
//! signed in after its last password change.

use actix_session::SessionExt;
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use super::model::User;
use super::queries as accounts;
use super::session_store::{PUBLIC_ID_KEY, SIGNED_IN_AT_KEY, USER_KEY};
use crate::error::AppError;
use crate::state::AppState;
use crate::web::extract::client_ip;
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

pub async fn current_user(req: HttpRequest) -> Result<CurrentUser, AppError> {
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
