//! Handlers of the accounts slice: extract → service → view.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::extract::CurrentUser;
use super::model::{EmailAddress, NewUser, Password, parse_name};
use super::session_store::{PUBLIC_ID_KEY, SIGNED_IN_AT_KEY, USER_KEY, new_public_id};
use super::views::*;
use super::{queries, service};
use crate::audit;
use crate::db;
use crate::error::AppError;
use crate::state::AppState;
use crate::web::extract::client_ip;
use crate::web::forms::FieldErrors;
use crate::web::frame::{Frame, Level, flash};
use crate::web::{csrf, htmx, render, render_status};
use crate::workspaces::model::{Slug, parse_label};
use crate::workspaces::{queries as workspaces, service as workspace_rules};

/// Starts a signed-in session for `user_id`: new session id (no fixation), new public id,
/// new CSRF token.
fn sign_in(session: &Session, user_id: i64) -> Result<(), AppError> {
    session.renew();
    session
        .insert(USER_KEY, user_id)
        .and_then(|()| session.insert(PUBLIC_ID_KEY, new_public_id()))
        .and_then(|()| session.insert(SIGNED_IN_AT_KEY, db::now()))
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("session: {e}")))?;
    csrf::rotate(session);
    Ok(())
}

/// A `next` parameter is followed only to a path of this site: it must resolve, against
/// this site, to this site, and carry nothing a browser would strip or reinterpret
/// (tabs, line breaks, backslashes), so `/\t/evil.example` cannot become `//evil.example`.
fn local_path(next: &str) -> Option<&str> {
    let plain = next.chars().all(|c| c.is_ascii_graphic()) && !next.contains('\\');
    let base = url::Url::parse("http://mailroom.invalid/").ok()?;
    let same_site = base.join(next).is_ok_and(|u| u.origin() == base.origin());
    (plain && same_site && next.starts_with('/') && !next.starts_with("//")).then_some(next)
}

/// `GET /`: the first workspace of the signed-in user.
pub async fn home(
    state: web::Data<AppState>,
    session: Session,
    current: CurrentUser,
) -> Result<HttpResponse, AppError> {
    let user_id = current.user.id;
    let list = state
        .db
        .run(move |conn| Ok(workspaces::list_for_user(conn, user_id)?))
        .await?;
    match list.first() {
        Some((workspace, _)) => Ok(HttpResponse::SeeOther()
            .insert_header(("Location", format!("/w/{}/", workspace.slug)))
            .finish()),
        None => {
            flash(
                &session,
                Level::Warning,
                "You do not belong to any workspace yet. Ask an admin to add you.",
            );
            Ok(HttpResponse::SeeOther()
                .insert_header(("Location", "/account"))
                .finish())
        }
    }
}

/// Query of the sign-in page.
#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: String,
}

/// `GET /login`.
pub async fn login_form(
    session: Session,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, AppError> {
    render(&LoginPage {
        frame: Frame::new(&session, "Sign in"),
        email: String::new(),
        next: query.into_inner().next,
        error: None,
    })
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`.
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, AppError> {
    let LoginForm {
        email,
        password,
        next,
    } = form.into_inner();
    let ip = client_ip(&req);
    let address = email.trim().to_lowercase();
    let failed = |status: StatusCode,
                  error: String,
                  retry_after: Option<u64>|
     -> Result<HttpResponse, AppError> {
        let page = LoginPage {
            frame: Frame::new(&session, "Sign in"),
            email: email.clone(),
            next: next.clone(),
            error: Some(error),
        };
        let mut response = render_status(status, &page)?;
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from(seconds),
            );
        }
        Ok(response)
    };

    let (lookup_email, lookup_ip) = (address.clone(), ip.clone());
    let attempt = match state
        .db
        .write(move |conn| service::begin_attempt(conn, &lookup_email, &lookup_ip))
        .await
    {
        Ok(attempt) => attempt,
        Err(AppError::TooManyRequests { retry_after }) => {
            let message = AppError::TooManyRequests { retry_after }.to_string();
            return failed(StatusCode::TOO_MANY_REQUESTS, message, Some(retry_after));
        }
        Err(e) => return Err(e),
    };
    let hash = attempt.user.as_ref().and_then(|u| u.password_hash.clone());
    let password_ok =
        db::blocking(move || Ok(service::verify_password(hash.as_deref(), &password))).await?;
    let (record_email, record_ip) = (address, ip);
    let signed_in = state
        .db
        .write(move |conn| {
            service::record_login(conn, attempt, password_ok, &record_email, &record_ip)
        })
        .await?;
    match signed_in {
        Some(user) => {
            sign_in(&session, user.id.0)?;
            Ok(htmx::redirect_full(&req, local_path(&next).unwrap_or("/")))
        }
        None => failed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The email address or password is not right.".into(),
            None,
        ),
    }
}

/// `POST /logout`: deletes the session row, so the cookie is worthless from now on.
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    current: CurrentUser,
) -> Result<HttpResponse, AppError> {
    let entry = audit::entry("logout", Some(&current.user), &current.ip);
    state
        .db
        .write(move |conn| audit::record(conn, entry))
        .await?;
    session.purge();
    Ok(htmx::redirect_full(&req, "/login"))
}

/// `GET /setup`.
pub async fn setup_form(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
) -> Result<HttpResponse, AppError> {
    if state.setup.is_done() {
        return Ok(htmx::redirect_full(&req, "/"));
    }
    render(&SetupPage {
        frame: Frame::new(&session, "Set up Mailroom"),
        form: SetupForm::default(),
        errors: FieldErrors::new(),
    })
}

/// `POST /setup`: creates the first admin and workspace, with the token from the log.
pub async fn setup(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    form: web::Form<SetupForm>,
) -> Result<HttpResponse, AppError> {
    if state.setup.is_done() {
        return Err(AppError::Conflict(
            "Mailroom is already set up. Sign in instead.".into(),
        ));
    }
    let form = form.into_inner();
    let mut errors = FieldErrors::new();
    let token_ok: bool = form
        .setup_token
        .trim()
        .as_bytes()
        .ct_eq(state.setup.token().as_bytes())
        .into();
    if !token_ok {
        errors.add("setup_token", "This is not the setup token. Copy it from the server log (the line that says \"setup token\").");
    }
    let name = errors.check("name", parse_name(&form.name));
    let email = errors.check("email", EmailAddress::parse(&form.email));
    let password = errors.check("password", Password::parse(&form.password));
    let workspace_name = errors.check(
        "workspace_name",
        parse_label(&form.workspace_name, "workspace name", true, 100),
    );
    let slug = errors.check("slug", Slug::parse(&form.slug));
    let site_name = errors.check(
        "site_name",
        parse_label(&form.site_name, "site name", false, 100),
    );
    let (
        Some(name),
        Some(email),
        Some(password),
        Some(workspace_name),
        Some(slug),
        Some(site_name),
        true,
    ) = (
        name,
        email,
        password,
        workspace_name,
        slug,
        site_name,
        errors.is_empty(),
    )
    else {
        let kept = SetupForm {
            setup_token: String::new(),
            password: String::new(),
            ..form
        };
        let page = SetupPage {
            frame: Frame::new(&session, "Set up Mailroom"),
            form: kept,
            errors,
        };
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };
    let hash = db::blocking(move || service::hash_password(&password)).await?;
    let ip = client_ip(&req);
    let slug_text = slug.as_str().to_owned();
    let user_id = state
        .db
        .write(move |conn| {
            if queries::count_users(conn)? > 0 {
                return Err(AppError::Conflict(
                    "Mailroom is already set up. Sign in instead.".into(),
                ));
            }
            let now = db::now();
            let user_id = queries::insert_user(
                conn,
                &NewUser {
                    email: email.as_str(),
                    name: &name,
                    password_hash: Some(&hash),
                    password_changed_at: Some(now),
                    created_at: now,
                },
            )?;
            let workspace_id = workspace_rules::create_with_admin(
                conn,
                &workspace_name,
                &slug,
                &site_name,
                user_id,
            )?;
            let mut entry = audit::entry("setup.completed", None, &ip);
            entry.actor_user_id = Some(user_id);
            entry.actor_email = email.as_str().to_owned();
            entry.workspace_id = Some(workspace_id.0);
            entry.target = slug.as_str().to_owned();
            entry.detail = "first admin and workspace created".into();
            audit::record(conn, entry)?;
            Ok(user_id)
        })
        .await?;
    state.setup.mark_done();
    tracing::info!(workspace = %slug_text, "setup completed");
    sign_in(&session, user_id.0)?;
    flash(
        &session,
        Level::Success,
        "Mailroom is set up. Connect a provider next to start sending.",
    );
    Ok(htmx::redirect_full(&req, &format!("/w/{slug_text}/")))
}

/// Query of the set-password page.
#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// `GET /password/set?token=…`.
pub async fn set_password_form(
    state: web::Data<AppState>,
    session: Session,
    query: web::Query<TokenQuery>,
) -> Result<HttpResponse, AppError> {
    let token = query.into_inner().token;
    let lookup = token.clone();
    let owner = state
        .db
        .run(move |conn| service::find_link_owner(conn, &lookup))
        .await?;
    let page = SetPasswordPage {
        frame: Frame::new(&session, "Set your password"),
        email: owner.map(|u| u.email),
        token,
        errors: FieldErrors::new(),
    };
    let status = if page.email.is_some() {
        StatusCode::OK
    } else {
        StatusCode::GONE
    };
    render_status(status, &page)
}

/// The set-password form.
#[derive(Deserialize)]
pub struct SetPasswordForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /password/set`.
pub async fn set_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    form: web::Form<SetPasswordForm>,
) -> Result<HttpResponse, AppError> {
    let SetPasswordForm {
        token,
        password,
        confirm,
    } = form.into_inner();
    let mut errors = FieldErrors::new();
    let password = errors.check("password", Password::parse(&password));
    if password.as_ref().is_some_and(|p| p.expose() != confirm) {
        errors.add("confirm", "The two passwords differ.");
    }
    let lookup = token.clone();
    let owner = state
        .db
        .run(move |conn| service::find_link_owner(conn, &lookup))
        .await?;
    let (Some(password), Some(_), true) = (password, &owner, errors.is_empty()) else {
        let status = if owner.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::GONE
        };
        let page = SetPasswordPage {
            frame: Frame::new(&session, "Set your password"),
            email: owner.map(|u| u.email),
            token,
            errors,
        };
        return render_status(status, &page);
    };
    let hash = db::blocking(move || service::hash_password(&password)).await?;
    let ip = client_ip(&req);
    let user = state
        .db
        .write(move |conn| service::redeem_password_link(conn, &token, &hash, &ip))
        .await?;
    // Whoever was signed in in this browser is signed out; a fresh anonymous session
    // carries the message (a purged session would drop it).
    session.clear();
    session.renew();
    flash(
        &session,
        Level::Success,
        format!("Password set for {}. Sign in with it now.", user.email),
    );
    Ok(htmx::redirect_full(&req, "/login"))
}

async fn account_page(
    state: &AppState,
    session: &Session,
    current: &CurrentUser,
    errors: FieldErrors,
) -> Result<AccountPage, AppError> {
    let user_id = current.user.id;
    let list = state
        .db
        .run(move |conn| Ok(workspaces::list_for_user(conn, user_id)?))
        .await?;
    Ok(AccountPage {
        frame: Frame::signed_in(session, "Your account", &current.user.email),
        email: current.user.email.clone(),
        workspaces: list
            .into_iter()
            .map(|(w, m)| (w.slug, w.name, m.role().label()))
            .collect(),
        errors,
    })
}

/// `GET /account`.
pub async fn account(
    state: web::Data<AppState>,
    session: Session,
    current: CurrentUser,
) -> Result<HttpResponse, AppError> {
    render(&account_page(&state, &session, &current, FieldErrors::new()).await?)
}

/// The change-password form.
#[derive(Deserialize)]
pub struct ChangePasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /account/password`: signs out every other session of the user.
pub async fn change_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    current: CurrentUser,
    form: web::Form<ChangePasswordForm>,
) -> Result<HttpResponse, AppError> {
    let ChangePasswordForm {
        current: old,
        password,
        confirm,
    } = form.into_inner();
    // The current password is checked under the same throttle as sign-in, so a stolen
    // session cannot guess it without limit.
    let (email, ip) = (current.user.email.clone(), current.ip.clone());
    let attempt = state
        .db
        .write(move |conn| service::begin_attempt(conn, &email, &ip))
        .await?;
    let hash = current.user.password_hash.clone();
    let old_ok = db::blocking(move || Ok(service::verify_password(hash.as_deref(), &old))).await?;
    let email = current.user.email.clone();
    state
        .db
        .write(move |conn| service::settle_attempt(conn, &attempt, old_ok, &email))
        .await?;
    let mut errors = FieldErrors::new();
    if !old_ok {
        errors.add("current", "This is not your current password.");
    }
    let password = errors.check("password", Password::parse(&password));
    if password.as_ref().is_some_and(|p| p.expose() != confirm) {
        errors.add("confirm", "The two passwords differ.");
    }
    let (Some(password), true) = (password, errors.is_empty()) else {
        let page = account_page(&state, &session, &current, errors).await?;
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };
    let new_hash = db::blocking(move || service::hash_password(&password)).await?;
    let (user, session_id, ip) = (
        current.user.clone(),
        current.session_id.clone(),
        current.ip.clone(),
    );
    state
        .db
        .write(move |conn| service::change_password(conn, &user, &new_hash, &session_id, &ip))
        .await?;
    session.renew();
    // This session stays signed in past the revocation it just made.
    session
        .insert(SIGNED_IN_AT_KEY, db::now())
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("session: {e}")))?;
    flash(
        &session,
        Level::Success,
        "Password changed. Your other sessions were signed out.",
    );
    Ok(htmx::redirect(&req, "/account"))
}
