//! API keys: named, long-lived secrets for scripts. Only an HMAC of the
//! secret is stored; the public prefix finds the row.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{self, Audit, Changes};
use crate::auth::tokens::{self, Keys};
use crate::domain::{Error, Result};

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    /// Public part of the key (`rk_<prefix>_...`), safe to show.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn create(
    conn: &mut PgConnection,
    audit: &Audit,
    keys: &Keys,
    user_id: Uuid,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(ApiKeyView, String), Error> {
    create_scoped(conn, audit, keys, user_id, name, expires_at, "user").await
}

/// `create` with a scope: `user` (the owner's access) or `scim` (a
/// provisioning credential: SCIM_PROVISIONING at /scim/v2 only).
pub async fn create_scoped(
    conn: &mut PgConnection,
    audit: &Audit,
    keys: &Keys,
    user_id: Uuid,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
    scope: &str,
) -> Result<(ApiKeyView, String), Error> {
    let (prefix, secret, full) = tokens::new_api_key();
    let (pepper_version, secret_hash) = keys.api_key_hash(&secret);
    let id = Uuid::now_v7();
    let view = sqlx::query_as!(
        ApiKeyView,
        "INSERT INTO api_keys (id, user_id, name, prefix, secret_hash, expires_at, scope, pepper_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING id, name, prefix, created_at, expires_at, last_used_at, revoked_at",
        id,
        user_id,
        name,
        prefix,
        secret_hash,
        expires_at,
        scope,
        pepper_version,
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| {
        Error::on_constraint(e, |c| {
            (c == "api_keys_live_scim_name")
                .then(|| Error::conflict("credential_exists", "a live provisioning credential has this name"))
        })
    })?;
    let changes = Changes::new()
        .set("user_id", user_id.to_string())
        .set("name", name)
        .set("prefix", prefix)
        .set("scope", scope)
        .set("expires_at", expires_at.map(|e| e.to_rfc3339()));
    audit::record(&mut *conn, audit, "api_key", &id.to_string(), "api_key.created", changes).await?;
    Ok((view, full))
}

pub async fn list(conn: &mut PgConnection, user_id: Uuid) -> Result<Vec<ApiKeyView>, Error> {
    Ok(sqlx::query_as!(
        ApiKeyView,
        "SELECT id, name, prefix, created_at, expires_at, last_used_at, revoked_at
         FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC",
        user_id,
    )
    .fetch_all(conn)
    .await?)
}

pub async fn revoke(conn: &mut PgConnection, audit: &Audit, user_id: Uuid, id: Uuid) -> Result<(), Error> {
    let res = sqlx::query!(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
        id,
        user_id,
    )
    .execute(&mut *conn)
    .await?;
    if res.rows_affected() == 0 {
        return Err(Error::not_found("api_key_not_found", "no such active API key for this user"));
    }
    log_revoked(conn, audit, id, user_id).await?;
    Ok(())
}

/// Revokes every active API key of a user (a password reset or "log out
/// everywhere" that asked for it); one change-log entry per key.
pub async fn revoke_all(conn: &mut PgConnection, audit: &Audit, user_id: Uuid) -> Result<u64, Error> {
    let ids: Vec<Uuid> = sqlx::query_scalar!(
        "UPDATE api_keys SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL RETURNING id",
        user_id,
    )
    .fetch_all(&mut *conn)
    .await?;
    for id in &ids {
        log_revoked(conn, audit, *id, user_id).await?;
    }
    Ok(ids.len() as u64)
}

/// Revokes a user's active keys named `name` (the data tracker's one key
/// per user, replaced when a new one is issued).
pub async fn revoke_named(conn: &mut PgConnection, audit: &Audit, user_id: Uuid, name: &str) -> Result<u64, Error> {
    let ids: Vec<Uuid> = sqlx::query_scalar!(
        "UPDATE api_keys SET revoked_at = now() WHERE user_id = $1 AND name = $2 AND revoked_at IS NULL RETURNING id",
        user_id,
        name,
    )
    .fetch_all(&mut *conn)
    .await?;
    for id in &ids {
        log_revoked(conn, audit, *id, user_id).await?;
    }
    Ok(ids.len() as u64)
}

async fn log_revoked(conn: &mut PgConnection, audit: &Audit, id: Uuid, user_id: Uuid) -> Result<(), Error> {
    let changes = Changes::new().set("user_id", user_id.to_string());
    audit::record(&mut *conn, audit, "api_key", &id.to_string(), "api_key.revoked", changes).await?;
    Ok(())
}
