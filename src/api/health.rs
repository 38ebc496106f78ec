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

/// Prometheus metrics (text exposition format). Only with
/// `Authorization: Bearer <metrics.token>`; 404 while no token is set.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "the metrics, in the Prometheus/OpenMetrics text format", body = String),
    (status = 401, description = "the metrics token was not presented"),
    (status = 404, description = "metrics are off (no `metrics.token`)")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let (hash_waiting, hash_running) = state.hasher.queue();
    let snapshot = crate::metrics::Snapshot {
        pool_size: state.pool.size(),
        pool_idle: state.pool.num_idle(),
        pool_max: state.pool.options().get_max_connections(),
        hash_waiting,
        hash_running,
        cache_entries: state.auth_cache.len(),
    };
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(state.metrics.render(snapshot))
}
