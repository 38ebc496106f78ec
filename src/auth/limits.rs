//! Abuse limits: per client IP and per account rate limits (GCRA, `governor`)
//! for logins, token refreshes, API key creation and OIDC callbacks, answered
//! with 429 and Retry-After. Limits are per instance (in memory).

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimitSettings;
use crate::domain::{Error, Result};

pub struct Limiter {
    inner: Option<DefaultKeyedRateLimiter<String>>,
    what: &'static str,
}

impl Limiter {
    /// `per_minute` requests a minute per key, with that many in a burst; 0 disables.
    pub fn new(per_minute: u32, what: &'static str) -> Limiter {
        Limiter { inner: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))), what }
    }

    /// Counts one request for `key`; 429 with Retry-After when over the limit.
    pub fn check(&self, key: &str) -> Result<(), Error> {
        let Some(l) = &self.inner else { return Ok(()) };
        if l.len() > 100_000 {
            l.retain_recent();
        }
        match l.check_key(&key.to_lowercase()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(Error::too_many(
                    "rate_limited",
                    format!("too many {} requests; slow down", self.what),
                    wait.as_secs() + 1,
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
    pub fn new(s: &RateLimitSettings, forgot_per_minute: u32) -> RateLimits {
        RateLimits {
            login_ip: Limiter::new(s.login_per_ip, "login"),
            login_account: Limiter::new(s.login_per_account, "login"),
            refresh_ip: Limiter::new(s.refresh_per_ip, "token refresh"),
            api_key_user: Limiter::new(s.api_key_create_per_user, "API key creation"),
            oidc_callback_ip: Limiter::new(s.oidc_callback_per_ip, "sign-in"),
            oidc_start_ip: Limiter::new(s.oidc_callback_per_ip, "sign-in"),
            forgot_ip: Limiter::new(forgot_per_minute, "password reset"),
            forgot_address: Limiter::new(forgot_per_minute, "password reset"),
            token_ip: Limiter::new(s.token_per_ip, "token"),
        }
    }

    /// A login attempt: by client IP, then by account name (folded as
    /// logins are, so `ALICE` and `alice` share one budget).
    pub fn login(&self, ip: Option<&str>, login: &str) -> Result<(), Error> {
        self.login_ip.check(ip.unwrap_or("-"))?;
        self.login_account.check(&crate::domain::login_key(login.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_says_when_to_retry() {
        let l = Limiter::new(3, "login");
        for _ in 0..3 {
            assert!(l.check("1.2.3.4").is_ok());
        }
        let e = l.check("1.2.3.4").unwrap_err();
        assert!(matches!(e, Error::Locked { retry_after, .. } if (1..=61).contains(&retry_after)));
        assert!(l.check("5.6.7.8").is_ok(), "keys are independent");
        assert!(l.check("ALICE").is_ok() && l.check("alice").is_ok());
        assert!(Limiter::new(0, "x").check("k").is_ok(), "0 disables");
    }
}
