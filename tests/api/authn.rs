//! Login, lockout, sessions, refresh tokens, cookies, API keys, passwords.

use reqwest::Method;
use serde_json::json;
use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn login_does_not_enumerate_users() {
    let app = spawn_app().await;
    app.create_user("known", json!({})).await;
    app.create_user("disabled", json!({"enabled": false})).await;
    let unknown = app.login_full("nobody", PASSWORD).await.expect(401);
    let wrong = app.login_full("known", "a wrong but long passphrase").await.expect(401);
    let off = app.login_full("disabled", PASSWORD).await.expect(401);
    for r in [&unknown, &wrong, &off] {
        assert_eq!(r.json()["error"]["code"], "invalid_credentials");
        assert_eq!(r.json()["error"]["message"], unknown.json()["error"]["message"]);
        assert!(r.headers.get("set-cookie").is_none());
    }
    // By email too, any case.
    app.login("KNOWN@example.org", PASSWORD).await;
    // Failures are logged against the account; the unknown name leaves no row.
    let failed = app.count("SELECT count(*) FROM change_log WHERE action = 'login.failed'").await;
    assert_eq!(failed, 2);
}

#[tokio::test]
async fn lockout_and_unlock() {
    let app = spawn_app().await;
    app.create_user("lock", json!({})).await;
    for _ in 0..5 {
        app.login_full("lock", "a wrong but long passphrase").await.expect(401);
    }
    // Locked: even the right password gets 429 with Retry-After.
    let r = app.login_full("lock", PASSWORD).await.expect(429);
    assert_eq!(r.code(), "account_locked");
    let retry: u64 = r.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!(retry > 0 && retry <= 900);
    let u = app.get("/api/v1/users/lock", &app.admin_token).await.json();
    assert_eq!(u["locked"], true);
    assert_eq!(u["failed_login_attempts"], 5);
    let id = u["id"].as_str().expect("id").to_string();
    app.post("/api/v1/users/lock/unlock", &app.admin_token, json!({})).await.expect(200);
    app.login("lock", PASSWORD).await;
    let log = app.log_actions(&id).await;
    assert!(log.contains(&"user.locked".to_string()) && log.contains(&"user.unlocked".to_string()), "{log:?}");
    // A success resets the count.
    assert_eq!(app.get("/api/v1/users/lock", &app.admin_token).await.json()["failed_login_attempts"], 0);
}

#[tokio::test]
async fn parallel_guesses_get_at_most_n_checks() {
    let app = spawn_app().await;
    app.create_user("target", json!({})).await;
    let futures = (0..50).map(|_| app.login_full("target", "a wrong but long passphrase"));
    let results = futures_util::future::join_all(futures).await;
    let checked = results.iter().filter(|r| r.status == 401).count();
    let refused = results.iter().filter(|r| r.status == 429).count();
    assert!(checked <= 5, "{checked} passwords were checked");
    assert_eq!(checked + refused, 50);
    let n: i32 = sqlx::query_scalar("SELECT failed_login_attempts FROM users WHERE username = 'target'")
        .fetch_one(&app.pool)
        .await
        .expect("q");
    assert_eq!(n, 5);
}

#[tokio::test]
async fn lockout_expires() {
    let app = spawn_app_with(|s| {
        s.auth.max_failed_logins = 2;
        s.auth.lockout_secs = 1;
    })
    .await;
    app.create_user("brief", json!({})).await;
    for _ in 0..2 {
        app.login_full("brief", "a wrong but long passphrase").await.expect(401);
    }
    app.login_full("brief", PASSWORD).await.expect(429);
    sqlx::query("UPDATE users SET locked_until = now() - interval '1 second' WHERE username = 'brief'")
        .execute(&app.pool)
        .await
        .expect("q");
    app.login("brief", PASSWORD).await;
}

#[tokio::test]
async fn refresh_rotates_and_detects_reuse() {
    let app = spawn_app().await;
    app.create_user("rot", json!({})).await;
    let first = app.login_full("rot", PASSWORD).await.expect(200).json();
    let r1 = first["refresh_token"].as_str().expect("rt").to_string();
    let second = app
        .send(Method::POST, "/api/v1/auth/refresh", &Auth::None, Some(json!({"refresh_token": r1})))
        .await
        .expect(200)
        .json();
    let r2 = second["refresh_token"].as_str().expect("rt").to_string();
    assert_ne!(r1, r2);
    assert_eq!(second["session_id"], first["session_id"]);
    let access2 = second["access_token"].as_str().expect("at").to_string();
    app.get("/api/v1/users/me", &access2).await.expect(200);
    // The old token again: reuse -> the whole session is revoked.
    let r = app
        .send(Method::POST, "/api/v1/auth/refresh", &Auth::None, Some(json!({"refresh_token": r1})))
        .await
        .expect(401);
    assert_eq!(r.code(), "refresh_token_reused");
    app.send(Method::POST, "/api/v1/auth/refresh", &Auth::None, Some(json!({"refresh_token": r2}))).await.expect(401);
    app.get("/api/v1/users/me", &access2).await.expect(401);
    app.get("/api/v1/users/me", first["access_token"].as_str().expect("at")).await.expect(401);
    // Garbage is simply invalid.
    let r = app
        .send(Method::POST, "/api/v1/auth/refresh", &Auth::None, Some(json!({"refresh_token": "nope"})))
        .await
        .expect(401);
    assert_eq!(r.code(), "invalid_refresh_token");
    // Stored hashed only.
    let raw = app
        .count(&format!(
            "SELECT count(*) FROM refresh_tokens WHERE encode(token_hash, 'escape') LIKE '%{}%'",
            &r2[..10]
        ))
        .await;
    assert_eq!(raw, 0);
}

#[tokio::test]
async fn revoked_sessions_are_rejected_at_once() {
    revoked_sessions_are_rejected_at_once_on(spawn_app().await).await;
}

/// The same with `auth.cache = false` (one query per request).
#[tokio::test]
async fn revoked_sessions_are_rejected_at_once_without_auth_cache() {
    revoked_sessions_are_rejected_at_once_on(spawn_app_with(|s| s.auth.cache = false).await).await;
}

async fn revoked_sessions_are_rejected_at_once_on(app: TestApp) {
    app.create_user("sam", json!({})).await;
    let a = app.login_full("sam", PASSWORD).await.expect(200).json();
    let b = app.login_full("sam", PASSWORD).await.expect(200);
    let cookie = b.headers["set-cookie"].to_str().expect("cookie").to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"), "{cookie}");
    let cookie_value = cookie.split(';').next().expect("pair").split_once('=').expect("kv").1.to_string();
    let b = b.json();
    assert_ne!(a["session_id"], b["session_id"], "a new session per login");
    let ta = a["access_token"].as_str().expect("t").to_string();
    let tb = b["access_token"].as_str().expect("t").to_string();
    // The cookie alone authenticates.
    app.send(Method::GET, "/api/v1/users/me", &Auth::Cookie(cookie_value.clone()), None).await.expect(200);
    let sessions = app.get("/api/v1/users/me/sessions", &ta).await.expect(200).json()["items"].clone();
    assert_eq!(sessions.as_array().expect("list").len(), 2);
    assert!(sessions[0].get("user_agent").is_some() && sessions[0].get("client_ip").is_some());
    // Revoke A: its token dies, B's lives.
    app.delete(&format!("/api/v1/sessions/{}", a["session_id"].as_str().expect("sid")), &tb).await.expect(204);
    app.get("/api/v1/users/me", &ta).await.expect(401);
    app.get("/api/v1/users/me", &tb).await.expect(200);
    // Another user cannot revoke (or see) sam's session.
    let other = app.user("other").await;
    app.delete(&format!("/api/v1/sessions/{}", b["session_id"].as_str().expect("sid")), &other).await.expect(404);
    // Revoke all: every token and the cookie die, including ones issued for sessions not listed.
    let r = app.delete("/api/v1/users/sam/sessions", &app.admin_token).await.expect(200);
    assert_eq!(r.json()["revoked"], 1);
    app.get("/api/v1/users/me", &tb).await.expect(401);
    app.send(Method::GET, "/api/v1/users/me", &Auth::Cookie(cookie_value), None).await.expect(401);
}

#[tokio::test]
async fn logout_ends_the_session() {
    logout_ends_the_session_on(spawn_app().await).await;
}

/// The same with `auth.cache = false` (one query per request).
#[tokio::test]
async fn logout_ends_the_session_without_auth_cache() {
    logout_ends_the_session_on(spawn_app_with(|s| s.auth.cache = false).await).await;
}

async fn logout_ends_the_session_on(app: TestApp) {
    let t = app.user("leo").await;
    let r = app.post("/api/v1/auth/logout", &t, json!({})).await.expect(204);
    assert!(r.headers["set-cookie"].to_str().expect("c").contains("Max-Age=0"));
    app.get("/api/v1/users/me", &t).await.expect(401);
    app.send(Method::POST, "/api/v1/auth/logout", &Auth::None, None).await.expect(401);
    // Tampered and foreign tokens are refused.
    let t2 = app.login("leo", PASSWORD).await;
    let mut tampered = t2.clone();
    tampered.pop();
    tampered.push(if t2.ends_with('A') { 'B' } else { 'A' });
    app.get("/api/v1/users/me", &tampered).await.expect(401);
    app.get("/api/v1/users/me", "not.a.jwt").await.expect(401);
}

#[tokio::test]
async fn disabling_or_deleting_ends_access() {
    disabling_or_deleting_ends_access_on(spawn_app().await).await;
}

/// The same with `auth.cache = false` (one query per request).
#[tokio::test]
async fn disabling_or_deleting_ends_access_without_auth_cache() {
    disabling_or_deleting_ends_access_on(spawn_app_with(|s| s.auth.cache = false).await).await;
}

async fn disabling_or_deleting_ends_access_on(app: TestApp) {
    let t = app.user("dan").await;
    let key = app.post("/api/v1/users/me/api-keys", &t, json!({"name": "script"})).await.expect(201).json()["key"]
        .as_str()
        .expect("key")
        .to_string();
    app.get("/api/v1/users/me", &key).await.expect(200);
    app.patch("/api/v1/users/dan", &app.admin_token, json!({"enabled": false})).await.expect(200);
    app.get("/api/v1/users/me", &t).await.expect(401);
    app.get("/api/v1/users/me", &key).await.expect(401);
    app.send(Method::GET, "/api/v1/users/me", &Auth::Basic("dan".into(), PASSWORD.into()), None).await.expect(401);
    app.patch("/api/v1/users/dan", &app.admin_token, json!({"enabled": true})).await.expect(200);
    // Re-enabling does not resurrect revoked sessions; the key works again.
    app.get("/api/v1/users/me", &t).await.expect(401);
    app.get("/api/v1/users/me", &key).await.expect(200);
    app.delete("/api/v1/users/dan", &app.admin_token).await.expect(200);
    app.get("/api/v1/users/me", &key).await.expect(401);
    assert_eq!(app.count("SELECT count(*) FROM sessions WHERE user_id NOT IN (SELECT id FROM users)").await, 0);
}

#[tokio::test]
async fn api_keys_bearer_and_basic() {
    api_keys_bearer_and_basic_on(spawn_app().await).await;
}

/// The same with `auth.cache = false` (one query per request).
#[tokio::test]
async fn api_keys_bearer_and_basic_without_auth_cache() {
    api_keys_bearer_and_basic_on(spawn_app_with(|s| s.auth.cache = false).await).await;
}

async fn api_keys_bearer_and_basic_on(app: TestApp) {
    let t = app.user("kim").await;
    let created = app.post("/api/v1/users/kim/api-keys", &t, json!({"name": "nightly sync"})).await.expect(201).json();
    let key = created["key"].as_str().expect("key").to_string();
    assert!(key.starts_with("rk_"));
    assert!(key.contains(created["prefix"].as_str().expect("prefix")));
    // Listed without the secret; stored only as a keyed hash.
    let list = app.get("/api/v1/users/kim/api-keys", &t).await.expect(200);
    assert!(!list.text.contains(&key[key.len() - 20..]));
    assert_eq!(list.json()["items"][0]["name"], "nightly sync");
    let secret_part = key[3..].split_once('_').expect("secret").1;
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM api_keys WHERE encode(secret_hash, 'escape') LIKE '%{}%'",
            &secret_part[..12]
        ))
        .await,
        0
    );
    // Bearer, and Basic with the username and the key.
    assert_eq!(app.get("/api/v1/users/me", &key).await.expect(200).json()["username"], "kim");
    app.send(Method::GET, "/api/v1/users/me", &Auth::Basic("kim".into(), key.clone()), None).await.expect(200);
    app.send(Method::GET, "/api/v1/users/me", &Auth::Basic("someone".into(), key.clone()), None).await.expect(401);
    // Basic with the password works too.
    app.send(Method::GET, "/api/v1/users/me", &Auth::Basic("kim".into(), PASSWORD.into()), None).await.expect(200);
    app.send(Method::GET, "/api/v1/users/me", &Auth::Basic("kim".into(), "a wrong but long passphrase".into()), None)
        .await
        .expect(401);
    // A key that differs in its secret is refused.
    let mut forged = key.clone();
    forged.pop();
    forged.push(if key.ends_with('x') { 'y' } else { 'x' });
    app.get("/api/v1/users/me", &forged).await.expect(401);
    // Last used is recorded.
    let used = app.get("/api/v1/users/kim/api-keys", &t).await.json();
    assert!(used["items"][0]["last_used_at"].is_string());
    // A manager may create one for kim; another user may not.
    let eve = app.user("eve").await;
    app.post("/api/v1/users/kim/api-keys", &eve, json!({"name": "x"})).await.expect(403);
    app.post("/api/v1/users/kim/api-keys", &app.admin_token, json!({"name": "by admin"})).await.expect(201);
    // Expired keys and revoked keys stop working.
    let past = app
        .post("/api/v1/users/kim/api-keys", &t, json!({"name": "old", "expires_at": "2001-01-01T00:00:00Z"}))
        .await
        .expect(422);
    assert_eq!(past.code(), "invalid_expiry");
    // A leap second at the end of 9999 is year 10000, which RFC 3339 cannot write (found by attack).
    for beyond in ["9999-12-31T23:59:60.999Z", "2030-06-30T23:59:60Z"] {
        let r =
            app.post("/api/v1/users/kim/api-keys", &t, json!({"name": "far", "expires_at": beyond})).await.expect(422);
        assert_eq!(r.code(), "invalid_expiry", "{beyond}");
    }
    assert_eq!(app.count("SELECT count(*) FROM api_keys WHERE name = 'far'").await, 0);
    let id = created["id"].as_str().expect("id");
    app.delete(&format!("/api/v1/users/kim/api-keys/{id}"), &t).await.expect(204);
    app.get("/api/v1/users/me", &key).await.expect(401);
    app.delete(&format!("/api/v1/users/kim/api-keys/{id}"), &t).await.expect(404);
    let log = app.log_actions(id).await;
    assert_eq!(log, ["api_key.created", "api_key.revoked"]);
}

#[tokio::test]
async fn expired_api_key_is_refused() {
    let app = spawn_app().await;
    let t = app.user("exp").await;
    let created = app
        .post("/api/v1/users/me/api-keys", &t, json!({"name": "short", "expires_at": "2099-01-01T00:00:00Z"}))
        .await
        .expect(201)
        .json();
    let key = created["key"].as_str().expect("key");
    app.get("/api/v1/users/me", key).await.expect(200);
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second'").execute(&app.pool).await.expect("q");
    // A change made in SQL reaches the server's auth cache as a notification.
    app.settle_auth_cache().await;
    app.get("/api/v1/users/me", key).await.expect(401);
}

#[tokio::test]
async fn password_change_and_reset() {
    password_change_and_reset_on(spawn_app().await).await;
}

/// The same with `auth.cache = false` (one query per request).
#[tokio::test]
async fn password_change_and_reset_without_auth_cache() {
    password_change_and_reset_on(spawn_app_with(|s| s.auth.cache = false).await).await;
}

async fn password_change_and_reset_on(app: TestApp) {
    app.create_user("pat", json!({})).await;
    let s1 = app.login("pat", PASSWORD).await;
    let s2 = app.login("pat", PASSWORD).await;
    let new = "a brand new long passphrase";
    // Own change needs the current password.
    let r = app.put("/api/v1/users/me/password", &s1, json!({"new_password": new})).await.expect(422);
    assert_eq!(r.code(), "current_password_required");
    let r = app
        .put(
            "/api/v1/users/me/password",
            &s1,
            json!({"current_password": "a wrong but long passphrase", "new_password": new}),
        )
        .await
        .expect(403);
    assert_eq!(r.code(), "wrong_password");
    app.put("/api/v1/users/me/password", &s1, json!({"current_password": PASSWORD, "new_password": "password"}))
        .await
        .expect(422);
    app.put("/api/v1/users/me/password", &s1, json!({"current_password": PASSWORD, "new_password": new}))
        .await
        .expect(204);
    // This session lives on, the other is revoked; the old password is dead.
    app.get("/api/v1/users/me", &s1).await.expect(200);
    app.get("/api/v1/users/me", &s2).await.expect(401);
    app.login_full("pat", PASSWORD).await.expect(401);
    app.login("pat", new).await;
    // Admin reset: every session ends.
    let reset = "reset by the administrator ok";
    app.put("/api/v1/users/pat/password", &app.admin_token, json!({"new_password": reset})).await.expect(204);
    app.get("/api/v1/users/me", &s1).await.expect(401);
    app.login("pat", reset).await;
    let id = app.get("/api/v1/users/pat", &app.admin_token).await.json()["id"].as_str().expect("id").to_string();
    let changes: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT changes FROM change_log WHERE subject_id = $1 AND action LIKE 'password.%'")
            .bind(&id)
            .fetch_all(&app.pool)
            .await
            .expect("q");
    assert_eq!(changes.len(), 2);
    for c in changes {
        assert_eq!(c["password"]["after"], "[redacted]");
    }
}

#[tokio::test]
async fn hashes_are_upgraded_when_parameters_change() {
    let app = spawn_app().await;
    app.create_user("old", json!({})).await;
    let before: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE username = 'old'")
        .fetch_one(&app.pool)
        .await
        .expect("q");
    assert!(before.contains("m=256,t=1,p=1"), "{before}");
    let mut settings = test_settings();
    settings.password.memory_kib = 512;
    settings.password.iterations = 2;
    let app2 = spawn_on(app.db.clone(), app.db.clone(), settings).await;
    app2.login("old", PASSWORD).await;
    let after: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE username = 'old'")
        .fetch_one(&app.pool)
        .await
        .expect("q");
    assert!(after.contains("m=512,t=2,p=1"), "{after}");
    app2.login("old", PASSWORD).await;
    app2.handle.stop(true).await;
}

/// The auth cache never outlives its notification channel: with the
/// listener's connection killed, a revocation made in SQL (whose
/// notification is lost with it) is still honoured, and every change made
/// after the channel returns is seen.
#[tokio::test]
async fn auth_cache_survives_a_lost_notification_channel() {
    let app = spawn_app().await;
    let t = app.user("lou").await;
    let key = |name: &'static str| {
        let app = &app;
        let t = t.clone();
        async move {
            let r = app.post("/api/v1/users/lou/api-keys", &t, json!({"name": name})).await.expect(201).json();
            (r["key"].as_str().expect("key").to_string(), r["id"].as_str().expect("id").to_string())
        }
    };
    let (k1, id1) = key("one").await;
    app.get("/api/v1/users/me", &k1).await.expect(200);
    app.get("/api/v1/users/me", &k1).await.expect(200);
    let killed: Vec<i32> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid)::int FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN %' AND query LIKE '%registrar_auth%'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("terminate listener");
    assert_eq!(killed, vec![1], "one listener connection per instance");
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1::uuid")
        .bind(&id1)
        .execute(&app.pool)
        .await
        .expect("revoke in SQL");
    app.settle_auth_cache().await;
    app.get("/api/v1/users/me", &k1).await.expect(401);
    // The listener comes back on its own; changes after that are seen too.
    let (k2, id2) = key("two").await;
    app.get("/api/v1/users/me", &k2).await.expect(200);
    let mut relistening = false;
    for _ in 0..100 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'
             AND query LIKE '%registrar_auth%'",
        )
        .fetch_one(&app.pool)
        .await
        .expect("count");
        if n == 1 {
            relistening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(relistening, "the listener reconnected");
    app.get("/api/v1/users/me", &k2).await.expect(200);
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1::uuid")
        .bind(&id2)
        .execute(&app.pool)
        .await
        .expect("revoke in SQL");
    app.settle_auth_cache().await;
    app.get("/api/v1/users/me", &k2).await.expect(401);
}

#[tokio::test]
async fn a_login_writes_its_session_bookkeeping_and_log_together() {
    let app = spawn_app().await;
    app.create_user("whole", json!({})).await;
    app.login_full("whole", "a wrong but long passphrase").await.expect(401);
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM users WHERE username = 'whole'").fetch_one(&app.pool).await.expect("id");
    // A refused log entry refuses the whole login: no session, counters untouched.
    app.refuse_log_entries("session.created").await;
    let r = app.login_full("whole", PASSWORD).await.expect(500);
    assert!(!r.text.contains("log refused") && r.headers.get("set-cookie").is_none());
    let q = "SELECT failed_login_attempts, last_successful_login IS NULL FROM users WHERE id = $1";
    let (failed, never): (i32, bool) = sqlx::query_as(q).bind(id).fetch_one(&app.pool).await.expect("q");
    // The 1 failure, nothing reset (the refused login's reserved try is
    // not a failure: it lapses after `auth.login_reservation_secs`).
    assert_eq!((failed, never), (1, true));
    assert_eq!(app.count(&format!("SELECT count(*) FROM sessions WHERE user_id = '{id}'")).await, 0);
    assert_eq!(
        app.count(&format!("SELECT count(*) FROM change_log WHERE actor_id = '{id}' AND action <> 'login.failed'"))
            .await,
        0
    );
    app.accept_log_entries().await;

    // The login that goes through: counters reset, one session, two entries naming the user.
    let body = app.login_full("whole", PASSWORD).await.expect(200).json();
    let sid = body["session_id"].as_str().expect("sid").to_string();
    let (failed, never): (i32, bool) = sqlx::query_as(q).bind(id).fetch_one(&app.pool).await.expect("q");
    assert_eq!((failed, never), (0, false));
    type Entry = (String, Option<uuid::Uuid>, Option<String>, Option<uuid::Uuid>, String);
    let rows: Vec<Entry> = sqlx::query_as(
        "SELECT action, actor_id, actor_username, actor_session_id, subject_id FROM change_log
         WHERE action IN ('login.succeeded', 'session.created') AND actor_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .expect("log");
    let sid_uuid: uuid::Uuid = sid.parse().expect("uuid");
    assert_eq!(
        rows,
        vec![
            ("login.succeeded".into(), Some(id), Some("whole".into()), None, id.to_string()),
            ("session.created".into(), Some(id), Some("whole".into()), Some(sid_uuid), sid.clone()),
        ]
    );
    let refresh: i64 = app.count(&format!("SELECT count(*) FROM refresh_tokens WHERE session_id = '{sid}'")).await;
    assert_eq!(refresh, 1);
}

/// What the auth cache hears: login bookkeeping is not announced (every
/// attempt would otherwise flush the user's cached callers), while a lock and
/// any other change to the user row are, so a lock ends sessions at once.
#[tokio::test]
async fn login_bookkeeping_is_quiet_but_a_lock_is_announced() {
    let app = spawn_app().await;
    let t = app.user("quiet").await;
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM users WHERE username = 'quiet'").fetch_one(&app.pool).await.expect("id");
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool).await.expect("listen");
    listener.listen("registrar_auth").await.expect("listen");
    app.get("/api/v1/users/me", &t).await.expect(200);
    app.login_full("quiet", "a wrong but long passphrase").await.expect(401);
    app.login("quiet", PASSWORD).await;
    assert_eq!(heard(&mut listener, id).await, 0, "login attempts are not announced");
    let me = app.get("/api/v1/users/me", &t).await.expect(200).json();
    assert_eq!(me["username"], "quiet");

    for _ in 0..5 {
        app.login_full("quiet", "a wrong but long passphrase").await.expect(401);
    }
    assert_eq!(heard(&mut listener, id).await, 1, "the lock is announced");
    // A lock stops password guesses only: the holder's token keeps working.
    app.get("/api/v1/users/me", &t).await.expect(200);

    sqlx::query("UPDATE users SET locked_until = NULL, failed_login_attempts = 0, first_name = 'Q' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .expect("unlock in SQL");
    assert_eq!(heard(&mut listener, id).await, 1, "other changes are announced");
    app.get("/api/v1/users/me", &t).await.expect(200);
}

/// How many notifications naming `id` arrive before 300 ms of silence.
async fn heard(listener: &mut sqlx::postgres::PgListener, id: uuid::Uuid) -> usize {
    let id = id.to_string();
    let mut n = 0;
    while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await {
        n += usize::from(msg.payload() == id);
    }
    n
}
