//! The OpenID Provider's signing keys (`op_keys`; the keys themselves are
//! made and used in `op::keys`).

use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::domain::Error;

/// Serialises key generation and rotation across instances.
const KEYGEN_LOCK: i64 = 0x6f70_6b65_7973; // "opkeys"

pub struct KeyRow {
    pub kid: String,
    pub alg: String,
    pub private_der: Vec<u8>,
    pub public_jwk: Value,
    pub retired: bool,
}

/// Every key still published (signing or retired), newest first.
pub async fn published(pool: &PgPool) -> Result<Vec<KeyRow>, Error> {
    Ok(sqlx::query_as!(
        KeyRow,
        r#"SELECT kid, alg, private_der, public_jwk, retired_at IS NOT NULL AS "retired!" FROM op_keys
           WHERE removed_at IS NULL OR removed_at > now() ORDER BY created_at DESC"#
    )
    .fetch_all(pool)
    .await?)
}

/// Takes the key lock for the rest of the caller's transaction.
pub async fn lock(tx: &mut PgConnection) -> Result<(), Error> {
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", KEYGEN_LOCK).execute(&mut *tx).await?;
    Ok(())
}

/// The algorithms that have a signing (not retired) key.
pub async fn signing_algs(tx: &mut PgConnection) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar!("SELECT alg FROM op_keys WHERE retired_at IS NULL").fetch_all(&mut *tx).await?)
}

pub async fn insert(tx: &mut PgConnection, kid: &str, alg: &str, private_der: &[u8], jwk: &Value) -> Result<(), Error> {
    sqlx::query!(
        "INSERT INTO op_keys (kid, alg, private_der, public_jwk) VALUES ($1, $2, $3, $4)",
        kid,
        alg,
        private_der,
        jwk
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Retires every signing key: it signs no more, and leaves the JWKS after `keep_secs`.
pub async fn retire_signing(tx: &mut PgConnection, keep_secs: i64) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE op_keys SET retired_at = now(), removed_at = now() + make_interval(secs => $1)
         WHERE retired_at IS NULL",
        keep_secs as f64
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Tells every instance (after commit) to re-read the keys.
pub async fn announce(tx: &mut PgConnection) -> Result<(), Error> {
    sqlx::query!("SELECT pg_notify('registrar_op_keys', '')").execute(&mut *tx).await?;
    Ok(())
}
