//! In-process cache of authenticated callers, invalidated through Postgres
//! LISTEN/NOTIFY so that revocation stays immediate on every instance.
//!
//! Correctness rests on four rules:
//! - every change that can alter a caller's access fires a trigger that
//!   announces the user's id on `registrar_auth` at commit
//!   (migration `..._auth_notify.sql`); the listener drops that user's entries;
//! - a row read from the database is cached only if no invalidation arrived
//!   between the read and the insert (an epoch taken before the read), so a
//!   read that raced a revocation is never kept;
//! - nothing is served or kept while the listener is not connected (a lost
//!   connection may have lost notifications: the cache is emptied), nor when
//!   the heartbeat finds the channel silent;
//! - a request that writes waits, before it answers, until this instance has
//!   received every notification committed before it (`sync`): a
//!   notification of its own sent after the commit comes back through the
//!   same ordered queue. So the instance that revokes never serves the
//!   revoked credential again, and the others receive the same notification
//!   in the same moment.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

const AUTH_CHANNEL: &str = "registrar_auth";
const SYNC_CHANNEL: &str = "registrar_sync";
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
const HEARTBEAT: Duration = Duration::from_secs(5);

/// What a credential is cached under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// A session, by id (access tokens name it).
    Session(Uuid),
    /// A session, by the SHA-256 of its cookie.
    Cookie([u8; 32]),
    /// An API key, by its public prefix (the secret is still checked per request).
    ApiKey(String),
    /// An OpenID Provider grant and its claims, by grant id.
    Grant(Uuid),
    /// An OpenID Provider client, by client id (its secret is still checked per request).
    Client(String),
}

/// What registrar's auth cache holds.
#[derive(Clone)]
pub enum Cached {
    /// A credential's row, and its holder's own view made from it (`Memo`).
    Principal(std::sync::Arc<crate::auth::principal::Row>, crate::auth::principal::Memo),
    Grant(std::sync::Arc<crate::service::oauth::GrantView>),
    Client(std::sync::Arc<crate::store::oauth::Client>),
}

/// The auth cache of an instance.
pub type AuthCache = PrincipalCache<Cached>;

struct Entry<V> {
    user_id: Uuid,
    value: V,
    stored: Instant,
}

/// Taken before a database read; the read's result is cached only if the
/// ticket is still current afterwards.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(Option<u64>);

struct Inner<V> {
    /// Hashed with foldhash (randomly seeded per instance): SipHash was a
    /// visible share of a cached read.
    entries: RwLock<HashMap<CacheKey, Entry<V>, foldhash::fast::RandomState>>,
    /// Bumped (under the write lock) by every invalidation and reset.
    epoch: AtomicU64,
    /// The listener is connected and LISTENing.
    listening: AtomicBool,
    /// The last heartbeat came back.
    healthy: AtomicBool,
    waiters: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    capacity: usize,
    max_age: Duration,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Shared by the workers of one instance. A disabled cache stores nothing.
pub struct PrincipalCache<V> {
    inner: Option<Arc<Inner<V>>>,
}

impl<V> Clone for PrincipalCache<V> {
    fn clone(&self) -> Self {
        PrincipalCache { inner: self.inner.clone() }
    }
}

impl<V: Clone + Send + Sync + 'static> PrincipalCache<V> {
    pub fn disabled() -> Self {
        PrincipalCache { inner: None }
    }

    pub fn new(capacity: usize, max_age: Duration, metrics: Arc<crate::metrics::Metrics>) -> Self {
        PrincipalCache {
            inner: Some(Arc::new(Inner {
                entries: RwLock::new(HashMap::default()),
                epoch: AtomicU64::new(0),
                listening: AtomicBool::new(false),
                healthy: AtomicBool::new(true),
                waiters: Mutex::new(HashMap::new()),
                capacity: capacity.max(1),
                max_age,
                metrics,
            })),
        }
    }

    fn usable(inner: &Inner<V>) -> bool {
        inner.listening.load(Ordering::Acquire) && inner.healthy.load(Ordering::Acquire)
    }

    /// The cached value, if the cache is live and the entry is fresh.
    pub fn get(&self, key: &CacheKey) -> Option<V> {
        let inner = self.inner.as_ref()?;
        if !Self::usable(inner) {
            return None;
        }
        let entries = inner.entries.read().ok()?;
        let found = entries.get(key).filter(|e| e.stored.elapsed() < inner.max_age).map(|e| e.value.clone());
        inner.metrics.cache_hit(found.is_some());
        found
    }

    /// How many entries the cache holds.
    pub fn len(&self) -> usize {
        self.inner.as_ref().and_then(|i| i.entries.read().ok().map(|e| e.len())).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn ticket(&self) -> Ticket {
        Ticket(self.inner.as_ref().filter(|i| Self::usable(i)).map(|i| i.epoch.load(Ordering::Acquire)))
    }

    /// Caches `value` (read under `ticket`) unless an invalidation came in between.
    pub fn insert(&self, ticket: Ticket, key: CacheKey, user_id: Uuid, value: V) {
        let (Some(inner), Some(epoch)) = (self.inner.as_ref(), ticket.0) else { return };
        let Ok(mut entries) = inner.entries.write() else { return };
        if inner.epoch.load(Ordering::Acquire) != epoch || !Self::usable(inner) {
            return;
        }
        if entries.len() >= inner.capacity && !entries.contains_key(&key) {
            let max_age = inner.max_age;
            entries.retain(|_, e| e.stored.elapsed() < max_age);
            if entries.len() >= inner.capacity {
                entries.clear();
            }
        }
        entries.insert(key, Entry { user_id, value, stored: Instant::now() });
    }

    /// Changes a cached value in place (bookkeeping such as "last seen").
    pub fn update(&self, key: &CacheKey, f: impl FnOnce(&mut V)) {
        if let Some(inner) = &self.inner {
            if let Ok(mut entries) = inner.entries.write() {
                if let Some(e) = entries.get_mut(key) {
                    f(&mut e.value);
                }
            }
        }
    }

    /// Drops every entry of `user_id`.
    pub fn invalidate_user(&self, user_id: Uuid) {
        if let Some(inner) = &self.inner {
            if let Ok(mut entries) = inner.entries.write() {
                inner.epoch.fetch_add(1, Ordering::AcqRel);
                entries.retain(|_, e| e.user_id != user_id);
                inner.metrics.cache_invalidated("user");
            }
        }
    }

    /// Drops everything (and refuses reads that started before).
    pub fn reset(&self) {
        if let Some(inner) = &self.inner {
            let mut entries = inner.entries.write().unwrap_or_else(|p| p.into_inner());
            inner.epoch.fetch_add(1, Ordering::AcqRel);
            entries.clear();
            inner.metrics.cache_invalidated("reset");
        }
    }

    /// Returns once this instance has received every notification committed
    /// before the call. A cache that cannot confirm that empties itself.
    pub async fn sync(&self, pool: &PgPool) {
        let Some(inner) = &self.inner else { return };
        if !inner.listening.load(Ordering::Acquire) {
            return;
        }
        let token: u64 = rand::random();
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = inner.waiters.lock() {
            w.insert(token, tx);
        }
        let sent = crate::store::credentials::notify_quietly(pool, SYNC_CHANNEL, &token.to_string()).await.is_ok();
        let arrived = sent && matches!(tokio::time::timeout(SYNC_TIMEOUT, rx).await, Ok(Ok(())));
        if let Ok(mut w) = inner.waiters.lock() {
            w.remove(&token);
        }
        if arrived {
            inner.metrics.notification_lag(started.elapsed());
            inner.healthy.store(true, Ordering::Release);
        } else {
            tracing::warn!("auth cache: could not confirm invalidations are current; emptied it");
            inner.healthy.store(false, Ordering::Release);
            self.reset();
        }
    }

    /// Starts the listener and the heartbeat on the current runtime.
    pub fn start(&self, pool: PgPool) -> Vec<tokio::task::JoinHandle<()>> {
        if self.inner.is_none() {
            return Vec::new();
        }
        let listener = tokio::spawn(self.clone().listen(pool.clone()));
        let this = self.clone();
        let heartbeat = tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
                this.sync(&pool).await;
            }
        });
        vec![listener, heartbeat]
    }

    async fn listen(self, pool: PgPool) {
        let Some(inner) = self.inner.clone() else { return };
        // Its own connection, outside the request pool's limit.
        let options = pool.connect_options().as_ref().clone();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(options);
        let mut backoff = Duration::from_millis(50);
        loop {
            let connected = async {
                let mut l = PgListener::connect_with(&pool).await?;
                // Report a lost connection at once (we stop serving from the
                // cache), instead of first retrying inside `try_recv`.
                l.eager_reconnect(false);
                l.listen_all([AUTH_CHANNEL, SYNC_CHANNEL]).await?;
                Ok::<_, sqlx::Error>(l)
            }
            .await;
            let mut listener = match connected {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "auth cache: listener cannot connect yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(50);
            // Anything read before this point may have missed notifications.
            self.reset();
            inner.listening.store(true, Ordering::Release);
            tracing::debug!("auth cache: listening for invalidations");
            loop {
                match listener.try_recv().await {
                    // A user's id (or a client grant's); anything else
                    // (`clients`) empties the cache.
                    Ok(Some(n)) if n.channel() == AUTH_CHANNEL => match n.payload().parse::<Uuid>() {
                        Ok(user_id) => self.invalidate_user(user_id),
                        Err(_) => self.reset(),
                    },
                    Ok(Some(n)) => {
                        if let Ok(token) = n.payload().parse::<u64>() {
                            if let Some(tx) = inner.waiters.lock().ok().and_then(|mut w| w.remove(&token)) {
                                let _ = tx.send(());
                            }
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            inner.listening.store(false, Ordering::Release);
            self.reset();
            tracing::warn!("auth cache: lost the notification channel; serving from the database until it returns");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> PrincipalCache<u32> {
        let c = PrincipalCache::new(3, Duration::from_secs(60), Default::default());
        if let Some(i) = &c.inner {
            i.listening.store(true, Ordering::Release);
        }
        c
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_kept() {
        let c = live();
        let u = Uuid::new_v4();
        let t = c.ticket();
        c.invalidate_user(Uuid::new_v4());
        c.insert(t, CacheKey::Session(u), u, 1);
        assert_eq!(c.get(&CacheKey::Session(u)), None);
        let t = c.ticket();
        c.insert(t, CacheKey::Session(u), u, 2);
        assert_eq!(c.get(&CacheKey::Session(u)), Some(2));
        c.invalidate_user(u);
        assert_eq!(c.get(&CacheKey::Session(u)), None);
    }

    #[test]
    fn nothing_is_kept_or_served_while_not_listening() {
        let c = live();
        let u = Uuid::new_v4();
        c.insert(c.ticket(), CacheKey::ApiKey("p".into()), u, 1);
        assert_eq!(c.get(&CacheKey::ApiKey("p".into())), Some(1));
        if let Some(i) = &c.inner {
            i.listening.store(false, Ordering::Release);
        }
        assert_eq!(c.get(&CacheKey::ApiKey("p".into())), None);
        assert!(c.ticket().0.is_none());
        let disabled: PrincipalCache<u32> = PrincipalCache::disabled();
        disabled.insert(disabled.ticket(), CacheKey::ApiKey("p".into()), u, 1);
        assert_eq!(disabled.get(&CacheKey::ApiKey("p".into())), None);
    }

    fn len(c: &PrincipalCache<u32>) -> usize {
        c.inner.as_ref().map(|i| i.entries.read().map(|e| e.len()).unwrap_or(0)).unwrap_or(0)
    }

    #[test]
    fn capacity_is_bounded() {
        let c = live();
        for i in 0..10u32 {
            let u = Uuid::new_v4();
            c.insert(c.ticket(), CacheKey::Session(u), u, i);
            assert!(len(&c) <= 3);
        }
    }
}
