//! schemathesis (PyPI) against the served OpenAPI document, authenticated
//! as an administrator and as an ordinary user, with a bounded number of
//! examples: no operation may answer 5xx, and every answer's status code,
//! content type and body must be the documented ones.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

async fn schemathesis(app: &TestApp, key: &str) -> String {
    let py = crate::xnat_clients::python().await;
    let st = py.parent().expect("bin").join("st");
    let out = tokio::process::Command::new(st)
        .args([
            "run",
            &app.url("/api/v1/openapi.json"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "8",
        ])
        .args(["--phases", "examples,coverage,fuzzing", "--seed", "20261123", "--no-color"])
        // Logins and logouts would lock or end the caller's own account and session.
        .args(["--exclude-path-regex", "(auth/login|services/auth|JSESSION|logout)"])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), out)
        .await
        .expect("schemathesis timed out")
        .expect("run schemathesis");
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    text
}

#[tokio::test]
async fn no_operation_answers_5xx_to_generated_input() {
    let app = spawn_app().await;
    let admin_key =
        app.post("/api/v1/users/admin/api-keys", &app.admin_token, json!({"name": "fuzz"})).await.expect(201).json()
            ["key"]
            .as_str()
            .expect("key")
            .to_string();
    let user = app.user("fuzzed").await;
    let user_key = app.post("/api/v1/users/me/api-keys", &user, json!({"name": "fuzz"})).await.expect(201).json()
        ["key"]
        .as_str()
        .expect("key")
        .to_string();
    for key in [admin_key, user_key] {
        let text = schemathesis(&app, &key).await;
        let summary = text.lines().find(|l| l.contains(" generated, ")).unwrap_or_default();
        println!("schemathesis: {}", summary.trim());
        assert!(summary.trim_end().ends_with("passed") && !summary.contains("failure"), "{text}");
    }
}
