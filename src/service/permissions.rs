//! Resource permissions: who may do what to a resource, for the front ends
//! that speak in resources (the MLTE API).

use sqlx::PgPool;

use crate::auth::principal::Principal;
use crate::domain::{Error, Permission as Grant, Result};
use crate::store::permissions::{self, Permission};

/// Whether `caller` may do `wanted`: an administrator may do anything; a
/// USER_MANAGEMENT holder may manage users and groups; everybody may read
/// and edit their own user; otherwise a permission held through a group
/// must allow it (no id: every resource; `any`: every method). 403 if not.
pub async fn authorize(pool: &PgPool, caller: &Principal, wanted: &Permission) -> Result<()> {
    if allows(pool, caller, wanted).await? {
        return Ok(());
    }
    Err(Error::forbidden(format!(
        "you may not {} {} {}",
        wanted.method,
        wanted.resource_type,
        wanted.resource_id.as_deref().unwrap_or("(any)")
    )))
}

/// `authorize` as a yes or no (the access guard's `Rule::ResourceOr`).
pub async fn allows(pool: &PgPool, caller: &Principal, wanted: &Permission) -> Result<bool> {
    if caller.is_admin() {
        return Ok(true);
    }
    let kind = wanted.resource_type.as_str();
    if matches!(kind, "user" | "group") && caller.has(Grant::UserManagement) {
        return Ok(true);
    }
    let own = kind == "user"
        && wanted.resource_id.as_deref().is_some_and(|u| caller.is(u))
        && matches!(wanted.method.as_str(), "get" | "put");
    if own {
        return Ok(true);
    }
    let held = permissions::of_user(pool, caller.user_id).await?;
    Ok(held.iter().any(|p| p.allows(wanted)))
}

/// The model ids `user` may read: those named by a permission they hold on
/// `model` with `get` or `any` (every id named in any permission for an
/// administrator; registrar keeps no list of models of its own).
pub async fn readable_models(pool: &PgPool, user: &crate::store::users::User) -> Result<Vec<String>> {
    let named = if user.admin() { permissions::list(pool).await? } else { permissions::of_user(pool, user.id).await? };
    let mut ids: Vec<String> = named
        .into_iter()
        .filter(|p| p.resource_type == "model" && matches!(p.method.as_str(), "get" | "any"))
        .filter_map(|p| p.resource_id)
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Checks every permission of a request (at most 1,000 of them).
pub fn checked(list: &[Permission]) -> Result<Vec<Permission>> {
    if list.len() > 1000 {
        return Err(Error::invalid("too_many_permissions", "give at most 1,000 permissions").on_field("permissions"));
    }
    list.iter().map(|p| Permission::parse(&p.resource_type, p.resource_id.as_deref(), &p.method)).collect()
}

/// Whether `caller` may make a group hold `after` instead of `before`:
/// USER_MANAGEMENT may grant anything; anyone else (a holder of `group`
/// `put`) may only remove, or add permissions they hold themselves, and
/// never on the `user` or `group` types (those are user management).
pub async fn may_grant(pool: &PgPool, caller: &Principal, before: &[Permission], after: &[Permission]) -> Result<()> {
    if caller.is_admin() || caller.has(Grant::UserManagement) {
        return Ok(());
    }
    let held = permissions::of_user(pool, caller.user_id).await?;
    for p in after.iter().filter(|p| !before.contains(p)) {
        let managed = matches!(p.resource_type.as_str(), "user" | "group");
        if managed || !held.iter().any(|h| h.allows(p)) {
            return Err(Error::forbidden(format!(
                "you may grant only permissions you hold yourself, and none on users or groups ({})",
                p.key()
            )));
        }
    }
    Ok(())
}

/// What a resource permission lets its holder do to another account stops
/// at accounts that manage users: changing or deleting an account holding
/// ADMIN or USER_MANAGEMENT takes USER_MANAGEMENT (an administrator's,
/// ADMIN; see `users::require_admin_for`).
pub fn may_touch_account(
    caller: &Principal,
    target: &crate::store::users::User,
    target_grants: &[Grant],
) -> Result<()> {
    let manages = target_grants.iter().any(|g| matches!(g, Grant::Admin | Grant::UserManagement));
    if manages && target.id != caller.user_id && !caller.has(Grant::UserManagement) {
        return Err(Error::forbidden("only a user manager may change or delete an account that manages users"));
    }
    crate::service::users::require_admin_for(caller, target)
}

/// Makes `group` hold exactly `wanted`, within the caller's transaction:
/// the permissions checked (`checked`), the grant allowed (`may_grant`),
/// then written and logged (`store::permissions::set_for_group`). The one
/// flow behind the native `PUT /api/v1/groups/{group}/permissions` and
/// MLTE's group create and edit.
pub async fn set_group_permissions(
    tx: &mut sqlx::PgConnection,
    pool: &PgPool,
    caller: &Principal,
    audit: &crate::audit::Audit,
    group: &str,
    wanted: &[Permission],
) -> Result<Vec<Permission>> {
    let wanted = checked(wanted)?;
    let before = permissions::of_group(tx, group).await?;
    may_grant(pool, caller, &before, &wanted).await?;
    permissions::set_for_group(tx, audit, group, &wanted).await?;
    permissions::of_group(tx, group).await
}
