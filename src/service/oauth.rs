//! registrar as an OpenID Provider: clients, the authorization decisions,
//! and the tokens (ID tokens, access tokens as RFC 9068 JWTs, rotating
//! refresh tokens). Every token belongs to a grant (`store::oauth`); a grant
//! lives while its user is enabled and the registrar session that
//! authorized it lives, so disabling a user or ending their session takes
//! effect on the next refresh, userinfo or introspection call. Claims are
//! read from the database at code exchange and refresh; userinfo and
//! introspection read them through the auth cache, which every change they
//! depend on invalidates (migration `20261201000012_provider_cache`).

use std::sync::Arc;

use chrono::Utc;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::audit::Audit;
use crate::auth::cache::{CacheKey, Cached};
use crate::auth::tokens;
use crate::domain::{Error, Result};
use crate::state::AppState;
use crate::store::oauth::{self, Client, Grant, NewClient};
use crate::store::{groups, users};

/// The scopes a client may be allowed.
pub const SCOPES: &[&str] = &["openid", "profile", "email", "groups", "projects", "roles", "offline_access"];
/// The grant types a client may be allowed.
pub const GRANT_TYPES: &[&str] = &["authorization_code", "refresh_token", "client_credentials"];
/// The algorithms a client's tokens may be signed with.
pub const SIGNING_ALGS: &[&str] = &["RS256", "ES256"];
/// Seconds an authorization code lives.
pub const CODE_TTL_SECS: i64 = 60;

/// A client registration (native API, admin console, command line).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientRequest {
    pub name: String,
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// No secret (a browser or native app): PKCE only.
    #[serde(default)]
    pub public: bool,
    /// Default: openid profile email.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Default: authorization_code, refresh_token.
    #[serde(default)]
    pub grant_types: Vec<String>,
    /// Trusted: users are not asked for consent.
    #[serde(default)]
    pub first_party: bool,
    /// Where to POST a logout token when a user's registrar session ends.
    pub backchannel_logout_uri: Option<String>,
    /// The algorithm of the client's ID and access tokens: `RS256` (the
    /// default every OpenID Connect relying party accepts) or `ES256`.
    pub signing_alg: Option<String>,
}

fn check_uri(field: &'static str, raw: &str) -> Result<String> {
    let bad = || {
        Error::invalid("invalid_uri", format!("{field}: '{raw}' is not an absolute http(s) URL without a fragment"))
            .on_field(field)
    };
    let url = url::Url::parse(raw).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.fragment().is_some()
        || url.host_str().is_none()
        || raw.len() > 2000
    {
        return Err(bad());
    }
    Ok(raw.to_string())
}

/// Registers a client. The secret (confidential clients) is in the answer only.
pub async fn create_client(
    pool: &sqlx::PgPool,
    keys: &tokens::Keys,
    audit: &Audit,
    req: ClientRequest,
) -> Result<(Client, Option<String>)> {
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Error::invalid("invalid_name", "name must be 1-100 characters").on_field("name"));
    }
    if req.redirect_uris.is_empty() || req.redirect_uris.len() > 20 {
        return Err(Error::invalid("invalid_redirect_uris", "give 1-20 redirect_uris").on_field("redirect_uris"));
    }
    let redirect_uris = req.redirect_uris.iter().map(|u| check_uri("redirect_uris", u)).collect::<Result<Vec<_>>>()?;
    let post_logout = req
        .post_logout_redirect_uris
        .iter()
        .map(|u| check_uri("post_logout_redirect_uris", u))
        .collect::<Result<Vec<_>>>()?;
    let backchannel =
        req.backchannel_logout_uri.as_deref().map(|u| check_uri("backchannel_logout_uri", u)).transpose()?;
    let mut scopes =
        if req.scopes.is_empty() { vec!["openid".into(), "profile".into(), "email".into()] } else { req.scopes };
    scopes.sort();
    scopes.dedup();
    if let Some(s) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(Error::invalid("invalid_scope", format!("unknown scope '{s}' (known: {})", SCOPES.join(" ")))
            .on_field("scopes"));
    }
    let mut grant_types = if req.grant_types.is_empty() {
        vec!["authorization_code".into(), "refresh_token".into()]
    } else {
        req.grant_types
    };
    grant_types.sort();
    grant_types.dedup();
    if let Some(g) = grant_types.iter().find(|g| !GRANT_TYPES.contains(&g.as_str())) {
        return Err(Error::invalid("invalid_grant_type", format!("unknown grant type '{g}'")).on_field("grant_types"));
    }
    if req.public && grant_types.iter().any(|g| g == "client_credentials") {
        return Err(Error::invalid("invalid_grant_type", "a public client cannot use client_credentials")
            .on_field("grant_types"));
    }
    let signing_alg = req.signing_alg.unwrap_or_else(|| "RS256".into());
    if !SIGNING_ALGS.contains(&signing_alg.as_str()) {
        return Err(Error::invalid(
            "invalid_signing_alg",
            format!("signing_alg must be one of {}", SIGNING_ALGS.join(", ")),
        )
        .on_field("signing_alg"));
    }
    let client_id = format!("rc_{}", &tokens::random_secret()[..20].replace(['-', '_'], "x"));
    let secret = (!req.public).then(tokens::random_secret);
    let new = NewClient {
        client_id,
        name: name.to_string(),
        secret_hash: secret.as_deref().map(|s| keys.secret_hash(s)),
        first_party: req.first_party,
        redirect_uris,
        post_logout_redirect_uris: post_logout,
        scopes,
        grant_types,
        backchannel_logout_uri: backchannel,
        signing_alg,
    };
    let mut tx = pool.begin().await?;
    let client = oauth::create_client(&mut tx, audit, new).await?;
    tx.commit().await?;
    Ok((client, secret))
}

/// Deletes a client and everything it was granted.
pub async fn delete_client(pool: &sqlx::PgPool, audit: &Audit, client_id: &str) -> Result<Client> {
    let mut tx = pool.begin().await?;
    let c = oauth::delete_client(&mut tx, audit, client_id).await?;
    tx.commit().await?;
    Ok(c)
}

/// Withdraws a user's consent to a client (its grants end).
pub async fn revoke_consent(pool: &sqlx::PgPool, audit: &Audit, user: Uuid, client_id: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    oauth::revoke_consent(&mut tx, audit, user, client_id).await?;
    tx.commit().await?;
    Ok(())
}

/// A client revokes one of its grants (RFC 7009): another client's grant
/// is left alone, silently.
pub async fn revoke_for_client(pool: &sqlx::PgPool, audit: &Audit, client: &Client, grant: Uuid) -> Result<()> {
    let mut tx = pool.begin().await?;
    if oauth::grant_client(&mut tx, grant).await?.is_some_and(|c| c == client.client_id) {
        oauth::revoke_grant(&mut tx, audit, grant, "revoked by the client").await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Whether `secret` is the client's (constant time).
pub fn secret_matches(state: &AppState, client: &Client, secret: &str) -> bool {
    match &client.secret_hash {
        Some(hash) => tokens::constant_time_eq(hash, &state.keys.secret_hash(secret)),
        None => false,
    }
}

/// PKCE S256: BASE64URL(SHA256(verifier)) == challenge.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    use base64::Engine;
    let ok_chars = verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !(43..=128).contains(&verifier.len()) || !ok_chars {
        return false;
    }
    let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    tokens::constant_time_eq(digest.as_bytes(), challenge.as_bytes())
}

/// The claims of a user for `scopes`, read now.
pub async fn user_claims(
    conn: &mut sqlx::PgConnection,
    user_id: Uuid,
    scopes: &[String],
) -> Result<Map<String, Value>> {
    let user = users::get_by_id(conn, user_id).await?;
    claims_of(conn, &user, scopes).await
}

async fn claims_of(conn: &mut sqlx::PgConnection, user: &users::User, scopes: &[String]) -> Result<Map<String, Value>> {
    let has = |s: &str| scopes.iter().any(|x| x == s);
    let mut c = Map::new();
    c.insert("sub".into(), json!(user.id));
    if has("profile") {
        let name = format!("{} {}", user.first_name, user.last_name).trim().to_string();
        c.insert("preferred_username".into(), json!(user.username));
        c.insert("name".into(), json!(if name.is_empty() { user.username.clone() } else { name }));
        c.insert("given_name".into(), json!(user.first_name));
        c.insert("family_name".into(), json!(user.last_name));
    }
    if has("email") {
        c.insert("email".into(), json!(user.email));
        c.insert("email_verified".into(), json!(user.verified));
    }
    if has("roles") {
        c.insert("roles".into(), json!(user.roles));
    }
    if has("groups") || has("projects") {
        let memberships = groups::memberships_of(conn, user.id).await?;
        if has("groups") {
            c.insert("groups".into(), json!(memberships.iter().map(|m| m.group_name.as_str()).collect::<Vec<_>>()));
        }
        if has("projects") {
            let levels: Map<String, Value> =
                memberships.iter().filter_map(|m| Some((m.project_id.clone()?, json!(m.level.as_deref()?)))).collect();
            c.insert("projects".into(), Value::Object(levels));
        }
    }
    Ok(c)
}

/// A live grant as userinfo and introspection see it: the grant, its
/// user's name, and the user's claims for its scopes. Cached (see the
/// module's head); served only while `grant.alive_until` is ahead.
pub struct GrantView {
    pub grant: Grant,
    pub username: Option<String>,
    pub claims: Map<String, Value>,
}

/// The live grant `id`, from the auth cache or read (and cached).
pub async fn grant_view(state: &AppState, id: Uuid) -> Result<Option<Arc<GrantView>>> {
    let key = CacheKey::Grant(id);
    if let Some(Cached::Grant(view)) = state.auth_cache.get(&key) {
        if view.grant.alive_until > Utc::now() {
            return Ok(Some(view));
        }
        return Ok(None);
    }
    let ticket = state.auth_cache.ticket();
    let mut conn = state.pool.acquire().await?;
    let Some(grant) = oauth::live_grant(&mut *conn, id).await? else { return Ok(None) };
    let (username, claims) = match grant.user_id {
        Some(user_id) => {
            let user = users::get_by_id(&mut conn, user_id).await?;
            let claims = claims_of(&mut conn, &user, &grant.scopes).await?;
            (Some(user.username), claims)
        }
        None => (None, Map::new()),
    };
    let owner = grant.user_id.unwrap_or(grant.id);
    let view = Arc::new(GrantView { grant, username, claims });
    state.auth_cache.insert(ticket, key, owner, Cached::Grant(view.clone()));
    Ok(Some(view))
}

/// The client `client_id`, from the auth cache or read (and cached).
pub async fn client(state: &AppState, client_id: &str) -> Result<Option<Arc<Client>>> {
    let key = CacheKey::Client(client_id.to_string());
    if let Some(Cached::Client(c)) = state.auth_cache.get(&key) {
        return Ok(Some(c));
    }
    let ticket = state.auth_cache.ticket();
    let mut conn = state.pool.acquire().await?;
    let Some(c) = oauth::get_client(&mut conn, client_id).await? else { return Ok(None) };
    let c = Arc::new(c);
    // Cleared with the whole cache when any client changes.
    state.auth_cache.insert(ticket, key, Uuid::nil(), Cached::Client(c.clone()));
    Ok(Some(c))
}

/// An access token's claims (RFC 9068).
#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// The grant it belongs to.
    pub grant: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

/// What the token endpoint answers.
#[derive(Serialize)]
pub struct Tokens {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

pub fn issuer(state: &AppState) -> String {
    state.settings.public_url.trim_end_matches('/').to_string()
}

/// Mints the tokens of a live grant: an access token, an ID token (user
/// grants with `openid`), and a new refresh token when the client may
/// refresh. The refresh token is saved on `tx`. `keys` are fetched before
/// the transaction starts (loading them may need a connection of its own).
pub async fn mint(
    state: &AppState,
    keys: &crate::op::keys::Loaded,
    tx: &mut sqlx::PgConnection,
    grant: &Grant,
    client: &Client,
    nonce: Option<&str>,
) -> Result<Tokens> {
    let now = Utc::now().timestamp();
    let ttl = state.keys.access_ttl_secs;
    let iss = issuer(state);
    let sub = grant.user_id.map(|u| u.to_string()).unwrap_or_else(|| client.client_id.clone());
    let scope = grant.scopes.join(" ");
    let access = AccessClaims {
        iss: iss.clone(),
        sub: sub.clone(),
        aud: client.client_id.clone(),
        client_id: client.client_id.clone(),
        scope: scope.clone(),
        exp: now + ttl,
        iat: now,
        jti: Uuid::new_v4().to_string(),
        grant: grant.id,
        auth_time: grant.auth_time.map(|t| t.timestamp()),
    };
    let signer = keys.signer(&client.signing_alg);
    let mut header = Header::new(signer.alg);
    header.kid = Some(signer.kid.clone());
    header.typ = Some("at+jwt".into());
    let access_token = jsonwebtoken::encode(&header, &access, &signer.key).map_err(Error::internal)?;
    let id_token = match grant.user_id {
        Some(user) if grant.scopes.iter().any(|s| s == "openid") => {
            let mut claims = user_claims(tx, user, &grant.scopes).await?;
            let half = &Sha256::digest(access_token.as_bytes())[..16];
            use base64::Engine;
            let at_hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(half);
            for (k, v) in [
                ("iss", json!(iss)),
                ("aud", json!(client.client_id)),
                ("azp", json!(client.client_id)),
                ("iat", json!(now)),
                ("exp", json!(now + ttl)),
                ("at_hash", json!(at_hash)),
                // NIST SP 800-63B assurance: a second factor makes AAL2.
                ("acr", json!(if grant.amr.iter().any(|a| a == "otp" || a == "hwk") { "aal2" } else { "aal1" })),
            ] {
                claims.insert(k.into(), v);
            }
            // How the session was earned, where it is known (a password
            // login, and its second factor); an upstream login says nothing.
            if !grant.amr.is_empty() {
                claims.insert("amr".into(), json!(grant.amr));
            }
            if let Some(t) = grant.auth_time {
                claims.insert("auth_time".into(), json!(t.timestamp()));
            }
            if let Some(n) = nonce.filter(|n| !n.is_empty()) {
                claims.insert("nonce".into(), json!(n));
            }
            if let Some(s) = grant.session_id {
                claims.insert("sid".into(), json!(s));
            }
            let mut header = Header::new(signer.alg);
            header.kid = Some(signer.kid.clone());
            Some(jsonwebtoken::encode(&header, &Value::Object(claims), &signer.key).map_err(Error::internal)?)
        }
        _ => None,
    };
    let refresh_token = if grant.user_id.is_some() && client.grant_types.iter().any(|g| g == "refresh_token") {
        let t = tokens::random_secret();
        oauth::save_refresh(tx, &t, grant.id).await?;
        Some(t)
    } else {
        None
    };
    Ok(Tokens { access_token, token_type: "Bearer", expires_in: ttl, scope, id_token, refresh_token })
}

/// Access tokens whose signature and issuer were checked, with their
/// claims, until they expire: a resource server calling userinfo or
/// introspection with the same token again costs a lookup, not a signature
/// check. Bounded; the grant behind a token is checked at every call
/// (`grant_view`), so revocation is unaffected.
#[derive(Default)]
pub struct VerifiedTokens(std::sync::RwLock<std::collections::HashMap<String, Arc<AccessClaims>>>);

const VERIFIED_TOKENS: usize = 5_000;

impl VerifiedTokens {
    fn get(&self, token: &str, now: i64) -> Option<Arc<AccessClaims>> {
        let map = self.0.read().ok()?;
        map.get(token).filter(|c| c.exp > now).cloned()
    }

    fn keep(&self, token: &str, claims: Arc<AccessClaims>, now: i64) {
        let Ok(mut map) = self.0.write() else { return };
        if map.len() >= VERIFIED_TOKENS {
            map.retain(|_, c| c.exp > now);
            if map.len() >= VERIFIED_TOKENS {
                map.clear();
            }
        }
        map.insert(token.to_string(), claims);
    }
}

/// An access token's claims when its signature, issuer and expiry check
/// (its grant is the caller's to check).
pub async fn verify_access(state: &AppState, token: &str) -> Result<Option<Arc<AccessClaims>>> {
    let now = Utc::now().timestamp();
    if let Some(c) = state.op_verified.get(token, now) {
        return Ok(Some(c));
    }
    let claims = verify_access_signature(state, token).await?.map(Arc::new);
    if let Some(c) = &claims {
        // Only a token that checked is remembered (the verifier's leeway
        // aside, `exp` is ahead).
        state.op_verified.keep(token, c.clone(), now);
    }
    Ok(claims)
}

async fn verify_access_signature(state: &AppState, token: &str) -> Result<Option<AccessClaims>> {
    if token.len() > 4096 {
        return Ok(None);
    }
    let Ok(header) = jsonwebtoken::decode_header(token) else { return Ok(None) };
    let keys = state.op_keys.get(&state.pool).await?;
    let Some((alg, key)) = header.kid.as_deref().and_then(|k| keys.verify.get(k)) else { return Ok(None) };
    if header.alg != *alg {
        return Ok(None);
    }
    let mut v = Validation::new(*alg);
    v.set_issuer(&[issuer(state)]);
    v.validate_aud = false;
    v.leeway = 5;
    Ok(jsonwebtoken::decode::<AccessClaims>(token, key, &v).ok().map(|d| d.claims))
}

/// The claims of an ID token this provider signed (expired ones too: an
/// `id_token_hint`), or `None`.
pub async fn verify_id_token_hint(state: &AppState, token: &str) -> Result<Option<Map<String, Value>>> {
    let Ok(header) = jsonwebtoken::decode_header(token) else { return Ok(None) };
    let keys = state.op_keys.get(&state.pool).await?;
    let Some((alg, key)) = header.kid.as_deref().and_then(|k| keys.verify.get(k)) else { return Ok(None) };
    let mut v = Validation::new(*alg);
    v.set_issuer(&[issuer(state)]);
    v.validate_aud = false;
    v.validate_exp = false;
    v.set_required_spec_claims(&["iss", "sub", "aud"]);
    Ok(jsonwebtoken::decode::<Map<String, Value>>(token, key, &v).ok().map(|d| d.claims))
}

/// Ends a registrar session's grants and tells the clients that asked to
/// be told (OpenID Connect Back-Channel Logout 1.0), in the background.
pub async fn end_session_grants(state: &AppState, audit: &Audit, session: Uuid) -> Result<()> {
    let mut tx = state.pool.begin().await?;
    let grants = oauth::grants_of_session(&mut tx, session).await?;
    for (id, _, _) in &grants {
        oauth::revoke_grant(&mut tx, audit, *id, "session ended").await?;
    }
    tx.commit().await?;
    let keys = state.op_keys.get(&state.pool).await?;
    let now = Utc::now().timestamp();
    let sub = audit.actor_id;
    for (_, client_id, uri) in grants {
        let Some(uri) = uri else { continue };
        let claims = json!({
            "iss": issuer(state), "aud": client_id, "iat": now, "exp": now + 120, "jti": Uuid::new_v4(),
            "sid": session, "sub": sub,
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        });
        let mut header = Header::new(keys.rs256.alg);
        header.kid = Some(keys.rs256.kid.clone());
        header.typ = Some("logout+jwt".into());
        let Ok(token) = jsonwebtoken::encode(&header, &claims, &keys.rs256.key) else { continue };
        tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build();
            if let Ok(c) = client {
                match c.post(&uri).form(&[("logout_token", token)]).send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => {
                        tracing::warn!(client_id = %client_id, status = %r.status(), "back-channel logout refused")
                    }
                    Err(e) => tracing::warn!(client_id = %client_id, error = %e, "back-channel logout failed"),
                }
            }
        });
    }
    Ok(())
}
