//! The statements that authenticate a request: a session (by id for a JWT,
//! by cookie hash), an API key (by prefix) or a user (after a Basic
//! password), each one indexed query that returns the user row with the
//! state of what was presented; and the "last seen" writes.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::Result;
use crate::store::users::{select_users, User};

/// A caller's user row with the state of the session or key presented:
/// what `auth::principal` checks and the auth cache keeps.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Shared with the principals built from it (no copy per request).
    pub user: std::sync::Arc<User>,
    pub tokens_not_before: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// "Last seen" of a session, "last used" of a key.
    pub touched_at: Option<DateTime<Utc>>,
    /// The session, key or (for Basic) user id.
    pub ref_id: Uuid,
    /// The hash of an API key's secret.
    pub secret_hash: Option<Vec<u8>>,
    /// When the holder last proved who they are (see `auth::reauth`).
    pub authenticated_at: Option<DateTime<Utc>>,
    /// When a second factor was last used in the session (step-up).
    pub mfa_at: Option<DateTime<Utc>>,
    /// The session may only enrol a second factor (`mfa.required_for_roles`).
    pub mfa_enrollment_only: bool,
    /// A provisioning credential (an API key of scope `scim`): its name,
    /// the client's name under which its external ids are kept.
    pub scim_client: Option<String>,
    /// The pepper version an API key's hash is under (1 for the rest).
    pub pepper_version: i32,
}

/// `Credential` as the statements return it (one flat row).
struct Flat {
    id: Uuid,
    username: String,
    email: String,
    email_key: String,
    first_name: String,
    last_name: String,
    enabled: bool,
    verified: bool,
    roles: Vec<String>,
    has_password: bool,
    password_updated: Option<DateTime<Utc>>,
    failed_login_attempts: i32,
    locked_until: Option<DateTime<Utc>>,
    last_login_attempt: Option<DateTime<Utc>>,
    last_successful_login: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    last_modified: DateTime<Utc>,
    xdat_user_id: i32,
    affiliation: String,
    contact: String,
    orcid: String,
    url: String,
    mfa_enabled: bool,
    tokens_not_before: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    touched_at: Option<DateTime<Utc>>,
    ref_id: Uuid,
    secret_hash: Option<Vec<u8>>,
    authenticated_at: Option<DateTime<Utc>>,
    mfa_at: Option<DateTime<Utc>>,
    mfa_enrollment_only: bool,
    scim_client: Option<String>,
    pepper_version: i32,
}

impl From<Flat> for Credential {
    fn from(f: Flat) -> Credential {
        Credential {
            user: std::sync::Arc::new(User {
                id: f.id,
                username: f.username,
                email: f.email,
                email_key: f.email_key,
                first_name: f.first_name,
                last_name: f.last_name,
                enabled: f.enabled,
                verified: f.verified,
                roles: f.roles,
                has_password: f.has_password,
                password_updated: f.password_updated,
                failed_login_attempts: f.failed_login_attempts,
                locked_until: f.locked_until,
                last_login_attempt: f.last_login_attempt,
                last_successful_login: f.last_successful_login,
                created_at: f.created_at,
                last_modified: f.last_modified,
                xdat_user_id: f.xdat_user_id,
                affiliation: f.affiliation,
                contact: f.contact,
                orcid: f.orcid,
                url: f.url,
                mfa_enabled: f.mfa_enabled,
            }),
            tokens_not_before: f.tokens_not_before,
            revoked_at: f.revoked_at,
            expires_at: f.expires_at,
            touched_at: f.touched_at,
            ref_id: f.ref_id,
            secret_hash: f.secret_hash,
            authenticated_at: f.authenticated_at,
            mfa_at: f.mfa_at,
            mfa_enrollment_only: f.mfa_enrollment_only,
            scim_client: f.scim_client,
            pepper_version: f.pepper_version,
        }
    }
}

/// The session `id` (named by a JWT).
pub async fn session_by_id(pool: &PgPool, id: Uuid) -> Result<Option<Credential>> {
    let row = select_users!(
        as Flat,
        r#", u.tokens_not_before, s.revoked_at, s.expires_at AS "expires_at?", s.last_seen_at AS "touched_at?",
             s.id AS ref_id, NULL::bytea AS secret_hash,
             CASE WHEN s.api_key_id IS NULL THEN s.created_at END AS "authenticated_at?",
             s.mfa_at, s.mfa_enrollment_only, NULL::text AS "scim_client?", 1 AS "pepper_version!"
           FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1"#,
        id,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Credential::from))
}

/// The session whose cookie secret hashes to `hash`.
pub async fn session_by_cookie(pool: &PgPool, hash: &[u8]) -> Result<Option<Credential>> {
    let row = select_users!(
        as Flat,
        r#", u.tokens_not_before, s.revoked_at, s.expires_at AS "expires_at?", s.last_seen_at AS "touched_at?",
             s.id AS ref_id, NULL::bytea AS secret_hash,
             CASE WHEN s.api_key_id IS NULL THEN s.created_at END AS "authenticated_at?",
             s.mfa_at, s.mfa_enrollment_only, NULL::text AS "scim_client?", 1 AS "pepper_version!"
           FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.cookie_hash = $1"#,
        hash,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Credential::from))
}

/// The API key with this prefix (its secret is compared by the caller).
pub async fn api_key(pool: &PgPool, prefix: &str) -> Result<Option<Credential>> {
    let row = select_users!(
        as Flat,
        r#", u.tokens_not_before, k.revoked_at, k.expires_at, k.last_used_at AS touched_at, k.id AS ref_id,
             k.secret_hash AS "secret_hash?", NULL::timestamptz AS authenticated_at,
             NULL::timestamptz AS mfa_at, false AS "mfa_enrollment_only!", CASE WHEN k.scope = 'scim' THEN k.name END AS "scim_client?",
             k.pepper_version
           FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.prefix = $1"#,
        prefix,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Credential::from))
}

/// The user whose Basic password was just checked (authenticated now).
pub async fn user(pool: &PgPool, id: Uuid) -> Result<Option<Credential>> {
    let row = select_users!(
        as Flat,
        r#", u.tokens_not_before, NULL::timestamptz AS revoked_at, NULL::timestamptz AS expires_at,
             NULL::timestamptz AS touched_at, u.id AS ref_id, NULL::bytea AS secret_hash,
             now() AS authenticated_at, NULL::timestamptz AS mfa_at, false AS "mfa_enrollment_only!",
             NULL::text AS "scim_client?", 1 AS "pepper_version!"
           FROM users u WHERE u.id = $1"#,
        id,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Credential::from))
}

/// Records that a session was seen now.
pub async fn touch_session(pool: &PgPool, id: Uuid) -> Result<()> {
    sqlx::query!("UPDATE sessions SET last_seen_at = now() WHERE id = $1", id).execute(pool).await?;
    Ok(())
}

/// Records that an API key was used now.
pub async fn touch_api_key(pool: &PgPool, id: Uuid) -> Result<()> {
    sqlx::query!("UPDATE api_keys SET last_used_at = now() WHERE id = $1", id).execute(pool).await?;
    Ok(())
}

/// Sends `payload` on `channel` (the auth caches' sync marker). It needs no
/// durability, so the commit does not wait for the WAL flush.
pub async fn notify_quietly(pool: &PgPool, channel: &str, payload: &str) -> Result<()> {
    sqlx::query!("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)", channel, payload)
        .fetch_one(pool)
        .await?;
    Ok(())
}
