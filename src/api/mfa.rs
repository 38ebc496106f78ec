//! Second factors: a user's own TOTP authenticator and recovery codes, and
//! an administrator's reset (`service::mfa`).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::api::resolve_me;
use crate::audit::Audit;
use crate::auth::principal::{Caller, Principal};
use crate::error::ApiResult;
use crate::http::Json;
use crate::service::mfa::{self, Status, TotpEnrolment};
use crate::service::passkeys;
use crate::state::AppState;
use crate::store::users;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    /// The 6-digit code the authenticator shows now.
    pub code: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Confirmed {
    pub enabled: bool,
    /// The first factor of an account brings 10 single-use recovery codes,
    /// shown only in this answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_codes: Option<Vec<String>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// Shown only in this answer; the previous codes no longer work.
    pub recovery_codes: Vec<String>,
}

/// Changing factors needs a recent login (`auth.reauth_secs`): a session
/// left open must not be enough to plant or drop a factor.
fn recent(state: &AppState, caller: &Principal) -> ApiResult<()> {
    if !crate::auth::reauth::is_recent(state, caller) {
        return Err(crate::auth::reauth::required().into());
    }
    // And, for a user who has a factor, that factor (a step-up).
    Ok(crate::auth::reauth::require_factor(caller)?)
}

/// A user's second factors (never a secret). The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/users/{username}/mfa", tag = "mfa", params(("username" = String, Path)),
    responses((status = 200, body = Status)))]
pub async fn status(state: web::Data<AppState>, caller: Caller, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, &path), false).await?;
    drop(conn);
    Ok(HttpResponse::Ok().json(mfa::status(&state, user.id).await?))
}

/// Starts a TOTP enrolment: a new secret (base32) and its `otpauth://` URI,
/// shown once; it counts after `.../totp/confirm`. One's own only; needs a
/// recent login.
#[utoipa::path(post, path = "/api/v1/users/{username}/mfa/totp", tag = "mfa", params(("username" = String, Path)),
    responses((status = 201, body = TotpEnrolment), (status = 409, body = crate::error::ErrorBody)))]
pub async fn begin_totp(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    _path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    recent(&state, &caller.0)?;
    let e = mfa::begin_totp(&state, &audit, caller.0.user_id, &caller.0.username).await?;
    Ok(HttpResponse::Created().insert_header(("Cache-Control", "no-store")).json(e))
}

/// Confirms the pending enrolment with a first code; the first factor of an
/// account answers its recovery codes (shown once). One's own only.
#[utoipa::path(post, path = "/api/v1/users/{username}/mfa/totp/confirm", tag = "mfa", params(("username" = String, Path)),
    request_body = CodeRequest, responses((status = 200, body = Confirmed), (status = 401, body = crate::error::ErrorBody)))]
pub async fn confirm_totp(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    _path: web::Path<String>,
    body: Json<CodeRequest>,
) -> ApiResult<HttpResponse> {
    // A recent login (never an API key alone), as for starting it.
    if !crate::auth::reauth::is_recent(&state, &caller.0) {
        return Err(crate::auth::reauth::required().into());
    }
    let c = &caller.0;
    let codes = mfa::confirm_totp(&state, &audit, c.user_id, &c.username, c.session_id, &body.code).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(Confirmed { enabled: true, recovery_codes: codes }))
}

/// Removes the authenticator (and, with the last factor, the recovery
/// codes). One's own only; needs a recent login.
#[utoipa::path(delete, path = "/api/v1/users/{username}/mfa/totp", tag = "mfa", params(("username" = String, Path)),
    responses((status = 204, description = "removed"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn remove_totp(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    _path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    recent(&state, &caller.0)?;
    mfa::remove_totp(&state, &audit, caller.0.user_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// New recovery codes (the old ones die), shown once. One's own only;
/// needs a recent login.
#[utoipa::path(post, path = "/api/v1/users/{username}/mfa/recovery-codes", tag = "mfa", params(("username" = String, Path)),
    responses((status = 201, body = RecoveryCodes), (status = 409, body = crate::error::ErrorBody)))]
pub async fn regenerate_codes(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    _path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    recent(&state, &caller.0)?;
    let recovery_codes = mfa::regenerate_recovery_codes(&state, &audit, caller.0.user_id).await?;
    Ok(HttpResponse::Created().insert_header(("Cache-Control", "no-store")).json(RecoveryCodes { recovery_codes }))
}

/// Removes every second factor of a user and ends all their sessions.
/// USER_MANAGEMENT (an administrator's factors: ADMIN).
#[utoipa::path(delete, path = "/api/v1/users/{username}/mfa", tag = "mfa", params(("username" = String, Path)),
    responses((status = 204, description = "reset"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn reset(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, &path), false).await?;
    drop(conn);
    mfa::reset(&state, &caller.0, &audit, user.id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The creation options of a new passkey (for `navigator.credentials.create`;
/// the user's other passkeys are excluded), bound to the caller's session.
/// One's own only; needs a recent login (and, with a factor, a step-up).
#[utoipa::path(post, path = "/api/v1/users/{username}/mfa/passkeys/options", tag = "mfa", params(("username" = String, Path)),
    responses((status = 200, body = crate::service::passkeys::Options), (status = 409, body = crate::error::ErrorBody)))]
pub async fn passkey_options(
    state: web::Data<AppState>,
    caller: Caller,
    _path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    recent(&state, &caller.0)?;
    let c = &caller.0;
    let options = passkeys::registration_options(&state, c.user_id, &c.username, &c.username, c.session_id).await?;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(options))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPasskeyRequest {
    /// A name to tell it from the user's other passkeys (1 to 64 characters).
    pub name: String,
    /// The authenticator's answer (`PublicKeyCredential.toJSON()`) to the options.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

/// Registers a passkey: the answer to the options of `.../passkeys/options`.
/// The account's first factor also answers its recovery codes (shown once).
/// One's own only.
#[utoipa::path(post, path = "/api/v1/users/{username}/mfa/passkeys", tag = "mfa", params(("username" = String, Path)),
    request_body = NewPasskeyRequest, responses((status = 201, body = passkeys::Registered),
    (status = 400, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn register_passkey(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    _path: web::Path<String>,
    body: Json<NewPasskeyRequest>,
) -> ApiResult<HttpResponse> {
    recent(&state, &caller.0)?;
    let c = &caller.0;
    let json = body.credential.to_string();
    let registered = passkeys::register(&state, &audit, c.user_id, c.session_id, &body.name, json.as_bytes()).await?;
    Ok(HttpResponse::Created().insert_header(("Cache-Control", "no-store")).json(registered))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyName {
    pub name: String,
}

/// Renames one of the user's passkeys. One's own only; needs a recent login.
#[utoipa::path(patch, path = "/api/v1/users/{username}/mfa/passkeys/{id}", tag = "mfa",
    params(("username" = String, Path), ("id" = uuid::Uuid, Path)), request_body = PasskeyName,
    responses((status = 200, body = crate::store::passkeys::Passkey), (status = 404, body = crate::error::ErrorBody)))]
pub async fn rename_passkey(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
    body: Json<PasskeyName>,
) -> ApiResult<HttpResponse> {
    if !crate::auth::reauth::is_recent(&state, &caller.0) {
        return Err(crate::auth::reauth::required().into());
    }
    let id = passkey_id(&path.1)?;
    Ok(HttpResponse::Ok().json(passkeys::rename(&state, &audit, caller.0.user_id, id, &body.name).await?))
}

/// Removes one of the user's passkeys (with the last factor, the recovery
/// codes go too). One's own only; needs a recent login and a step-up.
#[utoipa::path(delete, path = "/api/v1/users/{username}/mfa/passkeys/{id}", tag = "mfa",
    params(("username" = String, Path), ("id" = uuid::Uuid, Path)),
    responses((status = 204, description = "removed"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn remove_passkey(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    recent(&state, &caller.0)?;
    let id = passkey_id(&path.1)?;
    passkeys::remove(&state, &audit, caller.0.user_id, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

fn passkey_id(raw: &str) -> ApiResult<uuid::Uuid> {
    raw.parse().map_err(|_| crate::domain::Error::not_found("passkey_not_found", "no such passkey").into())
}
