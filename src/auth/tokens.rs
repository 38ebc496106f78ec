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
use subtle::ConstantTimeEq;
use uuid::Uuid;

pub const ISSUER: &str = "registrar";
pub const API_KEY_PREFIX: &str = "rk_";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub jti: Uuid,
}

#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pepper: Vec<u8>,
    pub access_ttl_secs: i64,
}

impl Keys {
    pub fn new(jwt_secret: &[u8], pepper: Vec<u8>, access_ttl_secs: u64) -> Keys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
        validation.leeway = 5;
        Keys {
            encoding: EncodingKey::from_secret(jwt_secret),
            decoding: DecodingKey::from_secret(jwt_secret),
            validation,
            pepper,
            access_ttl_secs: i64::try_from(access_ttl_secs).unwrap_or(900),
        }
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
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?)
    }

    pub fn verify_access(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok().map(|d| d.claims)
    }

    /// The web console's CSRF token for `binding` (a session, or a
    /// browser's form cookie before login): a MAC under the server pepper,
    /// so it needs no storage and cannot be made for another binding.
    pub fn csrf_token(&self, binding: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.pepper).expect("HMAC takes any key length");
        mac.update(b"registrar csrf\0");
        mac.update(binding.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A 256-bit key for `purpose`, derived from the server pepper (HMAC).
    pub fn derived_key(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.pepper).expect("HMAC takes any key length");
        mac.update(b"registrar key\0");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub fn api_key_hash(&self, secret: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.pepper).expect("HMAC takes any key length");
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
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
}
