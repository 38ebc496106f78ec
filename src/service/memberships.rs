//! Group memberships, shared by the native and XNAT APIs. Whether the
//! caller may change their own memberships is the one rule of
//! `store::projects::set_level` and `store::groups::add`.

use crate::audit::Audit;
use crate::auth::principal::resolve_me;
use crate::auth::principal::Principal;
use crate::domain::Result;
use crate::store::groups;
use crate::store::users::ItemResult;
use sqlx::PgPool;

/// Adds to or removes from several groups, each applied or refused whole;
/// shared by the native and XNAT APIs.
pub async fn apply_groups(
    pool: &PgPool,
    caller: &Principal,
    audit: &Audit,
    username: &str,
    list: Vec<String>,
    add: bool,
) -> Result<Vec<ItemResult>> {
    let name = resolve_me(caller, username).to_string();
    let mut tx = pool.begin().await?;
    // An administrator's memberships only by an administrator (or
    // themself), checked on the locked row.
    crate::service::users::lock_managed(&mut tx, caller, &name).await?;
    let results = groups::apply_many(&mut tx, audit, &name, &list, add).await?;
    tx.commit().await?;
    Ok(results)
}

/// Adds `username` to, or removes them from, one group; the user as they
/// are afterwards.
pub async fn apply_one(
    pool: &PgPool,
    caller: &Principal,
    audit: &Audit,
    username: &str,
    group: &str,
    add: bool,
) -> Result<crate::store::users::User> {
    let name = resolve_me(caller, username).to_string();
    let mut tx = pool.begin().await?;
    // An administrator's memberships only by an administrator (or
    // themself), checked on the locked row.
    crate::service::users::lock_managed(&mut tx, caller, &name).await?;
    if add {
        groups::add(&mut tx, audit, &name, group).await?;
    } else {
        groups::remove(&mut tx, audit, &name, group).await?;
    }
    let user = crate::store::users::get(&mut tx, &name, false).await?;
    tx.commit().await?;
    Ok(user)
}

/// Makes a user's plain groups exactly `wanted` (project groups are left
/// alone: their levels change through the project), inside the caller's
/// transaction. Needs USER_MANAGEMENT; an administrator's only by an
/// administrator.
pub async fn set_plain_groups_in(
    tx: &mut sqlx::PgConnection,
    caller: &Principal,
    audit: &Audit,
    username: &str,
    wanted: &[String],
) -> Result<()> {
    if !caller.has(crate::domain::Permission::UserManagement) {
        return Err(crate::domain::Error::forbidden("changing a user's groups needs USER_MANAGEMENT"));
    }
    let user = crate::service::users::lock_managed(tx, caller, username).await?;
    let current = groups::of_user(tx, user.id).await?;
    for g in wanted {
        if current.iter().any(|c| c.eq_ignore_ascii_case(g)) {
            continue;
        }
        // A project's level is granted through the project (its owners and
        // rules), never as a plain group.
        if groups::get(tx, g).await?.project_id.is_some() {
            return Err(crate::domain::Error::conflict(
                "project_group",
                format!("'{g}' is a project's group: project levels change through the project"),
            ));
        }
        groups::add(tx, audit, &user.username, g).await?;
    }
    for c in &current {
        let plain = groups::get(tx, c).await?.project_id.is_none();
        if plain && !wanted.iter().any(|g| g.eq_ignore_ascii_case(c)) {
            groups::remove(tx, audit, &user.username, c).await?;
        }
    }
    Ok(())
}
