//! MLTE's own client (`mlte` 2.7.0, `mlte.store.user.underlying.http.HttpUserStore`)
//! against a running registrar: `tests/mlte_client/drive_mlte.py` logs in
//! through MLTE's OAuth client and drives users, groups and permissions.
//! The virtualenv is created on first use under `target/mlte-venv`.

use std::path::{Path, PathBuf};

use tokio::sync::OnceCell;

use crate::helpers::*;

static PYTHON: OnceCell<PathBuf> = OnceCell::const_new();

#[tokio::test]
async fn mlte_client_drives_registrar() {
    let py =
        PYTHON.get_or_init(|| crate::xnat_clients::venv("REGISTRAR_MLTE_PYTHON", "mlte-venv", "mlte_client")).await;
    let app = spawn_app().await;
    let args = ["--url", &app.address, "--admin-user", ADMIN, "--admin-password", ADMIN_PASSWORD];
    let verdict = crate::xnat_clients::run_driver(py, &Path::new("mlte_client").join("drive_mlte.py"), &args).await;
    println!("drive_mlte.py: {verdict}");
    // What the client did is in the database and the change log.
    let perms = app.count("SELECT count(*) FROM group_permissions").await;
    assert!(perms > 0, "the client's groups hold permissions");
    let logged = app.count("SELECT count(*) FROM change_log WHERE action = 'group.permissions_changed'").await;
    assert!(logged > 0, "permission changes are in the change log");
}
