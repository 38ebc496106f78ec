//! Permission types and roles.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::auth::principal::Caller;
use crate::domain::Permission;
use crate::error::ApiResult;
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct PermissionInfo {
    pub name: &'static str,
    pub description: &'static str,
}

pub use crate::store::roles::RoleInfo;

/// Every permission type (the data tracker's `get_permission_info`). Any authenticated user.
#[utoipa::path(get, path = "/api/v1/permissions", tag = "roles", responses((status = 200, body = [PermissionInfo])))]
pub async fn permissions(_caller: Caller) -> HttpResponse {
    let list: Vec<PermissionInfo> =
        Permission::ALL.iter().map(|p| PermissionInfo { name: p.as_str(), description: p.description() }).collect();
    HttpResponse::Ok().json(list)
}

/// Roles with the permissions they grant. Any authenticated user.
#[utoipa::path(get, path = "/api/v1/roles", tag = "roles", responses((status = 200, body = [RoleInfo])))]
pub async fn roles(_caller: Caller, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(crate::store::roles::list(&state.pool).await?))
}
