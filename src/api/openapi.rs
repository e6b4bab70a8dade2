//! The OpenAPI 3.1 document of `/api/v1`, generated from the handlers' annotations and the
//! request and answer types (so it cannot drift from the code).

use std::sync::LazyLock;

use actix_web::HttpResponse;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{endpoints, files, problem};

mod rules;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Mailroom API",
        description = "Send, track and cancel email through a Mailroom workspace. Authenticate with `Authorization: Bearer <key>` (API keys: the workspace's settings). Errors are RFC 9457 problem documents."
    ),
    paths(
        endpoints::send,
        endpoints::list,
        endpoints::show,
        endpoints::cancel,
        endpoints::release,
        endpoints::list_providers,
        files::upload,
        files::show,
        files::delete,
    ),
    components(
        schemas(crate::error::Problem, crate::error::FieldProblem),
        responses(
            problem::responses::Malformed,
            problem::responses::Unauthorized,
            problem::responses::NotFound,
            problem::responses::Conflict,
            problem::responses::TooLarge,
            problem::responses::Invalid,
            problem::responses::RateLimited,
        )
    ),
    modifiers(&BearerKey)
)]
pub struct ApiDoc;

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("mr_<prefix>_<secret>")
                    .build(),
            ),
        );
    }
}

/// The document as served: what the types say, plus the rules the handlers enforce that
/// no Rust type states (`rules::state`).
pub fn value() -> &'static Value {
    static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
        let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        rules::state(&mut document);
        document
    });
    &DOCUMENT
}

/// `GET /api/v1/openapi.json` (no key needed: it describes, it does not reveal).
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(value())
}

/// The methods the document gives a path pattern (`/api/v1/messages/{id}`), upper-case;
/// the document itself answers GET.
pub fn methods_of(pattern: &str) -> Vec<&'static str> {
    if pattern.ends_with("/openapi.json") {
        return vec!["GET"];
    }
    let item = &value()["paths"][pattern];
    ["GET", "POST", "PUT", "PATCH", "DELETE"]
        .into_iter()
        .filter(|m| !item[m.to_lowercase()].is_null())
        .collect()
}

/// One operation on the reference page.
pub struct Operation {
    /// `GET`, `POST`, …
    pub method: String,
    /// `/api/v1/…`.
    pub path: String,
    /// What it does.
    pub summary: String,
    /// (status, meaning), in order.
    pub responses: Vec<(String, String)>,
}

/// The operations of the document, in path order.
pub fn operations() -> Vec<Operation> {
    let document = value();
    let mut out = Vec::new();
    let Some(paths) = document["paths"].as_object() else {
        return out;
    };
    for (path, item) in paths {
        for method in ["get", "post", "delete"] {
            let operation = &item[method];
            if operation.is_null() {
                continue;
            }
            let text = |key: &str| operation[key].as_str().unwrap_or_default().to_owned();
            let summary = match (text("summary"), text("description")) {
                (s, d) if s.is_empty() => d,
                (s, _) => s,
            };
            let responses = operation["responses"]
                .as_object()
                .map(|all| {
                    all.iter()
                        .map(|(code, r)| {
                            // A shared answer is a reference into components.responses.
                            let r = match r["$ref"].as_str() {
                                Some(path) => path
                                    .strip_prefix("#/components/responses/")
                                    .map_or(r, |name| &document["components"]["responses"][name]),
                                None => r,
                            };
                            (
                                code.clone(),
                                r["description"].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Operation {
                method: method.to_uppercase(),
                path: path.clone(),
                summary,
                responses,
            });
        }
    }
    out
}
