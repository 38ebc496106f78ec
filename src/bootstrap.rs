//! Start-up work that must happen once, whichever instance gets there
//! first: server secrets and the bootstrap administrator (also used by the
//! CLI's `admin create`).

use anyhow::Result;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;

use crate::auth::password::Hasher;
use crate::auth::tokens::{self, Keys};
use crate::config::Settings;
use crate::domain::Error;
use crate::store::secrets;

/// Start-up work that must happen once, whichever instance gets there first:
/// server secrets and the bootstrap administrator.
pub async fn bootstrap(settings: &Settings, pool: &PgPool) -> Result<Keys> {
    let configured = settings.auth.jwt_secret.expose_secret().as_bytes().to_vec();
    let settings2 = settings.clone();
    let (jwt, pepper) = crate::db::with_bootstrap_lock(pool, move |conn| {
        Box::pin(async move {
            let jwt = if configured.is_empty() {
                crate::db::server_secret(conn, "jwt_signing_key").await?
            } else {
                configured
            };
            let pepper = crate::db::server_secret(conn, "api_key_pepper").await?;
            // The first version of each rotating secret is the original.
            let stored_jwt = crate::db::server_secret(conn, "jwt_signing_key").await?;
            let first = |e: Error| anyhow::anyhow!("{e}");
            secrets::ensure_first(conn, tokens::JWT_SECRET, &stored_jwt).await.map_err(first)?;
            secrets::ensure_first(conn, tokens::PEPPER_SECRET, &pepper).await.map_err(first)?;
            ensure_admin(conn, &settings2).await?;
            Ok((jwt, pepper))
        })
    })
    .await?;
    let mut keys = Keys::new(&jwt, pepper, settings.auth.access_token_ttl_secs);
    if !settings.auth.jwt_secret.expose_secret().is_empty() {
        keys = keys.with_configured_jwt();
    }
    keys.set_versions(&secrets::all(pool).await.map_err(|e| anyhow::anyhow!("{e}"))?);
    Ok(keys)
}

/// Reloads the versions of the rotating secrets whenever they change
/// (`registrar_secrets`), on every instance.
pub fn follow_secrets(keys: Keys, pool: &PgPool) -> tokio::task::JoinHandle<()> {
    let own = pool.clone();
    crate::db::follow(pool, "registrar_secrets", move || {
        let (keys, pool) = (keys.clone(), own.clone());
        async move { reload_secrets(&keys, &pool).await }
    })
}

/// Reads the versions of the rotating secrets again.
pub async fn reload_secrets(keys: &Keys, pool: &PgPool) {
    match secrets::all(pool).await {
        Ok(rows) => keys.set_versions(&rows),
        Err(e) => tracing::warn!(error = %e, "could not reload the secret versions"),
    }
}

/// What `registrar admin rotate-secrets` did.
pub struct Rotation {
    pub jwt_version: Option<i32>,
    pub pepper_version: Option<i32>,
    pub jwt_pruned: Vec<i32>,
    pub peppers_pruned: Vec<i32>,
    pub keys_on_older_peppers: i64,
}

/// New versions of the JWT signing key and/or the API-key pepper (32
/// random bytes each), and the old versions nothing needs any more
/// dropped. Instances pick the new versions up at once (NOTIFY).
pub async fn rotate_secrets(settings: &Settings, pool: &PgPool, jwt: bool, pepper: bool) -> Result<Rotation> {
    use rand::RngCore;
    if jwt && !settings.auth.jwt_secret.expose_secret().is_empty() {
        anyhow::bail!("auth.jwt_secret is set in the configuration: rotate it there (or unset it to use stored keys)");
    }
    let e = |e: Error| anyhow::anyhow!("{e}");
    let mut tx = pool.begin().await?;
    let fresh = || {
        let mut b = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        b
    };
    let jwt_version =
        if jwt { Some(secrets::add_version(&mut tx, tokens::JWT_SECRET, &fresh()).await.map_err(e)?) } else { None };
    let pepper_version = if pepper {
        Some(secrets::add_version(&mut tx, tokens::PEPPER_SECRET, &fresh()).await.map_err(e)?)
    } else {
        None
    };
    let ttl = settings.auth.access_token_ttl_secs as f64;
    let jwt_pruned = secrets::prune_jwt_keys(&mut tx, ttl).await.map_err(e)?;
    let peppers_pruned = secrets::prune_peppers(&mut tx).await.map_err(e)?;
    let keys_on_older_peppers = secrets::keys_on_older_peppers(&mut tx).await.map_err(e)?;
    tx.commit().await?;
    Ok(Rotation { jwt_version, pepper_version, jwt_pruned, peppers_pruned, keys_on_older_peppers })
}

/// Creates the administrator when the database has no user at all. The
/// password is the configured one, or a generated one printed once.
async fn ensure_admin(conn: &mut sqlx::PgConnection, settings: &Settings) -> Result<()> {
    if crate::store::users::count(conn).await.map_err(|e| anyhow::anyhow!("{e}"))? > 0 {
        return Ok(());
    }
    let configured = settings.admin_password.expose_secret().to_string();
    let (password, generated) =
        if configured.is_empty() { (crate::auth::tokens::random_secret(), true) } else { (configured, false) };
    let hasher = Hasher::new(&settings.password, 1)?;
    create_admin(
        conn,
        settings,
        &hasher,
        &settings.admin_username,
        &settings.admin_email,
        SecretString::from(password.clone()),
        !generated,
    )
    .await?;
    if generated {
        // Printed to the console once, never logged.
        println!(
            "\n  Bootstrap administrator created.\n    username: {}\n    password: {}\n  Shown only now: store it, then change it.\n",
            settings.admin_username, password
        );
    } else {
        tracing::info!(username = %settings.admin_username, "bootstrap administrator created with the configured password");
    }
    Ok(())
}

/// Creates an enabled, verified administrator (used by bootstrap and the CLI).
pub async fn create_admin(
    conn: &mut sqlx::PgConnection,
    settings: &Settings,
    hasher: &Hasher,
    username: &str,
    email: &str,
    password: SecretString,
    check_policy: bool,
) -> Result<()> {
    let to_anyhow = |e: Error| anyhow::anyhow!("{}", e);
    let username = crate::domain::Username::parse(username)?;
    let email = crate::domain::Email::parse(email)?;
    if check_policy {
        hasher
            .check_policy(password.expose_secret(), username.as_str(), email.as_str())
            .map_err(|e| anyhow::anyhow!("the administrator password (admin_password) is refused: {}", e))?;
    }
    let _ = settings;
    let hash = hasher.hash(password).await.map_err(to_anyhow)?;
    let mut tx = sqlx::Connection::begin(conn).await?;
    crate::store::users::create(
        &mut tx,
        &crate::audit::Audit::system(),
        crate::store::users::NewUser {
            username,
            email,
            first_name: String::new(),
            last_name: String::new(),
            profile: Default::default(),
            password_hash: Some(hash),
            enabled: true,
            verified: true,
            roles: vec![crate::store::users::ADMIN_ROLE.to_string()],
        },
    )
    .await
    .map_err(to_anyhow)?;
    tx.commit().await?;
    Ok(())
}
