//! The pages anyone may open: `/` (to the login page), login and logout,
//! "forgot password", the reset/welcome link and the verification link.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use secrecy::SecretString;
use serde::Deserialize;

use crate::audit::Audit;
use crate::auth::principal::{self, Caller};
use crate::domain::Error;
use crate::state::AppState;
use crate::store::email_tokens::Purpose;
use crate::web::{render, see_other, Chrome, Form, PageResult};

/// `GET /`: a browser (asking for HTML) goes to its account, or to the
/// login page; any other client gets XNAT's JSON root as before.
pub async fn home(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let wants_html = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if !wants_html {
        return crate::xnat::root().await;
    }
    if logged_in(&state, &req).await {
        see_other("/account")
    } else {
        see_other("/login")
    }
}

async fn logged_in(state: &AppState, req: &HttpRequest) -> bool {
    let presented = principal::credentials(req, &state.settings.auth.cookie_name());
    presented.cookie.is_some() && matches!(principal::resolve(state, presented, None).await, Ok(Some(_)))
}

/// Where to go after a login: a checked `return_to`, else `/account`.
fn safe_return_to(state: &AppState, raw: Option<&str>) -> String {
    raw.filter(|r| !r.is_empty())
        .and_then(|r| crate::auth::oidc::check_return_to(&state.settings, r).ok())
        .filter(|r| !r.starts_with("/logout"))
        .unwrap_or_else(|| "/account".to_string())
}

pub struct Provider {
    pub display_name: String,
    pub href: String,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    c: Chrome,
    username: String,
    return_to: String,
    error: Option<String>,
    providers: Vec<Provider>,
    /// Passkeys can be used here (the page offers a passkey login).
    passkeys: bool,
}

fn providers(state: &AppState, return_to: &str) -> Vec<Provider> {
    state
        .settings
        .oidc
        .providers
        .iter()
        .map(|p| Provider {
            display_name: if p.display_name.is_empty() { p.name.clone() } else { p.display_name.clone() },
            href: format!(
                "/api/v1/auth/oidc/{}/login?{}",
                crate::web::seg(&p.name),
                serde_urlencoded::to_string([("return_to", return_to)]).unwrap_or_default()
            ),
        })
        .collect()
}

#[derive(Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
    /// An OpenID client's hint of who is logging in (fills the name in).
    login_hint: Option<String>,
}

fn login_page(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    username: String,
    return_to: String,
    error: Option<String>,
) -> HttpResponse {
    let (c, cookie) = Chrome::public(state, req);
    let providers = providers(state, &return_to);
    let mut res = render(
        state,
        status,
        &LoginPage { c, username, return_to, error, providers, passkeys: crate::service::passkeys::available(state) },
    );
    if let Some(cookie) = cookie {
        let _ = res.add_cookie(&cookie);
    }
    res
}

/// `GET /login`.
pub async fn login_form(state: web::Data<AppState>, req: HttpRequest, q: web::Query<LoginQuery>) -> HttpResponse {
    let return_to = safe_return_to(&state, q.return_to.as_deref());
    let hint = q.login_hint.as_deref().filter(|h| h.len() <= 320).unwrap_or("").to_string();
    login_page(&state, &req, StatusCode::OK, hint, return_to, None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    return_to: Option<String>,
}

/// `POST /login`: the password login of the API (`service::auth`), ending
/// in a session cookie and a redirect; a refusal is said in words.
pub async fn login(state: web::Data<AppState>, req: HttpRequest, audit: Audit, form: Form<LoginForm>) -> HttpResponse {
    let f = form.0;
    let return_to = safe_return_to(&state, f.return_to.as_deref());
    let username = f.username.trim().to_string();
    if username.is_empty() || f.password.is_empty() {
        let msg = "Enter your username (or email address) and your password.".to_string();
        return login_page(&state, &req, StatusCode::BAD_REQUEST, username, return_to, Some(msg));
    }
    let ua = req.headers().get("user-agent").and_then(|v| v.to_str().ok());
    let password = SecretString::from(f.password);
    match crate::service::auth::page_login(&state, &audit, &username, password, ua).await {
        Ok(crate::service::auth::Login::Done(logged_in)) => logged_in_to(&state, logged_in, &return_to),
        Ok(crate::service::auth::Login::SecondFactor(ch)) => {
            mfa_page(&state, &req, StatusCode::OK, ch.mfa_token, return_to, None)
        }
        Err(e) => {
            let retry_after = match &e {
                Error::Locked { retry_after, .. } => Some(*retry_after),
                _ => None,
            };
            let (status, msg) = login_refusal(e);
            with_retry_after(login_page(&state, &req, status, username, return_to, Some(msg)), retry_after)
        }
    }
}

/// A completed login from another login form (a passkey): on to `return_to`.
pub fn complete_login(
    state: &AppState,
    logged_in: crate::service::auth::LoggedIn,
    return_to: Option<&str>,
) -> HttpResponse {
    logged_in_to(state, logged_in, &safe_return_to(state, return_to))
}

/// The login page again, saying why a login from another form was refused.
pub fn refused_login(state: &AppState, req: &HttpRequest, e: Error, return_to: Option<&str>) -> HttpResponse {
    let return_to = safe_return_to(state, return_to);
    if e.code() == "invalid_passkey" {
        let msg = crate::web::sentence(&e.to_string());
        return login_page(state, req, StatusCode::UNAUTHORIZED, String::new(), return_to, Some(msg));
    }
    let retry_after = match &e {
        Error::Locked { retry_after, .. } => Some(*retry_after),
        _ => None,
    };
    let (status, msg) = login_refusal(e);
    with_retry_after(login_page(state, req, status, String::new(), return_to, Some(msg)), retry_after)
}

/// A completed login: the session cookie, and on to `return_to`.
fn logged_in_to(state: &AppState, logged_in: crate::service::auth::LoggedIn, return_to: &str) -> HttpResponse {
    let ttl = i64::try_from(state.settings.auth.session_ttl_secs).unwrap_or(86_400);
    // A session that may only enrol a second factor goes to the enrolment.
    let to = if logged_in.mfa_enrollment_required { "/account/mfa" } else { return_to };
    let mut res = see_other(to);
    let _ = res.add_cookie(&crate::api::auth::session_cookie(state, logged_in.session.cookie_secret, ttl));
    res
}

#[derive(Template)]
#[template(path = "login_mfa.html")]
struct MfaPage {
    c: Chrome,
    mfa_token: String,
    return_to: String,
    error: Option<String>,
    passkeys: bool,
}

fn mfa_page(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    mfa_token: String,
    return_to: String,
    error: Option<String>,
) -> HttpResponse {
    let (c, cookie) = Chrome::public(state, req);
    let mut res = render(
        state,
        status,
        &MfaPage { c, mfa_token, return_to, error, passkeys: crate::service::passkeys::available(state) },
    );
    if let Some(cookie) = cookie {
        let _ = res.add_cookie(&cookie);
    }
    res
}

/// The second-step page of a login whose first step happened elsewhere (an
/// OpenID Connect callback).
pub fn second_factor_page(state: &AppState, req: &HttpRequest, mfa_token: String, return_to: String) -> HttpResponse {
    let return_to = safe_return_to(state, Some(&return_to));
    mfa_page(state, req, StatusCode::OK, mfa_token, return_to, None)
}

#[derive(Deserialize)]
pub struct MfaForm {
    #[serde(default)]
    mfa_token: String,
    #[serde(default)]
    code: String,
    /// A passkey's answer, filled in by the page's script.
    passkey: Option<String>,
    return_to: Option<String>,
}

/// `POST /login/mfa`: a login's second step (`service::mfa::second_step`).
pub async fn login_mfa(
    state: web::Data<AppState>,
    req: HttpRequest,
    audit: Audit,
    form: Form<MfaForm>,
) -> HttpResponse {
    let f = form.0;
    let return_to = safe_return_to(&state, f.return_to.as_deref());
    if let Err(e) = state.limits.login_ip.check(audit.client_ip.as_deref().unwrap_or("-")).await {
        let (status, msg) = login_refusal(e);
        return login_page(&state, &req, status, String::new(), return_to, Some(msg));
    }
    let ua = req.headers().get("user-agent").and_then(|v| v.to_str().ok());
    let proof = match f.passkey.filter(|p| !p.is_empty()) {
        Some(p) => crate::service::mfa::Proof::Passkey(p),
        None => crate::service::mfa::Proof::Code(SecretString::from(f.code)),
    };
    match crate::service::mfa::second_step(&state, &audit, &f.mfa_token, &proof, ua).await {
        Ok(logged_in) => logged_in_to(&state, logged_in, &return_to),
        Err(e) if e.code() == "invalid_passkey" => {
            let msg = "The passkey did not verify. Try again, or use a code.".to_string();
            mfa_page(&state, &req, StatusCode::UNAUTHORIZED, f.mfa_token, return_to, Some(msg))
        }
        Err(e) if e.code() == "invalid_code" => {
            let msg = "That code is wrong or was already used. Try the next one.".to_string();
            mfa_page(&state, &req, StatusCode::UNAUTHORIZED, f.mfa_token, return_to, Some(msg))
        }
        Err(e) if e.code() == "invalid_mfa_token" => {
            let msg = "The login took too long or was already finished: log in again.".to_string();
            login_page(&state, &req, StatusCode::UNAUTHORIZED, String::new(), return_to, Some(msg))
        }
        Err(e) => {
            let retry_after = match &e {
                Error::Locked { retry_after, .. } => Some(*retry_after),
                _ => None,
            };
            let (status, msg) = login_refusal(e);
            with_retry_after(login_page(&state, &req, status, String::new(), return_to, Some(msg)), retry_after)
        }
    }
}

/// A 429 page says when to come back, as the API's 429 does.
fn with_retry_after(mut res: HttpResponse, retry_after: Option<u64>) -> HttpResponse {
    if let Some(secs) = retry_after {
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&secs.to_string()) {
            res.headers_mut().insert(actix_web::http::header::RETRY_AFTER, v);
        }
    }
    res
}

/// What the login page says of a refused login.
fn login_refusal(e: Error) -> (StatusCode, String) {
    if let Error::Locked { code, retry_after, .. } = &e {
        let wait = if *retry_after >= 120 {
            format!("{} minutes", retry_after.div_ceil(60))
        } else {
            format!("{retry_after} seconds")
        };
        let what = if *code == "account_locked" {
            "Too many failed attempts: this account is locked for now."
        } else {
            "Too many login attempts."
        };
        return (StatusCode::TOO_MANY_REQUESTS, format!("{what} Try again in {wait}."));
    }
    if e.code() == crate::store::users::ACCOUNT_DISABLED {
        return (StatusCode::FORBIDDEN, "This account is disabled. Ask an administrator to enable it.".into());
    }
    if matches!(e, Error::Unauthenticated { .. }) {
        return (StatusCode::UNAUTHORIZED, "Wrong username or password.".into());
    }
    let api = crate::error::ApiError::from(e);
    (api.status, crate::web::sentence(&api.message))
}

/// `POST /logout`: ends this session.
pub async fn logout(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    _f: Form<crate::web::Button>,
) -> PageResult {
    crate::service::auth::logout(&state, &audit, caller.0.session_id).await?;
    let mut gone = crate::api::auth::session_cookie(&state, String::new(), 0);
    gone.make_removal();
    let mut res = see_other("/login?m=logged-out");
    let _ = res.add_cookie(&gone);
    Ok(res)
}

#[derive(Template)]
#[template(path = "forgot.html")]
struct ForgotPage {
    c: Chrome,
    sent: bool,
    error: Option<String>,
}

/// `GET /forgot-password`.
pub async fn forgot_form(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let (c, cookie) = Chrome::public(&state, &req);
    let mut res = render(&state, StatusCode::OK, &ForgotPage { c, sent: false, error: None });
    if let Some(cookie) = cookie {
        let _ = res.add_cookie(&cookie);
    }
    res
}

#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    email: String,
}

/// `POST /forgot-password`: the same answer whether or not the address is
/// an account's (`service::email::forgot_password`).
pub async fn forgot(
    state: web::Data<AppState>,
    req: HttpRequest,
    audit: Audit,
    form: Form<ForgotForm>,
) -> HttpResponse {
    let (c, _) = Chrome::public(&state, &req);
    match crate::service::email::forgot_password(&state, &audit, &form.0.email).await {
        Ok(()) => render(&state, StatusCode::OK, &ForgotPage { c, sent: true, error: None }),
        Err(e) => {
            let api = crate::error::ApiError::from(e);
            let msg = crate::web::sentence(&api.message);
            with_retry_after(
                render(&state, api.status, &ForgotPage { c, sent: false, error: Some(msg) }),
                api.retry_after,
            )
        }
    }
}

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage {
    c: Chrome,
    token: String,
    welcome: bool,
    username: String,
    policy: String,
    error: Option<String>,
    done: bool,
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

fn link_refused(state: &AppState, req: &HttpRequest) -> HttpResponse {
    let (c, _) = Chrome::public(state, req);
    render(
        state,
        StatusCode::BAD_REQUEST,
        &crate::web::MessagePage {
            c,
            title: "Link not valid".into(),
            message: "This link is invalid or has expired. Links work once and for a limited time: ask for a new one."
                .into(),
            link: Some(("/forgot-password".into(), "Ask for a new link".into())),
        },
    )
}

/// `GET /reset-password?token=`: the form of a reset or welcome link.
pub async fn reset_form(state: web::Data<AppState>, req: HttpRequest, q: web::Query<TokenQuery>) -> PageResult {
    let purposes = [Purpose::PasswordReset, Purpose::Welcome];
    let (user, purpose) = match crate::service::email::check_link(&state, &q.token, &purposes).await {
        Ok(found) => found,
        Err(Error::Invalid { .. }) => return Ok(link_refused(&state, &req)),
        Err(e) => return Err(e.into()),
    };
    let (c, cookie) = Chrome::public(&state, &req);
    let page = ResetPage {
        c,
        token: q.token.clone(),
        welcome: purpose == Purpose::Welcome,
        username: user.username,
        policy: policy_text(&state),
        error: None,
        done: false,
    };
    let mut res = render(&state, StatusCode::OK, &page);
    if let Some(cookie) = cookie {
        let _ = res.add_cookie(&cookie);
    }
    Ok(res)
}

/// The password policy, in words.
pub fn policy_text(state: &AppState) -> String {
    let p = &state.settings.password;
    format!(
        "At least {} characters (at most {}). A passphrase of several words is easiest. It must not be a common \
         password or contain your username or email address.",
        p.min_length, p.max_length
    )
}

#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

/// `POST /reset-password`: sets the password (`service::email::set_password_by_link`).
pub async fn reset(state: web::Data<AppState>, req: HttpRequest, audit: Audit, form: Form<ResetForm>) -> PageResult {
    let f = form.0;
    let purposes = [Purpose::PasswordReset, Purpose::Welcome];
    let (user, purpose) = match crate::service::email::check_link(&state, &f.token, &purposes).await {
        Ok(found) => found,
        Err(Error::Invalid { .. }) => return Ok(link_refused(&state, &req)),
        Err(e) => return Err(e.into()),
    };
    let (c, _) = Chrome::public(&state, &req);
    let mut page = ResetPage {
        c,
        token: f.token.clone(),
        welcome: purpose == Purpose::Welcome,
        username: user.username,
        policy: policy_text(&state),
        error: None,
        done: false,
    };
    if f.password != f.password_confirm {
        page.error = Some("The two passwords differ.".into());
        return Ok(render(&state, StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    match crate::service::email::set_password_by_link(&state, &audit, &f.token, SecretString::from(f.password)).await {
        Ok(_) => {
            page.done = true;
            page.token.clear();
            Ok(render(&state, StatusCode::OK, &page))
        }
        Err(e) if e.code() == "invalid_link" => Ok(link_refused(&state, &req)),
        Err(e) => {
            let api = crate::error::ApiError::from(e);
            page.error = Some(crate::web::sentence(&api.message));
            Ok(render(&state, api.status, &page))
        }
    }
}

#[derive(Template)]
#[template(path = "verify.html")]
struct VerifyPage {
    c: Chrome,
    token: String,
    done: bool,
}

/// `GET /verify-email?token=`: a button (a mail scanner's GET uses nothing up).
pub async fn verify_form(state: web::Data<AppState>, req: HttpRequest, q: web::Query<TokenQuery>) -> PageResult {
    match crate::service::email::check_link(&state, &q.token, &[Purpose::VerifyEmail]).await {
        Ok(_) => {}
        Err(Error::Invalid { .. }) => return Ok(link_refused(&state, &req)),
        Err(e) => return Err(e.into()),
    }
    let (c, cookie) = Chrome::public(&state, &req);
    let mut res = render(&state, StatusCode::OK, &VerifyPage { c, token: q.token.clone(), done: false });
    if let Some(cookie) = cookie {
        let _ = res.add_cookie(&cookie);
    }
    Ok(res)
}

#[derive(Deserialize)]
pub struct VerifyForm {
    #[serde(default)]
    token: String,
}

/// `POST /verify-email`.
pub async fn verify(state: web::Data<AppState>, req: HttpRequest, audit: Audit, form: Form<VerifyForm>) -> PageResult {
    match crate::service::email::verify_by_link(&state, &audit, &form.0.token).await {
        Ok(_) => {
            let (c, _) = Chrome::public(&state, &req);
            Ok(render(&state, StatusCode::OK, &VerifyPage { c, token: String::new(), done: true }))
        }
        Err(e) if e.code() == "invalid_link" => Ok(link_refused(&state, &req)),
        Err(e) => Err(e.into()),
    }
}
