//! Users: create, read, list, update, delete, password, unlock, roles.

use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::{page_limit, resolve_me};
use crate::audit::Audit;
use crate::auth::principal::{Caller, Principal};
use crate::error::{ApiError, ApiResult};
use crate::http::{Json, Query};
use crate::service;
pub use crate::service::users::{CreateUser, PasswordChange, UpdateUser};
use crate::state::AppState;
use crate::store::users::{self, User, UserView};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, 1..=500 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Case-insensitive text found in username, email or name.
    pub q: Option<String>,
    pub enabled: Option<bool>,
    /// Only users holding this role.
    pub role: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserPage {
    pub items: Vec<UserView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A list of role names, as a bare array or `{"roles": [...]}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum RoleList {
    Bare(Vec<String>),
    Wrapped { roles: Vec<String> },
}

impl RoleList {
    fn into_vec(self) -> Result<Vec<String>, ApiError> {
        let v = match self {
            RoleList::Bare(v) | RoleList::Wrapped { roles: v } => v,
        };
        if v.is_empty() || v.len() > 100 {
            return Err(ApiError::bad_request("invalid_roles", "give between 1 and 100 role names"));
        }
        Ok(v)
    }
}

fn encode_cursor(u: &User) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}\n{}", u.username.to_lowercase(), u.id))
}

/// Decodes a user-list cursor; any malformed input is a 400.
pub fn decode_cursor(c: &str) -> Result<(String, Uuid), ApiError> {
    let bad = crate::api::invalid_cursor;
    if c.len() > 256 {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (name, id) = text.split_once('\n').ok_or_else(bad)?;
    Ok((name.to_string(), id.parse().map_err(|_| bad())?))
}

/// Lists users with their details, a page at a time (keyset pagination by
/// username). Needs USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(ListQuery), responses((status = 200, body = UserPage)))]
pub async fn list(_caller: Caller, state: web::Data<AppState>, query: Query<ListQuery>) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let limit = page_limit(q.limit)?;
    let filter = users::ListFilter {
        q: q.q.filter(|s| !s.is_empty()).map(|s| s.chars().take(200).collect()),
        enabled: q.enabled,
        role: q.role,
        after: q.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: limit + 1,
    };
    let mut items = users::list(&state.pool, &filter).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(encode_cursor)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(UserPage { items: items.into_iter().map(UserView::from).collect(), next_cursor }))
}

/// All usernames. Needs USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/usernames", tag = "users", params(crate::api::PageQuery),
    responses((status = 200, body = crate::api::Page<String>)))]
pub async fn usernames(
    _caller: Caller,
    state: web::Data<AppState>,
    q: Query<crate::api::PageQuery>,
) -> ApiResult<HttpResponse> {
    let list = users::usernames(&state.pool).await?;
    let page = crate::api::page_of(list, &q, crate::api::Order::Ascending, |u| u.to_ascii_lowercase())?;
    Ok(HttpResponse::Ok().json(page))
}

/// Creates a user. Needs USER_MANAGEMENT (ADMIN to create an administrator).
/// 409 when the username or email (case-insensitive) is taken.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser, responses(
    (status = 201, body = UserView), (status = 400, body = crate::error::ErrorBody),
    (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    body: Json<CreateUser>,
) -> ApiResult<HttpResponse> {
    let user = service::users::create_user(&state.pool, &state.hasher, &caller.0, &audit, body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/users/{}", user.username)))
        .json(UserView::from(user)))
}

/// Reads a user. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/users/{username}", tag = "users", params(("username" = String, Path, description = "username or `me`")),
    responses((status = 200, body = UserView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn read(state: web::Data<AppState>, caller: Caller, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let name = resolve_me(&caller.0, &path);
    if caller.0.is(name) {
        // Read moments ago, with the credentials: no second query.
        return Ok(HttpResponse::Ok().json(UserView::from(caller.0.user)));
    }
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, name, false).await?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

/// Updates profile fields, and (USER_MANAGEMENT only) `enabled`, `verified`;
/// `admin` needs ADMIN. A user edits their own profile but not their own
/// privileged fields. The last enabled administrator cannot be disabled or demoted.
#[utoipa::path(patch, path = "/api/v1/users/{username}", tag = "users", request_body = UpdateUser,
    params(("username" = String, Path, description = "username or `me`")),
    responses((status = 200, body = UserView), (status = 403, body = crate::error::ErrorBody),
    (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: Json<UpdateUser>,
) -> ApiResult<HttpResponse> {
    let name = resolve_me(&caller.0, &path).to_string();
    let (user, _) = service::users::update_user(&state.pool, &caller.0, &audit, &name, body.into_inner(), None).await?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

/// Deletes a user with their sessions and API keys. Needs USER_MANAGEMENT
/// (ADMIN for an administrator). The last enabled administrator cannot be deleted.
#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "users", params(("username" = String, Path)),
    responses((status = 200, body = UserView), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let name = resolve_me(&caller.0, &path).to_string();
    let mut tx = state.pool.begin().await?;
    let user = service::users::delete_user_in(&mut tx, &state.role_permissions, &caller.0, &audit, &name).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

/// Changes a password. The user themself (with `current_password`; other
/// sessions are revoked) or USER_MANAGEMENT (a reset: every session is revoked).
#[utoipa::path(put, path = "/api/v1/users/{username}/password", tag = "users", request_body = PasswordChange,
    params(("username" = String, Path)), responses((status = 204, description = "changed"),
    (status = 403, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn set_password(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: Json<PasswordChange>,
) -> ApiResult<HttpResponse> {
    service::users::change_password(&state, &caller.0, &audit, &path, body.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Lifts a lockout. Needs USER_MANAGEMENT.
#[utoipa::path(post, path = "/api/v1/users/{username}/unlock", tag = "users", params(("username" = String, Path)),
    responses((status = 200, body = UserView)))]
pub async fn unlock(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let name = resolve_me(&caller.0, &path).to_string();
    let mut tx = state.pool.begin().await?;
    let user = users::unlock(&mut tx, &audit, &name).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

/// A user's roles. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/users/{username}/roles", tag = "roles", params(("username" = String, Path), crate::api::PageQuery),
    responses((status = 200, body = crate::api::Page<String>)))]
pub async fn roles(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: Query<crate::api::PageQuery>,
) -> ApiResult<HttpResponse> {
    let name = resolve_me(&caller.0, &path);
    let mut conn = state.pool.acquire().await?;
    let roles = users::get(&mut conn, name, false).await?.roles;
    Ok(HttpResponse::Ok().json(crate::api::page_of(roles, &q, crate::api::Order::Ascending, String::clone)?))
}

async fn change_roles(
    state: &AppState,
    caller: &Principal,
    audit: &Audit,
    username: &str,
    roles: Vec<String>,
    grant: bool,
) -> ApiResult<HttpResponse> {
    let (user, results) = service::users::apply_roles(&state.pool, caller, audit, username, roles, grant).await?;
    crate::api::changed(user, results)
}

/// Grants several roles: `{user, results: [{name, ok, error}]}`, 200 when
/// all applied, 202 when only some did; when none did, the first refusal
/// (with every outcome in `details.results`). Needs USER_MANAGEMENT (ADMIN
/// for the Administrator role).
#[utoipa::path(put, path = "/api/v1/users/{username}/roles", tag = "roles", request_body = RoleList,
    params(("username" = String, Path)), responses((status = 200, body = crate::api::Changed), (status = 202, body = crate::api::Changed)))]
pub async fn add_roles(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: Json<RoleList>,
) -> ApiResult<HttpResponse> {
    change_roles(&state, &caller.0, &audit, &path, body.into_inner().into_vec()?, true).await
}

/// Removes several roles; 200 or 202 as for granting.
#[utoipa::path(delete, path = "/api/v1/users/{username}/roles", tag = "roles", request_body = RoleList,
    params(("username" = String, Path)), responses((status = 200, body = crate::api::Changed), (status = 202, body = crate::api::Changed)))]
pub async fn remove_roles(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: Json<RoleList>,
) -> ApiResult<HttpResponse> {
    change_roles(&state, &caller.0, &audit, &path, body.into_inner().into_vec()?, false).await
}

/// Grants one role (404 if the role does not exist).
#[utoipa::path(put, path = "/api/v1/users/{username}/roles/{role}", tag = "roles",
    params(("username" = String, Path), ("role" = String, Path)), responses((status = 200, body = crate::api::Changed), (status = 404, body = crate::error::ErrorBody)))]
pub async fn add_role(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (user, role) = path.into_inner();
    one_role(&state, &caller.0, &audit, &user, role, true).await
}

/// Removes one role.
#[utoipa::path(delete, path = "/api/v1/users/{username}/roles/{role}", tag = "roles",
    params(("username" = String, Path), ("role" = String, Path)), responses((status = 200, body = crate::api::Changed), (status = 404, body = crate::error::ErrorBody)))]
pub async fn remove_role(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (user, role) = path.into_inner();
    one_role(&state, &caller.0, &audit, &user, role, false).await
}

async fn one_role(
    state: &AppState,
    caller: &Principal,
    audit: &Audit,
    user: &str,
    role: String,
    grant: bool,
) -> ApiResult<HttpResponse> {
    let (user, results) = service::users::apply_roles(&state.pool, caller, audit, user, vec![role], grant).await?;
    crate::api::changed(user, results)
}
