//! The web console in a real browser: Debian's headless Chromium, driven by
//! `tests/browser/drive.mjs` (puppeteer-core, with axe-core auditing every
//! page), through the flows of the pages contract. Mail goes to an SMTP sink
//! (aiosmtpd writing a Maildir the driver reads) and OpenID Connect logins
//! to the test provider (`tests/oidc/provider.mjs`). Full-page screenshots
//! of every page land in `target/browser-shots/`.
//!
//! Chromium comes from the system packages (puppeteer-core never downloads
//! a browser), the driver's modules from `tests/browser/package-lock.json`,
//! the sink from `tests/browser/requirements.txt` (or `REGISTRAR_SMTP_PYTHON`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::OnceCell;

use crate::helpers::*;
use crate::oidc::{npm_ci, Provider};

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
/// `auth.max_failed_logins` here: the lockout flow needs few wrong tries.
const MAX_FAILED: u32 = 3;
/// The name of the OIDC provider in the app's settings (and in its URLs).
const PROVIDER: &str = "uni";
static BROWSER_MODULES: OnceCell<()> = OnceCell::const_new();

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Debian's Chromium, installed from the system packages when missing.
pub(crate) async fn ensure_chromium() {
    apt_install(&[CHROMIUM], &["chromium"]).await;
}

/// An SMTP server that accepts every message and files it in a Maildir
/// (aiosmtpd's `Mailbox` handler: one file per message in `new/`).
pub(crate) struct SmtpSink {
    pub(crate) port: u16,
    maildir: std::path::PathBuf,
    _child: tokio::process::Child,
}

impl SmtpSink {
    /// Starts the sink on a free port; its own log goes to `log`.
    pub(crate) async fn start(maildir: &Path, log: &Path) -> SmtpSink {
        let python = crate::xnat_clients::venv("REGISTRAR_SMTP_PYTHON", "smtp-venv", "browser").await;
        // Python's Maildir takes an existing folder only with all three parts.
        for part in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildir.join(part)).expect("create the maildir");
        }
        let port = free_port();
        let mut child = tokio::process::Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("smtp log"))
            .kill_on_drop(true)
            .spawn()
            .expect("start aiosmtpd");
        // Ready once it greets: `220 <host> ...`.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("aiosmtpd status") {
                panic!("aiosmtpd exited ({status}); see {}", log.display());
            }
            if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                let mut greeting = String::new();
                let (read, mut write) = stream.split();
                let got =
                    tokio::time::timeout(Duration::from_secs(5), BufReader::new(read).read_line(&mut greeting)).await;
                if matches!(got, Ok(Ok(_))) && greeting.starts_with("220") {
                    let _ = write.write_all(b"QUIT\r\n").await;
                    break;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "aiosmtpd did not answer on port {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        SmtpSink { port, maildir: maildir.to_path_buf(), _child: child }
    }

    /// The newest link to `path` (e.g. `/reset-password`) in a message to
    /// `to` that has not been taken yet, waiting for it to arrive; taken
    /// messages move to `cur/`.
    pub(crate) async fn take_link(&self, to: &str, path: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut found = None;
            for entry in std::fs::read_dir(self.maildir.join("new")).expect("maildir").flatten() {
                let raw = std::fs::read_to_string(entry.path()).unwrap_or_default();
                // Quoted-printable soft breaks and `=3D` undone; tokens are base64url.
                let text = raw.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=");
                let addressed = text.lines().any(|l| l.to_ascii_lowercase().starts_with("to:") && l.contains(to));
                if let (true, Some(at)) = (addressed, text.find(&format!("{path}?token="))) {
                    let link: String = text[at..].chars().take_while(|c| !c.is_whitespace()).collect();
                    found = Some((entry.path(), link));
                }
            }
            if let Some((file, link)) = found {
                let _ = std::fs::rename(&file, self.maildir.join("cur").join(file.file_name().expect("name")));
                return link;
            }
            assert!(tokio::time::Instant::now() < deadline, "no mail to {to} with a {path} link");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs `node tests/browser/<script>` with `args`, prints what it printed,
/// and checks it passed: exit 0 and a last line `N passed, 0 failed`, N > 0
/// (as `xnat_clients::run_driver` does for the Python clients). Answers that line.
async fn run_browser_driver(script: &str, args: &[String]) -> String {
    let script = root().join("tests").join("browser").join(script);
    let child = tokio::process::Command::new("node")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    let out = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
        .await
        .expect("the browser driver timed out")
        .expect("wait for the browser driver");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    if !stderr.trim().is_empty() {
        println!("{} stderr:\n{stderr}", script.display());
    }
    let verdict = stdout.lines().last().unwrap_or_default().to_string();
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("not ok")).collect();
    assert!(
        out.status.success() && verdict.ends_with(" passed, 0 failed") && !verdict.starts_with("0 "),
        "the browser run failed: {verdict}\n{}\n{stderr}\n(screenshots in target/browser-shots/, the whole output above)",
        failures.join("\n"),
    );
    verdict
}

#[tokio::test]
async fn web_console_in_a_real_browser() {
    ensure_chromium().await;
    BROWSER_MODULES.get_or_init(|| npm_ci("browser")).await;
    let shots = root().join("target").join("browser-shots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("create target/browser-shots");
    // The Maildir, the sink's log and the driver's report (kept for a look after a failure).
    let work = root().join("target").join("browser-run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("create target/browser-run");
    let maildir = work.join("maildir");
    let sink = SmtpSink::start(&maildir, &work.join("smtp.log")).await;

    // The OIDC redirect URI names the app's port, so the port is chosen first.
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let idp = Provider::start(&format!("{public}/api/v1/auth/oidc/{PROVIDER}/callback")).await;
    let provider = crate::oidc::provider_config(PROVIDER, &idp.issuer);
    let smtp_port = sink.port;
    let app = spawn_app_with(move |s| {
        s.bind = format!("127.0.0.1:{port}").parse().expect("addr");
        s.public_url = public;
        s.oidc.providers = vec![provider];
        s.email.smtp_host = "127.0.0.1".into();
        s.email.smtp_port = smtp_port;
        s.email.smtp_tls = "none".into();
        s.email.from = "registrar@example.test".into();
        s.auth.max_failed_logins = MAX_FAILED;
    })
    .await;

    let report_file = work.join("report.json");
    let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
    let args: Vec<String> = [
        ("--url", app.address.clone()),
        ("--admin", ADMIN.to_string()),
        ("--admin-password", ADMIN_PASSWORD.to_string()),
        ("--maildir", path(&maildir)),
        ("--oidc-issuer", idp.issuer.clone()),
        ("--oidc-name", PROVIDER.to_string()),
        ("--shots", path(&shots)),
        ("--max-failed", MAX_FAILED.to_string()),
        ("--report", path(&report_file)),
        ("--chromium", CHROMIUM.to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect();
    let verdict = run_browser_driver("drive.mjs", &args).await;
    println!("web console in Chromium: {verdict}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_file).expect("the driver's report"))
        .expect("report JSON");
    // What the browser typed or was shown: the suite's secrets audit looks
    // for these in the server's logs.
    for s in report["secrets"].as_array().expect("secrets") {
        crate::capture::secret(
            s["kind"].as_str().unwrap_or("secret"),
            s["value"].as_str().expect("secret value"),
            None,
        );
    }
    let user = |name: &str| {
        report["users"][name].as_str().unwrap_or_else(|| panic!("no user {name} in the report")).to_string()
    };
    let user_id = |name: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM users WHERE username = $1")
                .bind(&name)
                .fetch_one(&pool)
                .await
                .unwrap_or_else(|e| panic!("user {name}: {e}"))
                .to_string()
        }
    };
    let logged = |subject: String, actions: &[&str]| {
        let pool = app.pool.clone();
        let actions: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM change_log WHERE subject_id = $1 AND action = ANY($2)")
                .bind(&subject)
                .bind(actions)
                .fetch_one(&pool)
                .await
                .expect("change_log query")
        }
    };

    // The API key: stored as an HMAC of its secret, the plain key nowhere.
    let key = report["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .find(|s| s["kind"] == "api_key")
        .and_then(|s| s["value"].as_str())
        .expect("the run made an API key")
        .to_string();
    let prefix = report["api_key_prefix"].as_str().expect("the key's prefix");
    let key_secret = key.splitn(3, '_').nth(2).expect("rk_<prefix>_<secret>");
    let (hash, row): (Vec<u8>, String) =
        sqlx::query_as("SELECT secret_hash, k::text FROM api_keys k WHERE prefix = $1")
            .bind(prefix)
            .fetch_one(&app.pool)
            .await
            .expect("the key's row");
    assert_eq!(hash.len(), 32, "secret_hash is an HMAC-SHA256");
    assert_ne!(hash, key_secret.as_bytes(), "the secret is stored as is");
    assert!(!row.contains(key_secret), "api_keys holds the plain key: {row}");
    let in_log: i64 = sqlx::query_scalar("SELECT count(*) FROM change_log WHERE strpos(changes::text, $1) > 0")
        .bind(key_secret)
        .fetch_one(&app.pool)
        .await
        .expect("q");
    assert_eq!(in_log, 0, "the change log holds the plain key");
    let wendy = user_id(user("wendy")).await;
    let key_owner: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM change_log WHERE action = 'api_key.created' AND actor_id = $1::uuid AND changes->>'prefix' = $2",
    )
    .bind(&wendy)
    .bind(prefix)
    .fetch_one(&app.pool)
    .await
    .expect("q");
    assert_eq!(key_owner, 1, "api_key.created by the user who made it in the browser");

    // What each flow left in the database.
    assert_eq!(logged(wendy.clone(), &["user.created"]).await, 1, "the admin created the user on /admin/users/new");
    assert!(
        logged(wendy, &["password.reset", "password.changed"]).await >= 1,
        "the welcome link's password is in the change log"
    );
    let revoked = report["revoked_session"].as_str().expect("the revoked session's id").to_string();
    assert_eq!(
        logged(revoked.clone(), &["session.revoked"]).await,
        1,
        "session.revoked for the session revoked on /account/sessions"
    );
    let ended: bool = sqlx::query_scalar("SELECT revoked_at IS NOT NULL FROM sessions WHERE id = $1::uuid")
        .bind(&revoked)
        .fetch_one(&app.pool)
        .await
        .expect("the revoked session's row");
    assert!(ended, "the session revoked in the browser is revoked");
    for name in ["bulka", "bulkb"] {
        let disabled: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM change_log WHERE subject_id = $1 AND action = 'user.updated'
               AND changes->'enabled'->>'before' = 'true' AND changes->'enabled'->>'after' = 'false'",
        )
        .bind(user_id(user(name)).await)
        .fetch_one(&app.pool)
        .await
        .expect("q");
        assert_eq!(disabled, 1, "{name}: disabled once, by the bulk apply (never by the preview)");
    }
    assert_eq!(
        logged(user_id(user("victim")).await, &["user.updated"]).await,
        0,
        "the forged bulk apply changed nothing"
    );
    assert_eq!(
        logged(user_id(user("carol")).await, &["password.changed", "password.reset"]).await,
        0,
        "the forged password change changed nothing"
    );
    assert_eq!(logged(user_id(user("lockie")).await, &["user.locked"]).await, 1, "the lockout flow locked its user");
    let olive = user_id(user("olive")).await;
    let linked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM oidc_identities WHERE user_id = $1::uuid AND provider = $2")
            .bind(&olive)
            .bind(PROVIDER)
            .fetch_one(&app.pool)
            .await
            .expect("q");
    assert_eq!(linked, 1, "the OIDC login created the account linked to the provider");
}

/// Passkeys and the second-factor pages in Chromium with virtual
/// authenticators (`tests/browser/passkeys.mjs`): registration from the
/// console, username-less login, a passkey as the second step, removal, a
/// cloned credential refused, the authenticator-app enrolment with its QR
/// code (codes by oathtool), an administrator's reset. The server is reached
/// as `localhost`: WebAuthn needs a domain name.
#[tokio::test]
async fn passkeys_in_a_real_browser() {
    ensure_chromium().await;
    apt_install(&[crate::mfa::OATHTOOL], &["oathtool"]).await;
    BROWSER_MODULES.get_or_init(|| npm_ci("browser")).await;
    let shots = root().join("target").join("browser-shots-passkeys");
    let _ = std::fs::remove_dir_all(&shots);
    let port = free_port();
    let public = format!("http://localhost:{port}");
    let app = spawn_app_with(move |s| {
        s.bind = format!("127.0.0.1:{port}").parse().expect("addr");
        s.public_url = public;
        s.mfa.step_up_secs = 30;
    })
    .await;
    let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
    let args: Vec<String> = [
        ("--url", format!("http://localhost:{port}")),
        ("--admin", ADMIN.to_string()),
        ("--admin-password", ADMIN_PASSWORD.to_string()),
        ("--shots", path(&shots)),
        ("--chromium", CHROMIUM.to_string()),
        ("--oathtool", crate::mfa::OATHTOOL.to_string()),
        ("--step-up-secs", "30".to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect();
    let verdict = run_browser_driver("passkeys.mjs", &args).await;
    println!("passkeys in Chromium: {verdict}");

    // What the run left in the database: public keys only, the clone's
    // refusal logged, and (after the reset) no factor at all.
    let (passkeys, ceremonies): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM mfa_passkeys), (SELECT count(*) FROM webauthn_ceremonies WHERE expires_at > now())",
    )
    .fetch_one(&app.pool)
    .await
    .expect("counts");
    assert_eq!(passkeys, 0, "the administrator's reset removed every passkey");
    assert!(ceremonies <= 2, "finished ceremonies are gone (single use): {ceremonies} live");
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM change_log WHERE action LIKE 'mfa.passkey%' OR action = 'mfa.reset' ORDER BY at, id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("log");
    for wanted in ["mfa.passkey_registered", "mfa.passkey_removed", "mfa.passkey_refused", "mfa.reset"] {
        assert!(actions.iter().any(|a| a == wanted), "{wanted} logged: {actions:?}");
    }
    let methods: Vec<String> = sqlx::query_scalar("SELECT DISTINCT method FROM sessions ORDER BY method")
        .fetch_all(&app.pool)
        .await
        .expect("sessions");
    assert!(methods.iter().any(|m| m == "passkey"), "passkey logins recorded as such: {methods:?}");
}
