//! Suite-wide capture for the secrets audit (`tests/secrets_audit.rs`, run
//! by `cargo test` after this binary): every log line of every in-process
//! server, every response body the helpers receive, and every secret the
//! tests send or are issued, with the response that issued it.
//! Files go to `target/test-capture/`; the audit fails on any secret found
//! in a log line or in a response other than the one that issued it.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("test-capture")
}

struct Files {
    bodies: Mutex<File>,
    secrets: Mutex<File>,
}

static FILES: OnceLock<Files> = OnceLock::new();
static NEXT: AtomicU64 = AtomicU64::new(1);

fn open(name: &str) -> File {
    File::create(dir().join(name)).expect("create capture file")
}

/// Starts the capture (once per test binary): truncates the files and
/// installs the global log subscriber at the most verbose level of our code.
pub fn init() {
    FILES.get_or_init(|| {
        std::fs::create_dir_all(dir()).expect("capture dir");
        let logs = open("logs.txt");
        let files = Files { bodies: Mutex::new(open("bodies.jsonl")), secrets: Mutex::new(open("secrets.jsonl")) };
        let filter = tracing_subscriber::EnvFilter::new("info,registrar=trace,actix_web=debug");
        let _ =
            tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(Mutex::new(logs)).try_init();
        files
    });
    secret("password", crate::helpers::PASSWORD, None);
    secret("password", crate::helpers::ADMIN_PASSWORD, None);
}

fn line(file: &Mutex<File>, v: Value) {
    if let Ok(mut f) = file.lock() {
        let _ = writeln!(f, "{v}");
    }
}

/// Records a secret; `issued_by` is the body number of the response that
/// handed it out (the one place it may appear).
pub fn secret(kind: &str, value: &str, issued_by: Option<u64>) {
    // Short values would match by accident; every real secret is longer.
    if value.len() < 12 {
        return;
    }
    if let Some(f) = FILES.get() {
        line(&f.secrets, json!({"kind": kind, "value": value, "issued_by": issued_by}));
    }
}

/// Records a response body; returns its number.
pub fn body(request: &str, status: u16, text: &str) -> u64 {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    if let Some(f) = FILES.get() {
        line(&f.bodies, json!({"n": n, "request": request, "status": status, "body": text}));
    }
    n
}

/// Secrets a request carries in its JSON body.
pub fn request_secrets(body: &Value) {
    for field in ["password", "new_password", "current_password", "refresh_token"] {
        if let Some(v) = body.get(field).and_then(Value::as_str) {
            secret(field, v, None);
        }
    }
}

/// Secrets a response hands out: tokens and keys in its body, session cookies.
pub fn issued_secrets(n: u64, text: &str, headers: &reqwest::header::HeaderMap) {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        for field in ["access_token", "refresh_token", "key"] {
            if let Some(s) = v.get(field).and_then(Value::as_str) {
                secret(field, s, Some(n));
            }
        }
    }
    for c in headers.get_all(reqwest::header::SET_COOKIE) {
        let Ok(c) = c.to_str() else { continue };
        let pair = c.split(';').next().unwrap_or_default();
        if let Some((name, value)) = pair.split_once('=') {
            if matches!(name, "registrar_session" | "__Host-registrar_session" | "JSESSIONID") {
                secret("session_cookie", value, Some(n));
            }
        }
    }
}

/// A log file for a registrar child process (`child-<name>.log`), which the
/// audit reads like the in-process servers' log.
pub fn child_log(name: &str) -> std::process::Stdio {
    static FRESH: OnceLock<()> = OnceLock::new();
    std::fs::create_dir_all(dir()).expect("capture dir");
    // The first child of this run clears the logs of earlier runs.
    FRESH.get_or_init(|| {
        for entry in std::fs::read_dir(dir()).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with("child-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    });
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir().join(format!("child-{name}.log")))
        .expect("child log");
    std::process::Stdio::from(file)
}
