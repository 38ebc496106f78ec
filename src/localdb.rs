//! A private PostgreSQL cluster for development and tests, Keycloak
//! `start-dev` style: used when no database URL is configured.
//!
//! The cluster lives in `<data_dir>/postgres`, listens on 127.0.0.1 only on a
//! port chosen at first start, and requires a password (SCRAM) that is
//! generated at `initdb` and kept in a file readable by its owner only.
//! PostgreSQL refuses to run as root, so as root the cluster is owned by and
//! run as the unprivileged `postgres` system user (created when missing).

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use rand::distributions::Alphanumeric;
use rand::Rng;
use sqlx::postgres::PgConnectOptions;

const SUPERUSER: &str = "registrar";

#[derive(Debug, Clone)]
pub struct LocalPostgres {
    pub cluster_dir: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<String>,
    pub port: u16,
    password: String,
    /// True when this process started the server (and so should stop it).
    pub started_here: bool,
}

impl LocalPostgres {
    /// Finds (or installs) the PostgreSQL binaries, creates the cluster on
    /// first use and starts it unless it is already running. Blocking.
    pub fn ensure_started(data_dir: &Path, bin_dir: &str, auto_install: bool) -> Result<LocalPostgres> {
        let bin_dir = find_binaries(bin_dir, auto_install)?;
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating data folder {}", data_dir.display()))?;
        let data_dir = data_dir.canonicalize().with_context(|| format!("resolving {}", data_dir.display()))?;
        let run_as = if is_root() { Some(ensure_pg_user()?) } else { None };
        let mut cluster_dir = data_dir.join("postgres");
        if let Some(user) = &run_as {
            if !reachable_by(user, &data_dir) {
                // e.g. a checkout under /root, which `postgres` cannot enter.
                let alt = PathBuf::from("/var/lib/registrar").join(format!("pg-{:016x}", fnv(&data_dir)));
                tracing::info!(
                    "{} is not reachable by the '{user}' user; keeping the cluster in {}",
                    data_dir.display(),
                    alt.display()
                );
                cluster_dir = alt;
            }
        }
        let mut pg =
            LocalPostgres { cluster_dir, bin_dir, run_as, port: 0, password: String::new(), started_here: false };
        pg.init_if_needed()?;
        pg.password = std::fs::read_to_string(pg.password_file())
            .context("reading the local database password")?
            .trim()
            .to_string();
        pg.start_if_needed()?;
        Ok(pg)
    }

    fn pgdata(&self) -> PathBuf {
        self.cluster_dir.join("pgdata")
    }
    fn password_file(&self) -> PathBuf {
        self.cluster_dir.join("superuser-password")
    }
    fn port_file(&self) -> PathBuf {
        self.cluster_dir.join("port")
    }
    fn log_file(&self) -> PathBuf {
        self.cluster_dir.join("postgres.log")
    }

    fn command(&self, program: &str) -> Command {
        let bin = self.bin_dir.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(bin);
                c
            }
            None => Command::new(bin),
        }
    }

    fn init_if_needed(&self) -> Result<()> {
        if self.pgdata().join("PG_VERSION").is_file() {
            return Ok(());
        }
        tracing::info!("creating a private PostgreSQL cluster in {}", self.cluster_dir.display());
        std::fs::create_dir_all(&self.cluster_dir)?;
        std::fs::set_permissions(&self.cluster_dir, std::fs::Permissions::from_mode(0o700))?;
        let password: String = rand::thread_rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect();
        let pwfile = self.password_file();
        std::fs::write(&pwfile, &password)?;
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))?;
        if let Some(user) = &self.run_as {
            chown_recursive(user, &self.cluster_dir)?;
        }
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.pgdata())
            .arg("-U")
            .arg(SUPERUSER)
            .arg("--auth=scram-sha-256")
            .arg("--encoding=UTF8")
            .arg("--locale=C")
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        // Loopback only, no Unix socket (its path length limit bites in deep folders).
        let conf = "\n# registrar private cluster\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nmax_connections = 300\nshared_buffers = 128MB\nfsync = on\n";
        let conf_path = self.pgdata().join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path)?;
        existing.push_str(conf);
        std::fs::write(&conf_path, existing)?;
        if let Some(user) = &self.run_as {
            chown_recursive(user, &self.cluster_dir)?;
        }
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(self.pgdata())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn start_if_needed(&mut self) -> Result<()> {
        let stored_port = std::fs::read_to_string(self.port_file()).ok().and_then(|s| s.trim().parse::<u16>().ok());
        if self.is_running() {
            self.port = stored_port.ok_or_else(|| anyhow!("local database is running but its port file is missing"))?;
            tracing::info!(port = self.port, "private PostgreSQL already running; reusing it");
            return Ok(());
        }
        let port = match stored_port {
            Some(p) if port_free(p) => p,
            _ => free_port()?,
        };
        std::fs::write(self.port_file(), port.to_string())?;
        let out = self
            .command("pg_ctl")
            .arg("start")
            .arg("-w")
            .arg("-t")
            .arg("60")
            .arg("-D")
            .arg(self.pgdata())
            .arg("-l")
            .arg(self.log_file())
            .arg("-o")
            .arg(format!("-p {port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            bail!(
                "starting the private PostgreSQL failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        self.port = port;
        self.started_here = true;
        tracing::info!(port, dir = %self.cluster_dir.display(), "started private PostgreSQL");
        Ok(())
    }

    /// Stops the cluster (fast shutdown: running transactions are rolled back).
    pub fn stop(&self) -> Result<()> {
        let out = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-w")
            .arg("-m")
            .arg("fast")
            .arg("-D")
            .arg(self.pgdata())
            .stdin(Stdio::null())
            .output()
            .context("running pg_ctl stop")?;
        if !out.status.success() {
            bail!("pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        tracing::info!("stopped private PostgreSQL");
        Ok(())
    }

    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(SUPERUSER)
            .password(&self.password)
            .database(database)
    }

    /// `postgres://` URL of a database of this cluster (contains the password).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}", self.password, self.port)
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn run_ok(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

fn ensure_pg_user() -> Result<String> {
    let user = "postgres";
    if run_ok(Command::new("id").arg("-u").arg(user)) {
        return Ok(user.to_string());
    }
    tracing::info!("creating system user '{user}' to run the private PostgreSQL");
    if !run_ok(Command::new("useradd").args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user])) {
        bail!("running as root, and could not create the unprivileged '{user}' user that PostgreSQL needs");
    }
    Ok(user.to_string())
}

fn reachable_by(user: &str, dir: &Path) -> bool {
    run_ok(Command::new("runuser").arg("-u").arg(user).arg("--").arg("test").arg("-x").arg(dir))
}

fn chown_recursive(user: &str, dir: &Path) -> Result<()> {
    if !run_ok(Command::new("chown").arg("-R").arg(format!("{user}:")).arg(dir)) {
        bail!("could not give {} to user {user}", dir.display());
    }
    Ok(())
}

fn fnv(path: &Path) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in path.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// The folder with `initdb`, `pg_ctl` and `postgres`: configured, else the
/// newest `/usr/lib/postgresql/*/bin`, else `PATH`. Installs Debian's
/// `postgresql` package when allowed and nothing is found.
fn find_binaries(configured: &str, auto_install: bool) -> Result<PathBuf> {
    if !configured.is_empty() {
        let dir = PathBuf::from(configured);
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
        bail!("local_db.bin_dir = {configured}: no initdb there");
    }
    if let Some(dir) = search_binaries() {
        return Ok(dir);
    }
    if !auto_install {
        bail!("PostgreSQL server binaries not found and local_db.auto_install = false; install PostgreSQL or set REGISTRAR_DATABASE_URL");
    }
    install_postgres()?;
    search_binaries().ok_or_else(|| anyhow!("installed PostgreSQL but still cannot find initdb"))
}

fn search_binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            return Some(dir);
        }
    }
    None
}

fn install_postgres() -> Result<()> {
    let sudo: &[&str] = if is_root() {
        &[]
    } else if run_ok(Command::new("sudo").arg("-n").arg("true")) {
        &["sudo", "-n"]
    } else {
        bail!("PostgreSQL is not installed and this user cannot install it; install it (Debian: apt-get install postgresql) or set REGISTRAR_DATABASE_URL");
    };
    if !run_ok(Command::new("sh").arg("-c").arg("command -v apt-get")) {
        bail!("PostgreSQL is not installed and apt-get is not available; install PostgreSQL or set REGISTRAR_DATABASE_URL");
    }
    eprintln!("PostgreSQL not found: installing Debian's postgresql package (once)...");
    let apt = |args: &[&str]| -> Result<()> {
        let mut parts: Vec<&str> = sudo.to_vec();
        parts.push("apt-get");
        parts.extend_from_slice(args);
        let status = Command::new(parts[0])
            .args(&parts[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("`apt-get {}` failed", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-q"])?;
    apt(&["install", "-y", "-q", "--no-install-recommends", "postgresql"])
}
