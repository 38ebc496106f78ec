//! Who is calling: resolved once per request from, in order, the session
//! cookie, `Authorization: Bearer <JWT>`, `Bearer <API key>`, or `Basic`
//! (username with password or API key). Each path is one indexed query, or
//! none when the caller is in the auth cache (`auth::cache`).

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;
use uuid::Uuid;

use crate::auth::cache::{CacheKey, Cached};
use crate::auth::tokens;
use crate::domain::Error;
use crate::domain::Permission;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    Cookie,
    Jwt,
    ApiKey,
    Basic,
}

/// An authenticated caller. Only ever built by `resolve`.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
    pub username: String,
    pub roles: Vec<String>,
    pub permissions: Vec<Permission>,
    pub session_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub method: AuthMethod,
    /// The caller's user row as read when the request was authenticated
    /// (shared with the auth cache's entry).
    pub user: std::sync::Arc<crate::store::users::User>,
    /// Authenticated by `Authorization: Basic` (password or API key).
    pub via_basic: bool,
    /// When the holder last proved who they are: the login that started the
    /// session, or this very request for a Basic password; never for an API
    /// key. See `auth::reauth`.
    pub authenticated_at: Option<DateTime<Utc>>,
    /// When the credential presented (session or API key) expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// When a second factor was last used in the session (`auth::stepup`).
    pub mfa_at: Option<DateTime<Utc>>,
    /// The session may only enrol a second factor (`mfa.required_for_roles`).
    pub mfa_enrollment_only: bool,
    /// A second factor was used in this session within `mfa.step_up_secs`.
    pub mfa_recent: bool,
    /// A provisioning credential: it holds SCIM_PROVISIONING only, and only
    /// `resolve_provisioning` (the SCIM routes) accepts it. Its name is the
    /// provisioning client's name.
    pub scim_client: Option<String>,
    /// The caller's own user object as the native API shows it, made once
    /// per cached credential (`api::users::read`).
    pub own_view: Memo,
}

/// What is made once from a cached credential's user row and kept with it:
/// it goes when the row goes (any change to the user drops it).
pub type Memo = std::sync::Arc<std::sync::OnceLock<actix_web::web::Bytes>>;

impl Principal {
    /// Whether a held permission implies `p` (`ADMIN` implies every one;
    /// see `Permission::implies`).
    pub fn has(&self, p: Permission) -> bool {
        self.permissions.iter().any(|held| held.implies(p))
    }
    pub fn is_admin(&self) -> bool {
        self.permissions.contains(&Permission::Admin)
    }
    pub fn is(&self, username: &str) -> bool {
        username == crate::domain::ME
            || username.eq_ignore_ascii_case(&self.username)
            || crate::domain::user_id_in(username) == Some(self.user_id)
    }
}

/// `me` means the caller everywhere a username is accepted.
pub fn resolve_me<'a>(caller: &'a Principal, username: &'a str) -> &'a str {
    if username == crate::domain::ME {
        &caller.username
    } else {
        username
    }
}

/// The credential headers of a request: `Authorization`, or the data
/// tracker's `X-API-User` + `X-API-Key` pair.
pub enum Credentials {
    None,
    Bearer(String),
    Basic {
        username: String,
        password: SecretString,
    },
    /// `X-API-Key` with the `X-API-User` it belongs to (a username, email
    /// address or user id).
    ApiKey {
        user: String,
        key: SecretString,
    },
    Malformed,
    /// Headers that cannot be used as given (400, with the reason).
    Unusable(&'static str),
}

/// What a request presented: a session cookie (ours or XNAT's `JSESSIONID`)
/// and an `Authorization` header.
pub struct Presented {
    pub cookie: Option<String>,
    pub header: Credentials,
}

pub const XNAT_COOKIE: &str = "JSESSIONID";

pub fn credentials(req: &HttpRequest, cookie_name: &str) -> Presented {
    let headers = req.headers();
    // Parsing cookies costs an allocation and an extension even when there
    // are none: token and key callers send no `Cookie` header.
    let cookie = headers
        .contains_key(actix_web::http::header::COOKIE)
        .then(|| req.cookie(cookie_name).or_else(|| req.cookie(XNAT_COOKIE)).map(|c| c.value().to_string()))
        .flatten();
    if let Some(key) = headers.get("x-api-key") {
        let header = if headers.contains_key(actix_web::http::header::AUTHORIZATION) {
            Credentials::Unusable("give either an Authorization header or X-API-Key, not both")
        } else if headers.get_all("x-api-key").count() > 1 || headers.get_all("x-api-user").count() > 1 {
            Credentials::Unusable("give X-API-User and X-API-Key once each")
        } else {
            match (headers.get("x-api-user").map(|u| u.to_str()), key.to_str()) {
                (None, _) => Credentials::Unusable("X-API-Key needs X-API-User, the user the key belongs to"),
                (Some(Ok(user)), Ok(key)) if !user.trim().is_empty() && user.len() <= 320 && key.len() <= 256 => {
                    Credentials::ApiKey {
                        user: user.trim().to_string(),
                        key: SecretString::from(key.trim().to_string()),
                    }
                }
                _ => Credentials::Malformed,
            }
        };
        return Presented { cookie, header };
    }
    let header = match headers.get(actix_web::http::header::AUTHORIZATION) {
        None => Credentials::None,
        Some(h) => match h.to_str() {
            Err(_) => Credentials::Malformed,
            Ok(h) => {
                if let Some(token) = h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")) {
                    Credentials::Bearer(token.trim().to_string())
                } else if let Some(b64) = h.strip_prefix("Basic ").or_else(|| h.strip_prefix("basic ")) {
                    parse_basic(b64.trim()).unwrap_or(Credentials::Malformed)
                } else {
                    Credentials::Malformed
                }
            }
        },
    };
    Presented { cookie, header }
}

/// Decodes the payload of `Authorization: Basic`; `None` if malformed.
pub fn parse_basic(b64: &str) -> Option<Credentials> {
    if b64.len() > 4096 {
        return None;
    }
    let raw = STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some(Credentials::Basic { username: user.to_string(), password: SecretString::from(pass.to_string()) })
}

/// What the auth cache keeps: the caller's user row with the state of the
/// session or key presented (`store::credentials`).
pub type Row = crate::store::credentials::Credential;

/// What each role grants, read from the `roles` table at start-up and
/// again whenever a role changes (`reload`: by the instance that changed it
/// before it answers, by the others when the `roles` notice arrives).
#[derive(Debug, Default, Clone)]
pub struct RolePermissions(std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, Vec<Permission>>>>);

impl RolePermissions {
    pub async fn load(pool: &sqlx::PgPool) -> Result<RolePermissions, Error> {
        let this = RolePermissions::default();
        this.reload(pool).await?;
        Ok(this)
    }

    /// Reads every role's permissions again.
    pub async fn reload(&self, pool: &sqlx::PgPool) -> Result<(), Error> {
        let rows = crate::store::roles::permissions(pool).await?;
        let map =
            rows.into_iter().map(|(r, ps)| (r, ps.iter().filter_map(|p| Permission::from_name(p)).collect())).collect();
        if let Ok(mut held) = self.0.write() {
            *held = map;
        }
        Ok(())
    }

    /// Follows role changes made by any instance: LISTENs on
    /// `registrar_roles` on its own connection and reloads on each notice,
    /// and after every (re)connection, since notices may have been missed.
    pub fn follow(&self, pool: &sqlx::PgPool) -> tokio::task::JoinHandle<()> {
        let (this, own_pool) = (self.clone(), pool.clone());
        crate::store::db::follow(pool, "registrar_roles", move || {
            let (this, pool) = (this.clone(), own_pool.clone());
            async move {
                if let Err(e) = this.reload(&pool).await {
                    tracing::warn!(error = %e, "could not reload the roles");
                }
            }
        })
    }

    pub fn of(&self, roles: &[String]) -> Vec<Permission> {
        let Ok(map) = self.0.read() else { return Vec::new() };
        let mut out: Vec<Permission> = roles.iter().filter_map(|r| map.get(r)).flatten().copied().collect();
        out.sort_by_key(|p| p.as_str());
        out.dedup();
        out
    }
}

fn principal_from(
    state: &AppState,
    (row, own_view): (&Row, &Memo),
    method: AuthMethod,
    now: DateTime<Utc>,
) -> Result<Principal, Error> {
    let invalid = || Error::unauthorized("invalid or expired credentials");
    if row.revoked_at.is_some() || row.expires_at.is_some_and(|e| e <= now) {
        return Err(invalid());
    }
    let session = matches!(method, AuthMethod::Cookie | AuthMethod::Jwt);
    if session
        && row.touched_at.is_some_and(|t| crate::store::sessions::idle(t, state.settings.auth.session_idle_secs, now))
    {
        return Err(invalid());
    }
    if !row.user.enabled {
        return Err(Error::unauthorized("account disabled"));
    }
    // A lockout stops password guesses (`users::check_login`), nothing else:
    // the holder's sessions, tokens and keys keep working, so failed guesses
    // by a stranger cannot lock an administrator out.
    let (session_id, api_key_id) = match method {
        AuthMethod::ApiKey => (None, Some(row.ref_id)),
        AuthMethod::Basic => (None, None),
        _ => (Some(row.ref_id), None),
    };
    let held = state.role_permissions.of(&row.user.roles);
    // A provisioning credential provisions while its owner is an
    // administrator, and does nothing else.
    let permissions = match row.scim_client.is_some() {
        true if held.contains(&Permission::Admin) => vec![Permission::ScimProvisioning],
        true => Vec::new(),
        false => held,
    };
    Ok(Principal {
        scim_client: row.scim_client.clone(),
        own_view: own_view.clone(),
        expires_at: row.expires_at,
        user_id: row.user.id,
        username: row.user.username.clone(),
        roles: row.user.roles.clone(),
        user: row.user.clone(),
        permissions,
        session_id,
        api_key_id,
        method,
        via_basic: false,
        authenticated_at: row.authenticated_at,
        mfa_recent: row
            .mfa_at
            .is_some_and(|t| (now - t).num_seconds() <= i64::try_from(state.settings.mfa.step_up_secs).unwrap_or(900)),
        mfa_at: row.mfa_at,
        mfa_enrollment_only: row.mfa_enrollment_only,
    })
}

/// Resolves what a request presented to a principal. `Ok(None)` means
/// anonymous; presented but invalid credentials are an error (401). An
/// explicit `Authorization` header wins over a cookie, with one exception
/// for XNAT clients (pyxnat sends its Basic credentials and its session
/// cookie on every request): a live session cookie of the very user named
/// by Basic is used as it is, so the password is not re-hashed each time; a
/// dead one falls back to the Basic credentials.
pub async fn resolve(
    state: &AppState,
    presented: Presented,
    client_ip: Option<String>,
) -> Result<Option<Principal>, Error> {
    match resolve_provisioning(state, presented, client_ip).await? {
        // A provisioning credential is good at /scim/v2 only.
        Some(p) if p.scim_client.is_some() => Err(Error::unauthorized("invalid or expired credentials")),
        other => Ok(other),
    }
}

/// `resolve`, also accepting a provisioning credential (the SCIM routes).
pub async fn resolve_provisioning(
    state: &AppState,
    presented: Presented,
    client_ip: Option<String>,
) -> Result<Option<Principal>, Error> {
    let now = Utc::now();
    if let Some(secret) = presented.cookie {
        match &presented.header {
            Credentials::None => return cookie_principal(state, &secret, now).await.map(Some),
            Credentials::Basic { username, .. } => {
                if let Ok(p) = cookie_principal(state, &secret, now).await {
                    if p.username.eq_ignore_ascii_case(username) {
                        return Ok(Some(p));
                    }
                }
            }
            _ => {}
        }
    }
    match presented.header {
        Credentials::None => Ok(None),
        Credentials::Malformed => Err(Error::unauthorized("malformed credential header")),
        Credentials::Unusable(why) => Err(Error::malformed("unusable_credentials", why)),
        Credentials::ApiKey { user, key } => {
            use secrecy::ExposeSecret;
            let Some((prefix, secret)) = tokens::parse_api_key(key.expose_secret()) else {
                return Err(Error::unauthorized("invalid or expired credentials"));
            };
            api_key_principal(state, prefix, secret, Some(&user), now).await.map(Some)
        }
        Credentials::Bearer(token) => {
            if let Some((prefix, secret)) = tokens::parse_api_key(&token) {
                return api_key_principal(state, prefix, secret, None, now).await.map(Some);
            }
            let mut claims = state.keys.verify_access(&token);
            if claims.is_none() && state.keys.names_unknown_key(&token) && state.keys.may_reload() {
                // Signed by a key another instance has just rotated in.
                crate::bootstrap::reload_secrets(&state.keys, &state.pool).await;
                claims = state.keys.verify_access(&token);
            }
            let claims = claims.ok_or_else(|| Error::unauthorized("invalid or expired credentials"))?;
            let key = CacheKey::Session(claims.sid);
            let row = cached(state, &key, crate::store::credentials::session_by_id(&state.pool, claims.sid)).await?;
            let (row, memo) = row.ok_or_else(|| Error::unauthorized("invalid or expired credentials"))?;
            if row.user.id != claims.sub || claims.iat < row.tokens_not_before.timestamp() {
                return Err(Error::unauthorized("invalid or expired credentials"));
            }
            touch_session(state, &key, &row, now).await;
            principal_from(state, (&row, &memo), AuthMethod::Jwt, now).map(Some)
        }
        Credentials::Basic { username, password } => {
            use secrecy::ExposeSecret;
            let pw = password.expose_secret();
            let mut p = if let Some((prefix, secret)) = tokens::parse_api_key(pw) {
                api_key_principal(state, prefix, secret, Some(&username), now).await?
            } else {
                let ctx = crate::audit::Audit::anonymous(crate::error::current_request_id(), client_ip);
                let user_id = crate::service::auth::basic_password(state, &ctx, &username, password).await?;
                let row = crate::store::credentials::user(&state.pool, user_id)
                    .await?
                    .ok_or_else(|| Error::unauthorized("invalid or expired credentials"))?;
                principal_from(state, (&row, &Memo::default()), AuthMethod::Basic, now)?
            };
            p.via_basic = true;
            Ok(Some(p))
        }
    }
}

async fn cookie_principal(state: &AppState, secret: &str, now: DateTime<Utc>) -> Result<Principal, Error> {
    if secret.len() > 128 {
        return Err(Error::unauthorized("invalid or expired credentials"));
    }
    let hash = tokens::sha256(secret);
    let key = CacheKey::Cookie(<[u8; 32]>::try_from(hash.as_slice()).unwrap_or_default());
    let row = cached(state, &key, crate::store::credentials::session_by_cookie(&state.pool, &hash)).await?;
    let (row, memo) = row.ok_or_else(|| Error::unauthorized("invalid or expired credentials"))?;
    touch_session(state, &key, &row, now).await;
    principal_from(state, (&row, &memo), AuthMethod::Cookie, now)
}

/// The row under `key`: from the auth cache, or read by `load` and cached.
async fn cached(
    state: &AppState,
    key: &CacheKey,
    load: impl std::future::Future<Output = Result<Option<Row>, Error>>,
) -> Result<Option<(std::sync::Arc<Row>, Memo)>, Error> {
    if let Some(Cached::Principal(row, memo)) = state.auth_cache.get(key) {
        return Ok(Some((row, memo)));
    }
    let ticket = state.auth_cache.ticket();
    let row = load.await?.map(|row| (std::sync::Arc::new(row), Memo::default()));
    if let Some((row, memo)) = &row {
        state.auth_cache.insert(ticket, key.clone(), row.user.id, Cached::Principal(row.clone(), memo.clone()));
    }
    Ok(row)
}

/// Records "last seen"/"last used" at most once a minute per session or
/// key, so reads stay reads.
async fn touch<F>(state: &AppState, key: &CacheKey, row: &Row, now: DateTime<Utc>, write: F)
where
    F: std::future::Future<Output = Result<(), Error>>,
{
    if row.touched_at.is_some_and(|t| (now - t).num_seconds() < 60) {
        return;
    }
    let _ = write.await;
    state.auth_cache.update(key, |c| {
        if let Cached::Principal(r, _) = c {
            std::sync::Arc::make_mut(r).touched_at = Some(now)
        }
    });
}

async fn touch_session(state: &AppState, key: &CacheKey, row: &Row, now: DateTime<Utc>) {
    // A dead session is not revived by being presented.
    let idle =
        row.touched_at.is_some_and(|t| crate::store::sessions::idle(t, state.settings.auth.session_idle_secs, now));
    if idle || row.revoked_at.is_some() || row.expires_at.is_some_and(|e| e <= now) {
        return;
    }
    touch(state, key, row, now, crate::store::credentials::touch_session(&state.pool, row.ref_id)).await
}

async fn api_key_principal(
    state: &AppState,
    prefix: &str,
    secret: &str,
    basic_user: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Principal, Error> {
    let invalid = || Error::unauthorized("invalid or expired credentials");
    let key = CacheKey::ApiKey(prefix.to_string());
    let row = cached(state, &key, crate::store::credentials::api_key(&state.pool, prefix)).await?;
    // Hash even when the prefix is unknown: the timing is the same either way.
    let (current, _) = state.keys.current_versions();
    let version = row.as_ref().map_or(current, |(r, _)| r.pepper_version);
    let mut presented = state.keys.api_key_hash_with(version, secret);
    if presented.is_none() && state.keys.may_reload() {
        // A key made under a pepper another instance has just rotated in.
        crate::bootstrap::reload_secrets(&state.keys, &state.pool).await;
        presented = state.keys.api_key_hash_with(version, secret);
    }
    let (row, memo) = row.ok_or_else(invalid)?;
    let stored = row.secret_hash.as_deref().unwrap_or_default();
    if !tokens::constant_time_eq(&presented.unwrap_or_default(), stored) {
        return Err(invalid());
    }
    if let Some(user) = basic_user {
        if !names(user, &row.user) {
            return Err(invalid());
        }
    }
    // Only a key that is let in is touched and, after a rotation, re-hashed
    // under the newest pepper (a revoked or expired one is left alone).
    let (id, version) = (row.ref_id, row.pepper_version);
    let principal = principal_from(state, (&row, &memo), AuthMethod::ApiKey, now)?;
    touch(state, &key, &row, now, crate::store::credentials::touch_api_key(&state.pool, id)).await;
    if state.keys.current_versions().1 > version {
        let (newest, rehashed) = state.keys.api_key_hash(secret);
        if let Err(e) = crate::store::secrets::rekey_api_key(&state.pool, id, version, newest, &rehashed).await {
            tracing::warn!(error = %e, "could not re-hash an API key under the newest pepper");
        }
    }
    Ok(principal)
}

/// Whether `given` names `user`: their username or email address (any
/// case) or their id.
fn names(given: &str, user: &crate::store::users::User) -> bool {
    given.eq_ignore_ascii_case(&user.username)
        || given.eq_ignore_ascii_case(&user.email)
        || crate::domain::user_id_in(given) == Some(user.id)
}

/// Extractor for handlers: the authenticated caller (401 if anonymous).
pub struct Caller(pub std::sync::Arc<Principal>);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<std::sync::Arc<Principal>>()
                .cloned()
                .map(Caller)
                .ok_or_else(|| ApiError::unauthorized("authentication required")),
        )
    }
}
