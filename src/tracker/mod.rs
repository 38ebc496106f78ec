//! The data tracker's user module (SciLifeLab Data Centre's Data Tracker)
//! under `/api/v1/user` and `/api/v1/login`: its paths, bodies and status
//! codes, over the same service functions as the native API. Errors carry
//! registrar's JSON error body (the tracker's clients read only the status;
//! a value registrar refuses is 400 there, as the tracker answers).
//!
//! The tracker's model maps onto registrar's:
//! - a user is addressed by `_id`, registrar's user id (answered as `_id`,
//!   and as `id` the way later tracker versions render it); `name` is
//!   `first_name` and `last_name` joined by a space (split at the first);
//!   `affiliation`, `contact`, `orcid` and `url` are registrar's profile
//!   fields; `auth_ids` are the names the user logs in by (username, email,
//!   and `subject::provider` of each linked OpenID identity);
//! - each permission type is a registrar role (`TYPES`); an administrator
//!   holds every type; what a type implies is `domain::Permission::implies`;
//! - the one API key per user the tracker keeps is a registrar API key
//!   named `data-tracker`: issuing a new one revokes the previous one.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;
use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::audit::Audit;
use crate::auth::principal::{self, Caller, Principal};
use crate::domain::{full_name, split_full_name, Email, Permission};
use crate::error::{ApiError, ErrorBody};
use crate::service;
use crate::state::AppState;
use crate::store::{change_log, identities, users};

/// The tracker's permission types, in its order, with the registrar role
/// that grants each.
pub const TYPES: [(&str, &str); 6] = [
    ("DATA_EDIT", "DataEditor"),
    ("OWNERS_READ", "OwnersReader"),
    ("USER_ADD", "UserAdder"),
    ("USER_SEARCH", "UserSearcher"),
    ("USER_MANAGEMENT", "UserManager"),
    ("DATA_MANAGEMENT", "DataManager"),
];

/// The name of the API key the tracker's key routes issue and replace.
pub const KEY_NAME: &str = "data-tracker";

/// An error as the tracker answers it: registrar's body, and 400 for a
/// value registrar refuses (registrar's 422).
pub struct TrackerError(ApiError);

impl<E: Into<ApiError>> From<E> for TrackerError {
    fn from(e: E) -> TrackerError {
        let mut e = e.into();
        if e.status == StatusCode::UNPROCESSABLE_ENTITY {
            e.status = StatusCode::BAD_REQUEST;
        }
        TrackerError(e)
    }
}

impl std::fmt::Debug for TrackerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for TrackerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl ResponseError for TrackerError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }
    fn error_response(&self) -> HttpResponse {
        self.0.error_response()
    }
}

type TResult<T> = Result<T, TrackerError>;

fn bad(code: &'static str, message: impl Into<String>) -> TrackerError {
    ApiError::bad_request(code, message).into()
}

fn prohibited(field: &str) -> TrackerError {
    ApiError::forbidden(format!("{field} may not be changed here")).into()
}

// ---------------------------------------------------------------- shapes

/// A user as the tracker shows one.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TrackerUser {
    #[serde(rename = "_id")]
    #[schema(rename = "_id")]
    pub underscore_id: String,
    /// The same as `_id` (later tracker versions answer `id`).
    pub id: String,
    pub affiliation: String,
    /// Left out of lists for callers without USER_MANAGEMENT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_ids: Option<Vec<String>>,
    pub email: String,
    pub contact: String,
    pub name: String,
    pub orcid: String,
    /// Left out of lists for callers without USER_MANAGEMENT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<&'static str>>,
    pub url: String,
}

/// `{"users": [...]}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TrackerUsers {
    pub users: Vec<TrackerUser>,
}

/// `{"user": {...}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OneTrackerUser {
    pub user: TrackerUser,
}

/// The permission types `user` holds: every one for an administrator,
/// else those one of their roles grants (built-in or custom; `held` is
/// what their roles grant).
pub fn types_of(user: &users::User, held: &[Permission]) -> Vec<&'static str> {
    TYPES
        .iter()
        .filter(|(t, _)| user.admin() || Permission::from_name(t).is_some_and(|p| held.contains(&p)))
        .map(|(t, _)| *t)
        .collect()
}

fn auth_ids(user: &users::User, linked: &[(Uuid, String, String)]) -> Vec<String> {
    let mut out = vec![user.username.clone(), user.email.clone()];
    out.extend(linked.iter().filter(|(u, _, _)| *u == user.id).map(|(_, p, s)| format!("{s}::{p}")));
    out
}

fn user_out(state: &AppState, user: &users::User, linked: &[(Uuid, String, String)], full: bool) -> TrackerUser {
    TrackerUser {
        underscore_id: user.id.to_string(),
        id: user.id.to_string(),
        affiliation: user.affiliation.clone(),
        auth_ids: full.then(|| auth_ids(user, linked)),
        email: user.email.clone(),
        contact: user.contact.clone(),
        name: full_name(&user.first_name, &user.last_name),
        orcid: user.orcid.clone(),
        permissions: full.then(|| types_of(user, &state.role_permissions.of(&user.roles))),
        url: user.url.clone(),
    }
}

async fn one_user(state: &AppState, user: &users::User) -> TResult<TrackerUser> {
    let linked = identities::subjects_of(&state.pool, &[user.id]).await?;
    Ok(user_out(state, user, &linked, true))
}

/// The user a `{username}` segment of a tracker route names: a user id
/// (or `me`); anything else names nobody (404, as the tracker answers).
fn target_id(caller: &Principal, raw: &str) -> TResult<Uuid> {
    if raw == crate::domain::ME {
        return Ok(caller.user_id);
    }
    crate::domain::user_id_in(raw)
        .ok_or_else(|| ApiError::not_found("user_not_found", format!("no user with id '{raw}'")).into())
}

// ---------------------------------------------------------------- input

/// The fields a tracker request may send for a user, checked the way the
/// tracker checks them: unknown fields 400; fields that may not change
/// here 403 unless sent unchanged (clients send whole objects back); every
/// value a string (`permissions` a list of known types, no repeats).
#[derive(Default)]
struct UserInput {
    email: Option<String>,
    name: Option<String>,
    affiliation: Option<String>,
    contact: Option<String>,
    orcid: Option<String>,
    url: Option<String>,
    permissions: Option<Vec<String>>,
}

/// Which fields a route lets change.
#[derive(Clone, Copy, PartialEq)]
enum Seat {
    /// `POST /api/v1/user`.
    Add,
    /// `PATCH /api/v1/user/me`: no email, no permissions.
    Own,
    /// `PATCH /api/v1/user/{id}` (USER_MANAGEMENT).
    Manage,
}

fn string_of(key: &str, v: &Value) -> TResult<String> {
    v.as_str().map(str::to_string).ok_or_else(|| bad("invalid_field", format!("{key} must be a string")))
}

fn read_input(body: &Value, seat: Seat, current: Option<(&TrackerUser, &[&str])>) -> TResult<UserInput> {
    let Some(fields) = body.get("user").and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        return Err(bad("user_required", "give the user's fields as a non-empty object under \"user\""));
    };
    if body.as_object().is_some_and(|b| b.len() > 1) {
        return Err(bad("unknown_field", "only \"user\" may be given"));
    }
    let unchanged = |key: &str, v: &Value| -> bool {
        let Some((now, types)) = current else { return false };
        match key {
            "_id" | "id" => v.as_str() == Some(now.id.as_str()),
            "email" => v.as_str() == Some(now.email.as_str()),
            "auth_ids" => now.auth_ids.as_ref().is_some_and(|ids| v == &json!(ids)),
            "permissions" => {
                v.as_array().is_some_and(|l| l.len() == types.len() && types.iter().all(|t| l.iter().any(|x| x == t)))
            }
            _ => false,
        }
    };
    let mut input = UserInput::default();
    for (key, v) in fields {
        let locked = match key.as_str() {
            "_id" | "id" | "api_key" | "api_salt" | "auth_ids" => true,
            "email" | "permissions" => seat == Seat::Own,
            "name" | "affiliation" | "contact" | "orcid" | "url" => false,
            other => return Err(bad("unknown_field", format!("unknown field '{other}'"))),
        };
        if locked {
            if unchanged(key, v) {
                continue;
            }
            return Err(prohibited(key));
        }
        match key.as_str() {
            "email" => input.email = Some(string_of(key, v)?),
            "name" => input.name = Some(string_of(key, v)?),
            "affiliation" => input.affiliation = Some(string_of(key, v)?),
            "contact" => input.contact = Some(string_of(key, v)?),
            "orcid" => input.orcid = Some(string_of(key, v)?),
            "url" => input.url = Some(string_of(key, v)?),
            _ => input.permissions = Some(permission_list(v)?),
        }
    }
    Ok(input)
}

fn permission_list(v: &Value) -> TResult<Vec<String>> {
    let list = v.as_array().ok_or_else(|| bad("invalid_permissions", "permissions must be a list"))?;
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for p in list {
        let p = p.as_str().filter(|p| TYPES.iter().any(|(t, _)| t == p)).ok_or_else(|| {
            bad("invalid_permissions", "an unknown permission type; see GET /api/v1/user/permissions")
        })?;
        if out.iter().any(|o| o == p) {
            return Err(bad("invalid_permissions", "a permission type is given twice"));
        }
        out.push(p.to_string());
    }
    Ok(out)
}

fn roles_for(types: &[String]) -> Vec<String> {
    TYPES.iter().filter(|(t, _)| types.iter().any(|x| x == t)).map(|(_, r)| r.to_string()).collect()
}

// ---------------------------------------------------------------- login

/// `GET /api/v1/login`: the ways in. Public.
#[utoipa::path(get, path = "/api/v1/login", tag = "data-tracker",
    responses((status = 200, description = "`{\"types\": [\"apikey\", \"oidc\"]}` (`oidc` when a provider is configured)", body = Object)))]
pub async fn login_types(state: web::Data<AppState>) -> HttpResponse {
    let mut types = vec!["apikey"];
    if !state.settings.oidc.providers.is_empty() {
        types.push("oidc");
    }
    HttpResponse::Ok().json(json!({ "types": types }))
}

/// `GET /api/v1/login/oidc`: each configured provider and its login path. Public.
#[utoipa::path(get, path = "/api/v1/login/oidc", tag = "data-tracker",
    responses((status = 200, description = "`{provider: login path}`", body = Object)))]
pub async fn oidc_types(state: web::Data<AppState>) -> HttpResponse {
    let map: Map<String, Value> = state
        .settings
        .oidc
        .providers
        .iter()
        .map(|p| (p.name.clone(), Value::String(format!("/api/v1/login/oidc/{}", p.name))))
        .collect();
    HttpResponse::Ok().json(map)
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
pub struct OidcQuery {
    /// Where the browser goes after the login (a path here or a URL on an
    /// allowed origin; `auth.allowed_return_origins`).
    pub origin: Option<String>,
}

/// `GET /api/v1/login/oidc/{name}`: starts the provider's login, registrar's
/// own (`/api/v1/auth/oidc/{name}/login`), returning to `origin`. Public.
#[utoipa::path(get, path = "/api/v1/login/oidc/{name}", tag = "data-tracker", params(("name" = String, Path), OidcQuery),
    responses((status = 302, description = "to registrar's OpenID Connect login"), (status = 404, body = ErrorBody)))]
pub async fn oidc_login(
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: web::Query<OidcQuery>,
) -> TResult<HttpResponse> {
    let Some(p) = state.settings.oidc.providers.iter().find(|p| p.name == *path) else {
        return Err(
            ApiError::not_found("provider_not_found", format!("no OpenID Connect provider named '{path}'")).into()
        );
    };
    let mut to = format!("/api/v1/auth/oidc/{}/login", p.name);
    if let Some(origin) = q.origin.as_deref() {
        let encoded = percent_encoding::utf8_percent_encode(origin, percent_encoding::NON_ALPHANUMERIC);
        to.push_str(&format!("?return_to={encoded}"));
    }
    Ok(HttpResponse::Found().insert_header((actix_web::http::header::LOCATION, to)).finish())
}

/// `POST /api/v1/login/apikey`: `{"api-user": <username, email or id>,
/// "api-key": <key>}` starts a browser session (cookie). The session ends
/// with the key, never outlives it, and is not a recent login (it cannot
/// mint keys or link identities without the password). Public.
#[utoipa::path(post, path = "/api/v1/login/apikey", tag = "data-tracker",
    request_body(content = Object, description = "`{\"api-user\": ..., \"api-key\": ...}`"),
    responses((status = 200, description = "no body: logged in (session cookie)"), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody)))]
pub async fn key_login(
    state: web::Data<AppState>,
    req: HttpRequest,
    audit: Audit,
    body: web::Json<Value>,
) -> TResult<HttpResponse> {
    let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(user), Some(key)) = (field("api-user"), field("api-key")) else {
        return Err(bad("credentials_required", "give \"api-user\" and \"api-key\""));
    };
    if user.len() > 320 || key.len() > 256 {
        return Err(ApiError::unauthorized("invalid or expired credentials").into());
    }
    let presented = principal::Presented {
        cookie: None,
        header: principal::Credentials::ApiKey { user, key: secrecy::SecretString::from(key) },
    };
    let caller = principal::resolve(&state, presented, audit.client_ip.clone())
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or expired credentials"))?;
    let key_id = caller.api_key_id.ok_or_else(|| ApiError::unauthorized("invalid or expired credentials"))?;
    let bound = crate::store::sessions::KeyBound { key_id, expires_at: caller.expires_at };
    let as_user = audit.clone().as_user(caller.user_id, &caller.username);
    let ua = req.headers().get(actix_web::http::header::USER_AGENT).and_then(|v| v.to_str().ok());
    let session =
        service::auth::start_session(&state, &as_user, caller.user_id, service::auth::SessionKind::ApiKey(bound), ua)
            .await?;
    let ttl = i64::try_from(state.settings.auth.session_ttl_secs).unwrap_or(86_400);
    let ttl = caller.expires_at.map_or(ttl, |e| ttl.min((e - Utc::now()).num_seconds().max(1)));
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .cookie(crate::api::auth::session_cookie(&state, session.cookie_secret, ttl))
        .finish())
}

/// `GET /api/v1/logout`: ends the caller's browser session, if any, and
/// clears its cookie. Public (a visitor without a session gets 200 too);
/// refused from another site (403 `cross_site_request`).
#[utoipa::path(get, path = "/api/v1/logout", tag = "data-tracker", responses((status = 200, description = "no body: logged out")))]
pub async fn logout(state: web::Data<AppState>, req: HttpRequest, audit: Audit) -> TResult<HttpResponse> {
    // A GET that ends a session: never on another site's behalf (a link or
    // an image elsewhere must not log anyone out).
    if crate::auth::access::cross_site(&req, &state.settings.public_url) {
        return Err(ApiError::forbidden("a cross-site logout is refused").with_code("cross_site_request").into());
    }
    let cookie_name = state.settings.auth.cookie_name();
    if let Some(cookie) = req.cookie(&cookie_name) {
        let presented =
            principal::Presented { cookie: Some(cookie.value().to_string()), header: principal::Credentials::None };
        if let Ok(Some(p)) = principal::resolve(&state, presented, None).await {
            if let Some(sid) = p.session_id {
                let as_user = audit.clone().as_user(p.user_id, &p.username);
                let mut tx = state.pool.begin().await?;
                crate::store::sessions::revoke(&mut tx, &as_user, sid, "logout").await?;
                tx.commit().await?;
            }
        }
    }
    let mut gone = crate::api::auth::session_cookie(&state, String::new(), 0);
    gone.make_removal();
    Ok(HttpResponse::Ok().cookie(gone).finish())
}

// ---------------------------------------------------------------- users

/// `GET /api/v1/user/permissions`: the permission types. Public.
#[utoipa::path(get, path = "/api/v1/user/permissions", tag = "data-tracker",
    responses((status = 200, description = "`{\"permissions\": [...]}`", body = Object)))]
pub async fn permission_types() -> HttpResponse {
    let list: Vec<&str> = TYPES.iter().map(|(t, _)| *t).collect();
    HttpResponse::Ok().json(json!({ "permissions": list }))
}

/// `GET /api/v1/user`: every user, `{"users": [...]}`. USER_SEARCH;
/// `auth_ids` and `permissions` only for USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/user", tag = "data-tracker",
    responses((status = 200, body = TrackerUsers)))]
pub async fn list(caller: Caller, state: web::Data<AppState>) -> TResult<HttpResponse> {
    let filter = users::ListFilter { limit: i64::MAX, ..Default::default() };
    let all = state.read(async |c| users::list(c, &filter).await).await?;
    let full = caller.0.has(Permission::UserManagement);
    let linked = if full {
        identities::subjects_of(&state.pool, &all.iter().map(|u| u.id).collect::<Vec<_>>()).await?
    } else {
        Vec::new()
    };
    let users = all.iter().map(|u| user_out(&state, u, &linked, full)).collect();
    Ok(HttpResponse::Ok().json(TrackerUsers { users }))
}

/// `POST /api/v1/user`: adds a user, `{"user": {"email": ..., ...}}`; the
/// username comes from the email. Answers `{"_id": ..., "id": ...}`.
/// USER_ADD; giving `permissions` needs USER_MANAGEMENT.
#[utoipa::path(post, path = "/api/v1/user", tag = "data-tracker", request_body(content = Object, description = "`{\"user\": {...}}`"),
    responses((status = 200, description = "`{\"_id\": ..., \"id\": ...}`", body = Object), (status = 400, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add(
    caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    body: web::Json<Value>,
) -> TResult<HttpResponse> {
    let input = read_input(&body, Seat::Add, None)?;
    let Some(email) = input.email else {
        return Err(bad("email_required", "a user needs an email address"));
    };
    let roles = input.permissions.as_deref().map(roles_for).unwrap_or_default();
    if !roles.is_empty() && !caller.0.has(Permission::UserManagement) {
        return Err(ApiError::forbidden("giving permissions needs USER_MANAGEMENT").into());
    }
    let (first_name, last_name) = split_full_name(input.name.as_deref().unwrap_or(""));
    let mut tx = state.pool.begin().await?;
    let parsed = Email::parse(&email)?;
    let username = service::users::unique_username(&mut tx, None, &parsed).await?;
    let create = service::users::CreateUser {
        username: username.as_str().to_string(),
        email,
        first_name,
        last_name,
        affiliation: input.affiliation.unwrap_or_default(),
        contact: input.contact.unwrap_or_default(),
        orcid: input.orcid.unwrap_or_default(),
        url: input.url.unwrap_or_default(),
        password: None,
        enabled: true,
        verified: false,
        admin: false,
        roles,
    };
    let user = service::users::create_user_in(&mut tx, &state.hasher, &caller.0, &audit, create).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(json!({ "_id": user.id, "id": user.id })))
}

/// `GET /api/v1/user/me`: the caller, `{"user": {...}}`; a visitor who is
/// not logged in gets the same fields, empty. Public.
#[utoipa::path(get, path = "/api/v1/user/me", tag = "data-tracker",
    responses((status = 200, body = OneTrackerUser)))]
pub async fn me(state: web::Data<AppState>, req: HttpRequest) -> TResult<HttpResponse> {
    let presented = principal::credentials(&req, &state.settings.auth.cookie_name());
    // Whoever cannot be told apart from a visitor is shown as one (the
    // tracker answers this route to everyone).
    let found = principal::resolve(&state, presented, crate::audit::client_ip(&req)).await.ok().flatten();
    let Some(caller) = found else {
        let empty = json!({"_id": "", "id": "", "affiliation": "", "auth_ids": [], "email": "", "contact": "",
                           "name": "", "orcid": "", "permissions": [], "url": ""});
        return Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(json!({ "user": empty })));
    };
    let user = one_user(&state, &caller.user).await?;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(OneTrackerUser { user }))
}

/// Applies a checked input to the user `name` in one transaction: the
/// profile through `service::users::update_user_in`, the permission types
/// through the role rules (`service::users::apply_roles_in`).
async fn apply(
    state: &AppState,
    caller: &Principal,
    audit: &Audit,
    target: &users::User,
    input: UserInput,
) -> TResult<()> {
    let name = target.id.to_string();
    let (first_name, last_name) = match input.name.as_deref() {
        Some(full) => {
            let (f, l) = split_full_name(full);
            (Some(f), Some(l))
        }
        None => (None, None),
    };
    let patch = service::users::UpdateUser {
        email: input.email,
        first_name,
        last_name,
        affiliation: input.affiliation,
        contact: input.contact,
        orcid: input.orcid,
        url: input.url,
        ..Default::default()
    };
    let mut tx = state.pool.begin().await?;
    service::users::update_user_in(&mut tx, caller, audit, &name, patch, None).await?;
    if let Some(wanted) = input.permissions {
        let held = types_of(target, &state.role_permissions.of(&target.roles));
        if !(target.admin() && wanted.len() == held.len() && held.iter().all(|h| wanted.iter().any(|w| w == h))) {
            let now: Vec<String> =
                TYPES.iter().filter(|(_, r)| target.roles.iter().any(|x| x == r)).map(|(t, _)| t.to_string()).collect();
            let grant: Vec<String> = wanted.iter().filter(|w| !now.contains(w)).cloned().collect();
            let drop: Vec<String> = now.iter().filter(|n| !wanted.contains(n)).cloned().collect();
            for (list, on) in [(grant, true), (drop, false)] {
                if list.is_empty() {
                    continue;
                }
                let (_, items) =
                    service::users::apply_roles_in(&mut tx, caller, audit, &name, &roles_for(&list), on).await?;
                if let Some(e) = items.into_iter().find_map(|i| i.into_error()) {
                    return Err(e.into());
                }
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Both edits: the body checked against `target` as it is now, then applied.
async fn edit(
    state: &AppState,
    caller: &Principal,
    audit: &Audit,
    target: &users::User,
    body: &Value,
    seat: Seat,
) -> TResult<HttpResponse> {
    let now = one_user(state, target).await?;
    let types = types_of(target, &state.role_permissions.of(&target.roles));
    let input = read_input(body, seat, Some((&now, &types)))?;
    apply(state, caller, audit, target, input).await?;
    Ok(HttpResponse::Ok().finish())
}

/// `PATCH /api/v1/user/me`: the caller's own `name`, `affiliation`,
/// `contact`, `orcid` and `url` (`{"user": {...}}`); email and permissions
/// 403 unless unchanged. Any logged-in user.
#[utoipa::path(patch, path = "/api/v1/user/me", tag = "data-tracker", request_body(content = Object, description = "`{\"user\": {...}}`"),
    responses((status = 200, description = "no body: saved"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn update_me(
    caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    body: web::Json<Value>,
) -> TResult<HttpResponse> {
    edit(&state, &caller.0, &audit, &caller.0.user, &body, Seat::Own).await
}

async fn load(state: &AppState, caller: &Principal, raw: &str) -> TResult<users::User> {
    let id = target_id(caller, raw)?;
    let mut conn = state.pool.acquire().await?;
    Ok(users::get(&mut conn, &id.to_string(), false).await?)
}

/// `GET /api/v1/user/{id}`: one user, `{"user": {...}}`. USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/user/{username}", tag = "data-tracker", params(("username" = String, Path, description = "the user's id")),
    responses((status = 200, body = OneTrackerUser), (status = 404, body = ErrorBody)))]
pub async fn read(caller: Caller, state: web::Data<AppState>, path: web::Path<String>) -> TResult<HttpResponse> {
    let user = load(&state, &caller.0, &path).await?;
    Ok(HttpResponse::Ok().json(OneTrackerUser { user: one_user(&state, &user).await? }))
}

/// `PATCH /api/v1/user/{id}`: a user's fields and permission types
/// (`{"user": {...}}`). USER_MANAGEMENT; an administrator's account only by
/// an administrator; nobody changes their own permissions.
#[utoipa::path(patch, path = "/api/v1/user/{username}", tag = "data-tracker", params(("username" = String, Path, description = "the user's id")),
    request_body(content = Object, description = "`{\"user\": {...}}`"),
    responses((status = 200, description = "no body: saved"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update(
    caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> TResult<HttpResponse> {
    let target = load(&state, &caller.0, &path).await?;
    edit(&state, &caller.0, &audit, &target, &body, Seat::Manage).await
}

/// `DELETE /api/v1/user/{id}`. USER_MANAGEMENT; never one's own account.
#[utoipa::path(delete, path = "/api/v1/user/{username}", tag = "data-tracker", params(("username" = String, Path, description = "the user's id")),
    responses((status = 200, description = "no body: deleted"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    path: web::Path<String>,
) -> TResult<HttpResponse> {
    let id = target_id(&caller.0, &path)?;
    let mut tx = state.pool.begin().await?;
    service::users::delete_user_in(&mut tx, &state.role_permissions, &caller.0, &audit, &id.to_string()).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().finish())
}

/// `POST /api/v1/user/{id}/apikey`: a new API key for the user (replacing
/// the one this route issued before), `{"key": ...}`, shown only here. The
/// user themself or USER_MANAGEMENT; after a recent login.
#[utoipa::path(post, path = "/api/v1/user/{username}/apikey", tag = "data-tracker", params(("username" = String, Path, description = "the user's id")),
    responses((status = 200, description = "`{\"key\": ...}`", body = Object), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn new_key(
    caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    path: web::Path<String>,
) -> TResult<HttpResponse> {
    let id = target_id(&caller.0, &path)?;
    let new =
        service::api_keys::NewKey { name: KEY_NAME.into(), expires_at: None, current_password: None, replace: true };
    let (_, key) = service::api_keys::issue(&state, &caller.0, &audit, &id.to_string(), new).await?;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(json!({ "key": key })))
}

/// The tracker's kind of change: `add`, `delete` or `edit`.
fn kind_of(action: &str) -> &'static str {
    match action.rsplit('.').next() {
        Some("created") => "add",
        Some("deleted") => "delete",
        _ => "edit",
    }
}

/// Change-log entries (newest first) as the tracker lists them, oldest
/// first: `_id`, `id`, `action`, `comment` (registrar's action) and
/// `timestamp`, plus what `more` adds.
fn entries_out(
    entries: Vec<change_log::Entry>,
    more: impl Fn(&change_log::Entry, &mut Map<String, Value>),
) -> Vec<Value> {
    entries
        .iter()
        .rev()
        .map(|e| {
            let mut out = Map::new();
            out.insert("_id".into(), json!(e.id));
            out.insert("id".into(), json!(e.id));
            out.insert("action".into(), json!(kind_of(&e.action)));
            out.insert("comment".into(), json!(e.action));
            out.insert("timestamp".into(), json!(e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
            more(e, &mut out);
            Value::Object(out)
        })
        .collect()
}

/// What the log and actions routes read: the newest 1,000 entries.
fn newest() -> change_log::LogFilter {
    change_log::LogFilter { limit: 1000, ..Default::default() }
}

/// `GET /api/v1/user/{id}/log`: the changes made to a user, oldest first
/// (`{"entry_id", "data_type": "user", "logs": [...]}`). The user themself
/// or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/user/{username}/log", tag = "data-tracker", params(("username" = String, Path, description = "the user's id")),
    responses((status = 200, description = "`{entry_id, data_type, logs}`", body = Object), (status = 404, body = ErrorBody)))]
pub async fn log(caller: Caller, state: web::Data<AppState>, path: web::Path<String>) -> TResult<HttpResponse> {
    let user = load(&state, &caller.0, &path).await?;
    let entries = change_log::about_user(&state.pool, user.id, &newest()).await?;
    let logs = entries_out(entries, |e, out| {
        out.insert("data".into(), e.changes.clone());
        out.insert("user".into(), e.actor_id.map_or_else(|| json!("system"), |a| json!(a)));
    });
    Ok(HttpResponse::Ok().json(json!({ "entry_id": user.id, "data_type": "user", "logs": logs })))
}

/// `GET /api/v1/user/{id}/actions`: the changes a user made, oldest first
/// (`{"logs": [...]}`, without the data). The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/user/{username}/actions", tag = "data-tracker", params(("username" = String, Path, description = "the user's id")),
    responses((status = 200, description = "`{logs}`", body = Object), (status = 404, body = ErrorBody)))]
pub async fn actions(caller: Caller, state: web::Data<AppState>, path: web::Path<String>) -> TResult<HttpResponse> {
    let user = load(&state, &caller.0, &path).await?;
    let entries = change_log::by_actor(&state.pool, user.id, &newest()).await?;
    let logs = entries_out(entries, |e, out| {
        out.insert("data_type".into(), json!(e.subject_type));
        out.insert("entry_id".into(), json!(e.subject_id));
    });
    Ok(HttpResponse::Ok().json(json!({ "logs": logs })))
}
