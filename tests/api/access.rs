//! The route sweep (every route of the OpenAPI document against its declared
//! rule) and the change log.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// Fills the path parameters of `path` with values that exist.
fn concrete(path: &str, victim: &str) -> String {
    path.replace("{username}", victim)
        .replace("{role}", "UserManager")
        .replace("{id}", "00000000-0000-0000-0000-000000000001")
        .replace("{project}", "SWEEP")
        .replace("{group}", "SWEEP_member")
        .replace("{par_id}", "1")
        .replace("{flag}", "true")
        .replace("{user}", "victim")
        .replace("{schema}", "xnat")
}

#[tokio::test]
async fn every_route_enforces_its_declared_rule() {
    every_route_enforces_its_declared_rule_on(spawn_app().await).await;
}

/// The same with `auth.cache = false` (one query per request).
#[tokio::test]
async fn every_route_enforces_its_declared_rule_without_auth_cache() {
    every_route_enforces_its_declared_rule_on(spawn_app_with(|s| s.auth.cache = false).await).await;
}

async fn every_route_enforces_its_declared_rule_on(app: TestApp) {
    let user = app.user("ordinary").await;
    app.create_user("victim", json!({})).await;
    app.post("/api/v1/projects", &app.admin_token, json!({"id": "SWEEP", "name": "Sweep"})).await.expect(201);
    let doc = app.send(Method::GET, "/api/v1/openapi.json", &Auth::None, None).await.expect(200).json();
    let paths = doc["paths"].as_object().expect("paths");

    // The document and the route table list exactly the same routes.
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("item") {
            assert!(op.get("x-access").is_some(), "{method} {path} has no x-access");
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut table: Vec<(String, String)> = registrar::startup::route_table()
        .entries
        .iter()
        // The web console's pages and assets are HTML, not API (`pages.rs`
        // sweeps them); the OpenID Provider's endpoints follow their RFCs.
        // SCIM follows RFC 7644 (`scim.rs` sweeps it).
        .filter(|(_, p, _)| {
            !registrar::web::is_page(p)
                && !p.starts_with("/assets/")
                && !registrar::op::is_protocol(p)
                && !registrar::scim::is_scim(p)
        })
        .map(|(m, p, _)| (m.to_string(), p.clone()))
        .collect();
    documented.sort();
    table.sort();
    assert_eq!(documented, table, "route table and OpenAPI document differ");

    // Every success that answers a body documents it: a schema for each
    // media type. Bodiless successes say so ("no body" in the description).
    let (mut answering, mut with_schema, mut missing) = (0, 0, Vec::new());
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("item") {
            for (status, resp) in op["responses"].as_object().expect("responses") {
                let bodiless = resp["description"].as_str().is_some_and(|d| d.starts_with("no body"));
                if !status.starts_with('2') || status == "204" || bodiless {
                    continue;
                }
                answering += 1;
                let content = resp.get("content").and_then(|c| c.as_object());
                if content.is_some_and(|c| !c.is_empty() && c.values().all(|m| m.get("schema").is_some())) {
                    with_schema += 1;
                } else {
                    missing.push(format!("{method} {path} {status}"));
                }
            }
        }
    }
    println!("OpenAPI: {with_schema} of {answering} success answers with a body document its schema");
    assert!(missing.is_empty(), "success answers without a documented body: {missing:#?}");

    let mut checked = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("item") {
            let access = op["x-access"].as_str().expect("x-access");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let url = concrete(path, "victim");
            let body = Some(json!({}));
            let anon = app.send(m.clone(), &url, &Auth::None, body.clone()).await;
            if access == "public" {
                assert_ne!(anon.status, 401, "{method} {path} is public");
                assert_ne!(anon.status, 403, "{method} {path} is public");
            } else {
                assert_eq!(anon.status, 401, "anonymous {method} {path} ({access}): {}", anon.text);
                if path.starts_with("/data") {
                    assert_eq!(anon.text, "The request requires user authentication");
                } else {
                    assert_eq!(anon.code(), "unauthenticated");
                }
            }
            // Logging out would end the sweeping user's session: use a throwaway one.
            let ends_session = path == "/api/v1/auth/logout" || (path == "/data/JSESSION" && method == "delete");
            let token = if ends_session { app.login("ordinary", PASSWORD).await } else { user.clone() };
            let as_user = app.send(m.clone(), &url, &Auth::Bearer(token), body.clone()).await;
            // The target is another user ("victim"): a self-only route refuses too.
            if access.contains("permission:") || access == "self" {
                assert_eq!(as_user.status, 403, "ordinary user {method} {path} ({access}): {}", as_user.text);
                assert_eq!(as_user.code(), "forbidden");
            } else {
                assert_ne!(as_user.status, 403, "ordinary user {method} {path} ({access}) allowed: {}", as_user.text);
            }
            assert!(as_user.status.as_u16() < 500, "{method} {path}: {}", as_user.text);
            for r in [&anon, &as_user] {
                assert_security_headers(r, &format!("{method} {path} ({})", r.status));
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} operations");
    // Denials are logged with the actor.
    let denied = app
        .count("SELECT count(*) FROM change_log WHERE action = 'authorization.denied' AND actor_username = 'ordinary'")
        .await;
    assert!(denied >= 15, "{denied}");
}

#[tokio::test]
async fn change_log_about_and_by_a_user() {
    let app = spawn_app().await;
    let t = app.user("lou").await;
    app.patch("/api/v1/users/me", &t, json!({"first_name": "Lou", "last_name": "Reed"})).await.expect(200);
    app.patch("/api/v1/users/lou", &app.admin_token, json!({"verified": true})).await.expect(200);
    let log = app.get("/api/v1/users/me/log", &t).await.expect(200).json();
    let items = log["items"].as_array().expect("items");
    // Newest first: the admin's verification, then lou's own edit, ...
    assert_eq!(items[0]["action"], "user.updated");
    assert_eq!(items[0]["actor_username"], ADMIN);
    assert_eq!(items[0]["changes"]["verified"], json!({"before": false, "after": true}));
    assert_eq!(items[1]["changes"]["first_name"], json!({"before": "", "after": "Lou"}));
    assert!(items[1]["request_id"].is_string() && items[1]["client_ip"] == "127.0.0.1");
    assert!(items[1]["actor_session_id"].is_string());
    assert!(items.iter().any(|e| e["action"] == "user.created"));
    // Actions by lou: her own edit and her login.
    let actions = app.get("/api/v1/users/lou/actions", &t).await.expect(200).json();
    let acts: Vec<&str> =
        actions["items"].as_array().expect("items").iter().map(|e| e["action"].as_str().expect("a")).collect();
    assert!(acts.contains(&"user.updated") && acts.contains(&"login.succeeded"), "{acts:?}");
    // Others may not read it; managers may.
    let other = app.user("other").await;
    app.get("/api/v1/users/lou/log", &other).await.expect(403);
    app.get("/api/v1/users/lou/log", &app.admin_token).await.expect(200);
    // Pagination, newest first, no overlap.
    let p1 = app.get("/api/v1/users/lou/log?limit=2", &t).await.expect(200).json();
    let cursor = p1["next_cursor"].as_str().expect("more pages");
    let p2 = app.get(&format!("/api/v1/users/lou/log?limit=2&cursor={cursor}"), &t).await.expect(200).json();
    let id1 = p1["items"][1]["id"].as_i64().expect("id");
    let id2 = p2["items"][0]["id"].as_i64().expect("id");
    assert!(id2 < id1);
    // Filters: action (exact or a prefix ending with a dot), actor (name in
    // any case, or id), subject type, time range; each narrows the same log.
    let actions_of = |v: &serde_json::Value| -> Vec<String> {
        v["items"].as_array().expect("items").iter().map(|e| e["action"].as_str().expect("a").to_string()).collect()
    };
    let by_admin = app.get("/api/v1/users/lou/log?actor=ADMIN", &t).await.expect(200).json();
    assert!(by_admin["items"].as_array().expect("items").iter().all(|e| e["actor_username"] == ADMIN));
    assert_eq!(by_admin["items"].as_array().expect("items").len(), 2, "created and verified by the admin");
    let lou_id = app.get("/api/v1/users/lou", &t).await.json()["id"].as_str().expect("id").to_string();
    let by_lou = app.get(&format!("/api/v1/users/lou/log?actor={lou_id}"), &t).await.expect(200).json();
    assert_eq!(actions_of(&by_lou), ["user.updated", "login.succeeded"]);
    let updated = app.get("/api/v1/users/lou/log?action=user.updated", &t).await.expect(200).json();
    assert_eq!(actions_of(&updated), ["user.updated", "user.updated"]);
    let user_actions = app.get("/api/v1/users/lou/actions?action=user.", &t).await.expect(200).json();
    assert_eq!(actions_of(&user_actions), ["user.updated"]);
    let sessions = app.get("/api/v1/users/lou/actions?subject_type=session", &t).await.expect(200).json();
    assert!(actions_of(&sessions).iter().all(|a| a.starts_with("session.")) && !actions_of(&sessions).is_empty());
    let future = app.get("/api/v1/users/lou/log?since=2999-01-01T00:00:00Z", &t).await.expect(200).json();
    assert_eq!(future["items"], json!([]));
    let past = app.get("/api/v1/users/lou/log?until=2000-01-01T00:00:00Z", &t).await.expect(200).json();
    assert_eq!(past["items"], json!([]));
    let all = app.get("/api/v1/admin/change-log?action=user.created&subject_type=user", &app.admin_token).await;
    assert!(actions_of(&all.expect(200).json()).iter().all(|a| a == "user.created"));
    let bad = app.get("/api/v1/users/lou/log?since=yesterday", &t).await.expect(400);
    assert_eq!(bad.json()["error"]["details"]["field"], "since");
    app.get("/api/v1/users/lou/log?colour=red", &t).await.expect(400);
    // No route changes the log.
    for m in [Method::PUT, Method::PATCH, Method::DELETE, Method::POST] {
        let r = app.send(m, "/api/v1/users/lou/log", &Auth::Bearer(app.admin_token.clone()), Some(json!({}))).await;
        assert_eq!(r.status, 405);
    }
}

#[tokio::test]
async fn a_change_and_its_log_entry_commit_or_roll_back_together() {
    let app = spawn_app().await;
    app.create_user("tx", json!({"first_name": "Before"})).await;
    // Make the log refuse `user.updated` entries: the update must not happen.
    app.refuse_log_entries("user.updated").await;
    let r = app
        .patch("/api/v1/users/tx", &app.admin_token, json!({"first_name": "After", "verified": true}))
        .await
        .expect(500);
    assert!(!r.text.contains("log refused"));
    let (first, verified): (String, bool) =
        sqlx::query_as("SELECT first_name, verified FROM users WHERE username = 'tx'")
            .fetch_one(&app.pool)
            .await
            .expect("q");
    assert_eq!((first.as_str(), verified), ("Before", false), "the change rolled back with its log entry");
    // A rejected change writes neither.
    app.accept_log_entries().await;
    app.create_user("taken", json!({})).await;
    let before = app.count("SELECT count(*) FROM change_log").await;
    app.patch("/api/v1/users/tx", &app.admin_token, json!({"email": "TAKEN@example.org"})).await.expect(409);
    assert_eq!(app.count("SELECT count(*) FROM change_log").await, before);
    app.patch("/api/v1/users/tx", &app.admin_token, json!({"first_name": "After"})).await.expect(200);
    assert_eq!(app.count("SELECT count(*) FROM change_log").await, before + 1);
}

#[tokio::test]
async fn no_secret_in_any_response() {
    let app = spawn_app().await;
    let t = app.user("sec").await;
    let key = app.post("/api/v1/users/me/api-keys", &t, json!({"name": "k"})).await.expect(201).json()["key"]
        .as_str()
        .expect("k")
        .to_string();
    let login = app.login_full("sec", PASSWORD).await.json();
    let refresh = login["refresh_token"].as_str().expect("rt").to_string();
    let secret_tail = key[key.len() - 16..].to_string();
    for path in [
        "/api/v1/users",
        "/api/v1/users/sec",
        "/api/v1/users/sec/api-keys",
        "/api/v1/users/sec/sessions",
        "/api/v1/users/sec/log",
        "/api/v1/users/sec/actions",
        "/api/v1/admin/change-log",
    ] {
        let r = app.get(path, &app.admin_token).await.expect(200);
        for s in [secret_tail.as_str(), &refresh[..16], "argon2"] {
            assert!(!r.text.contains(s), "{path} leaks {s}");
        }
        let v: Value = r.json();
        assert!(!v.to_string().contains("cookie_hash"));
    }
}

/// Who calls, for the sweep below.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Who {
    Disabled,
    Member,
    Owner,
    /// Holds the data tracker's DATA_EDIT, which implies USER_ADD and USER_SEARCH.
    DataEditor,
    UserManager,
    Admin,
}

/// What `who` may do on a route with rule `access` (the path's `{username}`
/// is somebody else and `{project}` is the sweep project).
fn allowed(who: Who, access: &str) -> bool {
    match (who, access) {
        (_, "public") => true,
        // Only the metrics token, which is nobody's credential.
        (_, "metrics-token") => false,
        (Who::Disabled, _) => false,
        // The sweep's target is another user: nobody acts for them there.
        (_, "self") => false,
        (_, "authenticated") => true,
        (Who::Admin, _) => true,
        // USER_MANAGEMENT implies USER_ADD and USER_SEARCH; so does DATA_EDIT.
        (Who::UserManager, a) => {
            a.ends_with("permission:USER_MANAGEMENT") || a == "permission:USER_ADD" || a == "permission:USER_SEARCH"
        }
        (Who::DataEditor, a) => a == "permission:USER_ADD" || a == "permission:USER_SEARCH",
        (Who::Owner, a) => a.starts_with("project-"),
        (Who::Member, a) => a.starts_with("project-member"),
    }
}

/// Every route for a disabled user, a project member, a project owner, a
/// UserManager and an administrator: allowed ones never answer 401/403,
/// denied ones always do. Generated from the OpenAPI document, so a new
/// route is swept as soon as it exists.
#[tokio::test]
async fn every_route_for_every_kind_of_caller() {
    every_route_for_every_kind_of_caller_on(spawn_app().await).await;
}

/// The same with `auth.cache = false` (one query per request).
#[tokio::test]
async fn every_route_for_every_kind_of_caller_without_auth_cache() {
    every_route_for_every_kind_of_caller_on(spawn_app_with(|s| s.auth.cache = false).await).await;
}

async fn every_route_for_every_kind_of_caller_on(app: TestApp) {
    app.create_user("victim", json!({})).await;
    let owner = app.user("owner").await;
    app.post("/api/v1/projects", &owner, json!({"id": "SWEEP", "name": "Sweep"})).await.expect(201);
    let member = app.user("member").await;
    app.put("/api/v1/projects/SWEEP/members/member", &owner, json!({"level": "member"})).await.expect(200);
    let um = {
        app.create_user("um", json!({"roles": ["UserManager"]})).await;
        app.login("um", PASSWORD).await
    };
    let editor = {
        app.create_user("editor", json!({"roles": ["DataEditor"]})).await;
        app.login("editor", PASSWORD).await
    };
    let disabled = app.user("gone").await;
    app.patch("/api/v1/users/gone", &app.admin_token, json!({"enabled": false})).await.expect(200);
    let doc = app.send(Method::GET, "/api/v1/openapi.json", &Auth::None, None).await.expect(200).json();
    let mut ops: Vec<(String, String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            ops.push((path.clone(), method.clone(), op["x-access"].as_str().expect("x-access").to_string()));
        }
    }
    // Deletes go last (the project and users last of all), and the admin
    // sweeps last, so every caller finds things in place.
    ops.sort_by_key(|(p, m, _)| (m == "delete", p == "/api/v1/projects/{project}" || p == "/api/v1/users/{username}"));
    for (who, token, name) in [
        (Who::Disabled, disabled.clone(), "gone"),
        (Who::Member, member.clone(), "member"),
        (Who::Owner, owner.clone(), "owner"),
        (Who::DataEditor, editor.clone(), "editor"),
        (Who::UserManager, um.clone(), "um"),
        (Who::Admin, app.admin_token.clone(), ADMIN),
    ] {
        for (path, method, access) in &ops {
            let ends_session = path == "/api/v1/auth/logout" || (path == "/data/JSESSION" && method == "delete");
            let t = if ends_session && who != Who::Disabled {
                app.login(name, if who == Who::Admin { ADMIN_PASSWORD } else { PASSWORD }).await
            } else {
                token.clone()
            };
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let r = app.send(m, &concrete(path, "victim"), &Auth::Bearer(t), Some(json!({}))).await;
            let denied = r.status == 401 || r.status == 403;
            if allowed(who, access) {
                assert!(!denied, "{who:?} {method} {path} ({access}) was refused: {} {}", r.status, r.text);
            } else {
                assert!(denied, "{who:?} {method} {path} ({access}) was let through: {} {}", r.status, r.text);
                // A user's credential is no metrics token: still unauthenticated there.
                let expected = if who == Who::Disabled || *access == "metrics-token" { 401 } else { 403 };
                assert_eq!(r.status.as_u16(), expected, "{who:?} {method} {path}");
            }
            assert!(r.status.as_u16() < 500, "{who:?} {method} {path}: {}", r.text);
        }
    }
}

/// The headers every answer carries, whatever its status.
fn assert_security_headers(r: &Resp, what: &str) {
    let h = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(h("x-frame-options"), "DENY", "{what}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
    assert!(!h("x-request-id").is_empty(), "{what}");
}

/// Answers that carry secrets or depend on who asks are never stored by caches.
#[tokio::test]
async fn auth_answers_are_not_cacheable() {
    let app = spawn_app().await;
    app.create_user("nostore", json!({})).await;
    let login = app.login_full("nostore", PASSWORD).await.expect(200);
    let json = login.json();
    let refresh_token = json["refresh_token"].as_str().expect("refresh").to_string();
    let token = json["access_token"].as_str().expect("token").to_string();
    let refreshed = app
        .send(Method::POST, "/api/v1/auth/refresh", &Auth::None, Some(json!({"refresh_token": refresh_token})))
        .await
        .expect(200);
    let key = app.post("/api/v1/users/me/api-keys", &token, json!({"name": "k"})).await.expect(201);
    let failed = app.login_full("nostore", "not the password at all").await.expect(401);
    let me = app.get("/api/v1/users/me", &token).await.expect(200);
    for (what, r) in
        [("login", &login), ("refresh", &refreshed), ("api key", &key), ("failed login", &failed), ("me", &me)]
    {
        let cc = r.headers.get("cache-control").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(cc.contains("no-store"), "{what}: Cache-Control {cc:?}");
        assert_security_headers(r, what);
    }
}
