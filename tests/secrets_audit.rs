//! The secrets audit: runs after the `api` suite (cargo runs test binaries in
//! name order) over what it captured (see `tests/api/capture.rs`): all log
//! output of every in-process server and every response body the helpers
//! received. No password, password hash, API key, refresh or access token,
//! session cookie, JWT signing key or API-key pepper may appear in a log
//! line, nor in any response but the one that issued it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;

use aho_corasick::AhoCorasick;
use base64::Engine;
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("test-capture")
}

#[derive(Debug, Clone)]
struct Secret {
    kind: String,
    value: String,
    issued_by: Option<u64>,
}

struct Body {
    n: u64,
    request: String,
    text: String,
}

/// Every place a secret shows where it must not. XNAT's `GET /data/JSESSION`
/// answers with the caller's own session id, as XNAT does.
fn leaks(secrets: &[Secret], logs: &str, bodies: &[Body]) -> Vec<String> {
    // One entry per value: a value also sent back by a test (a key used as a
    // Basic password, a refresh token presented) keeps the response that issued it.
    let mut by_value: HashMap<&str, Secret> = HashMap::new();
    for s in secrets {
        let e = by_value.entry(s.value.as_str()).or_insert_with(|| s.clone());
        if e.issued_by.is_none() {
            e.issued_by = s.issued_by;
            e.kind = s.kind.clone();
        }
    }
    let secrets: Vec<Secret> = by_value.into_values().collect();
    if secrets.is_empty() {
        return Vec::new();
    }
    let ac = AhoCorasick::new(secrets.iter().map(|s| s.value.as_str())).expect("automaton");
    let mut found = Vec::new();
    for m in ac.find_overlapping_iter(logs) {
        let s = &secrets[m.pattern().as_usize()];
        let start = logs[..m.start()].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let line: String = logs[start..].lines().next().unwrap_or_default().chars().take(200).collect();
        found.push(format!("{} in a log line: {line}", s.kind));
    }
    for b in bodies {
        for m in ac.find_overlapping_iter(&b.text) {
            let s = &secrets[m.pattern().as_usize()];
            let own_session = s.kind == "session_cookie" && b.request == "GET /data/JSESSION";
            if s.issued_by != Some(b.n) && !own_session {
                found.push(format!("{} in the response to {} (body #{})", s.kind, b.request, b.n));
            }
        }
    }
    found
}

fn read_capture() -> (Vec<Secret>, String, Vec<Body>) {
    let d = dir();
    let read = |name: &str| {
        std::fs::read_to_string(d.join(name))
            .unwrap_or_else(|_| panic!("no {name} in {}: run the whole suite (`cargo test`)", d.display()))
    };
    let secrets = read("secrets.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| Secret {
            kind: v["kind"].as_str().unwrap_or_default().to_string(),
            value: v["value"].as_str().unwrap_or_default().to_string(),
            issued_by: v["issued_by"].as_u64(),
        })
        .collect();
    let bodies = read("bodies.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| Body {
            n: v["n"].as_u64().unwrap_or_default(),
            request: v["request"].as_str().unwrap_or_default().to_string(),
            text: v["body"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    // The in-process servers' log, then every registrar child process's.
    let mut logs = read("logs.txt");
    let mut children: Vec<PathBuf> = std::fs::read_dir(&d)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    children.retain(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("child-")));
    children.sort();
    for child in children {
        logs.push_str(&std::fs::read_to_string(&child).unwrap_or_default());
    }
    (secrets, logs, bodies)
}

/// The secrets the servers kept in their databases: password hashes, the
/// JWT signing key and the API-key pepper (raw bytes as hex and base64).
async fn stored_secrets() -> Vec<Secret> {
    let url = std::env::var("REGISTRAR_TEST_DATABASE_URL").or_else(|_| std::env::var("DATABASE_URL")).ok();
    let url = match url {
        Some(u) => u,
        None => {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("test-pg");
            registrar::localdb::LocalPostgres::ensure_started(&dir, "", true).expect("test PostgreSQL").url("postgres")
        }
    };
    let admin = PgConnectOptions::from_str(&url).expect("url").disable_statement_logging();
    let mut conn = sqlx::PgConnection::connect_with(&admin).await.expect("connect");
    let dbs: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'rt\\_%'")
        .fetch_all(&mut conn)
        .await
        .expect("databases");
    let mut out = Vec::new();
    let secret = |kind: &str, value: String| Secret { kind: kind.into(), value, issued_by: None };
    for db in dbs {
        let Ok(mut c) = sqlx::PgConnection::connect_with(&admin.clone().database(&db)).await else { continue };
        let hashes: Vec<String> = sqlx::query_scalar("SELECT password_hash FROM users WHERE password_hash IS NOT NULL")
            .fetch_all(&mut c)
            .await
            .unwrap_or_default();
        out.extend(hashes.into_iter().map(|h| secret("password_hash", h)));
        let keys: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT name, value FROM server_secrets").fetch_all(&mut c).await.unwrap_or_default();
        for (name, value) in keys {
            out.push(secret(&name, hex::encode(&value)));
            out.push(secret(&name, base64::engine::general_purpose::STANDARD_NO_PAD.encode(&value)));
            out.push(secret(&name, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&value)));
        }
        c.close().await.ok();
    }
    out
}

#[tokio::test]
async fn no_secret_in_logs_or_responses_of_the_whole_suite() {
    let (mut secrets, logs, bodies) = read_capture();
    let issued = secrets.iter().filter(|s| s.issued_by.is_some()).count();
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for s in &secrets {
        *kinds.entry(s.kind.clone()).or_default() += 1;
    }
    let stored = stored_secrets().await;
    for s in &stored {
        *kinds.entry(s.kind.clone()).or_default() += 1;
    }
    secrets.extend(stored);
    // A capture this thin means the suite did not run or capture broke.
    let log_lines = logs.lines().count();
    assert!(
        log_lines > 1000 && bodies.len() > 1000 && issued > 100,
        "capture too small: {log_lines} log lines, {} bodies, {issued} issued secrets",
        bodies.len()
    );
    for kind in [
        "password",
        "access_token",
        "refresh_token",
        "key",
        "session_cookie",
        "password_hash",
        "jwt_signing_key",
        "api_key_pepper",
    ] {
        assert!(kinds.get(kind).copied().unwrap_or(0) > 0, "no {kind} was captured: {kinds:?}");
    }
    // Whatever the secret: no argon2 hash string anywhere.
    assert!(!logs.contains("$argon2"), "an argon2 hash in the logs");
    let found = leaks(&secrets, &logs, &bodies);
    println!(
        "secrets audit: {} secrets ({kinds:?}) against {log_lines} log lines and {} response bodies: {} leaks",
        secrets.len(),
        bodies.len(),
        found.len()
    );
    assert!(found.is_empty(), "secrets leaked:\n{}", found.iter().take(20).cloned().collect::<Vec<_>>().join("\n"));
}

/// The audit itself can fail: a planted leak in a log line, a secret in a
/// response other than its own, and the allowed cases.
#[test]
fn the_audit_finds_planted_leaks() {
    let s = |kind: &str, value: &str, issued_by| Secret { kind: kind.into(), value: value.into(), issued_by };
    let secrets = vec![
        s("refresh_token", "rt-0123456789abcdef", None),
        s("refresh_token", "rt-0123456789abcdef", Some(1)),
        s("password", "correct horse battery", None),
        s("session_cookie", "cookie-0123456789", Some(3)),
    ];
    let body = |n, request: &str, text: &str| Body { n, request: request.into(), text: text.into() };
    let clean = [
        body(1, "POST /api/v1/auth/login", r#"{"refresh_token":"rt-0123456789abcdef"}"#),
        body(2, "GET /api/v1/users/me", r#"{"username":"a"}"#),
        body(3, "PUT /data/services/auth", "cookie-0123456789"),
        body(4, "GET /data/JSESSION", "cookie-0123456789"),
    ];
    assert!(leaks(&secrets, "INFO served status=200\n", &clean).is_empty());
    let logs = "INFO served\nDEBUG login password=correct horse battery\n";
    let found = leaks(&secrets, logs, &clean);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("password in a log line"));
    let dirty = [body(2, "GET /api/v1/users/me/sessions", r#"[{"t":"rt-0123456789abcdef"}]"#)];
    let found = leaks(&secrets, "", &dirty);
    assert_eq!(found, vec!["refresh_token in the response to GET /api/v1/users/me/sessions (body #2)".to_string()]);
}
