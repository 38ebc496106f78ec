//! Test harness: a real PostgreSQL (the one named by
//! `REGISTRAR_TEST_DATABASE_URL`/`DATABASE_URL`, else a private cluster under
//! `target/test-pg` started on first use), a fresh database per test cloned
//! from a migrated template, and the real app on a random port.

use std::str::FromStr;
use std::sync::Arc;

use registrar::config::Settings;
use registrar::startup::Application;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "correct-horse-battery-staple-42";
/// A password that passes the policy for any test user.
pub const PASSWORD: &str = "a long enough passphrase for tests";

struct Server {
    admin: PgConnectOptions,
    /// The same server as a URL (for registrar processes started by tests).
    admin_url: String,
    template: String,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();

fn server_url() -> Option<String> {
    std::env::var("REGISTRAR_TEST_DATABASE_URL").or_else(|_| std::env::var("DATABASE_URL")).ok()
}

async fn server() -> &'static Server {
    SERVER
        .get_or_init(|| async {
            let admin_url = match server_url() {
                Some(u) => u,
                None => {
                    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("test-pg");
                    let pg = tokio::task::spawn_blocking(move || {
                        registrar::localdb::LocalPostgres::ensure_started(&dir, "", true)
                    })
                    .await
                    .expect("join")
                    .expect("starting the test PostgreSQL");
                    pg.url("postgres")
                }
            };
            let admin = PgConnectOptions::from_str(&admin_url)
                .expect("REGISTRAR_TEST_DATABASE_URL is not a valid PostgreSQL URL");
            let admin = admin.disable_statement_logging();
            let template = prepare_template(&admin).await;
            Server { admin, admin_url, template }
        })
        .await
}

/// A migrated database to clone, named after the migrations it holds.
async fn prepare_template(admin: &PgConnectOptions) -> String {
    let digest: u64 = registrar::db::MIGRATOR.iter().fold(0xcbf29ce484222325u64, |h, m| {
        m.checksum.iter().fold(h ^ m.version as u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
    });
    let name = format!("registrar_tpl_{digest:016x}");
    let mut conn = PgConnection::connect_with(admin).await.expect("connect to test PostgreSQL");
    // Databases of earlier runs.
    let stale: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'rt\\_%'")
        .fetch_all(&mut conn)
        .await
        .expect("list databases");
    for db in stale {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\"")).execute(&mut conn).await;
    }
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut conn)
        .await
        .expect("query");
    if !exists {
        let tmp = format!("rt_tpl_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE \"{tmp}\"")).execute(&mut conn).await.expect("create template");
        let pool = PgPool::connect_with(admin.clone().database(&tmp)).await.expect("connect template");
        registrar::db::migrate(&pool).await.expect("migrate template");
        pool.close().await;
        sqlx::query(&format!("ALTER DATABASE \"{tmp}\" RENAME TO \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("rename template");
    }
    conn.close().await.ok();
    name
}

/// Connection options of a fresh, empty (unmigrated) database.
pub async fn empty_database() -> PgConnectOptions {
    let s = server().await;
    let name = format!("rt_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect_with(&s.admin).await.expect("connect");
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await.expect("create database");
    conn.close().await.ok();
    s.admin.clone().database(&name)
}

/// A URL of database `name` on the test server.
pub async fn database_url(name: &str) -> String {
    let s = server().await;
    let (base, query) = match s.admin_url.split_once('?') {
        Some((b, q)) => (b.to_string(), format!("?{q}")),
        None => (s.admin_url.clone(), String::new()),
    };
    let cut = base.rfind('/').filter(|i| *i > "postgres://".len()).unwrap_or(base.len());
    format!("{}/{name}{query}", &base[..cut])
}

/// Connection options of a fresh database with every migration applied.
pub async fn fresh_database() -> PgConnectOptions {
    let s = server().await;
    let name = format!("rt_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect_with(&s.admin).await.expect("connect");
    let mut tries = 0;
    loop {
        match sqlx::query(&format!("CREATE DATABASE \"{name}\" TEMPLATE \"{}\"", s.template)).execute(&mut conn).await {
            Ok(_) => break,
            // Another test may be cloning the template this very moment.
            Err(e) if tries < 50 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("create test database: {e}"),
        }
    }
    conn.close().await.ok();
    s.admin.clone().database(&name)
}

/// Settings for tests: random port, known admin password, and argon2
/// parameters that are cheap on purpose (never use these in production).
pub fn test_settings() -> Settings {
    let mut s = Settings::defaults().expect("default settings");
    s.bind = "127.0.0.1:0".parse().expect("addr");
    s.admin_password = ADMIN_PASSWORD.to_string().into();
    s.workers = 2;
    s.password.memory_kib = 256;
    s.password.iterations = 1;
    s.password.max_concurrent_hashes = 4;
    s.database.max_connections = 10;
    s.database.acquire_timeout_ms = 2000;
    // Rate limits are off here (tests log in at machine speed); `hardening`
    // turns them on.
    s.rate_limits.login_per_ip = 0;
    s.rate_limits.login_per_account = 0;
    s.rate_limits.refresh_per_ip = 0;
    s.rate_limits.api_key_create_per_user = 0;
    s.rate_limits.oidc_callback_per_ip = 0;
    // On, so that the route sweeps meet `/metrics` as production does.
    s.metrics.token = METRICS_TOKEN.to_string().into();
    s
}

/// `metrics.token` of the test apps.
pub const METRICS_TOKEN: &str = "a-metrics-token-of-at-least-32-characters";

pub struct TestApp {
    pub address: String,
    pub pool: PgPool,
    pub db: PgConnectOptions,
    pub client: reqwest::Client,
    pub admin_token: String,
    pub handle: actix_web::dev::ServerHandle,
    auth_cache: (registrar::auth::cache::AuthCache, PgPool),
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let db = fresh_database().await;
    let mut settings = test_settings();
    configure(&mut settings);
    spawn_on(db.clone(), db, settings).await
}

/// Starts the app with its pool on `app_db` (e.g. through a proxy) while the
/// test's own pool talks to `db` directly.
pub async fn spawn_on(app_db: PgConnectOptions, db: PgConnectOptions, settings: Settings) -> TestApp {
    crate::capture::init();
    let app_pool = registrar::db::pool(app_db, &settings.database);
    let app = Application::build(settings, app_pool).await.expect("build app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let auth_cache = app.auth_cache();
    tokio::spawn(app.run_until_stopped());
    let pool = PgPool::connect_with(db.clone()).await.expect("test pool");
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let mut t = TestApp { address, pool, db, client, admin_token: String::new(), handle, auth_cache };
    t.admin_token = t.login(ADMIN, ADMIN_PASSWORD).await;
    t
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text))
    }
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_string()
    }
    #[track_caller]
    pub fn expect(self, status: u16) -> Resp {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        self
    }
}

/// How a request authenticates.
#[derive(Clone)]
pub enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
    Cookie(String),
}

impl TestApp {
    /// After a test changes access state in SQL (not through the server):
    /// waits until the server's auth cache has applied the invalidations.
    pub async fn settle_auth_cache(&self) {
        self.auth_cache.0.sync(&self.auth_cache.1).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn send(&self, method: Method, path: &str, auth: &Auth, body: Option<Value>) -> Resp {
        let request = format!("{method} {path}");
        let mut rb = self.client.request(method, self.url(path));
        rb = match auth {
            Auth::None => rb,
            Auth::Bearer(t) => rb.bearer_auth(t),
            Auth::Basic(u, p) => {
                crate::capture::secret("basic_password", p, None);
                rb.basic_auth(u, Some(p))
            }
            Auth::Cookie(c) => rb.header("Cookie", format!("registrar_session={c}")),
        };
        if let Some(b) = body {
            crate::capture::request_secrets(&b);
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let n = crate::capture::body(&request, status.as_u16(), &text);
        crate::capture::issued_secrets(n, &text, &headers);
        assert_no_secret_leak(&text);
        Resp { status, headers, text }
    }

    /// Sends a request built directly on `self.client` (forms, cookies,
    /// several credentials at once) through the same capture as `send`.
    pub async fn exchange(&self, what: &str, rb: reqwest::RequestBuilder) -> Resp {
        let resp = rb.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let n = crate::capture::body(what, status.as_u16(), &text);
        crate::capture::issued_secrets(n, &text, &headers);
        assert_no_secret_leak(&text);
        Resp { status, headers, text }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(Method::GET, path, &Auth::Bearer(token.into()), None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(Method::POST, path, &Auth::Bearer(token.into()), Some(body)).await
    }
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(Method::PUT, path, &Auth::Bearer(token.into()), Some(body)).await
    }
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(Method::PATCH, path, &Auth::Bearer(token.into()), Some(body)).await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.send(Method::DELETE, path, &Auth::Bearer(token.into()), None).await
    }

    pub async fn login_full(&self, username: &str, password: &str) -> Resp {
        self.send(
            Method::POST,
            "/api/v1/auth/login",
            &Auth::None,
            Some(json!({"username": username, "password": password})),
        )
        .await
    }

    /// Logs in and returns the access token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self.login_full(username, password).await.expect(200);
        r.json()["access_token"].as_str().expect("access_token").to_string()
    }

    /// Creates an ordinary user with `PASSWORD` and returns their token.
    pub async fn user(&self, username: &str) -> String {
        self.create_user(username, json!({})).await;
        self.login(username, PASSWORD).await
    }

    pub async fn create_user(&self, username: &str, extra: Value) -> Value {
        let mut body = json!({"username": username, "email": format!("{username}@example.org"), "password": PASSWORD});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        self.post("/api/v1/users", &self.admin_token, body).await.expect(201).json()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.expect("count query")
    }

    /// Makes the change log refuse entries with this action (a trigger that
    /// raises), so a test can check the change they describe rolls back.
    pub async fn refuse_log_entries(&self, action: &str) {
        sqlx::query(&format!(
            "CREATE OR REPLACE FUNCTION refuse_log_entry() RETURNS trigger AS $$ BEGIN
               IF NEW.action = '{action}' THEN RAISE EXCEPTION 'log refused'; END IF; RETURN NEW; END $$
             LANGUAGE plpgsql"
        ))
        .execute(&self.pool)
        .await
        .expect("refusing function");
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON change_log FOR EACH ROW EXECUTE FUNCTION refuse_log_entry()",
        )
        .execute(&self.pool)
        .await
        .expect("refusing trigger");
    }

    pub async fn accept_log_entries(&self) {
        sqlx::query("DROP TRIGGER refuse ON change_log").execute(&self.pool).await.expect("drop trigger");
    }

    /// The change-log actions recorded about a subject, oldest first.
    pub async fn log_actions(&self, subject_id: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT action FROM change_log WHERE subject_id = $1 ORDER BY id")
            .bind(subject_id)
            .fetch_all(&self.pool)
            .await
            .expect("log query")
    }
}

/// No response may carry a password hash or the test passwords.
#[track_caller]
pub fn assert_no_secret_leak(body: &str) {
    for needle in ["$argon2", "password_hash", "secret_hash", ADMIN_PASSWORD, PASSWORD, "\"salt\":\""] {
        assert!(!body.contains(needle), "response leaks `{needle}`: {body}");
    }
}

/// A TCP proxy in front of PostgreSQL that the test can cut and restore,
/// to play a database outage without touching the shared server.
pub struct Proxy {
    pub port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target_host: String, target_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = format!("{target_host}:{target_port}");
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().expect("lock").push(h);
            }
        });
        Proxy { port, up, conns }
    }

    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for h in self.conns.lock().expect("lock").drain(..) {
            h.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Installs Debian `packages` (apt-get, non-interactive) unless every path
/// in `present` exists already: the test peers a bare machine lacks.
pub async fn apt_install(present: &[&'static str], packages: &'static [&'static str]) {
    if present.iter().all(|p| std::path::Path::new(p).exists()) {
        return;
    }
    tokio::task::spawn_blocking(move || {
        let apt = |args: &[&str]| {
            std::process::Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(apt(&["update", "-q"]), "apt-get update failed");
        let mut args = vec!["install", "-y", "-q"];
        args.extend_from_slice(packages);
        assert!(apt(&args), "apt-get install {packages:?} failed");
    })
    .await
    .expect("join");
    for p in present {
        assert!(std::path::Path::new(p).exists(), "{p} still missing after installing {packages:?}");
    }
}

/// Lock order: runs `request` while another writer holds the row that
/// `first` locks (SQL); 300 ms in, that writer takes the row `then` locks
/// (waiting at most 2 s) and commits. Panics when `then` cannot be taken
/// (the request holds that row while it waits for the first: the two
/// orders that deadlock). Returns the answer, and whether it came only
/// after the other writer committed (the request waited for `first`).
pub async fn while_another_writer_holds<T>(
    app: &TestApp,
    first: &str,
    then: &str,
    request: impl std::future::Future<Output = T>,
) -> (T, bool) {
    let mut holder = app.pool.begin().await.expect("begin");
    sqlx::query(first).execute(&mut *holder).await.expect("the other writer's first lock");
    let send = async {
        let r = request.await;
        (r, std::time::Instant::now())
    };
    let other = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sqlx::query("SET LOCAL lock_timeout = '2s'").execute(&mut *holder).await.expect("timeout");
        sqlx::query(then)
            .execute(&mut *holder)
            .await
            .unwrap_or_else(|e| panic!("the request took `{then}` before `{first}`: {e}"));
        let released = std::time::Instant::now();
        holder.commit().await.expect("commit");
        released
    };
    let ((answer, answered), released) = tokio::join!(send, other);
    (answer, answered > released)
}
