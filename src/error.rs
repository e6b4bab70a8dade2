//! One error type for the whole application. Handlers return `Result<_, AppError>`; the
//! error page middleware (`web::errors`) turns the response into a page or an htmx fragment
//! that names the request id. 5xx bodies are opaque; the cause chain goes to the log.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No signed-in user: the error middleware redirects to the login page.
    #[error("Please sign in to continue.")]
    Unauthenticated,
    /// The thing does not exist, or belongs to a workspace the caller is not in.
    #[error("This page does not exist, or you do not have access to it.")]
    NotFound,
    /// Signed in, but the role does not allow this.
    #[error("Your role in this workspace does not allow this action.")]
    Forbidden,
    /// The request was malformed; the text says what was wrong and where.
    #[error("{0}")]
    Validation(String),
    /// One named field of the request is wrong (422).
    #[error("{message}")]
    Invalid {
        /// The field, as the request named it (`provider`, `to`, …).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// Too many attempts: try again after this many seconds.
    #[error("Too many attempts. Try again in {} minutes.", retry_after.div_ceil(60))]
    TooManyRequests {
        /// Seconds until the next attempt is allowed.
        retry_after: u64,
    },
    /// A state-changing request without a valid CSRF token or from another origin.
    #[error("The form has expired or came from another site. Reload the page and try again.")]
    Csrf,
    /// Anything unexpected; logged with its cause chain, shown as an opaque 500.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Word-like constructor for a 404.
pub fn not_found() -> AppError {
    AppError::NotFound
}

/// Word-like constructor for a 400 that says what was wrong.
pub fn bad_request(message: impl Into<String>) -> AppError {
    AppError::Validation(message.into())
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
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

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::Unauthenticated => StatusCode::UNAUTHORIZED,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Forbidden | AppError::Csrf => StatusCode::FORBIDDEN,
            AppError::Validation(_) => StatusCode::BAD_REQUEST,
            AppError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let AppError::TooManyRequests { retry_after } = self {
            response.insert_header(("Retry-After", retry_after.to_string()));
        }
        match self {
            AppError::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                response.body("Internal server error")
            }
            other => response.body(other.to_string()),
        }
    }
}
