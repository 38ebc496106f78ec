//! API keys: create (secret shown once), list, revoke.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::resolve_me;
use crate::api::{page_of, Order, Page, PageQuery};
use crate::audit::Audit;
use crate::auth::principal::Caller;
use crate::error::{ApiError, ApiResult};
use crate::http::{Json, Query};
use crate::service;
use crate::state::AppState;
use crate::store::{api_keys, users};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label for the key, 1-100 characters.
    pub name: String,
    /// Optional expiry time (RFC 3339).
    pub expires_at: Option<DateTime<Utc>>,
    /// Needed when the caller's login is older than `auth.reauth_secs`.
    #[schema(value_type = Option<String>, format = Password)]
    pub current_password: Option<secrecy::SecretString>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key_info: api_keys::ApiKeyView,
    /// The secret, shown only in this response. Use as `Authorization: Bearer <key>`
    /// or as the password of HTTP Basic.
    pub key: String,
}

/// A user's API keys (never the secrets). The user themself or USER_MANAGEMENT.
/// Newest first.
#[utoipa::path(get, path = "/api/v1/users/{username}/api-keys", tag = "api-keys", params(("username" = String, Path), PageQuery),
    responses((status = 200, body = Page<api_keys::ApiKeyView>)))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, &path), false).await?;
    let list = api_keys::list(&mut conn, user.id).await?;
    Ok(HttpResponse::Ok().json(page_of(list, &q, Order::Descending, |k| crate::api::time_key(k.created_at, k.id))?))
}

/// Creates an API key; the secret (`key`) is in this response only.
/// The user themself or USER_MANAGEMENT.
#[utoipa::path(post, path = "/api/v1/users/{username}/api-keys", tag = "api-keys", request_body = CreateKey,
    params(("username" = String, Path)), responses((status = 201, body = CreatedKey)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: Json<CreateKey>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let new = service::api_keys::NewKey {
        name: body.name,
        expires_at: body.expires_at,
        current_password: body.current_password,
        replace: false,
    };
    let (view, key) = service::api_keys::issue(&state, &caller.0, &audit, &path, new).await?;
    Ok(HttpResponse::Created().insert_header(("Cache-Control", "no-store")).json(CreatedKey { key_info: view, key }))
}

/// Revokes an API key at once. The user themself or USER_MANAGEMENT.
#[utoipa::path(delete, path = "/api/v1/users/{username}/api-keys/{id}", tag = "api-keys",
    params(("username" = String, Path), ("id" = Uuid, Path)), responses((status = 204, description = "revoked"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (username, id) = path.into_inner();
    let id: Uuid =
        id.parse().map_err(|_| ApiError::not_found("api_key_not_found", "no such active API key for this user"))?;
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, &username), false).await?;
    drop(conn);
    crate::service::api_keys::revoke(&state.pool, &caller.0, &audit, user.id, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
