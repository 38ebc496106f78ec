//! registrar as an OpenID Provider, used by real relying parties:
//! panva's `openid-client` (`tests/op/rp.mjs`: discovery, code flow with
//! PKCE through the login page, ID and access token checks, userinfo,
//! refresh rotation, introspection, revocation, RP-initiated logout, a
//! public client, client_credentials) and Apache httpd's
//! `mod_auth_openidc` (Debian's packages, driven in headless Chromium by
//! `tests/op/apache.mjs`: login, claims, logout through end_session,
//! back-channel logout). The contract is `/work/notes/op-contract.md`.
//!
//! The node modules come from `tests/op/package-lock.json`; Apache and the
//! module are installed from apt when missing, like Chromium.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::OnceCell;

use crate::helpers::*;
use crate::oidc::npm_ci;
use crate::web_console::{ensure_chromium, free_port, CHROMIUM};

static OP_MODULES: OnceCell<()> = OnceCell::const_new();

const APACHE: &str = "/usr/sbin/apache2";
const MOD_AUTH_OPENIDC: &str = "/usr/lib/apache2/modules/mod_auth_openidc.so";

fn op_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("op")
}

async fn op_modules() {
    OP_MODULES.get_or_init(|| npm_ci("op")).await;
}

/// Spawns the app with `public_url` = its own address (the issuer).
async fn spawn_issuer() -> TestApp {
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let issuer = public.clone();
    let app = spawn_app_with(move |s| {
        s.bind = format!("127.0.0.1:{port}").parse().expect("addr");
        s.public_url = issuer;
    })
    .await;
    assert_eq!(app.address, public, "the app listens where its issuer says");
    app
}

/// A user with groups, a project and a role, so every scope has claims.
async fn relying_party_user(app: &TestApp, username: &str) {
    app.create_user(username, json!({"first_name": "Olivia", "last_name": "Relying", "verified": true})).await;
    app.post("/api/v1/groups", &app.admin_token, json!({"name": "readers"})).await.expect(201);
    app.put(&format!("/api/v1/users/{username}/groups/readers"), &app.admin_token, json!(null)).await.expect(200);
    app.post("/api/v1/projects", &app.admin_token, json!({"id": "OPX", "name": "Project OPX", "pi": "Dr Who"}))
        .await
        .expect(201);
    app.put(&format!("/api/v1/projects/OPX/members/{username}"), &app.admin_token, json!({"level": "member"}))
        .await
        .expect(200);
    app.put(&format!("/api/v1/users/{username}/roles/UserManager"), &app.admin_token, json!(null)).await.expect(200);
}

/// `POST /api/v1/oauth/clients` as the admin: answers the client (with
/// `client_secret` for a confidential one). The secret goes into the
/// suite's secrets capture as issued by this response.
async fn register_client(app: &TestApp, body: Value) -> Value {
    let rb = app.client.post(app.url("/api/v1/oauth/clients")).bearer_auth(&app.admin_token).json(&body);
    let resp = rb.send().await.expect("POST /api/v1/oauth/clients");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let n = crate::capture::body("POST /api/v1/oauth/clients", status.as_u16(), &text);
    crate::capture::issued_secrets(n, &text, &headers);
    assert_no_secret_leak(&text);
    assert_eq!(status.as_u16(), 201, "registering client {body}: {text}");
    let client: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert!(client["client_id"].as_str().is_some_and(|s| !s.is_empty()), "no client_id: {text}");
    if let Some(secret) = client["client_secret"].as_str() {
        crate::capture::secret("client_secret", secret, Some(n));
    }
    client
}

fn field(v: &Value, name: &str) -> String {
    v[name].as_str().unwrap_or_else(|| panic!("no {name} in {v}")).to_string()
}

/// What a driver in `tests/op` printed and whether it passed: exit 0 and a
/// last line `N passed, 0 failed`, N > 0.
struct Run {
    ok: bool,
    verdict: String,
    stdout: String,
    stderr: String,
}

impl Run {
    fn failures(&self) -> String {
        self.stdout.lines().filter(|l| l.starts_with("not ok")).collect::<Vec<_>>().join("\n")
    }
}

async fn run_op_driver(script: &str, args: &[String]) -> Run {
    let child = tokio::process::Command::new("node")
        .arg(op_dir().join(script))
        .args(args)
        .current_dir(op_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} timed out"))
        .expect("wait for node");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    println!("{script}:\n{stdout}");
    if !stderr.trim().is_empty() {
        println!("{script} stderr:\n{stderr}");
    }
    let verdict = stdout.lines().last().unwrap_or_default().to_string();
    let ok = out.status.success() && verdict.ends_with(" passed, 0 failed") && !verdict.starts_with("0 ");
    Run { ok, verdict, stdout, stderr }
}

fn flags(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs.iter().flat_map(|(k, v)| [k.to_string(), v.to_string()]).collect()
}

async fn oauth_log_count(app: &TestApp, action: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM change_log WHERE action = $1")
        .bind(action)
        .fetch_one(&app.pool)
        .await
        .expect("change_log query")
}

#[tokio::test]
async fn openid_client_drives_the_provider() {
    op_modules().await;
    let app = spawn_issuer().await;
    let user = "olivia";
    relying_party_user(&app, user).await;

    // The RP's addresses: never fetched, only matched by the provider.
    let rp = format!("http://127.0.0.1:{}", free_port());
    let redirect_uri = format!("{rp}/callback");
    let post_logout = format!("{rp}/logged-out");
    let scopes = json!(["openid", "profile", "email", "groups", "projects", "roles", "offline_access"]);
    let confidential = register_client(
        &app,
        json!({
            "name": "openid-client (confidential)",
            "redirect_uris": [redirect_uri],
            "post_logout_redirect_uris": [post_logout],
            "public": false,
            "scopes": scopes,
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
            "first_party": true,
            "backchannel_logout_uri": null,
        }),
    )
    .await;
    let public = register_client(
        &app,
        json!({
            "name": "openid-client (public)",
            "redirect_uris": [redirect_uri],
            "post_logout_redirect_uris": [post_logout],
            "public": true,
            "signing_alg": "ES256",
            "scopes": scopes,
            "grant_types": ["authorization_code", "refresh_token"],
            "first_party": true,
            "backchannel_logout_uri": null,
        }),
    )
    .await;
    assert!(public.get("client_secret").is_none_or(Value::is_null), "a public client got a secret: {public}");
    let client_id = field(&confidential, "client_id");
    let client_secret = field(&confidential, "client_secret");
    let public_id = field(&public, "client_id");

    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("op-run");
    std::fs::create_dir_all(&work).expect("create target/op-run");
    let report_file = work.join("rp-report.json");
    let _ = std::fs::remove_file(&report_file);
    let email = format!("{user}@example.org");
    let report = report_file.to_str().expect("a UTF-8 path").to_string();
    let args = flags(&[
        ("--issuer", app.address.as_str()),
        ("--client-id", client_id.as_str()),
        ("--client-secret", client_secret.as_str()),
        ("--public-client-id", public_id.as_str()),
        ("--username", user),
        ("--password", PASSWORD),
        ("--redirect-uri", redirect_uri.as_str()),
        ("--post-logout-uri", post_logout.as_str()),
        ("--email", email.as_str()),
        ("--expect-group", "readers"),
        ("--expect-project", "OPX"),
        ("--expect-role", "UserManager"),
        ("--report", report.as_str()),
    ]);
    let run = run_op_driver("rp.mjs", &args).await;

    // What the relying party was issued: the secrets audit looks for these
    // in the server's logs.
    if let Ok(text) = std::fs::read_to_string(&report_file) {
        let report: Value = serde_json::from_str(&text).expect("report JSON");
        for s in report["secrets"].as_array().into_iter().flatten() {
            if let (Some(kind), Some(value)) = (s["kind"].as_str(), s["value"].as_str()) {
                crate::capture::secret(kind, value, None);
            }
        }
    }
    assert!(run.ok, "openid-client against registrar: {}\n{}\n{}", run.verdict, run.failures(), run.stderr);
    println!("openid-client against registrar: {}", run.verdict);

    // What the flows left in the database.
    let oauth_actions = app.count("SELECT count(*) FROM change_log WHERE action LIKE 'oauth.%'").await;
    assert!(oauth_actions > 0, "no oauth.* entries in the change log");
    assert!(oauth_log_count(&app, "oauth.client_created").await >= 2, "oauth.client_created for both clients");
    let authorized = app
        .count(
            "SELECT count(*) FROM change_log
              WHERE action IN ('oauth.authorized', 'oauth.code_issued', 'oauth.token_issued')",
        )
        .await;
    assert!(authorized >= 1, "no authorization in the change log");
    // The RP revoked refresh tokens and logged out: grants ended.
    assert!(oauth_log_count(&app, "oauth.grant_revoked").await >= 1, "oauth.grant_revoked");
    let plain: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM oauth_clients c WHERE strpos(c::text, $1) > 0)
              + (SELECT count(*) FROM change_log l WHERE strpos(l::text, $1) > 0)",
    )
    .bind(&client_secret)
    .fetch_one(&app.pool)
    .await
    .expect("secret query");
    assert_eq!(plain, 0, "the client secret is stored or logged as is");
}

/// Debian's Apache and mod_auth_openidc, installed when missing.
async fn ensure_apache() {
    apt_install(&[APACHE, MOD_AUTH_OPENIDC], &["apache2", "libapache2-mod-auth-openidc"]).await;
}

/// Apache in the foreground (`-DFOREGROUND`) with its own config and files
/// in `root`; stopped with SIGTERM (which ends its workers too) when dropped.
struct Apache {
    root: PathBuf,
    child: tokio::process::Child,
}

impl Apache {
    async fn start(root: &Path, port: u16, values: &[(&str, &str)]) -> Apache {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_dir_all(root);
        std::fs::create_dir_all(root.join("htdocs").join("protected")).expect("apache dirs");
        for file in ["loggedout.html", "protected/index.shtml"] {
            std::fs::copy(op_dir().join("htdocs").join(file), root.join("htdocs").join(file)).expect("copy htdocs");
        }
        // Started as root, the workers run as www-data: they read htdocs.
        for dir in [root.to_path_buf(), root.join("htdocs"), root.join("htdocs").join("protected")] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let mut conf = std::fs::read_to_string(op_dir().join("apache.conf.in")).expect("apache.conf.in");
        let root_s = root.to_str().expect("a UTF-8 path").to_string();
        let port_s = port.to_string();
        for (k, v) in [("ROOT", root_s.as_str()), ("PORT", port_s.as_str())].iter().chain(values.iter()) {
            conf = conf.replace(&format!("@{k}@"), v);
        }
        for name in ["ROOT", "PORT", "ISSUER", "CLIENT_ID", "CLIENT_SECRET", "PASSPHRASE"] {
            assert!(!conf.contains(&format!("@{name}@")), "@{name}@ is left in the Apache config:\n{conf}");
        }
        let conf_file = root.join("httpd.conf");
        std::fs::write(&conf_file, conf).expect("write httpd.conf");
        let check =
            std::process::Command::new(APACHE).arg("-t").arg("-f").arg(&conf_file).output().expect("apache2 -t");
        assert!(check.status.success(), "apache2 -t: {}", String::from_utf8_lossy(&check.stderr));
        let child = tokio::process::Command::new(APACHE)
            .arg("-f")
            .arg(&conf_file)
            .arg("-DFOREGROUND")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(root.join("stdout.log")).expect("stdout log"))
            .stderr(std::fs::File::create(root.join("stderr.log")).expect("stderr log"))
            .kill_on_drop(true)
            .spawn()
            .expect("start apache2");
        let mut apache = Apache { root: root.to_path_buf(), child };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = apache.child.try_wait().expect("apache status") {
                panic!("apache2 exited ({status}):\n{}", apache.log_tail(40));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "apache2 did not listen on {port}:\n{}",
                apache.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        apache
    }

    /// The last lines of Apache's error log (and its stderr).
    fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in ["stderr.log", "error.log"] {
            let text = std::fs::read_to_string(self.root.join(name)).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!("--- {name} (last {} lines)\n{}\n", all.len() - from, all[from..].join("\n")));
        }
        out
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            for _ in 0..50 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn mod_auth_openidc_logs_in_through_registrar() {
    ensure_apache().await;
    ensure_chromium().await;
    op_modules().await;
    let app = spawn_issuer().await;
    let user = "olivia";
    relying_party_user(&app, user).await;

    let port = free_port();
    let apache_url = format!("http://127.0.0.1:{port}");
    let client = register_client(
        &app,
        json!({
            "name": "Apache mod_auth_openidc",
            "redirect_uris": [format!("{apache_url}/protected/redirect_uri")],
            "post_logout_redirect_uris": [format!("{apache_url}/loggedout.html")],
            "public": false,
            "scopes": ["openid", "profile", "email", "groups"],
            "grant_types": ["authorization_code", "refresh_token"],
            "first_party": true,
            "backchannel_logout_uri": format!("{apache_url}/protected/redirect_uri?logout=backchannel"),
        }),
    )
    .await;
    let client_id = field(&client, "client_id");
    let client_secret = field(&client, "client_secret");
    let passphrase = uuid::Uuid::new_v4().simple().to_string();
    let root = std::env::temp_dir().join(format!("registrar-op-apache-{}", uuid::Uuid::new_v4().simple()));
    let apache = Apache::start(
        &root,
        port,
        &[
            ("ISSUER", app.address.as_str()),
            ("CLIENT_ID", client_id.as_str()),
            ("CLIENT_SECRET", client_secret.as_str()),
            ("PASSPHRASE", passphrase.as_str()),
        ],
    )
    .await;

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("op-shots");
    let _ = std::fs::remove_dir_all(&shots);
    let shots_s = shots.to_str().expect("a UTF-8 path").to_string();
    let email = format!("{user}@example.org");
    let mut args = flags(&[
        ("--apache", apache_url.as_str()),
        ("--issuer", app.address.as_str()),
        ("--username", user),
        ("--password", PASSWORD),
        ("--email", email.as_str()),
        ("--expect-group", "readers"),
        ("--chromium", CHROMIUM),
        ("--shots", shots_s.as_str()),
    ]);
    args.push("--backchannel".into());
    let run = run_op_driver("apache.mjs", &args).await;
    assert!(
        run.ok,
        "mod_auth_openidc against registrar: {}\n{}\n{}\n{}\n(screenshots in target/op-shots/)",
        run.verdict,
        run.failures(),
        run.stderr,
        apache.log_tail(60)
    );
    println!("mod_auth_openidc against registrar: {}", run.verdict);
    assert!(
        app.count("SELECT count(*) FROM change_log WHERE action LIKE 'oauth.%'").await > 0,
        "no oauth.* entries in the change log"
    );
    drop(apache);
    let _ = std::fs::remove_dir_all(&root);
}
