//! The change log: written on the same transaction (or in the same
//! statement) as the change it describes, read newest first.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{Error, Result};

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

/// One new entry in the change log's column names: entries travel to
/// PostgreSQL as one `jsonb` array that `jsonb_to_recordset` turns into
/// rows, so one fixed statement writes any number of them.
#[derive(Serialize)]
struct NewRow<'a> {
    actor_id: Option<Uuid>,
    actor_username: Option<&'a str>,
    actor_session_id: Option<Uuid>,
    actor_api_key_id: Option<Uuid>,
    subject_type: &'a str,
    subject_id: &'a str,
    action: &'a str,
    changes: &'a serde_json::Map<String, serde_json::Value>,
    request_id: Option<&'a str>,
    client_ip: Option<&'a str>,
}

/// The `jsonb` parameter that statements writing entries bind: the rows of
/// `entries`, in the shape their `jsonb_to_recordset(..) AS e(..)` expects.
pub fn rows(entries: &[crate::audit::Entry<'_>]) -> serde_json::Value {
    let rows: Vec<NewRow<'_>> = entries
        .iter()
        .map(|e| NewRow {
            actor_id: e.audit.actor_id,
            actor_username: e.audit.actor_username.as_deref(),
            actor_session_id: e.audit.session_id,
            actor_api_key_id: e.audit.api_key_id,
            subject_type: e.subject_type,
            subject_id: &e.subject_id,
            action: e.action,
            changes: e.changes.as_map(),
            request_id: e.audit.request_id.as_deref(),
            client_ip: e.audit.client_ip.as_deref(),
        })
        .collect();
    serde_json::to_value(rows).unwrap_or_default()
}

/// Appends `entries`. Pass the request's transaction so they commit or roll
/// back with the change they describe.
pub async fn write<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    entries: &[crate::audit::Entry<'_>],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO change_log (actor_id, actor_username, actor_session_id, actor_api_key_id,
                                 subject_type, subject_id, action, changes, request_id, client_ip)
         SELECT e.actor_id, e.actor_username, e.actor_session_id, e.actor_api_key_id,
                e.subject_type, e.subject_id, e.action, e.changes, e.request_id, e.client_ip
         FROM jsonb_to_recordset($1) AS e(actor_id uuid, actor_username text, actor_session_id uuid,
              actor_api_key_id uuid, subject_type text, subject_id text, action text, changes jsonb,
              request_id text, client_ip text)",
        rows(entries),
    )
    .execute(exec)
    .await?;
    Ok(())
}

/// Entries about a user, newest first, before the cursor `before` (an id).
pub async fn about_user(pool: &PgPool, user_id: Uuid, before: Option<i64>, limit: i64) -> Result<Vec<Entry>, Error> {
    Ok(sqlx::query_as!(
        Entry,
        "SELECT id, at, actor_id, actor_username, actor_session_id, actor_api_key_id, subject_type,
                subject_id, action, changes, request_id, client_ip
         FROM change_log WHERE subject_type = 'user' AND subject_id = $1
           AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        user_id.to_string(),
        before,
        limit,
    )
    .fetch_all(pool)
    .await?)
}

/// Entries made by a user, newest first.
pub async fn by_actor(pool: &PgPool, user_id: Uuid, before: Option<i64>, limit: i64) -> Result<Vec<Entry>, Error> {
    Ok(sqlx::query_as!(
        Entry,
        "SELECT id, at, actor_id, actor_username, actor_session_id, actor_api_key_id, subject_type,
                subject_id, action, changes, request_id, client_ip
         FROM change_log WHERE actor_id = $1
           AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        user_id,
        before,
        limit,
    )
    .fetch_all(pool)
    .await?)
}

/// Every entry, newest first.
pub async fn all(pool: &PgPool, before: Option<i64>, limit: i64) -> Result<Vec<Entry>, Error> {
    Ok(sqlx::query_as!(
        Entry,
        "SELECT id, at, actor_id, actor_username, actor_session_id, actor_api_key_id, subject_type,
                subject_id, action, changes, request_id, client_ip
         FROM change_log WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        before,
        limit,
    )
    .fetch_all(pool)
    .await?)
}
