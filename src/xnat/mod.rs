//! The XNAT-compatible adapter: XNAT's paths, shapes and status codes over
//! the same domain and store functions as the native API. No rule is
//! implemented twice: handlers here translate, then call `service::*`/`store::*`.

pub mod data;
pub mod schemas;
pub mod users;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::audit::Audit;
use crate::auth::principal::{Caller, Principal, XNAT_COOKIE};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::sessions;

/// The XNAT version registrar answers to clients (they check it is 1.x).
pub const XNAT_VERSION: &str = "1.8.10";

/// XNAT's body of a 401 on `/data` paths.
pub const UNAUTHENTICATED_BODY: &str = crate::auth::access::XNAT_UNAUTHENTICATED_BODY;

/// Paths XNAT clients use; Basic logins there get a `JSESSIONID` session.
pub fn is_xnat_path(path: &str) -> bool {
    path.starts_with("/data/") || path.starts_with("/xapi/") || path == "/data"
}

/// The cookie secret of a session this request just started (see `start_session`).
#[derive(Clone)]
pub struct NewSessionCookie(pub String);

pub fn jsession_cookie(state: &AppState, secret: String) -> Cookie<'static> {
    Cookie::build(XNAT_COOKIE, secret)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.settings.auth.cookie_secure)
        .finish()
}

/// Starts a session for a caller who authenticated with HTTP Basic on an
/// XNAT path, as XNAT does: the client then rides on the `JSESSIONID` cookie
/// instead of re-sending (and re-hashing) its password on every call.
pub async fn start_session(state: &AppState, req: &HttpRequest, principal: &mut Principal) -> ApiResult<String> {
    let mut audit = Audit::from_request_parts(req);
    audit.actor_id = Some(principal.user_id);
    audit.actor_username = Some(principal.username.clone());
    audit.api_key_id = principal.api_key_id;
    let ua = req.headers().get("user-agent").and_then(|v| v.to_str().ok());
    let kind = crate::service::auth::SessionKind::Basic;
    let s = crate::service::auth::start_session(state, &audit, principal.user_id, kind, ua).await?;
    principal.session_id = Some(s.id);
    Ok(s.cookie_secret)
}

/// Middleware on every `/data` and `/xapi` resource, inside the access
/// guard: a caller who authenticated with HTTP Basic and a password gets a
/// session and its `JSESSIONID` cookie, as with XNAT (an API key starts
/// none: a session must never outlive the key it came from).
pub async fn basic_session(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    use actix_web::ResponseError;
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let principal = req.extensions().get::<std::sync::Arc<Principal>>().map(|p| Principal::clone(p));
    let (Some(state), Some(mut principal)) = (state, principal) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if !(principal.via_basic && principal.session_id.is_none() && principal.api_key_id.is_none()) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let secret = match start_session(&state, req.request(), &mut principal).await {
        Ok(secret) => secret,
        Err(e) => return Ok(req.into_response(e.error_response())),
    };
    req.extensions_mut().insert(std::sync::Arc::new(principal));
    req.extensions_mut().insert(NewSessionCookie(secret.clone()));
    let mut res = next.call(req).await?.map_into_boxed_body();
    let _ = res.response_mut().add_cookie(&jsession_cookie(&state, secret));
    Ok(res)
}

/// The session id XNAT clients see: the `JSESSIONID` cookie value.
fn session_token(req: &HttpRequest, state: &AppState) -> Option<String> {
    if let Some(new) = req.extensions().get::<NewSessionCookie>() {
        return Some(new.0.clone());
    }
    req.cookie(XNAT_COOKIE).or_else(|| req.cookie(&state.settings.auth.cookie_name())).map(|c| c.value().to_string())
}

/// `GET /`: a plain answer (never a redirect to a login page). Public.
#[utoipa::path(get, path = "/", tag = "xnat", responses((status = 200, description = "service name and version", body = Object)))]
pub async fn root() -> HttpResponse {
    HttpResponse::Ok().json(json!({"service": "registrar", "xnat_version": XNAT_VERSION}))
}

/// `GET /data/version`: XNAT's version as plain text. Public.
#[utoipa::path(get, path = "/data/version", tag = "xnat", responses((status = 200, description = "e.g. `1.8.10`", body = String, content_type = "text/plain")))]
pub async fn version() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(XNAT_VERSION)
}

/// `GET /data/buildInfo` (xnatpy asks here first). Public.
#[utoipa::path(get, path = "/data/buildInfo", tag = "xnat", responses((status = 200, description = "`{version, ...}`", body = Object)))]
pub async fn data_build_info() -> HttpResponse {
    build_info().await
}

/// `GET /xapi/siteConfig/buildInfo`. Public.
#[utoipa::path(get, path = "/xapi/siteConfig/buildInfo", tag = "xnat", responses((status = 200, description = "`{version, ...}`", body = Object)))]
pub async fn build_info() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "version": XNAT_VERSION,
        "buildNumber": env!("CARGO_PKG_VERSION"),
        "commit": "registrar",
        "sha": "registrar",
        "product": "registrar",
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct AuthForm {
    username: String,
    #[schema(format = Password)]
    password: String,
}

/// `PUT /data/services/auth` with a form body `username=..&password=..`:
/// logs in (same rules as the native login) and answers 200 with the
/// session id and a `JSESSIONID` cookie. Public.
#[utoipa::path(put, path = "/data/services/auth", tag = "xnat", responses((status = 200, description = "session id", body = String, content_type = "text/plain"),
    (status = 401, body = crate::error::ErrorBody)))]
pub async fn services_auth(
    state: web::Data<AppState>,
    req: HttpRequest,
    audit: Audit,
    form: web::Form<AuthForm>,
) -> ApiResult<HttpResponse> {
    let form = form.into_inner();
    let ua = req.headers().get("user-agent").and_then(|v| v.to_str().ok());
    let password = secrecy::SecretString::from(form.password);
    let s = crate::service::auth::password_only_login(&state, &audit, &form.username, password, ua).await?.session;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .cookie(jsession_cookie(&state, s.cookie_secret.clone()))
        .body(s.cookie_secret))
}

/// `GET /data/JSESSION`: the session id as plain text (a Basic login starts
/// one). Also xnatpy's heartbeat. Authenticated.
#[utoipa::path(get, path = "/data/JSESSION", tag = "xnat", responses((status = 200, description = "session id", body = String, content_type = "text/plain")))]
pub async fn jsession(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> ApiResult<HttpResponse> {
    let token = match session_token(&req, &state) {
        Some(t) if caller.0.session_id.is_some() => t,
        // Bearer callers have no cookie session: answer with their session id.
        _ => caller.0.session_id.map(|s| s.to_string()).unwrap_or_default(),
    };
    Ok(HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(token))
}

/// `DELETE /data/JSESSION`: ends the caller's session; always 200. Authenticated.
#[utoipa::path(delete, path = "/data/JSESSION", tag = "xnat", responses((status = 200, description = "no body: logged out")))]
pub async fn jsession_delete(state: web::Data<AppState>, caller: Caller, audit: Audit) -> ApiResult<HttpResponse> {
    if let Some(sid) = caller.0.session_id {
        let mut tx = state.pool.begin().await?;
        sessions::revoke(&mut tx, &audit, sid, "logout").await?;
        tx.commit().await?;
    }
    let mut gone = jsession_cookie(&state, String::new());
    gone.make_removal();
    Ok(HttpResponse::Ok().cookie(gone).content_type("text/plain; charset=utf-8").body(""))
}

/// `GET /data/auth`: `User '<login>' is logged in`. Authenticated.
#[utoipa::path(get, path = "/data/auth", tag = "xnat", responses((status = 200, description = "who is logged in", body = String, content_type = "text/plain")))]
pub async fn auth_status(caller: Caller) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(format!("User '{}' is logged in", caller.0.username))
}

/// XNAT flags in paths are `true`/`false`.
pub fn parse_flag(raw: &str) -> Result<bool, ApiError> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ApiError::bad_request("invalid_flag", "flag must be true or false")),
    }
}

impl Audit {
    /// The audit context of a request before any principal is attached.
    pub fn from_request_parts(req: &HttpRequest) -> Audit {
        Audit {
            request_id: crate::telemetry::current_request_id(),
            client_ip: crate::audit::client_ip(req),
            ..Audit::default()
        }
    }
}
