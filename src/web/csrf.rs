//! CSRF protection for every state-changing request outside `/api/`: the Origin (or
//! Referer) must be this site, and the session's token must come back in the
//! `X-CSRF-Token` header (htmx), the `csrf_token` form field, or, for multipart uploads,
//! the `csrf_token` query parameter. OWASP's synchronizer-token pattern:
//! <https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html>.

use actix_session::{Session, SessionExt};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use subtle::ConstantTimeEq;

use crate::error::AppError;

/// Session key of the token.
const SESSION_KEY: &str = "csrf";
/// Header htmx sends (set on `<body hx-headers>`).
pub const HEADER: &str = "X-CSRF-Token";
/// Form field and query parameter name.
pub const FIELD: &str = "csrf_token";

/// The session's token, created on first use.
pub fn token(session: &Session) -> String {
    if let Ok(Some(token)) = session.get::<String>(SESSION_KEY) {
        return token;
    }
    let token = new_token();
    let _ = session.insert(SESSION_KEY, &token);
    token
}

/// A fresh CSRF token.
fn new_token() -> String {
    crate::crypto::token()
}

/// Gives the session a new token (at sign-in, with the new session id).
pub fn rotate(session: &Session) {
    let _ = session.insert(SESSION_KEY, new_token());
}

fn same_origin(req: &ServiceRequest, public_url: Option<&str>) -> bool {
    let headers = req.headers();
    let claimed = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| url::Url::parse(v).ok());
    let Some(claimed) = claimed else {
        // Browsers send Origin on cross-site POSTs; a request without either header is
        // not a browser's cross-site request. The token check below still applies.
        return true;
    };
    let claimed_authority = match claimed.port() {
        Some(port) => format!("{}:{port}", claimed.host_str().unwrap_or_default()),
        None => claimed.host_str().unwrap_or_default().to_owned(),
    };
    if public_url
        .and_then(|u| url::Url::parse(u).ok())
        .is_some_and(|public| public.origin() == claimed.origin())
    {
        return true;
    }
    req.connection_info().host() == claimed_authority
}

/// The middleware (mounted with `actix_web::middleware::from_fn`).
pub async fn protect(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe || req.path().starts_with("/api/") {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let public_url = req
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .and_then(|s| s.settings.public_url.clone());
    if !same_origin(&req, public_url.as_deref()) {
        tracing::warn!(path = req.path(), "cross-origin state change refused");
        return Ok(req.error_response(AppError::Csrf).map_into_boxed_body());
    }
    let expected = req.get_session().get::<String>(SESSION_KEY).ok().flatten();
    let matches = |supplied: Option<&str>| match (expected.as_deref(), supplied) {
        (Some(e), Some(s)) => bool::from(e.as_bytes().ct_eq(s.as_bytes())),
        _ => false,
    };
    // The header (htmx) first; if it is missing or stale (a page rendered without a
    // session, e.g. an error page), the form field, or the query for multipart uploads.
    let mut valid = matches(req.headers().get(HEADER).and_then(|v| v.to_str().ok()));
    if !valid {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        valid = if content_type.starts_with("application/x-www-form-urlencoded") {
            let body = req.extract::<Bytes>().await?;
            let ok = matches(form_field(&body).as_deref());
            req.set_payload(actix_web::dev::Payload::from(body));
            ok
        } else {
            matches(form_field(req.query_string().as_bytes()).as_deref())
        };
    }
    if !valid {
        tracing::warn!(
            path = req.path(),
            "state change without a valid CSRF token refused"
        );
        return Ok(req.error_response(AppError::Csrf).map_into_boxed_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

fn form_field(body: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == FIELD)
        .map(|(_, v)| v.into_owned())
}
