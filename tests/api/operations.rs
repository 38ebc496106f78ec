//! Operations: the metrics endpoint and what it counts.

use serde_json::json;

use crate::helpers::*;

/// The value of the sample `name{labels}` (labels as written, in order), or
/// `None` when the scrape has no such sample.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn scrape(app: &TestApp) -> String {
    let r = app.get("/metrics", METRICS_TOKEN).await.expect(200);
    let ct = r.headers["content-type"].to_str().expect("ascii").to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    r.text
}

#[tokio::test]
async fn metrics_are_off_without_a_token_and_then_need_it() {
    let app = spawn_app_with(|s| s.metrics.token = String::new().into()).await;
    // Off by default: not even an administrator sees them.
    app.get("/metrics", &app.admin_token).await.expect(404);
    app.get("/metrics", "").await.expect(404);

    let app = spawn_app_with(|s| {
        s.rate_limits.login_per_account = 3;
        s.auth.max_failed_logins = 2;
    })
    .await;
    // Neither no credentials, an administrator's token, nor a near miss.
    app.get("/metrics", "").await.expect(401);
    app.get("/metrics", &app.admin_token).await.expect(401);
    app.get("/metrics", &METRICS_TOKEN[..METRICS_TOKEN.len() - 1]).await.expect(401);
    app.get("/metrics", &format!("{METRICS_TOKEN}x")).await.expect(401);
    for path in ["/metrics/", "//metrics", "/%6detrics"] {
        assert_ne!(app.get(path, "").await.status, 200, "{path}");
    }

    let before = scrape(&app).await;
    // A success, two failures that lock the account, a refusal while locked.
    app.create_user("mel", json!({})).await;
    let t = app.login("mel", PASSWORD).await;
    app.get("/api/v1/users/mel", &t).await.expect(200);
    app.get("/api/v1/users/nobody-here", &app.admin_token).await.expect(404);
    for _ in 0..2 {
        app.login_full("mel", "a wrong but long passphrase").await.expect(401);
    }
    assert_eq!(app.login_full("mel", PASSWORD).await.expect(429).code(), "rate_limited");
    let after = scrape(&app).await;

    let delta = |series: &str| sample(&after, series).unwrap_or(0.0) - sample(&before, series).unwrap_or(0.0);
    assert_eq!(delta(r#"registrar_logins_total{outcome="success"}"#), 1.0, "{after}");
    assert_eq!(delta(r#"registrar_logins_total{outcome="invalid"}"#), 2.0, "{after}");
    assert_eq!(delta(r#"registrar_logins_total{outcome="rate_limited"}"#), 1.0, "{after}");
    assert_eq!(delta("registrar_lockouts_total"), 1.0, "{after}");
    assert_eq!(delta(r#"registrar_rate_limited_total{limit="login_account"}"#), 1.0, "{after}");
    // Requests by route template and status class, never by raw path.
    let read = r#"{route="/api/v1/users/{username}",method="GET",status="2xx"}"#;
    assert!(delta(&format!("registrar_http_requests_total{read}")) >= 1.0, "{after}");
    assert!(delta(&format!("registrar_http_request_duration_seconds_count{read}")) >= 1.0, "{after}");
    let missing = r#"registrar_http_requests_total{route="/api/v1/users/{username}",method="GET",status="4xx"}"#;
    assert!(delta(missing) >= 1.0, "{after}");
    assert!(!after.contains("nobody-here") && !after.contains("/users/mel"), "a raw path became a label");
    // The gauges read at scrape time, and the hasher and cache counters.
    assert!(sample(&after, "registrar_db_pool_max_connections").is_some_and(|v| v >= 1.0), "{after}");
    assert!(sample(&after, "registrar_db_pool_connections").is_some_and(|v| v >= 1.0), "{after}");
    assert!(sample(&after, "registrar_argon2_queue_depth").is_some(), "{after}");
    assert!(delta("registrar_argon2_wait_seconds_count") >= 4.0, "{after}");
    assert!(delta("registrar_auth_cache_hits_total") + delta("registrar_auth_cache_misses_total") >= 2.0, "{after}");
    // Each write waits for its notification to come back: the lag is measured.
    assert!(sample(&after, "registrar_auth_notification_lag_seconds_count").is_some_and(|v| v >= 1.0), "{after}");
    assert!(after.trim_end().ends_with("# EOF"), "an OpenMetrics document ends with # EOF");
    // Every series the sample Grafana dashboard queries is in the scrape.
    let dashboard = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/grafana-dashboard.json"))
        .expect("config/grafana-dashboard.json");
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut queried = 0;
    for (at, _) in dashboard.match_indices("registrar_") {
        let name: String = dashboard[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if name.len() > "registrar_".len() {
            queried += 1;
            assert!(after.lines().any(|l| l.starts_with(&name)), "the dashboard queries {name}, which is not scraped");
        }
    }
    assert!(queried >= 12, "{queried}");
    // No secret in the scrape.
    assert!(!after.contains(METRICS_TOKEN) && !after.contains(&t) && !after.contains(PASSWORD));
}

/// `registrar migrate --dry-run` prints every migration it would apply, with
/// its SQL, and changes nothing; after `migrate` it has nothing to apply.
#[tokio::test]
async fn migrate_dry_run_prints_and_changes_nothing() {
    let db = empty_database().await;
    let url = database_url(db.get_database().expect("db name")).await;
    let run = |args: &'static [&'static str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_registrar"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("REGISTRAR_")) {
            cmd.env_remove(k);
        }
        let out = cmd.args(args).env("REGISTRAR_DATABASE_URL", &url).output().expect("run registrar");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let all = registrar::db::MIGRATOR.iter().count();
    let plan = run(&["migrate", "--dry-run"]);
    assert!(plan.starts_with(&format!("0 migrations applied; {all} to apply")), "{plan}");
    for m in registrar::db::MIGRATOR.iter() {
        assert!(plan.contains(&format!("-- would apply {} {}", m.version, m.description)), "{plan}");
    }
    assert!(plan.contains("CREATE UNLOGGED TABLE rate_limits"), "the SQL is printed");
    let pool = sqlx::PgPool::connect_with(db).await.expect("pool");
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(tables, 0, "a dry run creates nothing");
    run(&["migrate"]);
    let plan = run(&["migrate", "--dry-run"]);
    assert_eq!(plan.trim(), format!("{all} migrations applied; 0 to apply"));
}
