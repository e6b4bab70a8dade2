//! htmx helpers: telling htmx requests apart and redirecting in a way both htmx and a
//! plain browser follow. <https://htmx.org/reference/#response_headers>

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse};

/// Whether htmx sent the request.
pub fn is_htmx(req: &HttpRequest) -> bool {
    req.headers().contains_key("HX-Request")
}

/// Whether htmx sent it for a part of the page (not a boosted whole-page navigation).
pub fn is_targeted(req: &HttpRequest) -> bool {
    is_htmx(req) && !req.headers().contains_key("HX-Boosted")
}

/// Whether htmx asks for the element with this id alone (a polled or swapped fragment).
pub fn targets(req: &HttpRequest, id: &str) -> bool {
    is_targeted(req) && req.headers().get("HX-Target").is_some_and(|t| t == id)
}

/// Sends the browser to `to` after a form post: 303 for plain browsers, `HX-Location`
/// (an htmx navigation that swaps the body and pushes the URL) for htmx.
pub fn redirect(req: &HttpRequest, to: &str) -> HttpResponse {
    if is_htmx(req) {
        let location = serde_json::json!({ "path": to, "target": "body" }).to_string();
        HttpResponse::Ok()
            .insert_header(("HX-Location", location))
            .finish()
    } else {
        HttpResponse::build(StatusCode::SEE_OTHER)
            .insert_header((header::LOCATION, to))
            .finish()
    }
}

/// Sends the browser to `to` with a full page load (sign-in, sign-out, setup).
pub fn redirect_full(req: &HttpRequest, to: &str) -> HttpResponse {
    if is_htmx(req) {
        HttpResponse::Ok()
            .insert_header(("HX-Redirect", to))
            .finish()
    } else {
        HttpResponse::build(StatusCode::SEE_OTHER)
            .insert_header((header::LOCATION, to))
            .finish()
    }
}
