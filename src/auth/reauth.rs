//! Recent authentication for operations that mint or attach credentials
//! (an API key, an OpenID identity link, a first password): a token that was
//! stolen, or a session left open, must not be enough to plant a credential
//! that outlives a password reset or "log out everywhere".
//!
//! The caller qualifies when the login behind their session is at most
//! `auth.reauth_secs` old (a Basic password request qualifies by itself; an
//! API key never does), or when the request carries their current password.

use chrono::Utc;
use secrecy::SecretString;

use crate::auth::principal::Principal;
use crate::domain::{Error, Result};
use crate::state::AppState;

/// The refusal: 403 `reauthentication_required`.
pub fn required() -> Error {
    Error::forbidden("this needs a recent login: log in again, or give your current password as current_password")
        .with_code("reauthentication_required")
}

/// Whether the caller's login is recent enough on its own.
pub fn is_recent(state: &AppState, caller: &Principal) -> bool {
    let window = chrono::Duration::seconds(i64::try_from(state.settings.auth.reauth_secs).unwrap_or(300));
    caller.authenticated_at.is_some_and(|at| Utc::now() - at <= window)
}

/// Passes when the caller's login is recent or `current_password` is theirs.
/// A wrong password is 403 `wrong_password` and counts toward the lockout
/// like a failed login (`service::auth::check_own_password`).
pub async fn require(
    state: &AppState,
    caller: &Principal,
    audit: &crate::audit::Audit,
    current_password: Option<SecretString>,
) -> Result<(), Error> {
    // A password given is checked even after a recent login: a wrong one is
    // never accepted silently.
    let Some(password) = current_password else {
        return if is_recent(state, caller) { Ok(()) } else { Err(required()) };
    };
    let mut conn = state.pool.acquire().await?;
    let stored = crate::store::users::password_hash(&mut conn, caller.user_id).await?;
    drop(conn);
    if stored.is_none() {
        // Nothing to check it against (an OpenID-only account).
        return if is_recent(state, caller) { Ok(()) } else { Err(required()) };
    }
    crate::service::auth::check_own_password(state, audit, &caller.username, password).await
}

/// The refusal of a sensitive operation without a recent second factor:
/// 403 `mfa_step_up_required`.
pub fn step_up_required() -> Error {
    Error::forbidden("this needs your second factor: POST /api/v1/auth/mfa/step-up with a code, then try again")
        .with_code("mfa_step_up_required")
}

/// For a caller who has a second factor, sensitive operations (granting
/// roles, creating API keys, changing a password or a factor, registering
/// OpenID clients) need the factor used in this session within
/// `mfa.step_up_secs`. An API key was itself created under that rule and
/// passes; a caller without a factor passes.
pub fn require_factor(caller: &Principal) -> Result<(), Error> {
    if !caller.user.mfa_enabled || caller.api_key_id.is_some() || caller.mfa_recent {
        Ok(())
    } else {
        Err(step_up_required())
    }
}
