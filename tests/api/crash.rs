//! Crash safety: `kill -9` of a registrar process in the middle of 200
//! concurrent writes, then a restart on the same database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::scaleout::{start_with, wait_ready};

const NEW_PASSWORD: &str = "a brand new passphrase after the crash";

#[derive(Clone, Debug, PartialEq)]
enum Write {
    Create(String),
    Grant(String),
    GroupAdd(String),
    Password(String),
    Login(String),
    Accept(String, i64),
}

/// Every write whose answer arrived (acknowledged) was made, none is half
/// made (each row change has its change-log entry and each entry its row
/// change), and nothing is left stuck: every account logs in after the
/// restart (login reservations lapse), no failure was counted.
#[tokio::test]
async fn kill_9_during_200_writes_loses_no_acknowledged_write_and_leaves_nothing_half_done() {
    let db = empty_database().await;
    let url = database_url(db.get_database().expect("db name")).await;
    let env = [
        ("REGISTRAR_AUTH__LOGIN_RESERVATION_SECS", "1"),
        ("REGISTRAR_DATABASE__MAX_CONNECTIONS", "8"),
        // The test logs in at machine speed from one address.
        ("REGISTRAR_RATE_LIMITS__LOGIN_PER_IP", "0"),
        ("REGISTRAR_RATE_LIMITS__LOGIN_PER_ACCOUNT", "0"),
    ];
    let client = reqwest::Client::new();
    let mut first = start_with(&url, &env).await;
    wait_ready(&client, &first.url).await;
    let (base, http) = (first.url.clone(), client.clone());
    let call = move |method: Method, path: String, token: Option<String>, body: Option<Value>| {
        let (client, base) = (http.clone(), base.clone());
        async move {
            let mut r = client.request(method, format!("{base}{path}"));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            if let Some(b) = body {
                r = r.json(&b);
            }
            r.send().await
        }
    };
    let login = |user: String, password: &'static str| {
        let call = call.clone();
        async move {
            let r = call(
                Method::POST,
                "/api/v1/auth/login".into(),
                None,
                Some(json!({"username": user, "password": password})),
            )
            .await
            .expect("login");
            assert_eq!(r.status(), 200, "{user}");
            r.json::<Value>().await.expect("json")["access_token"].as_str().expect("token").to_string()
        }
    };
    let admin = login(ADMIN.into(), ADMIN_PASSWORD).await;
    let a = Some(admin.clone());
    for i in 0..40 {
        let u = format!("u{i:02}");
        let r = call(
            Method::POST,
            "/api/v1/users".into(),
            a.clone(),
            Some(json!({"username": u, "email": format!("{u}@example.org"), "password": PASSWORD})),
        )
        .await
        .expect("create");
        assert_eq!(r.status(), 201);
    }
    assert_eq!(
        call(Method::POST, "/api/v1/groups".into(), a.clone(), Some(json!({"name": "crash"})))
            .await
            .expect("g")
            .status(),
        201
    );
    let r =
        call(Method::POST, "/api/v1/projects".into(), a.clone(), Some(json!({"id": "CRASH", "name": "Crash"}))).await;
    assert_eq!(r.expect("project").status(), 201);
    let mut invitations = Vec::new();
    for i in 30..40 {
        let u = format!("u{i:02}");
        let r = call(
            Method::POST,
            "/api/v1/projects/CRASH/access-requests".into(),
            a.clone(),
            Some(json!({"username": u, "level": "member"})),
        )
        .await
        .expect("invite");
        assert_eq!(r.status(), 201);
        let par = r.json::<Value>().await.expect("json")["par_id"].as_i64().expect("par id");
        invitations.push((u.clone(), par, login(u, PASSWORD).await));
    }
    let pool = sqlx::PgPool::connect_with(db).await.expect("pool");
    let setup_log: i64 = sqlx::query_scalar("SELECT max(id) FROM change_log").fetch_one(&pool).await.expect("max");

    // 200 writes at once: 60 creates, 40 role grants, 40 group adds, 30
    // password changes, 20 logins, 10 invitation accepts.
    let kinds: Vec<Vec<Write>> = vec![
        (0..60).map(|i| Write::Create(format!("c{i:02}"))).collect(),
        (0..40).map(|i| Write::Grant(format!("u{i:02}"))).collect(),
        (0..40).map(|i| Write::GroupAdd(format!("u{i:02}"))).collect(),
        (0..30).map(|i| Write::Password(format!("u{i:02}"))).collect(),
        (0..20).map(|i| Write::Login(format!("u{:02}", 30 + i % 10))).collect(),
        invitations.iter().map(|(u, par, _)| Write::Accept(u.clone(), *par)).collect(),
    ];
    // Interleaved, so that every kind is in flight when the kill lands.
    let mut writes = Vec::new();
    for round in 0..60 {
        writes.extend(kinds.iter().filter_map(|k| k.get(round).cloned()));
    }
    assert_eq!(writes.len(), 200);
    let tokens: HashMap<String, String> = invitations.iter().map(|(u, _, t)| (u.clone(), t.clone())).collect();
    let acknowledged = Arc::new(Mutex::new(Vec::<Write>::new()));
    let mut tasks = Vec::new();
    for (n, w) in writes.iter().cloned().enumerate() {
        let (call, a, acknowledged, tokens) = (call.clone(), a.clone(), acknowledged.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            // Spread over ~200 ms so that the kill lands mid-way.
            tokio::time::sleep(std::time::Duration::from_millis(n as u64 % 200)).await;
            let (method, path, token, body) = match &w {
                Write::Create(u) => (
                    Method::POST,
                    "/api/v1/users".to_string(),
                    a,
                    Some(json!({"username": u, "email": format!("{u}@example.org"), "password": PASSWORD})),
                ),
                Write::Grant(u) => (Method::PUT, format!("/api/v1/users/{u}/roles/UserManager"), a, None),
                Write::GroupAdd(u) => (Method::PUT, format!("/api/v1/users/{u}/groups/crash"), a, None),
                Write::Password(u) => {
                    (Method::PUT, format!("/api/v1/users/{u}/password"), a, Some(json!({"new_password": NEW_PASSWORD})))
                }
                Write::Login(u) => (
                    Method::POST,
                    "/api/v1/auth/login".to_string(),
                    None,
                    Some(json!({"username": u, "password": PASSWORD})),
                ),
                Write::Accept(u, par) => (
                    Method::PUT,
                    format!("/api/v1/access-requests/{par}"),
                    tokens.get(u).cloned(),
                    Some(json!({"action": "accept"})),
                ),
            };
            if let Ok(r) = call(method, path, token, body).await {
                // A write is acknowledged by its success answer; anything
                // else (refused, cut off) promised nothing.
                if r.status().is_success() && r.bytes().await.is_ok() {
                    acknowledged.lock().expect("lock").push(w);
                }
            }
        }));
    }
    // kill -9 once about a third are acknowledged.
    while acknowledged.lock().expect("lock").len() < 60 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    first.child.start_kill().expect("SIGKILL");
    first.child.wait().await.expect("reaped");
    for t in tasks {
        t.await.expect("task");
    }
    let acked = acknowledged.lock().expect("lock").clone();
    eprintln!("kill -9 after {} of 200 writes were acknowledged", acked.len());
    assert!(acked.len() < 200, "the kill came too late to test anything");

    let second = start_with(&url, &env).await;
    wait_ready(&client, &second.url).await;
    // Login reservations of the cut-off logins lapse after 1 s.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let count = |sql: String| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(&sql).fetch_one(&pool).await.expect(&sql) }
    };
    let id_of = |u: &str| format!("(SELECT id FROM users WHERE username = '{u}')");

    // 1. Every acknowledged write is there.
    for w in &acked {
        match w {
            Write::Create(u) => {
                assert_eq!(count(format!("SELECT count(*) FROM users WHERE username = '{u}'")).await, 1, "{w:?}")
            }
            Write::Grant(u) => assert_eq!(
                count(format!("SELECT count(*) FROM user_roles WHERE user_id = {} AND role = 'UserManager'", id_of(u)))
                    .await,
                1,
                "{w:?}"
            ),
            Write::GroupAdd(u) => assert_eq!(
                count(format!(
                    "SELECT count(*) FROM user_groups WHERE user_id = {} AND group_name = 'crash'",
                    id_of(u)
                ))
                .await,
                1,
                "{w:?}"
            ),
            Write::Password(u) => {
                let r = client
                    .post(format!("{}/api/v1/auth/login", second.url))
                    .json(&json!({"username": u, "password": NEW_PASSWORD}))
                    .send()
                    .await
                    .expect("login");
                assert_eq!(r.status(), 200, "{w:?}: the acknowledged new password");
            }
            Write::Login(_) => {}
            Write::Accept(u, _) => assert_eq!(
                count(format!(
                    "SELECT count(*) FROM user_groups WHERE user_id = {} AND group_name = 'CRASH_member'",
                    id_of(u)
                ))
                .await,
                1,
                "{w:?}"
            ),
        }
    }
    let acked_logins = acked.iter().filter(|w| matches!(w, Write::Login(_))).count() as i64;
    let since =
        |action: &str| format!("SELECT count(*) FROM change_log WHERE id > {setup_log} AND action = '{action}'");
    assert!(count(since("login.succeeded")).await >= acked_logins, "an acknowledged login left no trace");

    // 2. Nothing is half there: each kind of row change matches its entries.
    let pairs = [
        ("users created", "SELECT count(*) FROM users WHERE username LIKE 'c%'".to_string(), since("user.created")),
        (
            "roles granted",
            "SELECT count(*) FROM user_roles WHERE role = 'UserManager'".to_string(),
            since("user.roles_changed"),
        ),
        ("group members", "SELECT count(*) FROM user_groups WHERE group_name = 'crash'".to_string(), format!("{} AND subject_id = 'crash'", since("group.member_added"))),
        (
            "passwords changed",
            format!("SELECT count(*) FROM users WHERE username LIKE 'u%' AND password_updated > (SELECT at FROM change_log WHERE id = {setup_log})"),
            format!("SELECT count(*) FROM change_log WHERE id > {setup_log} AND action IN ('password.changed', 'password.reset')"),
        ),
        (
            "invitations accepted",
            "SELECT count(*) FROM access_requests WHERE status = 'accepted'".to_string(),
            since("access_request.accepted"),
        ),
        (
            "project members by invitation",
            "SELECT count(*) FROM user_groups WHERE group_name = 'CRASH_member'".to_string(),
            since("access_request.accepted"),
        ),
        (
            "sessions from the logins",
            format!(
                "SELECT count(*) FROM sessions WHERE created_at > (SELECT at FROM change_log WHERE id = {setup_log})"
            ),
            since("login.succeeded"),
        ),
    ];
    for (what, rows, entries) in pairs {
        let (rows, entries) = (count(rows).await, count(entries).await);
        eprintln!("{what}: {rows} rows, {entries} change-log entries");
        assert_eq!(rows, entries, "{what}: rows and change-log entries disagree");
    }

    // 3. Nothing stuck: every account logs in (with whichever password it
    // has), no failure counted, no reservation left.
    for i in 0..40 {
        let u = format!("u{i:02}");
        let mut ok = false;
        for pw in [PASSWORD, NEW_PASSWORD] {
            let r = client
                .post(format!("{}/api/v1/auth/login", second.url))
                .json(&json!({"username": u, "password": pw}))
                .send()
                .await
                .expect("login");
            assert_ne!(r.status(), 429, "{u} is stuck: {}", r.text().await.unwrap_or_default());
            if r.status() == 200 {
                ok = true;
                break;
            }
        }
        assert!(ok, "{u} cannot log in after the restart");
    }
    assert_eq!(count("SELECT count(*) FROM users WHERE locked_until IS NOT NULL".into()).await, 0);
}
