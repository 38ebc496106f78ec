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
