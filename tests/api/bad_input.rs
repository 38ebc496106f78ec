//! The bad-input catalogue: every write route, every field, broken in the
//! usual ways. Each answer is a 4xx JSON error with a stable code, and the
//! database is byte-for-byte unchanged afterwards.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// A digest of every table a write could touch.
async fn snapshot(app: &TestApp) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    // Sessions: "last seen" moves by design while the admin's requests run.
    for t in [
        "users",
        "user_roles",
        "groups",
        "user_groups",
        "projects",
        "access_requests",
        "api_keys",
        "change_log",
        "oidc_identities",
        "(SELECT id, user_id, revoked_at, expires_at FROM sessions) AS",
    ] {
        let digest: Option<String> =
            sqlx::query_scalar(&format!("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {t} t"))
                .fetch_one(&app.pool)
                .await
                .expect("digest");
        out.push((t.to_string(), digest));
    }
    out
}

/// Ways to break one string field.
fn broken_values() -> Vec<(&'static str, Value)> {
    vec![
        ("number", json!(12345)),
        ("negative", json!(-1)),
        ("huge number", json!(1e300)),
        ("array", json!(["x"])),
        ("object", json!({"x": 1})),
        ("boolean", json!(true)),
        ("10 KB string", json!("x".repeat(10 * 1024))),
        ("NUL", json!("a\u{0}b")),
        ("control characters", json!("a\u{1b}[31mb\u{7}")),
    ]
}

#[tokio::test]
async fn every_write_route_rejects_bad_input_and_changes_nothing() {
    let app = spawn_app().await;
    app.create_user("victim", json!({})).await;
    app.post("/api/v1/projects", &app.admin_token, json!({"id": "BAD", "name": "Bad"})).await.expect(201);
    // (method, path, a valid body whose every field is checked)
    let routes: Vec<(Method, &str, Value)> = vec![
        (
            Method::POST,
            "/api/v1/users",
            json!({"username": "newbie", "email": "newbie@example.org", "password": PASSWORD, "first_name": "N", "last_name": "B"}),
        ),
        (
            Method::PATCH,
            "/api/v1/users/victim",
            json!({"email": "v2@example.org", "first_name": "V", "last_name": "W"}),
        ),
        (Method::PUT, "/api/v1/users/victim/password", json!({"new_password": "another long passphrase here"})),
        (Method::POST, "/api/v1/users/victim/api-keys", json!({"name": "key"})),
        (Method::POST, "/api/v1/groups", json!({"name": "grp", "display_name": "Group"})),
        (Method::POST, "/api/v1/projects", json!({"id": "NEWP", "name": "New", "description": "d", "pi": "p"})),
        (Method::PATCH, "/api/v1/projects/BAD", json!({"name": "Renamed", "description": "d", "pi": "p"})),
        (Method::PUT, "/api/v1/projects/BAD/members/victim", json!({"level": "member"})),
        (
            Method::POST,
            "/api/v1/projects/BAD/access-requests",
            json!({"email": "someone@example.org", "level": "member"}),
        ),
        (Method::POST, "/xapi/users", json!({"username": "xnew", "email": "xnew@example.org", "password": PASSWORD})),
    ];
    let before = snapshot(&app).await;
    let auth = Auth::Bearer(app.admin_token.clone());
    let mut checked = 0;
    for (method, path, base) in &routes {
        let fields: Vec<String> = base.as_object().expect("object").keys().cloned().collect();
        for field in &fields {
            for (how, value) in broken_values() {
                let mut body = base.clone();
                body[field.as_str()] = value;
                let r = app.send(method.clone(), path, &auth, Some(body)).await;
                let what = format!("{method} {path}: {field} as {how}");
                assert!(r.status.is_client_error(), "{what} gave {}: {}", r.status, r.text);
                assert!(!r.code().is_empty(), "{what}: no error code in {}", r.text);
                checked += 1;
            }
        }
        // Missing every field, an unknown field (not on XNAT bodies, which
        // ignore XNAT's extra fields by design), duplicate keys, invalid UTF-8.
        let mut raw_cases: Vec<(&str, Vec<u8>)> =
            vec![("empty object", b"{}".to_vec()), ("not JSON", b"{\"a\": ".to_vec())];
        if !path.starts_with("/xapi") {
            let mut unknown = base.clone();
            unknown["isAdmin"] = json!(true);
            raw_cases.push(("unknown field", unknown.to_string().into_bytes()));
        }
        let first = &fields[0];
        let text = base.to_string();
        let dup = text.replacen('{', &format!("{{\"{first}\": \"dup\", "), 1);
        raw_cases.push(("duplicate key", dup.into_bytes()));
        raw_cases.push((
            "invalid UTF-8",
            format!("{{\"{first}\": \"\u{0}\"}}")
                .replace('\u{0}', "\u{fffd}")
                .into_bytes()
                .into_iter()
                .map(|b| if b == 0xef { 0xff } else { b })
                .collect(),
        ));
        for (how, bytes) in raw_cases {
            let is_patch = *method == Method::PATCH && how == "empty object";
            let r = app
                .client
                .request(method.clone(), app.url(path))
                .bearer_auth(&app.admin_token)
                .header("content-type", "application/json")
                .body(bytes)
                .send()
                .await
                .expect("send");
            let status = r.status();
            let text = r.text().await.expect("text");
            if is_patch {
                // An empty PATCH is a valid no-op.
                assert!(status.is_success(), "{method} {path}: {how}: {status} {text}");
                continue;
            }
            assert!(status.is_client_error(), "{method} {path}: {how} gave {status}: {text}");
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: {how}: not JSON: {text}"));
            assert!(v["error"]["code"].is_string(), "{text}");
            checked += 1;
        }
    }
    assert_eq!(snapshot(&app).await, before, "a rejected request changed the database");
    assert!(checked > 250, "{checked}");
}

/// SQL and HTML metacharacters are data, stored and returned verbatim.
#[tokio::test]
async fn metacharacters_are_just_data() {
    let app = spawn_app().await;
    let nasty = "Robert'); DROP TABLE users;-- <script>alert(1)</script> \\ % _ \"";
    let u = app.create_user("bobby", json!({"first_name": nasty, "last_name": "O'Brien"})).await;
    assert_eq!(u["first_name"], nasty);
    let r = app.get(&format!("/api/v1/users?q={}", "%27%29%3B%20DROP"), &app.admin_token).await.expect(200);
    assert_eq!(r.json()["items"][0]["username"], "bobby");
    assert_eq!(app.count("SELECT count(*) FROM users").await, 2);
}
