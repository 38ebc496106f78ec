//! Abuse limits, concurrency and faults.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

#[tokio::test]
async fn login_refresh_and_key_creation_are_rate_limited() {
    let app = spawn_app_with(|s| {
        s.rate_limits.login_per_ip = 4;
        s.rate_limits.refresh_per_ip = 2;
        s.rate_limits.api_key_create_per_user = 2;
    })
    .await; // the admin's login used one
    app.create_user("rl", json!({})).await;
    let t = app.login("rl", PASSWORD).await;
    app.login_full("rl", "a wrong but long passphrase").await.expect(401);
    app.login("rl", PASSWORD).await;
    let r = app.login_full("rl", PASSWORD).await.expect(429);
    assert_eq!(r.code(), "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().expect("ascii").parse().expect("secs");
    assert!((1..=61).contains(&retry), "{retry}");
    // Refused before any password check, although the password was right: no
    // failure counted, no session, no log entry.
    assert_eq!(app.get("/api/v1/users/rl", &app.admin_token).await.json()["failed_login_attempts"], 0);
    let rl = "(SELECT id FROM users WHERE username = 'rl')";
    assert_eq!(app.count(&format!("SELECT count(*) FROM sessions WHERE user_id = {rl}")).await, 2);
    let logged = app
        .count(&format!(
            "SELECT count(*) FROM change_log WHERE subject_id = {rl}::text AND action IN ('login.succeeded', 'login.failed')"
        ))
        .await;
    assert_eq!(logged, 3, "two logins and one failure, nothing for the refused attempt");
    // Refresh and API key creation likewise.
    for _ in 0..2 {
        app.send(Method::POST, "/api/v1/auth/refresh", &Auth::None, Some(json!({"refresh_token": "x"})))
            .await
            .expect(401);
    }
    app.send(Method::POST, "/api/v1/auth/refresh", &Auth::None, Some(json!({"refresh_token": "x"}))).await.expect(429);
    for i in 0..2 {
        app.post("/api/v1/users/me/api-keys", &t, json!({"name": format!("k{i}")})).await.expect(201);
    }
    app.post("/api/v1/users/me/api-keys", &t, json!({"name": "k3"})).await.expect(429);
    // Another user has their own budget.
    app.post("/api/v1/users/rl/api-keys", &app.admin_token, json!({"name": "by admin"})).await.expect(201);
}

#[tokio::test]
async fn per_account_login_limit() {
    let app = spawn_app_with(|s| s.rate_limits.login_per_account = 2).await;
    app.create_user("acc", json!({})).await;
    app.login("acc", PASSWORD).await;
    app.login("ACC", PASSWORD).await;
    assert_eq!(app.login_full("acc", PASSWORD).await.expect(429).code(), "rate_limited");
    app.create_user("other", json!({})).await;
    app.login("other", PASSWORD).await;
}

#[tokio::test]
async fn parallel_creates_of_one_username_give_one_user() {
    let app = spawn_app().await;
    let body = |i: usize| json!({"username": "same", "email": format!("same{i}@example.org")});
    let results =
        futures_util::future::join_all((0..100).map(|i| app.post("/api/v1/users", &app.admin_token, body(i)))).await;
    assert_eq!(results.iter().filter(|r| r.status == 201).count(), 1);
    assert!(results.iter().filter(|r| r.status != 201).all(|r| r.status == 409 && r.code() == "username_taken"));
    assert_eq!(app.count("SELECT count(*) FROM users WHERE lower(username) = 'same'").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM change_log WHERE action = 'user.created'").await, 2, "admin + one");
}

#[tokio::test]
async fn parallel_edits_lose_no_update() {
    let app = spawn_app().await;
    app.create_user("edited", json!({})).await;
    // 50 clients: half change the first name, half the last name; both survive.
    let patches = (0..50).map(|i| {
        let body =
            if i % 2 == 0 { json!({"first_name": format!("F{i}")}) } else { json!({"last_name": format!("L{i}")}) };
        app.patch("/api/v1/users/edited", &app.admin_token, body)
    });
    let results = futures_util::future::join_all(patches).await;
    assert!(results.iter().all(|r| r.status == 200));
    let u = app.get("/api/v1/users/edited", &app.admin_token).await.json();
    assert!(
        u["first_name"].as_str().expect("f").starts_with('F') && u["last_name"].as_str().expect("l").starts_with('L')
    );
    let id = u["id"].as_str().expect("id").to_string();
    let updates = app
        .count(&format!("SELECT count(*) FROM change_log WHERE subject_id = '{id}' AND action = 'user.updated'"))
        .await;
    assert_eq!(updates, 50, "every edit applied and logged (row locks serialise them)");
    // 50 clients each adding the user to a different group: all 50 memberships.
    for i in 0..50 {
        app.post("/api/v1/groups", &app.admin_token, json!({"name": format!("g{i}")})).await.expect(201);
    }
    let paths: Vec<String> = (0..50).map(|i| format!("/api/v1/users/edited/groups/g{i}")).collect();
    let adds = paths.iter().map(|p| app.put(p, &app.admin_token, json!(null)));
    let results = futures_util::future::join_all(adds).await;
    assert!(results.iter().all(|r| r.status == 200), "{:?}", results.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(
        app.get("/api/v1/users/edited/groups?limit=500", &app.admin_token).await.json()["items"]
            .as_array()
            .expect("list")
            .len(),
        50
    );
    // 50 clients adding roles (each of the three, many times over) while 10 more patch
    // the email: every role lands once, the last email wins, nothing fails.
    let roles = ["UserManager", "Non-Expiring", "Administrator"];
    let role_paths: Vec<String> = (0..50).map(|i| format!("/api/v1/users/edited/roles/{}", roles[i % 3])).collect();
    let adds = role_paths.iter().map(|p| app.put(p, &app.admin_token, json!(null)));
    let emails = (0..10)
        .map(|i| app.patch("/api/v1/users/edited", &app.admin_token, json!({"email": format!("e{i}@example.org")})));
    let (adds, emails) = tokio::join!(futures_util::future::join_all(adds), futures_util::future::join_all(emails));
    assert!(
        adds.iter().chain(emails.iter()).all(|r| r.status == 200),
        "{:?}",
        adds.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let u = app.get("/api/v1/users/edited", &app.admin_token).await.json();
    let mut got: Vec<&str> = u["roles"].as_array().expect("roles").iter().filter_map(|r| r.as_str()).collect();
    got.sort();
    assert_eq!(got, vec!["Administrator", "Non-Expiring", "UserManager"]);
    assert!(u["email"].as_str().expect("email").starts_with('e'));
    assert_eq!(app.count(&format!("SELECT count(*) FROM user_roles WHERE user_id = '{id}'")).await, 3);
}

#[tokio::test]
async fn pool_exhaustion_answers_503_quickly() {
    let app = spawn_app_with(|s| {
        s.database.max_connections = 1;
        s.database.acquire_timeout_ms = 300;
    })
    .await;
    // Hold a lock the app's only connection will wait on.
    let mut blocker = app.pool.begin().await.expect("tx");
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE").execute(&mut *blocker).await.expect("lock");
    let slow = app.get("/api/v1/users/admin", &app.admin_token);
    let fast = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let r = app.get("/api/v1/users/admin", &app.admin_token).await;
        (r, started.elapsed())
    };
    let release = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        blocker.rollback().await.expect("rollback");
    };
    let (slow, (fast, waited), ()) = tokio::join!(slow, fast, release);
    assert_eq!(fast.status, 503, "{}", fast.text);
    assert_eq!(fast.code(), "database_busy");
    assert!(fast.headers.contains_key("retry-after"));
    assert!(waited < Duration::from_secs(2), "answered after {waited:?}, not queued forever");
    assert_eq!(slow.status, 200, "the waiting request completes once the lock goes");
}

#[tokio::test]
async fn oversize_headers_and_slow_clients_are_cut_off() {
    let app = spawn_app_with(|s| s.limits.client_request_timeout_secs = 1).await;
    let r = app.client.get(app.url("/healthz")).header("X-Big", "a".repeat(20_000)).send().await.expect("send");
    assert_eq!(r.status(), 431);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "headers_too_large");
    // Slow loris: half a request, then silence.
    let addr = app.address.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a stalled request open");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

/// Found by schemathesis: text PostgreSQL cannot store (NUL) was a 500.
#[tokio::test]
async fn nul_characters_are_a_client_error() {
    let app = spawn_app().await;
    app.create_user("nul", json!({})).await;
    // Nothing applied: the refusal itself, with every item's outcome.
    let r = app.put("/api/v1/users/nul/groups", &app.admin_token, json!(["a\u{0}b"])).await.expect(400);
    assert_eq!(r.code(), "invalid_characters");
    assert_eq!(r.json()["error"]["details"]["results"][0]["ok"], false);
    let r = app.get("/api/v1/groups/a%00b", &app.admin_token).await.expect(400);
    assert_eq!(r.code(), "invalid_characters");
    // A role name with NUL is a role that does not exist: refused, nothing granted.
    let r = app.put("/api/v1/users/nul/roles", &app.admin_token, json!(["x\u{0}"])).await;
    assert_eq!(r.json()["error"]["details"]["results"][0]["ok"], false, "{}", r.text);
    assert_eq!(app.count("SELECT count(*) FROM user_groups").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM user_roles r JOIN users u ON u.id = r.user_id WHERE u.username = 'nul'").await,
        0
    );
}

#[tokio::test]
async fn cookie_authenticated_writes_refuse_cross_site_requests() {
    let app = spawn_app().await;
    app.create_user("cora", json!({})).await;
    let login = app.login_full("cora", PASSWORD).await.expect(200);
    let cookie = login.headers["set-cookie"].to_str().expect("cookie").to_string();
    let cookie = cookie.split(';').next().expect("pair").to_string();
    let token = login.json()["access_token"].as_str().expect("token").to_string();
    let patch = |name: &'static str, headers: Vec<(&'static str, String)>, cookie: Option<String>| {
        let mut rb = app.client.patch(app.url("/api/v1/users/me")).json(&json!({"first_name": name}));
        if let Some(c) = cookie {
            rb = rb.header("Cookie", c);
        }
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        rb.send()
    };
    // A page on another site posting with the user's cookie.
    for headers in [
        vec![("Origin", "https://evil.example".to_string())],
        vec![("Origin", "null".to_string())],
        vec![("Sec-Fetch-Site", "cross-site".to_string()), ("Origin", app.address.clone())],
        vec![("Sec-Fetch-Site", "same-site".to_string())],
    ] {
        let r = patch("Mallory", headers.clone(), Some(cookie.clone())).await.expect("request");
        assert_eq!(r.status(), 403, "{headers:?}");
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "cross_site_request");
    }
    let me = app.get("/api/v1/users/me", &token).await.expect(200).json();
    assert_eq!(me["first_name"], "", "a refused write changes nothing");
    // The same origin, the browser's own navigation, and non-browser clients (no headers) pass.
    for (name, headers) in [
        ("Same", vec![("Origin", app.address.clone())]),
        ("Fetch", vec![("Sec-Fetch-Site", "same-origin".to_string())]),
        ("Tool", vec![]),
    ] {
        let r = patch(name, headers, Some(cookie.clone())).await.expect("request");
        assert_eq!(r.status(), 200, "{name}");
    }
    // A bearer token is not ambient: a cross-site origin does not matter.
    let r = app
        .client
        .patch(app.url("/api/v1/users/me"))
        .bearer_auth(&token)
        .header("Origin", "https://evil.example")
        .json(&json!({"first_name": "Bearer"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    // Reads with the cookie are not affected.
    let r = app
        .client
        .get(app.url("/api/v1/users/me"))
        .header("Cookie", cookie)
        .header("Sec-Fetch-Site", "cross-site")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
}

/// A real PostgreSQL restart (its own cluster, so other tests are not
/// touched) under load: while it is down every request fails fast with a
/// JSON 503, nothing answers 500 or hangs, and once it is back the same
/// server process serves again, with no restart of its own.
#[tokio::test]
async fn postgres_restart_under_load() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(format!("test-pg-restart-{}", uuid::Uuid::new_v4().simple()));
    let start = |dir: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || registrar::localdb::LocalPostgres::ensure_started(&dir, "", true))
            .await
            .expect("join")
            .expect("start PostgreSQL")
    };
    let pg = start(dir.clone()).await;
    let db = pg.connect_options("postgres");
    let mut settings = test_settings();
    settings.database.acquire_timeout_ms = 1000;
    let app = spawn_on(db.clone(), db, settings).await;
    app.create_user("loadie", serde_json::json!({})).await;
    let user_token = app.login("loadie", PASSWORD).await;

    let running = Arc::new(AtomicBool::new(true));
    let mut workers = Vec::new();
    for i in 0..8 {
        let (client, url, running) = (app.client.clone(), app.address.clone(), running.clone());
        let (path, token) = if i % 2 == 0 {
            ("/api/v1/users/me", user_token.clone())
        } else {
            ("/api/v1/users/loadie", app.admin_token.clone())
        };
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while running.load(Ordering::Relaxed) {
                let t0 = std::time::Instant::now();
                let r = client.get(format!("{url}{path}")).bearer_auth(&token).send().await.expect("send");
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                seen.push((t0, status, t0.elapsed(), body));
                if status != 200 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stopped_pg = tokio::task::spawn_blocking(move || {
        pg.stop().expect("stop PostgreSQL");
        pg
    })
    .await
    .expect("join");
    let down_at = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(stopped_pg);
    let restarting_at = std::time::Instant::now();
    let pg = start(dir.clone()).await;
    let up_at = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    running.store(false, Ordering::Relaxed);
    let mut seen = Vec::new();
    for w in workers {
        seen.extend(w.await.expect("worker"));
    }
    let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
    let _ = std::fs::remove_dir_all(&dir);

    assert!(seen.iter().any(|(at, s, ..)| *s == 200 && *at < down_at), "served before the restart");
    let during: Vec<_> = seen
        .iter()
        .filter(|(at, _, took, _)| *at > down_at + Duration::from_millis(200) && *at + *took < restarting_at)
        .collect();
    assert!(!during.is_empty(), "requests were made while PostgreSQL was down");
    for (_, status, took, body) in &during {
        assert_eq!(*status, 503, "while down (took {took:?}): {body}");
        assert!(body.contains("\"code\":\"database_"), "a JSON error with a stable code: {body}");
        assert!(*took < Duration::from_millis(2500), "failed fast, not hung: {took:?}");
    }
    for (_, status, _, body) in &seen {
        assert!(*status == 200 || *status == 503, "only 200 or 503, got {status}: {body}");
    }
    let recovered = seen
        .iter()
        .filter(|(at, s, ..)| *s == 200 && *at > up_at)
        .map(|(at, ..)| at.duration_since(up_at))
        .min()
        .expect("served again after PostgreSQL came back, without a restart");
    let last_failure = seen.iter().filter(|(at, s, ..)| *s != 200 && *at > up_at).map(|(at, ..)| *at).max();
    if let Some(last) = last_failure {
        assert!(
            last.duration_since(up_at) < Duration::from_secs(3),
            "still failing {:?} after restart",
            last.duration_since(up_at)
        );
    }
    println!(
        "postgres restart: {} requests, {} during the outage (all 503), first 200 {recovered:?} after PostgreSQL was back",
        seen.len(),
        during.len()
    );
}

/// Attack review: a write that waits on a row another transaction holds
/// (a long import, say) until the statement timeout answers 503 with
/// Retry-After, not 500.
#[tokio::test]
async fn a_write_blocked_past_the_statement_timeout_is_503() {
    let app = spawn_app().await;
    let t = app.user("held").await;
    let mut hold = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT id FROM users WHERE username = 'held' FOR UPDATE").execute(&mut *hold).await.expect("lock");
    let r = app.patch("/api/v1/users/me", &t, json!({"affiliation": "Waited"})).await;
    hold.rollback().await.expect("rollback");
    assert_eq!((r.status.as_u16(), r.code()), (503, "busy".to_string()), "{}", r.text);
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(app.get("/api/v1/users/held", &app.admin_token).await.json()["affiliation"], "");
}
