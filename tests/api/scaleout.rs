//! Several registrar processes against one database: start-ups migrate once,
//! a session revoked through one instance is refused by the others at once,
//! and lockout counts and rate limits are shared.

use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

pub(crate) struct Instance {
    pub(crate) url: String,
    pub(crate) child: tokio::process::Child,
}

async fn start(db_url: &str) -> Instance {
    start_with(db_url, &[]).await
}

pub(crate) async fn start_with(db_url: &str, env: &[(&str, &str)]) -> Instance {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_registrar"));
    for (k, _) in std::env::vars() {
        if k.starts_with("REGISTRAR_") {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .env("REGISTRAR_DATABASE_URL", db_url)
        .env("REGISTRAR_BIND", format!("127.0.0.1:{port}"))
        .env("REGISTRAR_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("REGISTRAR_PASSWORD__MEMORY_KIB", "256")
        .env("REGISTRAR_PASSWORD__ITERATIONS", "1")
        .env("REGISTRAR_WORKERS", "1")
        .env("REGISTRAR_DATABASE__MAX_CONNECTIONS", "5")
        .env("RUST_LOG", "info,registrar=debug")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(crate::capture::child_log(&format!("scaleout-{port}")))
        .stderr(crate::capture::child_log(&format!("scaleout-{port}")))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn registrar");
    Instance { url: format!("http://127.0.0.1:{port}"), child }
}

pub(crate) async fn wait_ready(client: &reqwest::Client, url: &str) {
    for _ in 0..300 {
        if client.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not become ready");
}

#[tokio::test]
async fn three_instances_share_one_database() {
    let db = empty_database().await;
    let url = database_url(db.get_database().expect("db name")).await;
    // Three processes start at once on an empty database.
    let (a, b, c) = tokio::join!(start(&url), start(&url), start(&url));
    let client = reqwest::Client::new();
    for i in [&a, &b, &c] {
        wait_ready(&client, &i.url).await;
    }
    let pool = sqlx::PgPool::connect_with(db).await.expect("pool");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations").fetch_one(&pool).await.expect("q");
    assert_eq!(applied as usize, registrar::db::MIGRATOR.iter().count(), "migrated once");
    let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&pool).await.expect("q");
    assert_eq!(admins, 1, "one bootstrap admin");

    let post = |base: &str, path: &str, token: Option<&str>, body: serde_json::Value| {
        let mut r = client.request(Method::POST, format!("{base}{path}")).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let login = |base: String, user: &'static str, pw: &'static str| {
        let client = client.clone();
        async move {
            client
                .post(format!("{base}/api/v1/auth/login"))
                .json(&json!({"username": user, "password": pw}))
                .send()
                .await
                .expect("login")
        }
    };
    let admin: serde_json::Value = login(a.url.clone(), ADMIN, ADMIN_PASSWORD).await.json().await.expect("json");
    let admin = admin["access_token"].as_str().expect("token").to_string();
    let r = post(
        &a.url,
        "/api/v1/users",
        Some(&admin),
        json!({"username": "sue", "email": "sue@example.org", "password": PASSWORD}),
    )
    .await
    .expect("create");
    assert_eq!(r.status(), 201);

    // A session from instance B works on C; revoked through A, refused by B and C at once.
    let s: serde_json::Value = login(b.url.clone(), "sue", PASSWORD).await.json().await.expect("json");
    let token = s["access_token"].as_str().expect("token").to_string();
    let me = |base: &str| client.get(format!("{base}/api/v1/users/me")).bearer_auth(&token).send();
    // Both other instances have the token in their auth cache before the revocation.
    assert_eq!(me(&b.url).await.expect("me").status(), 200);
    assert_eq!(me(&c.url).await.expect("me").status(), 200);
    let r = client
        .delete(format!("{}/api/v1/sessions/{}", a.url, s["session_id"].as_str().expect("sid")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 204);
    for base in [&b.url, &c.url] {
        assert_eq!(within_propagation(401, || me(base)).await, 401, "{base}");
    }

    // A role (and the admin flag) taken away through A stops working on B and
    // C at once, with the caller's token cached there (the user_roles trigger).
    let r = post(
        &a.url,
        "/api/v1/users",
        Some(&admin),
        json!({"username": "uma", "email": "uma@example.org", "password": PASSWORD, "roles": ["UserManager"]}),
    )
    .await
    .expect("create");
    assert_eq!(r.status(), 201);
    let r = post(
        &a.url,
        "/api/v1/users",
        Some(&admin),
        json!({"username": "ada", "email": "ada@example.org", "password": PASSWORD, "admin": true}),
    )
    .await
    .expect("create");
    assert_eq!(r.status(), 201);
    let token_of = |v: serde_json::Value| v["access_token"].as_str().expect("token").to_string();
    let uma = token_of(login(b.url.clone(), "uma", PASSWORD).await.json().await.expect("json"));
    let ada = token_of(login(b.url.clone(), "ada", PASSWORD).await.json().await.expect("json"));
    let get = |base: &str, path: &str, t: &str| client.get(format!("{base}{path}")).bearer_auth(t.to_string()).send();
    for base in [&b.url, &c.url] {
        assert_eq!(get(base, "/api/v1/users", &uma).await.expect("list").status(), 200);
        assert_eq!(get(base, "/api/v1/admin/change-log", &ada).await.expect("log").status(), 200);
    }
    let r = client
        .delete(format!("{}/api/v1/users/uma/roles/UserManager", a.url))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("revoke role");
    assert_eq!(r.status(), 200);
    let r = client
        .patch(format!("{}/api/v1/users/ada", a.url))
        .bearer_auth(&admin)
        .json(&json!({"admin": false}))
        .send()
        .await
        .expect("demote");
    assert_eq!(r.status(), 200);
    for base in [&b.url, &c.url] {
        assert_eq!(within_propagation(403, || get(base, "/api/v1/users", &uma)).await, 403, "{base}");
        assert_eq!(within_propagation(403, || get(base, "/api/v1/admin/change-log", &ada)).await, 403, "{base}");
        // Their own accounts still answer: the token itself is fine.
        assert_eq!(get(base, "/api/v1/users/me", &uma).await.expect("me").status(), 200, "{base}");
    }

    // A custom role changed through A changes what its holder may do on B and C.
    let r = post(&a.url, "/api/v1/roles", Some(&admin), json!({"name": "Lister", "permissions": ["USER_MANAGEMENT"]}))
        .await
        .expect("role");
    assert_eq!(r.status(), 201);
    let r =
        client.put(format!("{}/api/v1/users/uma/roles/Lister", a.url)).bearer_auth(&admin).send().await.expect("grant");
    assert_eq!(r.status(), 200);
    for base in [&b.url, &c.url] {
        assert_eq!(within_propagation(200, || get(base, "/api/v1/users", &uma)).await, 200, "{base}");
    }
    let r = client
        .patch(format!("{}/api/v1/roles/Lister", a.url))
        .bearer_auth(&admin)
        .json(&json!({"permissions": []}))
        .send()
        .await
        .expect("narrow");
    assert_eq!(r.status(), 200);
    for base in [&b.url, &c.url] {
        assert_eq!(within_propagation(403, || get(base, "/api/v1/users", &uma)).await, 403, "{base}");
    }

    // Lockout counts are shared: 2 + 2 + 1 failures on three instances lock the account.
    for (base, n) in [(&a.url, 2), (&b.url, 2), (&c.url, 1)] {
        for _ in 0..n {
            assert_eq!(login(base.clone(), "sue", "a wrong but long passphrase").await.status(), 401);
        }
    }
    for base in [&a.url, &b.url, &c.url] {
        assert_eq!(login(base.clone(), "sue", PASSWORD).await.status(), 429, "{base}");
    }
}

/// The status `send` answers once the other instances have applied the
/// invalidation a commit announced: their listeners receive the same
/// notification as the revoking instance, but apply it on their own clock,
/// so the answer is polled (every 10 ms, for at most 2 s; far below
/// `auth.cache_max_age_secs`, so only the notification can explain it).
async fn within_propagation<F, Fut>(expected: u16, send: F) -> u16
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let status = send().await.expect("request").status().as_u16();
        if status == expected || std::time::Instant::now() >= until {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A client spreading its logins over three instances gets one budget, not
/// three: 9 logins a minute per address, 5 tries on each instance, so 9 are
/// answered (401: the names are unknown) and 6 refused (429), however the
/// tries are spread.
#[tokio::test]
async fn rate_limits_hold_across_three_instances() {
    let db = empty_database().await;
    let url = database_url(db.get_database().expect("db name")).await;
    let env = [("REGISTRAR_RATE_LIMITS__LOGIN_PER_IP", "9"), ("REGISTRAR_RATE_LIMITS__LOGIN_PER_ACCOUNT", "0")];
    let a = start_with(&url, &env).await;
    let client = reqwest::Client::new();
    wait_ready(&client, &a.url).await;
    // Started after A migrated, so they do not race for the migrations.
    let (b, c) = tokio::join!(start_with(&url, &env), start_with(&url, &env));
    wait_ready(&client, &b.url).await;
    wait_ready(&client, &c.url).await;
    let mut answered = std::collections::BTreeMap::<u16, usize>::new();
    let mut per_instance = Vec::new();
    for round in 0..5 {
        for (i, base) in [&a.url, &b.url, &c.url].into_iter().enumerate() {
            let r = client
                .post(format!("{base}/api/v1/auth/login"))
                .json(&json!({"username": format!("nobody-{round}-{i}"), "password": "a wrong but long passphrase"}))
                .send()
                .await
                .expect("login");
            let status = r.status().as_u16();
            if status == 429 {
                let retry: u64 = r.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
                assert!((1..=61).contains(&retry), "{retry}");
            }
            *answered.entry(status).or_default() += 1;
            per_instance.push((i, status));
        }
    }
    eprintln!("15 logins over 3 instances at 9/min per address: {answered:?}");
    assert_eq!(answered.get(&401), Some(&9), "{per_instance:?}");
    assert_eq!(answered.get(&429), Some(&6), "{per_instance:?}");
    // Every instance refuses once the shared budget is spent.
    for (i, _) in [&a.url, &b.url, &c.url].into_iter().enumerate() {
        assert!(per_instance.iter().rev().take(3).any(|&(j, s)| j == i && s == 429), "{per_instance:?}");
    }
}
