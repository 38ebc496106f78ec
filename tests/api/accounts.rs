//! Users, validation, permissions and self-edit rules, last-admin protection.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn create_and_read_user() {
    let app = spawn_app().await;
    let u = app.create_user("Alice", json!({"first_name": "Alice", "last_name": "Liddell", "verified": true})).await;
    for field in [
        "id",
        "username",
        "email",
        "first_name",
        "last_name",
        "enabled",
        "verified",
        "admin",
        "roles",
        "created_at",
        "last_modified",
    ] {
        assert!(u.get(field).is_some(), "user object has `{field}`: {u}");
    }
    assert_eq!(u["username"], "Alice");
    assert_eq!(u["enabled"], true);
    assert_eq!(u["admin"], false);
    assert!(u.get("password").is_none() && u.get("password_hash").is_none());
    // Read back, by any case.
    let r = app.get("/api/v1/users/alice", &app.admin_token).await.expect(200);
    assert_eq!(r.json()["id"], u["id"]);
    // The password stored is an argon2id hash, not the password.
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE username = 'Alice'")
        .fetch_one(&app.pool)
        .await
        .expect("q");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(PASSWORD));
    // Created is logged with the actor.
    let actor: String =
        sqlx::query_scalar("SELECT actor_username FROM change_log WHERE action = 'user.created' AND subject_id = $1")
            .bind(u["id"].as_str().expect("id"))
            .fetch_one(&app.pool)
            .await
            .expect("log entry");
    assert_eq!(actor, ADMIN);
}

#[tokio::test]
async fn create_validation_and_duplicates() {
    let app = spawn_app().await;
    app.create_user("bob", json!({})).await;
    let t = &app.admin_token;
    let base = |u: &str, e: &str, p: &str| json!({"username": u, "email": e, "password": p});
    let cases = [
        (base("BOB", "other@example.org", PASSWORD), 409, "username_taken"),
        (base("bobby", "BOB@example.org", PASSWORD), 409, "email_taken"),
        (base("me", "me@example.org", PASSWORD), 400, "reserved_username"),
        (base("ME", "me2@example.org", PASSWORD), 400, "reserved_username"),
        (base("no spaces", "x@example.org", PASSWORD), 422, "invalid_username"),
        (base(&"a".repeat(65), "x@example.org", PASSWORD), 422, "invalid_username"),
        (base("-dash", "x@example.org", PASSWORD), 422, "invalid_username"),
        (base("carol", "not-an-email", PASSWORD), 422, "invalid_email"),
        (base("carol", "carol@example.org", "too short"), 422, "password_too_short"),
        (base("carol", "carol@example.org", "1q2w3e4r5t6y7u8i9o0p"), 422, "password_too_common"),
        (base("carol", "carol@example.org", "my name is carol, hello there"), 422, "password_contains_identity"),
        (base("carol", "carol@example.org", &"x".repeat(300)), 422, "password_too_long"),
        (base("carol", "carol@example.org", "passwordpassword"), 422, "password_too_weak"),
        (base("carol", "carol@example.org", &"a".repeat(20)), 422, "password_too_weak"),
        (json!({"username": "carol"}), 400, "missing_field"),
        (
            json!({"username": "carol", "email": "c@example.org", "password": PASSWORD, "isAdmin": true}),
            400,
            "unknown_field",
        ),
        (json!({"username": 5, "email": "c@example.org"}), 400, "invalid_field"),
    ];
    let before = app.count("SELECT count(*) FROM users").await;
    for (body, status, code) in cases {
        let r = app.post("/api/v1/users", t, body.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.text);
        assert_eq!(r.code(), code, "{body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM users").await, before, "nothing written by rejected creates");
    // Each names the field.
    for (body, field) in [
        (json!({"username": "carol"}), "email"),
        (json!({"username": "carol", "email": "c@example.org", "isAdmin": true}), "isAdmin"),
        (json!({"username": 5, "email": "c@example.org"}), "username"),
        (json!({"username": "carol", "email": "c@example.org", "roles": [1]}), "roles[0]"),
    ] {
        let r = app.post("/api/v1/users", t, body.clone()).await.expect(400);
        assert_eq!(r.json()["error"]["details"]["field"], field, "{body}: {}", r.text);
        assert!(!r.text.contains("line 1"), "{}", r.text);
    }
    // 64 characters of any Unicode are accepted and verified exactly.
    let pw: String =
        "Ключ🔑замок🚪дверь🌿сад🍎дом🏠окно🪟небо🌙река🌊лес🌲мост🌉гора⛰поле🌾".chars().cycle().take(64).collect();
    app.post("/api/v1/users", t, json!({"username": "dora", "email": "dora@example.org", "password": pw}))
        .await
        .expect(201);
    app.login("dora", &pw).await;
    // No truncation: a prefix of the password does not work.
    let prefix: String = pw.chars().take(40).collect();
    app.login_full("dora", &prefix).await.expect(401);
}

#[tokio::test]
async fn list_paginates_and_filters() {
    let app = spawn_app().await;
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        app.create_user(name, json!({"first_name": if name == "u3" { "Zelda" } else { "Plain" }})).await;
    }
    app.patch("/api/v1/users/u5", &app.admin_token, json!({"enabled": false})).await.expect(200);
    app.put("/api/v1/users/u4/roles/UserManager", &app.admin_token, json!(null)).await.expect(200);
    app.put("/api/v1/users/u1/roles/Administrator", &app.admin_token, json!(null)).await.expect(200);
    app.patch(
        "/api/v1/users/u3",
        &app.admin_token,
        json!({"affiliation": "Ümlaut \"Lab\"", "contact": "line\nbreak", "orcid": "0000-0002-1825-0097", "url": "https://example.org/u3"}),
    )
    .await
    .expect(200);
    // Every kind of value a listed user has: a lock, counts, and each timestamp.
    sqlx::query(
        "UPDATE users SET locked_until = now() + interval '1 hour', failed_login_attempts = 3,
         last_login_attempt = now(), last_successful_login = '2026-01-02T03:04:05.678Z' WHERE username = 'u2'",
    )
    .execute(&app.pool)
    .await
    .expect("lock u2");
    let mut seen = Vec::new();
    let (mut locked, mut admins) = (0, 0);
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/users?limit=2&cursor={c}"),
            None => "/api/v1/users?limit=2".to_string(),
        };
        let page = app.get(&path, &app.admin_token).await.expect(200).json();
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        // Every page of the listing says how many match in all.
        assert_eq!(page["total"], 6, "{path}");
        seen.extend(items.iter().map(|u| u["username"].as_str().expect("name").to_string()));
        // A listed user is the user a read gives (the list's statement and
        // the read's select the same columns).
        for item in items {
            let path = format!("/api/v1/users/{}", item["username"].as_str().expect("n"));
            assert_eq!(&app.get(&path, &app.admin_token).await.expect(200).json(), item);
            locked += usize::from(item["locked"] == true);
            admins += usize::from(item["admin"] == true);
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        // The list changes while it is read: the total stays the first page's.
        if seen.len() == 2 {
            app.create_user("zz_latecomer", json!({})).await;
        }
    }
    assert_eq!(seen, ["admin", "u1", "u2", "u3", "u4", "u5", "zz_latecomer"]);
    assert_eq!((locked, admins), (1, 2), "u2 is locked; admin and u1 are administrators");
    assert_eq!(app.get("/api/v1/users?limit=2", &app.admin_token).await.expect(200).json()["total"], 7);
    let names = |v: serde_json::Value| -> Vec<String> {
        v["items"].as_array().expect("items").iter().map(|u| u["username"].as_str().expect("n").to_string()).collect()
    };
    assert_eq!(names(app.get("/api/v1/users?q=zeld", &app.admin_token).await.expect(200).json()), ["u3"]);
    assert_eq!(names(app.get("/api/v1/users?enabled=false", &app.admin_token).await.expect(200).json()), ["u5"]);
    assert_eq!(names(app.get("/api/v1/users?role=UserManager", &app.admin_token).await.expect(200).json()), ["u4"]);
    // A pattern character is literal.
    assert!(names(app.get("/api/v1/users?q=%25", &app.admin_token).await.expect(200).json()).is_empty());
    // A bad parameter is named.
    for (query, field) in
        [("cursor=garbage!", "cursor"), ("limit=0", "limit"), ("limit=ten", "limit"), ("enabled=maybe", "enabled")]
    {
        let r = app.get(&format!("/api/v1/users?{query}"), &app.admin_token).await.expect(400);
        assert_eq!(
            (r.code(), r.json()["error"]["details"]["field"].clone()),
            ("invalid_field".to_string(), json!(field)),
            "{query}"
        );
    }
    // Forged cursors whose timestamps PostgreSQL would refuse are refused here (400, not 500).
    use base64::Engine;
    let id = "00000000-0000-0000-0000-000000000000";
    for (sort, key) in [
        ("created_at", "0000-01-01T00:00:00Z"),
        ("created_at", "2020-01-01T00:00:00+23:59"),
        ("last_login", "0000-06-01T00:00:00Z"),
    ] {
        let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{sort}\n{key}\n{id}\n5"));
        let r = app.get(&format!("/api/v1/users?sort={sort}&cursor={cursor}"), &app.admin_token).await.expect(400);
        assert_eq!(r.json()["error"]["details"]["field"], "cursor", "{key}");
    }
    let all = app.get("/api/v1/usernames", &app.admin_token).await.expect(200).json();
    assert_eq!(all["items"].as_array().expect("list").len(), 7, "with zz_latecomer");
}

#[tokio::test]
async fn self_service_and_its_limits() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    app.user("bob").await;
    // Own profile, through `me` and by name.
    let me = app.get("/api/v1/users/me", &alice).await.expect(200).json();
    assert_eq!(me["username"], "alice");
    app.get("/api/v1/users/alice", &alice).await.expect(200);
    let r = app.patch("/api/v1/users/me", &alice, json!({"first_name": "Alice", "last_name": "L"})).await.expect(200);
    assert_eq!(r.json()["first_name"], "Alice");
    // Not others, not privileged fields, not own roles.
    app.get("/api/v1/users/bob", &alice).await.expect(403);
    app.patch("/api/v1/users/bob", &alice, json!({"first_name": "x"})).await.expect(403);
    app.get("/api/v1/users", &alice).await.expect(403);
    app.post("/api/v1/users", &alice, json!({"username": "eve", "email": "eve@example.org", "password": PASSWORD}))
        .await
        .expect(403);
    for body in [json!({"enabled": false}), json!({"verified": true}), json!({"admin": true})] {
        app.patch("/api/v1/users/me", &alice, body.clone()).await.expect(403);
    }
    app.put("/api/v1/users/me/roles", &alice, json!(["UserManager"])).await.expect(403);
    app.delete("/api/v1/users/bob", &alice).await.expect(403);
    let after = app.get("/api/v1/users/me", &alice).await.json();
    assert_eq!(after["verified"], me["verified"]);
    assert_eq!(after["admin"], false);
    assert_eq!(after["roles"], json!([]));
}

#[tokio::test]
async fn user_manager_manages_users_but_not_admins() {
    let app = spawn_app().await;
    app.create_user("manager", json!({"roles": ["UserManager"]})).await;
    let m = app.login("manager", PASSWORD).await;
    app.create_user("plain", json!({})).await;
    app.get("/api/v1/users", &m).await.expect(200);
    app.post("/api/v1/users", &m, json!({"username": "newbie", "email": "newbie@example.org", "password": PASSWORD}))
        .await
        .expect(201);
    app.patch("/api/v1/users/plain", &m, json!({"enabled": false, "verified": true})).await.expect(200);
    // No minting or touching administrators.
    app.post(
        "/api/v1/users",
        &m,
        json!({"username": "boss", "email": "boss@example.org", "password": PASSWORD, "admin": true}),
    )
    .await
    .expect(403);
    app.put("/api/v1/users/plain/roles/Administrator", &m, json!(null)).await.expect(403);
    app.patch("/api/v1/users/admin", &m, json!({"enabled": false})).await.expect(403);
    app.put("/api/v1/users/admin/password", &m, json!({"new_password": "another long passphrase here"}))
        .await
        .expect(403);
    app.delete("/api/v1/users/admin", &m).await.expect(403);
    app.get("/api/v1/admin/change-log", &m).await.expect(403);
    app.delete("/api/v1/users/newbie", &m).await.expect(200);
    app.get("/api/v1/users/newbie", &m).await.expect(404);
}

#[tokio::test]
async fn last_admin_is_protected() {
    let app = spawn_app().await;
    // Nobody deletes their own account (so the last admin cannot delete itself).
    let r = app.delete("/api/v1/users/admin", &app.admin_token).await.expect(403);
    assert_eq!(r.code(), "self_destructive");
    // An admin cannot change their own admin flag or enabled state either.
    app.patch("/api/v1/users/me", &app.admin_token, json!({"admin": false})).await.expect(403);
    app.patch("/api/v1/users/me", &app.admin_token, json!({"enabled": false})).await.expect(403);
    // Two admins deleting each other at once: exactly one succeeds.
    app.create_user("admin2", json!({"admin": true})).await;
    let t2 = app.login("admin2", PASSWORD).await;
    let (a, b) =
        tokio::join!(app.delete("/api/v1/users/admin2", &app.admin_token), app.delete("/api/v1/users/admin", &t2));
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert!(statuses == [200, 401] || statuses == [200, 409], "{statuses:?}");
    let admins = app
        .count("SELECT count(*) FROM users u JOIN user_roles r ON r.user_id = u.id WHERE r.role = 'Administrator' AND u.enabled")
        .await;
    assert_eq!(admins, 1);
    // Demoting the other admin works while one remains.
    let survivor = if a.status == 200 { app.admin_token.clone() } else { t2.clone() };
    let body = json!({"username": "admin3", "email": "admin3@example.org", "password": PASSWORD, "admin": true});
    app.post("/api/v1/users", &survivor, body).await.expect(201);
    app.patch("/api/v1/users/admin3", &survivor, json!({"admin": false})).await.expect(200);
}

#[tokio::test]
async fn roles_many_and_one() {
    let app = spawn_app().await;
    app.create_user("rita", json!({})).await;
    let t = &app.admin_token;
    let r = app.put("/api/v1/users/rita/roles", t, json!(["UserManager", "Non-Expiring"])).await.expect(200);
    assert_eq!(r.json()["user"]["roles"], json!(["Non-Expiring", "UserManager"]));
    // Partial: one unknown role -> 202 naming it; the known one applied.
    let r = app.delete("/api/v1/users/rita/roles", t).await;
    assert!(r.status.is_client_error(), "a body is required: {}", r.text);
    let r = app
        .send(
            Method::DELETE,
            "/api/v1/users/rita/roles",
            &Auth::Bearer(t.clone()),
            Some(json!({"roles": ["Non-Expiring", "Wizard"]})),
        )
        .await
        .expect(202);
    let results = r.json()["results"].clone();
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[1]["ok"], false);
    assert!(results[1]["error"].as_str().expect("error").contains("Wizard"));
    assert_eq!(app.get("/api/v1/users/rita/roles", t).await.json()["items"], json!(["UserManager"]));
    app.put("/api/v1/users/rita/roles/Wizard", t, json!(null)).await.expect(404);
    app.delete("/api/v1/users/rita/roles/UserManager", t).await.expect(200);
    assert_eq!(app.get("/api/v1/users/rita/roles", t).await.json()["items"], json!([]));
    // The permission list and role list.
    let perms = app.get("/api/v1/permissions", t).await.expect(200).json();
    let names: Vec<&str> =
        perms["items"].as_array().expect("list").iter().map(|p| p["name"].as_str().expect("name")).collect();
    assert!(names.contains(&"USER_MANAGEMENT") && names.contains(&"ADMIN"));
    let roles = app.get("/api/v1/roles", t).await.expect(200).json();
    assert!(roles["items"]
        .as_array()
        .expect("list")
        .iter()
        .any(|r| r["name"] == "UserManager" && r["permissions"] == json!(["USER_MANAGEMENT"])));
    // Granting a role gives its permission at once.
    app.put("/api/v1/users/rita/roles/UserManager", t, json!(null)).await.expect(200);
    let rita = app.login("rita", PASSWORD).await;
    app.get("/api/v1/users", &rita).await.expect(200);
    let log = app.log_actions(app.get("/api/v1/users/rita", t).await.json()["id"].as_str().expect("id")).await;
    assert!(log.iter().filter(|a| *a == "user.roles_changed").count() >= 3, "{log:?}");
}

/// A user's roles are kept on the user's row (`users.roles`) by a trigger
/// on `user_roles`: whatever statement changes the grants, and however many
/// transactions change one user's grants at once, the row reads as the
/// grants do, in order, and so do the API's answers.
#[tokio::test]
async fn the_roles_on_a_user_row_follow_the_grants() {
    let app = spawn_app().await;
    let t = &app.admin_token;
    let made = app.create_user("rowan", json!({})).await;
    let id: uuid::Uuid = made["id"].as_str().expect("id").parse().expect("uuid");
    let names: Vec<String> = (0..12).map(|i| format!("Crew{i:02}")).collect();
    for n in &names {
        app.post("/api/v1/roles", t, json!({"name": n, "permissions": []})).await.expect(201);
    }
    let row = async || -> Vec<String> {
        sqlx::query_scalar("SELECT roles FROM users WHERE id = $1").bind(id).fetch_one(&app.pool).await.expect("row")
    };
    let truth = async || -> Vec<String> {
        sqlx::query_scalar("SELECT ARRAY(SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role)")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .expect("grants")
    };

    // Twelve transactions grant one role each to the same user at once;
    // each holds its transaction open a while after its grant. The trigger
    // makes them wait for one another on the user's row, and each must
    // then see the grants committed while it waited.
    let grants = names.iter().map(|n| {
        let (pool, n) = (app.pool.clone(), n.clone());
        tokio::spawn(async move {
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)")
                .bind(id)
                .bind(&n)
                .execute(&mut *tx)
                .await
                .expect("grant");
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            tx.commit().await.expect("commit");
        })
    });
    for g in grants.collect::<Vec<_>>() {
        g.await.expect("task");
    }
    assert_eq!(truth().await, names, "every grant committed");
    assert_eq!(row().await, names, "the row has every role, in order");

    // Revocations at once, some through the API, some in SQL.
    let revoke = names.iter().step_by(2).map(|n| {
        let pool = app.pool.clone();
        let n = n.clone();
        tokio::spawn(async move {
            sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = $2")
                .bind(id)
                .bind(n)
                .execute(&pool)
                .await
                .expect("revoke")
        })
    });
    let revoked = revoke.collect::<Vec<_>>();
    app.delete("/api/v1/users/rowan/roles/Crew01", t).await.expect(200);
    for r in revoked {
        r.await.expect("task");
    }
    let left: Vec<String> = names.iter().skip(3).step_by(2).cloned().collect();
    assert_eq!(truth().await, left);
    assert_eq!(row().await, left, "revocations are followed");

    // A grant renamed in place, and a role's deletion cascading to grants.
    sqlx::query("UPDATE user_roles SET role = 'Crew00' WHERE user_id = $1 AND role = 'Crew03'")
        .bind(id)
        .execute(&app.pool)
        .await
        .expect("update");
    app.delete("/api/v1/roles/Crew05", t).await.expect(200);
    let left: Vec<String> = ["Crew00", "Crew07", "Crew09", "Crew11"].map(String::from).to_vec();
    assert_eq!(truth().await, left);
    assert_eq!(row().await, left, "an update and a cascade are followed");

    // What every front end reads: a user, a list page, the roles endpoint.
    assert_eq!(app.get("/api/v1/users/rowan", t).await.expect(200).json()["roles"], json!(left));
    let page = app.get("/api/v1/users?q=rowan", t).await.expect(200).json();
    assert_eq!(page["items"][0]["roles"], json!(left));
    // Granting several at once (the API's PUT adds them).
    app.put("/api/v1/users/rowan/roles", t, json!(["UserManager", "Crew02"])).await.expect(200);
    let more = ["Crew00", "Crew02", "Crew07", "Crew09", "Crew11", "UserManager"];
    assert_eq!(row().await, more.map(String::from).to_vec());
    assert_eq!(app.get("/api/v1/users/rowan", t).await.expect(200).json()["roles"], json!(more));

    // A user deleted with its grants (the cascade runs the trigger on a
    // row already gone): the deletion goes through.
    app.delete("/api/v1/users/rowan", t).await.expect(200);
    app.get("/api/v1/users/rowan", t).await.expect(404);
}

/// A user manager's change of an account that is being made an
/// administrator at that moment: the rule ("only an administrator manages
/// an administrator") is checked on the row as it is when the change is
/// written, not as it was read before (a password reset hashes for a while
/// between the two). Here the grant holds the user's row while the
/// manager's requests come in; they wait for it, see it, and are refused,
/// and nothing they asked for is written.
#[tokio::test]
async fn a_manager_cannot_change_an_account_made_administrator_meanwhile() {
    let app = spawn_app().await;
    let t = &app.admin_token;
    app.create_user("mona", json!({"roles": ["UserManager"]})).await;
    let made = app.create_user("tom", json!({})).await;
    let id: uuid::Uuid = made["id"].as_str().expect("id").parse().expect("uuid");
    let mona = app.login("mona", PASSWORD).await;
    app.post("/api/v1/groups", t, json!({"name": "crew"})).await.expect(201);
    app.post("/api/v1/projects", t, json!({"id": "DECK", "name": "Deck"})).await.expect(201);
    let tom_session = app.login("tom", PASSWORD).await;
    let other = app.login_full("tom", PASSWORD).await.expect(200).json();
    let other_session = other["session_id"].as_str().expect("session").to_string();
    let tom_key = app.post("/api/v1/users/tom/api-keys", t, json!({"name": "tom's own"})).await.expect(201).json();
    let key_id = tom_key["id"].as_str().expect("key id").to_string();

    let mut grant = app.pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, 'Administrator')")
        .bind(id)
        .execute(&mut *grant)
        .await
        .expect("grant");
    let reset =
        app.put("/api/v1/users/tom/password", &mona, json!({"new_password": "a manager's choice of passphrase"}));
    let edit = app.patch("/api/v1/users/tom", &mona, json!({"email": "mona-owns-this@example.org"}));
    let unlock = app.post("/api/v1/users/tom/unlock", &mona, json!({}));
    let roles = app.put("/api/v1/users/tom/roles/Non-Expiring", &mona, json!(null));
    let key = app.post("/api/v1/users/tom/api-keys", &mona, json!({"name": "mona's way in"}));
    let mfa = app.delete("/api/v1/users/tom/mfa", &mona);
    let sessions = app.delete("/api/v1/users/tom/sessions?api_keys=true", &mona);
    let group = app.put("/api/v1/users/tom/groups/crew", &mona, json!(null));
    let key_path = format!("/api/v1/users/tom/api-keys/{key_id}");
    let revoke_key = app.delete(&key_path, &mona);
    let session_path = format!("/api/v1/sessions/{other_session}");
    let revoke_session = app.delete(&session_path, &mona);
    let member = app.put("/api/v1/projects/DECK/members/tom", &mona, json!({"level": "member"}));
    let commit = async {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        grant.commit().await.expect("commit");
    };
    let (reset, edit, unlock, roles, key, mfa, sessions, group, revoke_key, revoke_session, member, ()) =
        tokio::join!(reset, edit, unlock, roles, key, mfa, sessions, group, revoke_key, revoke_session, member, commit);
    for (what, r) in [
        ("reset", reset),
        ("edit", edit),
        ("unlock", unlock),
        ("roles", roles),
        ("api key", key),
        ("mfa reset", mfa),
        ("sessions", sessions),
        ("group", group),
        ("key revocation", revoke_key),
        ("session revocation", revoke_session),
        ("project member", member),
    ] {
        assert_eq!(r.status.as_u16(), 403, "{what}: {}", r.text);
        assert!(!r.text.contains("mona-owns-this"), "{what}: {}", r.text);
    }
    // Nothing was written: the password, the address, the roles are as before.
    app.login("tom", PASSWORD).await;
    let tom = app.get("/api/v1/users/tom", t).await.expect(200).json();
    assert_eq!(tom["email"], "tom@example.org");
    assert_eq!(tom["roles"], json!(["Administrator"]));
    app.get("/api/v1/users/me", &tom_session).await.expect(200);
    let live_keys = format!("SELECT count(*) FROM api_keys WHERE user_id = '{id}' AND revoked_at IS NULL");
    assert_eq!(app.count(&live_keys).await, 1, "only tom's own key, alive");
    let live_sessions = format!("SELECT count(*) FROM sessions WHERE id = '{other_session}' AND revoked_at IS NULL");
    assert_eq!(app.count(&live_sessions).await, 1, "tom's other session is alive");
    assert_eq!(app.count(&format!("SELECT count(*) FROM user_groups WHERE user_id = '{id}'")).await, 0);
    let by_mona = app
        .count(&format!("SELECT count(*) FROM change_log WHERE actor_username = 'mona' AND subject_id = '{id}'"))
        .await;
    assert_eq!(by_mona, 0, "the manager changed nothing of tom's");
}

/// A role created, or deleted, by another transaction between a request's
/// check and its write: 409, never a 500, and nothing half-written.
#[tokio::test]
async fn races_on_a_role_are_conflicts() {
    let app = spawn_app().await;
    let t = &app.admin_token;
    app.create_user("rhea", json!({})).await;

    // Created meanwhile: the request's check cannot see it yet, its insert waits.
    let mut other = app.pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO roles (name) VALUES ('Twin')").execute(&mut *other).await.expect("insert");
    let create = app.post("/api/v1/roles", t, json!({"name": "Twin", "permissions": []}));
    let commit = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        other.commit().await.expect("commit");
    };
    let (r, ()) = tokio::join!(create, commit);
    assert_eq!((r.status.as_u16(), r.code()), (409, "role_exists".to_string()), "{}", r.text);

    // Deleted meanwhile: the grant saw the role, its insert's key check waits.
    app.post("/api/v1/roles", t, json!({"name": "Brief", "permissions": []})).await.expect(201);
    let mut other = app.pool.begin().await.expect("begin");
    sqlx::query("DELETE FROM roles WHERE name = 'Brief'").execute(&mut *other).await.expect("delete");
    let grant = app.put("/api/v1/users/rhea/roles/Brief", t, json!(null));
    let commit = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        other.commit().await.expect("commit");
    };
    let (r, ()) = tokio::join!(grant, commit);
    assert!(matches!(r.status.as_u16(), 404 | 409), "{} {}", r.status, r.text);
    assert_eq!(app.get("/api/v1/users/rhea", t).await.expect(200).json()["roles"], json!([]));
    let log = app.log_actions(app.get("/api/v1/users/rhea", t).await.json()["id"].as_str().expect("id")).await;
    assert!(!log.iter().any(|a| a == "user.roles_changed"), "{log:?}");
}

/// Deleting a role while a transaction holds one of its holders' rows and
/// then revokes the role from that holder: the deletion waits for the
/// holder, then goes through; neither is aborted as a deadlock.
#[tokio::test]
async fn deleting_a_role_waits_for_its_holders() {
    let app = spawn_app().await;
    let t = &app.admin_token;
    app.post("/api/v1/roles", t, json!({"name": "Passing", "permissions": []})).await.expect(201);
    let made = app.create_user("hal", json!({"roles": ["Passing"]})).await;
    let id: uuid::Uuid = made["id"].as_str().expect("id").parse().expect("uuid");
    app.create_user("ida", json!({"roles": ["Passing"]})).await;

    let mut holder = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE").bind(id).execute(&mut *holder).await.expect("lock");
    let delete = app.delete("/api/v1/roles/Passing", t);
    let revoke = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = 'Passing'")
            .bind(id)
            .execute(&mut *holder)
            .await
            .expect("the holder's own revocation is not a deadlock victim");
        holder.commit().await.expect("commit");
    };
    let (deleted, ()) = tokio::join!(delete, revoke);
    assert_eq!(deleted.status.as_u16(), 200, "{}", deleted.text);
    assert_eq!(app.count("SELECT count(*) FROM roles WHERE name = 'Passing'").await, 0);
    for name in ["hal", "ida"] {
        assert_eq!(app.get(&format!("/api/v1/users/{name}"), t).await.expect(200).json()["roles"], json!([]));
    }
}

/// A role's deletion locks its holders, then the role; a grant under way
/// then makes a holder it did not lock, whom a writer that locks in id
/// order (an import, a bulk action) may hold while it waits for a holder
/// the deletion has. The deletion lets its locks go and takes them again
/// with the new holder: both go through, neither is a deadlock victim.
#[tokio::test]
async fn a_role_deletion_takes_a_holder_made_meanwhile() {
    let app = spawn_app().await;
    let t = &app.admin_token;
    app.post("/api/v1/roles", t, json!({"name": "Fleeting", "permissions": []})).await.expect(201);
    let mut made = Vec::new();
    for name in ["rdx", "rdh"] {
        let id: uuid::Uuid = app.create_user(name, json!({})).await["id"].as_str().expect("id").parse().expect("uuid");
        made.push((id, name));
    }
    made.sort();
    // x: the lower id, who becomes a holder meanwhile; h: a holder from the start.
    let [(x, x_name), (h, h_name)] = [made[0], made[1]];
    app.put(&format!("/api/v1/users/{h_name}/roles/Fleeting"), t, json!(null)).await.expect(200);

    let mut grant = app.pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, 'Fleeting')")
        .bind(x)
        .execute(&mut *grant)
        .await
        .expect("grant");
    let delete = app.delete("/api/v1/roles/Fleeting", t);
    let writer = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut w = app.pool.begin().await.expect("begin");
        let locking = sqlx::query("SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(vec![x, h])
            .execute(&mut *w);
        let commit_grant = async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            grant.commit().await.expect("commit the grant");
        };
        let (locked, ()) = tokio::join!(locking, commit_grant);
        locked.expect("the writer is not a deadlock victim");
        w.commit().await.expect("commit the writer");
    };
    let (deleted, ()) = tokio::join!(delete, writer);
    assert_eq!(deleted.status.as_u16(), 200, "{}", deleted.text);
    assert_eq!(app.count("SELECT count(*) FROM roles WHERE name = 'Fleeting'").await, 0);
    for name in [x_name, h_name] {
        assert_eq!(app.get(&format!("/api/v1/users/{name}"), t).await.expect(200).json()["roles"], json!([]), "{name}");
    }
    let holders = app.get("/api/v1/admin/change-log?action=role.deleted", t).await.expect(200).json();
    assert!(holders.to_string().contains(x_name), "the new holder is in the deletion's record: {holders}");
}

/// A grant that waits on the role's deletion finds no role: 404
/// `role_not_found`, and nothing granted (it used to fail the foreign key
/// once the deletion committed: 409 `concurrent_update`).
#[tokio::test]
async fn a_grant_racing_the_roles_deletion_finds_no_role() {
    let app = spawn_app().await;
    let t = &app.admin_token;
    app.post("/api/v1/roles", t, json!({"name": "Vanishing", "permissions": []})).await.expect(201);
    app.create_user("grx", json!({})).await;
    let grant = app.put("/api/v1/users/grx/roles/Vanishing", t, json!(null));
    let (granted, waited) =
        while_another_writer_holds(&app, "DELETE FROM roles WHERE name = 'Vanishing'", "SELECT 1", grant).await;
    assert!(waited, "the grant waited for the deletion");
    assert_eq!(granted.status.as_u16(), 404, "{}", granted.text);
    assert_eq!(granted.json()["error"]["code"], "role_not_found", "{}", granted.text);
    assert_eq!(app.get("/api/v1/users/grx", t).await.expect(200).json()["roles"], json!([]));
    assert_eq!(app.count("SELECT count(*) FROM user_roles WHERE role = 'Vanishing'").await, 0);
}

/// Users before groups and projects: deleting a group, deleting a project
/// and setting a member's level each wait for the member's row before they
/// take the group's or the project's. Taken the other way round, they held
/// the group or project while a member's removal or deletion held the
/// member and waited for the group (`registrar_group_touched`): a deadlock
/// (409), found by attack (18 of 30 group deletions racing removals).
#[tokio::test]
async fn group_and_project_writes_take_the_member_first() {
    let app = spawn_app().await;
    let t = &app.admin_token;
    let member: uuid::Uuid =
        app.create_user("member", json!({})).await["id"].as_str().expect("id").parse().expect("uuid");
    app.post("/api/v1/groups", t, json!({"name": "ordered"})).await.expect(201);
    app.put("/api/v1/users/member/groups/ordered", t, json!(null)).await.expect(200);
    app.post("/api/v1/projects", t, json!({"id": "PORD", "name": "Ordered"})).await.expect(201);
    app.post("/api/v1/projects", t, json!({"id": "PGONE", "name": "Going"})).await.expect(201);
    app.put("/api/v1/projects/PGONE/members/member", t, json!({"level": "member"})).await.expect(200);

    // Each write waits for the member's row while a writer holds it; the
    // group's or project's row stays free for that writer meanwhile.
    let cases: [(&str, &str, String); 3] = [
        (
            "group deletion",
            "SELECT 1 FROM groups WHERE name = 'ordered' FOR NO KEY UPDATE",
            "DELETE /api/v1/groups/ordered".into(),
        ),
        (
            "project deletion",
            "SELECT 1 FROM projects WHERE id = 'PGONE' FOR NO KEY UPDATE",
            "DELETE /api/v1/projects/PGONE".into(),
        ),
        (
            "member level",
            "SELECT 1 FROM projects WHERE id = 'PORD' FOR NO KEY UPDATE",
            "PUT /api/v1/projects/PORD/members/member".into(),
        ),
    ];
    let first = format!("SELECT id FROM users WHERE id = '{member}' FOR UPDATE");
    for (what, take_other, request) in cases {
        let (method, path) = request.split_once(' ').expect("request");
        let send = async {
            match method {
                "DELETE" => app.delete(path, t).await,
                _ => app.put(path, t, json!({"level": "collaborator"})).await,
            }
        };
        let (answer, waited) = while_another_writer_holds(&app, &first, take_other, send).await;
        assert!(answer.status.is_success(), "{what}: {} {}", answer.status, answer.text);
        assert!(waited, "{what}: done while the member's row was held by another writer");
    }
    assert_eq!(app.count("SELECT count(*) FROM groups WHERE name = 'ordered'").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM projects WHERE id = 'PGONE'").await, 0);
    let members = app.get("/api/v1/projects/PORD/members", t).await.expect(200).json();
    assert!(members.to_string().contains("collaborator"), "{members}");
}

/// An import takes its rows' accounts in id order, whatever the rows'
/// order: against a writer that takes them in id order too (as a role's
/// deletion does), it waits instead of deadlocking. Taken in the rows'
/// order, the import held the second account and waited for the first
/// while the other writer held the first and waited for the second: one
/// of the two was aborted (409 `concurrent_update`).
#[tokio::test]
async fn an_import_takes_its_accounts_in_id_order() {
    let app = spawn_app().await;
    let t = &app.admin_token;
    let mut made = Vec::new();
    for name in ["ima", "imb"] {
        let id: uuid::Uuid = app.create_user(name, json!({})).await["id"].as_str().expect("id").parse().expect("uuid");
        made.push((id, name));
    }
    made.sort();
    let [(low, low_name), (high, high_name)] = [made[0], made[1]];

    let rows =
        json!([{"username": high_name, "first_name": "Imported"}, {"username": low_name, "first_name": "Imported"}]);
    let import = app.exchange("import", app.client.post(app.url("/api/v1/import/users")).bearer_auth(t).json(&rows));
    let (imported, _) = while_another_writer_holds(
        &app,
        &format!("SELECT id FROM users WHERE id = '{low}' FOR NO KEY UPDATE"),
        &format!("SELECT id FROM users WHERE id = '{high}' FOR NO KEY UPDATE"),
        import,
    )
    .await;
    let report = imported.expect(200).json();
    assert_eq!(report["summary"]["updated"], 2, "{report}");
    for name in [low_name, high_name] {
        assert_eq!(app.get(&format!("/api/v1/users/{name}"), t).await.expect(200).json()["first_name"], "Imported");
    }
}

/// Wherever a username is accepted, the user's id is too (the data
/// tracker addresses users by UUID), with the same rules.
#[tokio::test]
async fn users_are_addressed_by_id_too() {
    let app = spawn_app().await;
    let bob_id = app.create_user("bob", json!({})).await["id"].as_str().expect("id").to_string();
    let bob = app.login("bob", PASSWORD).await;
    let carol = app.user("carol").await;
    let admin_id = app.get("/api/v1/users/admin", &app.admin_token).await.expect(200).json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    let path = format!("/api/v1/users/{bob_id}");
    assert_eq!(app.get(&path, &app.admin_token).await.expect(200).json()["username"], "bob");
    // Self by id is self; another user by id is not.
    app.get(&path, &bob).await.expect(200);
    app.patch(&path, &bob, json!({"first_name": "Robert"})).await.expect(200);
    assert_eq!(app.get("/api/v1/users/bob", &bob).await.expect(200).json()["first_name"], "Robert");
    app.get(&path, &carol).await.expect(403);
    app.patch(&path, &carol, json!({"first_name": "Mallory"})).await.expect(403);
    app.put(&format!("{path}/roles/UserManager"), &bob, json!({})).await.expect(403);
    // The administrator-target rule holds by id.
    app.create_user("um", json!({"roles": ["UserManager"]})).await;
    let um = app.login("um", PASSWORD).await;
    app.patch(&format!("/api/v1/users/{admin_id}"), &um, json!({"first_name": "Owned"})).await.expect(403);
    app.delete(&format!("/api/v1/users/{admin_id}"), &um).await.expect(403);
    assert_ne!(app.get("/api/v1/users/admin", &app.admin_token).await.expect(200).json()["first_name"], "Owned");
    // An unknown id is 404; a name cannot take the form of an id.
    app.get("/api/v1/users/00000000-0000-0000-0000-000000000000", &app.admin_token).await.expect(404);
    let r = app
        .post(
            "/api/v1/users",
            &app.admin_token,
            json!({"username": "11111111-2222-3333-4444-555555555555", "email": "u@example.org"}),
        )
        .await
        .expect(400);
    assert_eq!(r.code(), "reserved_username");
    // Deleting by id.
    app.delete(&path, &app.admin_token).await.expect(200);
    app.get(&path, &app.admin_token).await.expect(404);
}

/// The profile fields the data tracker keeps (affiliation, contact, ORCID
/// iD, web page) are real fields: checked, stored, shown and logged.
#[tokio::test]
async fn profile_fields_are_checked_stored_and_logged() {
    let app = spawn_app().await;
    let created = app
        .create_user(
            "ada",
            json!({"affiliation": "Analytical Engines Ltd", "orcid": "0000-0002-1825-0097", "url": "https://example.org/ada"}),
        )
        .await;
    assert_eq!(created["affiliation"], "Analytical Engines Ltd");
    assert_eq!(created["orcid"], "0000-0002-1825-0097");
    let ada = app.login("ada", PASSWORD).await;
    // The user edits their own profile; an ORCID with an X check digit is fine.
    let me = app
        .patch("/api/v1/users/me", &ada, json!({"contact": "+46 8 000 00 00", "orcid": "0000-0002-9079-593x"}))
        .await
        .expect(200)
        .json();
    assert_eq!((me["contact"].clone(), me["orcid"].clone()), (json!("+46 8 000 00 00"), json!("0000-0002-9079-593X")));
    // Bad values name their field and change nothing.
    for (body, field) in [
        (json!({"orcid": "0000-0002-1825-0098"}), "orcid"),
        (json!({"url": "javascript:alert(1)"}), "url"),
        (json!({"url": "https:///nohost"}), "url"),
        (json!({"affiliation": "x".repeat(201)}), "affiliation"),
    ] {
        let r = app.patch("/api/v1/users/me", &ada, body).await.expect(422);
        assert_eq!(r.json()["error"]["details"]["field"], field);
    }
    let after = app.get("/api/v1/users/ada", &app.admin_token).await.expect(200).json();
    assert_eq!(after["orcid"], "0000-0002-9079-593X");
    assert_eq!(after["url"], "https://example.org/ada");
    // Empty clears a field; the change log has before and after.
    app.patch("/api/v1/users/me", &ada, json!({"url": ""})).await.expect(200);
    let log = app.get("/api/v1/users/ada/log", &app.admin_token).await.expect(200).json();
    let entries = log["items"].as_array().or_else(|| log.as_array()).cloned().unwrap_or_default();
    assert!(
        entries.iter().any(|e| e["changes"]["url"] == json!({"before": "https://example.org/ada", "after": ""})),
        "{log}"
    );
}

/// The published password policy is the one applied: its lengths hold at
/// the edges, and each refusal it lists is the code a password breaking
/// that rule gets.
#[tokio::test]
async fn password_policy_is_the_one_applied() {
    let app = spawn_app().await;
    let policy = app.send(Method::GET, "/api/v1/password-policy", &Auth::None, None).await.expect(200).json();
    let min = policy["min_length"].as_u64().expect("min") as usize;
    let max = policy["max_length"].as_u64().expect("max") as usize;
    let codes: Vec<&str> =
        policy["refused"].as_array().expect("refused").iter().map(|r| r["code"].as_str().expect("code")).collect();
    let strong = |n: usize| -> String { "Ql7#vX2!mZ9@rT4$kW8%".chars().cycle().take(n).collect() };
    let breaking = [
        ("password_too_short", strong(min - 1)),
        ("password_too_long", strong(max + 1)),
        ("password_too_common", "1q2w3e4r5t6y7u8i9o0p".to_string()),
        ("password_contains_identity", format!("{}-policy-user-x", strong(min))),
        ("password_too_weak", "a".repeat(min)),
    ];
    assert_eq!(codes, breaking.iter().map(|(c, _)| *c).collect::<Vec<_>>());
    for (i, (code, pw)) in breaking.iter().enumerate() {
        let name = if *code == "password_contains_identity" { "policy-user-x".to_string() } else { format!("p{i}") };
        let body = json!({"username": name, "email": format!("{name}@example.org"), "password": pw});
        let r = app.post("/api/v1/users", &app.admin_token, body).await.expect(422);
        assert_eq!(r.code(), *code);
    }
    // The edges themselves are fine.
    for (i, n) in [min, max].into_iter().enumerate() {
        let body =
            json!({"username": format!("edge{i}"), "email": format!("edge{i}@example.org"), "password": strong(n)});
        app.post("/api/v1/users", &app.admin_token, body).await.expect(201);
    }
}

/// The user list as operators use it: filters, full-name search, sort both
/// ways with keyset pages, the total, and the CSV export.
#[tokio::test]
async fn user_directory_filters_sorts_counts_and_exports() {
    let app = spawn_app().await;
    let t = app.admin_token.clone();
    app.create_user("alice", json!({"first_name": "Alice", "last_name": "Liddell", "verified": true})).await;
    app.create_user("bob", json!({"email": "bob@other.example", "first_name": "=HYPERLINK(\"x\")"})).await;
    app.create_user("carol", json!({"roles": ["UserManager"]})).await;
    app.create_user("dave", json!({"enabled": false})).await;
    app.post("/api/v1/groups", &t, json!({"name": "readers"})).await.expect(201);
    app.put("/api/v1/users/bob/groups/readers", &t, json!(null)).await.expect(200);
    app.post("/api/v1/projects", &t, json!({"id": "PX", "name": "PX"})).await.expect(201);
    app.put("/api/v1/projects/PX/members/carol", &t, json!({"level": "member"})).await.expect(200);
    app.login("carol", PASSWORD).await;
    app.login("alice", PASSWORD).await;
    for _ in 0..5 {
        app.login_full("dave", "a wrong but long passphrase").await;
    }
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["items"].as_array().expect("items").iter().map(|u| u["username"].as_str().expect("u").to_string()).collect()
    };
    let get = |q: &str| {
        let path = format!("/api/v1/users?{q}");
        let app = &app;
        let t = t.clone();
        async move { app.get(&path, &t).await.expect(200).json() }
    };
    // Full-name search, email, verified, role, group, project, locked.
    assert_eq!(names(&get("q=alice%20liddell").await), ["alice"]);
    assert_eq!(names(&get("email=other.example").await), ["bob"]);
    assert_eq!(names(&get("verified=true").await), ["admin", "alice"]);
    assert_eq!(names(&get("role=UserManager").await), ["carol"]);
    assert_eq!(names(&get("group=readers").await), ["bob"]);
    assert_eq!(names(&get("project=px").await), ["admin", "carol"]);
    assert_eq!(names(&get("locked=false&enabled=true&role=UserManager").await), ["carol"]);
    // Totals count every page.
    let page = get("limit=2").await;
    assert_eq!((page["total"].as_i64(), names(&page).len()), (Some(5), 2));
    assert_eq!(get("project=PX").await["total"], 2);
    // Sorted by last login, most recent first, never last; by creation, oldest first; pages do not overlap.
    let recent = names(&get("sort=-last_login").await);
    assert_eq!(recent[..3], ["alice", "carol", "admin"]);
    let created = names(&get("sort=created_at").await);
    assert_eq!(created, ["admin", "alice", "bob", "carol", "dave"]);
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let q = if cursor.is_empty() {
            "sort=-created_at&limit=2".into()
        } else {
            format!("sort=-created_at&limit=2&cursor={cursor}")
        };
        let p = get(&q).await;
        paged.extend(names(&p));
        match p["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(paged, ["dave", "carol", "bob", "alice", "admin"]);
    let bad = app.get("/api/v1/users?sort=shoe_size", &t).await.expect(400);
    assert_eq!(bad.json()["error"]["details"]["field"], "sort");
    // CSV: every matching user, one row each, no secret, formulas defused.
    let csv_text = app.get("/api/v1/users?format=csv&enabled=true", &t).await.expect(200);
    assert!(csv_text.headers["content-type"].to_str().expect("ct").starts_with("text/csv"));
    let mut rd = csv::Reader::from_reader(csv_text.text.as_bytes());
    let header: Vec<String> = rd.headers().expect("header").iter().map(String::from).collect();
    assert_eq!(header, registrar::api::users::EXPORT_COLUMNS);
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 4, "enabled users only");
    let bob = rows.iter().find(|r| &r[1] == "bob").expect("bob");
    assert_eq!(&bob[3], "'=HYPERLINK(\"x\")");
    let carol = rows.iter().find(|r| &r[1] == "carol").expect("carol");
    assert_eq!(&carol[12], "UserManager");
    assert!(!csv_text.text.contains("argon2"));
    // Groups and projects: the same search, a project's groups, totals.
    let groups = app.get("/api/v1/groups?q=READ", &t).await.expect(200).json();
    assert_eq!((groups["total"].as_u64(), groups["items"][0]["name"].as_str()), (Some(1), Some("readers")));
    let of_px = app.get("/api/v1/groups?project=px", &t).await.expect(200).json();
    assert_eq!(of_px["total"], 3, "PX_owner, PX_member, PX_collaborator");
    app.post("/api/v1/projects", &t, json!({"id": "QY", "name": "Quarry", "pi": "Dr Liddell"})).await.expect(201);
    let found = app.get("/api/v1/projects?q=liddell", &t).await.expect(200).json();
    assert_eq!((found["total"].as_u64(), found["items"][0]["id"].as_str()), (Some(1), Some("QY")));
    app.get("/api/v1/projects?colour=red", &t).await.expect(400);
}

/// A rename: sessions and keys carry on, the log keeps the history, the old
/// name answers who it became and stays the user's.
#[tokio::test]
async fn renames_keep_sessions_keys_and_history() {
    let app = spawn_app().await;
    let t = app.admin_token.clone();
    let token = app.user("oldname").await;
    let key = app.post("/api/v1/users/me/api-keys", &token, json!({"name": "k"})).await.expect(201).json()["key"]
        .as_str()
        .expect("key")
        .to_string();
    app.patch("/api/v1/users/me", &token, json!({"first_name": "Before"})).await.expect(200);
    // Not one's own, not without USER_MANAGEMENT, not to a taken or invalid name.
    app.patch("/api/v1/users/oldname", &token, json!({"username": "mine"})).await.expect(403);
    app.create_user("other", json!({})).await;
    app.patch("/api/v1/users/oldname", &t, json!({"username": "OTHER"})).await.expect(409);
    app.patch("/api/v1/users/oldname", &t, json!({"username": "bad name"})).await.expect(422);
    let r = app.patch("/api/v1/users/oldname", &t, json!({"username": "newname"})).await.expect(200);
    assert_eq!(r.json()["username"], "newname");
    // The same session and key work, as the new name.
    assert_eq!(app.get("/api/v1/users/me", &token).await.expect(200).json()["username"], "newname");
    assert_eq!(app.get("/api/v1/users/me", &key).await.expect(200).json()["username"], "newname");
    app.login("newname", PASSWORD).await;
    // The old name says what it became, on every API; nobody else may take it.
    let r = app.get("/api/v1/users/oldname", &t).await.expect(404);
    assert_eq!(r.code(), "user_renamed");
    assert!(r.json()["error"]["message"].as_str().expect("m").contains("newname"));
    app.get("/xapi/users/oldname", &t).await.expect(404);
    let taken =
        app.post("/api/v1/users", &t, json!({"username": "OldName", "email": "o@example.org", "password": PASSWORD}));
    assert_eq!(taken.await.expect(409).code(), "username_taken");
    app.patch("/api/v1/users/other", &t, json!({"username": "oldname"})).await.expect(409);
    // The change log keeps both: the rename, and the earlier entries as they were.
    let log = app.get("/api/v1/users/newname/log", &t).await.expect(200).json();
    let items = log["items"].as_array().expect("items");
    let renamed = app.get("/api/v1/users/newname/log?action=user.renamed", &t).await.expect(200).json();
    assert_eq!(renamed["items"][0]["changes"]["username"], json!({"before": "oldname", "after": "newname"}));
    assert!(items.iter().any(|e| e["action"] == "user.updated" && e["actor_username"] == "oldname"));
    // The user may take the old name back.
    app.patch("/api/v1/users/newname", &t, json!({"username": "oldname"})).await.expect(200);
    app.get("/api/v1/users/oldname", &t).await.expect(200);
    assert_eq!(app.get("/api/v1/users/newname", &t).await.expect(404).code(), "user_renamed");
    // A user manager renames no administrator.
    app.create_user("um", json!({"roles": ["UserManager"]})).await;
    let um = app.login("um", PASSWORD).await;
    app.patch("/api/v1/users/admin", &um, json!({"username": "root"})).await.expect(403);

    // Groups: members and resource permissions follow the new name; a
    // project's groups keep theirs.
    app.post("/api/v1/groups", &t, json!({"name": "team"})).await.expect(201);
    app.put("/api/v1/users/oldname/groups/team", &t, json!(null)).await.expect(200);
    let perms = json!({"permissions": [{"resource_type": "model", "resource_id": "m1", "method": "get"}]});
    app.put("/api/v1/groups/team/permissions", &t, perms).await.expect(200);
    let g = app.patch("/api/v1/groups/team", &t, json!({"name": "crew", "display_name": "The crew"})).await.expect(200);
    assert_eq!((g.json()["name"].as_str(), g.json()["members"].as_i64()), (Some("crew"), Some(1)));
    assert_eq!(app.get("/api/v1/users/oldname/groups", &t).await.json()["items"], json!(["crew"]));
    assert_eq!(app.get("/api/v1/groups/crew/permissions", &t).await.json()["total"], 1);
    app.get("/api/v1/groups/team", &t).await.expect(404);
    assert_eq!(app.log_actions("crew").await, ["group.renamed"]);
    app.post("/api/v1/projects", &t, json!({"id": "PR", "name": "PR"})).await.expect(201);
    let r = app.patch("/api/v1/groups/PR_owner", &t, json!({"name": "bosses"})).await.expect(409);
    assert_eq!(r.code(), "project_group");
    app.patch("/api/v1/groups/crew", &t, json!({"name": "PR_member"})).await.expect(422);
}

/// Custom roles: built by administrators from the permission list (never
/// ADMIN), granted like the built-in ones, and a change to one reaches its
/// holders at once.
#[tokio::test]
async fn custom_roles_are_built_granted_changed_and_deleted() {
    let app = spawn_app().await;
    let t = app.admin_token.clone();
    app.create_user("um", json!({"roles": ["UserManager"]})).await;
    let um = app.login("um", PASSWORD).await;
    let holder = app.user("holder").await;
    let role = json!({"name": "Auditor", "description": "reads the directory", "permissions": ["USER_SEARCH", "USER_MANAGEMENT"]});
    app.post("/api/v1/roles", &um, role.clone()).await.expect(403);
    for (bad, code) in [
        (json!({"name": "Boss", "permissions": ["ADMIN"]}), "invalid_permission"),
        (json!({"name": "Boss", "permissions": ["FLY"]}), "invalid_permission"),
        (json!({"name": "9lives", "permissions": []}), "invalid_role_name"),
    ] {
        assert_eq!(app.post("/api/v1/roles", &t, bad).await.expect(422).code(), code);
    }
    let made = app.post("/api/v1/roles", &t, role.clone()).await.expect(201).json();
    assert_eq!(
        (made["builtin"].as_bool(), made["permissions"].clone()),
        (Some(false), json!(["USER_SEARCH", "USER_MANAGEMENT"]))
    );
    app.post("/api/v1/roles", &t, json!({"name": "AUDITOR", "permissions": []})).await.expect(409);
    // Granted like any role (a user manager may grant it); it works at once.
    app.get("/api/v1/users", &holder).await.expect(403);
    app.put("/api/v1/users/holder/roles/Auditor", &um, json!(null)).await.expect(200);
    app.get("/api/v1/users", &holder).await.expect(200);
    // Narrowed: the holder's cached token loses USER_MANAGEMENT at once.
    app.patch("/api/v1/roles/Auditor", &t, json!({"permissions": ["USER_SEARCH"]})).await.expect(200);
    app.get("/api/v1/users", &holder).await.expect(403);
    app.get("/api/v1/user", &holder).await.expect(200);
    // Built-in roles stay as they are; deleting a custom one takes it from its holders.
    assert_eq!(
        app.patch("/api/v1/roles/UserManager", &t, json!({"permissions": []})).await.expect(409).code(),
        "builtin_role"
    );
    app.delete("/api/v1/roles/Administrator", &t).await.expect(409);
    let gone = app.delete("/api/v1/roles/Auditor", &t).await.expect(200).json();
    assert_eq!(gone["name"], "Auditor");
    app.get("/api/v1/user", &holder).await.expect(403);
    assert_eq!(app.get("/api/v1/users/holder/roles", &t).await.json()["items"], json!([]));
    assert_eq!(app.log_actions("Auditor").await, ["role.created", "role.updated", "role.deleted"]);
    app.delete("/api/v1/roles/Auditor", &t).await.expect(404);
}

/// Attack review of the directory features: forged and mismatched cursors,
/// the change log's `actor` across renames and reused names, fields named
/// in every refusal without the value, a wrong password never ignored, and
/// custom roles in the data tracker's view.
#[tokio::test]
async fn directory_review_findings() {
    use base64::Engine;
    let app = spawn_app().await;
    let t = app.admin_token.clone();
    for n in ["ann", "ben", "cat"] {
        app.create_user(n, json!({})).await;
    }
    // A cursor works only with the sort it was made for; a forged one is a 400, never a 500.
    let page = app.get("/api/v1/users?limit=1", &t).await.expect(200).json();
    let by_name = page["next_cursor"].as_str().expect("cursor").to_string();
    app.get(&format!("/api/v1/users?limit=1&sort=created_at&cursor={by_name}"), &t).await.expect(400);
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    for forged in [
        b64("created_at\nbob\n00000000-0000-0000-0000-000000000000"),
        b64("last_login\n2020-13-45T00:00:00Z\n00000000-0000-0000-0000-000000000000"),
        b64("created_at\n\n00000000-0000-0000-0000-000000000000"),
        // A leap second: chrono reads it, PostgreSQL does not (was a 500).
        b64("created_at\n2026-06-30T23:59:60.5Z\n00000000-0000-0000-0000-000000000000"),
        b64("last_login\n9999-12-31T23:59:60.999Z\n00000000-0000-0000-0000-000000000000"),
    ] {
        for sort in ["created_at", "last_login", "username"] {
            let r = app.get(&format!("/api/v1/users?sort={sort}&cursor={forged}"), &t).await;
            assert_eq!(r.status.as_u16(), 400, "{sort}: {}", r.text);
        }
    }
    // `actor` by name: the user who has or had it, across a rename; a reused name is someone else.
    let ghost = app.user("ghost").await;
    app.patch("/api/v1/users/me", &ghost, json!({"affiliation": "Before"})).await.expect(200);
    app.patch("/api/v1/users/ghost", &t, json!({"username": "ghost2"})).await.expect(200);
    app.patch("/api/v1/users/me", &ghost, json!({"affiliation": "After"})).await.expect(200);
    let by_old = app.get("/api/v1/admin/change-log?actor=ghost&action=user.updated", &t).await.expect(200).json();
    let by_new = app.get("/api/v1/admin/change-log?actor=ghost2&action=user.updated", &t).await.expect(200).json();
    assert_eq!(by_old["items"].as_array().expect("items").len(), 2, "both edits, before and after the rename");
    assert_eq!(by_new["items"], by_old["items"]);
    // Fields are named; values are not repeated.
    for (body, field) in [
        (json!({"username": "me", "email": "x@example.org"}), "username"),
        (json!({"username": "ok-name", "email": "nope"}), "email"),
        (json!({"username": "ok-name", "email": "ok@example.org", "password": "short"}), "password"),
    ] {
        let r = app.post("/api/v1/users", &t, body).await;
        assert_eq!(r.json()["error"]["details"]["field"], field, "{}", r.text);
    }
    let secret = "Sup3rSecretHunter2XYZ";
    let r = app.post("/api/v1/roles", &t, json!({"name": "Leaky", "permissions": [secret]})).await.expect(422);
    assert!(!r.text.contains(secret), "{}", r.text);
    let r = app.get("/api/v1/users?q=a&q=b", &t).await.expect(400);
    assert_eq!(r.json()["error"]["details"]["field"], "q");
    let r =
        app.put("/api/v1/users/me/password", &ghost, json!({"current_password": PASSWORD, "new_password": "x"})).await;
    assert_eq!(r.expect(422).json()["error"]["details"]["field"], "new_password");
    // A wrong current password is refused even right after a login.
    let fresh = app.login("ann", PASSWORD).await;
    let r = app
        .post("/api/v1/users/me/api-keys", &fresh, json!({"name": "k", "current_password": "not the password at all"}))
        .await;
    assert_eq!(r.expect(403).code(), "wrong_password");
    // The data tracker reports the types a custom role grants.
    app.post("/api/v1/roles", &t, json!({"name": "Managers2", "permissions": ["USER_MANAGEMENT"]})).await.expect(201);
    app.put("/api/v1/users/ben/roles/Managers2", &t, json!(null)).await.expect(200);
    let ben = app.login("ben", PASSWORD).await;
    let me = app.get("/api/v1/user/me", &ben).await.expect(200).json();
    assert_eq!(me["user"]["permissions"], json!(["USER_MANAGEMENT"]));
}

/// Bulk import: the dry run reports exactly what the real run then does;
/// all-or-nothing writes nothing when a row is refused; per-row skips it;
/// an export imports back unchanged.
#[tokio::test]
async fn import_dry_run_matches_the_real_run() {
    let app = spawn_app().await;
    let t = app.admin_token.clone();
    app.create_user("existing", json!({"first_name": "Old"})).await;
    let rows = json!([
        {"username": "new1", "email": "new1@example.org", "first_name": "New", "roles": ["UserManager"]},
        {"username": "existing", "first_name": "Renewed", "affiliation": "Uni"},
        {"username": "new2", "email": "new2@example.org", "verified": true},
        {"username": "bad one", "email": "bad@example.org"},
        {"username": "nomail"},
    ]);
    let post = |q: &str, body: serde_json::Value| {
        let url = app.url(&format!("/api/v1/import/users?{q}"));
        let rb = app.client.post(url).bearer_auth(&t).json(&body);
        let app = &app;
        async move { app.exchange("import", rb).await }
    };
    let before = app.count("SELECT count(*) FROM users").await;
    let log_before = app.count("SELECT count(*) FROM change_log").await;
    // Dry run, per row: the report, nothing written.
    let dry = post("dry_run=true&mode=per_row", rows.clone()).await.expect(200).json();
    assert_eq!((dry["dry_run"].as_bool(), dry["applied"].as_bool()), (Some(true), Some(false)));
    assert_eq!(dry["summary"], json!({"created": 2, "updated": 1, "unchanged": 0, "refused": 2}));
    assert_eq!(dry["rows"][1]["changed"], json!(["first_name", "affiliation"]));
    assert_eq!(
        (dry["rows"][3]["error"]["code"].as_str(), dry["rows"][3]["error"]["field"].as_str()),
        (Some("invalid_username"), Some("username"))
    );
    assert_eq!(dry["rows"][4]["error"]["field"], "email");
    assert_eq!(app.count("SELECT count(*) FROM users").await, before);
    assert_eq!(app.count("SELECT count(*) FROM change_log").await, log_before, "a dry run logs nothing");
    // All or nothing with refused rows: 422 with the same report, nothing written.
    let all = post("", rows.clone()).await.expect(422).json();
    assert_eq!(all["error"]["code"], "import_refused");
    assert_eq!(all["error"]["details"]["report"]["rows"], dry["rows"]);
    assert_eq!(app.count("SELECT count(*) FROM users").await, before);
    // The real run per row does what the dry run said.
    let real = post("mode=per_row", rows.clone()).await.expect(200).json();
    assert_eq!(real["applied"], true);
    assert_eq!(real["rows"], dry["rows"]);
    assert_eq!(app.count("SELECT count(*) FROM users").await, before + 2);
    let new1 = app.get("/api/v1/users/new1", &t).await.expect(200).json();
    assert_eq!((new1["first_name"].as_str(), new1["roles"].clone()), (Some("New"), json!(["UserManager"])));
    assert_eq!(app.get("/api/v1/users/existing", &t).await.json()["affiliation"], "Uni");
    assert_eq!(app.log_actions(new1["id"].as_str().expect("id")).await, ["user.created"]);
    // Again: nothing to do.
    let again = post("mode=per_row&dry_run=true", rows).await.expect(200).json();
    assert_eq!(again["summary"], json!({"created": 0, "updated": 0, "unchanged": 3, "refused": 2}));
    // CSV: an export imports back unchanged; an unknown column is refused by name.
    let csv_text = app.get("/api/v1/users?format=csv", &t).await.expect(200).text;
    let rb = app
        .client
        .post(app.url("/api/v1/import/users?dry_run=true"))
        .bearer_auth(&t)
        .header("Content-Type", "text/csv")
        .body(csv_text);
    let back = app.exchange("import csv", rb).await.expect(200).json();
    assert_eq!(back["summary"]["unchanged"], back["rows"].as_array().expect("rows").len());
    let rb = app
        .client
        .post(app.url("/api/v1/import/users"))
        .bearer_auth(&t)
        .header("Content-Type", "text/csv")
        .body("username,shoe_size\nx,42\n");
    assert_eq!(app.exchange("bad csv", rb).await.expect(400).code(), "unknown_column");
    let csv_post = |body: String| {
        app.client.post(app.url("/api/v1/import/users")).bearer_auth(&t).header("Content-Type", "text/csv").body(body)
    };
    let dup = csv_post("username,username\nx,admin\n".into());
    assert_eq!(app.exchange("duplicate column", dup).await.expect(400).code(), "duplicate_column");
    // A formula-looking name survives the export's quoting and the import.
    app.patch("/api/v1/users/existing", &t, json!({"first_name": "=SUM(1)"})).await.expect(200);
    let csv_text = app.get("/api/v1/users?format=csv", &t).await.expect(200).text;
    assert!(csv_text.contains("'=SUM(1)"));
    let back = app.exchange("import formula", csv_post(csv_text)).await.expect(200).json();
    assert_eq!(back["summary"]["updated"], 0, "{back}");
    assert_eq!(app.get("/api/v1/users/existing", &t).await.json()["first_name"], "=SUM(1)");
    // Only USER_MANAGEMENT imports; a user manager cannot import an administrator.
    let plain = app.user("plain").await;
    let rb = app.client.post(app.url("/api/v1/import/users")).bearer_auth(&plain).json(&json!([{"username": "x"}]));
    app.exchange("plain import", rb).await.expect(403);
    app.create_user("mgr", json!({"roles": ["UserManager"]})).await;
    let um = app.login("mgr", PASSWORD).await;
    let body = json!([{"username": "boss", "email": "boss@example.org", "roles": ["Administrator"]}]);
    let rb = app.client.post(app.url("/api/v1/import/users?mode=per_row")).bearer_auth(&um).json(&body);
    let r = app.exchange("um import", rb).await.expect(200).json();
    assert_eq!(
        (r["rows"][0]["outcome"].as_str(), r["rows"][0]["error"]["code"].as_str()),
        (Some("refused"), Some("forbidden"))
    );
    app.get("/api/v1/users/boss", &t).await.expect(404);
}
