//! registrar as an OpenID Provider (OpenID Connect Core 1.0, OAuth 2.0 /
//! 2.1 practice): discovery, JWKS, the authorization endpoint (code flow
//! with PKCE, through the web console's login page), the token endpoint,
//! UserInfo, revocation (RFC 7009), introspection (RFC 7662) and
//! RP-initiated logout. The flows are in `service::oauth`; errors to
//! clients take the protocol's shape (`OAuthError`), errors before the
//! client and redirect URI are known are pages, never redirects.

pub mod keys;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;

use crate::audit::Audit;
use crate::auth::principal::{self, Caller, Principal};
use crate::domain::Error;
use crate::service::oauth::{self as flows, issuer};
use crate::state::AppState;
use crate::store::oauth::{self, Client, CodeUse, RefreshUse};
use crate::web::{render, Chrome, PageError};

/// The provider's protocol paths (not the native API: they follow their
/// RFCs and are described by the discovery document).
pub fn is_protocol(path: &str) -> bool {
    path.starts_with("/oauth2/") || path.starts_with("/.well-known/")
}

/// An error answer of the token, revocation and introspection endpoints.
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    basic_challenge: bool,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError { status, error, description: description.into(), basic_challenge: false }
    }
    fn invalid_request(d: impl Into<String>) -> OAuthError {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    fn invalid_grant(d: impl Into<String>) -> OAuthError {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }
    fn invalid_client(basic: bool) -> OAuthError {
        OAuthError {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: "client authentication failed".into(),
            basic_challenge: basic,
        }
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.description)
    }
}

impl From<Error> for OAuthError {
    fn from(e: Error) -> OAuthError {
        match e {
            Error::Locked { retry_after, .. } => {
                OAuthError::new(StatusCode::TOO_MANY_REQUESTS, "slow_down", format!("retry after {retry_after} s"))
            }
            Error::Unavailable { .. } => {
                OAuthError::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again shortly")
            }
            Error::Internal(source) => {
                tracing::error!(error = %source, "OpenID Provider error");
                OAuthError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error")
            }
            other => OAuthError::invalid_request(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for OAuthError {
    fn from(e: sqlx::Error) -> OAuthError {
        OAuthError::from(Error::from(e))
    }
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        res.insert_header((header::CACHE_CONTROL, "no-store"));
        if self.basic_challenge {
            res.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"registrar\""));
        }
        res.json(json!({"error": self.error, "error_description": self.description}))
    }
}

type OAuthResult = Result<HttpResponse, OAuthError>;

fn no_store_json(value: &impl serde::Serialize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("Pragma", "no-cache"))
        .json(value)
}

/// `GET /.well-known/openid-configuration`.
pub async fn discovery(state: web::Data<AppState>) -> HttpResponse {
    let iss = issuer(&state);
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "public, max-age=300")).json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/oauth2/authorize"),
        "token_endpoint": format!("{iss}/oauth2/token"),
        "userinfo_endpoint": format!("{iss}/oauth2/userinfo"),
        "jwks_uri": format!("{iss}/oauth2/jwks"),
        "revocation_endpoint": format!("{iss}/oauth2/revoke"),
        "introspection_endpoint": format!("{iss}/oauth2/introspect"),
        "end_session_endpoint": format!("{iss}/oauth2/logout"),
        "scopes_supported": flows::SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": flows::GRANT_TYPES,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "acr_values_supported": ["aal1", "aal2"],
        "prompt_values_supported": ["none", "login", "consent"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "azp", "at_hash", "sid", "amr", "acr",
            "preferred_username", "name", "given_name", "family_name", "email", "email_verified", "groups",
            "projects", "roles"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
    }))
}

/// `GET /oauth2/jwks`: the published keys (from memory).
pub async fn jwks(state: web::Data<AppState>) -> OAuthResult {
    let keys = state.op_keys.get(&state.pool).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "public, max-age=60"))
        .body(keys.jwks.clone()))
}

/// The parameters of a request, refusing repeated ones (RFC 6749 3.1).
fn params(raw: &str) -> Result<HashMap<String, String>, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|_| "unreadable parameters".to_string())?;
    let mut out = HashMap::new();
    for (k, v) in pairs {
        if out.insert(k.clone(), v).is_some() {
            return Err(format!("parameter '{k}' is repeated"));
        }
    }
    Ok(out)
}

#[derive(Template)]
#[template(path = "oauth/consent.html")]
struct ConsentPage {
    c: Chrome,
    client: String,
    scopes: Vec<(String, &'static str)>,
    request: String,
}

#[derive(Template)]
#[template(path = "oauth/logout.html")]
struct LogoutPage {
    c: Chrome,
    params: Vec<(String, String)>,
    done: bool,
}

fn scope_text(s: &str) -> &'static str {
    match s {
        "openid" => "know who you are (your registrar account id)",
        "profile" => "see your username and name",
        "email" => "see your email address",
        "groups" => "see the groups you are in",
        "projects" => "see your projects and your level in each",
        "roles" => "see your roles",
        "offline_access" => "keep access while you are away",
        _ => "",
    }
}

fn error_page(state: &AppState, req: &HttpRequest, message: &str) -> HttpResponse {
    let (c, _) = Chrome::public(state, req);
    let page = crate::web::MessagePage {
        c,
        title: "This sign-in request cannot be used".into(),
        message: message.into(),
        link: None,
    };
    render(state, StatusCode::BAD_REQUEST, &page)
}

/// The answer to the client: its redirect URI with `pairs` (and `state`, `iss`).
fn to_client(state: &AppState, redirect_uri: &str, st: Option<&str>, pairs: &[(&str, &str)]) -> HttpResponse {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return HttpResponse::BadRequest().finish();
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
        if let Some(s) = st {
            q.append_pair("state", s);
        }
        q.append_pair("iss", &issuer(state));
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

async fn browser_caller(state: &AppState, req: &HttpRequest) -> Option<Principal> {
    let presented = principal::credentials(req, &state.settings.auth.cookie_name());
    presented.cookie.as_ref()?;
    match principal::resolve(state, presented, None).await {
        // A session earned by a login; one an API key opened (the data
        // tracker's key login) authenticated nobody to the provider.
        Ok(Some(p)) if p.method == principal::AuthMethod::Cookie && p.authenticated_at.is_some() => Some(p),
        _ => None,
    }
}

/// `GET /oauth2/authorize`.
pub async fn authorize(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let caller = browser_caller(&state, &req).await;
    authorize_flow(&state, &req, caller, req.query_string(), None).await
}

#[derive(serde::Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    request: String,
    #[serde(default)]
    decision: String,
}

/// `POST /oauth2/consent`: the user's answer on the consent page.
pub async fn consent(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    form: crate::web::Form<ConsentForm>,
) -> HttpResponse {
    let decision = match form.0.decision.as_str() {
        "allow" => true,
        "deny" => false,
        _ => return PageError::bad_request("Choose allow or deny.").error_response(),
    };
    authorize_flow(&state, &req, Some(Principal::clone(&caller.0)), &form.0.request, Some(decision)).await
}

async fn authorize_flow(
    state: &AppState,
    req: &HttpRequest,
    caller: Option<Principal>,
    query: &str,
    consent: Option<bool>,
) -> HttpResponse {
    let p = match params(query) {
        Ok(p) => p,
        Err(e) => return error_page(state, req, &format!("The request is malformed: {e}.")),
    };
    let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let client = match get("client_id") {
        Some(id) => match flows::client(state, id).await {
            Ok(Some(c)) => c,
            Ok(None) => return error_page(state, req, "No application is registered with this client_id."),
            Err(e) => return PageError::from(e).error_response(),
        },
        None => return error_page(state, req, "The request names no client_id."),
    };
    let Some(redirect_uri) = get("redirect_uri").filter(|r| client.redirect_uris.iter().any(|u| u == r)) else {
        return error_page(state, req, "The redirect_uri is missing or is not one registered for this application.");
    };
    let st = get("state");
    let back = |error: &str, description: &str| {
        to_client(state, redirect_uri, st, &[("error", error), ("error_description", description)])
    };
    if get("response_type") != Some("code") {
        return back("unsupported_response_type", "only response_type=code is supported");
    }
    if !client.grant_types.iter().any(|g| g == "authorization_code") {
        return back("unauthorized_client", "this client may not use the authorization code flow");
    }
    if get("request").is_some() || get("request_uri").is_some() {
        return back("request_not_supported", "request objects are not supported");
    }
    let mut scopes: Vec<String> =
        get("scope").unwrap_or("").split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect();
    scopes.sort();
    scopes.dedup();
    if !scopes.iter().any(|s| s == "openid") {
        return back("invalid_scope", "the openid scope is required");
    }
    if let Some(s) = scopes.iter().find(|s| !client.scopes.contains(s)) {
        return back("invalid_scope", &format!("scope '{s}' is not allowed for this client"));
    }
    let challenge = get("code_challenge");
    match (challenge, get("code_challenge_method")) {
        (Some(_), Some(m)) if m != "S256" => return back("invalid_request", "code_challenge_method must be S256"),
        (Some(_), None) => return back("invalid_request", "code_challenge_method must be S256"),
        (Some(c), _) if !(43..=128).contains(&c.len()) => return back("invalid_request", "invalid code_challenge"),
        (None, _) if client.public => return back("invalid_request", "PKCE (code_challenge, S256) is required"),
        _ => {}
    }
    let prompts: Vec<&str> = get("prompt").unwrap_or("").split(' ').filter(|s| !s.is_empty()).collect();
    if prompts.contains(&"none") && prompts.len() > 1 {
        return back("invalid_request", "prompt=none cannot be combined");
    }
    if let Some(bad) = prompts.iter().find(|p| !matches!(**p, "none" | "login" | "consent" | "select_account")) {
        return back("invalid_request", &format!("unknown prompt '{bad}'"));
    }
    let max_age: Option<i64> = match get("max_age").map(str::parse) {
        Some(Ok(n)) if n >= 0 => Some(n),
        Some(_) => return back("invalid_request", "max_age must be a number of seconds"),
        None => None,
    };
    // A fresh login was asked for (prompt=login, max_age): the login page
    // sends the browser back with the time it was asked (signed by the
    // server, at most 10 minutes old), which the session's login must not
    // predate. An unsigned or stale value counts for nothing.
    let asked_at: Option<i64> = get("registrar_login_after").and_then(|v| login_after_ok(state, v));
    let auth_time = caller.as_ref().and_then(|c| c.authenticated_at).map(|t| t.timestamp());
    let fresh_enough = match (asked_at, auth_time) {
        (Some(asked), Some(at)) => at >= asked,
        _ => false,
    };
    let now = chrono::Utc::now().timestamp();
    let stale = match (max_age, auth_time) {
        (Some(m), Some(at)) => now - at > m,
        (Some(_), None) => true,
        _ => false,
    };
    let needs_login = caller.is_none() || (!fresh_enough && (prompts.contains(&"login") || stale));
    if needs_login {
        if prompts.contains(&"none") {
            return back("login_required", "the user is not logged in");
        }
        let mut again: Vec<(&str, &str)> =
            p.iter().filter(|(k, _)| *k != "registrar_login_after").map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let signed = sign_login_after(state, now);
        if prompts.contains(&"login") || max_age.is_some() {
            again.push(("registrar_login_after", &signed));
        }
        again.sort();
        let back_to = format!("/oauth2/authorize?{}", serde_urlencoded::to_string(&again).unwrap_or_default());
        let mut login = vec![("return_to", back_to.as_str())];
        if let Some(h) = get("login_hint") {
            login.push(("login_hint", h));
        }
        return crate::web::see_other(&format!("/login?{}", serde_urlencoded::to_string(&login).unwrap_or_default()));
    }
    let Some(caller) = caller else { return back("login_required", "the user is not logged in") };
    let audit = Audit::for_principal(req, &caller);
    if !client.first_party {
        match consent {
            Some(false) => return back("access_denied", "the user denied the request"),
            Some(true) => {
                let saved = async {
                    let mut tx = state.pool.begin().await?;
                    oauth::grant_consent(&mut tx, &audit, caller.user_id, &client.client_id, &scopes).await?;
                    tx.commit().await?;
                    Ok::<_, Error>(())
                }
                .await;
                if let Err(e) = saved {
                    return PageError::from(e).error_response();
                }
            }
            None => {
                let mut conn = match state.pool.acquire().await {
                    Ok(c) => c,
                    Err(e) => return PageError::from(e).error_response(),
                };
                let given = oauth::consent_of(&mut conn, caller.user_id, &client.client_id).await.ok().flatten();
                let covered = given.is_some_and(|g| scopes.iter().all(|s| g.contains(s)));
                if !covered || prompts.contains(&"consent") {
                    if prompts.contains(&"none") {
                        return back("consent_required", "the user has not allowed this application yet");
                    }
                    let page = ConsentPage {
                        c: Chrome::of(state, req, &caller),
                        client: client.name.clone(),
                        scopes: scopes.iter().map(|s| (s.clone(), scope_text(s))).collect(),
                        request: query.to_string(),
                    };
                    return render(state, StatusCode::OK, &page);
                }
            }
        }
    }
    match issue_code(state, &audit, &caller, &client, redirect_uri, &scopes, get("nonce"), challenge).await {
        Ok(code) => to_client(state, redirect_uri, st, &[("code", &code)]),
        Err(e) => {
            tracing::error!(error = %e, "could not issue an authorization code");
            back("server_error", "the code could not be issued")
        }
    }
}

/// `<unix time>.<MAC>`: a time only this server can have written.
fn sign_login_after(state: &AppState, at: i64) -> String {
    format!("{at}.{}", state.keys.csrf_token(&format!("login_after:{at}")))
}

/// The time of a `registrar_login_after` this server wrote in the last 10 minutes.
fn login_after_ok(state: &AppState, value: &str) -> Option<i64> {
    let (at, mac) = value.split_once('.')?;
    let at: i64 = at.parse().ok()?;
    let expected = state.keys.csrf_token(&format!("login_after:{at}"));
    let age = chrono::Utc::now().timestamp() - at;
    (crate::auth::tokens::constant_time_eq(expected.as_bytes(), mac.as_bytes()) && (0..=600).contains(&age))
        .then_some(at)
}

#[allow(clippy::too_many_arguments)]
async fn issue_code(
    state: &AppState,
    audit: &Audit,
    caller: &Principal,
    client: &Client,
    redirect_uri: &str,
    scopes: &[String],
    nonce: Option<&str>,
    challenge: Option<&str>,
) -> Result<String, Error> {
    let ttl = caller.expires_at.map(|e| (e - chrono::Utc::now()).num_seconds()).unwrap_or(3600).max(60);
    let mut tx = state.pool.begin().await?;
    let grant = oauth::create_grant(
        &mut tx,
        audit,
        oauth::NewGrant {
            client_id: &client.client_id,
            user_id: Some(caller.user_id),
            session_id: caller.session_id,
            scopes,
            auth_time: caller.authenticated_at,
            nonce,
            ttl_secs: ttl,
        },
    )
    .await?;
    let code = crate::auth::tokens::random_secret();
    oauth::save_code(&mut tx, &code, grant, redirect_uri, challenge, flows::CODE_TTL_SECS).await?;
    tx.commit().await?;
    Ok(code)
}

/// The client a token, revocation or introspection request authenticates
/// as: HTTP Basic (`client_secret_basic`), `client_id` + `client_secret` in
/// the body (`client_secret_post`), or a public client's `client_id` alone.
async fn client_of(
    state: &AppState,
    req: &HttpRequest,
    p: &HashMap<String, String>,
) -> Result<Arc<Client>, OAuthError> {
    let basic =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic "));
    let (id, secret, via_basic) = match (basic, p.get("client_secret")) {
        (Some(_), Some(_)) => return Err(OAuthError::invalid_request("use one client authentication method")),
        (Some(b), None) => {
            let decoded = STANDARD.decode(b.trim()).ok().and_then(|d| String::from_utf8(d).ok());
            let (id, secret) =
                decoded.as_deref().and_then(|d| d.split_once(':')).ok_or_else(|| OAuthError::invalid_client(true))?;
            let dec =
                |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (dec(id), Some(dec(secret)), true)
        }
        (None, secret) => {
            let id = p.get("client_id").cloned().ok_or_else(|| OAuthError::invalid_client(false))?;
            (id, secret.cloned(), false)
        }
    };
    if let Some(body_id) = p.get("client_id") {
        if *body_id != id {
            return Err(OAuthError::invalid_client(via_basic));
        }
    }
    let client = flows::client(state, &id).await?.ok_or_else(|| OAuthError::invalid_client(via_basic))?;
    let ok = match (&secret, client.public) {
        (Some(s), false) => flows::secret_matches(state, &client, s),
        (None, true) => true,
        _ => false,
    };
    if !ok {
        return Err(OAuthError::invalid_client(via_basic));
    }
    Ok(client)
}

fn form_params(req: &HttpRequest, body: &web::Bytes) -> Result<HashMap<String, String>, OAuthError> {
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Err(OAuthError::invalid_request("send application/x-www-form-urlencoded"));
    }
    let text = std::str::from_utf8(body).map_err(|_| OAuthError::invalid_request("the body is not UTF-8"))?;
    params(text).map_err(OAuthError::invalid_request)
}

/// An audit for what a client's request causes: attributed to the client.
fn client_audit(req: &HttpRequest, client: &Client) -> Audit {
    let mut a = Audit::anonymous(crate::telemetry::current_request_id(), crate::audit::client_ip(req));
    a.actor_username = Some(format!("client:{}", client.client_id));
    a
}

/// `POST /oauth2/token`.
pub async fn token(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> OAuthResult {
    state.limits.token_ip.check(crate::audit::client_ip(&req).as_deref().unwrap_or("-")).await?;
    let p = form_params(&req, &body)?;
    let client = client_of(&state, &req, &p).await?;
    let audit = client_audit(&req, &client);
    let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let grant_type = get("grant_type").ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    if !client.grant_types.iter().any(|g| g == grant_type) {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "this client may not use this grant type",
        ));
    }
    // Before the transaction: loading the keys may need a connection.
    let keys = state.op_keys.get(&state.pool).await?;
    let mut tx = state.pool.begin().await?;
    let tokens = match grant_type {
        "authorization_code" => {
            let code = get("code").ok_or_else(|| OAuthError::invalid_request("code is required"))?;
            let (grant_id, redirect_uri, challenge) = match oauth::take_code(&mut tx, code).await? {
                CodeUse::Fresh { grant, redirect_uri, challenge } => (grant, redirect_uri, challenge),
                CodeUse::Replayed { grant } => {
                    // A code used twice: whatever it issued is revoked.
                    oauth::revoke_grant(&mut tx, &audit, grant, "authorization code replayed").await?;
                    tx.commit().await?;
                    state.auth_cache.sync(&state.pool).await;
                    return Err(OAuthError::invalid_grant("the code was already used"));
                }
                CodeUse::Expired => {
                    tx.commit().await?;
                    return Err(OAuthError::invalid_grant("the code has expired"));
                }
                CodeUse::Unknown => return Err(OAuthError::invalid_grant("unknown code")),
            };
            let grant = oauth::live_grant(&mut *tx, grant_id)
                .await?
                .ok_or_else(|| OAuthError::invalid_grant("the authorization has ended"))?;
            if grant.client_id != client.client_id {
                tx.commit().await?;
                return Err(OAuthError::invalid_grant("the code was issued to another client"));
            }
            if get("redirect_uri") != Some(redirect_uri.as_str()) {
                tx.commit().await?;
                return Err(OAuthError::invalid_grant("redirect_uri differs from the authorization request"));
            }
            match (challenge.as_deref(), get("code_verifier")) {
                (Some(c), Some(v)) if flows::pkce_matches(v, c) => {}
                (Some(_), _) => {
                    tx.commit().await?;
                    return Err(OAuthError::invalid_grant("code_verifier does not match the code_challenge"));
                }
                (None, Some(_)) => {
                    tx.commit().await?;
                    return Err(OAuthError::invalid_grant("no code_challenge was sent with the authorization request"));
                }
                (None, None) => {}
            }
            flows::mint(&state, &keys, &mut tx, &grant, &client, grant.nonce.as_deref()).await?
        }
        "refresh_token" => {
            let rt = get("refresh_token").ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
            let grant_id = match oauth::take_refresh(&mut tx, rt).await? {
                RefreshUse::Fresh { grant } => grant,
                RefreshUse::Reused { grant } => {
                    oauth::revoke_grant(&mut tx, &audit, grant, "refresh token reused").await?;
                    tx.commit().await?;
                    state.auth_cache.sync(&state.pool).await;
                    return Err(OAuthError::invalid_grant("the refresh token was already used: the grant is revoked"));
                }
                RefreshUse::Unknown => return Err(OAuthError::invalid_grant("unknown refresh token")),
            };
            let grant = match oauth::live_grant(&mut *tx, grant_id).await? {
                Some(g) if g.client_id == client.client_id => g,
                Some(_) => {
                    tx.rollback().await?;
                    return Err(OAuthError::invalid_grant("the refresh token was issued to another client"));
                }
                None => {
                    tx.commit().await?;
                    return Err(OAuthError::invalid_grant("the authorization has ended"));
                }
            };
            flows::mint(&state, &keys, &mut tx, &grant, &client, None).await?
        }
        "client_credentials" => {
            let wanted: Vec<String> = get("scope")
                .unwrap_or("")
                .split(' ')
                .filter(|s| !s.is_empty() && !matches!(*s, "openid" | "offline_access"))
                .map(str::to_string)
                .collect();
            if let Some(s) = wanted.iter().find(|s| !client.scopes.contains(s)) {
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    format!("scope '{s}' is not allowed"),
                ));
            }
            let ttl = state.keys.access_ttl_secs;
            let new = oauth::NewGrant {
                client_id: &client.client_id,
                user_id: None,
                session_id: None,
                scopes: &wanted,
                auth_time: None,
                nonce: None,
                ttl_secs: ttl,
            };
            let id = oauth::create_grant(&mut tx, &audit, new).await?;
            let grant =
                oauth::live_grant(&mut *tx, id).await?.ok_or_else(|| OAuthError::invalid_grant("grant vanished"))?;
            flows::mint(&state, &keys, &mut tx, &grant, &client, None).await?
        }
        _ => return Err(OAuthError::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", "unsupported grant_type")),
    };
    tx.commit().await?;
    Ok(no_store_json(&tokens))
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn invalid_token(description: &str) -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((
            header::WWW_AUTHENTICATE,
            format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"error": "invalid_token", "error_description": description}))
}

/// `GET|POST /oauth2/userinfo`: the claims of the access token's user, read now.
pub async fn userinfo(state: web::Data<AppState>, req: HttpRequest) -> OAuthResult {
    let Some(token) = bearer(&req) else {
        return Ok(HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"registrar\""))
            .json(json!({"error": "invalid_request", "error_description": "a Bearer access token is required"})));
    };
    let Some(claims) = flows::verify_access(&state, token).await? else {
        return Ok(invalid_token("the access token is invalid or expired"));
    };
    match flows::grant_view(&state, claims.grant).await? {
        Some(view) if view.grant.user_id.is_some() && view.grant.client_id == claims.client_id => {
            Ok(no_store_json(&view.claims))
        }
        _ => Ok(invalid_token("the access token has been revoked")),
    }
}

/// `POST /oauth2/introspect` (RFC 7662): for confidential clients
/// (resource servers). Access and refresh tokens; `active` only while the
/// grant lives.
pub async fn introspect(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> OAuthResult {
    let p = form_params(&req, &body)?;
    let client = client_of(&state, &req, &p).await?;
    if client.public {
        return Err(OAuthError::invalid_client(false));
    }
    let token = p.get("token").map(String::as_str).unwrap_or("");
    let inactive = || Ok(no_store_json(&json!({"active": false})));
    // A client learns about its own tokens only.
    if let Some(claims) = flows::verify_access(&state, token).await? {
        let Some(view) = flows::grant_view(&state, claims.grant).await? else { return inactive() };
        let grant = &view.grant;
        if grant.client_id != client.client_id || claims.client_id != grant.client_id {
            return inactive();
        }
        let mut out = json!({
            "active": true, "token_type": "access_token", "scope": grant.scopes.join(" "), "client_id": claims.client_id,
            "sub": claims.sub, "aud": claims.aud, "iss": claims.iss, "exp": claims.exp, "iat": claims.iat, "jti": claims.jti,
        });
        if let Some(name) = &view.username {
            out["username"] = json!(name);
        }
        return Ok(no_store_json(&out));
    }
    if let Some(grant_id) = oauth::refresh_grant(&state.pool, token).await? {
        let Some(view) = flows::grant_view(&state, grant_id).await? else { return inactive() };
        let grant = &view.grant;
        if grant.client_id != client.client_id {
            return inactive();
        }
        return Ok(no_store_json(&json!({
            "active": true, "token_type": "refresh_token", "scope": grant.scopes.join(" "),
            "client_id": grant.client_id, "sub": grant.user_id,
        })));
    }
    inactive()
}

/// `POST /oauth2/revoke` (RFC 7009): a client revokes one of its tokens
/// (and so the grant it belongs to). Always 200 once the client is
/// authenticated, as the RFC says.
pub async fn revoke(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> OAuthResult {
    let p = form_params(&req, &body)?;
    let client = client_of(&state, &req, &p).await?;
    let audit = client_audit(&req, &client);
    let token = p.get("token").map(String::as_str).unwrap_or("");
    let grant = match flows::verify_access(&state, token).await? {
        Some(claims) => Some(claims.grant),
        None => oauth::refresh_grant(&state.pool, token).await?,
    };
    if let Some(id) = grant {
        flows::revoke_for_client(&state.pool, &audit, &client, id).await?;
    }
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).finish())
}

/// `GET|POST /oauth2/logout` (RP-initiated logout): ends the browser's
/// registrar session and the grants it authorized (back-channel logout to
/// the clients that registered for it), then back to a registered
/// `post_logout_redirect_uri`. Without a valid `id_token_hint` the user
/// confirms first (a logout is a write).
pub async fn logout(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let is_post = req.method() == actix_web::http::Method::POST;
    let raw = if is_post { String::from_utf8_lossy(&body).into_owned() } else { req.query_string().to_string() };
    let Ok(p) = params(&raw) else { return error_page(&state, &req, "The logout request is malformed.") };
    let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let hint = match get("id_token_hint") {
        Some(t) => flows::verify_id_token_hint(&state, t).await.ok().flatten(),
        None => None,
    };
    let hint_aud = hint.as_ref().and_then(|h| h.get("aud")).and_then(|a| a.as_str().map(str::to_string));
    if let (Some(given), Some(aud)) = (get("client_id"), hint_aud.as_deref()) {
        if given != aud {
            return error_page(&state, &req, "The id_token_hint was issued to another client than client_id names.");
        }
    }
    let client_id = get("client_id").map(str::to_string).or(hint_aud);
    let mut target = None;
    if let (Some(uri), Some(id)) = (get("post_logout_redirect_uri"), client_id.as_deref()) {
        if let Ok(Some(c)) = flows::client(&state, id).await {
            if c.post_logout_redirect_uris.iter().any(|u| u == uri) {
                target = Some(uri.to_string());
            }
        }
    }
    let caller = browser_caller(&state, &req).await;
    // A hint logs out without asking only the session it was issued in:
    // anyone can hold an ID token of their own.
    let hint_is_this_session = hint.as_ref().is_some_and(|h| match &caller {
        Some(c) => h.get("sid").and_then(|s| s.as_str()) == c.session_id.map(|s| s.to_string()).as_deref(),
        None => true,
    });
    let confirmed = if is_post {
        let sent = p.get("csrf").map(String::as_str).unwrap_or("");
        let (c, _) = Chrome::public(&state, &req);
        crate::auth::tokens::constant_time_eq(c.csrf.as_bytes(), sent.as_bytes())
    } else {
        hint_is_this_session
    };
    if !confirmed {
        let (c, cookie) = Chrome::public(&state, &req);
        let keep: Vec<(String, String)> = p.into_iter().filter(|(k, _)| k != "csrf").collect();
        let mut res = render(&state, StatusCode::OK, &LogoutPage { c, params: keep, done: false });
        if let Some(cookie) = cookie {
            let _ = res.add_cookie(&cookie);
        }
        return res;
    }
    if let Some(caller) = &caller {
        let audit = Audit::for_principal(&req, caller);
        if let Some(sid) = caller.session_id {
            if let Err(e) = crate::service::auth::logout(&state, &audit, Some(sid)).await {
                return PageError::from(e).error_response();
            }
            // A GET that wrote: settle as writes do (`access::settle`), so
            // the client's next call already finds the grant gone.
            state.auth_cache.sync(&state.pool).await;
        }
    }
    let mut gone = crate::api::auth::session_cookie(&state, String::new(), 0);
    gone.make_removal();
    let mut res = match target {
        Some(uri) => {
            let mut url = url::Url::parse(&uri).expect("registered URIs parse");
            if let Some(s) = get("state") {
                url.query_pairs_mut().append_pair("state", s);
            }
            crate::web::see_other(url.as_str())
        }
        None => {
            let (c, _) = Chrome::public(&state, &req);
            render(&state, StatusCode::OK, &LogoutPage { c, params: Vec::new(), done: true })
        }
    };
    let _ = res.add_cookie(&gone);
    res
}
