//! The data tracker's user module: `tests/tracker_client/drive_tracker.py`
//! drives every route as every role the tracker's own tests use (with
//! `requests`, the library its tests and scripts use), then the database
//! is checked; and the credential rules the tracker's API adds (API keys
//! in `X-API-User`/`X-API-Key`, sessions started with a key).

use std::path::Path;

use reqwest::Method;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::helpers::*;

static PYTHON: OnceCell<std::path::PathBuf> = OnceCell::const_new();

#[tokio::test]
async fn tracker_client_drives_registrar() {
    let py = PYTHON
        .get_or_init(|| crate::xnat_clients::venv("REGISTRAR_TRACKER_PYTHON", "tracker-venv", "tracker_client"))
        .await;
    let app = spawn_app().await;
    let args =
        ["--url", &app.address, "--admin-user", ADMIN, "--admin-password", ADMIN_PASSWORD, "--password", PASSWORD];
    let verdict =
        crate::xnat_clients::run_driver(py, &Path::new("tracker_client").join("drive_tracker.py"), &args).await;
    println!("drive_tracker.py: {verdict}");
    // What the client did is in the database: the permission types are
    // roles, each user has one live tracker key, replaced keys are revoked
    // and the sessions they started ended with them.
    let roles = app
        .count("SELECT count(*) FROM user_roles r JOIN users u ON u.id = r.user_id WHERE u.username LIKE 'dt\\_%'")
        .await;
    assert_eq!(roles, 6, "dt_edit, dt_owners, dt_users, dt_data, dt_adder and dt_searcher hold one role each");
    let live = app
        .count("SELECT count(*) FROM api_keys k JOIN users u ON u.id = k.user_id WHERE u.username = 'dt_base' AND k.revoked_at IS NULL")
        .await;
    assert_eq!(live, 1, "one live tracker key per user");
    let dangling = app
        .count("SELECT count(*) FROM sessions s JOIN api_keys k ON k.id = s.api_key_id WHERE k.revoked_at IS NOT NULL AND s.revoked_at IS NULL")
        .await;
    assert_eq!(dangling, 0, "no session outlives the key it was started with");
    let added = app.count("SELECT count(*) FROM users WHERE email LIKE '%@added.example.com'").await;
    assert_eq!(added, 0, "the users the client added were deleted");
}

/// The key headers and key sessions as an attacker would try them.
#[tokio::test]
async fn api_key_headers_and_key_sessions_follow_the_key() {
    let app = spawn_app().await;
    let user_token = app.user("keyholder").await;
    let other = app.create_user("bystander", json!({})).await;
    let me = app.get("/api/v1/users/me", &user_token).await.expect(200).json();
    let id = me["id"].as_str().expect("id").to_string();
    let key = app.post(&format!("/api/v1/user/{id}/apikey"), &user_token, json!({})).await.expect(200).json()["key"]
        .as_str()
        .expect("key")
        .to_string();

    // `/api/v1/user/me` answers everyone (a visitor gets empty fields): the
    // key is tried on a route that needs a caller.
    let mine = format!("/api/v1/user/{id}/actions");
    let with = |headers: &[(&str, &str)]| {
        let mut rb = app.client.get(app.url(&mine));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb
    };
    // The key names its user by username, email or id, in any case.
    for user in ["keyholder", "KEYHOLDER@example.org", id.as_str()] {
        app.exchange("key headers", with(&[("X-API-User", user), ("X-API-Key", &key)])).await.expect(200);
    }
    // Not another user's name, not without a name, not next to another credential.
    let bystander = other["username"].as_str().expect("name");
    app.exchange("wrong user", with(&[("X-API-User", bystander), ("X-API-Key", &key)])).await.expect(401);
    app.exchange("no user", with(&[("X-API-Key", &key)])).await.expect(400);
    let both = with(&[("X-API-User", "keyholder"), ("X-API-Key", &key)]).bearer_auth(&app.admin_token);
    assert_eq!(app.exchange("two credentials", both).await.expect(400).code(), "unusable_credentials");
    // A password is no key.
    app.exchange("password as key", with(&[("X-API-User", "keyholder"), ("X-API-Key", PASSWORD)])).await.expect(401);

    // A key login starts a cookie session that is no fresh login and ends with the key.
    let login =
        app.client.post(app.url("/api/v1/login/apikey")).json(&json!({"api-user": "keyholder", "api-key": key}));
    let r = app.exchange("key login", login).await.expect(200);
    let cookie = r
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|c| c.to_str().ok())
        .find_map(|c| c.strip_prefix("registrar_session="))
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string();
    let session = Auth::Cookie(cookie);
    let r = app.send(Method::GET, "/api/v1/user/me", &session, None).await.expect(200);
    assert_eq!(r.json()["user"]["_id"], id.as_str());
    let r =
        app.send(Method::POST, &format!("/api/v1/users/{id}/api-keys"), &session, Some(json!({"name": "more"}))).await;
    assert_eq!(r.expect(403).code(), "reauthentication_required");
    let keys = app.get("/api/v1/users/keyholder/api-keys", &user_token).await.expect(200).json();
    let key_id = keys["items"].as_array().expect("keys")[0]["id"].as_str().expect("key id").to_string();
    app.delete(&format!("/api/v1/users/keyholder/api-keys/{key_id}"), &user_token).await.expect(204);
    app.send(Method::GET, &mine, &session, None).await.expect(401);
    let r = app.send(Method::GET, "/api/v1/user/me", &session, None).await.expect(200);
    assert_eq!(r.json()["user"]["_id"], "", "a dead session is a visitor here");
    app.exchange("revoked key", with(&[("X-API-User", "keyholder"), ("X-API-Key", &key)])).await.expect(401);
}

/// A USER_ADD holder adds plain accounts only; a USER_SEARCH holder lists
/// without the login names and permissions; neither reaches the native
/// management routes.
#[tokio::test]
async fn user_add_and_user_search_stop_where_they_should() {
    let app = spawn_app().await;
    let adder = app.user("adder").await;
    let searcher = app.user("searcher").await;
    app.put("/api/v1/users/adder/roles/UserAdder", &app.admin_token, json!({})).await.expect(200);
    app.put("/api/v1/users/searcher/roles/UserSearcher", &app.admin_token, json!({})).await.expect(200);
    let before = app.count("SELECT count(*) FROM users").await;
    let r = app
        .post("/api/v1/user", &adder, json!({"user": {"email": "x@example.org", "permissions": ["USER_ADD"]}}))
        .await;
    r.expect(403);
    // The native create takes USER_MANAGEMENT still: USER_ADD adds through the tracker's route.
    app.post("/api/v1/users", &adder, json!({"username": "x", "email": "x@example.org"})).await.expect(403);
    assert_eq!(app.count("SELECT count(*) FROM users").await, before, "nothing was added");
    let added = app.post("/api/v1/user", &adder, json!({"user": {"email": "x@example.org", "name": "Ex Ample"}})).await;
    let id = added.expect(200).json()["_id"].as_str().expect("id").to_string();
    let made = app.get(&format!("/api/v1/users/{id}"), &app.admin_token).await.expect(200).json();
    assert_eq!(
        (made["username"].as_str(), made["first_name"].as_str(), made["roles"].as_array().map(Vec::len)),
        (Some("x"), Some("Ex"), Some(0))
    );
    app.get("/api/v1/user", &adder).await.expect(403);
    let listed = app.get("/api/v1/user", &searcher).await.expect(200).json();
    assert!(listed["users"]
        .as_array()
        .expect("users")
        .iter()
        .all(|u| u.get("auth_ids").is_none() && u.get("permissions").is_none()));
    app.post("/api/v1/user", &searcher, json!({"user": {"email": "y@example.org"}})).await.expect(403);
    app.get("/api/v1/users", &searcher).await.expect(403);
    app.get(&format!("/api/v1/user/{id}"), &searcher).await.expect(403);
}

/// Attack review: a user manager's delete racing an administrator's grant
/// of Administrator either sees the grant (403) or deletes first; never
/// both "granted" and "deleted by a user manager".
#[tokio::test]
async fn a_delete_waits_for_a_concurrent_grant_of_administrator() {
    let app = spawn_app().await;
    app.create_user("um", json!({"roles": ["UserManager"]})).await;
    let um = app.login("um", PASSWORD).await;
    for (name, tracker) in [("rising", true), ("rising2", false)] {
        let target = app.create_user(name, json!({})).await;
        let path = if tracker {
            format!("/api/v1/user/{}", target["id"].as_str().expect("id"))
        } else {
            format!("/api/v1/users/{name}")
        };
        // The grant holds the account's row until it commits, as the role routes do.
        let mut grant = app.pool.begin().await.expect("begin");
        sqlx::query("SELECT id FROM users WHERE username = $1 FOR UPDATE")
            .bind(name)
            .execute(&mut *grant)
            .await
            .expect("lock");
        sqlx::query("INSERT INTO user_roles (user_id, role) SELECT id, 'Administrator' FROM users WHERE username = $1")
            .bind(name)
            .execute(&mut *grant)
            .await
            .expect("grant");
        let (client, url, token) = (app.client.clone(), app.url(&path), um.clone());
        let delete =
            tokio::spawn(async move { client.delete(url).bearer_auth(token).send().await.expect("send").status() });
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert!(!delete.is_finished(), "the delete waits for the grant ({path})");
        grant.commit().await.expect("commit");
        assert_eq!(delete.await.expect("join").as_u16(), 403, "{path}");
        let still = app.get(&format!("/api/v1/users/{name}"), &app.admin_token).await.expect(200).json();
        assert_eq!(still["admin"], true, "the administrator stays ({path})");
    }
}

/// Attack review: headers a browser never sends twice, a cross-site
/// logout, permissions sent back in another order, an empty list.
#[tokio::test]
async fn doubled_headers_cross_site_logout_and_permission_lists() {
    let app = spawn_app().await;
    let token = app.user("holder").await;
    let me = app.get("/api/v1/user/me", &token).await.expect(200).json();
    let id = me["user"]["_id"].as_str().expect("id").to_string();
    let key = app.post(&format!("/api/v1/user/{id}/apikey"), &token, json!({})).await.expect(200).json()["key"]
        .as_str()
        .expect("key")
        .to_string();
    let url = app.url(&format!("/api/v1/user/{id}/log"));
    let twice =
        app.client.get(&url).header("X-API-User", "holder").header("X-API-User", "holder").header("X-API-Key", &key);
    app.exchange("doubled X-API-User", twice).await.expect(400);
    let twice = app.client.get(&url).header("X-API-User", "holder").header("X-API-Key", &key).header("X-API-Key", &key);
    app.exchange("doubled X-API-Key", twice).await.expect(400);

    // A cookie session: a write with two Origin headers is cross-site, and
    // so is a logout from another site (the session lives on).
    let login = app.login_full("holder", PASSWORD).await.expect(200);
    let cookie = login
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|c| c.to_str().ok())
        .find_map(|c| c.strip_prefix("registrar_session="))
        .and_then(|c| c.split(';').next())
        .expect("cookie")
        .to_string();
    let jar = format!("registrar_session={cookie}");
    let patch = app
        .client
        .patch(app.url("/api/v1/user/me"))
        .header("Cookie", &jar)
        .header("Origin", &app.address)
        .header("Origin", "http://evil.example")
        .json(&json!({"user": {"affiliation": "Evil"}}));
    assert_eq!(app.exchange("two origins", patch).await.expect(403).code(), "cross_site_request");
    let out = app.client.get(app.url("/api/v1/logout")).header("Cookie", &jar).header("Sec-Fetch-Site", "cross-site");
    app.exchange("cross-site logout", out).await.expect(403);
    let r = app.send(Method::GET, &format!("/api/v1/user/{id}/log"), &Auth::Cookie(cookie.clone()), None).await;
    r.expect(200);
    let out = app.client.get(app.url("/api/v1/logout")).header("Cookie", &jar).header("Sec-Fetch-Site", "same-origin");
    app.exchange("logout", out).await.expect(200);
    app.send(Method::GET, &format!("/api/v1/user/{id}/log"), &Auth::Cookie(cookie), None).await.expect(401);
    assert_eq!(app.get("/api/v1/users/holder", &app.admin_token).await.expect(200).json()["affiliation"], "");

    // Permissions sent back unchanged, in any order, are no change.
    for role in ["DataEditor", "UserManager"] {
        app.put(&format!("/api/v1/users/holder/roles/{role}"), &app.admin_token, json!({})).await.expect(200);
    }
    let token = app.login("holder", PASSWORD).await;
    for list in [json!(["USER_MANAGEMENT", "DATA_EDIT"]), json!(["DATA_EDIT", "USER_MANAGEMENT"])] {
        app.patch("/api/v1/user/me", &token, json!({"user": {"permissions": list, "contact": "+46 1"}}))
            .await
            .expect(200);
    }
    app.patch("/api/v1/user/me", &token, json!({"user": {"permissions": ["DATA_EDIT"]}})).await.expect(403);
    // An adder may send an empty permission list; not a non-empty one.
    let adder = app.user("adder").await;
    app.put("/api/v1/users/adder/roles/UserAdder", &app.admin_token, json!({})).await.expect(200);
    let body = json!({"user": {"email": "plain@example.org", "permissions": []}});
    app.post("/api/v1/user", &adder, body).await.expect(200);
}
