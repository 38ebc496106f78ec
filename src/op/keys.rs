//! The provider's signing keys: an RSA key (RS256, what the OpenID
//! Connect spec requires every relying party to accept) and a P-256 key
//! (ES256), generated on first use and stored in `op_keys` for every
//! instance. Signing and verifying go through `jsonwebtoken` (ring, constant
//! time); the `rsa` crate only generates the RSA key, once.
//!
//! Rotation (`registrar admin rotate-keys`): new keys sign from then on; the
//! old ones stay published in the JWKS until every token they signed has
//! expired. Each instance forgets its copy when any instance rotates
//! (`NOTIFY registrar_op_keys`) and re-reads it in the background every
//! `RELOAD` as well.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::RwLock;

use crate::domain::{Error, Result};
use crate::store::op_keys;

/// How long an instance trusts its copy of the keys.
const RELOAD: Duration = Duration::from_secs(30);

pub struct Signer {
    pub kid: String,
    pub alg: Algorithm,
    pub key: EncodingKey,
}

/// The keys as loaded: the signers, every published key for verification,
/// and the JWKS document (served from memory).
pub struct Loaded {
    pub rs256: Signer,
    pub es256: Signer,
    pub verify: HashMap<String, (Algorithm, DecodingKey)>,
    pub jwks: String,
    at: Instant,
}

impl Loaded {
    /// The signer of `alg` (`ES256`; anything else is RS256).
    pub fn signer(&self, alg: &str) -> &Signer {
        if alg == "ES256" {
            &self.es256
        } else {
            &self.rs256
        }
    }
}

/// Cheap to clone (one shared copy).
#[derive(Default, Clone)]
pub struct ProviderKeys {
    loaded: Arc<RwLock<Option<Arc<Loaded>>>>,
    /// A background re-read is under way.
    refreshing: Arc<AtomicBool>,
    /// Bumped by `reload`: a re-read that started before is not kept.
    generation: Arc<AtomicU64>,
}

impl ProviderKeys {
    /// The current keys (loading, or generating on first use, as needed).
    /// A copy older than `RELOAD` is still served while one background task
    /// re-reads it, so no request waits on the database for the keys once
    /// they are loaded.
    pub async fn get(&self, pool: &PgPool) -> Result<Arc<Loaded>> {
        if let Some(l) = self.loaded.read().await.clone() {
            if l.at.elapsed() >= RELOAD && !self.refreshing.swap(true, Ordering::AcqRel) {
                let (this, pool) = (self.clone(), pool.clone());
                tokio::spawn(async move {
                    let generation = this.generation.load(Ordering::Acquire);
                    match load_or_generate(&pool).await {
                        Ok(new) => {
                            let mut slot = this.loaded.write().await;
                            if this.generation.load(Ordering::Acquire) == generation {
                                *slot = Some(Arc::new(new));
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "could not re-read the OpenID Provider keys"),
                    }
                    this.refreshing.store(false, Ordering::Release);
                });
            }
            return Ok(l);
        }
        let mut slot = self.loaded.write().await;
        if let Some(l) = slot.as_ref() {
            return Ok(l.clone());
        }
        let loaded = Arc::new(load_or_generate(pool).await?);
        *slot = Some(loaded.clone());
        Ok(loaded)
    }

    /// Forgets the copy (after a rotation): the next request reads the keys.
    pub async fn reload(&self) {
        let mut slot = self.loaded.write().await;
        self.generation.fetch_add(1, Ordering::AcqRel);
        *slot = None;
    }

    /// Forgets the copy whenever any instance rotates the keys
    /// (`NOTIFY registrar_op_keys`), so new keys sign at once everywhere.
    pub fn follow(&self, pool: &PgPool) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        crate::store::db::follow(pool, "registrar_op_keys", move || {
            let this = this.clone();
            async move { this.reload().await }
        })
    }
}

async fn load_or_generate(pool: &PgPool) -> Result<Loaded> {
    let mut list = op_keys::published(pool).await?;
    let has = |list: &[op_keys::KeyRow], alg: &str| list.iter().any(|r| r.alg == alg && !r.retired);
    if !has(&list, "RS256") || !has(&list, "ES256") {
        let mut tx = pool.begin().await?;
        op_keys::lock(&mut tx).await?;
        let current = op_keys::signing_algs(&mut tx).await?;
        for alg in ["RS256", "ES256"] {
            if !current.iter().any(|a| a == alg) {
                insert(&mut tx, alg).await?;
            }
        }
        tx.commit().await?;
        list = op_keys::published(pool).await?;
    }
    let signer = |alg: &str| -> Result<Signer> {
        let row = list
            .iter()
            .find(|r| r.alg == alg && !r.retired)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("no {alg} signing key")))?;
        let (alg, key) = match alg {
            "RS256" => (Algorithm::RS256, EncodingKey::from_rsa_der(&row.private_der)),
            _ => (Algorithm::ES256, EncodingKey::from_ec_der(&row.private_der)),
        };
        Ok(Signer { kid: row.kid.clone(), alg, key })
    };
    let mut verify = HashMap::new();
    let mut published = Vec::new();
    for r in &list {
        let jwk = &r.public_jwk;
        let s = |k: &str| jwk.get(k).and_then(Value::as_str).unwrap_or_default();
        let decoding = match r.alg.as_str() {
            "RS256" => (Algorithm::RS256, DecodingKey::from_rsa_components(s("n"), s("e"))),
            _ => (Algorithm::ES256, DecodingKey::from_ec_components(s("x"), s("y"))),
        };
        if let (alg, Ok(key)) = decoding {
            verify.insert(r.kid.clone(), (alg, key));
        }
        published.push(jwk.clone());
    }
    Ok(Loaded {
        rs256: signer("RS256")?,
        es256: signer("ES256")?,
        verify,
        jwks: json!({ "keys": published }).to_string(),
        at: Instant::now(),
    })
}

/// A new key of `alg` (its private part as the DER `jsonwebtoken` reads:
/// PKCS#1 for RSA, PKCS#8 for EC) and its public JWK.
async fn insert(tx: &mut sqlx::PgConnection, alg: &str) -> Result<String> {
    let kid = crate::auth::tokens::random_secret()[..22].to_string();
    let (private_der, jwk) = tokio::task::spawn_blocking({
        let (alg, kid) = (alg.to_string(), kid.clone());
        move || generate(&alg, &kid)
    })
    .await
    .map_err(|e| Error::internal(anyhow::anyhow!(e)))??;
    op_keys::insert(tx, &kid, alg, &private_der, &jwk).await?;
    tracing::info!(kid = %kid, alg, "generated a new OpenID Provider signing key");
    Ok(kid)
}

fn generate(alg: &str, kid: &str) -> Result<(Vec<u8>, Value)> {
    let fail = |e: &dyn std::fmt::Display| Error::internal(anyhow::anyhow!("key generation failed: {e}"));
    match alg {
        "RS256" => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::traits::PublicKeyParts;
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|e| fail(&e))?;
            let der = key.to_pkcs1_der().map_err(|e| fail(&e))?.as_bytes().to_vec();
            let jwk = json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            });
            Ok((der, jwk))
        }
        _ => {
            use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|e| fail(&e))?;
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .map_err(|e| fail(&e))?;
            // The uncompressed point: 0x04 || x || y.
            let point = pair.public_key().as_ref();
            let jwk = json!({
                "kty": "EC", "use": "sig", "alg": "ES256", "kid": kid, "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            });
            Ok((pkcs8.as_ref().to_vec(), jwk))
        }
    }
}

/// Rotates the keys: every current key stops signing now and leaves the
/// JWKS after `keep_secs` (the longest a token it signed lives); new keys
/// sign from now on. The new key ids.
pub async fn rotate(pool: &PgPool, keep_secs: i64) -> Result<Vec<String>> {
    let mut tx = pool.begin().await?;
    op_keys::lock(&mut tx).await?;
    op_keys::retire_signing(&mut tx, keep_secs).await?;
    let mut kids = Vec::new();
    for alg in ["RS256", "ES256"] {
        kids.push(insert(&mut tx, alg).await?);
    }
    op_keys::announce(&mut tx).await?;
    tx.commit().await?;
    Ok(kids)
}
