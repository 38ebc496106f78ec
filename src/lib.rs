//! registrar: a self-hosted user-management server.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod domain;
pub mod error;
pub mod front;
pub mod http;
pub mod json;
pub mod localdb;
pub mod mail;
pub mod metrics;
pub mod mlte;
pub mod op;
pub mod scim;
pub mod service;
pub mod startup;
pub mod state;
pub mod store;
/// The database plumbing (pool, migrations, server secrets), kept in `store`.
pub use store::db;
pub mod table;
pub mod telemetry;
pub mod tracker;
pub mod web;
pub mod xnat;

#[cfg(test)]
mod fuzz_tests;

use anyhow::{Context, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
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
    db::ensure_database(pg.connect_options("postgres"), "registrar").await?;
    let pool = db::pool(pg.connect_options("registrar"), &settings.database);
    Ok((pool, Some(pg)))
}
