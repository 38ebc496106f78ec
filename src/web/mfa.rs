//! Second-factor pages: `/account/mfa` (authenticator app with its QR code,
//! passkeys, recovery codes, the step-up) and the passkey steps of the
//! login page. Each write calls the service function the native API calls
//! (`service::mfa`, `service::passkeys`). The passkey ceremonies need the
//! page's script (`/assets/app.js`): it fetches the options from the
//! `.../options` routes below, asks the browser, and posts the answer in
//! an ordinary form.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use secrecy::SecretString;
use serde::Deserialize;
use uuid::Uuid;

use crate::audit::Audit;
use crate::auth::principal::{Caller, Principal};
use crate::service::mfa::{self, Proof, Status};
use crate::service::passkeys;
use crate::state::AppState;
use crate::web::account::{refusal, when, when_opt};
use crate::web::{back_to, render, Button, Chrome, Form, PageResult};

/// A pending authenticator-app enrolment, shown once.
struct Enrolment {
    secret: String,
    uri: String,
    /// The `otpauth://` URI as a QR code (an inline SVG made here).
    qr_svg: String,
}

#[derive(Template)]
#[template(path = "account/mfa.html")]
struct MfaPage {
    c: Chrome,
    status: Status,
    /// The login is recent enough to change factors (`auth.reauth_secs`).
    recent_login: bool,
    /// The user has a factor and has not used it lately: changes need a step-up.
    needs_step_up: bool,
    enrolment: Option<Enrolment>,
    recovery_codes: Option<Vec<String>>,
    error: Option<String>,
    notice: Option<&'static str>,
    reauth_minutes: u64,
}

#[derive(Default)]
struct Extra {
    enrolment: Option<Enrolment>,
    recovery_codes: Option<Vec<String>>,
    error: Option<String>,
    notice: Option<&'static str>,
}

async fn page(state: &AppState, req: &HttpRequest, caller: &Principal, status: StatusCode, extra: Extra) -> PageResult {
    let st = mfa::status(state, caller.user_id).await?;
    let page = MfaPage {
        c: Chrome::of(state, req, caller),
        needs_step_up: st.enabled && !caller.mfa_recent,
        status: st,
        recent_login: crate::auth::reauth::is_recent(state, caller),
        enrolment: extra.enrolment,
        recovery_codes: extra.recovery_codes,
        error: extra.error,
        notice: extra.notice,
        reauth_minutes: state.settings.auth.reauth_secs.div_ceil(60),
    };
    let mut res = render(state, status, &page);
    // Secrets and codes shown once must not stay in a cache.
    res.headers_mut()
        .insert(actix_web::http::header::CACHE_CONTROL, actix_web::http::header::HeaderValue::from_static("no-store"));
    Ok(res)
}

async fn refused(state: &AppState, req: &HttpRequest, caller: &Principal, e: crate::domain::Error) -> PageResult {
    let (status, msg) = refusal(e);
    page(state, req, caller, status, Extra { error: Some(msg), ..Extra::default() }).await
}

/// What changing a factor needs: a recent login, and (with a factor) a
/// recent use of it, as in the API.
fn may_change(state: &AppState, caller: &Principal) -> Result<(), crate::domain::Error> {
    if !crate::auth::reauth::is_recent(state, caller) {
        return Err(crate::auth::reauth::required());
    }
    crate::auth::reauth::require_factor(caller)
}

/// `GET /account/mfa`.
pub async fn mfa_page(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> PageResult {
    page(&state, &req, &caller.0, StatusCode::OK, Extra::default()).await
}

fn qr_svg(uri: &str) -> Result<String, crate::domain::Error> {
    let code =
        qrcode::QrCode::new(uri.as_bytes()).map_err(|e| crate::domain::Error::internal(anyhow::anyhow!("QR: {e}")))?;
    Ok(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).quiet_zone(true).build())
}

/// `POST /account/mfa/totp`: a new secret, shown once with its QR code.
pub async fn begin_totp(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    _f: Form<Button>,
) -> PageResult {
    let c = &caller.0;
    let started = async {
        may_change(&state, c)?;
        mfa::begin_totp(&state, &audit, c.user_id, &c.username).await
    }
    .await;
    match started {
        Ok(e) => {
            let enrolment = Enrolment { qr_svg: qr_svg(&e.otpauth_uri)?, secret: e.secret, uri: e.otpauth_uri };
            page(&state, &req, c, StatusCode::OK, Extra { enrolment: Some(enrolment), ..Extra::default() }).await
        }
        Err(e) => refused(&state, &req, c, e).await,
    }
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

/// `POST /account/mfa/totp/confirm`: the first code; the first factor of
/// an account shows its recovery codes.
pub async fn confirm_totp(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    form: Form<CodeForm>,
) -> PageResult {
    let c = &caller.0;
    if !crate::auth::reauth::is_recent(&state, c) {
        return refused(&state, &req, c, crate::auth::reauth::required()).await;
    }
    match mfa::confirm_totp(&state, &audit, c.user_id, &c.username, c.session_id, &form.0.code).await {
        Ok(codes) => {
            let extra =
                Extra { recovery_codes: codes, notice: Some("The authenticator app is set up."), ..Extra::default() };
            page(&state, &req, c, StatusCode::OK, extra).await
        }
        Err(e) if e.code() == "invalid_code" => {
            let msg = "That code is wrong or was already used: start again and type the code the app shows now.";
            page(&state, &req, c, StatusCode::UNAUTHORIZED, Extra { error: Some(msg.into()), ..Extra::default() }).await
        }
        Err(e) => refused(&state, &req, c, e).await,
    }
}

/// `POST /account/mfa/totp/remove`.
pub async fn remove_totp(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    _f: Form<Button>,
) -> PageResult {
    let c = &caller.0;
    let done = async {
        may_change(&state, c)?;
        mfa::remove_totp(&state, &audit, c.user_id).await
    }
    .await;
    match done {
        Ok(()) => Ok(back_to("/account/mfa", "totp-removed")),
        Err(e) => refused(&state, &req, c, e).await,
    }
}

/// `POST /account/mfa/recovery-codes`: new codes, shown once.
pub async fn regenerate_codes(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    _f: Form<Button>,
) -> PageResult {
    let c = &caller.0;
    let made = async {
        may_change(&state, c)?;
        mfa::regenerate_recovery_codes(&state, &audit, c.user_id).await
    }
    .await;
    match made {
        Ok(codes) => {
            page(&state, &req, c, StatusCode::OK, Extra { recovery_codes: Some(codes), ..Extra::default() }).await
        }
        Err(e) => refused(&state, &req, c, e).await,
    }
}

/// A JSON answer of the passkey `.../options` routes (read by the script).
fn options_answer(r: Result<passkeys::Options, crate::domain::Error>) -> HttpResponse {
    match r {
        Ok(o) => HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(o),
        Err(e) => actix_web::ResponseError::error_response(&crate::error::ApiError::from(e)),
    }
}

/// `POST /account/mfa/passkeys/options` (JSON, for the script).
pub async fn passkey_options(state: web::Data<AppState>, caller: Caller, _f: Form<Button>) -> HttpResponse {
    let c = &caller.0;
    let r = async {
        may_change(&state, c)?;
        passkeys::registration_options(&state, c.user_id, &c.username, &c.username, c.session_id).await
    }
    .await;
    options_answer(r)
}

#[derive(Deserialize)]
pub struct NewPasskeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    credential: String,
}

/// `POST /account/mfa/passkeys`: the browser's answer, filled in by the script.
pub async fn register_passkey(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    form: Form<NewPasskeyForm>,
) -> PageResult {
    let c = &caller.0;
    let f = form.0;
    let done = async {
        may_change(&state, c)?;
        passkeys::register(&state, &audit, c.user_id, c.session_id, &f.name, f.credential.as_bytes()).await
    }
    .await;
    match done {
        Ok(r) => {
            let extra = Extra {
                recovery_codes: r.recovery_codes,
                notice: Some("The passkey has been added."),
                ..Extra::default()
            };
            page(&state, &req, c, StatusCode::CREATED, extra).await
        }
        Err(e) => refused(&state, &req, c, e).await,
    }
}

/// `POST /account/mfa/passkeys/{id}/remove`.
pub async fn remove_passkey(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    _f: Form<Button>,
) -> PageResult {
    let c = &caller.0;
    let done = match (may_change(&state, c), path.parse::<Uuid>()) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(_)) => Err(crate::domain::Error::not_found("passkey_not_found", "no such passkey")),
        (Ok(()), Ok(id)) => passkeys::remove(&state, &audit, c.user_id, id).await,
    };
    match done {
        Ok(()) => Ok(back_to("/account/mfa", "passkey-removed")),
        Err(e) => refused(&state, &req, c, e).await,
    }
}

#[derive(Deserialize)]
pub struct StepUpForm {
    #[serde(default)]
    code: String,
    passkey: Option<String>,
}

fn proof(code: String, passkey: Option<String>) -> Proof {
    match passkey.filter(|p| !p.is_empty()) {
        Some(p) => Proof::Passkey(p),
        None => Proof::Code(SecretString::from(code)),
    }
}

/// `POST /account/mfa/step-up`: a code or a passkey now.
pub async fn step_up(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    form: Form<StepUpForm>,
) -> PageResult {
    let c = &caller.0;
    let f = form.0;
    match mfa::step_up(&state, &audit, c, &proof(f.code, f.passkey)).await {
        Ok(()) => Ok(back_to("/account/mfa", "stepped-up")),
        Err(e) if matches!(e.code(), "invalid_code" | "invalid_passkey") => {
            let msg = "That did not verify: try the next code, or your passkey again.";
            page(&state, &req, c, StatusCode::UNAUTHORIZED, Extra { error: Some(msg.into()), ..Extra::default() }).await
        }
        Err(e) => refused(&state, &req, c, e).await,
    }
}

/// `POST /account/mfa/step-up/options` (JSON, for the script).
pub async fn step_up_options(state: web::Data<AppState>, caller: Caller, _f: Form<Button>) -> HttpResponse {
    options_answer(mfa::step_up_passkey_options(&state, &caller.0).await)
}

/// `POST /login/passkey/options` (JSON, for the script): a username-less login.
pub async fn login_options(state: web::Data<AppState>, audit: Audit, _f: Form<Button>) -> HttpResponse {
    if let Err(e) = state.limits.login_ip.check(audit.client_ip.as_deref().unwrap_or("-")).await {
        return options_answer(Err(e));
    }
    options_answer(passkeys::assertion_options(&state, passkeys::Purpose::Login, None, None).await)
}

#[derive(Deserialize)]
pub struct PasskeyLoginForm {
    #[serde(default)]
    credential: String,
    return_to: Option<String>,
}

/// `POST /login/passkey`: a login with a passkey alone.
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    audit: Audit,
    form: Form<PasskeyLoginForm>,
) -> HttpResponse {
    let f = form.0;
    if let Err(e) = state.limits.login_ip.check(audit.client_ip.as_deref().unwrap_or("-")).await {
        return crate::web::public::refused_login(&state, &req, e, f.return_to.as_deref());
    }
    let ua = req.headers().get("user-agent").and_then(|v| v.to_str().ok());
    match passkeys::login(&state, &audit, f.credential.as_bytes(), ua).await {
        Ok(logged_in) => crate::web::public::complete_login(&state, logged_in, f.return_to.as_deref()),
        Err(e) if e.code() == "invalid_passkey" => {
            let e = crate::domain::Error::unauthorized("That passkey is not known here, or it did not verify.")
                .with_code("invalid_passkey");
            crate::web::public::refused_login(&state, &req, e, f.return_to.as_deref())
        }
        Err(e) => crate::web::public::refused_login(&state, &req, e, f.return_to.as_deref()),
    }
}

#[derive(Deserialize)]
pub struct MfaTokenForm {
    #[serde(default)]
    mfa_token: String,
}

/// `POST /login/mfa/passkey-options` (JSON, for the script): a passkey as
/// the second step of the login `mfa_token` began.
pub async fn second_step_options(state: web::Data<AppState>, audit: Audit, form: Form<MfaTokenForm>) -> HttpResponse {
    if let Err(e) = state.limits.login_ip.check(audit.client_ip.as_deref().unwrap_or("-")).await {
        return options_answer(Err(e));
    }
    options_answer(mfa::second_step_passkey_options(&state, &form.0.mfa_token).await)
}

/// For the template: a passkey's dates.
pub fn passkey_dates(p: &crate::store::passkeys::Passkey) -> (String, String) {
    (when(&p.created_at), when_opt(&p.last_used_at))
}
