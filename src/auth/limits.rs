//! Abuse limits: per client IP and per account rate limits (GCRA) for
//! logins, token refreshes, API key creation, OIDC callbacks, password-reset
//! mails and the OpenID Provider's token endpoint, answered with 429 and
//! Retry-After. The state is in PostgreSQL (`store::rate_limits`), so a
//! limit holds across every instance: a client spreading its logins over
//! three instances gets one budget, not three.

use sha2::Digest;
use sqlx::PgPool;

use crate::config::RateLimitSettings;
use crate::domain::{Error, Result};

pub struct Limiter {
    /// Seconds between requests at the sustained rate, and how far ahead
    /// of now a key may run (the burst); `None` disables.
    gcra: Option<(f64, f64)>,
    /// The bucket's name (`rate_limits.bucket`, and the metrics label).
    bucket: &'static str,
    what: &'static str,
    pool: PgPool,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Limiter {
    /// `per_minute` requests a minute per key, with that many in a burst; 0 disables.
    pub fn new(
        pool: &PgPool,
        metrics: &std::sync::Arc<crate::metrics::Metrics>,
        per_minute: u32,
        bucket: &'static str,
        what: &'static str,
    ) -> Limiter {
        let gcra = (per_minute > 0).then(|| {
            let interval = 60.0 / f64::from(per_minute);
            (interval, interval * f64::from(per_minute - 1))
        });
        Limiter { gcra, bucket, what, pool: pool.clone(), metrics: metrics.clone() }
    }

    /// Counts one request for `key`; 429 with Retry-After when over the limit.
    pub async fn check(&self, key: &str) -> Result<(), Error> {
        let Some((interval, tolerance)) = self.gcra else { return Ok(()) };
        // Stored as a SHA-256: any length fits the index, and the table
        // holds no login names or addresses in clear.
        let key = hex::encode(sha2::Sha256::digest(key.to_lowercase().as_bytes()));
        match crate::store::rate_limits::take(&self.pool, self.bucket, &key, interval, tolerance).await? {
            None => Ok(()),
            Some(wait) => {
                self.metrics.rate_limited(self.bucket);
                Err(Error::too_many(
                    "rate_limited",
                    format!("too many {} requests; slow down", self.what),
                    // Whole seconds, rounded up.
                    wait.max(0.0).ceil() as u64 + 1,
                ))
            }
        }
    }
}

pub struct RateLimits {
    pub login_ip: Limiter,
    pub login_account: Limiter,
    pub refresh_ip: Limiter,
    pub api_key_user: Limiter,
    pub oidc_callback_ip: Limiter,
    /// Starting an OIDC login writes a state row: limited like the callback.
    pub oidc_start_ip: Limiter,
    /// "Forgot password" mails, by client address and by address asked for.
    pub forgot_ip: Limiter,
    pub forgot_address: Limiter,
    /// The OpenID Provider's token endpoint, by client address.
    pub token_ip: Limiter,
}

impl RateLimits {
    pub fn new(
        pool: &PgPool,
        metrics: &std::sync::Arc<crate::metrics::Metrics>,
        s: &RateLimitSettings,
        forgot_per_minute: u32,
    ) -> RateLimits {
        let l = |n, bucket, what| Limiter::new(pool, metrics, n, bucket, what);
        RateLimits {
            login_ip: l(s.login_per_ip, "login_ip", "login"),
            login_account: l(s.login_per_account, "login_account", "login"),
            refresh_ip: l(s.refresh_per_ip, "refresh_ip", "token refresh"),
            api_key_user: l(s.api_key_create_per_user, "api_key_user", "API key creation"),
            oidc_callback_ip: l(s.oidc_callback_per_ip, "oidc_callback_ip", "sign-in"),
            oidc_start_ip: l(s.oidc_callback_per_ip, "oidc_start_ip", "sign-in"),
            forgot_ip: l(forgot_per_minute, "forgot_ip", "password reset"),
            forgot_address: l(forgot_per_minute, "forgot_address", "password reset"),
            token_ip: l(s.token_per_ip, "token_ip", "token"),
        }
    }

    /// A login attempt: by client IP, then by login name, folded exactly
    /// as the account lookup and the unknown-name lockout fold it
    /// (`domain::login_key`), so `ALICE` and `alice` share one budget and a
    /// name is never charged under another's key.
    pub async fn login(&self, ip: Option<&str>, login: &str) -> Result<(), Error> {
        self.login_ip.check(ip.unwrap_or("-")).await?;
        self.login_account.check(&crate::domain::login_key(login)).await
    }

    /// Forgets, every minute, the keys whose whole budget is back.
    pub fn purge_every_minute(pool: PgPool) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                if let Err(e) = crate::store::rate_limits::purge(&pool).await {
                    tracing::debug!(error = %e, "could not purge the rate limits");
                }
            }
        })
    }
}
