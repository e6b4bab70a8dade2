//! RFC 9457 problem details: every API error is `application/problem+json` with a title,
//! the status, a detail for people and, for invalid input, the fields that were wrong.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::error::AppError;

/// One wrong field of a request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldProblem {
    /// The field as the request names it (`to`, `cc[2]`, `smtp.port`).
    pub field: String,
    /// What is wrong with it.
    pub detail: String,
}

/// A problem document (RFC 9457).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status and title say what kind of problem it is.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// The status's short text.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// Wrong fields, when the input was invalid.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
    /// For malformed JSON: where the parser stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// For malformed JSON: the column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl Problem {
    /// A problem with a status and a detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            line: None,
            column: None,
        }
    }

    /// The response.
    pub fn response(&self) -> HttpResponse {
        HttpResponse::build(StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST))
            .content_type("application/problem+json")
            .json(self)
    }
}

/// An API error: answered as a problem document.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No key, or a wrong or revoked one.
    #[error("Send a valid API key: Authorization: Bearer <key>.")]
    Unauthorized,
    /// The key's scope does not allow this.
    #[error("This API key's scope does not allow this; it needs send+read.")]
    Forbidden,
    /// Not in the key's workspace (or nowhere).
    #[error("No such {0} in this workspace.")]
    NotFound(&'static str),
    /// The body is not JSON.
    #[error("The body is not valid JSON: {message}")]
    Malformed {
        /// Parser message.
        message: String,
        /// Line.
        line: usize,
        /// Column.
        column: usize,
    },
    /// Fields are wrong.
    #[error("The request has invalid fields.")]
    Invalid(Vec<FieldProblem>),
    /// It conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// Over the key's rate limit.
    #[error("This API key's rate limit is reached; retry after {0} s.")]
    RateLimited(u64),
    /// Every per-request SMTP server the workspace may have still has mail to send.
    #[error(
        "This workspace already has {0} per-request SMTP servers (the limit, MAILROOM_PER_REQUEST_SMTP_LIMIT), each with mail still to send; retry once one of them has sent its mail, or use a provider."
    )]
    ServersInUse(u32),
    /// Anything else (logged; opaque to the caller).
    #[error(transparent)]
    App(#[from] AppError),
}

impl ApiError {
    /// One wrong field.
    pub fn field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::Invalid(vec![FieldProblem {
            field: field.into(),
            detail: detail.into(),
        }])
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        ApiError::App(e.into())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Malformed { .. } => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited(_) | ApiError::ServersInUse(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::App(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut problem = Problem::new(status, self.to_string());
        match self {
            ApiError::Malformed { line, column, .. } => {
                problem.line = Some(*line);
                problem.column = Some(*column);
            }
            ApiError::Invalid(errors) => problem.errors = errors.clone(),
            ApiError::App(AppError::Invalid { field, message }) => {
                problem.detail = "The request has invalid fields.".into();
                problem.errors = vec![FieldProblem {
                    field: (*field).to_owned(),
                    detail: message.clone(),
                }];
            }
            ApiError::App(AppError::Unexpected(cause)) => {
                tracing::error!(error = format!("{cause:#}"), "API request failed");
                problem.detail =
                    "Something went wrong on our side; the request id is in X-Request-Id.".into();
            }
            ApiError::App(AppError::NotFound) => problem.detail = "Not found.".into(),
            _ => {}
        }
        let mut response = problem.response();
        match self {
            ApiError::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            ApiError::RateLimited(seconds) => {
                if let Ok(value) = header::HeaderValue::from_str(&seconds.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
            }
            ApiError::ServersInUse(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
            }
            _ => {}
        }
        response
    }
}

/// Reusable error answers of the OpenAPI document: every operation refers to these
/// instead of repeating them.
pub mod responses {
    use super::Problem;

    macro_rules! problem_response {
        ($name:ident, $description:literal) => {
            #[doc = $description]
            #[derive(utoipa::ToResponse)]
            #[response(description = $description, content_type = "application/problem+json")]
            #[expect(dead_code, reason = "describes an answer for the OpenAPI document")]
            pub struct $name(Problem);
        };
    }

    problem_response!(Malformed, "Malformed JSON: `line` and `column` say where");
    problem_response!(Unauthorized, "No key, or a wrong or revoked one");
    problem_response!(
        NotFound,
        "Not in this key's workspace (or not visible to a `send` key)"
    );
    problem_response!(Conflict, "Conflicts with the current state");
    problem_response!(TooLarge, "The body is over the size limit");
    problem_response!(Invalid, "Invalid fields, each named in `errors`");
    problem_response!(RateLimited, "Over the key's rate limit; see Retry-After");
}
