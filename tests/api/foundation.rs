//! Service foundation: health, readiness, errors, migrations, configuration,
//! the local default database.

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let r = app.send(Method::GET, "/healthz", &Auth::None, None).await.expect(200);
    assert_eq!(r.json()["status"], "ok");
    let r = app.send(Method::GET, "/readyz", &Auth::None, None).await.expect(200);
    assert_eq!(r.json()["status"], "ready");
    let id = r.headers.get("x-request-id").expect("request id header").to_str().expect("ascii");
    assert_eq!(id.len(), 36, "a UUID: {id}");
}

#[tokio::test]
async fn client_request_id_is_echoed() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).header("X-Request-Id", "trace-abc_123").send().await.expect("send");
    // Finding 8: the server's own id is the key; the client's is echoed apart.
    assert_ne!(r.headers()["x-request-id"], "trace-abc_123");
    assert_eq!(r.headers()["x-client-request-id"], "trace-abc_123");
    // A hostile one is replaced.
    let r =
        app.client.get(app.url("/healthz")).header("X-Request-Id", "bad id\twith spaces").send().await.expect("send");
    assert_ne!(r.headers()["x-request-id"], "bad id\twith spaces");
}

#[tokio::test]
async fn readiness_follows_the_database_without_restart() {
    let db = fresh_database().await;
    let proxy = Proxy::start(db.get_host().to_string(), db.get_port()).await;
    let mut settings = test_settings();
    settings.database.acquire_timeout_ms = 1000;
    let app = spawn_on(db.clone().port(proxy.port), db, settings).await;

    app.send(Method::GET, "/readyz", &Auth::None, None).await.expect(200);
    proxy.cut();
    let r = app.send(Method::GET, "/readyz", &Auth::None, None).await.expect(503);
    assert_eq!(r.json()["status"], "not_ready");
    assert!(r.headers.contains_key("retry-after"));
    // Liveness does not depend on the database.
    app.send(Method::GET, "/healthz", &Auth::None, None).await.expect(200);
    // A request needing the database fails fast with 503, not a hang or a 500.
    let r = app.get("/api/v1/users/me", &app.admin_token).await.expect(503);
    assert!(r.code().starts_with("database_"), "{}", r.text);

    proxy.restore();
    let mut ok = false;
    for _ in 0..50 {
        if app.send(Method::GET, "/readyz", &Auth::None, None).await.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "readyz did not recover after the database came back");
    app.get("/api/v1/users/me", &app.admin_token).await.expect(200);
}

#[tokio::test]
async fn error_bodies() {
    let app = spawn_app().await;
    // Unknown route: 404 JSON.
    let r = app.send(Method::GET, "/no/such/route", &Auth::None, None).await.expect(404);
    assert_eq!(r.code(), "not_found");
    assert!(r.json()["error"]["message"].is_string());
    assert!(r.json()["error"]["request_id"].is_string());
    // Known route, wrong method: 405 JSON.
    let r = app.send(Method::DELETE, "/healthz", &Auth::None, None).await.expect(405);
    assert_eq!(r.code(), "method_not_allowed");
    // It says which methods the route has (RFC 9110: a 405 carries `Allow`).
    assert_eq!(r.headers.get("allow").and_then(|v| v.to_str().ok()), Some("GET"));
    let r = app.send(Method::PUT, "/api/v1/users/me", &Auth::None, None).await.expect(405);
    let allow = r.headers.get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    for m in ["GET", "PATCH", "DELETE"] {
        assert!(allow.split(", ").any(|a| a == m), "{m} missing from Allow: {allow}");
    }
    assert!(!allow.contains("PUT"), "{allow}");
    // Malformed JSON: 400.
    let r = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_json");
    // Wrong content type: 415.
    let r = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "text/plain")
        .body("username=a")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 415);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    // Oversize body: 413.
    let big = json!({"username": "a".repeat(200_000), "password": "x"});
    let r = app.client.post(app.url("/api/v1/auth/login")).json(&big).send().await.expect("send");
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "payload_too_large");
    // A wrong type does not echo the value (it could be a password).
    let r = app
        .send(
            Method::POST,
            "/api/v1/auth/login",
            &Auth::None,
            Some(json!({"username": "x", "password": 1234567890123u64})),
        )
        .await
        .expect(400);
    assert!(!r.text.contains("1234567890123"), "{}", r.text);
}

#[tokio::test]
async fn internal_errors_say_nothing_internal() {
    let app = spawn_app().await;
    // Break the schema under the running server.
    sqlx::query("ALTER TABLE roles RENAME COLUMN permissions TO perms").execute(&app.pool).await.expect("alter");
    let r = app.get("/api/v1/roles", &app.admin_token).await.expect(500);
    let body = r.json();
    assert_eq!(body["error"]["code"], "internal_error");
    assert_eq!(body["error"]["message"], "internal server error");
    let rid = body["error"]["request_id"].as_str().expect("request id");
    assert_eq!(r.headers["x-request-id"], rid);
    for leak in ["perms", "permissions", "column", "SELECT", "sqlx", "panicked"] {
        assert!(!r.text.contains(leak), "500 body leaks `{leak}`: {}", r.text);
    }
}

#[tokio::test]
async fn concurrent_starts_migrate_once() {
    let db = empty_database().await;
    let start = |db: sqlx::postgres::PgConnectOptions| async move {
        let settings = test_settings();
        let pool = registrar::db::pool(db, &settings.database);
        registrar::startup::Application::build(settings, pool).await.map(|a| a.port())
    };
    let (a, b, c) = tokio::join!(start(db.clone()), start(db.clone()), start(db.clone()));
    a.expect("instance a");
    b.expect("instance b");
    c.expect("instance c");
    let pool = sqlx::PgPool::connect_with(db).await.expect("pool");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations").fetch_one(&pool).await.expect("q");
    assert_eq!(applied as usize, registrar::db::MIGRATOR.iter().count());
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&pool).await.expect("q");
    assert_eq!(users, 1, "exactly one bootstrap admin");
    let secrets: i64 = sqlx::query_scalar("SELECT count(*) FROM server_secrets").fetch_one(&pool).await.expect("q");
    assert_eq!(secrets, 2);
}

fn registrar_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_registrar"));
    for (k, _) in std::env::vars() {
        if k.starts_with("REGISTRAR_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

fn config_error(envs: &[(&str, &str)]) -> String {
    let mut c = registrar_bin();
    c.arg("migrate");
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.stdin(Stdio::null()).output().expect("run registrar");
    assert_eq!(out.status.code(), Some(2), "config errors exit with 2: {out:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn config_errors_name_the_bad_key() {
    let e = config_error(&[("REGISTRAR_BIND", "not-an-address")]);
    assert!(e.contains("bind") && e.contains("REGISTRAR_BIND"), "{e}");
    // A value out of range says where it came from too.
    let e = config_error(&[("REGISTRAR_PASSWORD__MIN_LENGTH", "4")]);
    assert!(e.contains("password.min_length") && e.contains("REGISTRAR_PASSWORD__MIN_LENGTH"), "{e}");
    // No terminal, no colour codes.
    assert!(!e.contains('\u{1b}'), "{e:?}");
    let e = config_error(&[("REGISTRAR_AUTH__ACCESS_TOKEN_TTL_SECS", "soon")]);
    assert!(e.contains("auth.access_token_ttl_secs"), "{e}");
    let dir = tempdir();
    let file = dir.join("extra.toml");
    std::fs::write(&file, "[database]\nmax_connections = \"many\"\n").expect("write");
    let e = config_error(&[("REGISTRAR_CONFIG", file.to_str().expect("utf8"))]);
    assert!(e.contains("database.max_connections") && e.contains("extra.toml"), "{e}");
    let e = config_error(&[("REGISTRAR_CONFIG", "/nonexistent/registrar.toml")]);
    assert!(e.contains("REGISTRAR_CONFIG"), "{e}");
    // The environment wins over the file: the file's unreadable value is
    // replaced by the environment's good one, so start-up gets as far as
    // the (environment's) bad minimum. Were the file to win, the error
    // would name its max_length.
    std::fs::write(&file, "[password]\nmax_length = \"many\"\n").expect("write");
    let e = config_error(&[
        ("REGISTRAR_CONFIG", file.to_str().expect("utf8")),
        ("REGISTRAR_PASSWORD__MAX_LENGTH", "300"),
        ("REGISTRAR_PASSWORD__MIN_LENGTH", "4"),
    ]);
    assert!(e.contains("password.min_length") && !e.contains("max_length"), "{e}");
    std::fs::write(&file, "[password]\nmin_length = 5\n").expect("write");
    let e = config_error(&[("REGISTRAR_CONFIG", file.to_str().expect("utf8"))]);
    assert!(e.contains("password.min_length") && e.contains("extra.toml"), "{e}");
}

fn tempdir() -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("t-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn wait_ready(url: &str, child: &mut std::process::Child) {
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = client.get(url).send().await {
            if r.status() == 200 {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("registrar exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("registrar did not become ready");
}

fn sigterm_and_wait(child: &mut std::process::Child) -> std::process::ExitStatus {
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill");
    for _ in 0..300 {
        if let Ok(Some(s)) = child.try_wait() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("registrar did not stop on SIGTERM");
}

/// The run command with no database configured: a private cluster is created
/// under the data folder, a bootstrap admin is printed once, SIGTERM stops
/// the server and the cluster, and a second start keeps the data.
#[tokio::test]
async fn local_default_database_lifecycle() {
    let dir = tempdir();
    let port = free_port();
    let spawn = || {
        registrar_bin()
            .env("REGISTRAR_DATA_DIR", &dir)
            .env("REGISTRAR_BIND", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(crate::capture::child_log("local-db"))
            .spawn()
            .expect("spawn registrar")
    };
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let mut first = spawn();
    wait_ready(&ready, &mut first).await;
    let client = reqwest::Client::new();
    let status = sigterm_and_wait(&mut first);
    assert!(status.success(), "clean exit: {status}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut first.stdout.take().expect("stdout"), &mut out).expect("read");
    let password = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .unwrap_or_else(|| panic!("bootstrap password printed: {out}"))
        .to_string();
    // The cluster was stopped with the server.
    let cluster = find_cluster(&dir);
    assert!(!cluster.join("pgdata").join("postmaster.pid").exists(), "postgres still running after SIGTERM");

    let mut second = spawn();
    wait_ready(&ready, &mut second).await;
    let r = client
        .post(format!("http://127.0.0.1:{port}/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 200, "the admin of the first run still exists");
    sigterm_and_wait(&mut second);
    let mut out2 = String::new();
    std::io::Read::read_to_string(&mut second.stdout.take().expect("stdout"), &mut out2).expect("read");
    assert!(!out2.contains("password:"), "no second bootstrap: {out2}");
    assert!(!cluster.join("pgdata").join("postmaster.pid").exists());
}

fn find_cluster(dir: &std::path::Path) -> std::path::PathBuf {
    let local = dir.join("postgres");
    if local.join("pgdata").exists() {
        return local;
    }
    // Running as root in a folder `postgres` cannot enter: see localdb.rs.
    std::fs::read_dir("/var/lib/registrar")
        .expect("cluster somewhere")
        .flatten()
        .map(|e| e.path())
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("cluster")
}

/// SIGTERM while requests are in flight: they complete, then the process exits cleanly.
#[tokio::test]
async fn sigterm_finishes_in_flight_requests() {
    let db = fresh_database().await;
    let url = database_url(db.get_database().expect("db")).await;
    let port = free_port();
    let mut child = registrar_bin()
        .env("REGISTRAR_DATABASE_URL", &url)
        .env("REGISTRAR_BIND", format!("127.0.0.1:{port}"))
        .env("REGISTRAR_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("REGISTRAR_RATE_LIMITS__LOGIN_PER_IP", "0")
        .env("REGISTRAR_RATE_LIMITS__LOGIN_PER_ACCOUNT", "0")
        // Real argon2 cost: each login takes tens of milliseconds.
        .stdin(Stdio::null())
        .stdout(crate::capture::child_log("sigterm"))
        .stderr(crate::capture::child_log("sigterm"))
        .spawn()
        .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/readyz"), &mut child).await;
    let client = reqwest::Client::new();
    let admin: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = admin["access_token"].as_str().expect("token").to_string();
    const N: usize = 12;
    for i in 0..N {
        let body = json!({"username": format!("t{i}"), "email": format!("t{i}@example.org"), "password": PASSWORD});
        let r =
            client.post(format!("{base}/api/v1/users")).bearer_auth(&token).json(&body).send().await.expect("create");
        assert_eq!(r.status(), 201);
    }
    let pool = sqlx::PgPool::connect_with(db).await.expect("pool");
    let logins = (0..N).map(|i| {
        let request = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": format!("t{i}"), "password": PASSWORD}));
        async move {
            let r = request.send().await?;
            let status = r.status();
            Ok::<_, reqwest::Error>((status, r.text().await.unwrap_or_default()))
        }
    });
    let all = futures_util::future::join_all(logins);
    let term = async {
        // Every login has started (its attempt is recorded before hashing), so
        // all of them are in flight, most still waiting for a hashing thread.
        for _ in 0..2000 {
            let started: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM users WHERE username LIKE 't%' AND last_login_attempt IS NOT NULL",
            )
            .fetch_one(&pool)
            .await
            .expect("q");
            if started as usize == N {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill");
    };
    let (results, ()) = tokio::join!(all, term);
    let ok = results.iter().filter(|r| r.as_ref().is_ok_and(|(s, _)| *s == 200)).count();
    let seen: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok((s, body)) if *s != 200 => format!("{s} {body}"),
            Ok((s, _)) => s.to_string(),
            Err(e) => format!("{e:?}"),
        })
        .collect();
    assert_eq!(ok, N, "every in-flight login completed: {seen:?}");
    let status = tokio::task::spawn_blocking(move || sigterm_and_wait(&mut child)).await.expect("join");
    assert!(status.success(), "{status}");
}

/// `registrar admin reset-password` is the same reset as a manager's through
/// the API: the new password works, every session of the user ends.
#[tokio::test]
async fn the_command_line_resets_a_password_like_the_api() {
    let app = spawn_app().await;
    let token = app.user("cli").await;
    let url = database_url(app.db.get_database().expect("db name")).await;
    crate::capture::secret("password", "a fresh command line passphrase", None);
    let mut child = registrar_bin()
        .args(["admin", "reset-password", "--username", "cli", "--password-stdin"])
        .env("REGISTRAR_DATABASE_URL", &url)
        .env("REGISTRAR_PASSWORD__MEMORY_KIB", "256")
        .env("REGISTRAR_PASSWORD__ITERATIONS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run registrar");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "a fresh command line passphrase").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    app.settle_auth_cache().await;
    app.get("/api/v1/users/me", &token).await.expect(401);
    app.login_full("cli", PASSWORD).await.expect(401);
    app.login("cli", "a fresh command line passphrase").await;
    let reset = app.count("SELECT count(*) FROM change_log WHERE action = 'password.reset'").await;
    assert_eq!(reset, 1);
}

/// The command line's output is for people: a second `migrate` prints no
/// PostgreSQL notice ("relation ... already exists, skipping") and, off a
/// terminal, no colour codes.
#[tokio::test]
async fn migrate_twice_prints_no_notices() {
    let db = empty_database().await;
    let url = database_url(db.get_database().expect("name")).await;
    for run in 0..2 {
        let mut c = registrar_bin();
        c.env_remove("RUST_LOG");
        c.env("REGISTRAR_DATABASE_URL", &url).env("REGISTRAR_ADMIN_PASSWORD", "a long passphrase for migrate 2026");
        let out = c.arg("migrate").stdin(Stdio::null()).output().expect("run registrar");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run {run}: {stderr}");
        assert!(!stderr.contains("already exists") && !stderr.contains('\u{1b}'), "run {run}: {stderr:?}");
    }
}
