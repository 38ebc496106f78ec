//! Sessions: list, revoke all of a user's, revoke one.

use actix_web::{web, HttpResponse};
use uuid::Uuid;

use crate::api::{page_of, resolve_me, Order, Page, PageQuery};
use crate::audit::Audit;
use crate::auth::principal::Caller;
use crate::error::{ApiError, ApiResult};
use crate::http::Query;
use crate::state::AppState;
use crate::store::{sessions, users};

/// A user's active sessions. The user themself or USER_MANAGEMENT.
/// Newest first.
#[utoipa::path(get, path = "/api/v1/users/{username}/sessions", tag = "sessions", params(("username" = String, Path), PageQuery),
    responses((status = 200, body = Page<sessions::SessionView>)))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, &path), false).await?;
    let list = sessions::list_active(&mut conn, user.id).await?;
    Ok(HttpResponse::Ok().json(page_of(list, &q, Order::Descending, |s| crate::api::time_key(s.created_at, s.id))?))
}

/// Revokes every session of a user and every access token issued so far.
/// The user themself or USER_MANAGEMENT.
#[utoipa::path(delete, path = "/api/v1/users/{username}/sessions", tag = "sessions", params(("username" = String, Path), RevokeAllQuery),
    responses((status = 200, description = "`{\"revoked\": n}`", body = Object)))]
pub async fn revoke_all(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    q: Query<RevokeAllQuery>,
) -> ApiResult<HttpResponse> {
    let (n, keys) =
        crate::service::sessions::revoke_all(&state, &caller.0, &audit, &path, q.api_keys.unwrap_or(false)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"revoked": n, "api_keys_revoked": keys})))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RevokeAllQuery {
    /// Also revoke every API key of the user.
    pub api_keys: Option<bool>,
}

/// Revokes one session. Its owner or USER_MANAGEMENT; 404 otherwise, so
/// session ids of others cannot be probed.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "sessions", params(("id" = Uuid, Path)),
    responses((status = 204, description = "revoked"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke_one(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let not_found = || ApiError::not_found("session_not_found", "no such active session");
    let id: Uuid = path.parse().map_err(|_| not_found())?;
    crate::service::sessions::revoke_one(&state, &caller.0, &audit, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
