//! Password login, token refresh, logout.

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::audit::Audit;
use crate::auth::principal::Caller;
use crate::error::{ApiError, ApiResult};
use crate::http::Json;
use crate::state::AppState;
use crate::store::sessions::{self, Refreshed};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Username or email address (give this or `email`).
    pub username: Option<String>,
    /// Email address (give this or `username`).
    pub email: Option<String>,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(value_type = String)]
    pub refresh_token: SecretString,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub session_id: uuid::Uuid,
    /// Present (true) when the account must enrol a second factor before
    /// anything else (`mfa.required_for_roles`): the session can only do that.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mfa_enrollment_required: bool,
}

fn user_agent(req: &HttpRequest) -> Option<&str> {
    req.headers().get("user-agent").and_then(|v| v.to_str().ok())
}

pub fn session_cookie(state: &AppState, value: String, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build(state.settings.auth.cookie_name().into_owned(), value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.settings.auth.cookie_secure)
        .max_age(time::Duration::seconds(max_age_secs))
        .finish()
}

/// Logs in with a username (or email) and password. Public. The same 401
/// answers an unknown user, a wrong password and a disabled account; 429 with
/// Retry-After while the account is locked.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest, responses(
    (status = 200, body = TokenResponse), (status = 401, body = crate::error::ErrorBody),
    (status = 429, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    audit: Audit,
    body: Json<LoginRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let login = match (body.username, body.email) {
        (Some(name), None) | (None, Some(name)) => name,
        (None, None) => {
            return Err(ApiError::bad_request("missing_field", "`username` (or `email`) is required")
                .with_details(serde_json::json!({"field": "username"})))
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("invalid_field", "give `username` or `email`, not both")
                .with_details(serde_json::json!({"field": "email"})))
        }
    };
    let logged_in =
        match crate::service::auth::password_login(&state, &audit, &login, body.password, user_agent(&req)).await? {
            crate::service::auth::Login::Done(l) => l,
            crate::service::auth::Login::SecondFactor(challenge) => {
                return Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(challenge))
            }
        };
    Ok(token_answer(&state, logged_in))
}

/// The answer of a completed login: tokens and the session cookie.
fn token_answer(state: &AppState, logged_in: crate::service::auth::LoggedIn) -> HttpResponse {
    let enrol = logged_in.mfa_enrollment_required;
    let (s, access) = (logged_in.session, logged_in.access_token);
    let ttl = i64::try_from(state.settings.auth.session_ttl_secs).unwrap_or(86_400);
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .cookie(session_cookie(state, s.cookie_secret, ttl))
        .json(TokenResponse {
            access_token: access,
            refresh_token: s.refresh_token,
            token_type: "Bearer",
            expires_in: state.keys.access_ttl_secs,
            session_id: s.id,
            mfa_enrollment_required: enrol,
        })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaRequest {
    /// From the login's first step.
    pub mfa_token: String,
    /// A 6-digit TOTP code or a recovery code.
    #[schema(value_type = Option<String>)]
    pub code: Option<secrecy::SecretString>,
    /// Or a passkey's answer (`PublicKeyCredential.toJSON()`) to the
    /// options of `POST /api/v1/auth/mfa/passkey/options`.
    #[schema(value_type = Option<Object>)]
    pub passkey: Option<serde_json::Value>,
}

/// Exactly one of a code and a passkey's answer.
fn proof(code: Option<SecretString>, passkey: Option<serde_json::Value>) -> ApiResult<crate::service::mfa::Proof> {
    use crate::service::mfa::Proof;
    match (code, passkey) {
        (Some(code), None) => Ok(Proof::Code(code)),
        (None, Some(p)) => Ok(Proof::Passkey(p.to_string())),
        _ => Err(crate::domain::Error::invalid("code_or_passkey", "send either `code` or `passkey`").into()),
    }
}

/// A login's second step: the `mfa_token` of the first step and a code (a
/// TOTP code or a recovery code) or a passkey's answer. Public. A wrong
/// code is 401 `invalid_code`, a passkey that does not verify 401
/// `invalid_passkey`; both count toward the lockout. A spent or expired
/// `mfa_token` is 401 `invalid_mfa_token`.
#[utoipa::path(post, path = "/api/v1/auth/mfa", tag = "auth", request_body = MfaRequest, responses(
    (status = 200, body = TokenResponse), (status = 401, body = crate::error::ErrorBody),
    (status = 429, body = crate::error::ErrorBody)))]
pub async fn mfa(
    state: web::Data<AppState>,
    req: HttpRequest,
    audit: Audit,
    body: Json<MfaRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    state.limits.login_ip.check(audit.client_ip.as_deref().unwrap_or("-")).await?;
    let proof = proof(body.code, body.passkey)?;
    let logged_in = crate::service::mfa::second_step(&state, &audit, &body.mfa_token, &proof, user_agent(&req)).await?;
    Ok(token_answer(&state, logged_in))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaTokenRequest {
    /// From the login's first step.
    pub mfa_token: String,
}

/// The passkey options of a login's second step (for
/// `navigator.credentials.get`), bound to its `mfa_token`. Public.
#[utoipa::path(post, path = "/api/v1/auth/mfa/passkey/options", tag = "auth", request_body = MfaTokenRequest,
    responses((status = 200, body = crate::service::passkeys::Options), (status = 401, body = crate::error::ErrorBody)))]
pub async fn mfa_passkey_options(
    state: web::Data<AppState>,
    audit: Audit,
    body: Json<MfaTokenRequest>,
) -> ApiResult<HttpResponse> {
    state.limits.login_ip.check(audit.client_ip.as_deref().unwrap_or("-")).await?;
    let options = crate::service::mfa::second_step_passkey_options(&state, &body.mfa_token).await?;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(options))
}

/// The options of a passkey login (no username, no password: the passkey
/// names its user). Public; rate-limited like the login.
#[utoipa::path(post, path = "/api/v1/auth/passkey/options", tag = "auth",
    responses((status = 200, body = crate::service::passkeys::Options), (status = 409, body = crate::error::ErrorBody),
    (status = 429, body = crate::error::ErrorBody)))]
pub async fn passkey_options(state: web::Data<AppState>, audit: Audit) -> ApiResult<HttpResponse> {
    state.limits.login_ip.check(audit.client_ip.as_deref().unwrap_or("-")).await?;
    let purpose = crate::service::passkeys::Purpose::Login;
    let options = crate::service::passkeys::assertion_options(&state, purpose, None, None).await?;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(options))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyLoginRequest {
    /// The passkey's answer (`PublicKeyCredential.toJSON()`) to the options
    /// of `POST /api/v1/auth/passkey/options`.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

/// A login with a passkey alone: the usual token answer. The passkey
/// verified its user (PIN or biometric), so the session has its second
/// factor. Public. 401 `invalid_passkey` when it does not verify.
#[utoipa::path(post, path = "/api/v1/auth/passkey", tag = "auth", request_body = PasskeyLoginRequest, responses(
    (status = 200, body = TokenResponse), (status = 401, body = crate::error::ErrorBody),
    (status = 429, body = crate::error::ErrorBody)))]
pub async fn passkey_login(
    state: web::Data<AppState>,
    req: HttpRequest,
    audit: Audit,
    body: Json<PasskeyLoginRequest>,
) -> ApiResult<HttpResponse> {
    state.limits.login_ip.check(audit.client_ip.as_deref().unwrap_or("-")).await?;
    let json = body.credential.to_string();
    let logged_in = crate::service::passkeys::login(&state, &audit, json.as_bytes(), user_agent(&req)).await?;
    Ok(token_answer(&state, logged_in))
}

/// Trades a refresh token for a new access token and a new refresh token.
/// Public. Presenting an already used refresh token revokes the session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest, responses(
    (status = 200, body = TokenResponse), (status = 401, body = crate::error::ErrorBody)))]
pub async fn refresh(state: web::Data<AppState>, audit: Audit, body: Json<RefreshRequest>) -> ApiResult<HttpResponse> {
    use secrecy::ExposeSecret;
    state.limits.refresh_ip.check(audit.client_ip.as_deref().unwrap_or("-")).await?;
    let mut tx = state.pool.begin().await?;
    let outcome =
        sessions::refresh(&mut tx, &audit, body.refresh_token.expose_secret(), state.settings.auth.session_idle_secs)
            .await?;
    tx.commit().await?;
    match outcome {
        Refreshed::Ok { session_id, user_id, refresh_token } => {
            let access = state.keys.issue_access(user_id, session_id, chrono::Utc::now().timestamp())?;
            Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(TokenResponse {
                access_token: access,
                refresh_token,
                token_type: "Bearer",
                expires_in: state.keys.access_ttl_secs,
                session_id,
                // The session keeps what it may do; a refresh does not restate it.
                mfa_enrollment_required: false,
            }))
        }
        Refreshed::Invalid => {
            Err(ApiError::unauthorized("invalid or expired refresh token").with_code("invalid_refresh_token"))
        }
        Refreshed::Reused => Err(ApiError::unauthorized("refresh token already used: the session has been revoked")
            .with_code("refresh_token_reused")),
    }
}

/// Ends the caller's current session (its tokens and cookie stop working).
/// Any authenticated caller.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", responses((status = 204, description = "logged out")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn logout(state: web::Data<AppState>, caller: Caller, audit: Audit) -> ApiResult<HttpResponse> {
    crate::service::auth::logout(&state, &audit, caller.0.session_id).await?;
    let mut gone = session_cookie(&state, String::new(), 0);
    gone.make_removal();
    Ok(HttpResponse::NoContent().cookie(gone).finish())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpRequest {
    /// A 6-digit TOTP code or a recovery code.
    #[schema(value_type = Option<String>)]
    pub code: Option<SecretString>,
    /// Or a passkey's answer to the options of
    /// `POST /api/v1/auth/mfa/step-up/options`.
    #[schema(value_type = Option<Object>)]
    pub passkey: Option<serde_json::Value>,
}

/// A step-up: a second-factor code in the caller's session, after which
/// sensitive operations pass for `mfa.step_up_secs`. Authenticated (a
/// session). A wrong code is 401 `invalid_code` and counts toward the lockout.
#[utoipa::path(post, path = "/api/v1/auth/mfa/step-up", tag = "auth", request_body = StepUpRequest, responses(
    (status = 204, description = "stepped up"), (status = 401, body = crate::error::ErrorBody),
    (status = 429, body = crate::error::ErrorBody)))]
pub async fn step_up(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    body: Json<StepUpRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let proof = proof(body.code, body.passkey)?;
    crate::service::mfa::step_up(&state, &audit, &caller.0, &proof).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The passkey options of a step-up, bound to the caller's session.
/// Authenticated (a session).
#[utoipa::path(post, path = "/api/v1/auth/mfa/step-up/options", tag = "auth",
    responses((status = 200, body = crate::service::passkeys::Options), (status = 403, body = crate::error::ErrorBody)))]
pub async fn step_up_options(state: web::Data<AppState>, caller: Caller) -> ApiResult<HttpResponse> {
    let options = crate::service::mfa::step_up_passkey_options(&state, &caller.0).await?;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(options))
}
