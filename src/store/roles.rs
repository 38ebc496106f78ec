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

/// Whether a role of this name exists.
pub async fn exists(conn: &mut sqlx::PgConnection, name: &str) -> Result<bool, Error> {
    Ok(sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM roles WHERE name = $1) AS "exists!""#, name)
        .fetch_one(conn)
        .await?)
}

/// What each role grants, by role name (`auth::principal::RolePermissions`).
pub async fn permissions(pool: &PgPool) -> Result<Vec<(String, Vec<String>)>, Error> {
    Ok(sqlx::query!("SELECT name, permissions FROM roles")
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| (r.name, r.permissions))
        .collect())
}
