//! What every request may use: the shared application state, below every
//! module that uses it (store, auth, the service functions and the HTTP
//! front ends all import it from here; it imports none of them back except
//! the `auth` types it holds).

use std::sync::Arc;

use sqlx::PgPool;

use crate::auth::password::Hasher;
use crate::auth::tokens::Keys;
use crate::config::Settings;

/// Shared by every worker. Cheap to clone; no globals.
pub struct AppState {
    pub pool: PgPool,
    /// Connections kept between reads (`AppState::read`).
    pub kept: Arc<crate::store::db::Kept>,
    pub settings: Arc<Settings>,
    pub hasher: Hasher,
    pub keys: Keys,
    pub oidc: crate::auth::oidc::Oidc,
    pub role_permissions: crate::auth::principal::RolePermissions,
    pub limits: crate::auth::limits::RateLimits,
    /// What `GET /metrics` shows (`metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    pub auth_cache: crate::auth::cache::AuthCache,
    pub mailer: crate::mail::Mailer,
    /// The OpenID Provider's signing keys (`op::keys`).
    pub op_keys: crate::op::keys::ProviderKeys,
    /// Access tokens of the provider whose signature was checked (`service::oauth`).
    pub op_verified: crate::service::oauth::VerifiedTokens,
}

impl AppState {
    /// Runs `reads` (statements that change nothing, outside a transaction)
    /// on a connection kept from an earlier read when there is one: see
    /// `store::db::Kept`.
    pub async fn read<T>(
        &self,
        reads: impl AsyncFnOnce(&mut sqlx::PgConnection) -> crate::domain::Result<T>,
    ) -> crate::domain::Result<T> {
        self.kept.read(&self.pool, reads).await
    }
}

/// Requests being served. Shutdown waits for it to reach zero before the
/// pool closes, so a request in flight at SIGTERM still gets its database.
#[derive(Clone, Default)]
pub struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    pub fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlightGuard(self.0.clone())
    }
    pub fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

pub struct InFlightGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
