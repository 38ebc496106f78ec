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
    let results = groups::apply_many(&mut tx, audit, &name, &list, add).await?;
    tx.commit().await?;
    Ok(results)
}
