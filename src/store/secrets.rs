//! The versions of the rotating secrets (`secret_versions`): the JWT
//! signing key and the API-key pepper.

use sqlx::{PgConnection, PgPool};

use crate::auth::tokens::SecretVersion;
use crate::domain::Result;

/// Makes `value` version 1 of `name` (once; at start-up).
pub async fn ensure_first(conn: &mut PgConnection, name: &str, value: &[u8]) -> Result<()> {
    sqlx::query!(
        "INSERT INTO secret_versions (name, version, value) VALUES ($1, 1, $2) ON CONFLICT (name, version) DO NOTHING",
        name,
        value
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Every stored version.
pub async fn all(pool: &PgPool) -> Result<Vec<SecretVersion>> {
    Ok(sqlx::query_as!(
        SecretVersion,
        r#"SELECT name, version, value, extract(epoch FROM created_at)::bigint AS "created_at!"
           FROM secret_versions ORDER BY name, version"#
    )
    .fetch_all(pool)
    .await?)
}

/// Adds the next version of `name` with `value`; returns its number.
pub async fn add_version(conn: &mut PgConnection, name: &str, value: &[u8]) -> Result<i32> {
    // One rotation at a time.
    sqlx::query!("LOCK TABLE secret_versions IN SHARE ROW EXCLUSIVE MODE").execute(&mut *conn).await?;
    Ok(sqlx::query_scalar!(
        r#"INSERT INTO secret_versions (name, version, value)
           SELECT $1, coalesce(max(version), 0) + 1, $2 FROM secret_versions WHERE name = $1
           RETURNING version"#,
        name,
        value
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// Drops the JWT keys no token can still need: those whose successor has
/// signed for longer than `ttl_secs` (a token's lifetime) plus a minute.
pub async fn prune_jwt_keys(conn: &mut PgConnection, ttl_secs: f64) -> Result<Vec<i32>> {
    Ok(sqlx::query_scalar!(
        r#"DELETE FROM secret_versions s
            WHERE s.name = 'jwt_signing_key'
              AND EXISTS (SELECT 1 FROM secret_versions n
                           WHERE n.name = s.name AND n.version > s.version
                             AND n.created_at < now() - make_interval(secs => $1::float8 + 60))
           RETURNING version"#,
        ttl_secs
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Drops the peppers no live API key is hashed under and no instance can
/// still take for the newest: those whose successor has existed for an
/// hour (every instance reloaded long since, so none creates or re-hashes
/// a key under them any more). Never the newest two.
pub async fn prune_peppers(conn: &mut PgConnection) -> Result<Vec<i32>> {
    Ok(sqlx::query_scalar!(
        r#"DELETE FROM secret_versions s
            WHERE s.name = 'api_key_pepper'
              AND s.version < (SELECT max(version) - 1 FROM secret_versions WHERE name = 'api_key_pepper')
              AND EXISTS (SELECT 1 FROM secret_versions n
                           WHERE n.name = s.name AND n.version = s.version + 1
                             AND n.created_at < now() - interval '1 hour')
              AND NOT EXISTS (SELECT 1 FROM api_keys k
                               WHERE k.pepper_version = s.version AND k.revoked_at IS NULL
                                 AND (k.expires_at IS NULL OR k.expires_at > now()))
           RETURNING version"#
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Live API keys hashed under an older pepper than the newest.
pub async fn keys_on_older_peppers(conn: &mut PgConnection) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM api_keys
            WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
              AND pepper_version < (SELECT coalesce(max(version), 1) FROM secret_versions WHERE name = 'api_key_pepper')"#
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// Re-hashes an API key under a newer pepper (at its first use after a
/// rotation), unless another request did it first.
pub async fn rekey_api_key(pool: &PgPool, id: uuid::Uuid, from: i32, to: i32, hash: &[u8]) -> Result<()> {
    sqlx::query!(
        "UPDATE api_keys SET secret_hash = $4, pepper_version = $3 WHERE id = $1 AND pepper_version = $2",
        id,
        from,
        to,
        hash
    )
    .execute(pool)
    .await?;
    Ok(())
}
