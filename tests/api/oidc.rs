//! OpenID Connect login against a real provider process (panva's
//! `oidc-provider`, `tests/oidc/provider.mjs`), driven over HTTP the way a
//! browser would: no in-process fake.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::OnceCell;

use crate::helpers::*;

pub(crate) const SECRET: &str = "registrar-secret";
static NODE_MODULES: OnceCell<()> = OnceCell::const_new();

async fn node_modules() {
    NODE_MODULES.get_or_init(|| npm_ci("oidc")).await;
}

/// `npm ci` in `tests/{dir}` unless its `node_modules` already holds what
/// `package-lock.json` names (a marker keeps the lock it was installed from).
pub(crate) async fn npm_ci(dir: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(dir);
    let lock = std::fs::read_to_string(dir.join("package-lock.json")).expect("package-lock.json");
    let marker = dir.join("node_modules").join(".registrar-installed");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(lock.as_str()) {
        return;
    }
    tokio::task::spawn_blocking(move || {
        let npm_ok = |d: &Path| {
            std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--silent"])
                .current_dir(d)
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !npm_ok(&dir) {
            // A bare Debian: Node comes from the package manager.
            let _ = std::process::Command::new("apt-get").args(["update", "-q"]).status();
            let _ = std::process::Command::new("apt-get")
                .args(["install", "-y", "-q", "nodejs", "npm"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
            assert!(npm_ok(&dir), "npm ci in {} failed", dir.display());
        }
        std::fs::write(&marker, lock).expect("marker");
    })
    .await
    .expect("join");
}

pub(crate) struct Provider {
    pub(crate) issuer: String,
    http: reqwest::Client,
    _child: tokio::process::Child,
}

impl Provider {
    pub(crate) async fn start(redirect_uri: &str) -> Provider {
        node_modules().await;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("oidc").join("provider.mjs");
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .args(["--port", "0", "--redirect-uri", redirect_uri, "--client-secret", SECRET])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the OIDC provider (node)");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let issuer = loop {
            let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
                .await
                .expect("provider start timed out")
                .expect("read")
                .expect("provider exited before READY");
            if let Some(i) = line.strip_prefix("READY ") {
                break i.trim().to_string();
            }
        };
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Provider { issuer, http, _child: child }
    }

    async fn account(&self, claims: Value) {
        let r = self.http.post(format!("{}/test/accounts", self.issuer)).json(&claims).send().await.expect("account");
        assert_eq!(r.status(), 200);
    }

    async fn mode(&self, mode: &str) {
        let r = self
            .http
            .post(format!("{}/test/mode", self.issuer))
            .json(&json!({"mode": mode}))
            .send()
            .await
            .expect("mode");
        assert_eq!(r.status(), 200);
    }

    /// Plays the browser at the provider: from the authorization URL through
    /// the login and consent forms to the redirect back to registrar.
    async fn authorize(&self, auth_url: &str, login: &str) -> String {
        let mut jar: HashMap<String, String> = HashMap::new();
        let mut url = auth_url.to_string();
        for _ in 0..12 {
            let cookie = jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
            let is_interaction = url.contains("/interaction/");
            let req = if is_interaction {
                // First GET the form (as a browser would), then POST it.
                let r = self.http.get(&url).header("Cookie", &cookie).send().await.expect("form");
                assert_eq!(r.status(), 200, "interaction page");
                absorb(&mut jar, &r);
                let html = r.text().await.expect("html");
                let field = if html.contains("name=\"login\"") { "login" } else { "consent" };
                let cookie = jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
                let form: Vec<(&str, &str)> = if field == "login" {
                    vec![("prompt", "login"), ("login", login), ("password", "x")]
                } else {
                    vec![("prompt", "consent")]
                };
                self.http.post(&url).header("Cookie", cookie).form(&form)
            } else {
                self.http.get(&url).header("Cookie", cookie)
            };
            let r = req.send().await.expect("provider request");
            absorb(&mut jar, &r);
            assert!(r.status().is_redirection(), "provider answered {} at {url}", r.status());
            let loc = r.headers()["location"].to_str().expect("location").to_string();
            let next = if loc.starts_with("http") { loc } else { format!("{}{loc}", self.issuer) };
            if !next.starts_with(&self.issuer) {
                return next;
            }
            url = next;
        }
        panic!("the provider never redirected back");
    }
}

fn absorb(jar: &mut HashMap<String, String>, r: &reqwest::Response) {
    for h in r.headers().get_all("set-cookie") {
        let pair = h.to_str().expect("cookie").split(';').next().expect("pair");
        if let Some((k, v)) = pair.split_once('=') {
            if v.is_empty() {
                jar.remove(k);
            } else {
                jar.insert(k.to_string(), v.to_string());
            }
        }
    }
}

fn cookie_value(r: &Resp, name: &str) -> Option<String> {
    r.headers.get_all("set-cookie").iter().find_map(|h| {
        let pair = h.to_str().ok()?.split(';').next()?;
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.to_string())
    })
}

struct Env {
    app: TestApp,
    idp: Provider,
}

/// The test provider as registrar is configured for it.
pub(crate) fn provider_config(name: &str, issuer: &str) -> registrar::config::OidcProvider {
    registrar::config::OidcProvider {
        name: name.into(),
        display_name: "University login".into(),
        issuer: issuer.to_string(),
        client_id: "registrar".into(),
        client_secret: SECRET.to_string().into(),
        client_secret_env: String::new(),
        scopes: vec!["openid".into(), "email".into(), "profile".into()],
        auto_create: true,
        link_by_email: true,
    }
}

async fn setup(configure: impl FnOnce(&mut registrar::config::OidcProvider)) -> Env {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let public = format!("http://127.0.0.1:{port}");
    let idp = Provider::start(&format!("{public}/api/v1/auth/oidc/uni/callback")).await;
    let mut p = provider_config("uni", &idp.issuer);
    configure(&mut p);
    let app = spawn_app_with(move |s| {
        s.bind = format!("127.0.0.1:{port}").parse().expect("addr");
        s.public_url = public;
        s.oidc.providers = vec![p];
        s.oidc.return_origins = vec!["https://app.example.org".into()];
    })
    .await;
    Env { app, idp }
}

impl Env {
    /// One browser login: registrar's login URL -> provider -> callback.
    /// `cookie` is registrar's session cookie when linking.
    async fn login(&self, sub: &str, query: &str, cookie: Option<&str>) -> Resp {
        let (callback, state_cookie) = self.start_and_authorize(sub, query, cookie).await;
        self.callback(&callback, &state_cookie).await
    }

    async fn start_and_authorize(&self, sub: &str, query: &str, cookie: Option<&str>) -> (String, String) {
        let auth = match cookie {
            Some(c) => Auth::Cookie(c.to_string()),
            None => Auth::None,
        };
        let r = self.app.send(Method::GET, &format!("/api/v1/auth/oidc/uni/login{query}"), &auth, None).await;
        assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
        let to = r.headers["location"].to_str().expect("location").to_string();
        assert!(
            to.starts_with(&self.idp.issuer) && to.contains("code_challenge_method=S256") && to.contains("nonce="),
            "{to}"
        );
        let state_cookie = cookie_value(&r, "registrar_oidc").expect("state cookie");
        (self.idp.authorize(&to, sub).await, state_cookie)
    }

    async fn callback(&self, url: &str, state_cookie: &str) -> Resp {
        assert!(url.starts_with(&self.app.address), "{url}");
        let r = self
            .app
            .client
            .get(url)
            .header("Cookie", format!("registrar_oidc={state_cookie}"))
            .send()
            .await
            .expect("callback");
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        // Into the suite's secrets capture, like every helper request.
        let n = crate::capture::body("GET oidc callback", status.as_u16(), &text);
        crate::capture::issued_secrets(n, &text, &headers);
        assert_no_secret_leak(&text);
        Resp { status, headers, text }
    }

    async fn user(&self, name: &str) -> Value {
        self.app.get(&format!("/api/v1/users/{name}"), &self.app.admin_token).await.json()
    }

    async fn actions(&self, action: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM change_log WHERE action = $1")
            .bind(action)
            .fetch_one(&self.app.pool)
            .await
            .expect("q")
    }
}

fn alice() -> Value {
    json!({"sub": "alice-sub", "email": "alice@uni.example.org", "email_verified": true, "given_name": "Alice",
           "family_name": "Liddell", "name": "Alice Liddell", "preferred_username": "alice"})
}

#[tokio::test]
async fn first_login_creates_then_reuses_the_link() {
    let env = setup(|_| {}).await;
    let list = env.app.send(Method::GET, "/api/v1/auth/oidc/providers", &Auth::None, None).await.expect(200).json();
    assert_eq!(
        list["items"],
        json!([{"name": "uni", "display_name": "University login", "login_url": "/api/v1/auth/oidc/uni/login"}])
    );
    env.idp.account(alice()).await;
    let r = env.login("alice-sub", "", None).await.expect(200);
    let token = r.json()["access_token"].as_str().expect("token").to_string();
    assert!(cookie_value(&r, "registrar_session").is_some());
    let me = env.app.get("/api/v1/users/me", &token).await.expect(200).json();
    assert_eq!(
        (me["username"].as_str(), me["first_name"].as_str(), me["verified"].as_bool()),
        (Some("alice"), Some("Alice"), Some(true))
    );
    let has_pw: bool = sqlx::query_scalar("SELECT password_hash IS NOT NULL FROM users WHERE username = 'alice'")
        .fetch_one(&env.app.pool)
        .await
        .expect("q");
    assert!(!has_pw, "no password for an OIDC account");
    let ids = env.app.get("/api/v1/users/me/identities", &token).await.expect(200).json()["items"].clone();
    assert_eq!(ids[0]["provider"], "uni");
    assert_eq!(ids[0]["subject"], "alice-sub");
    let sessions = env.app.get("/api/v1/users/me/sessions", &token).await.json()["items"].clone();
    assert_eq!(sessions[0]["method"], "oidc");
    // Second login: the link, no new account.
    let users_before = env.app.count("SELECT count(*) FROM users").await;
    let r = env.login("alice-sub", "", None).await.expect(200);
    assert_eq!(
        env.app.get("/api/v1/users/me", r.json()["access_token"].as_str().expect("t")).await.json()["id"],
        me["id"]
    );
    assert_eq!(env.app.count("SELECT count(*) FROM users").await, users_before);
    // A username already taken is made unique.
    env.app.create_user("bobby", json!({})).await;
    env.idp.account(json!({"sub": "b2", "email": "other.bob@uni.example.org", "email_verified": true, "preferred_username": "bobby"})).await;
    env.login("b2", "", None).await.expect(200);
    assert_eq!(env.user("bobby2").await["email"], "other.bob@uni.example.org");
    assert_eq!(env.actions("identity.linked").await, 2);
    assert!(env.actions("login.succeeded").await >= 1);
}

#[tokio::test]
async fn verified_email_links_an_existing_account() {
    let env = setup(|_| {}).await;
    env.app.create_user("alice", json!({"email": "Alice@uni.example.org", "verified": true})).await;
    env.idp.account(alice()).await;
    let r = env.login("alice-sub", "", None).await.expect(200);
    let me = env.app.get("/api/v1/users/me", r.json()["access_token"].as_str().expect("t")).await.json();
    assert_eq!(me["username"], "alice");
    // Both ways in work.
    env.app.login("alice", PASSWORD).await;
    env.login("alice-sub", "", None).await.expect(200);
    let how: Value = sqlx::query_scalar("SELECT changes FROM change_log WHERE action = 'identity.linked'")
        .fetch_one(&env.app.pool)
        .await
        .expect("q");
    assert_eq!(how["how"], "verified email");
    assert_eq!(env.app.count("SELECT count(*) FROM users").await, 2);
}

#[tokio::test]
async fn unverified_email_never_links() {
    let env = setup(|_| {}).await;
    env.app.create_user("alice", json!({"email": "alice@uni.example.org"})).await;
    let before = env.user("alice").await;
    let mut claims = alice();
    claims["email_verified"] = json!(false);
    env.idp.account(claims).await;
    let r = env.login("alice-sub", "", None).await.expect(409);
    assert_eq!(r.code(), "email_in_use");
    assert!(r.json()["error"]["message"].as_str().expect("m").contains("log in with your password"));
    assert_eq!(env.app.count("SELECT count(*) FROM oidc_identities").await, 0);
    assert_eq!(env.user("alice").await, before, "account untouched");
    assert_eq!(env.actions("oidc.login_refused").await, 1);
    // Verified but the provider is not trusted to link: refused the same way.
    let env2 = setup(|p| p.link_by_email = false).await;
    env2.app.create_user("alice", json!({"email": "alice@uni.example.org"})).await;
    env2.idp.account(alice()).await;
    assert_eq!(env2.login("alice-sub", "", None).await.expect(409).code(), "email_in_use");
}

/// Finding 4 (OIDC half): an address the account holder set themselves and
/// never verified links nobody. On `facfb9a` the victim's first login with
/// a provider-verified email landed in the attacker's account.
#[tokio::test]
async fn a_self_set_unverified_email_never_links() {
    let env = setup(|_| {}).await;
    let attacker = env.app.user("mallory").await;
    env.app.patch("/api/v1/users/me", &attacker, json!({"email": "alice@uni.example.org"})).await.expect(200);
    env.idp.account(alice()).await;
    let r = env.login("alice-sub", "", None).await;
    assert_eq!(r.status, 409, "the victim's login was linked into another account: {}", r.text);
    assert_eq!(r.code(), "email_in_use");
    assert_eq!(env.app.count("SELECT count(*) FROM oidc_identities").await, 0);
}

/// Finding 4: an account holding Administrator or UserManager is never
/// linked by email, even with both sides verified.
#[tokio::test]
async fn privileged_accounts_are_never_linked_by_email() {
    let env = setup(|_| {}).await;
    for (name, roles) in [("alice", json!(["UserManager"]))] {
        env.app.create_user(name, json!({"email": "alice@uni.example.org", "verified": true, "roles": roles})).await;
    }
    env.idp.account(alice()).await;
    assert_eq!(env.login("alice-sub", "", None).await.expect(409).code(), "email_in_use");
    env.app
        .patch("/api/v1/users/alice", &env.app.admin_token, json!({"email": "a2@uni.example.org"}))
        .await
        .expect(200);
    env.app.patch("/api/v1/users/admin", &env.app.admin_token, json!({"email": "alice@uni.example.org"})).await;
    sqlx::query("UPDATE users SET verified = true WHERE username = 'admin'").execute(&env.app.pool).await.expect("q");
    assert_eq!(env.login("alice-sub", "", None).await.expect(409).code(), "email_in_use");
    assert_eq!(env.app.count("SELECT count(*) FROM oidc_identities").await, 0);
}

#[tokio::test]
async fn disabled_users_are_refused() {
    let env = setup(|_| {}).await;
    env.idp.account(alice()).await;
    env.login("alice-sub", "", None).await.expect(200);
    env.app.patch("/api/v1/users/alice", &env.app.admin_token, json!({"enabled": false})).await.expect(200);
    let r = env.login("alice-sub", "", None).await.expect(403);
    assert_eq!(r.code(), "account_disabled");
    assert!(cookie_value(&r, "registrar_session").is_none());
}

#[tokio::test]
async fn state_is_single_use_and_bound_to_the_browser() {
    let env = setup(|_| {}).await;
    env.idp.account(alice()).await;
    let (callback, state_cookie) = env.start_and_authorize("alice-sub", "", None).await;
    // Without the browser's state cookie: refused (and the state is spent).
    let r = env.app.client.get(&callback).send().await.expect("cb");
    assert_eq!(r.status(), 400);
    let (callback, state_cookie2) = env.start_and_authorize("alice-sub", "", None).await;
    env.callback(&callback, &state_cookie2).await.expect(200);
    // Replay: refused.
    assert_eq!(env.callback(&callback, &state_cookie2).await.expect(400).code(), "invalid_state");
    assert_eq!(env.callback(&callback, &state_cookie).await.expect(400).code(), "invalid_state");
    let forged = callback.replace("state=", "state=x");
    assert_eq!(env.callback(&forged, &state_cookie2).await.expect(400).code(), "invalid_state");
}

#[tokio::test]
async fn bad_id_tokens_and_provider_failures_are_refused() {
    let env = setup(|_| {}).await;
    env.idp.account(alice()).await;
    for mode in ["tamper-signature", "wrong-audience", "wrong-issuer", "wrong-nonce", "expired"] {
        env.idp.mode(mode).await;
        let r = env.login("alice-sub", "", None).await.expect(401);
        assert_eq!(r.code(), "invalid_id_token", "{mode}");
    }
    env.idp.mode("error").await;
    let r = env.login("alice-sub", "", None).await.expect(502);
    assert_eq!(r.code(), "provider_unavailable");
    assert_eq!(env.app.count("SELECT count(*) FROM users").await, 1, "nothing half-created");
    assert_eq!(env.app.count("SELECT count(*) FROM oidc_identities").await, 0);
    assert_eq!(env.actions("oidc.login_failed").await, 6);
    env.idp.mode("normal").await;
    env.login("alice-sub", "", None).await.expect(200);
    // A wrong client secret: the provider refuses the exchange.
    let env2 = setup(|p| p.client_secret = "not-the-secret".to_string().into()).await;
    env2.idp.account(alice()).await;
    assert_eq!(env2.login("alice-sub", "", None).await.expect(401).code(), "oidc_rejected");
}

#[tokio::test]
async fn return_to_is_never_an_open_redirect() {
    let env = setup(|_| {}).await;
    env.idp.account(alice()).await;
    for bad in ["https://evil.example/steal", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"] {
        let q = format!("/api/v1/auth/oidc/uni/login?return_to={}", url_escape(bad));
        let r = env.app.send(Method::GET, &q, &Auth::None, None).await.expect(400);
        assert_eq!(r.code(), "invalid_return_to", "{bad}");
    }
    let r = env.login("alice-sub", "?return_to=%2Fwelcome%3Ftab%3D1", None).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.headers["location"], "/welcome?tab=1");
    let session = cookie_value(&r, "registrar_session").expect("session cookie");
    env.app.send(Method::GET, "/api/v1/users/me", &Auth::Cookie(session), None).await.expect(200);
    let r = env.login("alice-sub", "?return_to=https%3A%2F%2Fapp.example.org%2Fhome", None).await;
    assert_eq!(r.headers["location"], "https://app.example.org/home");
}

fn url_escape(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[tokio::test]
async fn email_invitation_is_attached_on_first_login() {
    let env = setup(|_| {}).await;
    let owner = env.app.user("owner").await;
    env.app.post("/api/v1/projects", &owner, json!({"id": "OP", "name": "O"})).await.expect(201);
    env.app
        .post(
            "/api/v1/projects/OP/access-requests",
            &owner,
            json!({"email": "alice@uni.example.org", "level": "member"}),
        )
        .await
        .expect(201);
    env.idp.account(alice()).await;
    let t = env.login("alice-sub", "", None).await.expect(200).json()["access_token"].as_str().expect("t").to_string();
    let mine = env.app.get("/api/v1/access-requests", &t).await.expect(200).json();
    assert_eq!(mine["items"][0]["project_id"], "OP");
}

#[tokio::test]
async fn link_and_unlink_from_a_profile() {
    let env = setup(|_| {}).await;
    env.app.create_user("pat", json!({"email": "pat@elsewhere.example.org"})).await;
    let login = env.app.login_full("pat", PASSWORD).await.expect(200);
    let session = cookie_value(&login, "registrar_session").expect("cookie");
    env.idp.account(json!({"sub": "pat-at-uni", "email": "p.other@uni.example.org", "email_verified": false})).await;
    // Linking needs a logged-in caller.
    env.app.send(Method::GET, "/api/v1/auth/oidc/uni/login?link=true", &Auth::None, None).await.expect(401);
    env.login("pat-at-uni", "?link=true", Some(&session)).await.expect(200);
    let t = login.json()["access_token"].as_str().expect("t").to_string();
    let ids = env.app.get("/api/v1/users/me/identities", &t).await.expect(200).json()["items"].clone();
    assert_eq!(ids[0]["subject"], "pat-at-uni");
    // Now the provider logs pat in, even with an unverified email.
    let r = env.login("pat-at-uni", "", None).await.expect(200);
    assert_eq!(
        env.app.get("/api/v1/users/me", r.json()["access_token"].as_str().expect("t")).await.json()["username"],
        "pat"
    );
    // Others cannot see or remove pat's links; pat (with a password) can unlink.
    let other = env.app.user("other").await;
    env.app.get("/api/v1/users/pat/identities", &other).await.expect(403);
    env.app.delete("/api/v1/users/me/identities/uni", &t).await.expect(204);
    env.app.delete("/api/v1/users/me/identities/uni", &t).await.expect(404);
    // An OIDC-only account cannot drop its only way in.
    env.idp.account(alice()).await;
    let at = env.login("alice-sub", "", None).await.expect(200).json()["access_token"].as_str().expect("t").to_string();
    assert_eq!(env.app.delete("/api/v1/users/me/identities/uni", &at).await.expect(409).code(), "last_login_method");
    // Admins see and remove links.
    env.app.get("/api/v1/users/alice/identities", &env.app.admin_token).await.expect(200);
    assert_eq!(env.actions("identity.unlinked").await, 1);
}

/// Finding 6 (OIDC half): linking a new identity needs a recent login; a
/// session cookie whose login is older than `auth.reauth_secs` is refused.
#[tokio::test]
async fn linking_needs_a_recent_login() {
    let env = setup(|_| {}).await;
    env.app.create_user("pat", json!({"email": "pat@elsewhere.example.org"})).await;
    let login = env.app.login_full("pat", PASSWORD).await.expect(200);
    let session = cookie_value(&login, "registrar_session").expect("cookie");
    sqlx::query("UPDATE sessions SET created_at = now() - interval '1 hour'").execute(&env.app.pool).await.expect("q");
    env.app.settle_auth_cache().await;
    let r = env
        .app
        .client
        .get(env.app.url("/api/v1/auth/oidc/uni/login?link=true"))
        .header("Cookie", format!("registrar_session={session}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 403, "an old session started a link");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "reauthentication_required");
    assert_eq!(env.app.count("SELECT count(*) FROM oidc_states").await, 0);
}

/// Finding 8: a provider asserting a look-alike of an existing address
/// (U+212A KELVIN SIGN for `K`) is not that address. On `facfb9a` it logged
/// in as the existing `kim@kit.example`.
#[tokio::test]
async fn a_lookalike_email_is_not_the_address() {
    let env = setup(|_| {}).await;
    env.app.create_user("kim", json!({"email": "kim@kit.example", "verified": true})).await;
    env.idp.account(json!({"sub": "kelvin", "email": "\u{212A}im@kit.example", "email_verified": true})).await;
    let r = env.login("kelvin", "", None).await;
    assert_ne!(r.status, 200, "the look-alike logged in: {}", r.text);
    assert_eq!(env.app.count("SELECT count(*) FROM oidc_identities").await, 0);
}

/// A login started on one instance is finished by another (the state lives
/// in the database): as behind a load balancer with no sticky sessions.
#[tokio::test]
async fn a_second_instance_finishes_the_login() {
    let env = setup(|_| {}).await;
    env.idp.account(alice()).await;
    let mut settings = test_settings();
    settings.public_url = env.app.address.clone();
    settings.oidc.providers = vec![registrar::config::OidcProvider {
        name: "uni".into(),
        display_name: "University login".into(),
        issuer: env.idp.issuer.clone(),
        client_id: "registrar".into(),
        client_secret: SECRET.to_string().into(),
        client_secret_env: String::new(),
        scopes: vec!["openid".into(), "email".into(), "profile".into()],
        auto_create: true,
        link_by_email: true,
    }];
    let second = spawn_on(env.app.db.clone(), env.app.db.clone(), settings).await;
    let (callback, state_cookie) = env.start_and_authorize("alice-sub", "", None).await;
    let on_second = callback.replacen(&env.app.address, &second.address, 1);
    assert_ne!(on_second, callback);
    let r = second
        .client
        .get(&on_second)
        .header("Cookie", format!("registrar_oidc={state_cookie}"))
        .send()
        .await
        .expect("callback");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    let token = body["access_token"].as_str().expect("token");
    assert_eq!(env.app.get("/api/v1/users/me", token).await.expect(200).json()["username"], "alice");
}

/// An account with a second factor: the provider is the first step, the
/// code the second, in JSON and in a browser flow (the second-step page);
/// no session before the code.
#[tokio::test]
async fn an_oidc_login_asks_for_the_second_factor() {
    apt_install(&[crate::mfa::OATHTOOL], &["oathtool"]).await;
    let env = setup(|_| {}).await;
    env.idp.account(alice()).await;
    let first = env.login("alice-sub", "", None).await.expect(200);
    let token = first.json()["access_token"].as_str().expect("token").to_string();
    let e = env.app.post("/api/v1/users/me/mfa/totp", &token, json!(null)).await.expect(201).json();
    let secret = e["secret"].as_str().expect("secret").to_string();
    crate::mfa::away_from_step_edge().await;
    let code = crate::mfa::code(&secret, 0);
    env.app.post("/api/v1/users/me/mfa/totp/confirm", &token, json!({"code": code})).await.expect(200);

    let sessions_before = env.app.count("SELECT count(*) FROM sessions WHERE revoked_at IS NULL").await;
    let r = env.login("alice-sub", "", None).await.expect(200);
    assert!(cookie_value(&r, "registrar_session").is_none(), "no session before the second step");
    let ch = r.json();
    assert_eq!(ch["mfa_required"], true, "{ch}");
    assert!(ch.get("access_token").is_none());
    assert_eq!(env.app.count("SELECT count(*) FROM sessions WHERE revoked_at IS NULL").await, sessions_before);
    let body = json!({"mfa_token": ch["mfa_token"], "code": crate::mfa::code(&secret, 30)});
    let done = env.app.post("/api/v1/auth/mfa", "", body).await.expect(200).json();
    let me = env.app.get("/api/v1/users/me", done["access_token"].as_str().expect("t")).await.expect(200).json();
    assert_eq!(me["username"], "alice");

    // A browser flow (return_to) shows the second-step page.
    let r = env.login("alice-sub", "?return_to=%2Fwelcome", None).await.expect(200);
    assert!(r.text.contains("id=\"login-mfa\""), "{}", r.text);
    assert!(cookie_value(&r, "registrar_session").is_none());
}
