//! Logging in. Every way in ends here:
//! - a password (the native login, XNAT's form login `PUT /data/services/auth`,
//!   and HTTP Basic, checked by the access guard) goes through
//!   `check_password`: the rate limits, the lockout and the same answer for
//!   unknown names, wrong passwords and disabled accounts;
//! - a session is started by `password_login` (one statement with the
//!   login's bookkeeping) or, after an OpenID Connect login or a Basic
//!   password on an XNAT path, by `start_session`.

use secrecy::SecretString;
use uuid::Uuid;

use crate::audit::Audit;
use crate::domain::{Error, Result};
use crate::state::AppState;
use crate::store::sessions::{self, NewSession};
use crate::store::users::{self, LoginOk};

/// A password login that succeeded: the new session and an access token.
pub struct LoggedIn {
    pub session: NewSession,
    pub access_token: String,
    /// The session may only enrol a second factor (`mfa.required_for_roles`).
    pub mfa_enrollment_required: bool,
}

/// What a password login comes to.
pub enum Login {
    /// Logged in.
    Done(LoggedIn),
    /// The account has a second factor: the password was the first step.
    SecondFactor(crate::service::mfa::Challenge),
}

/// The refusal of a password alone where no second step can follow (HTTP
/// Basic, XNAT's and MLTE's password logins) for an account with a second
/// factor: 401 `mfa_required`. API keys are the way for scripts.
pub fn second_factor_needed() -> Error {
    Error::Unauthenticated {
        code: "mfa_required",
        message: "this account has a second factor: log in interactively, or use an API key".into(),
    }
}

/// The one password check: the rate limits (per client address and per
/// name), then the account's lockout and the hash (`store::users::check_login`).
/// Surrounding blanks of the login name are ignored everywhere.
pub async fn check_password(state: &AppState, audit: &Audit, login: &str, password: SecretString) -> Result<LoginOk> {
    check_password_revealing(state, audit, login, password).await.map_err(|e| {
        if e.code() == users::ACCOUNT_DISABLED {
            e.with_code("invalid_credentials")
        } else {
            e
        }
    })
}

/// `check_password`, except that the right password of a disabled account
/// answers `account_disabled` (the login page says so; it tells nothing to
/// whoever does not know the password).
pub async fn check_password_revealing(
    state: &AppState,
    audit: &Audit,
    login: &str,
    password: SecretString,
) -> Result<LoginOk> {
    // ASCII blanks only: other input names nobody (`domain::login_key`).
    let login = login.trim_matches(|c: char| c.is_ascii_whitespace());
    let checked = match state.limits.login(audit.client_ip.as_deref(), login).await {
        Ok(()) => users::check_login(state, audit, login, password).await,
        Err(e) => Err(e),
    };
    state.metrics.login(match &checked {
        Ok(ok) if ok.mfa_enabled => "mfa_required",
        Ok(_) => "success",
        Err(e) if e.code() == users::ACCOUNT_DISABLED => "disabled",
        Err(e) if e.code() == "invalid_credentials" => "invalid",
        Err(e) if e.code() == "rate_limited" => "rate_limited",
        Err(e) if e.code() == "account_locked" => "locked",
        Err(_) => "refused",
    });
    checked
}

/// Checks an authenticated caller's own password (`current_password`) the
/// way a login checks one: rate-limited, counted toward the lockout and
/// refused while locked (429), so holding a token or key is no way to guess
/// the password without limit. A wrong password is 403 `wrong_password`
/// (the caller stays authenticated); a right one resets the count.
pub async fn check_own_password(state: &AppState, audit: &Audit, username: &str, password: SecretString) -> Result<()> {
    match check_password(state, audit, username, password).await {
        Ok(ok) => users::settle_own_check(&state.pool, &ok).await,
        Err(e) if e.code() == "invalid_credentials" => {
            Err(Error::forbidden("current password is wrong").with_code("wrong_password"))
        }
        Err(e) => Err(e),
    }
}

/// Logs in with a password and starts a session: the login's bookkeeping,
/// the session, its refresh token and the change log are one statement
/// (`store::sessions::create_for_login`).
pub async fn password_login(
    state: &AppState,
    audit: &Audit,
    login: &str,
    password: SecretString,
    user_agent: Option<&str>,
) -> Result<Login> {
    let ok = check_password(state, audit, login, password).await?;
    complete_or_challenge(state, audit, ok, user_agent).await
}

/// A password login for a client that cannot take a second step (XNAT's
/// `PUT /data/services/auth`, MLTE's token endpoint): an account with a
/// second factor is refused with `mfa_required`.
pub async fn password_only_login(
    state: &AppState,
    audit: &Audit,
    login: &str,
    password: SecretString,
    user_agent: Option<&str>,
) -> Result<LoggedIn> {
    let ok = check_password(state, audit, login, password).await?;
    refuse_password_alone(state, &ok).await?;
    start_login_session(state, audit, ok, user_agent, &["pwd"]).await
}

/// Where a password must do alone (Basic, XNAT's and MLTE's logins): an
/// account with a second factor, or one that must enrol one first, is
/// refused (the password's try is given back, its failure count kept).
async fn refuse_password_alone(state: &AppState, ok: &LoginOk) -> Result<()> {
    let refusal = if ok.mfa_enabled {
        second_factor_needed()
    } else if crate::service::mfa::must_enrol(state, ok.user_id, false).await? {
        crate::service::mfa::enrolment_needed()
    } else {
        return Ok(());
    };
    let mut conn = state.pool.acquire().await?;
    crate::store::mfa::first_step_done(&mut conn, ok.user_id).await?;
    Err(refusal)
}

/// `password_login` for the login page: a disabled account is named as
/// such once the password was right (`check_password_revealing`).
pub async fn page_login(
    state: &AppState,
    audit: &Audit,
    login: &str,
    password: SecretString,
    user_agent: Option<&str>,
) -> Result<Login> {
    let ok = check_password_revealing(state, audit, login, password).await?;
    complete_or_challenge(state, audit, ok, user_agent).await
}

/// A password that checked: the session, or (the account has a second
/// factor) the challenge its second step answers (`service::mfa`).
async fn complete_or_challenge(
    state: &AppState,
    audit: &Audit,
    ok: LoginOk,
    user_agent: Option<&str>,
) -> Result<Login> {
    if ok.mfa_enabled {
        return Ok(Login::SecondFactor(crate::service::mfa::challenge(state, audit, &ok, user_agent).await?));
    }
    Ok(Login::Done(start_login_session(state, audit, ok, user_agent, &["pwd"]).await?))
}

/// Starts the session of a login that is complete: `amr` says how it was
/// made (`pwd`, and `otp` after a second factor, which also marks the
/// session's second factor as used now).
pub(crate) async fn start_login_session(
    state: &AppState,
    audit: &Audit,
    ok: LoginOk,
    user_agent: Option<&str>,
    amr: &[&str],
) -> Result<LoggedIn> {
    let audit = audit.clone().as_user(ok.user_id, &ok.username);
    let ttl = state.settings.auth.session_ttl_secs;
    let enrol = crate::service::mfa::must_enrol(state, ok.user_id, ok.mfa_enabled).await?;
    let session = sessions::create_for_login(&state.pool, &audit, &ok, ttl, user_agent, amr).await?;
    if enrol {
        crate::service::mfa::limit_to_enrolment(state, session.id).await?;
    }
    let access_token = state.keys.issue_access(ok.user_id, session.id, chrono::Utc::now().timestamp())?;
    Ok(LoggedIn { session, access_token, mfa_enrollment_required: enrol })
}

/// Checks an HTTP Basic password and records the login (no session: the
/// XNAT adapter starts one with `start_session`). The user's id.
pub async fn basic_password(state: &AppState, audit: &Audit, username: &str, password: SecretString) -> Result<Uuid> {
    let ok = check_password(state, audit, username, password).await?;
    refuse_password_alone(state, &ok).await?;
    users::record_login(&state.pool, audit, &ok).await?;
    Ok(ok.user_id)
}

/// Ends the session a caller is using (a logout; nothing when the caller
/// came with a key or a token of no session).
pub async fn logout(state: &AppState, audit: &Audit, session: Option<Uuid>) -> Result<()> {
    if let Some(sid) = session {
        // The OpenID clients it logged in end too (back-channel logout).
        crate::service::oauth::end_session_grants(state, audit, sid).await?;
        let mut tx = state.pool.begin().await?;
        sessions::revoke(&mut tx, audit, sid, "logout").await?;
        tx.commit().await?;
    }
    Ok(())
}

/// How a session started by `start_session` was earned.
#[derive(Debug, Clone, Copy)]
pub enum SessionKind {
    /// An OpenID Connect login (`auth.session_ttl_secs`).
    Oidc,
    /// HTTP Basic with a password on an XNAT path (`auth.basic_session_ttl_secs`,
    /// at most `auth.basic_sessions_per_user` live at once: the oldest end).
    Basic,
    /// An API key presented to a login route (the data tracker's
    /// `POST /api/v1/login/apikey`; `auth.session_ttl_secs`, ended with the
    /// key, never a recent login for `auth::reauth`).
    ApiKey(sessions::KeyBound),
}

/// Starts a session for a user who has just authenticated; `audit` acts as
/// that user. One transaction.
pub async fn start_session(
    state: &AppState,
    audit: &Audit,
    user_id: Uuid,
    kind: SessionKind,
    user_agent: Option<&str>,
) -> Result<NewSession> {
    let auth = &state.settings.auth;
    let mut tx = state.pool.begin().await?;
    let session = match kind {
        SessionKind::Oidc => {
            let s = sessions::create(&mut tx, audit, user_id, "oidc", auth.session_ttl_secs, user_agent).await?;
            // No second factor yet where one is required (a user with one
            // took the second step before this): enrolment only.
            if crate::service::mfa::must_enrol(state, user_id, false).await? {
                crate::store::mfa::enrollment_only(&mut tx, s.id).await?;
            }
            s
        }
        SessionKind::Basic => {
            let s = sessions::create(&mut tx, audit, user_id, "basic", auth.basic_session_ttl_secs, user_agent).await?;
            sessions::cap_basic(&mut tx, audit, user_id, auth.basic_sessions_per_user).await?;
            s
        }
        SessionKind::ApiKey(key) => {
            sessions::create_bound(&mut tx, audit, user_id, "apikey", auth.session_ttl_secs, user_agent, Some(key))
                .await?
        }
    };
    tx.commit().await?;
    Ok(session)
}
