//! Permission types and roles.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::api::{page_of, Order, Page, PageQuery};
use crate::auth::principal::Caller;
use crate::domain::Permission;
use crate::error::ApiResult;
use crate::http::Query;
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct PermissionInfo {
    pub name: &'static str,
    pub description: &'static str,
}

pub use crate::store::roles::RoleInfo;

/// Every permission type (the data tracker's `get_permission_info`). Any authenticated user.
#[utoipa::path(get, path = "/api/v1/permissions", tag = "roles", params(PageQuery), responses((status = 200, body = Page<PermissionInfo>)))]
pub async fn permissions(_caller: Caller, q: Query<PageQuery>) -> ApiResult<HttpResponse> {
    let list: Vec<PermissionInfo> =
        Permission::ALL.iter().map(|p| PermissionInfo { name: p.as_str(), description: p.description() }).collect();
    Ok(HttpResponse::Ok().json(page_of(list, &q, Order::Ascending, |p| p.name.to_string())?))
}

/// A custom role.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Permission names (`GET /api/v1/permissions`), never ADMIN.
    pub permissions: Vec<String>,
}

/// A change to a custom role.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    pub description: Option<String>,
    pub permissions: Option<Vec<String>>,
}

/// Creates a custom role from the permission list (not ADMIN), granted like
/// the built-in ones. ADMIN.
#[utoipa::path(post, path = "/api/v1/roles", tag = "roles", request_body = NewRole,
    responses((status = 201, body = RoleInfo), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_role(
    _caller: Caller,
    state: web::Data<AppState>,
    audit: crate::audit::Audit,
    body: crate::http::Json<NewRole>,
) -> ApiResult<HttpResponse> {
    let b = body.into_inner();
    let role = crate::service::roles::create(&state, &audit, &b.name, &b.description, &b.permissions).await?;
    Ok(HttpResponse::Created().json(role))
}

/// Changes a custom role's description or permissions; its holders' access
/// changes at once, on every instance. ADMIN.
#[utoipa::path(patch, path = "/api/v1/roles/{role}", tag = "roles", params(("role" = String, Path)), request_body = RoleChange,
    responses((status = 200, body = RoleInfo), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn update_role(
    _caller: Caller,
    state: web::Data<AppState>,
    audit: crate::audit::Audit,
    path: web::Path<String>,
    body: crate::http::Json<RoleChange>,
) -> ApiResult<HttpResponse> {
    let b = body.into_inner();
    let role = crate::service::roles::update(&state, &audit, &path, b.description.as_deref(), b.permissions.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(role))
}

/// Deletes a custom role; its holders lose it (built-in roles: 409). ADMIN.
#[utoipa::path(delete, path = "/api/v1/roles/{role}", tag = "roles", params(("role" = String, Path)),
    responses((status = 200, body = RoleInfo), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn delete_role(
    _caller: Caller,
    state: web::Data<AppState>,
    audit: crate::audit::Audit,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(crate::service::roles::delete(&state, &audit, &path).await?))
}

/// The password policy: lengths and what is refused (with the codes a
/// refusal carries). Public.
#[utoipa::path(get, path = "/api/v1/password-policy", tag = "users",
    responses((status = 200, body = crate::auth::password::Policy)))]
pub async fn password_policy(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.hasher.policy())
}

/// Roles with the permissions they grant. Any authenticated user.
#[utoipa::path(get, path = "/api/v1/roles", tag = "roles", params(PageQuery), responses((status = 200, body = Page<RoleInfo>)))]
pub async fn roles(_caller: Caller, state: web::Data<AppState>, q: Query<PageQuery>) -> ApiResult<HttpResponse> {
    let list = crate::store::roles::list(&state.pool).await?;
    Ok(HttpResponse::Ok().json(page_of(list, &q, Order::Ascending, |r| r.name.clone())?))
}
