//! Access rules: every route declares who may call it where it is registered
//! (see `startup::routes`). The rule travels with the route: each resource
//! is wrapped in a guard holding its own rules, which runs after the router
//! has selected the resource and before any handler; a method with no rule
//! is denied. Handlers of non-public routes also take the caller by type
//! (`Caller`), which only this guard provides.

use std::collections::HashMap;

use std::rc::Rc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::Method;
use actix_web::{web, HttpMessage, ResponseError};
use futures_util::future::LocalBoxFuture;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::audit::{self, Audit, Changes};
use crate::auth::principal::{self, Principal};
use crate::domain::Permission;
use crate::error::ApiError;
use crate::state::AppState;

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
    /// Only the user named by the `{username}` path segment (or `me`):
    /// what nobody may do for someone else (enrolling a second factor).
    SelfOnly,
    /// An owner of the project named by the `{project}` path segment, or
    /// holders of the permission.
    ProjectOwnerOr(Permission),
    /// Any member (owner, member, collaborator) of the `{project}`, or
    /// holders of the permission.
    ProjectReaderOr(Permission),
    /// Holders of a resource permission (`store::permissions`) on this
    /// resource type for the request's method, on the resource the
    /// `{username}` or `{name}` path segment names (every resource when
    /// there is none); the user themself for reading a user; or holders of
    /// the permission.
    ResourceOr(&'static str, Permission),
    /// A caller presenting `metrics.token` as a bearer token, and nobody
    /// else (no session, key or role reaches it); 404 while it is unset.
    MetricsToken,
}

impl Rule {
    pub fn describe(&self) -> String {
        match self {
            Rule::Public => "public".into(),
            Rule::Authenticated => "authenticated".into(),
            Rule::Permission(p) => format!("permission:{p}"),
            Rule::SelfOr(p) => format!("self-or-permission:{p}"),
            Rule::SelfOnly => "self".into(),
            Rule::ProjectOwnerOr(p) => format!("project-owner-or-permission:{p}"),
            Rule::ProjectReaderOr(p) => format!("project-member-or-permission:{p}"),
            Rule::ResourceOr(kind, p) => format!("resource:{kind}-or-permission:{p}"),
            Rule::MetricsToken => "metrics-token".into(),
        }
    }
}

/// The declared rule of every (method, path pattern) the app serves.
#[derive(Debug, Default)]
pub struct RouteTable {
    pub entries: Vec<(Method, String, Rule)>,
}

impl RouteTable {
    pub fn insert(&mut self, method: Method, path: &str, rule: Rule) {
        self.entries.push((method, path.to_string(), rule));
    }
}

/// The rules of one resource (one path pattern), by method. Each resource is
/// wrapped in its own guard (`startup`), so the rule enforced is always the
/// rule of the resource the router selected: the path is matched once, by
/// the router, on the same (decoded) path the handler sees. A request that
/// matches no resource reaches no handler (404); a method with no rule is
/// refused (405) without reaching one.
#[derive(Debug, Clone)]
pub struct ResourceRules {
    pub pattern: &'static str,
    pub by_method: std::sync::Arc<MethodRules>,
}

/// A resource's rules by method (foldhash: looked up on every request).
pub type MethodRules = HashMap<Method, Rule, foldhash::fast::RandomState>;

impl ResourceRules {
    fn rule_for(&self, method: &Method) -> Option<Rule> {
        // HEAD too must be declared: `web::get()` routes do not answer it.
        self.by_method.get(method).copied()
    }

    /// The `Allow` header of a 405 (RFC 9110 §15.5.6): the methods this
    /// resource declares, in a fixed order.
    fn allow(&self) -> actix_web::http::header::HeaderValue {
        let mut methods: Vec<&str> = self.by_method.keys().map(Method::as_str).collect();
        methods.sort_unstable();
        actix_web::http::header::HeaderValue::from_str(&methods.join(", "))
            .unwrap_or_else(|_| actix_web::http::header::HeaderValue::from_static(""))
    }
}

/// The value of path parameter `name` of the matched route, decoded exactly
/// as the handler's `web::Path` extractor decodes it.
pub fn param(req: &ServiceRequest, name: &str) -> Option<String> {
    req.match_info().get(name).map(|raw| percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned())
}

/// The guard of one resource (`enforce`), wrapped around it where it is
/// registered. Written out rather than made with `middleware::from_fn`,
/// which costs two boxed futures and a dynamic call per request.
pub struct Guard(pub ResourceRules);

impl<S, B> Transform<S, ServiceRequest> for Guard
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Transform = GuardService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<GuardService<S>, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(GuardService { rules: Rc::new(self.0.clone()), service: Rc::new(service) }))
    }
}

pub struct GuardService<S> {
    rules: Rc<ResourceRules>,
    service: Rc<S>,
}

impl<S, B> Service<ServiceRequest> for GuardService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        Box::pin(enforce(self.rules.clone(), req, self.service.clone()))
    }
}

/// The guard of one resource: authenticate, check CSRF, authorize, in that
/// order, then the handler with the caller in the request's extensions.
async fn enforce<S, B>(
    rules: Rc<ResourceRules>,
    req: ServiceRequest,
    next: Rc<S>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    req.extensions_mut().insert(crate::telemetry::RoutePattern(rules.pattern));
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(deny(req, rules.pattern, ApiError::internal(anyhow::anyhow!("application state missing"))));
    };
    let Some(rule) = rules.rule_for(req.method()) else {
        // Deny by default: a method this resource declares no rule for.
        let err = ApiError::new(
            actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        );
        let mut res = deny(req, rules.pattern, err);
        res.headers_mut().insert(actix_web::http::header::ALLOW, rules.allow());
        return Ok(res);
    };
    if rule == Rule::Public {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    if rule == Rule::MetricsToken {
        return match metrics_token(&state, &req) {
            Ok(()) => Ok(next.call(req).await?.map_into_boxed_body()),
            Err(e) => Ok(deny(req, rules.pattern, e)),
        };
    }
    let provisioning = rule == Rule::Permission(crate::domain::Permission::ScimProvisioning);
    let principal = match authenticate(&state, &req, provisioning).await {
        Ok(p) => p,
        Err(e) => return Ok(deny(req, rules.pattern, e)),
    };
    if let Err(e) = check_csrf(&state, &req, &principal) {
        return Ok(deny(req, rules.pattern, e));
    }
    if principal.mfa_enrollment_only && !ENROLLMENT_ROUTES.contains(&(req.method().as_str(), rules.pattern)) {
        let err = ApiError::forbidden(
            "this account must enrol a second factor first: POST /api/v1/users/me/mfa/totp, then .../totp/confirm (or a passkey: .../mfa/passkeys)",
        )
        .with_code("mfa_enrollment_required");
        return Ok(deny(req, rules.pattern, err));
    }
    if let Err(e) = authorize(&state, &req, rule, &principal, rules.pattern).await {
        return Ok(deny(req, rules.pattern, e));
    }
    req.extensions_mut().insert(std::sync::Arc::new(principal));
    let mut res = next.call(req).await?.map_into_boxed_body();
    // What an authenticated caller sees is theirs alone: no shared or browser cache keeps it.
    crate::http::no_store(res.headers_mut());
    Ok(res)
}

/// `Authorization: Bearer <metrics.token>`, compared in constant time; the
/// endpoint does not exist while no token is configured.
fn metrics_token(state: &AppState, req: &ServiceRequest) -> Result<(), ApiError> {
    use secrecy::ExposeSecret;
    let expected = state.settings.metrics.token.expose_secret();
    if expected.is_empty() {
        return Err(ApiError::not_found("not_found", "no such route"));
    }
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (Sha256::digest(presented.as_bytes()), Sha256::digest(expected.as_bytes()));
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("the metrics token is required"))
    }
}

/// Who is calling: 401 when nobody, or when what was presented is invalid.
async fn authenticate(state: &AppState, req: &ServiceRequest, provisioning: bool) -> Result<Principal, ApiError> {
    let creds = principal::credentials(req.request(), &state.settings.auth.cookie_name());
    // The client's address matters only to a password check (rate limits, log).
    let ip = matches!(creds.header, principal::Credentials::Basic { .. })
        .then(|| crate::audit::client_ip(req.request()))
        .flatten();
    let found = if provisioning {
        principal::resolve_provisioning(state, creds, ip).await?
    } else {
        principal::resolve(state, creds, ip).await?
    };
    found.ok_or_else(|| ApiError::unauthorized("authentication required"))
}

/// A write that rides on an ambient credential (a session cookie, or Basic
/// credentials a browser may have cached after a `WWW-Authenticate`
/// prompt) must come from this origin.
fn check_csrf(state: &AppState, req: &ServiceRequest, principal: &Principal) -> Result<(), ApiError> {
    if (principal.method == principal::AuthMethod::Cookie || principal.via_basic)
        && writes(req.method())
        && cross_site(req.request(), &state.settings.public_url)
    {
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "cross_site_request",
            "a cross-site request with a session cookie is refused",
        ));
    }
    Ok(())
}

/// The route's rule, then the administrator-target rule for writes on an
/// account; every refusal is logged (`authorization.denied`).
async fn authorize(
    state: &AppState,
    req: &ServiceRequest,
    rule: Rule,
    principal: &Principal,
    pattern: &str,
) -> Result<(), ApiError> {
    let allowed = match rule {
        Rule::Public | Rule::Authenticated => true,
        // Never a principal's: the token is checked before authentication.
        Rule::MetricsToken => false,
        Rule::Permission(p) => principal.has(p),
        Rule::SelfOr(p) => principal.has(p) || param(req, "username").is_some_and(|u| principal.is(&u)),
        Rule::SelfOnly => param(req, "username").is_some_and(|u| principal.is(&u)),
        Rule::ResourceOr(_, p) if principal.has(p) => true,
        Rule::ResourceOr(kind, _) => {
            let wanted = crate::store::permissions::Permission {
                resource_type: kind.to_string(),
                resource_id: param(req, "username").or_else(|| param(req, "name")),
                method: req.method().as_str().to_ascii_lowercase(),
            };
            crate::service::permissions::allows(&state.pool, principal, &wanted).await?
        }
        Rule::ProjectOwnerOr(p) | Rule::ProjectReaderOr(p) if principal.has(p) => true,
        Rule::ProjectOwnerOr(_) | Rule::ProjectReaderOr(_) => match param(req, "project") {
            None => false,
            Some(project) => {
                let level = crate::store::projects::level_in(&state.pool, principal.user_id, &project).await?;
                if matches!(rule, Rule::ProjectOwnerOr(_)) {
                    level == Some(crate::domain::Level::Owner)
                } else {
                    level.is_some()
                }
            }
        },
    };
    if !allowed {
        log_denied(state, req, principal, pattern).await;
        return Err(ApiError::forbidden("you are not allowed to do this"));
    }
    // One rule for every write whose target is a user account: an account
    // holding Administrator is managed by administrators only.
    if writes(req.method()) && matches!(rule, Rule::SelfOr(_) | Rule::Permission(_) | Rule::ResourceOr("user", _)) {
        if let Some(target) = param(req, "username") {
            if !may_act_on(&state.pool, principal, &target).await? {
                log_denied(state, req, principal, pattern).await;
                return Err(admin_target_refused().into());
            }
        }
    }
    Ok(())
}

/// The refusal of a write on an administrator's account by a non-administrator.
pub fn admin_target_refused() -> crate::domain::Error {
    crate::domain::Error::forbidden("only an administrator may manage an administrator account")
}

/// Whether `caller` may write to the account named `target` (a username or
/// `me`): always on their own account (what they may change there is the
/// route's business), otherwise not on an account holding Administrator
/// unless they hold ADMIN themselves.
pub async fn may_act_on(pool: &sqlx::PgPool, caller: &Principal, target: &str) -> Result<bool, ApiError> {
    if caller.is(target) || caller.is_admin() {
        return Ok(true);
    }
    Ok(!crate::store::users::holds_admin(pool, target).await?)
}

/// `may_act_on` for a target known by id (sessions, keys).
pub async fn may_act_on_id(pool: &sqlx::PgPool, caller: &Principal, target: uuid::Uuid) -> Result<bool, ApiError> {
    if caller.user_id == target || caller.is_admin() {
        return Ok(true);
    }
    Ok(!crate::store::users::holds_admin_id(pool, target).await?)
}

/// CSRF defence for cookie-authenticated writes: a browser says where a
/// request comes from (`Sec-Fetch-Site`, else `Origin`); anything but this
/// origin is refused. A request with neither header is not from a browser and
/// carries no ambient credential it didn't choose to send.
pub fn cross_site(req: &actix_web::HttpRequest, public_url: &str) -> bool {
    let headers = req.headers();
    // A browser sends each once: several of either are not to be trusted.
    if headers.get_all("sec-fetch-site").count() > 1 || headers.get_all(actix_web::http::header::ORIGIN).count() > 1 {
        return true;
    }
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

pub fn writes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Password logins. A successful one changes nobody's access: it adds a
/// session (not cached anywhere yet) and login bookkeeping (not announced,
/// see migration `20261124000002`), so it has nothing to settle.
const LOGIN_PATHS: [&str; 2] = ["/api/v1/auth/login", "/data/services/auth"];

/// What a session that must enrol a second factor first may call
/// (`mfa.required_for_roles`): the enrolment, and logging out.
const ENROLLMENT_ROUTES: [(&str, &str); 12] = [
    ("GET", "/api/v1/users/{username}/mfa"),
    ("POST", "/api/v1/users/{username}/mfa/totp"),
    ("POST", "/api/v1/users/{username}/mfa/totp/confirm"),
    ("POST", "/api/v1/users/{username}/mfa/passkeys/options"),
    ("POST", "/api/v1/users/{username}/mfa/passkeys"),
    ("GET", "/account/mfa"),
    ("POST", "/account/mfa/totp"),
    ("POST", "/account/mfa/totp/confirm"),
    ("POST", "/account/mfa/passkeys/options"),
    ("POST", "/account/mfa/passkeys"),
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/logout"),
];

/// The OpenID Provider's client-facing POSTs that need not settle: userinfo
/// and introspection only read, and the token endpoint settles itself when
/// it revokes a grant (a replayed code, a reused refresh token).
/// `/oauth2/revoke` settles like any write.
const PROVIDER_PATHS: [&str; 3] = ["/oauth2/token", "/oauth2/introspect", "/oauth2/userinfo"];

/// What a request must wait for once answered (`settle`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// A read, or a provider POST that only reads (`PROVIDER_PATHS`).
    Nothing,
    /// A request that may have written (any method but GET, HEAD, OPTIONS).
    Write,
    /// A password login (`LOGIN_PATHS`): settles only when it failed.
    Login,
}

/// What a request with `method`, routed to the resource `pattern`, settles.
pub fn settle_rule(method: &Method, pattern: &str) -> Settle {
    if !writes(method) || PROVIDER_PATHS.contains(&pattern) {
        Settle::Nothing
    } else if LOGIN_PATHS.contains(&pattern) {
        Settle::Login
    } else {
        Settle::Write
    }
}

/// After a request that may have written: waits until this instance's auth
/// cache has applied the invalidations its commit announced, so the answer
/// never precedes the revocation it reports. Successful logins are exempt
/// (`LOGIN_PATHS`); a failed one may have locked the account and settles
/// like any write.
pub async fn settle(state: &AppState, rule: Settle, status: actix_web::http::StatusCode) {
    if rule == Settle::Write || (rule == Settle::Login && !status.is_success()) {
        state.auth_cache.sync(&state.pool).await;
    }
}

/// XNAT's body of a 401 on `/data` paths: pyxnat recognises exactly these
/// words as "authentication failed".
pub const XNAT_UNAUTHENTICATED_BODY: &str = "The request requires user authentication";

/// The refusal of a request routed to the resource `pattern`, in the shape
/// its front end speaks (a page, SCIM's error, XNAT's words, or the native
/// JSON error). Decided by the route, never by the raw path (`/%64ata/...`
/// is routed to `/data/...`). Never kept by a cache.
fn deny(req: ServiceRequest, pattern: &str, err: ApiError) -> ServiceResponse<BoxBody> {
    let mut res = if crate::web::is_page(pattern) {
        crate::web::denied(req.request(), err)
    } else if crate::scim::is_scim(pattern) {
        crate::scim::denied(&err)
    } else if err.status == actix_web::http::StatusCode::UNAUTHORIZED
        && (pattern == "/data" || pattern.starts_with("/data/"))
    {
        // XNAT's own words: pyxnat recognises exactly this body as "authentication failed".
        actix_web::HttpResponse::Unauthorized()
            .content_type("text/plain; charset=utf-8")
            .insert_header(("WWW-Authenticate", "Basic realm=\"registrar\""))
            .body(XNAT_UNAUTHENTICATED_BODY)
    } else {
        err.error_response()
    };
    crate::http::no_store(res.headers_mut());
    req.into_response(res)
}

async fn log_denied(state: &AppState, req: &ServiceRequest, p: &Principal, pattern: &str) {
    let audit = Audit {
        actor_id: Some(p.user_id),
        actor_username: Some(p.username.clone()),
        session_id: p.session_id,
        api_key_id: p.api_key_id,
        request_id: crate::telemetry::current_request_id(),
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
