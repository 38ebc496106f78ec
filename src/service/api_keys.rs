//! Issuing API keys: the native `POST /api/v1/users/{u}/api-keys` and the
//! data tracker's `POST /api/v1/user/{id}/apikey` (which replaces the key
//! it issued before).

use chrono::{DateTime, Datelike, Timelike, Utc};
use secrecy::SecretString;

use crate::audit::Audit;
use crate::auth::principal::{resolve_me, Principal};
use crate::domain::{Error, Result};
use crate::state::AppState;
use crate::store::api_keys::{self, ApiKeyView};

/// What to issue.
pub struct NewKey {
    /// A label, 1-100 characters with no control characters.
    pub name: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// Needed when the caller's login is not recent (`auth::reauth`).
    pub current_password: Option<SecretString>,
    /// Revoke the user's active keys of the same name first (one key per
    /// name, as the data tracker keeps one key per user).
    pub replace: bool,
}

/// Revokes one of `user_id`'s keys (the sessions it started end with it);
/// an administrator's only by an administrator (or themself), checked on
/// the locked row.
pub async fn revoke(
    pool: &sqlx::PgPool,
    caller: &crate::auth::principal::Principal,
    audit: &Audit,
    user_id: uuid::Uuid,
    id: uuid::Uuid,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    crate::service::users::lock_managed(&mut tx, caller, &user_id.to_string()).await?;
    api_keys::revoke(&mut tx, audit, user_id, id).await?;
    tx.commit().await?;
    Ok(())
}

/// Issues a key for `target` (a username, id or `me`): rate-limited per
/// caller, only after a recent login (an API key never is one), an
/// administrator's only by an administrator. One transaction: the
/// replaced keys' revocation (which ends the sessions they started), the
/// new key and the change log. The secret is in the answer only.
pub async fn issue(
    state: &AppState,
    caller: &Principal,
    audit: &Audit,
    target: &str,
    new: NewKey,
) -> Result<(ApiKeyView, String)> {
    state.limits.api_key_user.check(&caller.user_id.to_string()).await?;
    crate::auth::reauth::require(state, caller, audit, new.current_password).await?;
    crate::auth::reauth::require_factor(caller)?;
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(
            Error::invalid("invalid_name", "name must be 1-100 characters with no control characters").on_field("name")
        );
    }
    if new.expires_at.is_some_and(|e| e <= Utc::now()) {
        return Err(Error::invalid("invalid_expiry", "expires_at must be in the future").on_field("expires_at"));
    }
    // Within what RFC 3339 can write back (a leap second at the end of
    // 9999 read as year 10000), and no leap second (PostgreSQL has none).
    if new.expires_at.is_some_and(|e| e.year() > 9999 || e.nanosecond() >= 1_000_000_000) {
        return Err(Error::invalid(
            "invalid_expiry",
            "expires_at must be a time before the year 10000, without a leap second",
        )
        .on_field("expires_at"));
    }
    let mut tx = state.pool.begin().await?;
    // Locked: the admin rule is checked on the row as it is now (a grant of
    // Administrator made at the same moment is seen or waits), and
    // concurrent replacements for one user take turns, so one key of the
    // name stays live.
    let user = crate::service::users::lock_managed(&mut tx, caller, resolve_me(caller, target)).await?;
    if new.replace {
        api_keys::revoke_named(&mut tx, audit, user.id, name).await?;
    }
    let out = api_keys::create(&mut tx, audit, &state.keys, user.id, name, new.expires_at).await?;
    tx.commit().await?;
    Ok(out)
}
