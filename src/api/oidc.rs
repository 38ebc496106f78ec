//! OpenID Connect login: first login creates the account or links it to an
//! existing one by a *verified* email; afterwards the link is used.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::api::auth::{session_cookie, TokenResponse};
use crate::api::resolve_me;
use crate::audit::{Audit, Changes};
use crate::auth::oidc::check_return_to;
use crate::auth::principal::{self, Caller};
use crate::auth::tokens;
use crate::config::OidcProvider;
use crate::error::{ApiError, ApiResult};
use crate::http::Query;
use crate::state::AppState;
use crate::store::{identities, users};

const STATE_COOKIE: &str = "registrar_oidc";

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProviderInfo {
    pub name: String,
    pub display_name: String,
    pub login_url: String,
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct LoginQuery {
    /// Where to send the browser afterwards: a path on this server or a URL on a configured origin.
    pub return_to: Option<String>,
    /// `true` to link this provider to the logged-in caller's account.
    pub link: Option<bool>,
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct CallbackQuery {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub iss: Option<String>,
}

fn provider<'a>(state: &'a AppState, name: &str) -> Result<&'a OidcProvider, ApiError> {
    state
        .settings
        .oidc
        .providers
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::not_found("provider_not_found", format!("no OpenID Connect provider named '{name}'")))
}

/// The configured providers. Public.
#[utoipa::path(get, path = "/api/v1/auth/oidc/providers", tag = "oidc", params(crate::api::PageQuery),
    responses((status = 200, body = crate::api::Page<ProviderInfo>)))]
pub async fn providers(state: web::Data<AppState>, q: Query<crate::api::PageQuery>) -> ApiResult<HttpResponse> {
    let list: Vec<ProviderInfo> = state
        .settings
        .oidc
        .providers
        .iter()
        .map(|p| ProviderInfo {
            name: p.name.clone(),
            display_name: if p.display_name.is_empty() { p.name.clone() } else { p.display_name.clone() },
            login_url: format!("/api/v1/auth/oidc/{}/login", p.name),
        })
        .collect();
    Ok(HttpResponse::Ok().json(crate::api::page_of(list, &q, crate::api::Order::Ascending, |p| p.name.clone())?))
}

/// Starts a login (302 to the provider with state, nonce and PKCE); with
/// `link=true` the logged-in caller links this provider to their account. Public.
#[utoipa::path(get, path = "/api/v1/auth/oidc/{name}/login", tag = "oidc", params(("name" = String, Path), LoginQuery),
    responses((status = 302, description = "to the provider"), (status = 400, body = crate::error::ErrorBody),
    (status = 404, body = crate::error::ErrorBody), (status = 502, body = crate::error::ErrorBody)))]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    q: Query<LoginQuery>,
) -> ApiResult<HttpResponse> {
    let p = provider(&state, &path)?;
    state.limits.oidc_start_ip.check(crate::audit::client_ip(&req).as_deref().unwrap_or("-")).await?;
    let return_to = q.return_to.as_deref().map(|r| check_return_to(&state.settings, r)).transpose()?;
    let link_user = if q.link.unwrap_or(false) {
        let presented = principal::credentials(&req, &state.settings.auth.cookie_name());
        let caller = principal::resolve(&state, presented, crate::audit::client_ip(&req))
            .await?
            .ok_or_else(|| ApiError::unauthorized("log in first to link a provider to your account"))?;
        // A new way into the account: only right after a login.
        if !crate::auth::reauth::is_recent(&state, &caller) {
            return Err(crate::auth::reauth::required().into());
        }
        Some(caller.user_id)
    } else {
        None
    };
    let started = state.oidc.start(&state.settings, p).await?;
    let mut conn = state.pool.acquire().await?;
    identities::save_state(
        &mut conn,
        &started.state,
        &p.name,
        &started.nonce,
        &started.verifier,
        return_to.as_deref(),
        link_user,
        state.settings.oidc.state_ttl_secs,
    )
    .await?;
    // Binds the flow to this browser: a callback URL planted in someone
    // else's browser finds no matching cookie (login CSRF).
    let cookie = actix_web::cookie::Cookie::build(STATE_COOKIE, started.state.clone())
        .path("/api/v1/auth/oidc")
        .http_only(true)
        .same_site(actix_web::cookie::SameSite::Lax)
        .secure(state.settings.auth.cookie_secure)
        .max_age(actix_web::cookie::time::Duration::seconds(
            i64::try_from(state.settings.oidc.state_ttl_secs).unwrap_or(600),
        ))
        .finish();
    Ok(HttpResponse::Found().insert_header((header::LOCATION, started.url)).cookie(cookie).finish())
}

/// Finishes a login: validates state, exchanges the code, validates the ID
/// token, then finds, links or creates the account (see README). Public.
#[utoipa::path(get, path = "/api/v1/auth/oidc/{name}/callback", tag = "oidc", params(("name" = String, Path), CallbackQuery),
    responses((status = 200, body = TokenResponse), (status = 302, description = "to return_to"),
    (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
    (status = 403, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
    (status = 502, body = crate::error::ErrorBody)))]
pub async fn callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    audit: Audit,
    path: web::Path<String>,
    q: Query<CallbackQuery>,
) -> ApiResult<HttpResponse> {
    let p = provider(&state, &path)?;
    state.limits.oidc_callback_ip.check(audit.client_ip.as_deref().unwrap_or("-")).await?;
    let invalid_state =
        || ApiError::bad_request("invalid_state", "this login is unknown, expired or already used; start again");
    let st = q.state.as_deref().filter(|s| !s.is_empty() && s.len() <= 256).ok_or_else(invalid_state)?;
    // Single use: taken (deleted) now, whatever happens next.
    let mut conn = state.pool.acquire().await?;
    let saved = identities::take_state(&mut conn, st, &p.name).await?;
    drop(conn);
    let saved = saved.ok_or_else(invalid_state)?;
    let cookie_ok =
        req.cookie(STATE_COOKIE).is_some_and(|c| tokens::constant_time_eq(c.value().as_bytes(), st.as_bytes()));
    if !cookie_ok {
        return Err(invalid_state());
    }
    if let Some(err) = &q.error {
        let desc = q.error_description.as_deref().unwrap_or("");
        let mut a = audit.clone();
        a.actor_username = Some(format!("oidc:{}", p.name));
        let changes = Changes::new().set("error", err.as_str());
        crate::service::oidc::record_outcome(&state, &a, &p.name, "oidc.login_failed", changes).await;
        return Err(ApiError::unauthorized(
            format!("the identity provider refused the login: {err} {desc}").trim().to_string(),
        )
        .with_code("oidc_rejected"));
    }
    let code = q
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 2048)
        .ok_or_else(|| ApiError::bad_request("missing_code", "no authorization code"))?;
    let ua = req.headers().get("user-agent").and_then(|v| v.to_str().ok());
    let return_to = saved.return_to.clone();
    let outcome = crate::service::oidc::finish_login(&state, &audit, p, code, saved, ua).await?;
    let ttl = i64::try_from(state.settings.auth.session_ttl_secs).unwrap_or(86_400);
    let mut gone = actix_web::cookie::Cookie::build(STATE_COOKIE, "").path("/api/v1/auth/oidc").finish();
    gone.make_removal();
    let (user, s) = match outcome {
        crate::service::oidc::OidcLogin::Done(user, s) => (user, s),
        // The second step: the page in a browser flow, the challenge in JSON otherwise.
        crate::service::oidc::OidcLogin::SecondFactor(ch) => {
            let mut res = match return_to {
                Some(to) => crate::web::public::second_factor_page(&state, &req, ch.mfa_token, to),
                None => HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(ch),
            };
            let _ = res.add_cookie(&gone);
            return Ok(res);
        }
    };
    let cookie = session_cookie(&state, s.cookie_secret, ttl);
    if let Some(to) = return_to {
        return Ok(HttpResponse::Found().insert_header((header::LOCATION, to)).cookie(cookie).cookie(gone).finish());
    }
    let access = state.keys.issue_access(user.id, s.id, chrono::Utc::now().timestamp())?;
    let enrol = crate::service::mfa::must_enrol(&state, user.id, user.mfa_enabled).await?;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).cookie(cookie).cookie(gone).json(
        TokenResponse {
            access_token: access,
            refresh_token: s.refresh_token,
            token_type: "Bearer",
            expires_in: state.keys.access_ttl_secs,
            session_id: s.id,
            mfa_enrollment_required: enrol,
        },
    ))
}

/// A user's linked identities. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/users/{username}/identities", tag = "oidc", params(("username" = String, Path), crate::api::PageQuery),
    responses((status = 200, body = crate::api::Page<identities::Identity>)))]
pub async fn list_identities(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: Query<crate::api::PageQuery>,
) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, &path), false).await?;
    let list = identities::of_user(&mut conn, user.id).await?;
    let page =
        crate::api::page_of(list, &q, crate::api::Order::Ascending, |i| format!("{}\u{0}{}", i.provider, i.subject))?;
    Ok(HttpResponse::Ok().json(page))
}

/// Unlinks a provider, unless it is the account's only way to log in (409).
/// The user themself or USER_MANAGEMENT.
#[utoipa::path(delete, path = "/api/v1/users/{username}/identities/{provider}", tag = "oidc",
    params(("username" = String, Path), ("provider" = String, Path)),
    responses((status = 204, description = "unlinked"), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn unlink(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (username, provider) = path.into_inner();
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, &username), false).await?;
    drop(conn);
    crate::service::oidc::unlink(&state.pool, &audit, user.id, &provider).await?;
    Ok(HttpResponse::NoContent().finish())
}
