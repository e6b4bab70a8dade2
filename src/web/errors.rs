//! Error pages: every 4xx/5xx response that is not already a page of ours becomes the
//! error page (or, for a targeted htmx request, a small fragment), naming the request id.
//! A 401 becomes a redirect to the sign-in page.

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::{StatusCode, header};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpMessage, HttpResponse};
use askama::Template;
use tracing_actix_web::RequestId;

use super::frame::Frame;
use super::htmx;
use crate::error::AppError;

/// The error page.
#[derive(Template)]
#[template(path = "errors/error.html")]
pub struct ErrorPage {
    /// Frame (no navigation).
    pub frame: Frame,
    /// HTTP status.
    pub status: u16,
    /// Heading.
    pub heading: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// The request id to quote to an operator.
    pub request_id: String,
}

/// The same content as a fragment for htmx to show in place.
#[derive(Template)]
#[template(path = "errors/error.html", block = "fragment")]
pub struct ErrorFragment {
    /// HTTP status.
    pub status: u16,
    /// Heading.
    pub heading: &'static str,
    /// Message.
    pub message: String,
    /// Request id.
    pub request_id: String,
}

fn heading(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "That request could not be used",
        401 => "Please sign in",
        403 => "Not allowed",
        404 => "Not found",
        405 => "Not allowed here",
        409 => "That conflicts with the current state",
        413 => "Too large",
        429 => "Too many attempts",
        503 => "Temporarily unavailable",
        _ if status.is_server_error() => "Something went wrong on our side",
        _ => "Something went wrong",
    }
}

/// The error page's HTML (or its fragment, for a targeted htmx request).
pub fn body(status: StatusCode, message: String, request_id: String, fragment: bool) -> String {
    let heading = heading(status);
    if fragment {
        ErrorFragment {
            status: status.as_u16(),
            heading,
            message,
            request_id,
        }
        .render()
    } else {
        ErrorPage {
            frame: Frame::bare(heading),
            status: status.as_u16(),
            heading,
            message,
            request_id,
        }
        .render()
    }
    .unwrap_or_else(|_| "Error".to_owned())
}

/// The `ErrorHandlers` default handler.
pub fn render<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    // The API answers problem documents (an `AppError`'s own response) or JSON; a page
    // answers HTML. Anything else becomes one of those.
    let api = res.request().path().starts_with("/api/");
    let is_ours = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            if api {
                v.starts_with("application/json") || v.starts_with("application/problem+json")
            } else {
                // A page, or a plain answer a handler made on purpose (`/healthz`).
                v.starts_with("text/html")
                    || (v.starts_with("text/plain") && res.response().error().is_none())
            }
        });
    if is_ours {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (req, response) = res.into_parts();
    // The API answers problem documents, never pages (e.g. an oversized body's 413).
    if req.path().starts_with("/api/") {
        let detail = match response.error() {
            Some(_) if status.is_server_error() => {
                "Something went wrong on our side; the request id is in X-Request-Id.".to_owned()
            }
            Some(e) => e.to_string(),
            None => status.canonical_reason().unwrap_or("Error").to_owned(),
        };
        let mut problem = crate::error::Problem::new(status, detail).response();
        for (name, value) in response.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                problem.headers_mut().insert(name.clone(), value.clone());
            }
        }
        return Ok(ErrorHandlerResponse::Response(
            ServiceResponse::new(req, problem).map_into_right_body(),
        ));
    }
    // Only a page that needs a signed-in user sends the browser to sign in; other 401s
    // (bearer-token endpoints) answer as they are.
    let needs_sign_in = response
        .error()
        .and_then(|e| e.as_error::<AppError>())
        .is_some_and(|e| matches!(e, AppError::Unauthenticated));
    if needs_sign_in {
        // Only a page can be returned to after signing in, not a form post.
        let to = if req.method() == actix_web::http::Method::GET {
            let next = match req.query_string() {
                "" => req.path().to_owned(),
                q => format!("{}?{q}", req.path()),
            };
            format!(
                "/login?next={}",
                url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            )
        } else {
            "/login".to_owned()
        };
        let mut redirect = htmx::redirect_full(&req, &to);
        // Keep the session middleware's cookie changes (e.g. removing a revoked cookie).
        for cookie in response.headers().get_all(header::SET_COOKIE) {
            redirect
                .headers_mut()
                .append(header::SET_COOKIE, cookie.clone());
        }
        return Ok(ErrorHandlerResponse::Response(
            ServiceResponse::new(req, redirect).map_into_right_body(),
        ));
    }
    let app_error = response.error().and_then(|e| e.as_error::<AppError>());
    let message = match app_error {
        Some(e @ AppError::Unavailable(_)) => e.to_string(),
        _ if status.is_server_error() => {
            "The problem was logged. If it persists, give an operator the request id below."
                .to_owned()
        }
        Some(e) => e.to_string(),
        None => match response.error() {
            Some(e) => e.to_string(),
            None if status == StatusCode::NOT_FOUND => AppError::NotFound.to_string(),
            None => status.canonical_reason().unwrap_or("Error").to_owned(),
        },
    };
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(ToString::to_string)
        .unwrap_or_default();
    let body = body(status, message, request_id, htmx::is_targeted(&req));
    let mut builder = HttpResponse::build(status);
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            builder.insert_header((name.clone(), value.clone()));
        }
    }
    if htmx::is_targeted(&req) {
        // htmx does not swap error responses by default; point it at the page's alert area.
        builder.insert_header(("HX-Retarget", "#htmx-error"));
        builder.insert_header(("HX-Reswap", "innerHTML"));
    }
    let new: HttpResponse<BoxBody> = builder.content_type("text/html; charset=utf-8").body(body);
    let res: ServiceResponse<EitherBody<B>> = ServiceResponse::new(req, new).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
