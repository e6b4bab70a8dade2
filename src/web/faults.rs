//! Requests the database could not serve: whatever failed inside (a handler, the session
//! store, the CSRF check), a request that met a database fault is answered `503` with
//! `Retry-After` (a problem document under `/api/`, the error page elsewhere), and counted.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpResponse, ResponseError};
use tracing_actix_web::RequestId;

use super::{SECURITY_HEADERS, errors, htmx};
use crate::db::fault::{self, Fault};
use crate::error::AppError;

/// Middleware: sits inside the error pages and outside the session middleware.
pub async fn answer(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    // What a response made without the request needs (the request itself cannot be kept:
    // routing needs it unshared).
    let api = req.path().starts_with("/api/");
    let fragment = htmx::is_targeted(req.request());
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(ToString::to_string)
        .unwrap_or_default();
    let state = req
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .cloned();
    let (result, noted) = fault::scope(next.call(req)).await;
    let refused = |fault: Fault| {
        if let Some(state) = &state {
            state.db.faults().refused(fault);
        }
    };
    match result {
        Ok(res) => {
            if let Some(fault) = own_fault(&res) {
                refused(fault);
                return Ok(res.map_into_boxed_body());
            }
            match noted {
                Some(fault) if res.status().is_server_error() => {
                    refused(fault);
                    let (request, _) = res.into_parts();
                    Ok(ServiceResponse::from_err(
                        AppError::Unavailable(fault),
                        request,
                    ))
                }
                _ => Ok(res.map_into_boxed_body()),
            }
        }
        // A middleware failed (the session store could not load or save): its error
        // passes the error pages by, so the answer is made whole here.
        Err(e) => match noted {
            Some(fault) => {
                refused(fault);
                let response = whole(fault, api, fragment, &request_id);
                Err(actix_web::error::InternalError::from_response(
                    AppError::Unavailable(fault),
                    response,
                )
                .into())
            }
            None => Err(e),
        },
    }
}

/// The 503 as the error pages and the default headers would have made it.
fn whole(fault: Fault, api: bool, fragment: bool, request_id: &str) -> HttpResponse {
    let error = AppError::Unavailable(fault);
    let mut response = if api {
        error.error_response()
    } else {
        let body = errors::body(
            StatusCode::SERVICE_UNAVAILABLE,
            error.to_string(),
            request_id.to_owned(),
            fragment,
        );
        HttpResponse::ServiceUnavailable()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::RETRY_AFTER, fault.retry_after().to_string()))
            .body(body)
    };
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(
            header::HeaderName::from_static(name),
            header::HeaderValue::from_static(value),
        );
    }
    if let Ok(value) = header::HeaderValue::from_str(request_id) {
        headers.insert(header::HeaderName::from_static("x-request-id"), value);
    }
    response
}

fn own_fault<B>(res: &ServiceResponse<B>) -> Option<Fault> {
    match res.response().error()?.as_error::<AppError>()? {
        AppError::Unavailable(fault) => Some(*fault),
        _ => None,
    }
}
