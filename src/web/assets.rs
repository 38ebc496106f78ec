//! The pages' own assets, compiled into the binary: `/assets/app.css` and
//! `/assets/app.js`, `/assets/favicon.svg` (written for registrar, Apache-2.0 like the rest).
//! Nothing is loaded from another origin.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");
const ICON: &str = include_str!("assets/favicon.svg");

/// `GET /assets/{name}`. Public.
pub async fn asset(path: web::Path<String>) -> HttpResponse {
    let (body, kind) = match path.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        "favicon.svg" => (ICON, "image/svg+xml"),
        _ => {
            return actix_web::ResponseError::error_response(&crate::error::ApiError::not_found(
                "asset_not_found",
                "no such asset",
            ));
        }
    };
    HttpResponse::Ok().content_type(kind).insert_header((header::CACHE_CONTROL, "public, max-age=3600")).body(body)
}
