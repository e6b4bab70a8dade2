//! Static files (htmx, our stylesheet and script) compiled into the binary and served with
//! long-lived cache headers under a content-hash version, so a new release is fetched anew.

use std::collections::HashMap;
use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "static/"]
struct Static;

fn versions() -> &'static HashMap<String, String> {
    static VERSIONS: OnceLock<HashMap<String, String>> = OnceLock::new();
    VERSIONS.get_or_init(|| {
        Static::iter()
            .filter_map(|name| {
                let file = Static::get(&name)?;
                Some((
                    name.to_string(),
                    hex::encode(&file.metadata.sha256_hash()[..6]),
                ))
            })
            .collect()
    })
}

/// The versioned URL of a static file, for templates: `/static/app.css?v=1a2b3c…`.
pub fn url(name: &str) -> String {
    match versions().get(name) {
        Some(v) => format!("/static/{name}?v={v}"),
        None => format!("/static/{name}"),
    }
}

/// `GET /favicon.ico` (what browsers and feed readers ask for without a page's link): the
/// icon is an SVG under `/static/`.
pub async fn favicon() -> HttpResponse {
    HttpResponse::MovedPermanently()
        .insert_header((header::LOCATION, url("favicon.svg")))
        .finish()
}

/// `GET /static/{name}`.
pub async fn serve(req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    let Some(file) = Static::get(&name) else {
        return HttpResponse::NotFound().finish();
    };
    let version = versions().get(name.as_str()).cloned().unwrap_or_default();
    let etag = format!("\"{version}\"");
    if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return HttpResponse::NotModified().finish();
    }
    let versioned = req.query_string() == format!("v={version}");
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    HttpResponse::Ok()
        .content_type(
            mime_guess::from_path(name.as_str())
                .first_or_octet_stream()
                .as_ref(),
        )
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::ETAG, etag))
        .body(file.data.into_owned())
}
