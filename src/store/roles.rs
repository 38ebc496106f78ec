//! Roles and the permissions they grant: the built-in ones and custom ones
//! (created, changed and deleted by administrators, logged).

use crate::audit::{self, Audit, Changes};
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

fn not_found(name: &str) -> Error {
    Error::not_found("role_not_found", format!("no role named '{name}'"))
}

/// One role, locked for a change.
async fn get_locked(conn: &mut sqlx::PgConnection, name: &str) -> Result<RoleInfo, Error> {
    sqlx::query_as!(
        RoleInfo,
        "SELECT name, description, permissions, builtin FROM roles WHERE name = $1 FOR UPDATE",
        name
    )
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found(name))
}

/// Creates a custom role (name unique in any case: 409 `role_exists`).
pub async fn create(
    conn: &mut sqlx::PgConnection,
    audit: &Audit,
    name: &str,
    description: &str,
    permissions: &[String],
) -> Result<RoleInfo, Error> {
    let taken =
        sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM roles WHERE lower(name) = lower($1)) AS "taken!""#, name)
            .fetch_one(&mut *conn)
            .await?;
    if taken {
        return Err(Error::conflict("role_exists", format!("a role named '{name}' exists")));
    }
    let role = sqlx::query_as!(
        RoleInfo,
        "INSERT INTO roles (name, description, permissions, builtin) VALUES ($1, $2, $3, false)
         RETURNING name, description, permissions, builtin",
        name,
        description,
        permissions,
    )
    .fetch_one(&mut *conn)
    .await
    // Created by another request since the check above.
    .map_err(|e| {
        Error::on_constraint(e, |c| {
            (c.starts_with("roles_") && c.ends_with("key"))
                .then(|| Error::conflict("role_exists", format!("a role named '{name}' exists")))
        })
    })?;
    let changes = Changes::new().field("description", serde_json::Value::Null, description).field(
        "permissions",
        serde_json::Value::Null,
        permissions.to_vec(),
    );
    audit::record(&mut *conn, audit, "role", name, "role.created", changes).await?;
    Ok(role)
}

/// Changes a custom role's description or permissions (built-in: 409).
pub async fn update(
    conn: &mut sqlx::PgConnection,
    audit: &Audit,
    name: &str,
    description: Option<&str>,
    permissions: Option<&[String]>,
) -> Result<RoleInfo, Error> {
    let before = get_locked(conn, name).await?;
    if before.builtin {
        return Err(Error::conflict("builtin_role", "built-in roles cannot be changed"));
    }
    let description = description.unwrap_or(&before.description);
    let permissions = permissions.map(<[String]>::to_vec).unwrap_or_else(|| before.permissions.clone());
    let changes = Changes::new().field("description", before.description.as_str(), description).field(
        "permissions",
        before.permissions.clone(),
        permissions.clone(),
    );
    if changes.is_empty() {
        return Ok(before);
    }
    let role = sqlx::query_as!(
        RoleInfo,
        "UPDATE roles SET description = $2, permissions = $3 WHERE name = $1
         RETURNING name, description, permissions, builtin",
        name,
        description,
        &permissions,
    )
    .fetch_one(&mut *conn)
    .await?;
    audit::record(&mut *conn, audit, "role", name, "role.updated", changes).await?;
    Ok(role)
}

/// Deletes a custom role; its holders lose it (built-in: 409).
pub async fn delete(conn: &mut sqlx::PgConnection, audit: &Audit, name: &str) -> Result<RoleInfo, Error> {
    // The holders' rows first, in id order, and only then the role: the
    // cascade rewrites each holder's `users.roles` (its trigger locks the
    // row), and a request that holds a holder's row and then grants or
    // revokes this role waits for the role; taking the role first made the
    // two wait for each other (a deadlock, answered 409). A grant that was
    // under way when the holders were locked makes a holder this did not
    // lock, and a writer may hold that user and wait for one of ours (an
    // import or bulk action locks in id order too): then every lock is let
    // go (the savepoint's rollback) and taken again, the new holder with
    // the others.
    for attempt in 1..=MAX_DELETE_TRIES {
        let mut sp = sqlx::Connection::begin(&mut *conn).await?;
        let locked: Vec<uuid::Uuid> = sqlx::query_scalar!(
            "SELECT u.id FROM users u WHERE u.id IN (SELECT user_id FROM user_roles WHERE role = $1)
             ORDER BY u.id FOR NO KEY UPDATE",
            name
        )
        .fetch_all(&mut *sp)
        .await?;
        let before = get_locked(&mut sp, name).await?;
        if before.builtin {
            return Err(Error::conflict("builtin_role", "built-in roles cannot be deleted"));
        }
        // With the role locked, no grant of it is under way any more.
        let holders: Vec<uuid::Uuid> =
            sqlx::query_scalar!("SELECT user_id FROM user_roles WHERE role = $1", name).fetch_all(&mut *sp).await?;
        // The last try goes on regardless, holding the role (so no grant of
        // it is under way any more): the cascade then locks the new holders
        // as it goes, which at worst deadlocks (409) in that rare order.
        if attempt == MAX_DELETE_TRIES || holders.iter().all(|h| locked.contains(h)) {
            delete_locked(&mut sp, audit, name, &before).await?;
            sp.commit().await?;
            return Ok(before);
        }
        sp.rollback().await?;
    }
    Err(Error::conflict("concurrent_update", "changed concurrently; try again"))
}

/// How often `delete` takes its locks again before it answers 409.
const MAX_DELETE_TRIES: usize = 5;

/// `delete`'s write, with the role and every holder's row locked.
async fn delete_locked(
    conn: &mut sqlx::PgConnection,
    audit: &Audit,
    name: &str,
    before: &RoleInfo,
) -> Result<(), Error> {
    let holders: Vec<String> = sqlx::query_scalar!(
        "SELECT u.username FROM user_roles r JOIN users u ON u.id = r.user_id WHERE r.role = $1 ORDER BY u.username",
        name
    )
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query!("DELETE FROM roles WHERE name = $1", name).execute(&mut *conn).await?;
    let changes = Changes::new().field("permissions", before.permissions.clone(), serde_json::Value::Null).field(
        "holders",
        holders,
        serde_json::Value::Null,
    );
    audit::record(&mut *conn, audit, "role", name, "role.deleted", changes).await?;
    Ok(())
}
