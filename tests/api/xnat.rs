//! The XNAT-compatible API over HTTP: `/xapi/users`, the login handshakes,
//! `/data` users, projects, members and access requests.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

fn basic(user: &str, pw: &str) -> Auth {
    Auth::Basic(user.into(), pw.into())
}

fn admin() -> Auth {
    basic(ADMIN, ADMIN_PASSWORD)
}

async fn call(app: &TestApp, m: Method, path: &str, auth: &Auth, body: Option<Value>) -> Resp {
    app.send(m, path, auth, body).await
}

fn jsession_of(r: &Resp) -> String {
    let c = r.headers.get("set-cookie").expect("set-cookie").to_str().expect("ascii");
    assert!(c.starts_with("JSESSIONID=") && c.contains("HttpOnly"), "{c}");
    c.split(';').next().expect("pair").split_once('=').expect("kv").1.to_string()
}

#[tokio::test]
async fn xapi_users_every_operation() {
    let app = spawn_app().await;
    let a = admin();
    // Create (XNAT camelCase), 201 with the secured user object.
    let body = json!({"username": "xena", "email": "xena@example.org", "firstName": "Xena", "lastName": "W",
                      "password": PASSWORD, "enabled": true, "verified": false});
    let u = call(&app, Method::POST, "/xapi/users", &a, Some(body)).await.expect(201).json();
    assert_eq!(u["username"], "xena");
    assert_eq!(u["firstName"], "Xena");
    assert!(u["id"].is_i64());
    assert!(u["password"].is_null() && u["salt"].is_null());
    assert_eq!(u["secured"], true);
    assert_eq!(u["authorization"]["failedLoginAttempts"], 0);
    // Duplicate: 409.
    let dup = json!({"username": "XENA", "email": "other@example.org", "password": PASSWORD});
    call(&app, Method::POST, "/xapi/users", &a, Some(dup)).await.expect(409);
    // List, profiles, current, one profile, one user.
    let names = call(&app, Method::GET, "/xapi/users?format=json", &a, None).await.expect(200).json();
    assert_eq!(names, json!(["admin", "xena"]));
    let profiles = call(&app, Method::GET, "/xapi/users/profiles", &a, None).await.expect(200).json();
    assert_eq!(profiles.as_array().expect("list").len(), 2);
    assert!(profiles[1]["lastModified"].is_string());
    call(&app, Method::GET, "/xapi/users/current", &a, None).await.expect(200);
    let p = call(&app, Method::GET, "/xapi/users/profile/xena", &a, None).await.expect(200).json();
    assert_eq!(p["email"], "xena@example.org");
    call(&app, Method::GET, "/xapi/users/xena", &a, None).await.expect(200);
    call(&app, Method::GET, "/xapi/users/nobody", &a, None).await.expect(404);
    // Update: 200, then the same again: 304.
    let up = json!({"firstName": "Xenia", "email": "xena@example.org"});
    let r = call(&app, Method::PUT, "/xapi/users/xena", &a, Some(up.clone())).await.expect(200);
    assert_eq!(r.json()["firstName"], "Xenia");
    let r = call(&app, Method::PUT, "/xapi/users/xena", &a, Some(up)).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    // A whole XNAT user sent back is fine; a field XNAT does not have is
    // refused by name (the native API's `first_name` here), changing nothing.
    let mut whole = call(&app, Method::GET, "/xapi/users/xena", &a, None).await.expect(200).json();
    whole["lastName"] = json!("Warrior");
    whole["salt"] = json!("ignored");
    call(&app, Method::PUT, "/xapi/users/xena", &a, Some(whole)).await.expect(200);
    let r = call(&app, Method::PUT, "/xapi/users/xena", &a, Some(json!({"first_name": "X"}))).await.expect(400);
    assert_eq!(
        (r.code(), r.json()["error"]["details"]["field"].clone()),
        ("unknown_field".into(), json!("first_name"))
    );
    assert_eq!(call(&app, Method::GET, "/xapi/users/xena", &a, None).await.json()["firstName"], "Xenia");
    // Enabled / verified flags.
    assert_eq!(call(&app, Method::GET, "/xapi/users/xena/enabled", &a, None).await.expect(200).json(), json!(true));
    assert_eq!(
        call(&app, Method::PUT, "/xapi/users/xena/verified/true", &a, None).await.expect(200).json(),
        json!(true)
    );
    assert_eq!(call(&app, Method::GET, "/xapi/users/xena/verified", &a, None).await.expect(200).json(), json!(true));
    call(&app, Method::PUT, "/xapi/users/xena/enabled/maybe", &a, None).await.expect(400);
    // Sessions: active, per user, invalidate (DELETE answers 200).
    let xt = app.login("xena", PASSWORD).await;
    let active = call(&app, Method::GET, "/xapi/users/active", &a, None).await.expect(200).json();
    assert_eq!(active["xena"]["count"], 1);
    let ids = call(&app, Method::GET, "/xapi/users/active/xena", &a, None).await.expect(200).json();
    assert_eq!(ids.as_array().expect("ids").len(), 1);
    let gone = call(&app, Method::DELETE, "/xapi/users/active/xena", &a, None).await.expect(200).json();
    assert_eq!(gone, ids);
    app.get("/api/v1/users/me", &xt).await.expect(401);
    assert_eq!(call(&app, Method::DELETE, "/xapi/users/active/xena", &a, None).await.expect(200).json(), json!([]));
    // Roles: many (200), partial (202 naming the failure), one, delete one (200).
    let r = call(&app, Method::PUT, "/xapi/users/xena/roles", &a, Some(json!(["UserManager", "Non-Expiring"])))
        .await
        .expect(200);
    assert_eq!(r.json(), json!([]));
    let r = call(&app, Method::DELETE, "/xapi/users/xena/roles", &a, Some(json!(["Non-Expiring", "Wizard"])))
        .await
        .expect(202);
    assert_eq!(r.json(), json!(["Wizard"]));
    assert_eq!(
        call(&app, Method::GET, "/xapi/users/xena/roles", &a, None).await.expect(200).json(),
        json!(["UserManager"])
    );
    call(&app, Method::PUT, "/xapi/users/xena/roles/Wizard", &a, None).await.expect(404);
    call(&app, Method::DELETE, "/xapi/users/xena/roles/UserManager", &a, None).await.expect(200);
    // Groups: many with a partial failure (202), one, delete one (200).
    app.post("/api/v1/projects", &app.admin_token, json!({"id": "XP", "name": "X project"})).await.expect(201);
    let r = call(&app, Method::PUT, "/xapi/users/xena/groups", &a, Some(json!(["XP_member", "no_such_group"])))
        .await
        .expect(202);
    assert_eq!(r.json(), json!(["no_such_group"]));
    call(&app, Method::PUT, "/xapi/users/xena/groups", &a, Some(json!(["XP_collaborator"]))).await.expect(200);
    assert_eq!(
        call(&app, Method::GET, "/xapi/users/xena/groups", &a, None).await.expect(200).json(),
        json!(["XP_collaborator"])
    );
    call(&app, Method::DELETE, "/xapi/users/xena/groups/XP_collaborator", &a, None).await.expect(200);
    call(&app, Method::PUT, "/xapi/users/xena/groups/XP_owner", &a, None).await.expect(200);
    let r = call(&app, Method::DELETE, "/xapi/users/xena/groups", &a, Some(json!(["XP_owner", "XP_member"])))
        .await
        .expect(202);
    assert_eq!(r.json(), json!(["XP_member"]));
    // Disable through the flag route: sessions end, login refused.
    call(&app, Method::PUT, "/xapi/users/xena/enabled/false", &a, None).await.expect(200);
    app.login_full("xena", PASSWORD).await.expect(401);
    let id = u["id"].as_i64().expect("id");
    let uuid: String = sqlx::query_scalar("SELECT id::text FROM users WHERE xdat_user_id = $1")
        .bind(id as i32)
        .fetch_one(&app.pool)
        .await
        .expect("q");
    let log = app.log_actions(&uuid).await;
    assert!(
        log.contains(&"user.created".to_string()) && log.iter().filter(|a| *a == "user.roles_changed").count() >= 3,
        "{log:?}"
    );
}

#[tokio::test]
async fn xapi_permissions_by_caller() {
    let app = spawn_app().await;
    app.create_user("plain", json!({})).await;
    app.create_user("um", json!({"roles": ["UserManager"]})).await;
    app.create_user("other", json!({})).await;
    let plain = basic("plain", PASSWORD);
    let um = basic("um", PASSWORD);
    // Anonymous: 401, never HTML: JSON on /xapi, XNAT's plain sentence on /data.
    for path in ["/xapi/users", "/xapi/users/profiles", "/xapi/users/other"] {
        let r = call(&app, Method::GET, path, &Auth::None, None).await.expect(401);
        assert_eq!(r.code(), "unauthenticated", "{path}");
    }
    for path in ["/data/users", "/data/JSESSION", "/data/pars", "/data/projects/X/users"] {
        let r = call(&app, Method::GET, path, &Auth::None, None).await.expect(401);
        assert_eq!(r.text, "The request requires user authentication", "{path}");
    }
    // Ordinary user: self yes, others and lists no.
    call(&app, Method::GET, "/xapi/users/plain", &plain, None).await.expect(200);
    call(&app, Method::GET, "/xapi/users/profile/plain", &plain, None).await.expect(200);
    call(&app, Method::PUT, "/xapi/users/plain", &plain, Some(json!({"firstName": "P"}))).await.expect(200);
    for (m, path) in [
        (Method::GET, "/xapi/users"),
        (Method::GET, "/xapi/users/profiles"),
        (Method::GET, "/xapi/users/active"),
        (Method::GET, "/xapi/users/other"),
        (Method::PUT, "/xapi/users/other/enabled/false"),
        (Method::PUT, "/xapi/users/plain/enabled/false"),
        (Method::PUT, "/xapi/users/plain/roles/UserManager"),
        (Method::DELETE, "/xapi/users/active/other"),
    ] {
        call(&app, m.clone(), path, &plain, None).await.expect(403);
    }
    // Own privileged fields: refused even when sent through PUT.
    call(&app, Method::PUT, "/xapi/users/plain", &plain, Some(json!({"admin": true}))).await.expect(403);
    // Unchanged privileged values sent back are fine (clients send whole objects).
    call(&app, Method::PUT, "/xapi/users/plain", &plain, Some(json!({"enabled": true, "firstName": "Q"})))
        .await
        .expect(200);
    // UserManager: manages users but not administrators.
    call(&app, Method::GET, "/xapi/users/profiles", &um, None).await.expect(200);
    call(&app, Method::PUT, "/xapi/users/other/verified/true", &um, None).await.expect(200);
    call(&app, Method::PUT, "/xapi/users/other/roles/Administrator", &um, None).await.expect(403);
    call(&app, Method::PUT, "/xapi/users/admin/enabled/false", &um, None).await.expect(403);
    call(&app, Method::PUT, "/xapi/users/other", &um, Some(json!({"password": "a brand new long passphrase"})))
        .await
        .expect(200);
    app.login("other", "a brand new long passphrase").await;
    // Admin: everything, but not the last admin's own flags.
    call(&app, Method::PUT, "/xapi/users/other/roles/Administrator", &admin(), None).await.expect(200);
    call(&app, Method::PUT, "/xapi/users/admin/enabled/false", &admin(), None).await.expect(403);
}

#[tokio::test]
async fn pyxnat_style_jsession_handshake() {
    let app = spawn_app().await;
    app.create_user("py", json!({})).await;
    let b = basic("py", PASSWORD);
    // Basic -> 200, the session id as text, and a JSESSIONID cookie.
    let r = call(&app, Method::GET, "/data/JSESSION", &b, None).await.expect(200);
    let sid = jsession_of(&r);
    assert_eq!(r.text, sid);
    let jar = format!("JSESSIONID={sid}");
    let with_cookie = |m: reqwest::Method, path: &str| app.client.request(m, app.url(path)).header("Cookie", &jar);
    // The cookie alone works (no password hashing on every call).
    let r = app.exchange("GET /data/auth", with_cookie(Method::GET, "/data/auth")).await.expect(200);
    assert_eq!(r.text, "User 'py' is logged in");
    // Basic + cookie: served, no new session.
    let rb = with_cookie(Method::GET, "/data/JSESSION").basic_auth("py", Some(PASSWORD));
    let r = app.exchange("GET /data/JSESSION", rb).await.expect(200);
    assert!(r.headers.get("set-cookie").is_none());
    // Logout: 200; the cookie is dead.
    app.exchange("DELETE /data/JSESSION", with_cookie(Method::DELETE, "/data/JSESSION")).await.expect(200);
    app.exchange("GET /data/auth", with_cookie(Method::GET, "/data/auth")).await.expect(401);
    // Dead cookie + valid Basic: served with a new session.
    let rb = with_cookie(Method::GET, "/data/projects?format=json").basic_auth("py", Some(PASSWORD));
    let r = app.exchange("GET /data/projects", rb).await.expect(200);
    let cookie = r.headers["set-cookie"].to_str().expect("c").to_string();
    assert!(cookie.starts_with("JSESSIONID=") && !cookie.contains(&sid));
    // Wrong password: a clean 401 in XNAT's words.
    let r =
        call(&app, Method::GET, "/data/JSESSION", &basic("py", "a wrong but long passphrase"), None).await.expect(401);
    assert_eq!(r.text, "The request requires user authentication");
}

/// Refusals are decided by the route, before any credential is used: a
/// HEAD (no route answers it) is a 405 that starts no session, a
/// percent-encoded `/data` path is refused in XNAT's words like the plain
/// one, and no refusal may be cached.
#[tokio::test]
async fn refusals_start_nothing_and_follow_the_route() {
    let app = spawn_app().await;
    app.create_user("hd", json!({})).await;
    let sessions = "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.username = 'hd'";
    let before = app.count(sessions).await;
    let r =
        app.exchange("HEAD /data/auth", app.client.head(app.url("/data/auth")).basic_auth("hd", Some(PASSWORD))).await;
    assert_eq!(r.status.as_u16(), 405);
    assert!(r.headers.get("set-cookie").is_none(), "a refused HEAD started a session");
    assert_eq!(app.count(sessions).await, before, "a refused HEAD wrote a session row");
    let wrong = {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("hd:a wrong but long passphrase"))
    };
    for path in ["/data/auth", "/%64ata/auth", "/data/JSESSION", "/d%61ta/JSESSION"] {
        let (status, body) = crate::security::raw(&app, "GET", path, Some(&wrong), None).await;
        assert_eq!((status, body.as_str()), (401, "The request requires user authentication"), "{path}");
    }
    for (m, path, auth) in [
        (Method::GET, "/data/auth", basic("hd", "a wrong but long passphrase")),
        (Method::GET, "/api/v1/users", basic("hd", PASSWORD)),
        (Method::POST, "/scim/v2/Users", Auth::Bearer(app.admin_token.clone())),
    ] {
        let r = call(&app, m.clone(), path, &auth, Some(json!({}))).await;
        assert!(r.status.is_client_error(), "{m} {path}: {}", r.status);
        assert_eq!(r.headers.get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"), "{m} {path}");
    }
    // Unrouted SCIM paths: SCIM's error however the path is spelled, never cached.
    for path in ["/scim/v2/Nope", "/sc%69m/v2/Nope"] {
        let r = app.exchange(path, app.client.get(app.url(path))).await.expect(404);
        let header = |name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(header("content-type").as_deref(), Some("application/scim+json"), "{path}");
        assert_eq!(header("cache-control").as_deref(), Some("no-store"), "{path}");
    }
}

#[tokio::test]
async fn xnatpy_style_handshake() {
    let app = spawn_app().await;
    app.create_user("xp", json!({})).await;
    // GET / never redirects.
    let r = call(&app, Method::GET, "/", &Auth::None, None).await;
    assert!(r.status == 200, "{}", r.status);
    // Version and build info.
    let v = call(&app, Method::GET, "/data/version", &Auth::None, None).await.expect(200).text;
    assert!(v.starts_with("1.8.") && v.chars().all(|c| c.is_ascii_digit() || c == '.'), "{v}");
    let bi = call(&app, Method::GET, "/xapi/siteConfig/buildInfo", &Auth::None, None).await.expect(200).json();
    assert_eq!(bi["version"], v);
    // Form login: exactly 200, session id body, JSESSIONID cookie.
    let form = |pairs: &[(&str, &str)]| {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        app.client.put(app.url("/data/services/auth")).form(&pairs)
    };
    let r =
        app.exchange("PUT /data/services/auth", form(&[("username", "xp"), ("password", PASSWORD)])).await.expect(200);
    let cookie = r.headers["set-cookie"].to_str().expect("c").to_string();
    let body = r.text.clone();
    assert!(cookie.starts_with(&format!("JSESSIONID={body}")), "{cookie} / {body}");
    let jar = format!("JSESSIONID={body}");
    let with_cookie = |m: reqwest::Method, path: &str| app.client.request(m, app.url(path)).header("Cookie", &jar);
    let r = app.exchange("GET /data/auth", with_cookie(Method::GET, "/data/auth")).await;
    assert_eq!(r.text, "User 'xp' is logged in");
    app.exchange("GET /data/JSESSION", with_cookie(Method::GET, "/data/JSESSION")).await.expect(200);
    // format=json on /xapi routes is ignored.
    app.exchange("GET /xapi/users/xp", with_cookie(Method::GET, "/xapi/users/xp?format=json")).await.expect(200);
    app.exchange("DELETE /data/JSESSION", with_cookie(Method::DELETE, "/data/JSESSION")).await.expect(200);
    // Bad logins: clean 401s, never HTML; no CSRF token needed anywhere.
    let wrong = form(&[("username", "xp"), ("password", "wrong wrong wrong wrong")]);
    app.exchange("PUT /data/services/auth", wrong).await.expect(401);
    let r = app.exchange("PUT /data/services/auth", form(&[("user", "xp")])).await.expect(400);
    assert!(r.text.starts_with('{'));
}

#[tokio::test]
async fn data_users_projects_and_members() {
    let app = spawn_app().await;
    let a = admin();
    app.create_user("mo", json!({"first_name": "Mo", "last_name": "Z"})).await;
    app.create_user("off", json!({"enabled": false})).await;
    app.create_user("ned", json!({"verified": true})).await;
    app.post("/api/v1/projects", &app.admin_token, json!({"id": "PX", "name": "Proj X", "pi": "Ada Lovelace"}))
        .await
        .expect(201);
    // Users as CSV and JSON.
    let csv_text = call(&app, Method::GET, "/data/users?format=csv", &a, None).await.expect(200).text;
    let mut rd = csv::Reader::from_reader(csv_text.as_bytes());
    assert_eq!(
        rd.headers().expect("h").iter().collect::<Vec<_>>(),
        ["xdat_user_id", "login", "firstname", "lastname", "email"]
    );
    let logins: Vec<String> = rd.records().map(|r| r.expect("row")[1].to_string()).collect();
    assert_eq!(logins, ["admin", "mo", "ned"]);
    let js = call(&app, Method::GET, "/data/users?format=json", &a, None).await.expect(200).json();
    assert_eq!(js["ResultSet"]["totalRecords"], "3");
    assert!(js["ResultSet"]["Result"][1]["xdat_user_id"].is_string());
    // Projects with column selection.
    let p = call(&app, Method::GET, "/data/projects?format=csv&columns=ID", &a, None).await.expect(200).text;
    assert_eq!(p.trim(), "ID\nPX");
    let p = call(&app, Method::GET, "/data/archive/projects?columns=ID,URI,name&format=json", &a, None)
        .await
        .expect(200)
        .json();
    assert_eq!(p["ResultSet"]["Result"][0], json!({"ID": "PX", "URI": "/data/projects/PX", "name": "Proj X"}));
    // Add with each group naming, by login, email and numeric id.
    call(&app, Method::PUT, "/data/projects/PX/users/PX_member/mo", &a, None).await.expect(200);
    call(&app, Method::PUT, "/data/projects/PX/users/collaborator/ned@example.org", &a, None).await.expect(200);
    let mo_id: i32 = sqlx::query_scalar("SELECT xdat_user_id FROM users WHERE username = 'mo'")
        .fetch_one(&app.pool)
        .await
        .expect("q");
    call(&app, Method::PUT, &format!("/data/projects/PX/users/Owners/{mo_id}"), &a, None).await.expect(200);
    // The imaging_api checks, with clear errors.
    let r = call(&app, Method::PUT, "/data/projects/PX/users/member/ghost", &a, None).await.expect(404);
    assert_eq!(r.code(), "user_not_found");
    let r = call(&app, Method::PUT, "/data/projects/PX/users/member/off", &a, None).await.expect(409);
    assert_eq!(r.code(), "user_disabled");
    call(&app, Method::PUT, "/data/projects/PX/users/janitors/mo", &a, None).await.expect(422);
    // An email with no account becomes an invitation.
    let r =
        call(&app, Method::PUT, "/data/projects/PX/users/member/someone.new@example.org", &a, None).await.expect(200);
    assert_eq!(r.json()["invitations"].as_array().expect("list").len(), 1);
    // Members as CSV and JSON.
    let csv_text = call(&app, Method::GET, "/data/projects/PX/users?format=csv", &a, None).await.expect(200).text;
    let mut rd = csv::Reader::from_reader(csv_text.as_bytes());
    let h: Vec<String> = rd.headers().expect("h").iter().map(String::from).collect();
    assert_eq!(&h[..6], ["GROUP_ID", "displayname", "login", "firstname", "lastname", "email"]);
    let rows: Vec<(String, String, String)> =
        rd.records().map(|r| r.expect("row")).map(|r| (r[0].to_string(), r[1].to_string(), r[2].to_string())).collect();
    assert!(rows.contains(&("PX_owner".into(), "Owners".into(), "mo".into())), "{rows:?}");
    assert!(rows.contains(&("PX_collaborator".into(), "Collaborators".into(), "ned".into())), "{rows:?}");
    // Remove: 200; then the member list no longer has ned.
    call(&app, Method::DELETE, "/data/projects/PX/users/collaborator/ned", &a, None).await.expect(200);
    let js = call(&app, Method::GET, "/data/projects/PX/users?format=json", &a, None).await.expect(200).json();
    assert!(!js.to_string().contains("\"ned\""));
    // Members read, outsiders don't; only owners manage.
    let ned = basic("ned", PASSWORD);
    call(&app, Method::GET, "/data/projects/PX/users", &ned, None).await.expect(403);
    call(&app, Method::PUT, "/data/projects/PX/users/member/ned", &ned, None).await.expect(403);
    let mo = basic("mo", PASSWORD);
    call(&app, Method::PUT, "/data/projects/PX/users/member/ned", &mo, None).await.expect(200);
    let access = call(&app, Method::GET, "/xapi/access/projects", &mo, None).await.expect(200).json();
    assert_eq!(access[0]["ID"], "PX");
    assert_eq!(access[0]["role"], "Owners");
}

#[tokio::test]
async fn data_pars_list_accept_decline() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    app.create_user("iris", json!({"first_name": "Iris"})).await;
    for p in ["PA", "PB"] {
        app.post(
            "/api/v1/projects",
            &owner,
            json!({"id": p, "name": format!("Project {p}"), "description": "<i>d</i>", "pi": "Dr Who"}),
        )
        .await
        .expect(201);
        app.post(
            &format!("/api/v1/projects/{p}/access-requests"),
            &owner,
            json!({"username": "iris", "level": "member"}),
        )
        .await
        .expect(201);
    }
    let iris = basic("iris", PASSWORD);
    let js = call(&app, Method::GET, "/data/pars", &iris, None).await.expect(200).json();
    let rs = &js["ResultSet"];
    assert_eq!(rs["totalRecords"], "2");
    let row = &rs["Result"][0];
    let cols: Vec<&str> = row.as_object().expect("row").keys().map(String::as_str).collect();
    for c in [
        "par_id",
        "proj_id",
        "level",
        "create_date",
        "login",
        "firstname",
        "lastname",
        "secondary_id",
        "name",
        "id",
        "description",
        "?column?",
    ] {
        assert!(cols.contains(&c), "missing {c}: {cols:?}");
    }
    assert_eq!(row["login"], "owner", "login is the inviter");
    assert_eq!(row["?column?"], "Dr Who");
    assert!(row["par_id"].is_string());
    // CSV, XML and HTML too.
    let csv_text = call(&app, Method::GET, "/data/pars?format=csv", &iris, None).await.expect(200).text;
    assert!(csv_text.starts_with(
        "par_id,proj_id,level,create_date,login,firstname,lastname,secondary_id,name,id,description,?column?"
    ));
    assert!(call(&app, Method::GET, "/data/pars?format=xml", &iris, None)
        .await
        .expect(200)
        .text
        .contains("<ResultSet"));
    let html = call(&app, Method::GET, "/data/pars?format=html", &iris, None).await.expect(200).text;
    assert!(html.contains("&lt;i&gt;d") && !html.contains("<i>"), "{html}");
    // Accept one (?accept), decline the other (?decline=true): both listed as answered.
    let id_a = rs["Result"][0]["par_id"].as_str().expect("id").to_string();
    let id_b = rs["Result"][1]["par_id"].as_str().expect("id").to_string();
    let r = call(&app, Method::PUT, &format!("/data/pars/{id_a}?accept"), &iris, None).await.expect(200).json();
    assert_eq!(r["ResultSet"]["totalRecords"], "1");
    call(&app, Method::PUT, &format!("/data/pars/{id_a}?accept=true"), &iris, None).await.expect(409);
    call(&app, Method::PUT, &format!("/data/pars/{id_b}?decline=true"), &iris, None).await.expect(200);
    assert_eq!(
        call(&app, Method::PUT, &format!("/data/pars/{id_b}"), &iris, None).await.expect(400).code(),
        "invalid_action"
    );
    call(&app, Method::PUT, &format!("/data/pars/{id_b}?accept"), &iris, None).await.expect(409);
    assert_eq!(call(&app, Method::GET, "/data/pars", &iris, None).await.json()["ResultSet"]["totalRecords"], "0");
    // The project's list (owners): approved and approval date.
    let ob = basic("owner", PASSWORD);
    let js = call(&app, Method::GET, "/data/projects/PA/pars?format=json", &ob, None).await.expect(200).json();
    let row = &js["ResultSet"]["Result"][0];
    assert_eq!(row["approved"], "true");
    assert_eq!(row["login"], "iris");
    assert!(!row["approval_date"].as_str().expect("date").is_empty());
    let js = call(&app, Method::GET, "/data/projects/PB/pars", &ob, None).await.expect(200).json();
    assert_eq!(js["ResultSet"]["Result"][0]["approved"], "false");
    call(&app, Method::GET, "/data/projects/PA/pars", &iris, None).await.expect(403);
    // Accepting made iris a member of PA only.
    call(&app, Method::GET, "/data/projects/PA/users", &iris, None).await.expect(200);
    call(&app, Method::GET, "/data/projects/PB/users", &iris, None).await.expect(403);
}
