//! The web console over plain HTTP, as an attacker sends it: every page
//! route refuses what its rule refuses (as pages: a redirect to the login
//! page, or a 403 page), every page POST without this browser's CSRF token
//! is refused and changes nothing, the login page's messages, `return_to`,
//! and the bulk action's preview. The real-browser flows are in
//! `web_console.rs`.

use reqwest::header::{CONTENT_TYPE, LOCATION};
use serde_json::json;

use crate::helpers::*;
use crate::security::snapshot;

/// A browser: its own cookie jar, no redirects followed.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// The CSRF token in a page's forms.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a form with a csrf field");
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("end")].to_string()
}

struct Page {
    status: u16,
    location: String,
    html: String,
    headers: reqwest::header::HeaderMap,
}

async fn get(app: &TestApp, b: &reqwest::Client, path: &str) -> Page {
    let r = b.get(app.url(path)).send().await.expect("GET");
    page(r).await
}

async fn post(app: &TestApp, b: &reqwest::Client, path: &str, form: &[(&str, &str)]) -> Page {
    let r = b.post(app.url(path)).header("Origin", &app.address).form(form).send().await.expect("POST");
    page(r).await
}

async fn page(r: reqwest::Response) -> Page {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let location = headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let html = r.text().await.expect("body");
    assert_no_secret_leak(&html);
    Page { status, location, html, headers }
}

/// Logs `username` in through the login form; the browser keeps the cookie.
async fn log_in(app: &TestApp, username: &str, password: &str) -> reqwest::Client {
    let b = browser();
    let form = get(app, &b, "/login").await;
    let p = post(
        app,
        &b,
        "/login",
        &[("csrf", &csrf_of(&form.html)), ("username", username), ("password", password), ("return_to", "/account")],
    )
    .await;
    assert_eq!((p.status, p.location.as_str()), (303, "/account"), "{username} logs in: {}", p.html);
    b
}

fn concrete(pattern: &str) -> String {
    pattern
        .replace("{username}", "victim")
        .replace("{id}", "00000000-0000-0000-0000-000000000001")
        .replace("{project}", "SWEEP")
        .replace("{group}", "SWEEP_member")
        .replace("{par_id}", "1")
        .replace("{provider}", "none")
        .replace("{name}", "app.css")
}

fn assert_page_headers(p: &Page, what: &str) {
    let csp = p.headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{what}: CSP {csp:?}");
    assert!(!csp.contains("unsafe-inline"), "{what}: CSP allows inline code: {csp}");
    assert_eq!(p.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"), "{what}");
    let kind = p.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(kind.starts_with("text/html"), "{what}: {kind}");
    let inline = ["<script>", "onclick=", "onsubmit=", "onload=", "style="];
    assert!(inline.iter().all(|i| !p.html.contains(i)), "{what}: inline script or style");
}

/// Every page route of the table: anonymous callers are sent to the login
/// page (GET) or refused (POST), ordinary users get a 403 page where the
/// rule wants a permission, and no POST without the right CSRF token —
/// none, another browser's, another session's — changes anything.
#[tokio::test]
async fn every_page_refuses_what_its_rule_refuses() {
    let app = spawn_app().await;
    app.create_user("ordinary", json!({})).await;
    app.create_user("victim", json!({})).await;
    app.post("/api/v1/projects", &app.admin_token, json!({"id": "SWEEP", "name": "Sweep"})).await.expect(201);
    let ordinary = log_in(&app, "ordinary", PASSWORD).await;
    let admin = log_in(&app, ADMIN, ADMIN_PASSWORD).await;
    let admin_csrf = csrf_of(&get(&app, &admin, "/account").await.html);
    let ordinary_csrf = csrf_of(&get(&app, &ordinary, "/account").await.html);
    let anonymous = browser();
    let before = snapshot(&app).await;
    let table = registrar::startup::route_table();
    let pages: Vec<_> = table.entries.iter().filter(|(_, p, _)| registrar::web::is_page(p)).collect();
    let (mut gets, mut posts) = (0, 0);
    for (method, pattern, rule) in &pages {
        use registrar::auth::access::Rule;
        let path = concrete(pattern);
        let needs_permission = matches!(rule, Rule::Permission(_));
        if method.as_str() == "GET" {
            gets += 1;
            let anon = get(&app, &anonymous, &path).await;
            if *rule == Rule::Public {
                assert_ne!(anon.status, 401, "GET {path}");
            } else {
                assert_eq!(anon.status, 303, "anonymous GET {path}: {}", anon.html);
                assert!(anon.location.starts_with("/login?return_to=%2F"), "GET {path} -> {}", anon.location);
            }
            let p = get(&app, &ordinary, &path).await;
            if needs_permission {
                assert_eq!(p.status, 403, "ordinary GET {path}");
                assert!(p.html.contains("Not allowed"), "GET {path}: {}", p.html);
                assert_page_headers(&p, &format!("ordinary GET {path}"));
            } else if p.status == 200 {
                assert_page_headers(&p, &format!("GET {path}"));
            }
            continue;
        }
        posts += 1;
        if *rule != Rule::Public {
            let anon = post(&app, &anonymous, &path, &[("csrf", "x")]).await;
            assert_eq!(
                (anon.status, anon.location.as_str()),
                (303, "/login?return_to=%2Faccount"),
                "anonymous POST {path}"
            );
        }
        if needs_permission {
            let p = post(&app, &ordinary, &path, &[("csrf", &ordinary_csrf)]).await;
            assert_eq!(p.status, 403, "ordinary POST {path}: {}", p.html);
        }
        // The administrator's browser, with no token, a made-up one, and
        // the ordinary user's (a token is bound to its session).
        for token in [None, Some("forged"), Some(ordinary_csrf.as_str())] {
            let form: Vec<(&str, &str)> = token.map(|t| vec![("csrf", t)]).unwrap_or_default();
            let p = post(&app, &admin, &path, &form).await;
            assert_eq!(p.status, 403, "admin POST {path} with csrf {token:?}: {}", p.html);
            assert!(p.html.contains("did not come from registrar"), "POST {path}: {}", p.html);
            assert_page_headers(&p, &format!("POST {path}"));
        }
    }
    assert!(gets >= 20 && posts >= 30, "{gets} page reads, {posts} page writes");
    // README's list of pages is the route table's.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let section =
        readme.split("## Using the web console").nth(1).expect("the section").split("\n## ").next().unwrap_or("");
    let mut listed: Vec<String> = section.lines().filter(|l| l.starts_with("| `")).map(str::to_string).collect();
    let mut table: Vec<String> =
        pages.iter().map(|(m, p, rule)| format!("| `{m}` | `{p}` | {} |", rule.describe())).collect();
    listed.sort();
    table.sort();
    assert_eq!(listed, table, "README's page list and the route table differ");
    for line in &table {
        println!("PAGE {line}");
    }
    app.settle_auth_cache().await;
    assert_eq!(snapshot(&app).await, before, "a refused page write changed the database");
    // A cross-site form post (the browser says so) is refused even with the right token.
    let r = admin
        .post(app.url("/admin/users/victim/enabled"))
        .header("Sec-Fetch-Site", "cross-site")
        .form(&[("csrf", admin_csrf.as_str()), ("enabled", "false")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    // And the right token from the right browser works.
    let p = post(&app, &admin, "/admin/users/victim/enabled", &[("csrf", &admin_csrf), ("enabled", "false")]).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/admin/users/victim?m=disabled"));
    let victim = app.get("/api/v1/users/victim", &app.admin_token).await.expect(200).json();
    assert_eq!(victim["enabled"], false);
}

/// The login page: one message for an unknown name and a wrong password,
/// the disabled account named only to whoever knows its password, the
/// lockout with its wait, and `return_to` kept to this server.
#[tokio::test]
async fn login_page_says_what_happened_without_enumeration() {
    let app = spawn_app_with(|s| s.auth.max_failed_logins = 3).await;
    app.create_user("alma", json!({})).await;
    app.create_user("dora", json!({})).await;
    app.patch("/api/v1/users/dora", &app.admin_token, json!({"enabled": false})).await.expect(200);
    let b = browser();
    let csrf = csrf_of(&get(&app, &b, "/login").await.html);
    let attempt = |user: &'static str, pw: &'static str| {
        let (b, app, csrf) = (b.clone(), &app, csrf.clone());
        async move { post(app, &b, "/login", &[("csrf", &csrf), ("username", user), ("password", pw)]).await }
    };
    let unknown = attempt("nobody", "whatever it is").await;
    let wrong = attempt("alma", "not her password").await;
    assert_eq!((unknown.status, wrong.status), (401, 401));
    let msg = |p: &Page| {
        let at = p.html.find("id=\"form-error\">").expect("an error message");
        p.html[at..].split('<').next().unwrap_or("").to_string()
    };
    assert_eq!(msg(&unknown), msg(&wrong), "an unknown name and a wrong password read alike");
    assert!(msg(&wrong).contains("Wrong username or password"));
    // The name typed stays in the form; the password never comes back.
    assert!(wrong.html.contains("value=\"alma\"") && !wrong.html.contains("not her password"));
    let disabled_wrong = attempt("dora", "not her password").await;
    assert_eq!(msg(&disabled_wrong), msg(&wrong), "a disabled account with a wrong password reads like any other");
    let disabled = attempt("dora", PASSWORD).await;
    assert_eq!(disabled.status, 403);
    assert!(msg(&disabled).contains("This account is disabled"), "{}", disabled.html);
    // The API keeps its one answer for a disabled account.
    let api = app.login_full("dora", PASSWORD).await;
    assert_eq!((api.status.as_u16(), api.code()), (401, "invalid_credentials".to_string()));
    // Lockout: alma had one failure; two more lock her out.
    attempt("alma", "still not it").await;
    attempt("alma", "nor this").await;
    let locked = attempt("alma", PASSWORD).await;
    assert_eq!(locked.status, 429, "{}", locked.html);
    assert!(
        msg(&locked).contains("Too many failed attempts") && msg(&locked).contains("Try again in"),
        "{}",
        msg(&locked)
    );
    // return_to: a path here is kept; another site, a scheme-relative URL
    // or a backslash trick falls back to the account page.
    app.create_user("rita", json!({})).await;
    for (asked, landed) in [
        ("/admin/users", "/admin/users"),
        ("https://evil.example/phish", "/account"),
        ("//evil.example/phish", "/account"),
        ("/\\evil.example", "/account"),
        ("javascript:alert(1)", "/account"),
    ] {
        let b = browser();
        let csrf = csrf_of(&get(&app, &b, &format!("/login?return_to={}", urlencode(asked))).await.html);
        let p = post(
            &app,
            &b,
            "/login",
            &[("csrf", &csrf), ("username", "rita"), ("password", PASSWORD), ("return_to", asked)],
        )
        .await;
        assert_eq!((p.status, p.location.as_str()), (303, landed), "return_to {asked}");
    }
    // A login form posted without this browser's form cookie is refused.
    let stranger = browser();
    let p = post(&app, &stranger, "/login", &[("csrf", &csrf), ("username", "rita"), ("password", PASSWORD)]).await;
    assert_eq!(p.status, 403, "login CSRF: a token from another browser");
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A bulk action takes its accounts in id order (not by name): against a
/// writer that takes them in id order too (a role's deletion), it waits
/// instead of deadlocking.
#[tokio::test]
async fn a_bulk_action_takes_its_accounts_in_id_order() {
    let app = spawn_app().await;
    // Two users whose names and ids sort in opposite orders (names made
    // in descending order: ids made later are larger, when ids are in time
    // order, and the search finds such a pair when they are not).
    let mut made: Vec<(uuid::Uuid, String)> = Vec::new();
    let pair = loop {
        let name = format!("bk{:02}", 99 - made.len());
        let id: uuid::Uuid = app.create_user(&name, json!({})).await["id"].as_str().expect("id").parse().expect("uuid");
        if let Some(other) = made.iter().find(|(other, other_name)| (*other < id) != (*other_name < name)) {
            let (a, b) = (other.clone(), (id, name));
            break if a.0 < b.0 { (a, b) } else { (b, a) };
        }
        made.push((id, name));
        assert!(made.len() < 40, "forty users, and ids always in name order");
    };
    let ((low, low_name), (high, high_name)) = pair;
    assert!(high > low && high_name < low_name, "by name, the higher id comes first");
    let b = log_in(&app, ADMIN, ADMIN_PASSWORD).await;
    let csrf = csrf_of(&get(&app, &b, "/admin/users").await.html);

    let form =
        [("csrf", csrf.as_str()), ("action", "disable"), ("user", low_name.as_str()), ("user", high_name.as_str())];
    let (applied, _) = while_another_writer_holds(
        &app,
        &format!("SELECT id FROM users WHERE id = '{low}' FOR NO KEY UPDATE"),
        &format!("SELECT id FROM users WHERE id = '{high}' FOR NO KEY UPDATE"),
        post(&app, &b, "/admin/users/bulk/apply", &form),
    )
    .await;
    assert_eq!(applied.status, 200, "{}", applied.html);
    for name in [&low_name, &high_name] {
        let user = app.get(&format!("/api/v1/users/{name}"), &app.admin_token).await.expect(200).json();
        assert_eq!(user["enabled"], false, "{name}");
    }
}

/// The bulk action: the preview is exactly what applying does, and changes
/// nothing; a UserManager's selection that includes an administrator is
/// refused for that row only.
#[tokio::test]
async fn bulk_preview_shows_the_change_and_changes_nothing() {
    let app = spawn_app().await;
    app.create_user("bea", json!({})).await;
    app.create_user("cal", json!({})).await;
    app.create_user("manager", json!({"roles": ["UserManager"]})).await;
    let _ = app.login("bea", PASSWORD).await; // a session to end
    let b = log_in(&app, "manager", PASSWORD).await;
    let csrf = csrf_of(&get(&app, &b, "/admin/users").await.html);
    let before = snapshot(&app).await;
    let form = [("csrf", csrf.as_str()), ("action", "disable"), ("user", "bea"), ("user", "cal"), ("user", ADMIN)];
    let preview = post(&app, &b, "/admin/users/bulk", &form).await;
    assert_eq!(preview.status, 200, "{}", preview.html);
    assert!(preview.html.contains("<h1>Preview</h1>"));
    for u in ["bea", "cal"] {
        let row = preview
            .html
            .split(&format!("data-username=\"{u}\""))
            .nth(1)
            .expect("a row")
            .split("</tr>")
            .next()
            .unwrap_or("");
        assert!(row.contains("enabled: yes → no"), "{u}: {row}");
    }
    let bea_row = preview.html.split("data-username=\"bea\"").nth(1).unwrap_or("");
    assert!(bea_row.split("</tr>").next().unwrap_or("").contains("1 active sessions end"), "{bea_row}");
    let admin_row = preview.html.split(&format!("data-username=\"{ADMIN}\"")).nth(1).unwrap_or("");
    assert!(
        admin_row.split("</tr>").next().unwrap_or("").contains("refused"),
        "a UserManager may not disable an administrator: {admin_row}"
    );
    app.settle_auth_cache().await;
    assert_eq!(snapshot(&app).await, before, "the preview changed the database");
    assert_eq!(app.count("SELECT count(*) FROM change_log WHERE action = 'user.updated'").await, 0);
    // Apply: the same rows, committed.
    let applied = post(&app, &b, "/admin/users/bulk/apply", &form).await;
    assert_eq!(applied.status, 200, "{}", applied.html);
    assert!(applied.html.contains("<h1>Results</h1>"));
    for u in ["bea", "cal"] {
        assert_eq!(app.get(&format!("/api/v1/users/{u}"), &app.admin_token).await.expect(200).json()["enabled"], false);
    }
    assert_eq!(app.get("/api/v1/users/admin", &app.admin_token).await.expect(200).json()["enabled"], true);
    let live = app.count("SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.username = 'bea' AND s.revoked_at IS NULL").await;
    assert_eq!(live, 0, "disabling ended bea's sessions");
    // Applying again changes nothing, and says so.
    let again = post(&app, &b, "/admin/users/bulk/apply", &form).await;
    assert!(again.html.contains("no change (already disabled)"), "{}", again.html);
}

/// Without SMTP the mail flows are off and the pages say so; an
/// administrator still sets passwords.
#[tokio::test]
async fn without_smtp_the_mail_flows_say_they_are_off() {
    let app = spawn_app().await;
    let b = browser();
    let p = get(&app, &b, "/forgot-password").await;
    assert_eq!(p.status, 200);
    assert!(p.html.contains("not available") && !p.html.contains("id=\"forgot\""), "{}", p.html);
    let login = get(&app, &b, "/login").await;
    assert!(!login.html.contains("/forgot-password"), "no reset link offered without mail");
    // A link that was never sent is refused as such.
    let p = get(&app, &b, "/reset-password?token=made-up-token-value").await;
    assert_eq!(p.status, 400);
    assert!(p.html.contains("invalid or has expired"));
    // An administrator sets a password from the console.
    app.create_user("olga", json!({})).await;
    let admin = log_in(&app, ADMIN, ADMIN_PASSWORD).await;
    let csrf = csrf_of(&get(&app, &admin, "/admin/users/olga").await.html);
    let p = post(
        &app,
        &admin,
        "/admin/users/olga/password",
        &[("csrf", &csrf), ("password", "an entirely fresh passphrase, quite long")],
    )
    .await;
    assert_eq!((p.status, p.location.as_str()), (303, "/admin/users/olga?m=password-reset"), "{}", p.html);
    app.login("olga", "an entirely fresh passphrase, quite long").await;
}

/// `/` sends a browser to the login page (or its account) and keeps
/// answering XNAT clients with JSON.
#[tokio::test]
async fn root_sends_browsers_to_the_login_page() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/")).header("Accept", "text/html,application/xhtml+xml").send().await.expect("GET");
    assert_eq!((r.status().as_u16(), r.headers()[LOCATION].to_str().ok()), (303, Some("/login")));
    let r = app.client.get(app.url("/")).send().await.expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.expect("json")["service"], "registrar");
    let b = log_in(&app, ADMIN, ADMIN_PASSWORD).await;
    let r = b.get(app.url("/")).header("Accept", "text/html").send().await.expect("GET");
    assert_eq!(r.headers()[LOCATION].to_str().ok(), Some("/account"));
}

/// A mailed link is for the account as it was when it was sent: granting
/// a role, changing the password, the address (even back again) or the
/// enabled state voids it; an unchanged one works once.
#[tokio::test]
async fn mailed_links_die_with_the_account_they_were_sent_for() {
    let (app, sink) = app_with_mail("pages-mail").await;
    app.create_user("tess", json!({"email": "tess@example.test"})).await;
    // A role granted after the link was sent.
    let link = ask_reset(&app, &sink).await;
    assert!(usable(&app, &link).await, "a fresh link works");
    app.put("/api/v1/users/tess/roles/UserManager", &app.admin_token, json!({})).await.expect(200);
    assert!(!usable(&app, &link).await, "a link outlived a role grant");
    // The password changed another way.
    let link = ask_reset(&app, &sink).await;
    let t = app.login("tess", PASSWORD).await;
    let body = json!({"current_password": PASSWORD, "new_password": "a different passphrase entirely"});
    app.put("/api/v1/users/me/password", &t, body).await.expect(204);
    assert!(!usable(&app, &link).await, "a reset link outlived a password change");
    // The address changed and changed back.
    let link = ask_reset(&app, &sink).await;
    app.patch("/api/v1/users/tess", &app.admin_token, json!({"email": "elsewhere@example.test"})).await.expect(200);
    app.patch("/api/v1/users/tess", &app.admin_token, json!({"email": "tess@example.test", "verified": true}))
        .await
        .expect(200);
    assert!(!usable(&app, &link).await, "a link came back to life with its address");
    // Disabled and enabled again.
    let link = ask_reset(&app, &sink).await;
    app.patch("/api/v1/users/tess", &app.admin_token, json!({"enabled": false})).await.expect(200);
    app.patch("/api/v1/users/tess", &app.admin_token, json!({"enabled": true})).await.expect(200);
    assert!(!usable(&app, &link).await, "a link outlived a disabled account");
    // An untouched link sets the password once.
    let link = ask_reset(&app, &sink).await;
    let b = browser();
    let form = get(&app, &b, &link).await;
    assert_eq!(form.status, 200);
    let token = link.split("token=").nth(1).expect("token").to_string();
    let new = "a phrase chosen by her alone today";
    let fields = [
        ("csrf", csrf_of(&form.html)),
        ("token", token.clone()),
        ("password", new.into()),
        ("password_confirm", new.into()),
    ];
    let done = b.post(app.url("/reset-password")).form(&fields).send().await.expect("post");
    assert_eq!(done.status(), 200);
    assert!(done.text().await.expect("body").contains("Your password has been set"));
    app.login("tess", new).await;
    let again = b.post(app.url("/reset-password")).form(&fields).send().await.expect("post");
    assert_eq!(again.status(), 400, "a link works once");
    let stored = app.count("SELECT count(*) FROM email_tokens WHERE used_at IS NULL").await;
    assert_eq!(stored, 0, "no usable link is left");
}

/// "Forgot password" for tess; the link path from the mail.
/// A user manager mails reset links from the console to the accounts they
/// manage, never to an administrator's: not even to an account that is
/// being made an administrator while the link is asked for (the check is on
/// the account's locked row).
#[tokio::test]
async fn a_manager_mails_reset_links_only_to_accounts_they_manage() {
    let (app, sink) = app_with_mail("pages-mail-manager").await;
    let rita: uuid::Uuid = app.create_user("rita", json!({"email": "rita@example.test"})).await["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    app.create_user("manager", json!({"roles": ["UserManager"]})).await;
    let b = log_in(&app, "manager", PASSWORD).await;
    let asked = |subject: String| {
        let app = &app;
        async move {
            app.count(&format!(
                "SELECT count(*) FROM change_log WHERE action = 'password.reset_requested' AND subject_id = '{subject}'"
            ))
            .await
        }
    };
    let send = |name: &'static str| {
        let (app, b) = (&app, &b);
        async move {
            let csrf = csrf_of(&get(app, b, &format!("/admin/users/{name}")).await.html);
            post(app, b, &format!("/admin/users/{name}/send-reset"), &[("csrf", csrf.as_str())]).await
        }
    };
    let p = send("rita").await;
    assert_eq!((p.status, p.location.as_str()), (303, "/admin/users/rita?m=reset-sent"), "{}", p.html);
    assert!(sink.take_link("rita@example.test", "/reset-password").await.contains("token="));
    assert_eq!(asked(rita.to_string()).await, 1);
    let admin_id = app.get("/api/v1/users/admin", &app.admin_token).await.expect(200).json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    let p = send(ADMIN).await;
    assert_eq!(p.status, 403, "{}", p.html);
    assert_eq!(asked(admin_id).await, 0);
    // Made an administrator while the manager asks.
    let grant = format!("INSERT INTO user_roles (user_id, role) VALUES ('{rita}', 'Administrator')");
    let (p, waited) = while_another_writer_holds(&app, &grant, "SELECT 1", send("rita")).await;
    assert!(waited, "the request waited for the grant");
    assert_eq!(p.status, 403, "{}", p.html);
    assert_eq!(asked(rita.to_string()).await, 1, "a link was issued for an administrator's account");
}

/// The console's group buttons change memberships through the same locked
/// path as the API: a manager adds and removes a managed account; an
/// administrator's groups, an unknown group and an account made
/// administrator while the manager's request waits are refused, and
/// nothing changes.
#[tokio::test]
async fn console_group_changes_follow_the_administrator_rule() {
    let app = spawn_app().await;
    let t = &app.admin_token;
    app.post("/api/v1/groups", t, json!({"name": "team"})).await.expect(201);
    let gina: uuid::Uuid = app.create_user("gina", json!({})).await["id"].as_str().expect("id").parse().expect("uuid");
    app.create_user("manager", json!({"roles": ["UserManager"]})).await;
    let b = log_in(&app, "manager", PASSWORD).await;
    let groups = |name: &'static str| {
        let app = &app;
        async move { app.get(&format!("/api/v1/users/{name}/groups"), &app.admin_token).await.expect(200).json() }
    };
    let change = |name: &'static str, add: bool, group: &'static str| {
        let (app, b) = (&app, &b);
        async move {
            let csrf = csrf_of(&get(app, b, "/account").await.html);
            if add {
                post(app, b, &format!("/admin/users/{name}/groups"), &[("csrf", csrf.as_str()), ("group", group)]).await
            } else {
                post(app, b, &format!("/admin/users/{name}/groups/{group}/remove"), &[("csrf", csrf.as_str())]).await
            }
        }
    };
    let p = change("gina", true, "team").await;
    assert_eq!((p.status, p.location.as_str()), (303, "/admin/users/gina?m=group-added"), "{}", p.html);
    assert!(groups("gina").await.to_string().contains("\"team\""), "{}", groups("gina").await);
    let p = change("gina", false, "team").await;
    assert_eq!((p.status, p.location.as_str()), (303, "/admin/users/gina?m=group-removed"), "{}", p.html);
    assert!(!groups("gina").await.to_string().contains("\"team\""));
    let p = change("gina", true, "no-such-group").await;
    assert_eq!(p.status, 404, "{}", p.html);
    // `me` names nobody in the console (its page is a 404 too).
    app.put("/api/v1/users/manager/groups/team", t, json!(null)).await.expect(200);
    for add in [false, true] {
        let p = change("me", add, "team").await;
        assert_eq!(p.status, 404, "{}", p.html);
    }
    assert!(groups("manager").await.to_string().contains("\"team\""), "{}", groups("manager").await);
    let before = groups(ADMIN).await;
    let p = change(ADMIN, true, "team").await;
    assert_eq!(p.status, 403, "{}", p.html);
    assert_eq!(groups(ADMIN).await, before);
    // Made an administrator while the manager's request waits for the row.
    let grant = format!("INSERT INTO user_roles (user_id, role) VALUES ('{gina}', 'Administrator')");
    let (p, waited) = while_another_writer_holds(&app, &grant, "SELECT 1", change("gina", true, "team")).await;
    assert!(waited, "the request waited for the grant");
    assert_eq!(p.status, 403, "{}", p.html);
    assert!(!groups("gina").await.to_string().contains("\"team\""), "an administrator's groups changed");
}

/// An app that mails through an SMTP sink (aiosmtpd) kept under `target/{dir}`.
async fn app_with_mail(dir: &str) -> (TestApp, crate::web_console::SmtpSink) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join(dir);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let sink = crate::web_console::SmtpSink::start(&dir.join("maildir"), &dir.join("smtp.log")).await;
    let port = sink.port;
    let app = spawn_app_with(move |s| {
        s.email.smtp_host = "127.0.0.1".into();
        s.email.smtp_port = port;
        s.email.smtp_tls = "none".into();
        s.email.from = "registrar@example.test".into();
    })
    .await;
    (app, sink)
}

async fn ask_reset(app: &TestApp, sink: &crate::web_console::SmtpSink) -> String {
    let b = browser();
    let csrf = csrf_of(&get(app, &b, "/forgot-password").await.html);
    let p = post(app, &b, "/forgot-password", &[("csrf", &csrf), ("email", "tess@example.test")]).await;
    assert!(p.html.contains("If an account uses this address"), "{}", p.html);
    let link = sink.take_link("tess@example.test", "/reset-password").await;
    link.split_once("/reset-password").map(|(_, rest)| format!("/reset-password{rest}")).expect("path")
}

async fn usable(app: &TestApp, path: &str) -> bool {
    get(app, &browser(), path).await.status == 200
}
