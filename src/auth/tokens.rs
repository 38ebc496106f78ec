//! Access tokens (JWT), opaque secrets (refresh tokens, cookies) and API keys.
//!
//! Opaque secrets have 256 bits of entropy, so a fast hash is enough at rest:
//! refresh tokens and cookies are stored as SHA-256, API key secrets as
//! HMAC-SHA-256 under a server pepper (a leaked table alone is useless).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::{Arc, RwLock};
use subtle::ConstantTimeEq;

use uuid::Uuid;

pub const ISSUER: &str = "registrar";
pub const API_KEY_PREFIX: &str = "rk_";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub jti: Uuid,
}

/// One version of the JWT signing key.
struct JwtKey {
    version: i32,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Tokens it signed are accepted until then (its successor's creation
    /// plus the access-token lifetime); `None` for the current key.
    verifies_until: Option<i64>,
}

/// The versions of the rotating secrets (`secret_versions`), newest first.
#[derive(Default)]
struct Versions {
    jwt: Vec<JwtKey>,
    /// Each pepper as an HMAC already keyed with it: a key check clones
    /// it instead of hashing the key's two pads again.
    peppers: Vec<(i32, Hmac<Sha256>)>,
}

/// A stored version of a rotating secret, as `store::db` reads it.
pub struct SecretVersion {
    pub name: String,
    pub version: i32,
    pub value: Vec<u8>,
    pub created_at: i64,
}

/// The server's keys. The JWT signing key and the API-key pepper rotate
/// (`registrar admin rotate-secrets`): every version is kept in the
/// database, the newest signs and hashes, older ones verify (JWTs until
/// the tokens they signed have expired; peppers while keys use them).
/// `base_pepper` (the first pepper) keys what does not rotate: the web
/// forms' CSRF tokens, the sealing key of second-factor secrets, recovery
/// codes and OpenID clients' secrets.
#[derive(Clone)]
pub struct Keys {
    versions: Arc<RwLock<Versions>>,
    base_pepper: Vec<u8>,
    validation: Validation,
    /// A JWT secret from the configuration: it does not rotate.
    configured_jwt: bool,
    /// When a request last made this instance reload the versions (unix ms).
    last_reload: Arc<std::sync::atomic::AtomicI64>,
    /// Access tokens whose signature and claims have been checked, with
    /// their claims (see `verify_access`).
    verified: Arc<RwLock<VerifiedTokens>>,
    pub access_ttl_secs: i64,
}

/// The checked access tokens, and the generation of the key versions they
/// were checked under (bumped by `set_versions`, under this lock).
#[derive(Default)]
struct VerifiedTokens {
    /// foldhash, not SipHash: every cached read hashes its whole token here.
    tokens: std::collections::HashMap<Box<str>, Verified, foldhash::fast::RandomState>,
    generation: u64,
}

/// A checked access token: its claims, and until when its key verifies.
struct Verified {
    claims: Arc<Claims>,
    key_until: Option<i64>,
}

/// How many checked access tokens an instance remembers; when full, it
/// starts over (a token not remembered is simply checked again).
const VERIFIED_TOKENS: usize = 4096;

impl Keys {
    /// Keys of one version each (the JWT secret, the pepper).
    pub fn new(jwt_secret: &[u8], pepper: Vec<u8>, access_ttl_secs: u64) -> Keys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
        validation.leeway = 5;
        let versions = Versions { jwt: vec![jwt_key(1, jwt_secret, None)], peppers: vec![(1, keyed(&pepper))] };
        Keys {
            versions: Arc::new(RwLock::new(versions)),
            base_pepper: pepper,
            validation,
            configured_jwt: false,
            last_reload: Arc::default(),
            verified: Arc::default(),
            access_ttl_secs: i64::try_from(access_ttl_secs).unwrap_or(900),
        }
    }

    /// Keys whose JWT secret comes from the configuration (never rotated).
    pub fn with_configured_jwt(mut self) -> Keys {
        self.configured_jwt = true;
        self
    }

    pub fn jwt_configured(&self) -> bool {
        self.configured_jwt
    }

    /// Takes the stored versions (`store::db::secret_versions`).
    pub fn set_versions(&self, rows: &[SecretVersion]) {
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(5);
        let mut jwt_rows: Vec<&SecretVersion> = rows.iter().filter(|r| r.name == JWT_SECRET).collect();
        jwt_rows.sort_by_key(|r| std::cmp::Reverse(r.version));
        let mut peppers: Vec<(i32, Hmac<Sha256>)> =
            rows.iter().filter(|r| r.name == PEPPER_SECRET).map(|r| (r.version, keyed(&r.value))).collect();
        peppers.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
        let Ok(mut v) = self.versions.write() else { return };
        if !self.configured_jwt && !jwt_rows.is_empty() {
            v.jwt = jwt_rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    // A key verifies until its successor has been signing
                    // for longer than a token lives.
                    let until = (i > 0).then(|| jwt_rows[i - 1].created_at + self.access_ttl_secs + leeway);
                    jwt_key(r.version, &r.value, until)
                })
                .collect();
        }
        if !peppers.is_empty() {
            v.peppers = peppers;
        }
        drop(v);
        // Tokens checked under the old versions are checked again, and a
        // check that started under them is not kept (`verify_access`).
        if let Ok(mut verified) = self.verified.write() {
            verified.tokens.clear();
            verified.generation += 1;
        }
    }

    /// The version of the JWT key that signs now, and of the pepper that hashes new keys.
    pub fn current_versions(&self) -> (i32, i32) {
        self.versions
            .read()
            .map(|v| (v.jwt.first().map_or(1, |k| k.version), v.peppers.first().map_or(1, |p| p.0)))
            .unwrap_or((1, 1))
    }

    pub fn issue_access(&self, user: Uuid, session: Uuid, now: i64) -> anyhow::Result<String> {
        let claims = Claims {
            sub: user,
            sid: session,
            iat: now,
            exp: now + self.access_ttl_secs,
            iss: ISSUER.into(),
            jti: Uuid::new_v4(),
        };
        let v = self.versions.read().map_err(|_| anyhow::anyhow!("the key store is poisoned"))?;
        let key = v.jwt.first().ok_or_else(|| anyhow::anyhow!("no JWT signing key"))?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.version.to_string());
        Ok(jsonwebtoken::encode(&header, &claims, &key.encoding)?)
    }

    /// The claims of a valid access token. A token names its key's version
    /// (`kid`); one without (issued before keys had versions) is checked
    /// with the oldest key kept.
    ///
    /// A token checked once is remembered (up to `VERIFIED_TOKENS`, keyed by
    /// its exact text) with its claims, so that its next uses cost a lookup
    /// instead of a header parse, an HMAC and a claims parse; its expiry and
    /// its key's are still checked each time, and a change of the key
    /// versions forgets them all. What is remembered was signed by one of
    /// our keys: a forged token is never stored.
    pub fn verify_access(&self, token: &str) -> Option<Arc<Claims>> {
        let now = chrono::Utc::now().timestamp();
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(5);
        let generation = {
            let verified = self.verified.read().ok()?;
            if let Some(hit) = verified.tokens.get(token) {
                let expired = hit.claims.exp < now - leeway || hit.key_until.is_some_and(|until| now > until);
                return (!expired).then(|| hit.claims.clone());
            }
            verified.generation
        };
        let (claims, key_until) = self.verify_access_fully(token)?;
        let claims = Arc::new(claims);
        if let Ok(mut verified) = self.verified.write() {
            // Kept only if the key versions did not change during the check.
            if verified.generation == generation {
                if verified.tokens.len() >= VERIFIED_TOKENS {
                    verified.tokens.clear();
                }
                verified.tokens.insert(token.into(), Verified { claims: claims.clone(), key_until });
            }
        }
        Some(claims)
    }

    /// `verify_access` without memory: the signature and the claims, and
    /// until when the key that signed it verifies.
    fn verify_access_fully(&self, token: &str) -> Option<(Claims, Option<i64>)> {
        let kid = jsonwebtoken::decode_header(token).ok()?.kid;
        let v = self.versions.read().ok()?;
        let key = match kid {
            Some(kid) => {
                let version: i32 = kid.parse().ok()?;
                v.jwt.iter().find(|k| k.version == version)?
            }
            None => v.jwt.last()?,
        };
        if key.verifies_until.is_some_and(|until| chrono::Utc::now().timestamp() > until) {
            return None;
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation).ok()?.claims;
        Some((claims, key.verifies_until))
    }

    /// Whether a request may make this instance reload the versions now:
    /// once a second at most, so that made-up key versions cannot turn
    /// every request into a database read.
    pub fn may_reload(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = chrono::Utc::now().timestamp_millis();
        let last = self.last_reload.load(Ordering::Relaxed);
        now - last >= 1000 && self.last_reload.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Whether the token names a key version this instance does not have
    /// yet (another instance rotated a moment ago: reload and retry).
    pub fn names_unknown_key(&self, token: &str) -> bool {
        let Some(kid) = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid) else { return false };
        let Ok(version) = kid.parse::<i32>() else { return false };
        self.versions.read().is_ok_and(|v| !v.jwt.iter().any(|k| k.version == version))
    }

    /// The web console's CSRF token for `binding` (a session, or a
    /// browser's form cookie before login): a MAC under the server pepper,
    /// so it needs no storage and cannot be made for another binding.
    pub fn csrf_token(&self, binding: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.base_pepper).expect("HMAC takes any key length");
        mac.update(b"registrar csrf\0");
        mac.update(binding.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A 256-bit key for `purpose`, derived from the server pepper (HMAC).
    pub fn derived_key(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.base_pepper).expect("HMAC takes any key length");
        mac.update(b"registrar key\0");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// HMAC of a secret under the first pepper (recovery codes, OpenID
    /// clients' secrets: they do not rotate).
    pub fn secret_hash(&self, secret: &str) -> Vec<u8> {
        hmac(&self.base_pepper, secret)
    }

    /// A new API key's hash, under the current pepper, with its version.
    pub fn api_key_hash(&self, secret: &str) -> (i32, Vec<u8>) {
        let v = self.versions.read().ok();
        match v.as_ref().and_then(|v| v.peppers.first()) {
            Some((version, pepper)) => (*version, mac_with(pepper, secret)),
            None => (1, hmac(&self.base_pepper, secret)),
        }
    }

    /// An API key's hash under pepper `version`; `None` when this instance
    /// does not have that version (yet).
    pub fn api_key_hash_with(&self, version: i32, secret: &str) -> Option<Vec<u8>> {
        let v = self.versions.read().ok()?;
        v.peppers.iter().find(|(n, _)| *n == version).map(|(_, pepper)| mac_with(pepper, secret))
    }
}

/// The names of the rotating secrets in `secret_versions`.
pub const JWT_SECRET: &str = "jwt_signing_key";
pub const PEPPER_SECRET: &str = "api_key_pepper";

fn jwt_key(version: i32, secret: &[u8], verifies_until: Option<i64>) -> JwtKey {
    JwtKey {
        version,
        encoding: EncodingKey::from_secret(secret),
        decoding: DecodingKey::from_secret(secret),
        verifies_until,
    }
}

fn hmac(key: &[u8], value: &str) -> Vec<u8> {
    mac_with(&keyed(key), value)
}

/// An HMAC-SHA256 keyed with `key`, ready to take a message.
fn keyed(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length")
}

/// `value`'s MAC under an already keyed HMAC.
fn mac_with(keyed: &Hmac<Sha256>, value: &str) -> Vec<u8> {
    let mut mac = keyed.clone();
    mac.update(value.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// 32 random bytes, base64url.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn sha256(value: &str) -> Vec<u8> {
    Sha256::digest(value.as_bytes()).to_vec()
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A new API key: (`prefix`, full key shown once). Format `rk_<prefix>_<secret>`.
pub fn new_api_key() -> (String, String, String) {
    let mut p = [0u8; 9];
    rand::rngs::OsRng.fill_bytes(&mut p);
    let prefix = URL_SAFE_NO_PAD.encode(p).replace(['-', '_'], "x");
    let secret = random_secret();
    let full = format!("{API_KEY_PREFIX}{prefix}_{secret}");
    (prefix, secret, full)
}

/// Splits `rk_<prefix>_<secret>` into its parts; `None` if it is not one.
pub fn parse_api_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let (prefix, secret) = rest.split_once('_')?;
    let ok = |s: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (ok(prefix, 8..=16) && ok(secret, 40..=64) && !prefix.contains(['-', '_'])).then_some((prefix, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_roundtrip() {
        for _ in 0..200 {
            let (prefix, secret, full) = new_api_key();
            assert_eq!(parse_api_key(&full), Some((prefix.as_str(), secret.as_str())));
        }
        for bad in [
            "",
            "rk_",
            "rk_abc",
            "rk_abcdefghij_short",
            "xx_abcdefghijkl_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(parse_api_key(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn jwt_roundtrip_and_tamper() {
        let keys = Keys::new(&[7u8; 32], vec![1; 32], 900);
        let now = chrono::Utc::now().timestamp();
        let (u, s) = (Uuid::new_v4(), Uuid::new_v4());
        let t = keys.issue_access(u, s, now).expect("issue");
        let c = keys.verify_access(&t).expect("valid");
        assert_eq!((c.sub, c.sid), (u, s));
        let other = Keys::new(&[8u8; 32], vec![1; 32], 900);
        assert!(other.verify_access(&t).is_none());
        let expired = keys.issue_access(u, s, now - 2000).expect("issue");
        assert!(keys.verify_access(&expired).is_none());
    }

    /// A remembered token is still refused once expired, once its key no
    /// longer verifies, and under a key it was not signed with.
    #[test]
    fn remembered_tokens_are_checked_again_where_it_matters() {
        let version = |version: i32, value: u8, created_at: i64| SecretVersion {
            name: JWT_SECRET.into(),
            version,
            value: vec![value; 32],
            created_at,
        };
        let keys = Keys::new(&[7u8; 32], vec![1; 32], 900);
        let now = chrono::Utc::now().timestamp();
        keys.set_versions(&[version(1, 7, now - 10)]);
        let (u, s) = (Uuid::new_v4(), Uuid::new_v4());
        let t = keys.issue_access(u, s, now).expect("issue");
        // Expired 4 s ago, within the 5 s leeway.
        let short = keys.issue_access(u, s, now - 904).expect("issue");
        // Version 2 took over 903 s ago: version 1 verifies 2 s more
        // (a token's life and the leeway after its successor came).
        keys.set_versions(&[version(1, 7, now - 2_000), version(2, 9, now - 903)]);
        for token in [&t, &short] {
            assert!(keys.verify_access(token).is_some());
            assert!(keys.verify_access(token).is_some(), "remembered");
        }
        std::thread::sleep(std::time::Duration::from_millis(3_500));
        assert!(keys.verify_access(&t).is_none(), "its key retired, remembered or not");
        assert!(keys.verify_access(&short).is_none(), "expired past the leeway, remembered or not");
        // Another secret under the same version is another key: no memory carries over.
        let t = keys.issue_access(u, s, now).expect("issue");
        assert!(keys.verify_access(&t).is_some());
        keys.set_versions(&[version(2, 8, now - 10)]);
        assert!(keys.verify_access(&t).is_none());
    }
}
