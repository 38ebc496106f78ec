//! The `registrar` command: `serve` (default), `migrate`, `admin ...`.
#![forbid(unsafe_code)]

use std::io::BufRead;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use secrecy::SecretString;

use registrar::config::Settings;
use registrar::startup::Application;

#[derive(Parser)]
#[command(name = "registrar", version, about = "Self-hosted user management server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate {
        /// Print what would be applied (and any migration this build does
        /// not know, or whose text changed), and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Manage administrator accounts and the OpenID Provider's keys.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Manage the OpenID Provider's clients (relying parties).
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a client; prints one JSON object with `client_id` and, for a
    /// confidential client, `client_secret` (shown only now).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        #[arg(long = "post-logout-uri")]
        post_logout_uris: Vec<String>,
        /// No secret: PKCE only (a browser or native app).
        #[arg(long)]
        public: bool,
        /// Allowed scopes (default: openid profile email).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Allowed grant types (default: authorization_code refresh_token).
        #[arg(long = "grant-type")]
        grant_types: Vec<String>,
        /// Trusted: users are not asked for consent.
        #[arg(long)]
        first_party: bool,
        #[arg(long)]
        backchannel_logout_uri: Option<String>,
        /// The algorithm of the client's ID and access tokens: RS256 (default) or ES256.
        #[arg(long)]
        signing_alg: Option<String>,
    },
    /// List the registered clients (JSON).
    List,
    /// Delete a client and everything it was granted.
    Delete {
        #[arg(long)]
        client_id: String,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an administrator. The password is read from stdin with
    /// --password-stdin, otherwise generated and printed once.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password for a user and end their sessions.
    ResetPassword {
        #[arg(long)]
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Rotate the OpenID Provider's signing keys: new keys sign from now on,
    /// the old ones stay published until the tokens they signed expire.
    RotateKeys,
    /// Rotate the JWT signing key and the API-key pepper (both, unless one
    /// is named): new versions sign and hash from now on, on every
    /// instance at once; tokens signed before verify until they expire, and
    /// API keys keep working (each is re-hashed at its next use).
    RotateSecrets {
        /// Only the JWT signing key.
        #[arg(long, conflicts_with = "pepper_only")]
        jwt_only: bool,
        /// Only the API-key pepper.
        #[arg(long)]
        pepper_only: bool,
    },
    /// Make a SCIM provisioning credential (for /scim/v2 only) and print its
    /// token once on stdout. Owned by --owner, else the oldest administrator.
    ScimToken {
        #[arg(long)]
        name: String,
        #[arg(long)]
        owner: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("registrar: {e}");
            std::process::exit(2);
        }
    };
    let log = registrar::telemetry::init(settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            drop(log);
            eprintln!("registrar: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(run(cli.command.unwrap_or(Command::Serve), settings));
    // The log lines still waiting are written before the process ends.
    drop(log);
    if let Err(e) = result {
        eprintln!("registrar: {e:#}");
        std::process::exit(1);
    }
}

fn read_password(from_stdin: bool) -> Result<(SecretString, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
        let pw = line.trim_end_matches(['\n', '\r']).to_string();
        return Ok((SecretString::from(pw), false));
    }
    Ok((SecretString::from(registrar::auth::tokens::random_secret()), true))
}

async fn run(command: Command, settings: Settings) -> Result<()> {
    let (pool, local) = registrar::open_database(&settings).await?;
    let outcome = match command {
        Command::Serve => serve(settings, pool.clone()).await,
        Command::Migrate { dry_run: false } => {
            registrar::db::migrate(&pool).await.map(|_| println!("migrations applied"))
        }
        Command::Migrate { dry_run: true } => dry_run(&pool).await,
        Command::Admin { command } => admin(command, &settings, &pool).await,
        Command::Client { command } => client(command, &settings, &pool).await,
    };
    pool.close().await;
    if let Some(pg) = local.filter(|pg| pg.started_here) {
        if let Err(e) = tokio::task::spawn_blocking(move || pg.stop()).await? {
            tracing::warn!(error = %e, "could not stop the private PostgreSQL");
        }
    }
    outcome
}

async fn serve(settings: Settings, pool: sqlx::PgPool) -> Result<()> {
    let bind = settings.bind;
    let app = Application::build(settings, pool).await?;
    tracing::info!("registrar listening on http://{}:{}", bind.ip(), app.port());
    app.run_until_stopped().await?;
    tracing::info!("registrar stopped");
    Ok(())
}

async fn client(command: ClientCommand, settings: &Settings, pool: &sqlx::PgPool) -> Result<()> {
    registrar::db::migrate(pool).await?;
    let keys = registrar::bootstrap::bootstrap(settings, pool).await?;
    let audit = registrar::audit::Audit { actor_username: Some("cli".into()), ..Default::default() };
    match command {
        ClientCommand::Create {
            name,
            redirect_uris,
            post_logout_uris,
            public,
            scopes,
            grant_types,
            first_party,
            backchannel_logout_uri,
            signing_alg,
        } => {
            let req = registrar::service::oauth::ClientRequest {
                name,
                redirect_uris,
                post_logout_redirect_uris: post_logout_uris,
                public,
                scopes,
                grant_types,
                first_party,
                backchannel_logout_uri,
                signing_alg,
            };
            let (client, secret) = registrar::service::oauth::create_client(pool, &keys, &audit, req).await?;
            let mut out = serde_json::to_value(&client)?;
            if let Some(s) = secret {
                out["client_secret"] = serde_json::Value::String(s);
            }
            println!("{out}");
        }
        ClientCommand::List => {
            let mut conn = pool.acquire().await?;
            let list = registrar::store::oauth::list_clients(&mut conn).await?;
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        ClientCommand::Delete { client_id } => {
            registrar::service::oauth::delete_client(pool, &audit, &client_id).await?;
            println!("client '{client_id}' deleted");
        }
    }
    Ok(())
}

async fn admin(command: AdminCommand, settings: &Settings, pool: &sqlx::PgPool) -> Result<()> {
    registrar::db::migrate(pool).await?;
    let keys = registrar::bootstrap::bootstrap(settings, pool).await?;
    let hasher = registrar::auth::password::Hasher::new(&settings.password, 1)?;
    match command {
        AdminCommand::ScimToken { name, owner } => {
            let owner = match owner {
                Some(o) => {
                    let mut conn = pool.acquire().await?;
                    let user = registrar::store::users::get(&mut conn, &o, false).await?;
                    if !user.admin() {
                        anyhow::bail!("the owner of a provisioning credential must be an administrator");
                    }
                    user.id
                }
                None => registrar::service::scim::default_owner(pool).await?,
            };
            let audit = registrar::audit::Audit { actor_username: Some("cli".into()), ..Default::default() };
            let (_, token) = registrar::service::scim::create_credential(pool, &keys, &audit, owner, &name).await?;
            println!("{token}");
        }
        AdminCommand::Create { username, email, password_stdin } => {
            let (password, generated) = read_password(password_stdin)?;
            let shown = generated.then(|| secrecy::ExposeSecret::expose_secret(&password).to_string());
            let mut conn = pool.acquire().await?;
            registrar::bootstrap::create_admin(&mut conn, settings, &hasher, &username, &email, password, !generated)
                .await?;
            println!("administrator '{username}' created");
            if let Some(pw) = shown {
                println!("password: {pw}\n(shown only now)");
            }
        }
        AdminCommand::RotateSecrets { jwt_only, pepper_only } => {
            let r = registrar::bootstrap::rotate_secrets(settings, pool, !pepper_only, !jwt_only).await?;
            if let Some(v) = r.jwt_version {
                println!(
                    "JWT signing key: version {v} signs from now on; earlier versions verify the tokens they signed until those expire ({} s)",
                    settings.auth.access_token_ttl_secs
                );
            }
            if let Some(v) = r.pepper_version {
                println!("API-key pepper: version {v} hashes new keys; existing keys are re-hashed at their next use");
            }
            if !r.jwt_pruned.is_empty() {
                println!("dropped JWT signing key versions no token needs any more: {:?}", r.jwt_pruned);
            }
            if !r.peppers_pruned.is_empty() {
                println!("dropped pepper versions no live key uses any more: {:?}", r.peppers_pruned);
            }
            println!("live API keys still under an older pepper: {}", r.keys_on_older_peppers);
        }
        AdminCommand::RotateKeys => {
            // The old keys stay published while a token they signed may live.
            let keep = i64::try_from(settings.auth.access_token_ttl_secs).unwrap_or(900) + 60;
            let kids = registrar::op::keys::rotate(pool, keep).await?;
            println!("new signing keys: {}; the previous ones stay in the JWKS for {keep} s", kids.join(", "));
        }
        AdminCommand::ResetPassword { username, password_stdin } => {
            let (password, generated) = read_password(password_stdin)?;
            let shown = generated.then(|| secrecy::ExposeSecret::expose_secret(&password).to_string());
            // The same reset as a manager's through the API or XNAT.
            let user =
                registrar::service::users::reset_password(pool, &hasher, &username, password, !generated).await?;
            println!("password of '{}' reset; their sessions are revoked", user.username);
            if let Some(pw) = shown {
                println!("password: {pw}\n(shown only now)");
            }
        }
    }
    Ok(())
}

/// `registrar migrate --dry-run`: what `migrate` would do, on stdout.
async fn dry_run(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let plan = registrar::db::migration_plan(pool).await?;
    println!("{} migrations applied; {} to apply", plan.applied, plan.pending.len());
    for m in &plan.pending {
        println!("\n-- would apply {} {}\n{}", m.version, m.description, m.sql.trim_end());
    }
    for (version, description) in &plan.unknown {
        println!("\n-- applied by a newer release, unknown to this build (tolerated): {version} {description}");
    }
    for version in &plan.changed {
        println!("\n-- CHANGED since it was applied (migrate would stop): {version}");
    }
    if !plan.changed.is_empty() {
        anyhow::bail!("{} applied migrations differ from this build's", plan.changed.len());
    }
    Ok(())
}
