//! Roles and the permissions they grant (read-only: roles have no write route).

use crate::domain::{Error, Result};
use serde::Serialize;
use sqlx::PgPool;

#[derive(Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RoleInfo {
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub builtin: bool,
}

pub async fn list(pool: &PgPool) -> Result<Vec<RoleInfo>, Error> {
    Ok(sqlx::query_as!(RoleInfo, "SELECT name, description, permissions, builtin FROM roles ORDER BY name")
        .fetch_all(pool)
        .await?)
}
