//! Logging in with a password: the native login and XNAT's form login
//! (`PUT /data/services/auth`) both end here.

use secrecy::SecretString;

use crate::audit::Audit;
use crate::domain::Result;
use crate::state::AppState;
use crate::store::sessions::{self, NewSession};

/// A password login that succeeded: the new session and an access token.
pub struct LoggedIn {
    pub session: NewSession,
    pub access_token: String,
}

/// Checks the rate limits and the password (lockout, no enumeration), then
/// writes the login's bookkeeping, the session, its refresh token and the
/// change log in one statement (`store::sessions::create_for_login`).
pub async fn password_login(
    state: &AppState,
    audit: &Audit,
    login: &str,
    password: SecretString,
    user_agent: Option<&str>,
) -> Result<LoggedIn> {
    state.limits.login(audit.client_ip.as_deref(), login)?;
    let ok = crate::store::users::check_login(state, audit, login.trim(), password).await?;
    let audit = audit.clone().as_user(ok.user_id, &ok.username);
    let ttl = state.settings.auth.session_ttl_secs;
    let session = sessions::create_for_login(&state.pool, &audit, &ok, ttl, user_agent).await?;
    let access_token = state.keys.issue_access(ok.user_id, session.id, chrono::Utc::now().timestamp())?;
    Ok(LoggedIn { session, access_token })
}
