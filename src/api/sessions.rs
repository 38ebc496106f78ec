//! Sessions: list, revoke all of a user's, revoke one.

use actix_web::{web, HttpResponse};
use uuid::Uuid;

use crate::api::{page_of, resolve_me, Order, Page, PageQuery};
use crate::audit::Audit;
use crate::auth::principal::Caller;
use crate::domain::Permission;
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
    let mut tx = state.pool.begin().await?;
    let user = users::get(&mut tx, resolve_me(&caller.0, &path), false).await?;
    let n = sessions::revoke_all(&mut tx, &audit, user.id, "revoked by request").await?;
    let keys = if q.api_keys.unwrap_or(false) {
        crate::store::api_keys::revoke_all(&mut tx, &audit, user.id).await?
    } else {
        0
    };
    tx.commit().await?;
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
    let mut tx = state.pool.begin().await?;
    let (owner, _) = sessions::owner(&mut tx, id).await?.ok_or_else(not_found)?;
    if owner != caller.0.user_id && !caller.0.has(Permission::UserManagement) {
        return Err(not_found());
    }
    if !crate::auth::access::may_act_on_id(&state.pool, &caller.0, owner).await? {
        return Err(crate::auth::access::admin_target_refused().into());
    }
    if !sessions::revoke(&mut tx, &audit, id, "revoked by request").await? {
        return Err(not_found());
    }
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
