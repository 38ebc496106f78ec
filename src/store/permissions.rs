//! Resource permissions (`resource_type`, `resource_id` or every resource,
//! `method` or `any`) and the groups that hold them. A user holds what their
//! groups hold.

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::audit::{self, Audit, Changes};
use crate::domain::{Error, Result};

/// One permission. Its key (`key()`) is MLTE's: `type-method[-id]`, with
/// every `-` of the id written `___`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    pub resource_type: String,
    /// `null`: every resource of the type.
    pub resource_id: Option<String>,
    /// `get`, `post`, `put`, `delete` or `any`.
    pub method: String,
}

pub const METHODS: [&str; 5] = ["get", "post", "put", "delete", "any"];

impl Permission {
    /// Checks the parts (the database checks them again).
    pub fn parse(resource_type: &str, resource_id: Option<&str>, method: &str) -> Result<Permission> {
        let t_ok = resource_type.len() <= 64
            && resource_type.starts_with(|c: char| c.is_ascii_lowercase())
            && resource_type.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !t_ok {
            return Err(Error::invalid(
                "invalid_resource_type",
                "resource_type must be lower-case letters, digits or _",
            )
            .on_field("resource_type"));
        }
        if resource_id.is_some_and(|id| id.is_empty() || id.chars().count() > 256 || id.chars().any(char::is_control)) {
            return Err(Error::invalid("invalid_resource_id", "resource_id must be 1 to 256 printable characters")
                .on_field("resource_id"));
        }
        let method = method.to_ascii_lowercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(
                Error::invalid("invalid_method", "method must be get, post, put, delete or any").on_field("method")
            );
        }
        Ok(Permission {
            resource_type: resource_type.to_string(),
            resource_id: resource_id.map(str::to_string),
            method,
        })
    }

    /// `type-method[-id]` (MLTE's string form).
    pub fn key(&self) -> String {
        match &self.resource_id {
            None => format!("{}-{}", self.resource_type, self.method),
            Some(id) => format!("{}-{}-{}", self.resource_type, self.method, id.replace('-', "___")),
        }
    }

    /// The permission a key names (`key()` reversed).
    pub fn from_key(key: &str) -> Result<Permission> {
        let bad = || Error::not_found("permission_not_found", format!("no permission '{key}'"));
        let mut parts = key.splitn(3, '-');
        let (Some(t), Some(m)) = (parts.next(), parts.next()) else { return Err(bad()) };
        let id = parts.next().map(|id| id.replace("___", "-"));
        Permission::parse(t, id.as_deref(), m).map_err(|_| bad())
    }

    /// Whether holding `self` allows `wanted` (no id: every resource; `any`: every method).
    pub fn allows(&self, wanted: &Permission) -> bool {
        self.resource_type == wanted.resource_type
            && (self.resource_id.is_none() || self.resource_id == wanted.resource_id)
            && (self.method == "any" || self.method == wanted.method)
    }
}

/// Every registered permission, by key.
pub async fn list(pool: &PgPool) -> Result<Vec<Permission>> {
    Ok(sqlx::query_as!(
        Permission,
        "SELECT resource_type, resource_id, method FROM resource_permissions
         ORDER BY resource_type, resource_id NULLS FIRST, method"
    )
    .fetch_all(pool)
    .await?)
}

/// Whether `p` is registered.
pub async fn exists(pool: &PgPool, p: &Permission) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM resource_permissions
                          WHERE resource_type = $1 AND resource_id IS NOT DISTINCT FROM $2 AND method = $3) AS "exists!""#,
        p.resource_type,
        p.resource_id,
        p.method,
    )
    .fetch_one(pool)
    .await?)
}

/// The permissions a group holds.
pub async fn of_group(conn: &mut PgConnection, group: &str) -> Result<Vec<Permission>> {
    Ok(sqlx::query_as!(
        Permission,
        "SELECT p.resource_type, p.resource_id, p.method
         FROM group_permissions gp JOIN resource_permissions p ON p.id = gp.permission_id
         WHERE gp.group_name = $1 ORDER BY p.resource_type, p.resource_id NULLS FIRST, p.method",
        group,
    )
    .fetch_all(conn)
    .await?)
}

/// The permissions a user holds through their groups.
pub async fn of_user<'e>(exec: impl sqlx::PgExecutor<'e>, user: Uuid) -> Result<Vec<Permission>> {
    Ok(sqlx::query_as!(
        Permission,
        "SELECT DISTINCT p.resource_type, p.resource_id, p.method
         FROM user_groups ug JOIN group_permissions gp ON gp.group_name = ug.group_name
         JOIN resource_permissions p ON p.id = gp.permission_id
         WHERE ug.user_id = $1 ORDER BY 1, 2 NULLS FIRST, 3",
        user,
    )
    .fetch_all(exec)
    .await?)
}

/// Makes `group` hold exactly `wanted` (registering permissions not seen
/// before), logged as `group.permissions_changed` with before and after.
pub async fn set_for_group(conn: &mut PgConnection, audit: &Audit, group: &str, wanted: &[Permission]) -> Result<()> {
    if crate::store::groups::get(conn, group).await?.project_id.is_some() {
        // Project owners control those memberships; user-level powers must
        // not ride on them.
        return Err(Error::conflict("project_group", "a project's groups hold no resource permissions"));
    }
    let before = of_group(conn, group).await?;
    let mut after: Vec<Permission> = wanted.to_vec();
    after.sort();
    after.dedup();
    if before == after {
        return Ok(());
    }
    let types: Vec<String> = after.iter().map(|p| p.resource_type.clone()).collect();
    let ids: Vec<String> = after.iter().map(|p| p.resource_id.clone().unwrap_or_default()).collect();
    let methods: Vec<String> = after.iter().map(|p| p.method.clone()).collect();
    sqlx::query!(
        "INSERT INTO resource_permissions (resource_type, resource_id, method)
         SELECT t, NULLIF(i, ''), m FROM unnest($1::text[], $2::text[], $3::text[]) AS w(t, i, m)
         ON CONFLICT (resource_type, COALESCE(resource_id, ''), method) DO NOTHING",
        &types,
        &ids,
        &methods,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "WITH wanted AS (
             SELECT p.id FROM resource_permissions p
             JOIN unnest($2::text[], $3::text[], $4::text[]) AS w(t, i, m)
               ON p.resource_type = w.t AND COALESCE(p.resource_id, '') = w.i AND p.method = w.m
         ), gone AS (
             DELETE FROM group_permissions WHERE group_name = $1 AND permission_id NOT IN (SELECT id FROM wanted)
         )
         INSERT INTO group_permissions (group_name, permission_id) SELECT $1, id FROM wanted ON CONFLICT DO NOTHING",
        group,
        &types,
        &ids,
        &methods,
    )
    .execute(&mut *conn)
    .await?;
    // Permissions on one resource that no group holds any longer go (the
    // ones on every resource of a type stay registered).
    sqlx::query!(
        "DELETE FROM resource_permissions p WHERE p.resource_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM group_permissions gp WHERE gp.permission_id = p.id)"
    )
    .execute(&mut *conn)
    .await?;
    let keys = |ps: &[Permission]| ps.iter().map(Permission::key).collect::<Vec<_>>();
    let changes = Changes::new().field("permissions", keys(&before), keys(&after));
    audit::record(&mut *conn, audit, "group", group, "group.permissions_changed", changes).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Permission;

    #[test]
    fn keys_round_trip_as_mlte_writes_them() {
        let p = Permission::parse("model", Some("mc-model-1"), "PUT").expect("valid");
        assert_eq!(p.key(), "model-put-mc___model___1");
        assert_eq!(Permission::from_key("model-put-mc___model___1").expect("key"), p);
        let every = Permission::parse("user", None, "get").expect("valid");
        assert_eq!(every.key(), "user-get");
        assert!(every.allows(&Permission::parse("user", Some("bob"), "get").expect("valid")));
        assert!(!every.allows(&Permission::parse("user", Some("bob"), "put").expect("valid")));
        assert!(Permission::parse("Model", None, "get").is_err() && Permission::parse("model", None, "patch").is_err());
        assert!(Permission::from_key("nonsense").is_err());
    }
}
