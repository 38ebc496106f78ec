//! Roles and the permissions they grant (read-only: roles have no write route).

use serde::Serialize;
use sqlx::PgPool;

use crate::error::ApiError;

#[derive(Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RoleInfo {
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub builtin: bool,
}

pub async fn list(pool: &PgPool) -> Result<Vec<RoleInfo>, ApiError> {
    Ok(sqlx::query_as!(RoleInfo, "SELECT name, description, permissions, builtin FROM roles ORDER BY name")
        .fetch_all(pool)
        .await?)
}
