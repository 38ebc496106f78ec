//! The OpenID Provider's storage (migration `20261201000011`): clients,
//! consents, grants, authorization codes and refresh tokens. Codes and
//! refresh tokens are stored as SHA-256; client secrets as HMAC under the
//! server pepper.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{self, Audit, Changes};
use crate::auth::tokens::sha256;
use crate::domain::Error;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    /// No secret: authenticates with PKCE only (a browser or native app).
    pub public: bool,
    /// Trusted: no consent screen.
    pub first_party: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub grant_types: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    /// The algorithm of its ID and access tokens: `RS256` or `ES256`.
    pub signing_alg: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    #[schema(ignore)]
    pub secret_hash: Option<Vec<u8>>,
}

macro_rules! select_clients {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Client,
            r#"SELECT client_id, name, secret_hash IS NULL AS "public!", first_party, redirect_uris,
                      post_logout_redirect_uris, scopes, grant_types, backchannel_logout_uri, signing_alg, created_at,
                      secret_hash
               FROM oauth_clients "# + $tail $(, $arg)*
        )
    };
}

pub struct NewClient {
    pub client_id: String,
    pub name: String,
    pub secret_hash: Option<Vec<u8>>,
    pub first_party: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub grant_types: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    pub signing_alg: String,
}

pub async fn create_client(conn: &mut PgConnection, audit: &Audit, c: NewClient) -> Result<Client, Error> {
    sqlx::query!(
        "INSERT INTO oauth_clients (client_id, name, secret_hash, first_party, redirect_uris, post_logout_redirect_uris,
                                    scopes, grant_types, backchannel_logout_uri, created_by, signing_alg)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        c.client_id,
        c.name,
        c.secret_hash,
        c.first_party,
        &c.redirect_uris,
        &c.post_logout_redirect_uris,
        &c.scopes,
        &c.grant_types,
        c.backchannel_logout_uri,
        audit.actor_id,
        c.signing_alg,
    )
    .execute(&mut *conn)
    .await?;
    let changes = Changes::new()
        .set("name", c.name.as_str())
        .set("public", c.secret_hash.is_none())
        .set("first_party", c.first_party)
        .set("redirect_uris", c.redirect_uris.join(" "))
        .set("scopes", c.scopes.join(" "))
        .set("grant_types", c.grant_types.join(" "))
        .set("signing_alg", c.signing_alg.as_str());
    audit::record(&mut *conn, audit, "oauth_client", &c.client_id, "oauth.client_created", changes).await?;
    get_client(conn, &c.client_id).await?.ok_or_else(|| Error::internal(anyhow::anyhow!("client vanished")))
}

pub async fn get_client(conn: &mut PgConnection, client_id: &str) -> Result<Option<Client>, Error> {
    Ok(select_clients!("WHERE client_id = $1", client_id).fetch_optional(&mut *conn).await?)
}

pub async fn list_clients(conn: &mut PgConnection) -> Result<Vec<Client>, Error> {
    Ok(select_clients!("ORDER BY name, client_id").fetch_all(&mut *conn).await?)
}

/// Deletes a client with its grants, codes, tokens and consents.
pub async fn delete_client(conn: &mut PgConnection, audit: &Audit, client_id: &str) -> Result<Client, Error> {
    let c = get_client(conn, client_id)
        .await?
        .ok_or_else(|| Error::not_found("client_not_found", format!("no client '{client_id}'")))?;
    sqlx::query!("DELETE FROM oauth_clients WHERE client_id = $1", client_id).execute(&mut *conn).await?;
    let changes = Changes::new().set("name", c.name.as_str());
    audit::record(&mut *conn, audit, "oauth_client", client_id, "oauth.client_deleted", changes).await?;
    Ok(c)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Consent {
    pub client_id: String,
    pub client_name: String,
    pub scopes: Vec<String>,
    pub granted_at: DateTime<Utc>,
}

pub async fn consent_of(conn: &mut PgConnection, user: Uuid, client_id: &str) -> Result<Option<Vec<String>>, Error> {
    Ok(sqlx::query_scalar!("SELECT scopes FROM oauth_consents WHERE user_id = $1 AND client_id = $2", user, client_id)
        .fetch_optional(&mut *conn)
        .await?)
}

pub async fn consents(conn: &mut PgConnection, user: Uuid) -> Result<Vec<Consent>, Error> {
    Ok(sqlx::query_as!(
        Consent,
        "SELECT c.client_id, k.name AS client_name, c.scopes, c.granted_at FROM oauth_consents c
         JOIN oauth_clients k ON k.client_id = c.client_id WHERE c.user_id = $1 ORDER BY k.name",
        user
    )
    .fetch_all(&mut *conn)
    .await?)
}

pub async fn grant_consent(
    conn: &mut PgConnection,
    audit: &Audit,
    user: Uuid,
    client_id: &str,
    scopes: &[String],
) -> Result<(), Error> {
    sqlx::query!(
        "INSERT INTO oauth_consents (user_id, client_id, scopes) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, client_id) DO UPDATE SET scopes = EXCLUDED.scopes, granted_at = now()",
        user,
        client_id,
        scopes
    )
    .execute(&mut *conn)
    .await?;
    let changes = Changes::new().set("client_id", client_id).set("scopes", scopes.join(" "));
    audit::record(&mut *conn, audit, "user", &user.to_string(), "oauth.consent_granted", changes).await?;
    Ok(())
}

/// Withdraws a consent and ends the user's grants to that client.
pub async fn revoke_consent(conn: &mut PgConnection, audit: &Audit, user: Uuid, client_id: &str) -> Result<(), Error> {
    let n = sqlx::query!("DELETE FROM oauth_consents WHERE user_id = $1 AND client_id = $2", user, client_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(Error::not_found("consent_not_found", "no consent for this client"));
    }
    sqlx::query!(
        "UPDATE oauth_grants SET revoked_at = now(), revoked_reason = 'consent withdrawn'
         WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL",
        user,
        client_id
    )
    .execute(&mut *conn)
    .await?;
    let changes = Changes::new().set("client_id", client_id);
    audit::record(&mut *conn, audit, "user", &user.to_string(), "oauth.consent_revoked", changes).await?;
    Ok(())
}

/// A live grant: not revoked, not expired, its user enabled and its
/// registrar session alive.
#[derive(Debug, Clone)]
pub struct Grant {
    pub id: Uuid,
    pub client_id: String,
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub scopes: Vec<String>,
    pub auth_time: Option<DateTime<Utc>>,
    pub nonce: Option<String>,
    /// When it ends by itself: its own expiry or its session's.
    pub alive_until: DateTime<Utc>,
    /// How the session behind it was earned (`pwd`, `otp`, ...); empty for
    /// a client's own grant.
    pub amr: Vec<String>,
}

pub struct NewGrant<'a> {
    pub client_id: &'a str,
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub scopes: &'a [String],
    pub auth_time: Option<DateTime<Utc>>,
    pub nonce: Option<&'a str>,
    pub ttl_secs: i64,
}

pub async fn create_grant(conn: &mut PgConnection, audit: &Audit, g: NewGrant<'_>) -> Result<Uuid, Error> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO oauth_grants (id, client_id, user_id, session_id, scopes, auth_time, nonce, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))",
        id,
        g.client_id,
        g.user_id,
        g.session_id,
        g.scopes,
        g.auth_time,
        g.nonce,
        g.ttl_secs as f64,
    )
    .execute(&mut *conn)
    .await?;
    let (subject_type, subject) = match g.user_id {
        Some(u) => ("user", u.to_string()),
        None => ("oauth_client", g.client_id.to_string()),
    };
    let changes =
        Changes::new().set("client_id", g.client_id).set("grant", id.to_string()).set("scopes", g.scopes.join(" "));
    audit::record(&mut *conn, audit, subject_type, &subject, "oauth.authorized", changes).await?;
    Ok(id)
}

pub async fn live_grant<'e, E: sqlx::PgExecutor<'e>>(exec: E, id: Uuid) -> Result<Option<Grant>, Error> {
    Ok(sqlx::query_as!(
        Grant,
        r#"SELECT g.id, g.client_id, g.user_id, g.session_id, g.scopes, g.auth_time, g.nonce,
                  LEAST(g.expires_at, s.expires_at) AS "alive_until!", COALESCE(s.amr, '{}') AS "amr!"
           FROM oauth_grants g
           LEFT JOIN users u ON u.id = g.user_id
           LEFT JOIN sessions s ON s.id = g.session_id
           WHERE g.id = $1 AND g.revoked_at IS NULL AND g.expires_at > now()
             AND (g.user_id IS NULL OR u.enabled)
             AND (g.session_id IS NULL OR (s.revoked_at IS NULL AND s.expires_at > now()))"#,
        id
    )
    .fetch_optional(exec)
    .await?)
}

/// The client a grant belongs to.
pub async fn grant_client(conn: &mut PgConnection, id: Uuid) -> Result<Option<String>, Error> {
    Ok(sqlx::query_scalar!("SELECT client_id FROM oauth_grants WHERE id = $1", id).fetch_optional(&mut *conn).await?)
}

/// Ends a grant (and so every token it issued). Whether it was live.
pub async fn revoke_grant(conn: &mut PgConnection, audit: &Audit, id: Uuid, reason: &str) -> Result<bool, Error> {
    let row = sqlx::query!(
        "UPDATE oauth_grants SET revoked_at = now(), revoked_reason = $2 WHERE id = $1 AND revoked_at IS NULL
         RETURNING client_id, user_id",
        id,
        reason
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(false) };
    let (subject_type, subject) = match row.user_id {
        Some(u) => ("user", u.to_string()),
        None => ("oauth_client", row.client_id.clone()),
    };
    let changes =
        Changes::new().set("client_id", row.client_id.as_str()).set("grant", id.to_string()).set("reason", reason);
    audit::record(&mut *conn, audit, subject_type, &subject, "oauth.grant_revoked", changes).await?;
    Ok(true)
}

/// The live grants of a registrar session, with their clients'
/// back-channel logout URIs (for RP logout).
pub async fn grants_of_session(
    conn: &mut PgConnection,
    session: Uuid,
) -> Result<Vec<(Uuid, String, Option<String>)>, Error> {
    let rows = sqlx::query!(
        "SELECT g.id, g.client_id, c.backchannel_logout_uri FROM oauth_grants g
         JOIN oauth_clients c ON c.client_id = g.client_id
         WHERE g.session_id = $1 AND g.revoked_at IS NULL",
        session
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.client_id, r.backchannel_logout_uri)).collect())
}

pub async fn save_code(
    conn: &mut PgConnection,
    code: &str,
    grant: Uuid,
    redirect_uri: &str,
    challenge: Option<&str>,
    ttl_secs: i64,
) -> Result<(), Error> {
    sqlx::query!(
        "INSERT INTO oauth_codes (code_hash, grant_id, redirect_uri, code_challenge, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        sha256(code),
        grant,
        redirect_uri,
        challenge,
        ttl_secs as f64
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What presenting a code found.
pub enum CodeUse {
    /// First use, in time.
    Fresh {
        grant: Uuid,
        redirect_uri: String,
        challenge: Option<String>,
    },
    /// Already used: a replay (the grant it started is to be revoked).
    Replayed {
        grant: Uuid,
    },
    Expired,
    Unknown,
}

/// Uses a code (once).
pub async fn take_code(conn: &mut PgConnection, code: &str) -> Result<CodeUse, Error> {
    let row = sqlx::query!(
        r#"WITH old AS (SELECT code_hash, used_at, expires_at FROM oauth_codes WHERE code_hash = $1 FOR UPDATE)
           UPDATE oauth_codes c SET used_at = now() FROM old
           WHERE c.code_hash = old.code_hash
           RETURNING c.grant_id, c.redirect_uri, c.code_challenge, old.used_at AS "was_used?", old.expires_at > now() AS "in_time!""#,
        sha256(code)
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        None => CodeUse::Unknown,
        Some(r) if r.was_used.is_some() => CodeUse::Replayed { grant: r.grant_id },
        Some(r) if !r.in_time => CodeUse::Expired,
        Some(r) => CodeUse::Fresh { grant: r.grant_id, redirect_uri: r.redirect_uri, challenge: r.code_challenge },
    })
}

pub async fn save_refresh(conn: &mut PgConnection, token: &str, grant: Uuid) -> Result<(), Error> {
    sqlx::query!("INSERT INTO oauth_refresh_tokens (token_hash, grant_id) VALUES ($1, $2)", sha256(token), grant)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub enum RefreshUse {
    Fresh { grant: Uuid },
    Reused { grant: Uuid },
    Unknown,
}

/// Uses a refresh token (once: rotation).
pub async fn take_refresh(conn: &mut PgConnection, token: &str) -> Result<RefreshUse, Error> {
    let row = sqlx::query!(
        r#"WITH old AS (SELECT token_hash, used_at FROM oauth_refresh_tokens WHERE token_hash = $1 FOR UPDATE)
           UPDATE oauth_refresh_tokens t SET used_at = COALESCE(t.used_at, now()) FROM old
           WHERE t.token_hash = old.token_hash
           RETURNING t.grant_id, old.used_at AS "was_used?""#,
        sha256(token)
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        None => RefreshUse::Unknown,
        Some(r) if r.was_used.is_some() => RefreshUse::Reused { grant: r.grant_id },
        Some(r) => RefreshUse::Fresh { grant: r.grant_id },
    })
}

/// The grant of an unused refresh token (introspection, revocation).
pub async fn refresh_grant<'e, E: sqlx::PgExecutor<'e>>(exec: E, token: &str) -> Result<Option<Uuid>, Error> {
    Ok(sqlx::query_scalar!(
        "SELECT grant_id FROM oauth_refresh_tokens WHERE token_hash = $1 AND used_at IS NULL",
        sha256(token)
    )
    .fetch_optional(exec)
    .await?)
}
