//! Custom roles: administrators build them from the permission list and
//! grant them like the built-in ones.

use crate::audit::Audit;
use crate::domain::{Error, Permission, Result};
use crate::state::AppState;
use crate::store::roles::{self, RoleInfo};

/// A role name: 1-64 ASCII letters, digits, `_`, `.` or `-`, starting with
/// a letter.
pub fn parse_name(raw: &str) -> Result<String> {
    let raw = raw.trim();
    let ok = (1..=64).contains(&raw.len())
        && raw.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(Error::invalid(
            "invalid_role_name",
            "a role name is 1-64 letters, digits, _, . or -, starting with a letter",
        )
        .on_field("name"));
    }
    Ok(raw.to_string())
}

/// The permissions of a custom role: known ones, each once, never ADMIN
/// (only the built-in Administrator role makes an administrator, so every
/// rule about administrators sees one).
pub fn parse_permissions(list: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for p in list {
        let perm = Permission::from_name(p).ok_or_else(|| {
            Error::invalid("invalid_permission", "an unknown permission; see GET /api/v1/permissions")
                .on_field("permissions")
        })?;
        if perm == Permission::Admin {
            return Err(Error::invalid("invalid_permission", "ADMIN is held only through the Administrator role")
                .on_field("permissions"));
        }
        if !out.iter().any(|o| o == p) {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn description(raw: &str) -> Result<String> {
    crate::domain::parse_text("description", raw, 200)
}

/// Creates a custom role, then reloads what roles grant.
pub async fn create(
    state: &AppState,
    audit: &Audit,
    name: &str,
    desc: &str,
    permissions: &[String],
) -> Result<RoleInfo> {
    let (name, desc, permissions) = (parse_name(name)?, description(desc)?, parse_permissions(permissions)?);
    let mut tx = state.pool.begin().await?;
    let role = roles::create(&mut tx, audit, &name, &desc, &permissions).await?;
    tx.commit().await?;
    state.role_permissions.reload(&state.pool).await?;
    Ok(role)
}

/// Changes a custom role; its holders' permissions change at once.
pub async fn update(
    state: &AppState,
    audit: &Audit,
    name: &str,
    desc: Option<&str>,
    permissions: Option<&[String]>,
) -> Result<RoleInfo> {
    let desc = desc.map(description).transpose()?;
    let permissions = permissions.map(parse_permissions).transpose()?;
    let mut tx = state.pool.begin().await?;
    let role = roles::update(&mut tx, audit, name, desc.as_deref(), permissions.as_deref()).await?;
    tx.commit().await?;
    state.role_permissions.reload(&state.pool).await?;
    Ok(role)
}

/// Deletes a custom role (its holders lose it).
pub async fn delete(state: &AppState, audit: &Audit, name: &str) -> Result<RoleInfo> {
    let mut tx = state.pool.begin().await?;
    let role = roles::delete(&mut tx, audit, name).await?;
    tx.commit().await?;
    state.role_permissions.reload(&state.pool).await?;
    Ok(role)
}
