//! Liveness and readiness.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

/// Process alive. Public.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive", body = Object)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Database reachable and every migration applied (200), else 503. Public.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "ready", body = Object), (status = 503, description = "database unreachable or not migrated")))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let check =
        tokio::time::timeout(std::time::Duration::from_secs(2), crate::db::migrations_current(&state.pool)).await;
    match check {
        Ok(Ok(true)) => HttpResponse::Ok().json(json!({"status": "ready", "database": "ok"})),
        Ok(Ok(false)) => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "2"))
            .json(json!({"status": "not_ready", "database": "migrations pending"})),
        _ => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "2"))
            .json(json!({"status": "not_ready", "database": "unreachable"})),
    }
}
