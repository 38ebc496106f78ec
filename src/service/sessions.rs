//! Ending sessions: one, all of a user's, or all but the caller's. The
//! native API and the web pages call these.

use uuid::Uuid;

use crate::audit::Audit;
use crate::auth::principal::{resolve_me, Principal};
use crate::domain::{Error, Permission, Result};
use crate::state::AppState;
use crate::store::{api_keys, sessions, users};

fn session_not_found() -> Error {
    Error::not_found("session_not_found", "no such active session")
}

/// Revokes one session: its owner, or USER_MANAGEMENT (an administrator's
/// only by an administrator). Anyone else is told it does not exist, so
/// session ids of others cannot be probed.
pub async fn revoke_one(state: &AppState, caller: &Principal, audit: &Audit, id: Uuid) -> Result<()> {
    let mut tx = state.pool.begin().await?;
    let (owner, _) = sessions::owner(&mut tx, id).await?.ok_or_else(session_not_found)?;
    if owner != caller.user_id && !caller.has(Permission::UserManagement) {
        return Err(session_not_found());
    }
    // An administrator's session only by an administrator, checked on the
    // owner's locked row (a grant of Administrator at the same moment is seen).
    if owner != caller.user_id && !caller.is_admin() && users::get(&mut tx, &owner.to_string(), true).await?.admin() {
        return Err(crate::auth::access::admin_target_refused());
    }
    if !sessions::revoke(&mut tx, audit, id, "revoked by request").await? {
        return Err(session_not_found());
    }
    tx.commit().await?;
    Ok(())
}

/// Revokes every session of `target` (and every access token issued so
/// far), and with `and_keys` every API key too. The counts ended.
pub async fn revoke_all(
    state: &AppState,
    caller: &Principal,
    audit: &Audit,
    target: &str,
    and_keys: bool,
) -> Result<(u64, u64)> {
    let mut tx = state.pool.begin().await?;
    // An administrator's only by an administrator (or themself), checked
    // on the locked row.
    let user = crate::service::users::lock_managed(&mut tx, caller, resolve_me(caller, target)).await?;
    let n = sessions::revoke_all(&mut tx, audit, user.id, "revoked by request").await?;
    let keys = if and_keys { api_keys::revoke_all(&mut tx, audit, user.id).await? } else { 0 };
    tx.commit().await?;
    Ok((n, keys))
}

/// Ends every session of the caller but the one they are using.
pub async fn revoke_others(state: &AppState, caller: &Principal, audit: &Audit) -> Result<u64> {
    let mut tx = state.pool.begin().await?;
    let n = sessions::revoke_others(&mut tx, audit, caller.user_id, caller.session_id).await?;
    tx.commit().await?;
    Ok(n)
}
