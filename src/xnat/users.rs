//! `/xapi/users/...`: XNAT's User Management API (swagger 1.7.4.1), over the
//! native API's rules.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::audit::Audit;
use crate::auth::principal::resolve_me;
use crate::auth::principal::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::memberships::apply_groups;
use crate::service::users::{apply_roles, create_user, update_user, CreateUser, UpdateUser};
use crate::state::AppState;
use crate::store::users::{self, ItemResult, User};
use crate::store::{groups, sessions};

/// XNAT's `UserAuthI`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct XnatAuth {
    pub auth_method: &'static str,
    pub auth_method_id: &'static str,
    pub auth_user: String,
    pub enabled: bool,
    pub failed_login_attempts: i32,
    pub last_login_attempt: Option<DateTime<Utc>>,
    pub last_successful_login: Option<DateTime<Utc>>,
    pub password_updated: Option<DateTime<Utc>>,
    pub xdat_username: String,
}

/// XNAT's `User`, secured: `password` and `salt` are always null.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct XnatUser {
    pub id: i32,
    pub username: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub enabled: bool,
    pub verified: bool,
    pub admin: bool,
    pub last_modified: DateTime<Utc>,
    pub secured: bool,
    #[schema(value_type = Option<String>)]
    pub password: Option<()>,
    #[schema(value_type = Option<String>)]
    pub salt: Option<()>,
    pub authorization: XnatAuth,
}

impl From<User> for XnatUser {
    fn from(u: User) -> XnatUser {
        XnatUser {
            id: u.xdat_user_id,
            admin: u.admin(),
            authorization: XnatAuth {
                auth_method: "localdb",
                auth_method_id: "localdb",
                auth_user: u.username.clone(),
                enabled: u.enabled,
                failed_login_attempts: u.failed_login_attempts,
                last_login_attempt: u.last_login_attempt,
                last_successful_login: u.last_successful_login,
                password_updated: u.password_updated,
                xdat_username: u.username.clone(),
            },
            username: u.username,
            email: u.email,
            first_name: u.first_name,
            last_name: u.last_name,
            enabled: u.enabled,
            verified: u.verified,
            last_modified: u.last_modified,
            secured: true,
            password: None,
            salt: None,
        }
    }
}

/// XNAT's user body for create and update: the fields of XNAT's `User`.
/// Those registrar keeps itself (`id`, `lastModified`, `authorization`,
/// `secured`, `salt`) are accepted and ignored, as clients send whole
/// objects back; any other field (say `first_name`) is refused, naming it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct XnatUserBody {
    /// Ignored (registrar's own).
    #[schema(value_type = Option<Object>)]
    pub id: Option<serde_json::Value>,
    /// Ignored (registrar's own).
    #[schema(value_type = Option<Object>)]
    pub last_modified: Option<serde_json::Value>,
    /// Ignored (registrar's own).
    #[schema(value_type = Option<Object>)]
    pub authorization: Option<serde_json::Value>,
    /// Ignored (registrar's own).
    #[schema(value_type = Option<Object>)]
    pub secured: Option<serde_json::Value>,
    /// Ignored: registrar never takes a hash or salt.
    #[schema(value_type = Option<Object>)]
    pub salt: Option<serde_json::Value>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    pub enabled: Option<bool>,
    pub verified: Option<bool>,
    pub admin: Option<bool>,
}

fn missing(field: &str) -> ApiError {
    ApiError::bad_request("missing_field", format!("`{field}` is required"))
        .with_details(serde_json::json!({ "field": field }))
}

async fn load(state: &AppState, caller: &Caller, username: &str) -> ApiResult<User> {
    Ok(state.read(async |c| users::get(c, resolve_me(&caller.0, username), false).await).await?)
}

async fn all_users(state: &AppState) -> ApiResult<Vec<User>> {
    let filter = users::ListFilter { limit: i64::MAX, ..Default::default() };
    Ok(state.read(async |c| users::list(c, &filter).await).await?)
}

/// Usernames. USER_MANAGEMENT.
#[utoipa::path(get, path = "/xapi/users", tag = "xnat-users", responses((status = 200, body = [String])))]
pub async fn usernames(_caller: Caller, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(users::usernames(&state.pool).await?))
}

/// Creates a user (201). USER_MANAGEMENT.
#[utoipa::path(post, path = "/xapi/users", tag = "xnat-users", request_body = XnatUserBody,
    responses((status = 201, body = XnatUser), (status = 400, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    body: crate::http::Json<XnatUserBody>,
) -> ApiResult<HttpResponse> {
    let b = body.into_inner();
    let req = CreateUser {
        username: b.username.ok_or_else(|| missing("username"))?,
        email: b.email.ok_or_else(|| missing("email"))?,
        first_name: b.first_name.unwrap_or_default(),
        last_name: b.last_name.unwrap_or_default(),
        password: b.password,
        enabled: b.enabled.unwrap_or(true),
        verified: b.verified.unwrap_or(false),
        admin: b.admin.unwrap_or(false),
        roles: Vec::new(),
        ..Default::default()
    };
    let user = create_user(&state.pool, &state.hasher, &caller.0, &audit, req).await?;
    Ok(HttpResponse::Created().json(XnatUser::from(user)))
}

/// Every user's profile. USER_MANAGEMENT.
#[utoipa::path(get, path = "/xapi/users/profiles", tag = "xnat-users", responses((status = 200, body = [XnatUser])))]
pub async fn profiles(_caller: Caller, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let list: Vec<XnatUser> = all_users(&state).await?.into_iter().map(XnatUser::from).collect();
    Ok(HttpResponse::Ok().json(list))
}

/// Profiles of enabled users. USER_MANAGEMENT.
#[utoipa::path(get, path = "/xapi/users/current", tag = "xnat-users", responses((status = 200, body = [XnatUser])))]
pub async fn current(_caller: Caller, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let list: Vec<XnatUser> = all_users(&state).await?.into_iter().filter(|u| u.enabled).map(XnatUser::from).collect();
    Ok(HttpResponse::Ok().json(list))
}

/// One profile. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/xapi/users/profile/{username}", tag = "xnat-users", params(("username" = String, Path)),
    responses((status = 200, body = XnatUser), (status = 404, body = crate::error::ErrorBody)))]
pub async fn profile(state: web::Data<AppState>, caller: Caller, path: web::Path<String>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(XnatUser::from(load(&state, &caller, &path).await?)))
}

/// One user. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/xapi/users/{username}", tag = "xnat-users", params(("username" = String, Path)),
    responses((status = 200, body = XnatUser), (status = 404, body = crate::error::ErrorBody)))]
pub async fn read(state: web::Data<AppState>, caller: Caller, path: web::Path<String>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(XnatUser::from(load(&state, &caller, &path).await?)))
}

/// Updates a user: 200 with the user, 304 when nothing changed. A
/// `password` resets it (USER_MANAGEMENT, not on oneself: use the native
/// API, which asks for the current one). The user themself or USER_MANAGEMENT.
#[utoipa::path(put, path = "/xapi/users/{username}", tag = "xnat-users", request_body = XnatUserBody,
    params(("username" = String, Path)), responses((status = 200, body = XnatUser), (status = 304, description = "unchanged"),
    (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: crate::http::Json<XnatUserBody>,
) -> ApiResult<HttpResponse> {
    let b = body.into_inner();
    let target = load(&state, &caller, &path).await?;
    if b.username.as_deref().is_some_and(|u| !u.eq_ignore_ascii_case(&target.username)) {
        return Err(ApiError::bad_request("username_immutable", "a username cannot be changed"));
    }
    // Every check comes before any write, and the password and the profile
    // change commit together (or not at all).
    let reset_to = match b.password {
        Some(pw) => Some(crate::service::users::reset_hash(&state.hasher, &caller.0, &target, pw).await?),
        None => None,
    };
    let patch = UpdateUser {
        email: b.email,
        first_name: b.first_name,
        last_name: b.last_name,
        enabled: b.enabled,
        verified: b.verified,
        admin: b.admin,
        ..Default::default()
    };
    let (user, changed) = update_user(&state.pool, &caller.0, &audit, &target.username, patch, reset_to).await?;
    if !changed {
        return Ok(HttpResponse::NotModified().finish());
    }
    Ok(HttpResponse::Ok().json(XnatUser::from(user)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ActiveSessions {
    pub count: usize,
    pub sessions: Vec<String>,
}

/// Users with at least one active session: `{username: {count, sessions}}`. USER_MANAGEMENT.
#[utoipa::path(get, path = "/xapi/users/active", tag = "xnat-users", responses((status = 200, description = "map of users to sessions", body = Object)))]
pub async fn active(_caller: Caller, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let rows = crate::store::sessions::active_everywhere(&state.pool).await?;
    let mut map: BTreeMap<String, ActiveSessions> = BTreeMap::new();
    for (user, sid) in rows {
        let e = map.entry(user).or_insert_with(|| ActiveSessions { count: 0, sessions: Vec::new() });
        e.count += 1;
        e.sessions.push(sid.to_string());
    }
    Ok(HttpResponse::Ok().json(map))
}

/// A user's active session ids. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/xapi/users/active/{username}", tag = "xnat-users", params(("username" = String, Path)),
    responses((status = 200, body = [String])))]
pub async fn active_of(state: web::Data<AppState>, caller: Caller, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let user = load(&state, &caller, &path).await?;
    let mut conn = state.pool.acquire().await?;
    let ids: Vec<String> =
        sessions::list_active(&mut conn, user.id).await?.into_iter().map(|s| s.id.to_string()).collect();
    Ok(HttpResponse::Ok().json(ids))
}

/// Invalidates every session of a user; 200 with the ids ended (an empty
/// list when there were none). The user themself or USER_MANAGEMENT.
#[utoipa::path(delete, path = "/xapi/users/active/{username}", tag = "xnat-users", params(("username" = String, Path)),
    responses((status = 200, body = [String])))]
pub async fn invalidate(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let user = load(&state, &caller, &path).await?;
    let mut tx = state.pool.begin().await?;
    // An administrator's sessions only by an administrator (or themself),
    // checked on the locked row.
    crate::service::users::lock_managed(&mut tx, &caller.0, &user.id.to_string()).await?;
    let ids: Vec<String> =
        sessions::list_active(&mut tx, user.id).await?.into_iter().map(|s| s.id.to_string()).collect();
    sessions::revoke_all(&mut tx, &audit, user.id, "invalidated through /xapi/users/active").await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(ids))
}

/// Whether a user is enabled. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/xapi/users/{username}/enabled", tag = "xnat-users", params(("username" = String, Path)),
    responses((status = 200, body = bool, content_type = "application/json")))]
pub async fn enabled(state: web::Data<AppState>, caller: Caller, path: web::Path<String>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(load(&state, &caller, &path).await?.enabled))
}

/// Whether a user's email is verified. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/xapi/users/{username}/verified", tag = "xnat-users", params(("username" = String, Path)),
    responses((status = 200, body = bool, content_type = "application/json")))]
pub async fn verified(state: web::Data<AppState>, caller: Caller, path: web::Path<String>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(load(&state, &caller, &path).await?.verified))
}

/// Sets one flag of a user through the native update rules; answers the flag.
async fn set_flag(
    state: &AppState,
    caller: &Caller,
    audit: &Audit,
    (username, flag): (String, String),
    patch: impl FnOnce(bool) -> UpdateUser,
) -> ApiResult<HttpResponse> {
    let flag = super::parse_flag(&flag)?;
    let name = resolve_me(&caller.0, &username).to_string();
    update_user(&state.pool, &caller.0, audit, &name, patch(flag), None).await?;
    Ok(HttpResponse::Ok().json(flag))
}

/// Enables or disables a user (disabling ends their sessions). USER_MANAGEMENT.
#[utoipa::path(put, path = "/xapi/users/{username}/enabled/{flag}", tag = "xnat-users",
    params(("username" = String, Path), ("flag" = bool, Path)), responses((status = 200, body = bool, content_type = "application/json")))]
pub async fn set_enabled(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    set_flag(&state, &caller, &audit, path.into_inner(), |f| UpdateUser { enabled: Some(f), ..Default::default() })
        .await
}

/// Sets a user's verified state. USER_MANAGEMENT.
#[utoipa::path(put, path = "/xapi/users/{username}/verified/{flag}", tag = "xnat-users",
    params(("username" = String, Path), ("flag" = bool, Path)), responses((status = 200, body = bool, content_type = "application/json")))]
pub async fn set_verified(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    set_flag(&state, &caller, &audit, path.into_inner(), |f| UpdateUser { verified: Some(f), ..Default::default() })
        .await
}

/// XNAT's bulk answer: 200 with no failures, or 202 with the names that failed.
fn bulk(results: Vec<ItemResult>) -> HttpResponse {
    let failed: Vec<String> = results.into_iter().filter(|r| !r.ok).map(|r| r.name).collect();
    if failed.is_empty() {
        HttpResponse::Ok().json(failed)
    } else {
        HttpResponse::Accepted().json(failed)
    }
}

/// Answers a single-item change: its error if it failed.
fn single(results: Vec<ItemResult>, what: &str) -> ApiResult<HttpResponse> {
    match results.into_iter().next() {
        Some(r) if r.ok => Ok(HttpResponse::Ok().json(Vec::<String>::new())),
        Some(r) => Err(r.into_error().map_or_else(
            || ApiError::not_found("not_applied", format!("{what} could not be changed")),
            ApiError::from,
        )),
        None => Err(ApiError::bad_request("invalid_request", "nothing to change")),
    }
}

fn list_body(raw: Vec<String>) -> Result<Vec<String>, ApiError> {
    Ok(crate::service::bounded_list(raw, "invalid_list", "names")?)
}

/// A user's groups. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/xapi/users/{username}/groups", tag = "xnat-users", params(("username" = String, Path)),
    responses((status = 200, body = [String])))]
pub async fn groups_of(state: web::Data<AppState>, caller: Caller, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let user = load(&state, &caller, &path).await?;
    let mut conn = state.pool.acquire().await?;
    Ok(HttpResponse::Ok().json(groups::of_user(&mut conn, user.id).await?))
}

/// Adds a user to groups: 200, or 202 with the groups that failed. USER_MANAGEMENT.
#[utoipa::path(put, path = "/xapi/users/{username}/groups", tag = "xnat-users", request_body = Vec<String>,
    params(("username" = String, Path)), responses((status = 200, body = [String]), (status = 202, body = [String])))]
pub async fn add_groups(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: web::Json<Vec<String>>,
) -> ApiResult<HttpResponse> {
    Ok(bulk(apply_groups(&state.pool, &caller.0, &audit, &path, list_body(body.into_inner())?, true).await?))
}

/// Removes a user from groups: 200, or 202 with the groups that failed. USER_MANAGEMENT.
#[utoipa::path(delete, path = "/xapi/users/{username}/groups", tag = "xnat-users", request_body = Vec<String>,
    params(("username" = String, Path)), responses((status = 200, body = [String]), (status = 202, body = [String])))]
pub async fn remove_groups(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: web::Json<Vec<String>>,
) -> ApiResult<HttpResponse> {
    Ok(bulk(apply_groups(&state.pool, &caller.0, &audit, &path, list_body(body.into_inner())?, false).await?))
}

/// Adds a user to one group. USER_MANAGEMENT.
#[utoipa::path(put, path = "/xapi/users/{username}/groups/{group}", tag = "xnat-users",
    params(("username" = String, Path), ("group" = String, Path)), responses((status = 200, body = [String]), (status = 404, body = crate::error::ErrorBody)))]
pub async fn add_group(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (user, group) = path.into_inner();
    single(apply_groups(&state.pool, &caller.0, &audit, &user, vec![group], true).await?, "group")
}

/// Removes a user from one group; 200. USER_MANAGEMENT.
#[utoipa::path(delete, path = "/xapi/users/{username}/groups/{group}", tag = "xnat-users",
    params(("username" = String, Path), ("group" = String, Path)), responses((status = 200, body = [String]), (status = 404, body = crate::error::ErrorBody)))]
pub async fn remove_group(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (user, group) = path.into_inner();
    single(apply_groups(&state.pool, &caller.0, &audit, &user, vec![group], false).await?, "group")
}

/// A user's roles. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/xapi/users/{username}/roles", tag = "xnat-users", params(("username" = String, Path)),
    responses((status = 200, body = [String])))]
pub async fn roles_of(state: web::Data<AppState>, caller: Caller, path: web::Path<String>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(load(&state, &caller, &path).await?.roles))
}

/// Grants roles: 200, or 202 with the roles that failed. USER_MANAGEMENT (ADMIN for Administrator).
#[utoipa::path(put, path = "/xapi/users/{username}/roles", tag = "xnat-users", request_body = Vec<String>,
    params(("username" = String, Path)), responses((status = 200, body = [String]), (status = 202, body = [String])))]
pub async fn add_roles(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: web::Json<Vec<String>>,
) -> ApiResult<HttpResponse> {
    let (_, results) = apply_roles(&state.pool, &caller.0, &audit, &path, list_body(body.into_inner())?, true).await?;
    Ok(bulk(results))
}

/// Removes roles: 200, or 202 with the roles that failed.
#[utoipa::path(delete, path = "/xapi/users/{username}/roles", tag = "xnat-users", request_body = Vec<String>,
    params(("username" = String, Path)), responses((status = 200, body = [String]), (status = 202, body = [String])))]
pub async fn remove_roles(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: web::Json<Vec<String>>,
) -> ApiResult<HttpResponse> {
    let (_, results) = apply_roles(&state.pool, &caller.0, &audit, &path, list_body(body.into_inner())?, false).await?;
    Ok(bulk(results))
}

/// Grants one role.
#[utoipa::path(put, path = "/xapi/users/{username}/roles/{role}", tag = "xnat-users",
    params(("username" = String, Path), ("role" = String, Path)), responses((status = 200, body = [String]), (status = 404, body = crate::error::ErrorBody)))]
pub async fn add_role(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (user, role) = path.into_inner();
    let (_, results) = apply_roles(&state.pool, &caller.0, &audit, &user, vec![role], true).await?;
    single(results, "role")
}

/// Removes one role; 200.
#[utoipa::path(delete, path = "/xapi/users/{username}/roles/{role}", tag = "xnat-users",
    params(("username" = String, Path), ("role" = String, Path)), responses((status = 200, body = [String]), (status = 404, body = crate::error::ErrorBody)))]
pub async fn remove_role(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (user, role) = path.into_inner();
    let (_, results) = apply_roles(&state.pool, &caller.0, &audit, &user, vec![role], false).await?;
    single(results, "role")
}
