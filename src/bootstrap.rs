//! Start-up work that must happen once, whichever instance gets there
//! first: server secrets and the bootstrap administrator (also used by the
//! CLI's `admin create`).

use anyhow::Result;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;

use crate::auth::password::Hasher;
use crate::auth::tokens::Keys;
use crate::config::Settings;
use crate::domain::Error;

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
            ensure_admin(conn, &settings2).await?;
            Ok((jwt, pepper))
        })
    })
    .await?;
    Ok(Keys::new(&jwt, pepper, settings.auth.access_token_ttl_secs))
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
