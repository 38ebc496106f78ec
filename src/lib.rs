//! registrar: a self-hosted user-management server.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod localdb;
pub mod service;
pub mod startup;
pub mod state;
pub mod store;
pub mod table;
pub mod telemetry;
pub mod xnat;

#[cfg(test)]
mod fuzz_tests;

use anyhow::{Context, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use std::str::FromStr;

use secrecy::ExposeSecret;

/// The configured database, or a private local cluster when none is
/// configured. Returns the pool and the local cluster (to stop on shutdown).
pub async fn open_database(settings: &config::Settings) -> Result<(PgPool, Option<localdb::LocalPostgres>)> {
    let url = settings.database_url.expose_secret();
    if !url.is_empty() {
        let options = PgConnectOptions::from_str(url).context("database_url is not a valid PostgreSQL URL")?;
        return Ok((db::pool(options, &settings.database), None));
    }
    let data_dir = settings.data_dir.clone();
    let bin_dir = settings.local_db.bin_dir.clone();
    let auto_install = settings.local_db.auto_install;
    let pg =
        tokio::task::spawn_blocking(move || localdb::LocalPostgres::ensure_started(&data_dir, &bin_dir, auto_install))
            .await??;
    ensure_database(pg.connect_options("postgres"), "registrar").await?;
    let pool = db::pool(pg.connect_options("registrar"), &settings.database);
    Ok((pool, Some(pg)))
}

/// Creates `name` on the server of `admin` if it does not exist yet.
pub async fn ensure_database(admin: PgConnectOptions, name: &str) -> Result<()> {
    let mut conn =
        admin.log_statements(tracing::log::LevelFilter::Debug).connect().await.context("connecting to PostgreSQL")?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        let quoted = name.replace('"', "\"\"");
        if let Err(e) = sqlx::query(&format!("CREATE DATABASE \"{quoted}\"")).execute(&mut conn).await {
            // Another instance may have created it at the same moment.
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await?;
            if !exists {
                return Err(e.into());
            }
        }
    }
    conn.close().await?;
    Ok(())
}
