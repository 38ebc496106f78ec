//! Operations: the metrics endpoint and what it counts.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

/// The value of the sample `name{labels}` (labels as written, in order), or
/// `None` when the scrape has no such sample.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn scrape(app: &TestApp) -> String {
    let r = app.get("/metrics", METRICS_TOKEN).await.expect(200);
    let ct = r.headers["content-type"].to_str().expect("ascii").to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    r.text
}

#[tokio::test]
async fn metrics_are_off_without_a_token_and_then_need_it() {
    let app = spawn_app_with(|s| s.metrics.token = String::new().into()).await;
    // Off by default: not even an administrator sees them.
    app.get("/metrics", &app.admin_token).await.expect(404);
    app.get("/metrics", "").await.expect(404);

    let app = spawn_app_with(|s| {
        s.rate_limits.login_per_account = 3;
        s.auth.max_failed_logins = 2;
    })
    .await;
    // Neither no credentials, an administrator's token, nor a near miss.
    app.get("/metrics", "").await.expect(401);
    app.get("/metrics", &app.admin_token).await.expect(401);
    app.get("/metrics", &METRICS_TOKEN[..METRICS_TOKEN.len() - 1]).await.expect(401);
    app.get("/metrics", &format!("{METRICS_TOKEN}x")).await.expect(401);
    for path in ["/metrics/", "//metrics", "/%6detrics"] {
        assert_ne!(app.get(path, "").await.status, 200, "{path}");
    }

    let before = scrape(&app).await;
    // A success, two failures that lock the account, a refusal while locked.
    app.create_user("mel", json!({})).await;
    let t = app.login("mel", PASSWORD).await;
    app.get("/api/v1/users/mel", &t).await.expect(200);
    app.get("/api/v1/users/nobody-here", &app.admin_token).await.expect(404);
    for _ in 0..2 {
        app.login_full("mel", "a wrong but long passphrase").await.expect(401);
    }
    assert_eq!(app.login_full("mel", PASSWORD).await.expect(429).code(), "rate_limited");
    let after = scrape(&app).await;

    let delta = |series: &str| sample(&after, series).unwrap_or(0.0) - sample(&before, series).unwrap_or(0.0);
    assert_eq!(delta(r#"registrar_logins_total{outcome="success"}"#), 1.0, "{after}");
    assert_eq!(delta(r#"registrar_logins_total{outcome="invalid"}"#), 2.0, "{after}");
    assert_eq!(delta(r#"registrar_logins_total{outcome="rate_limited"}"#), 1.0, "{after}");
    assert_eq!(delta("registrar_lockouts_total"), 1.0, "{after}");
    assert_eq!(delta(r#"registrar_rate_limited_total{limit="login_account"}"#), 1.0, "{after}");
    // Requests by route template and status class, never by raw path.
    let read = r#"{route="/api/v1/users/{username}",method="GET",status="2xx"}"#;
    assert!(delta(&format!("registrar_http_requests_total{read}")) >= 1.0, "{after}");
    assert!(delta(&format!("registrar_http_request_duration_seconds_count{read}")) >= 1.0, "{after}");
    let missing = r#"registrar_http_requests_total{route="/api/v1/users/{username}",method="GET",status="4xx"}"#;
    assert!(delta(missing) >= 1.0, "{after}");
    assert!(!after.contains("nobody-here") && !after.contains("/users/mel"), "a raw path became a label");
    // A made-up method is not a label of its own (any token is a method to HTTP).
    let odd = reqwest::Method::from_bytes(b"FOO1").expect("method");
    app.send(odd, "/healthz", &Auth::None, None).await;
    let later = scrape(&app).await;
    assert!(!later.contains("FOO1") && later.contains(r#"method="other""#), "{later}");
    // A login name longer than any index entry is an ordinary failure, not a 500.
    app.login_full(&"n".repeat(4000), "a wrong but long passphrase").await.expect(401);
    // The gauges read at scrape time, and the hasher and cache counters.
    assert!(sample(&after, "registrar_db_pool_max_connections").is_some_and(|v| v >= 1.0), "{after}");
    assert!(sample(&after, "registrar_db_pool_connections").is_some_and(|v| v >= 1.0), "{after}");
    assert!(sample(&after, "registrar_argon2_queue_depth").is_some(), "{after}");
    assert!(delta("registrar_argon2_wait_seconds_count") >= 4.0, "{after}");
    assert!(delta("registrar_auth_cache_hits_total") + delta("registrar_auth_cache_misses_total") >= 2.0, "{after}");
    // Each write waits for its notification to come back: the lag is measured.
    assert!(sample(&after, "registrar_auth_notification_lag_seconds_count").is_some_and(|v| v >= 1.0), "{after}");
    assert!(after.trim_end().ends_with("# EOF"), "an OpenMetrics document ends with # EOF");
    // Every series the sample Grafana dashboard queries is in the scrape.
    let dashboard = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/grafana-dashboard.json"))
        .expect("config/grafana-dashboard.json");
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut queried = 0;
    for (at, _) in dashboard.match_indices("registrar_") {
        let name: String = dashboard[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if name.len() > "registrar_".len() {
            queried += 1;
            assert!(after.lines().any(|l| l.starts_with(&name)), "the dashboard queries {name}, which is not scraped");
        }
    }
    assert!(queried >= 12, "{queried}");
    // No secret in the scrape.
    assert!(!after.contains(METRICS_TOKEN) && !after.contains(&t) && !after.contains(PASSWORD));
}

/// `registrar migrate --dry-run` prints every migration it would apply, with
/// its SQL, and changes nothing; after `migrate` it has nothing to apply.
#[tokio::test]
async fn migrate_dry_run_prints_and_changes_nothing() {
    let db = empty_database().await;
    let url = database_url(db.get_database().expect("db name")).await;
    let run = |args: &'static [&'static str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_registrar"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("REGISTRAR_")) {
            cmd.env_remove(k);
        }
        let out = cmd.args(args).env("REGISTRAR_DATABASE_URL", &url).output().expect("run registrar");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let all = registrar::db::MIGRATOR.iter().count();
    let plan = run(&["migrate", "--dry-run"]);
    assert!(plan.starts_with(&format!("0 migrations applied; {all} to apply")), "{plan}");
    for m in registrar::db::MIGRATOR.iter() {
        assert!(plan.contains(&format!("-- would apply {} {}", m.version, m.description)), "{plan}");
    }
    assert!(plan.contains("CREATE UNLOGGED TABLE rate_limits"), "the SQL is printed");
    let pool = sqlx::PgPool::connect_with(db).await.expect("pool");
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(tables, 0, "a dry run creates nothing");
    run(&["migrate"]);
    let plan = run(&["migrate", "--dry-run"]);
    assert_eq!(plan.trim(), format!("{all} migrations applied; 0 to apply"));
}

/// The newest PostgreSQL client program `name` (`pg_dump`, `pg_restore`):
/// Debian keeps them under /usr/lib/postgresql/N/bin.
fn pg_program(name: &str) -> std::path::PathBuf {
    let mut found: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let p = e.path().join("bin").join(name);
            p.is_file().then_some((v, p))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).unwrap_or_else(|| name.into())
}

/// The backup procedure of the README (`pg_dump -Fc` while the server
/// writes, `pg_restore` into a new database, registrar started on it):
/// everything acknowledged before the dump began is there, nothing is half
/// there, and the credentials issued before it (a session's access token,
/// an API key, a password) still work, since the server secrets are rows of
/// the same database.
#[tokio::test]
async fn a_backup_taken_during_writes_restores_everything_up_to_it() {
    let app = spawn_app().await;
    app.create_user("bea", json!({})).await;
    let bea = app.login("bea", PASSWORD).await;
    let key = app.post("/api/v1/users/me/api-keys", &bea, json!({"name": "backup"})).await.expect(201).json()["key"]
        .as_str()
        .expect("key")
        .to_string();
    app.post("/api/v1/groups", &app.admin_token, json!({"name": "imaging"})).await.expect(201);
    app.send(reqwest::Method::PUT, "/api/v1/users/bea/groups/imaging", &Auth::Bearer(app.admin_token.clone()), None)
        .await
        .expect(200);
    app.post("/api/v1/projects", &app.admin_token, json!({"id": "BRAIN", "name": "Brain"})).await.expect(201);
    let par = app.post("/api/v1/projects/BRAIN/access-requests", &bea, json!({"level": "member"})).await.expect(201);
    let par_id = par.json()["par_id"].as_i64().expect("par id");

    // A writer keeps creating users while the dump runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let writer = {
        let (client, base, token) = (app.client.clone(), app.address.clone(), app.admin_token.clone());
        let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("w{i:04}");
                let r = client
                    .post(format!("{base}/api/v1/users"))
                    .bearer_auth(&token)
                    .json(&json!({"username": name, "email": format!("{name}@example.org")}))
                    .send()
                    .await
                    .expect("create");
                assert_eq!(r.status(), 201);
                acknowledged.lock().expect("lock").push(name);
                i += 1;
            }
        })
    };
    while acknowledged.lock().expect("lock").len() < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before_dump = acknowledged.lock().expect("lock").clone();
    let dump = std::env::temp_dir().join(format!("registrar-backup-{}.dump", uuid::Uuid::new_v4().simple()));
    let source_url = database_url(app.db.get_database().expect("db")).await;
    let out = tokio::process::Command::new(pg_program("pg_dump"))
        .args(["--format=custom", "--no-owner", "--file"])
        .arg(&dump)
        .arg(&source_url)
        .output()
        .await
        .expect("pg_dump");
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.expect("writer");
    let all_written = acknowledged.lock().expect("lock").clone();
    assert!(all_written.len() > before_dump.len(), "writes went on during the dump");

    let restored = empty_database().await;
    let restored_url = database_url(restored.get_database().expect("db")).await;
    let out = tokio::process::Command::new(pg_program("pg_restore"))
        .args(["--no-owner", "--exit-on-error", "--dbname"])
        .arg(&restored_url)
        .arg(&dump)
        .output()
        .await
        .expect("pg_restore");
    let _ = std::fs::remove_file(&dump);
    assert!(out.status.success(), "pg_restore: {}", String::from_utf8_lossy(&out.stderr));
    // Every restored change-log entry is the original's, unchanged (read
    // before the restored server writes entries of its own).
    let log = "SELECT id, action, subject_id, changes::text FROM change_log ORDER BY id";
    let restored_pool = sqlx::PgPool::connect_with(restored.clone()).await.expect("pool");
    let restored_log: Vec<(i64, String, String, String)> =
        sqlx::query_as(log).fetch_all(&restored_pool).await.expect("log");
    let original_log: Vec<(i64, String, String, String)> = sqlx::query_as(log).fetch_all(&app.pool).await.expect("log");
    assert!(restored_log.iter().all(|e| original_log.contains(e)), "a restored entry differs from the original");
    let created_entries = restored_log.iter().filter(|e| e.1 == "user.created").count();
    assert!(created_entries >= before_dump.len() + 2, "creation entries of bea, the admin and the writes");
    let back = spawn_on(restored.clone(), restored, test_settings()).await;

    // Everything acknowledged before the dump began; a consistent prefix of the rest.
    let names: Vec<String> =
        sqlx::query_scalar("SELECT username FROM users WHERE username LIKE 'w%' ORDER BY username")
            .fetch_all(&back.pool)
            .await
            .expect("names");
    assert!(names.len() >= before_dump.len(), "{} restored, {} acknowledged before", names.len(), before_dump.len());
    assert_eq!(names[..], all_written[..names.len()], "the restored writes are a prefix of the acknowledged ones");
    // Each restored user has its creation entry, and each creation entry its user.
    let orphans = back
        .count(
            "SELECT count(*) FROM users u WHERE NOT EXISTS (SELECT 1 FROM change_log c
               WHERE c.action = 'user.created' AND c.subject_id = u.id::text)",
        )
        .await;
    assert_eq!(orphans, 0, "a user without its change-log entry");
    let dangling = back
        .count(
            "SELECT count(*) FROM change_log c WHERE c.action = 'user.created'
               AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id::text = c.subject_id)",
        )
        .await;
    assert_eq!(dangling, 0, "a change-log entry without its user");
    // Credentials issued before the backup work on the restored server.
    let me = back.get("/api/v1/users/me", &bea).await.expect(200).json();
    assert_eq!(me["username"], "bea", "a session's access token");
    assert_eq!(back.get("/api/v1/users/me", &key).await.expect(200).json()["username"], "bea", "an API key");
    back.login("bea", PASSWORD).await;
    let groups = back.get("/api/v1/users/bea/groups", &back.admin_token).await.expect(200).text;
    assert!(groups.contains("imaging"), "{groups}");
    let pars = back.get("/api/v1/projects/BRAIN/access-requests", &back.admin_token).await.expect(200).text;
    assert!(pars.contains(&format!("\"par_id\":{par_id}")), "{pars}");
}

/// `registrar admin rotate-secrets`, twice, while clients keep using a token
/// and an API key issued before, and keep logging in and making keys: not
/// one request fails; new tokens name the newest key; the old API key is
/// re-hashed under the newest pepper at its next use and keeps working.
#[tokio::test]
async fn secrets_rotate_under_load_without_a_failed_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let app = spawn_app().await;
    app.create_user("rot", json!({})).await;
    let old_token = app.login("rot", PASSWORD).await;
    let old_key = app.post("/api/v1/users/me/api-keys", &old_token, json!({"name": "before"})).await.expect(201).json()
        ["key"]
        .as_str()
        .expect("key")
        .to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::<String>::new())));
    let mut load = Vec::new();
    for task in 0..4 {
        let (client, base) = (app.client.clone(), app.address.clone());
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let (old_token, old_key) = (old_token.clone(), old_key.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let mut steps: Vec<(String, reqwest::RequestBuilder)> = Vec::new();
                match task {
                    0 => steps.push((
                        "old token".into(),
                        client.get(format!("{base}/api/v1/users/me")).bearer_auth(&old_token),
                    )),
                    1 => steps
                        .push(("old key".into(), client.get(format!("{base}/api/v1/users/me")).bearer_auth(&old_key))),
                    _ => {
                        // A new login, its token used at once, and now and then a new key used at once.
                        let r = client
                            .post(format!("{base}/api/v1/auth/login"))
                            .json(&json!({"username": "rot", "password": PASSWORD}))
                            .send()
                            .await
                            .expect("login");
                        if r.status() != 200 {
                            failed.lock().expect("lock").push(format!("login: {}", r.status()));
                            continue;
                        }
                        let t = r.json::<serde_json::Value>().await.expect("json")["access_token"]
                            .as_str()
                            .expect("token")
                            .to_string();
                        steps.push(("new token".into(), client.get(format!("{base}/api/v1/users/me")).bearer_auth(&t)));
                        if i % 4 == 0 {
                            let r = client
                                .post(format!("{base}/api/v1/users/me/api-keys"))
                                .bearer_auth(&t)
                                .json(&json!({"name": format!("k{task}-{i}")}))
                                .send()
                                .await
                                .expect("key");
                            if r.status() != 201 {
                                failed.lock().expect("lock").push(format!("new key: {}", r.status()));
                                continue;
                            }
                            let k = r.json::<serde_json::Value>().await.expect("json")["key"]
                                .as_str()
                                .expect("key")
                                .to_string();
                            steps
                                .push(("new key".into(), client.get(format!("{base}/api/v1/users/me")).bearer_auth(k)));
                        }
                    }
                }
                for (what, req) in steps {
                    let r = req.send().await.expect("request");
                    if r.status() == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.lock().expect("lock").push(format!("{what}: {}", r.status()));
                    }
                }
            }
        }));
    }
    let url = database_url(app.db.get_database().expect("db")).await;
    let rotate = |args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_registrar"));
            for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("REGISTRAR_")) {
                cmd.env_remove(k);
            }
            let out = cmd.args(args).env("REGISTRAR_DATABASE_URL", &url).output().await.expect("registrar");
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).expect("utf-8")
        }
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let first = rotate(&["admin", "rotate-secrets"]).await;
    assert!(first.contains("JWT signing key: version 2") && first.contains("API-key pepper: version 2"), "{first}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    rotate(&["admin", "rotate-secrets"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.expect("load task");
    }
    let failures = failed.lock().expect("lock").clone();
    let served = ok.load(Ordering::Relaxed);
    eprintln!("rotation under load: {served} requests answered 200, {} failed", failures.len());
    assert!(failures.is_empty(), "{failures:?}");
    assert!(served > 50, "{served}");

    // New tokens name version 3; the token and key from before still work.
    let t = app.login("rot", PASSWORD).await;
    let header = t.split('.').next().expect("header");
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).expect("base64"),
    )
    .expect("json");
    assert_eq!(header["kid"], "3");
    app.get("/api/v1/users/me", &old_token).await.expect(200);
    app.get("/api/v1/users/me", &old_key).await.expect(200);
    let prefix = old_key.split('_').nth(1).expect("prefix");
    let version = app.count(&format!("SELECT pepper_version::bigint FROM api_keys WHERE prefix = '{prefix}'")).await;
    assert_eq!(version, 3, "re-hashed under the newest pepper at its use");
    // A wrong key with a known prefix is still refused after the re-hash.
    let forged = format!("rk_{prefix}_{}", "A".repeat(43));
    app.get("/api/v1/users/me", &forged).await.expect(401);
    // A key revoked before a rotation is neither let in nor re-hashed after it.
    let revoked = app.post("/api/v1/users/me/api-keys", &t, json!({"name": "revoked"})).await.expect(201).json();
    let (revoked_key, revoked_id) =
        (revoked["key"].as_str().expect("key").to_string(), revoked["id"].as_str().expect("id").to_string());
    app.delete(&format!("/api/v1/users/me/api-keys/{revoked_id}"), &t).await.expect(204);
    rotate(&["admin", "rotate-secrets", "--pepper-only"]).await;
    app.get("/api/v1/users/me", &revoked_key).await.expect(401);
    let kept = app.count(&format!("SELECT pepper_version::bigint FROM api_keys WHERE id = '{revoked_id}'")).await;
    assert_eq!(kept, 3, "a refused key is not re-hashed");
    // No pepper is dropped while an instance may still take it for the
    // newest (its successor is younger than an hour)...
    let peppers = "SELECT count(*) FROM secret_versions WHERE name = 'api_key_pepper'";
    assert_eq!(app.count(peppers).await, 4);
    // ...and an hour on, the next rotation drops those no live key uses.
    sqlx::query("UPDATE secret_versions SET created_at = created_at - interval '2 hours'")
        .execute(&app.pool)
        .await
        .expect("age the versions");
    rotate(&["admin", "rotate-secrets", "--pepper-only"]).await;
    let unused = app
        .count(
            "SELECT count(*) FROM secret_versions s WHERE s.name = 'api_key_pepper'
               AND s.version < (SELECT max(version) - 1 FROM secret_versions WHERE name = 'api_key_pepper')
               AND NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.pepper_version = s.version AND k.revoked_at IS NULL)",
        )
        .await;
    assert_eq!(unused, 0, "unused old peppers are dropped");
    let dangling = app
        .count(
            "SELECT count(*) FROM api_keys k WHERE k.revoked_at IS NULL AND NOT EXISTS
               (SELECT 1 FROM secret_versions s WHERE s.name = 'api_key_pepper' AND s.version = k.pepper_version)",
        )
        .await;
    assert_eq!(dangling, 0, "no live key lost its pepper");
    app.get("/api/v1/users/me", &old_key).await.expect(200);
    assert_eq!(app.count("SELECT max(version)::bigint FROM secret_versions WHERE name = 'jwt_signing_key'").await, 3);
}

/// `db::Kept`: a read that ran to the end keeps its connection for the next
/// read (no ping on release); a read that was cancelled half-way or failed
/// does not, so no later read can receive an answer meant for another. At
/// most `cap` are kept, each for `max_uses` reads, and `expire`/`clear` give
/// them back to the pool.
#[tokio::test]
async fn reads_keep_only_connections_whose_reads_finished() {
    use registrar::db::Kept;
    let db = fresh_database().await;
    let pool = registrar::db::pool(db, &test_settings().database);
    let kept = Kept::new(2, 4);
    let backend = async |kept: &Kept| -> i32 {
        kept.read(&pool, async |c| sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(c).await)
            .await
            .expect("read")
    };
    assert!(kept.is_empty());
    let first = backend(&kept).await;
    assert_eq!(kept.len(), 1, "a finished read keeps its connection");
    assert_eq!(backend(&kept).await, first, "the next read takes it");

    // Cancelled while PostgreSQL is still working on it.
    let slow = kept.read(&pool, async |c| sqlx::query("SELECT pg_sleep(1)").execute(c).await);
    assert!(tokio::time::timeout(Duration::from_millis(100), slow).await.is_err());
    assert!(kept.is_empty(), "a cancelled read's connection is not kept");
    // The next read gets its own answer, on a connection of the pool.
    let n: i32 = kept.read(&pool, async |c| sqlx::query_scalar("SELECT 42").fetch_one(c).await).await.expect("read");
    assert_eq!(n, 42);
    assert_eq!(kept.len(), 1);

    // Failed: not kept either.
    let failed = kept.read(&pool, async |c| sqlx::query("SELECT 1/0").execute(c).await).await;
    assert!(failed.is_err());
    assert!(kept.is_empty(), "a failed read's connection is not kept");

    // Five reads at once: two connections are kept, the rest go back.
    let at_once = (0..5).map(|_| kept.read(&pool, async |c| sqlx::query("SELECT pg_sleep(0.1)").execute(c).await));
    for r in futures_util::future::join_all(at_once).await {
        r.expect("read");
    }
    assert_eq!(kept.len(), 2);

    // A connection goes back to the pool after `max_uses` reads.
    kept.clear();
    assert!(kept.is_empty());
    for _ in 0..3 {
        backend(&kept).await;
        assert_eq!(kept.len(), 1);
    }
    backend(&kept).await;
    assert!(kept.is_empty(), "the fourth read hands the connection back");

    // Idle ones are given back to the pool, which can hand them out again.
    backend(&kept).await;
    kept.expire(&pool, Duration::from_secs(60));
    assert_eq!(kept.len(), 1, "not idle long enough");
    tokio::time::sleep(Duration::from_millis(20)).await;
    kept.expire(&pool, Duration::from_millis(10));
    assert!(kept.is_empty());
    // (The cancelled read's connection returns when its pg_sleep ends.)
    for _ in 0..300 {
        if pool.num_idle() == pool.size() as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.num_idle(), pool.size() as usize, "every connection is back in the pool");
    pool.close().await;
}

/// With every connection of the pool out, whoever waits in the pool's
/// queue (here a write) is not left behind reads that pass the connections
/// around: the sweep gives the kept ones back, and under a steady stream of
/// reads each kept connection goes back after `Kept::FULL_USES` reads.
#[tokio::test]
async fn reads_never_keep_a_connection_someone_waits_for() {
    use registrar::db::Kept;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let db = fresh_database().await;
    let mut settings = test_settings();
    settings.database.max_connections = 2;
    let pool = registrar::db::pool(db, &settings.database);

    // No reads after the pool filled up: the sweep gives the kept ones back.
    let kept = Arc::new(Kept::new(2, u32::MAX));
    let sweep = Kept::expire_when_idle(kept.clone(), pool.clone());
    let reads = futures_util::future::join_all(
        (0..2).map(|_| kept.read(&pool, async |c| sqlx::query("SELECT pg_sleep(0.3)").execute(c).await)),
    );
    let write = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!((pool.size(), pool.num_idle()), (2, 0), "every connection is out");
        let waited = std::time::Instant::now();
        let conn = tokio::time::timeout(Duration::from_secs(2), pool.acquire()).await;
        (matches!(conn, Ok(Ok(_))), waited.elapsed())
    };
    let (reads, (write, waited)) = tokio::join!(reads, write);
    for r in reads {
        r.expect("read");
    }
    assert!(write, "the write got a connection");
    assert!(waited < Duration::from_millis(800), "{waited:?}");
    sweep.abort();
    kept.clear();

    // Reads without a pause, on both connections, and no sweep: a write
    // still gets one.
    let kept = Kept::new(2, u32::MAX);
    let (stop, done) = (AtomicBool::new(false), AtomicUsize::new(0));
    let reader = async || {
        while !stop.load(Ordering::Relaxed) {
            kept.read(&pool, async |c| sqlx::query("SELECT 1").execute(c).await).await.expect("read");
            done.fetch_add(1, Ordering::Relaxed);
        }
    };
    let write = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let conn = tokio::time::timeout(Duration::from_secs(2), pool.acquire()).await;
        stop.store(true, Ordering::Relaxed);
        matches!(conn, Ok(Ok(_)))
    };
    let ((), (), write) = tokio::join!(reader(), reader(), write);
    assert!(write, "the write got a connection while reads went on");
    assert!(done.load(Ordering::Relaxed) > 2 * Kept::FULL_USES as usize, "the reads did run");
    // (Closing the pool waits for every connection, the kept ones too.)
    kept.clear();
    pool.close().await;
}
