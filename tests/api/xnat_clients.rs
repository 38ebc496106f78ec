//! The real `pyxnat` and `xnat` (xnatpy) Python packages against a running
//! registrar. The virtualenv is created on first use under
//! `target/xnat-venv` from `tests/xnat_clients/requirements.txt` (or taken
//! from `REGISTRAR_XNAT_PYTHON`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::sync::OnceCell;

use crate::helpers::*;

static PYTHON: OnceCell<PathBuf> = OnceCell::const_new();

fn run(cmd: &mut std::process::Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub async fn python() -> &'static Path {
    PYTHON.get_or_init(|| venv("REGISTRAR_XNAT_PYTHON", "xnat-venv", "xnat_clients")).await
}

/// The python of `target/{name}`, created (or brought up to date) from
/// `tests/{requirements_dir}/requirements.txt`; `env_override` names a
/// variable that points at a ready python instead.
pub async fn venv(env_override: &str, name: &str, requirements_dir: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env_override) {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target").join(name);
    let py = venv.join("bin").join("python");
    let reqs = root.join("tests").join(requirements_dir).join("requirements.txt");
    let wanted = std::fs::read_to_string(&reqs).expect("requirements.txt");
    let marker = venv.join(".installed");
    // One at a time: two tests making the same virtualenv at once (`--clear`)
    // broke each other's, and the fallback's two `apt-get`s each other's lock.
    static MAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = MAKING.lock().await;
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        tokio::task::spawn_blocking(move || {
            let venv_ok = std::process::Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv)
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !venv_ok {
                // A bare Debian: Python's venv comes in its own package.
                run(std::process::Command::new("apt-get").args(["update", "-q"]), "apt-get update");
                run(
                    std::process::Command::new("apt-get")
                        .args(["install", "-y", "-q", "python3", "python3-venv", "python3-pip"])
                        .env("DEBIAN_FRONTEND", "noninteractive"),
                    "apt-get install python3-venv",
                );
                run(
                    std::process::Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv),
                    "python3 -m venv",
                );
            }
            run(
                std::process::Command::new(venv.join("bin").join("python"))
                    .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
                    .arg(&reqs),
                "pip install the client",
            );
            std::fs::write(&marker, wanted).expect("write marker");
        })
        .await
        .expect("join");
    }
    py
}

/// Runs `tests/{script}` (a real client's driver) with `py` and `args`, and
/// checks it passed: exit 0 and a last line `N passed, 0 failed`, N > 0.
/// Answers that line.
pub async fn run_driver(py: &Path, script: &Path, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(script);
    let child = tokio::process::Command::new(py)
        .arg(&path)
        .args(args)
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
    let name = script.display();
    assert!(out.status.success(), "{name} failed:\n{stdout}\n{stderr}");
    let verdict = stdout.lines().last().unwrap_or_default().to_string();
    assert!(verdict.ends_with("passed, 0 failed") && !verdict.starts_with("0 "), "{name}: {stdout}\n{stderr}");
    verdict
}

/// Sets up a user, a project owned by the admin and an invitation to a
/// second project, then runs one driver script and checks its verdict.
async fn drive(script: &str, user: &str, project: &str) {
    drive_with(script, user, project, &[]).await
}

async fn drive_with(script: &str, user: &str, project: &str, extra: &[&str]) {
    let py = python().await;
    let app = spawn_app().await;
    app.create_user(user, json!({"first_name": "Client", "last_name": "Tester", "verified": true})).await;
    let par_project = format!("{project}_PAR");
    for p in [project, par_project.as_str()] {
        app.post(
            "/api/v1/projects",
            &app.admin_token,
            json!({"id": p, "name": format!("Project {p}"), "pi": "Dr Who"}),
        )
        .await
        .expect(201);
    }
    app.post(
        &format!("/api/v1/projects/{par_project}/access-requests"),
        &app.admin_token,
        json!({"username": user, "level": "member"}),
    )
    .await
    .expect(201);
    let mut args = vec!["--url", &app.address, "--admin-user", ADMIN, "--admin-password", ADMIN_PASSWORD];
    args.extend(["--user", user, "--user-password", PASSWORD, "--project", project, "--par-project", &par_project]);
    args.extend(extra);
    let verdict = run_driver(py, &Path::new("xnat_clients").join(script), &args).await;
    println!("{script} {extra:?}: {verdict}");
    // What the clients did is in the database, not only in their output.
    let member: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_groups ug JOIN users u ON u.id = ug.user_id WHERE u.username = $1 AND ug.project_id = $2",
    )
    .bind(user)
    .bind(&par_project)
    .fetch_one(&app.pool)
    .await
    .expect("q");
    assert_eq!(member, 1, "{script}: the accepted invitation made {user} a member of {par_project}");
    let pars = app.count("SELECT count(*) FROM access_requests WHERE status = 'accepted'").await;
    assert_eq!(pars, 1);
}

#[tokio::test]
async fn pyxnat_drives_registrar() {
    drive("drive_pyxnat.py", "pyuser", "PY").await;
}

#[tokio::test]
async fn xnatpy_drives_registrar() {
    drive("drive_xnatpy.py", "xpuser", "XP").await;
}

/// xnatpy's default `xnat.connect(url, user, password)`: model parsing on,
/// built from registrar's `/xapi/schemas`.
#[tokio::test]
async fn xnatpy_default_connect_drives_registrar() {
    drive_with("drive_xnatpy.py", "xmuser", "XM", &["--parse-model"]).await;
}
