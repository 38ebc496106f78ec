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

/// What a reader of the change log narrows it to. Every field is optional.
#[derive(Debug, Default, Clone)]
pub struct LogFilter {
    /// An action (`user.updated`), or every action starting with a prefix
    /// that ends with a dot (`user.`).
    pub action: Option<String>,
    /// Who made the change: their id (also after the account is gone)...
    pub actor_id: Option<Uuid>,
    /// ...or the username they had then (any case).
    pub actor_username: Option<String>,
    pub subject_type: Option<String>,
    /// From this time on (inclusive)...
    pub since: Option<DateTime<Utc>>,
    /// ...and before this one.
    pub until: Option<DateTime<Utc>>,
    /// The cursor: entries older than this id.
    pub before: Option<i64>,
    pub limit: i64,
}

/// `sqlx::query_as!` of change-log `Entry` rows, newest first: `$head` (the
/// part of the condition an index serves: a subject `$1` or an actor `$2`,
/// the other one `NULL`), then every `LogFilter` field.
macro_rules! select_log {
    ($head:literal, $subject:expr, $actor:expr, $f:expr) => {
        sqlx::query_as!(
            Entry,
            "SELECT id, at, actor_id, actor_username, actor_session_id, actor_api_key_id, subject_type,
                    subject_id, action, changes, request_id, client_ip
             FROM change_log WHERE "
                + $head
                + "
               AND ($3::text IS NULL OR action = $3 OR (right($3, 1) = '.' AND starts_with(action, $3)))
               AND ($4::uuid IS NULL OR actor_id = $4)
               AND ($5::text IS NULL OR lower(actor_username) = lower($5))
               AND ($6::text IS NULL OR subject_type = $6)
               AND ($7::timestamptz IS NULL OR at >= $7)
               AND ($8::timestamptz IS NULL OR at < $8)
               AND ($9::bigint IS NULL OR id < $9)
             ORDER BY id DESC LIMIT $10",
            $subject,
            $actor,
            $f.action,
            $f.actor_id,
            $f.actor_username,
            $f.subject_type,
            $f.since,
            $f.until,
            $f.before,
            $f.limit,
        )
    };
}

/// The user a name belongs to now, or belonged to before a rename.
pub async fn actor_named(pool: &PgPool, name: &str) -> Result<Option<Uuid>, Error> {
    if !name.is_ascii() {
        return Ok(None);
    }
    let key = name.to_ascii_lowercase();
    Ok(sqlx::query_scalar!(
        r#"SELECT id AS "id!" FROM users WHERE lower(username) = $1
           UNION ALL SELECT user_id FROM username_history WHERE name_key = $1 LIMIT 1"#,
        key
    )
    .fetch_optional(pool)
    .await?)
}

/// Entries about a user, newest first, narrowed by `f`.
pub async fn about_user(pool: &PgPool, user_id: Uuid, f: &LogFilter) -> Result<Vec<Entry>, Error> {
    let subject = Some(user_id.to_string());
    Ok(select_log!("subject_type = 'user' AND subject_id = $1 AND $2::uuid IS NULL", subject, None::<Uuid>, f)
        .fetch_all(pool)
        .await?)
}

/// Entries made by a user, newest first, narrowed by `f`.
pub async fn by_actor(pool: &PgPool, user_id: Uuid, f: &LogFilter) -> Result<Vec<Entry>, Error> {
    Ok(select_log!("actor_id = $2 AND $1::text IS NULL", None::<String>, Some(user_id), f).fetch_all(pool).await?)
}

/// Every entry, newest first, narrowed by `f`.
pub async fn all(pool: &PgPool, f: &LogFilter) -> Result<Vec<Entry>, Error> {
    Ok(select_log!("$1::text IS NULL AND $2::uuid IS NULL", None::<String>, None::<Uuid>, f).fetch_all(pool).await?)
}
