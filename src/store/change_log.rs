//! Reading the change log (it is written by `audit::record`).

use crate::domain::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Entry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub actor_username: Option<String>,
    pub actor_session_id: Option<Uuid>,
    pub actor_api_key_id: Option<Uuid>,
    pub subject_type: String,
    pub subject_id: String,
    pub action: String,
    #[schema(value_type = Object)]
    pub changes: serde_json::Value,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
}

const COLUMNS: &str = "id, at, actor_id, actor_username, actor_session_id, actor_api_key_id, subject_type,
    subject_id, action, changes, request_id, client_ip";

/// Entries about a user, newest first, before the cursor `before` (an id).
pub async fn about_user(pool: &PgPool, user_id: Uuid, before: Option<i64>, limit: i64) -> Result<Vec<Entry>, Error> {
    Ok(sqlx::query_as::<_, Entry>(&format!(
        "SELECT {COLUMNS} FROM change_log WHERE subject_type = 'user' AND subject_id = $1
           AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(user_id.to_string())
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Entries made by a user, newest first.
pub async fn by_actor(pool: &PgPool, user_id: Uuid, before: Option<i64>, limit: i64) -> Result<Vec<Entry>, Error> {
    Ok(sqlx::query_as::<_, Entry>(&format!(
        "SELECT {COLUMNS} FROM change_log WHERE actor_id = $1
           AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(user_id)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Every entry, newest first.
pub async fn all(pool: &PgPool, before: Option<i64>, limit: i64) -> Result<Vec<Entry>, Error> {
    Ok(sqlx::query_as::<_, Entry>(&format!(
        "SELECT {COLUMNS} FROM change_log WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
    ))
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
