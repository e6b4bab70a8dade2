//! The JSON API (`/api/v1`): send messages, read them back, list providers. Every query
//! filters by the key's workspace; input errors are problem documents naming the field.

mod messages;
mod per_request;
mod providers;
mod request;
mod send;

pub use messages::*;

pub use providers::*;
pub use request::*;
pub use send::*;

use actix_web::HttpResponse;
use chrono::NaiveDateTime;
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// Parses a JSON body: malformed JSON is a 400 with line and column; a well-formed body
/// with a wrong, missing or unknown field is a 422 naming the field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m)
            .to_owned();
        if inner.is_syntax() || inner.is_eof() {
            return AppError::Malformed {
                message,
                line: inner.line(),
                column: inner.column(),
            };
        }
        // serde names missing and unknown fields in the message, not the path.
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|start| message.strip_prefix(start))
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name.to_owned());
        // A missing field is named in the message, at its parent's path; an unknown one
        // is at its own path already.
        let field = match (path.as_str(), named) {
            ("." | "", Some(name)) => name,
            ("." | "", None) => "body".to_owned(),
            (path, Some(name)) if message.starts_with("missing") => format!("{path}.{name}"),
            (path, _) => path.to_owned(),
        };
        AppError::field(field, message)
    })?;
    de.end().map_err(|e| AppError::Malformed {
        message: "trailing characters after the JSON value".into(),
        line: e.line(),
        column: e.column(),
    })?;
    Ok(value)
}

/// An optional RFC 3339 time from a request, as UTC; empty is none.
fn rfc3339(value: Option<&str>) -> Result<Option<NaiveDateTime>, String> {
    match value.map(str::trim) {
        None => Ok(None),
        Some(value) => chrono::DateTime::parse_from_rfc3339(value)
            .map(|at| Some(at.naive_utc()))
            .map_err(|_| format!("{value:?} is not an RFC 3339 time like 2026-12-01T09:30:00Z.")),
    }
}

/// A stored (UTC) time as the API writes it: RFC 3339 with `Z`.
pub(super) fn timestamp(at: NaiveDateTime) -> String {
    at.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Any other path under `/api/`: a problem document, not a page.
pub async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::NoSuch("endpoint"))
}

/// A method a path of the API does not serve: 405, with `Allow` naming the ones it does
/// (read from the OpenAPI document, so the two cannot disagree).
pub async fn not_allowed(req: actix_web::HttpRequest) -> HttpResponse {
    let pattern = req.match_pattern().unwrap_or_default();
    let allow = crate::api::openapi::methods_of(&pattern).join(", ");
    let mut response = crate::error::Problem::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("{pattern} answers {allow}."),
    )
    .response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
}

fn message_id(path: &str) -> Result<i64, AppError> {
    path.parse::<i64>().map_err(|_| AppError::NoSuch("message"))
}
