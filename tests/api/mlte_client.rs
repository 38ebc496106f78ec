//! MLTE's own client (`mlte` 2.7.0, `mlte.store.user.underlying.http.HttpUserStore`)
//! against a running registrar: `tests/mlte_client/drive_mlte.py` logs in
//! through MLTE's OAuth client and drives users, groups and permissions.
//! The virtualenv is created on first use under `target/mlte-venv`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::helpers::*;

static PYTHON: OnceCell<PathBuf> = OnceCell::const_new();

#[tokio::test]
async fn mlte_client_drives_registrar() {
    let py =
        PYTHON.get_or_init(|| crate::xnat_clients::venv("REGISTRAR_MLTE_PYTHON", "mlte-venv", "mlte_client")).await;
    let app = spawn_app().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("mlte_client").join("drive_mlte.py");
    let child = tokio::process::Command::new(py)
        .arg(&script)
        .args(["--url", &app.address, "--admin-user", ADMIN, "--admin-password", ADMIN_PASSWORD])
        .env_remove("API_PREFIX")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python");
    let out = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .expect("client timed out")
        .expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "drive_mlte.py failed:\n{stdout}\n{stderr}");
    let verdict = stdout.lines().last().unwrap_or_default();
    assert!(verdict.ends_with("passed, 0 failed") && !verdict.starts_with("0 "), "{stdout}\n{stderr}");
    println!("drive_mlte.py: {verdict}");
    // What the client did is in the database and the change log.
    let perms = app.count("SELECT count(*) FROM group_permissions").await;
    assert!(perms > 0, "the client's groups hold permissions");
    let logged = app.count("SELECT count(*) FROM change_log WHERE action = 'group.permissions_changed'").await;
    assert!(logged > 0, "permission changes are in the change log");
}
