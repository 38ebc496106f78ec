//! Access rules: every route declares who may call it where it is registered
//! (see `startup::routes`). One middleware enforces the rule before the
//! handler runs; a route that declares no rule is denied.

use std::collections::HashMap;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};

use crate::audit::{self, Audit, Changes};
use crate::auth::principal::{self, Principal};
use crate::domain::Permission;
use crate::error::ApiError;
use crate::startup::AppState;
use crate::telemetry::RequestId;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, with or without credentials.
    Public,
    /// Any enabled, authenticated user.
    Authenticated,
    /// Holders of the permission (`ADMIN` implies all).
    Permission(Permission),
    /// The user named by the `{username}` path segment (or `me`), or holders
    /// of the permission.
    SelfOr(Permission),
    /// An owner of the project named by the `{project}` path segment, or
    /// holders of the permission.
    ProjectOwnerOr(Permission),
    /// Any member (owner, member, collaborator) of the `{project}`, or
    /// holders of the permission.
    ProjectReaderOr(Permission),
}

impl Rule {
    pub fn describe(&self) -> String {
        match self {
            Rule::Public => "public".into(),
            Rule::Authenticated => "authenticated".into(),
            Rule::Permission(p) => format!("permission:{p}"),
            Rule::SelfOr(p) => format!("self-or-permission:{p}"),
            Rule::ProjectOwnerOr(p) => format!("project-owner-or-permission:{p}"),
            Rule::ProjectReaderOr(p) => format!("project-member-or-permission:{p}"),
        }
    }
}

/// The declared rule of every (method, path pattern) the app serves.
#[derive(Debug, Default)]
pub struct RouteTable {
    rules: HashMap<String, HashMap<Method, Rule>>,
    pub entries: Vec<(Method, String, Rule)>,
}

impl RouteTable {
    pub fn insert(&mut self, method: Method, path: &str, rule: Rule) {
        self.rules.entry(path.to_string()).or_default().insert(method.clone(), rule);
        self.entries.push((method, path.to_string(), rule));
    }
}

/// Resolves the caller and enforces the route's declared rule.
pub async fn enforce(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let (Some(table), Some(state)) =
        (req.app_data::<web::Data<RouteTable>>().cloned(), req.app_data::<web::Data<AppState>>().cloned())
    else {
        return Ok(deny(req, ApiError::internal(anyhow::anyhow!("access table missing"))));
    };
    // The pattern comes from the app's resource map, so this works before routing.
    let Some(pattern) = req.match_pattern() else {
        // Unknown path: the router answers 404.
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let rule = match table.rules.get(&pattern) {
        Some(methods) => match methods.get(req.method()) {
            Some(rule) => *rule,
            None if req.method() == Method::HEAD && methods.contains_key(&Method::GET) => methods[&Method::GET],
            // The resource answers 405 for methods it does not have.
            None => return Ok(next.call(req).await?.map_into_boxed_body()),
        },
        None => {
            tracing::error!(%pattern, "route registered without an access rule: denied");
            return Ok(deny(req, ApiError::forbidden("this route declares no access rule")));
        }
    };
    if rule == Rule::Public {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let creds = principal::credentials(req.request(), &state.settings.auth.session_cookie_name);
    let ip = crate::audit::client_ip(req.request());
    let principal = match principal::resolve(&state, creds, ip).await {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(deny(req, ApiError::unauthorized("authentication required"))),
        Err(e) => return Ok(deny(req, e)),
    };
    if principal.method == principal::AuthMethod::Cookie
        && writes(req.method())
        && cross_site(req.request(), &state.settings.public_url)
    {
        return Ok(deny(
            req,
            ApiError::new(
                actix_web::http::StatusCode::FORBIDDEN,
                "cross_site_request",
                "a cross-site request with a session cookie is refused",
            ),
        ));
    }
    let allowed = match rule {
        Rule::Public | Rule::Authenticated => true,
        Rule::Permission(p) => principal.has(p),
        Rule::SelfOr(p) => {
            principal.has(p) || path_param(&pattern, req.path(), "{username}").is_some_and(|u| principal.is(&u))
        }
        Rule::ProjectOwnerOr(p) | Rule::ProjectReaderOr(p) if principal.has(p) => true,
        Rule::ProjectOwnerOr(_) | Rule::ProjectReaderOr(_) => {
            let Some(project) = path_param(&pattern, req.path(), "{project}") else {
                return Ok(deny(req, ApiError::forbidden("you are not allowed to do this")));
            };
            match crate::store::projects::level_in(&state.pool, principal.user_id, &project).await {
                Ok(level) if matches!(rule, Rule::ProjectOwnerOr(_)) => level == Some(crate::domain::Level::Owner),
                Ok(level) => level.is_some(),
                Err(e) => return Ok(deny(req, e)),
            }
        }
    };
    if !allowed {
        log_denied(&state, &req, &principal, &pattern).await;
        return Ok(deny(req, ApiError::forbidden("you are not allowed to do this")));
    }
    let mut principal = principal;
    let mut new_cookie = None;
    if principal.via_basic && principal.session_id.is_none() && crate::xnat::is_xnat_path(req.path()) {
        match crate::xnat::start_session(&state, req.request(), &mut principal).await {
            Ok(secret) => {
                req.extensions_mut().insert(crate::xnat::NewSessionCookie(secret.clone()));
                new_cookie = Some(secret);
            }
            Err(e) => return Ok(deny(req, e)),
        }
    }
    req.extensions_mut().insert(principal);
    let mut res = next.call(req).await?.map_into_boxed_body();
    if let Some(secret) = new_cookie {
        let _ = res.response_mut().add_cookie(&crate::xnat::jsession_cookie(&state, secret));
    }
    // What an authenticated caller sees is theirs alone: no shared or browser cache keeps it.
    let headers = res.headers_mut();
    if !headers.contains_key(actix_web::http::header::CACHE_CONTROL) {
        headers.insert(
            actix_web::http::header::CACHE_CONTROL,
            actix_web::http::header::HeaderValue::from_static("no-store"),
        );
    }
    Ok(res)
}

/// CSRF defence for cookie-authenticated writes: a browser says where a
/// request comes from (`Sec-Fetch-Site`, else `Origin`); anything but this
/// origin is refused. A request with neither header is not from a browser and
/// carries no ambient credential it didn't choose to send.
pub fn cross_site(req: &actix_web::HttpRequest, public_url: &str) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    let Some(origin) = headers.get(actix_web::http::header::ORIGIN) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return true;
    };
    if origin.eq_ignore_ascii_case(public_url.trim_end_matches('/')) {
        return false;
    }
    let authority = origin.split_once("://").map(|(_, a)| a);
    let host = headers.get(actix_web::http::header::HOST).and_then(|h| h.to_str().ok());
    !matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

fn writes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Password logins. A successful one changes nobody's access: it adds a
/// session (not cached anywhere yet) and login bookkeeping (not announced,
/// see migration `20261124000002`), so it has nothing to settle.
const LOGIN_PATHS: [&str; 2] = ["/api/v1/auth/login", "/data/services/auth"];

/// After a request that may have written (any method but GET, HEAD,
/// OPTIONS): waits until this instance's auth cache has applied the
/// invalidations its commit announced, so the answer never precedes the
/// revocation it reports. Successful logins are exempt (`LOGIN_PATHS`); a
/// failed one may have locked the account and settles like any write.
pub async fn settle_writes(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = writes(req.method()).then(|| req.app_data::<web::Data<AppState>>().cloned()).flatten();
    let login = LOGIN_PATHS.contains(&req.path());
    let res = next.call(req).await?.map_into_boxed_body();
    if let Some(state) = state {
        if !(login && res.status().is_success()) {
            state.auth_cache.sync(&state.pool).await;
        }
    }
    Ok(res)
}

fn deny(req: ServiceRequest, err: ApiError) -> ServiceResponse<BoxBody> {
    if err.status == actix_web::http::StatusCode::UNAUTHORIZED && req.path().starts_with("/data") {
        // XNAT's own words: pyxnat recognises exactly this body as "authentication failed".
        let resp = actix_web::HttpResponse::Unauthorized()
            .content_type("text/plain; charset=utf-8")
            .insert_header(("WWW-Authenticate", "Basic realm=\"registrar\""))
            .body(crate::xnat::UNAUTHENTICATED_BODY);
        return req.into_response(resp);
    }
    req.into_response(err.error_response())
}

/// The value of the `name` segment (e.g. `{username}`) of `path` under `pattern`.
pub fn path_param(pattern: &str, path: &str, name: &str) -> Option<String> {
    let idx = pattern.split('/').position(|s| s == name)?;
    let seg = path.split('/').nth(idx)?;
    Some(percent_decode(seg))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn log_denied(state: &AppState, req: &ServiceRequest, p: &Principal, pattern: &str) {
    let audit = Audit {
        actor_id: Some(p.user_id),
        actor_username: Some(p.username.clone()),
        session_id: p.session_id,
        api_key_id: p.api_key_id,
        request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
        client_ip: crate::audit::client_ip(req.request()),
    };
    let subject = format!("{} {}", req.method(), pattern);
    if let Err(e) = audit::record(
        &state.pool,
        &audit,
        "route",
        &subject,
        "authorization.denied",
        Changes::new().set("path", req.path()),
    )
    .await
    {
        tracing::warn!(error = %e, "could not log a denied authorization");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_path_segments() {
        let p = "/api/v1/users/{username}/roles";
        assert_eq!(path_param(p, "/api/v1/users/alice/roles", "{username}").as_deref(), Some("alice"));
        let p = "/api/v1/users/{username}";
        assert_eq!(path_param(p, "/api/v1/users/a%2Eb", "{username}").as_deref(), Some("a.b"));
        assert_eq!(path_param("/api/v1/users", "/api/v1/users", "{username}"), None);
        let p = "/api/v1/projects/{project}/members/{username}";
        assert_eq!(path_param(p, "/api/v1/projects/P1/members/bob", "{project}").as_deref(), Some("P1"));
    }
}
