//! Connection pool, migrations, server secrets and creating the database.

use std::time::Duration;

use anyhow::{Context, Result};
use rand::RngCore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgPool};

use crate::config::DatabaseSettings;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Advisory lock key for start-up work other than migrations (bootstrap,
/// secret generation). sqlx's migrator takes its own advisory lock.
const BOOTSTRAP_LOCK: i64 = 0x7265_6769_7374_7261; // "registra"

/// A lazily connecting pool: the server starts (and `/readyz` answers 503)
/// even while the database is down, and recovers when it returns.
pub fn pool(options: PgConnectOptions, settings: &DatabaseSettings) -> PgPool {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .test_before_acquire(false)
        .idle_timeout(Some(Duration::from_secs(300)))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // Bound every statement so a stuck query can't hold a connection forever.
                conn.execute("SET statement_timeout = '30s'; SET idle_in_transaction_session_timeout = '60s'").await?;
                Ok(())
            })
        })
        .connect_lazy_with(options)
}

/// Applies pending migrations. Safe when several instances start at once:
/// the migrator holds a Postgres advisory lock while it works.
///
/// Migrations newer than this build (applied by a newer release during a
/// rolling upgrade) are tolerated, so an older instance can still start on
/// an expanded schema (see README, "Upgrades"); a changed migration is not.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await.context("applying database migrations")?;
    Ok(())
}

/// What `migrate` would do: the migrations it would apply (in order), the
/// applied ones this build does not know (a newer release's), and the
/// applied ones whose text differs from this build's (which stop it).
#[derive(Debug, Default)]
pub struct MigrationPlan {
    pub applied: usize,
    pub pending: Vec<&'static sqlx::migrate::Migration>,
    pub unknown: Vec<(i64, String)>,
    pub changed: Vec<i64>,
}

/// The plan of `migrate`, read without changing anything.
pub async fn migration_plan(pool: &PgPool) -> Result<MigrationPlan> {
    let exists: Option<String> = sqlx::query_scalar!("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await
        .context("connecting to the database")?;
    let applied: Vec<(i64, String, Vec<u8>)> = match exists {
        None => Vec::new(),
        Some(_) => {
            sqlx::query_as("SELECT version, description, checksum FROM _sqlx_migrations WHERE success ORDER BY version")
                .fetch_all(pool)
                .await?
        }
    };
    let mut plan = MigrationPlan { applied: applied.len(), ..Default::default() };
    for m in MIGRATOR.iter() {
        match applied.iter().find(|(v, _, _)| *v == m.version) {
            None => plan.pending.push(m),
            Some((_, _, checksum)) if checksum.as_slice() != &*m.checksum => plan.changed.push(m.version),
            Some(_) => {}
        }
    }
    for (version, description, _) in &applied {
        if !MIGRATOR.iter().any(|m| m.version == *version) {
            plan.unknown.push((*version, description.clone()));
        }
    }
    Ok(plan)
}

/// True when every migration this binary knows is applied.
pub async fn migrations_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> =
        sqlx::query_scalar!("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(pool).await?;
    Ok(applied.unwrap_or(0) >= latest)
}

/// Runs `f` while holding the bootstrap advisory lock on one connection.
pub async fn with_bootstrap_lock<T, F>(pool: &PgPool, f: F) -> Result<T>
where
    F: for<'c> FnOnce(&'c mut sqlx::PgConnection) -> futures_util::future::BoxFuture<'c, Result<T>>,
{
    let mut conn = pool.acquire().await.context("connecting to the database")?;
    sqlx::query!("SELECT pg_advisory_lock($1)", BOOTSTRAP_LOCK).execute(&mut *conn).await?;
    let result = f(&mut conn).await;
    sqlx::query!("SELECT pg_advisory_unlock($1)", BOOTSTRAP_LOCK).fetch_one(&mut *conn).await?;
    result
}

/// Returns the named server secret, generating and storing 32 random bytes
/// the first time. Every instance reads the same value.
pub async fn server_secret(conn: &mut sqlx::PgConnection, name: &str) -> Result<Vec<u8>> {
    let mut fresh = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut fresh);
    let inserted = sqlx::query!(
        "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        name,
        fresh
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        tracing::info!(secret = name, "generated a new server secret and stored it in the database");
    }
    let value: Vec<u8> =
        sqlx::query_scalar!("SELECT value FROM server_secrets WHERE name = $1", name).fetch_one(&mut *conn).await?;
    Ok(value)
}

/// Creates `name` on the server of `admin` if it does not exist yet.
pub async fn ensure_database(admin: PgConnectOptions, name: &str) -> Result<()> {
    let mut conn =
        admin.log_statements(tracing::log::LevelFilter::Debug).connect().await.context("connecting to PostgreSQL")?;
    let exists: bool =
        sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS "exists!""#, name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let quoted = name.replace('"', "\"\"");
        if let Err(e) = sqlx::query(&format!("CREATE DATABASE \"{quoted}\"")).execute(&mut conn).await {
            // Another instance may have created it at the same moment.
            let exists: bool = sqlx::query_scalar!(
                r#"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS "exists!""#,
                name
            )
            .fetch_one(&mut conn)
            .await?;
            if !exists {
                return Err(e.into());
            }
        }
    }
    conn.close().await?;
    Ok(())
}

/// Runs `on_event` on start and on every notification on `channel`, for
/// ever, on a connection of its own (reconnecting after a failure, and
/// running `on_event` again then, since notifications may have been missed).
pub fn follow<F, Fut>(pool: &PgPool, channel: &'static str, on_event: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let options = pool.connect_options().as_ref().clone();
    tokio::spawn(async move {
        let own = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(options);
        loop {
            let listener = async {
                let mut l = sqlx::postgres::PgListener::connect_with(&own).await?;
                l.eager_reconnect(false);
                l.listen(channel).await?;
                Ok::<_, sqlx::Error>(l)
            }
            .await;
            let Ok(mut l) = listener else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            on_event().await;
            while let Ok(Some(_)) = l.try_recv().await {
                on_event().await;
            }
        }
    })
}

/// Connections that reads keep between them, instead of handing each back
/// to the pool.
///
/// sqlx's pool pings every connection it gets back (a `Sync` and its
/// `ReadyForQuery`, one more round trip) to catch a connection left
/// half-way by a cancelled query. For a read of one statement that doubles
/// the round trips: under the admin-read bench the ping was a fifth of the
/// server's CPU. A read that finished (its future ran to the end, so no
/// message is left half-written) leaves its connection here; the next read
/// takes it without the ping. A read that failed or was cancelled drops its
/// connection, which then goes back to the pool the usual way, ping
/// included.
///
/// The kept connections stay checked out of the pool, and whoever waits in
/// the pool's queue (a write, say, when every connection is out) must not
/// wait for ever behind reads that pass them around. So while the pool has
/// no connection left, a kept connection goes back to the pool after
/// `FULL_USES` reads (instead of `max_uses`), and the sweep (`expire`,
/// every 100 ms) gives back every kept one; otherwise it gives back those
/// idle for longer than 100 ms, so a quiet server holds none. At most `cap`
/// are kept. `max_uses` also lets the pool's own checks (`max_lifetime`)
/// see each connection under constant load. `clear` gives back all of
/// them, before the pool closes.
pub struct Kept {
    idle: std::sync::Mutex<Vec<KeptConn>>,
    cap: usize,
    max_uses: u32,
}

struct KeptConn {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    since: std::time::Instant,
    uses: u32,
}

/// Whether every connection of the pool is out (someone may be waiting).
fn exhausted(pool: &PgPool) -> bool {
    pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections()
}

impl Kept {
    /// How long a kept connection may stay unused, and how often `expire` runs.
    pub const IDLE: Duration = Duration::from_millis(100);

    /// Reads a kept connection serves, while the pool has none left, before
    /// it goes back to the pool's queue: that queue is served at least once
    /// in this many reads per kept connection.
    pub const FULL_USES: u32 = 8;

    /// Keeps at most a quarter of the pool's connections (1 to 8), each for
    /// 10,000 reads at most.
    pub fn for_pool(max_connections: u32) -> Kept {
        Kept::new((max_connections as usize / 4).clamp(1, 8), 10_000)
    }

    pub fn new(cap: usize, max_uses: u32) -> Kept {
        Kept { idle: Default::default(), cap, max_uses }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<KeptConn>> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `reads` on a kept connection (or one from `pool`), and keeps it
    /// if they succeed. Reads only: a transaction begun here would outlive
    /// the call.
    pub async fn read<T, E: From<sqlx::Error>>(
        &self,
        pool: &PgPool,
        reads: impl AsyncFnOnce(&mut sqlx::PgConnection) -> Result<T, E>,
    ) -> Result<T, E> {
        let kept = self.idle().pop();
        let (mut conn, uses) = match kept {
            Some(k) => (k.conn, k.uses),
            None => (pool.acquire().await?, 0),
        };
        // Dropped (back to the pool, pinged) unless the reads finish.
        let out = reads(&mut conn).await?;
        let uses = uses + 1;
        let limit = if exhausted(pool) { Kept::FULL_USES } else { self.max_uses };
        let surplus = {
            let mut idle = self.idle();
            if idle.len() < self.cap && uses < limit {
                idle.push(KeptConn { conn, since: std::time::Instant::now(), uses });
                None
            } else {
                Some(conn)
            }
        };
        drop(surplus);
        Ok(out)
    }

    /// Gives back to the pool the connections idle for longer than `idle`,
    /// or all of them when the pool has none left.
    pub fn expire(&self, pool: &PgPool, idle: Duration) {
        let now = std::time::Instant::now();
        let all = exhausted(pool);
        let stale: Vec<_> = {
            let mut kept = self.idle();
            // Oldest first: `read` takes and leaves them at the end.
            let n =
                if all { kept.len() } else { kept.iter().take_while(|k| now.duration_since(k.since) > idle).count() };
            kept.drain(..n).collect()
        };
        drop(stale);
    }

    /// Gives every kept connection back to the pool.
    pub fn clear(&self) {
        let all = std::mem::take(&mut *self.idle());
        drop(all);
    }

    /// How many connections are kept now.
    pub fn len(&self) -> usize {
        self.idle().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `expire` every `IDLE`, for ever.
    pub fn expire_when_idle(kept: std::sync::Arc<Kept>, pool: PgPool) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Kept::IDLE);
            loop {
                tick.tick().await;
                kept.expire(&pool, Kept::IDLE);
            }
        })
    }
}
