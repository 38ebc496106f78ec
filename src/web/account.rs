//! Self-service pages (any logged-in user): profile, password, sessions,
//! API keys, linked identities, projects and invitations, own change log.
//! Each write calls the service function the native API calls.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use askama::Template;
use secrecy::SecretString;
use serde::Deserialize;
use uuid::Uuid;

use crate::audit::Audit;
use crate::auth::principal::Caller;
use crate::state::AppState;
use crate::store::{access_requests, api_keys, change_log, identities, projects, sessions, users};
use crate::web::{back_to, render, see_other, sentence, Button, Chrome, Form, PageResult};

/// A time as the pages show it (UTC, to the minute).
pub fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub fn when_opt(t: &Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.as_ref().map(when).unwrap_or_else(|| "never".into())
}

/// The message and status of a refused write, for the form that made it.
pub fn refusal(e: crate::domain::Error) -> (StatusCode, String) {
    if e.code() == "mfa_step_up_required" {
        let msg =
            "This needs your second factor: confirm it on the Sign-in factors page (/account/mfa), then try again.";
        return (StatusCode::FORBIDDEN, msg.into());
    }
    let api = crate::error::ApiError::from(e);
    (api.status, sentence(&api.message))
}

#[derive(Template)]
#[template(path = "account/profile.html")]
struct ProfilePage {
    c: Chrome,
    user: users::User,
    error: Option<String>,
}

async fn me(state: &AppState, caller: &Caller) -> Result<users::User, crate::web::PageError> {
    let mut conn = state.pool.acquire().await?;
    Ok(users::get_by_id(&mut conn, caller.0.user_id).await?)
}

/// `GET /account`: the caller's profile.
pub async fn profile(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> PageResult {
    let user = me(&state, &caller).await?;
    Ok(render(&state, StatusCode::OK, &ProfilePage { c: Chrome::of(&state, &req, &caller.0), user, error: None }))
}

#[derive(Deserialize)]
pub struct ProfileForm {
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    email: String,
}

/// `POST /account/profile`: names and email (`service::users::update_user`;
/// a changed email is unverified, and a verification link is mailed).
pub async fn save_profile(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    form: Form<ProfileForm>,
) -> PageResult {
    let f = form.0;
    let body = crate::service::users::UpdateUser {
        first_name: Some(f.first_name),
        last_name: Some(f.last_name),
        email: Some(f.email),
        ..Default::default()
    };
    let before = me(&state, &caller).await?;
    let name = caller.0.user_id.to_string();
    match crate::service::users::update_user(&state.pool, &caller.0, &audit, &name, body, None).await {
        Ok((user, _)) if user.email_key != before.email_key => {
            let sent = crate::service::email::send_verification(&state, &user).await?;
            Ok(back_to("/account", if sent { "saved-verify" } else { "saved" }))
        }
        Ok(_) => Ok(back_to("/account", "saved")),
        Err(e) => {
            let (status, msg) = refusal(e);
            let page = ProfilePage { c: Chrome::of(&state, &req, &caller.0), user: before, error: Some(msg) };
            Ok(render(&state, status, &page))
        }
    }
}

/// `POST /account/verify-email`: mails a new verification link.
pub async fn resend_verification(state: web::Data<AppState>, caller: Caller, _f: Form<Button>) -> PageResult {
    let user = me(&state, &caller).await?;
    crate::service::email::send_verification(&state, &user).await?;
    Ok(back_to("/account", "verify-sent"))
}

#[derive(Template)]
#[template(path = "account/password.html")]
struct PasswordPage {
    c: Chrome,
    policy: String,
    has_password: bool,
    error: Option<String>,
}

/// `GET /account/password`.
pub async fn password_form(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> PageResult {
    let user = me(&state, &caller).await?;
    let page = PasswordPage {
        c: Chrome::of(&state, &req, &caller.0),
        policy: crate::web::public::policy_text(&state),
        has_password: user.has_password,
        error: None,
    };
    Ok(render(&state, StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
}

/// `POST /account/password`: `service::users::change_password` (the current
/// password counts toward the lockout; the other sessions end).
pub async fn change_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    form: Form<PasswordForm>,
) -> PageResult {
    let f = form.0;
    let outcome = if f.new_password != f.confirm_password {
        Err((StatusCode::UNPROCESSABLE_ENTITY, "The two new passwords differ.".to_string()))
    } else {
        let body = crate::service::users::PasswordChange {
            current_password: Some(SecretString::from(f.current_password)),
            new_password: SecretString::from(f.new_password),
            revoke_api_keys: false,
            unlink_identities: false,
        };
        crate::service::users::change_password(&state, &caller.0, &audit, "me", body).await.map_err(refusal)
    };
    match outcome {
        Ok(()) => Ok(back_to("/account/password", "password-changed")),
        Err((status, msg)) => {
            let user = me(&state, &caller).await?;
            let page = PasswordPage {
                c: Chrome::of(&state, &req, &caller.0),
                policy: crate::web::public::policy_text(&state),
                has_password: user.has_password,
                error: Some(msg),
            };
            Ok(render(&state, status, &page))
        }
    }
}

#[derive(Template)]
#[template(path = "account/sessions.html")]
struct SessionsPage {
    c: Chrome,
    current: Option<Uuid>,
    sessions: Vec<sessions::SessionView>,
}

/// `GET /account/sessions`.
pub async fn sessions_page(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> PageResult {
    let mut conn = state.pool.acquire().await?;
    let list = sessions::list_active(&mut conn, caller.0.user_id).await?;
    let page = SessionsPage { c: Chrome::of(&state, &req, &caller.0), current: caller.0.session_id, sessions: list };
    Ok(render(&state, StatusCode::OK, &page))
}

/// `POST /account/sessions/{id}/revoke` (`service::sessions::revoke_one`);
/// ending the current session is a logout.
pub async fn revoke_session(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    _f: Form<Button>,
) -> PageResult {
    let id: Uuid =
        path.parse().map_err(|_| crate::domain::Error::not_found("session_not_found", "no such active session"))?;
    crate::service::sessions::revoke_one(&state, &caller.0, &audit, id).await?;
    if caller.0.session_id == Some(id) {
        return Ok(see_other("/login?m=logged-out"));
    }
    Ok(back_to("/account/sessions", "session-revoked"))
}

/// `POST /account/sessions/revoke-others`.
pub async fn revoke_other_sessions(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    _f: Form<Button>,
) -> PageResult {
    crate::service::sessions::revoke_others(&state, &caller.0, &audit).await?;
    Ok(back_to("/account/sessions", "others-revoked"))
}

#[derive(Template)]
#[template(path = "account/api_keys.html")]
struct KeysPage {
    c: Chrome,
    keys: Vec<api_keys::ApiKeyView>,
    /// The key just created: shown on this answer only.
    new_key: Option<String>,
    /// The login is not recent: creating a key asks for the password.
    needs_password: bool,
    error: Option<String>,
    name: String,
}

async fn keys_page(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    status: StatusCode,
    new_key: Option<String>,
    error: Option<String>,
    name: String,
) -> PageResult {
    let mut conn = state.pool.acquire().await?;
    let keys = api_keys::list(&mut conn, caller.0.user_id).await?;
    let page = KeysPage {
        c: Chrome::of(state, req, &caller.0),
        keys,
        new_key,
        needs_password: !crate::auth::reauth::is_recent(state, &caller.0),
        error,
        name,
    };
    Ok(render(state, status, &page))
}

/// `GET /account/api-keys`.
pub async fn api_keys_page(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> PageResult {
    // The key just created, once: only a key of this user's is shown.
    let fresh = req.cookie(NEW_KEY_COOKIE).map(|c| c.value().to_string()).filter(|k| !k.is_empty());
    let shown = match &fresh {
        Some(k) => owns_key(&state, &caller, k).await?.then(|| k.clone()),
        None => None,
    };
    let mut res = keys_page(&state, &req, &caller, StatusCode::OK, shown, None, String::new()).await?;
    if fresh.is_some() {
        let mut gone = new_key_cookie(&state, String::new(), 0);
        gone.make_removal();
        let _ = res.add_cookie(&gone);
    }
    Ok(res)
}

/// Whether `key` is one of the caller's live keys (a cookie planted by
/// someone else shows nothing).
async fn owns_key(state: &AppState, caller: &Caller, key: &str) -> Result<bool, crate::web::PageError> {
    let Some((prefix, _)) = crate::auth::tokens::parse_api_key(key) else { return Ok(false) };
    let mut conn = state.pool.acquire().await?;
    Ok(api_keys::list(&mut conn, caller.0.user_id).await?.iter().any(|k| k.prefix == prefix && k.revoked_at.is_none()))
}

#[derive(Deserialize)]
pub struct NewKeyForm {
    #[serde(default)]
    name: String,
    /// A date (`YYYY-MM-DD`): the key works until the end of that day (UTC).
    #[serde(default)]
    expires_at: String,
    #[serde(default)]
    current_password: String,
}

/// `POST /account/api-keys`: `service::api_keys::issue`; the key is on this
/// answer only (never stored, never shown again).
pub async fn create_api_key(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    form: Form<NewKeyForm>,
) -> PageResult {
    let f = form.0;
    let expires_at = match f.expires_at.trim() {
        "" => Ok(None),
        d => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(23, 59, 59))
            .map(|t| Some(t.and_utc()))
            .ok_or((
                StatusCode::UNPROCESSABLE_ENTITY,
                "The expiry date must be a date such as 2027-01-31.".to_string(),
            )),
    };
    let issued = match expires_at {
        Ok(expires_at) => {
            let new = crate::service::api_keys::NewKey {
                name: f.name.clone(),
                expires_at,
                current_password: Some(f.current_password).filter(|p| !p.is_empty()).map(SecretString::from),
                replace: false,
            };
            crate::service::api_keys::issue(&state, &caller.0, &audit, "me", new).await.map_err(refusal)
        }
        Err(e) => Err(e),
    };
    match issued {
        Ok((_, key)) => {
            // Post/Redirect/Get: the key rides to the next page in a cookie
            // that only that page reads, once (a reload issues nothing).
            let mut res = see_other("/account/api-keys");
            let _ = res.add_cookie(&new_key_cookie(&state, key, 120));
            Ok(res)
        }
        Err((status, msg)) => keys_page(&state, &req, &caller, status, None, Some(msg), f.name).await,
    }
}

const NEW_KEY_COOKIE: &str = "registrar_new_key";

fn new_key_cookie(state: &AppState, value: String, max_age: i64) -> actix_web::cookie::Cookie<'static> {
    actix_web::cookie::Cookie::build(NEW_KEY_COOKIE, value)
        .path("/account/api-keys")
        .http_only(true)
        .same_site(actix_web::cookie::SameSite::Strict)
        .secure(state.settings.auth.cookie_secure)
        .max_age(actix_web::cookie::time::Duration::seconds(max_age))
        .finish()
}

/// `POST /account/api-keys/{id}/revoke`.
pub async fn revoke_api_key(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    _f: Form<Button>,
) -> PageResult {
    let not_found = || crate::domain::Error::not_found("api_key_not_found", "no such active API key");
    let id: Uuid = path.parse().map_err(|_| not_found())?;
    crate::service::api_keys::revoke(&state.pool, &caller.0, &audit, caller.0.user_id, id).await?;
    Ok(back_to("/account/api-keys", "key-revoked"))
}

pub struct LinkOffer {
    display_name: String,
    href: String,
}

#[derive(Template)]
#[template(path = "account/identities.html")]
struct IdentitiesPage {
    c: Chrome,
    linked: Vec<identities::Identity>,
    offers: Vec<LinkOffer>,
    error: Option<String>,
}

async fn identities_page(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    status: StatusCode,
    error: Option<String>,
) -> PageResult {
    let mut conn = state.pool.acquire().await?;
    let linked = identities::of_user(&mut conn, caller.0.user_id).await?;
    let offers = state
        .settings
        .oidc
        .providers
        .iter()
        .filter(|p| !linked.iter().any(|l| l.provider == p.name))
        .map(|p| LinkOffer {
            display_name: if p.display_name.is_empty() { p.name.clone() } else { p.display_name.clone() },
            href: format!(
                "/api/v1/auth/oidc/{}/login?link=true&return_to=%2Faccount%2Fidentities%3Fm%3Dlinked",
                crate::web::seg(&p.name)
            ),
        })
        .collect();
    Ok(render(state, status, &IdentitiesPage { c: Chrome::of(state, req, &caller.0), linked, offers, error }))
}

/// `GET /account/identities`.
pub async fn identities_list(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> PageResult {
    identities_page(&state, &req, &caller, StatusCode::OK, None).await
}

/// `POST /account/identities/{provider}/unlink` (refused when it is the
/// account's last way in).
pub async fn unlink_identity(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    _f: Form<Button>,
) -> PageResult {
    match crate::service::oidc::unlink(&state.pool, &audit, caller.0.user_id, &path).await {
        Ok(()) => Ok(back_to("/account/identities", "unlinked")),
        Err(e) => {
            let (status, msg) = refusal(e);
            identities_page(&state, &req, &caller, status, Some(msg)).await
        }
    }
}

#[derive(Template)]
#[template(path = "account/projects.html")]
struct ProjectsPage {
    c: Chrome,
    projects: Vec<projects::ProjectWithLevel>,
    invitations: Vec<access_requests::AccessRequest>,
    requests: Vec<access_requests::AccessRequest>,
}

/// `GET /account/projects`: memberships, invitations to answer, own requests.
pub async fn projects_page(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> PageResult {
    let mut conn = state.pool.acquire().await?;
    let projects = projects::of_user(&mut conn, caller.0.user_id).await?;
    let open = access_requests::open_for_user(&mut conn, caller.0.user_id).await?;
    let (invitations, requests) = open.into_iter().partition(|r| r.kind == "invitation");
    let page = ProjectsPage { c: Chrome::of(&state, &req, &caller.0), projects, invitations, requests };
    Ok(render(&state, StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    decision: String,
}

/// `POST /account/invitations/{par_id}`: accept or decline
/// (`service::access_requests::answer`).
pub async fn answer_invitation(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    form: Form<DecisionForm>,
) -> PageResult {
    let accept = match form.0.decision.as_str() {
        "accept" => true,
        "decline" => false,
        _ => return Err(crate::web::PageError::bad_request("Choose accept or decline.")),
    };
    crate::service::access_requests::answer(&state.pool, &caller.0, &audit, &path, accept).await?;
    Ok(back_to("/account/projects", if accept { "accepted" } else { "declined" }))
}

pub struct LogRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub changes: String,
}

impl LogRow {
    pub fn of(e: &change_log::Entry) -> LogRow {
        LogRow {
            at: when(&e.at),
            actor: e.actor_username.clone().unwrap_or_else(|| "system".into()),
            action: e.action.clone(),
            subject: format!("{} {}", e.subject_type, e.subject_id),
            changes: serde_json::to_string_pretty(&e.changes).unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "account/log.html")]
struct LogPage {
    c: Chrome,
    rows: Vec<LogRow>,
}

/// `GET /account/log`: the newest 100 changes to the caller's account.
pub async fn log_page(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> PageResult {
    let f = change_log::LogFilter { limit: 100, ..Default::default() };
    let entries = change_log::about_user(&state.pool, caller.0.user_id, &f).await?;
    let rows = entries.iter().map(LogRow::of).collect();
    Ok(render(&state, StatusCode::OK, &LogPage { c: Chrome::of(&state, &req, &caller.0), rows }))
}

#[derive(Template)]
#[template(path = "account/applications.html")]
struct ApplicationsPage {
    c: Chrome,
    consents: Vec<crate::store::oauth::Consent>,
}

/// `GET /account/applications`: the applications the user allowed.
pub async fn applications(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> PageResult {
    let mut conn = state.pool.acquire().await?;
    let consents = crate::store::oauth::consents(&mut conn, caller.0.user_id).await?;
    Ok(render(&state, StatusCode::OK, &ApplicationsPage { c: Chrome::of(&state, &req, &caller.0), consents }))
}

/// `POST /account/applications/{client_id}/revoke`: withdraws a consent
/// (the application's access ends).
pub async fn revoke_application(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    _f: Form<Button>,
) -> PageResult {
    crate::service::oauth::revoke_consent(&state.pool, &audit, caller.0.user_id, &path).await?;
    Ok(back_to("/account/applications", "consent-revoked"))
}
