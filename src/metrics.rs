//! Prometheus metrics (`prometheus-client`, the Prometheus project's Rust
//! client), served at `GET /metrics` only when `metrics.token` is set, to a
//! caller presenting it as a bearer token (`api::metrics`). One `Metrics` per
//! application: counters are bumped where the thing happens (the request
//! middleware, the password check, the hasher, the auth cache, the rate
//! limiter); gauges of the pool and the hash queue are read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route template (`/api/v1/users/{username}`), `unmatched` when
    /// no route matched: never the raw path, so ids do not become series.
    pub route: &'static str,
    pub method: &'static str,
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    pub status: &'static str,
}

/// A request's method as a label: one of the standard methods, else
/// `other` (a client may send any token as a method; each would be a series).
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.iter().find(|m| **m == method).map_or("other", |m| m)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    logins: Family<OutcomeLabels, Counter>,
    lockouts: Counter,
    hash_wait: Histogram,
    hash_queue: Gauge,
    hash_running: Gauge,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_invalidations: Family<KindLabels, Counter>,
    cache_entries: Gauge,
    notification_lag: Histogram,
    rate_limited: Family<LimitLabels, Counter>,
    pool_size: Gauge,
    pool_idle: Gauge,
    pool_max: Gauge,
    pool_timeouts: Counter,
}

/// Pool acquire timeouts, counted where sqlx's errors become registrar's
/// (`domain::Error`), which knows no application: one count per process.
static POOL_TIMEOUTS: AtomicU64 = AtomicU64::new(0);

/// Counts a pool acquire that timed out.
pub fn pool_timed_out() {
    POOL_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("registrar");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            logins: Family::default(),
            lockouts: Counter::default(),
            hash_wait: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            hash_queue: Gauge::default(),
            hash_running: Gauge::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_invalidations: Family::default(),
            cache_entries: Gauge::default(),
            notification_lag: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            rate_limited: Family::default(),
            pool_size: Gauge::default(),
            pool_idle: Gauge::default(),
            pool_max: Gauge::default(),
            pool_timeouts: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status class",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status class",
            m.latency.clone(),
        );
        r.register(
            "logins",
            "Password checks by outcome (success, mfa_required, invalid, disabled, locked, refused)",
            m.logins.clone(),
        );
        r.register("lockouts", "Accounts locked after too many failed logins", m.lockouts.clone());
        r.register("argon2_wait_seconds", "Time a password hash waited for a hashing slot", m.hash_wait.clone());
        r.register("argon2_queue_depth", "Password hashes waiting for a hashing slot", m.hash_queue.clone());
        r.register("argon2_running", "Password hashes running now", m.hash_running.clone());
        r.register("auth_cache_hits", "Authenticated callers answered from the auth cache", m.cache_hits.clone());
        r.register("auth_cache_misses", "Authenticated callers read from the database", m.cache_misses.clone());
        r.register(
            "auth_cache_invalidations",
            "Auth cache invalidations (user: one user's entries; reset: everything)",
            m.cache_invalidations.clone(),
        );
        r.register("auth_cache_entries", "Entries in the auth cache", m.cache_entries.clone());
        r.register(
            "auth_notification_lag_seconds",
            "Round trip of a NOTIFY through PostgreSQL to this instance's listener (the heartbeat's and each write's sync)",
            m.notification_lag.clone(),
        );
        r.register("rate_limited", "Requests refused by a rate limit, by limit", m.rate_limited.clone());
        r.register("db_pool_connections", "Open connections of the database pool", m.pool_size.clone());
        r.register("db_pool_idle_connections", "Idle connections of the database pool", m.pool_idle.clone());
        r.register("db_pool_max_connections", "The database pool's limit", m.pool_max.clone());
        r.register(
            "db_pool_acquire_timeouts",
            "Waits for a database connection that timed out (the request failed with 503)",
            m.pool_timeouts.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn request(&self, route: &'static str, method: &str, status: u16, elapsed: Duration) {
        let labels = RouteLabels { route, method: method_label(method), status: status_class(status) };
        self.latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
    }

    pub fn login(&self, outcome: &'static str) {
        self.logins.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn lockout(&self) {
        self.lockouts.inc();
    }

    pub fn hash_waited(&self, waited: Duration) {
        self.hash_wait.observe(waited.as_secs_f64());
    }

    pub fn cache_hit(&self, hit: bool) {
        if hit {
            self.cache_hits.inc();
        } else {
            self.cache_misses.inc();
        }
    }

    pub fn cache_invalidated(&self, kind: &'static str) {
        self.cache_invalidations.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn notification_lag(&self, lag: Duration) {
        self.notification_lag.observe(lag.as_secs_f64());
    }

    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited.get_or_create(&LimitLabels { limit }).inc();
    }

    /// The text exposition, with the gauges read now.
    pub fn render(&self, now: Snapshot) -> String {
        self.pool_size.set(i64::from(now.pool_size));
        self.pool_idle.set(now.pool_idle as i64);
        self.pool_max.set(i64::from(now.pool_max));
        self.hash_queue.set(now.hash_waiting as i64);
        self.hash_running.set(now.hash_running as i64);
        self.cache_entries.set(now.cache_entries as i64);
        let timeouts = POOL_TIMEOUTS.load(Ordering::Relaxed);
        let counted = self.pool_timeouts.get();
        if timeouts > counted {
            self.pool_timeouts.inc_by(timeouts - counted);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What the gauges show, read at scrape time.
pub struct Snapshot {
    pub pool_size: u32,
    pub pool_idle: usize,
    pub pool_max: u32,
    pub hash_waiting: usize,
    pub hash_running: usize,
    pub cache_entries: usize,
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
