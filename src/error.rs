//! One error type for the whole application. Handlers of pages and of the API return
//! `Result<_, AppError>`. Its response is an RFC 9457 problem document (what the API
//! answers); the error page middleware (`web::errors`) turns it into a page or an htmx
//! fragment for everything outside `/api/`, naming the request id. 5xx bodies are opaque;
//! the cause chain goes to the log.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::db::fault::Fault;

/// One wrong field of a request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldProblem {
    /// The field as the request names it (`to`, `cc[2]`, `smtp.port`).
    pub field: String,
    /// What is wrong with it.
    pub detail: String,
}

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No signed-in user: the error middleware redirects to the login page.
    #[error("Please sign in to continue.")]
    Unauthenticated,
    /// No API key, or a wrong or revoked one (`WWW-Authenticate: Bearer`).
    #[error("Send a valid API key: Authorization: Bearer <key>.")]
    Unauthorized,
    /// The thing does not exist, or belongs to a workspace the caller is not in.
    #[error("This page does not exist, or you do not have access to it.")]
    NotFound,
    /// A named thing is not in the caller's workspace (or nowhere).
    #[error("No such {0} in this workspace.")]
    NoSuch(&'static str),
    /// Signed in, but the role does not allow this.
    #[error("Your role in this workspace does not allow this action.")]
    Forbidden,
    /// The request was malformed; the text says what was wrong and where.
    #[error("{0}")]
    Validation(String),
    /// A JSON body that does not parse: where the parser stopped.
    #[error("The body is not valid JSON: {message}")]
    Malformed {
        /// Parser message.
        message: String,
        /// Line.
        line: usize,
        /// Column.
        column: usize,
    },
    /// One named field of the request is wrong (422).
    #[error("{message}")]
    Invalid {
        /// The field, as the request named it (`provider`, `to`, …).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Several fields of the request are wrong (422), each named.
    #[error("The request has invalid fields.")]
    Fields(Vec<FieldProblem>),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// Too many attempts: try again after this many seconds.
    #[error("Too many attempts. Try again in {} minutes.", retry_after.div_ceil(60))]
    TooManyRequests {
        /// Seconds until the next attempt is allowed.
        retry_after: u64,
    },
    /// Over a limit, for the reason given; try again after this many seconds.
    #[error("{message}")]
    Limited {
        /// What limit, in words.
        message: String,
        /// Seconds until trying again makes sense.
        retry_after: u64,
    },
    /// A state-changing request without a valid CSRF token or from another origin.
    #[error("The form has expired or came from another site. Reload the page and try again.")]
    Csrf,
    /// The database cannot do its part now (full, down, read-only, out of connections):
    /// 503 with `Retry-After`, counted and logged once per incident, never a 500.
    #[error("{}", .0.describe())]
    Unavailable(Fault),
    /// Anything unexpected; logged with its cause chain, shown as an opaque 500.
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        match Fault::of_chain(&e) {
            Some(fault) => AppError::Unavailable(fault),
            None => AppError::Unexpected(e),
        }
    }
}

/// Word-like constructor for a 404.
pub fn not_found() -> AppError {
    AppError::NotFound
}

/// Word-like constructor for a 400 that says what was wrong.
pub fn bad_request(message: impl Into<String>) -> AppError {
    AppError::Validation(message.into())
}

impl AppError {
    /// One wrong field, named as the request names it.
    pub fn field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        AppError::Fields(vec![FieldProblem {
            field: field.into(),
            detail: detail.into(),
        }])
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        if let Some(fault) = Fault::of_diesel(&e) {
            return AppError::Unavailable(fault);
        }
        match e {
            Error::NotFound => AppError::NotFound,
            // Two people changed the same thing at once; the second change lost the race.
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => AppError::Conflict(
                "Someone else just made the same change: it already exists. Reload the page to see it."
                    .into(),
            ),
            // Something it refers to (a provider, a member) was deleted meanwhile.
            Error::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => AppError::Conflict(
                "Something this refers to was deleted meanwhile. Reload and try again.".into(),
            ),
            other => AppError::Unexpected(anyhow::Error::new(other).context("database query")),
        }
    }
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

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::Unauthenticated | AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::NotFound | AppError::NoSuch(_) => StatusCode::NOT_FOUND,
            AppError::Forbidden | AppError::Csrf => StatusCode::FORBIDDEN,
            AppError::Validation(_) | AppError::Malformed { .. } => StatusCode::BAD_REQUEST,
            AppError::Invalid { .. } | AppError::Fields(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::TooManyRequests { .. } | AppError::Limited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem document; outside `/api/` the error middleware shows a page instead.
    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut problem = Problem::new(status, self.to_string());
        match self {
            AppError::Malformed { line, column, .. } => {
                problem.line = Some(*line);
                problem.column = Some(*column);
            }
            AppError::Fields(errors) => problem.errors = errors.clone(),
            AppError::Invalid { field, message } => {
                problem.detail = "The request has invalid fields.".into();
                problem.errors = vec![FieldProblem {
                    field: (*field).to_owned(),
                    detail: message.clone(),
                }];
            }
            AppError::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                problem.detail =
                    "Something went wrong on our side; the request id is in X-Request-Id.".into();
            }
            AppError::NotFound => problem.detail = "Not found.".into(),
            _ => {}
        }
        let mut response = problem.response();
        let retry_after = match self {
            AppError::TooManyRequests { retry_after } | AppError::Limited { retry_after, .. } => {
                Some(*retry_after)
            }
            AppError::Unavailable(fault) => Some(fault.retry_after()),
            _ => None,
        };
        if let Some(value) =
            retry_after.and_then(|s| header::HeaderValue::from_str(&s.to_string()).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if matches!(self, AppError::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
