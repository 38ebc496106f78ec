//! Sessions and refresh tokens. A session is one login; its access tokens
//! (JWTs) name it, so revoking it ends them at the next request.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{self, Audit, Changes};
use crate::auth::tokens;
use crate::domain::{Error, Result};
use crate::store::change_log;
use crate::store::users::LoginOk;

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    pub method: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A new session's secrets, returned to the client once.
pub struct NewSession {
    pub id: Uuid,
    pub refresh_token: String,
    pub cookie_secret: String,
}

/// The secrets and row values of a session about to be written.
struct Fresh {
    id: Uuid,
    refresh: String,
    cookie: String,
    expires: DateTime<Utc>,
    user_agent: Option<String>,
}

impl Fresh {
    fn new(ttl_secs: u64, user_agent: Option<&str>) -> Fresh {
        Fresh {
            id: Uuid::new_v4(),
            refresh: tokens::random_secret(),
            cookie: tokens::random_secret(),
            expires: Utc::now() + Duration::seconds(i64::try_from(ttl_secs).unwrap_or(86_400)),
            user_agent: user_agent.map(|s| s.chars().take(512).collect()),
        }
    }

    /// The `session.created` entry (the session acting as itself).
    fn entry<'a>(&self, audit: &'a Audit, method: &'a str) -> audit::Entry<'a> {
        audit::Entry {
            audit,
            subject_type: "session",
            subject_id: self.id.to_string(),
            action: "session.created",
            changes: Changes::new().set("method", method),
        }
    }

    fn into_new(self) -> NewSession {
        NewSession { id: self.id, refresh_token: self.refresh, cookie_secret: self.cookie }
    }
}

/// Starts a session: the session, its refresh token and the change-log
/// entry, in one statement.
pub async fn create(
    conn: &mut PgConnection,
    audit: &Audit,
    user_id: Uuid,
    method: &str,
    ttl_secs: u64,
    user_agent: Option<&str>,
) -> Result<NewSession, Error> {
    create_bound(conn, audit, user_id, method, ttl_secs, user_agent, None).await
}

/// The API key a session was started with: its id and expiry. The session
/// ends with the key (migration `20261201000005`) and no later than it.
#[derive(Debug, Clone, Copy)]
pub struct KeyBound {
    pub key_id: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
}

/// `create`, for a session started with an API key when `key` is given.
pub async fn create_bound(
    conn: &mut PgConnection,
    audit: &Audit,
    user_id: Uuid,
    method: &str,
    ttl_secs: u64,
    user_agent: Option<&str>,
    key: Option<KeyBound>,
) -> Result<NewSession, Error> {
    let mut s = Fresh::new(ttl_secs, user_agent);
    if let Some(end) = key.and_then(|k| k.expires_at) {
        s.expires = s.expires.min(end);
    }
    let mut session_audit = audit.clone();
    session_audit.session_id = Some(s.id);
    let log = change_log::rows(&[s.entry(&session_audit, method)]);
    sqlx::query!(
        "WITH session AS (
             INSERT INTO sessions (id, user_id, method, expires_at, client_ip, user_agent, cookie_hash, api_key_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $10) RETURNING id
         ), refresh AS (
             INSERT INTO refresh_tokens (token_hash, session_id) SELECT $8, id FROM session
         )
         INSERT INTO change_log (actor_id, actor_username, actor_session_id, actor_api_key_id,
                                 subject_type, subject_id, action, changes, request_id, client_ip)
         SELECT e.actor_id, e.actor_username, e.actor_session_id, e.actor_api_key_id,
                e.subject_type, e.subject_id, e.action, e.changes, e.request_id, e.client_ip
         FROM jsonb_to_recordset($9) AS e(actor_id uuid, actor_username text, actor_session_id uuid,
              actor_api_key_id uuid, subject_type text, subject_id text, action text, changes jsonb,
              request_id text, client_ip text)",
        s.id,
        user_id,
        method,
        s.expires,
        audit.client_ip,
        s.user_agent,
        tokens::sha256(&s.cookie),
        tokens::sha256(&s.refresh),
        log,
        key.map(|k| k.key_id),
    )
    .execute(conn)
    .await?;
    Ok(s.into_new())
}

/// The session of a password login, written in one statement with the
/// login's bookkeeping: one round trip and one commit after the hash, all
/// or nothing, so it needs no transaction.
///
/// This is the whole login write, in one place. `login` resets the failure
/// counters, records the login and stores the upgraded hash if any, but only
/// while the password and the "not before" instant are those the attempt
/// was checked against (a password change or "log out everywhere" racing
/// the hash wins); every later part is written only if `login` matched. The
/// answer is the number of sessions written: 0 means the login went stale.
pub async fn create_for_login(
    pool: &sqlx::PgPool,
    audit: &Audit,
    ok: &LoginOk,
    ttl_secs: u64,
    user_agent: Option<&str>,
    amr: &[&str],
) -> Result<NewSession, Error> {
    let s = Fresh::new(ttl_secs, user_agent);
    let mut session_audit = audit.clone();
    session_audit.session_id = Some(s.id);
    // How it began: the first factor of `amr`.
    let method = match amr.first() {
        Some(&"hwk") => "passkey",
        Some(&"oidc") => "oidc",
        _ => "password",
    };
    let log = change_log::rows(&[ok.entry(audit), s.entry(&session_audit, method)]);
    let amr: Vec<String> = amr.iter().map(|a| a.to_string()).collect();
    // A second factor (a one-time code or a passkey) was used just now.
    let mfa = amr.iter().any(|a| a == "otp" || a == "hwk");
    let written = sqlx::query_scalar!(
        r#"WITH login AS (
               UPDATE users SET failed_login_attempts = 0, locked_until = NULL, last_successful_login = now(),
                                logins_in_flight = GREATEST(logins_in_flight - 1, 0),
                                password_hash = COALESCE($2, password_hash)
               WHERE id = $1 AND password_hash IS NOT DISTINCT FROM $3 AND tokens_not_before = $4
               RETURNING id
           ), session AS (
               INSERT INTO sessions (id, user_id, method, expires_at, client_ip, user_agent, cookie_hash, amr, mfa_at)
               SELECT $5, id, $14, $6, $7, $8, $9, $12, CASE WHEN $13 THEN now() END FROM login RETURNING id
           ), refresh AS (
               INSERT INTO refresh_tokens (token_hash, session_id) SELECT $10, id FROM session
           ), log AS (
               INSERT INTO change_log (actor_id, actor_username, actor_session_id, actor_api_key_id,
                                       subject_type, subject_id, action, changes, request_id, client_ip)
               SELECT e.actor_id, e.actor_username, e.actor_session_id, e.actor_api_key_id,
                      e.subject_type, e.subject_id, e.action, e.changes, e.request_id, e.client_ip
               FROM jsonb_to_recordset($11) AS e(actor_id uuid, actor_username text, actor_session_id uuid,
                    actor_api_key_id uuid, subject_type text, subject_id text, action text, changes jsonb,
                    request_id text, client_ip text)
               WHERE EXISTS (SELECT 1 FROM session)
           )
           SELECT count(*) AS "written!" FROM session"#,
        ok.user_id,
        ok.rehashed,
        ok.checked_hash,
        ok.not_before,
        s.id,
        s.expires,
        audit.client_ip,
        s.user_agent,
        tokens::sha256(&s.cookie),
        tokens::sha256(&s.refresh),
        log,
        &amr,
        mfa,
        method,
    )
    .fetch_one(pool)
    .await?;
    crate::store::users::ensure_written(pool, audit, ok, written).await?;
    Ok(s.into_new())
}

/// Outcome of presenting a refresh token.
pub enum Refreshed {
    Ok {
        session_id: Uuid,
        user_id: Uuid,
        refresh_token: String,
    },
    /// Unknown, expired, or its session is revoked.
    Invalid,
    /// An already used token: the session has been revoked.
    Reused,
}

/// Rotates a refresh token. Presenting an old (used) token again revokes the
/// whole session: someone else holds a copy.
pub async fn refresh(
    conn: &mut PgConnection,
    audit: &Audit,
    presented: &str,
    idle_secs: u64,
) -> Result<Refreshed, Error> {
    struct Row {
        session_id: Uuid,
        used_at: Option<DateTime<Utc>>,
        user_id: Uuid,
        username: String,
        enabled: bool,
        revoked_at: Option<DateTime<Utc>>,
        expires_at: DateTime<Utc>,
        last_seen_at: DateTime<Utc>,
    }
    if presented.len() > 128 {
        return Ok(Refreshed::Invalid);
    }
    let row = sqlx::query_as!(
        Row,
        "SELECT t.session_id, t.used_at, s.user_id, u.username, u.enabled, s.revoked_at, s.expires_at,
                s.last_seen_at
         FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id
         WHERE t.token_hash = $1 FOR UPDATE OF t, s",
        tokens::sha256(presented),
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(Refreshed::Invalid);
    };
    let mut audit = audit.clone().as_user(row.user_id, &row.username);
    audit.session_id = Some(row.session_id);
    let now = Utc::now();
    if row.revoked_at.is_some() || row.expires_at <= now || !row.enabled || idle(row.last_seen_at, idle_secs, now) {
        return Ok(Refreshed::Invalid);
    }
    if row.used_at.is_some() {
        revoke(conn, &audit, row.session_id, "refresh token reused").await?;
        return Ok(Refreshed::Reused);
    }
    let next = tokens::random_secret();
    sqlx::query!(
        "WITH used AS (UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1),
              seen AS (UPDATE sessions SET last_seen_at = now() WHERE id = $3)
         INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($2, $3)",
        tokens::sha256(presented),
        tokens::sha256(&next),
        row.session_id,
    )
    .execute(&mut *conn)
    .await?;
    audit::record(&mut *conn, &audit, "session", &row.session_id.to_string(), "session.refreshed", Changes::new())
        .await?;
    Ok(Refreshed::Ok { session_id: row.session_id, user_id: row.user_id, refresh_token: next })
}

/// Revokes one session. Returns false if it was unknown or already revoked.
pub async fn revoke(conn: &mut PgConnection, audit: &Audit, id: Uuid, reason: &str) -> Result<bool, Error> {
    let res = sqlx::query!("UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", id)
        .execute(&mut *conn)
        .await?;
    if res.rows_affected() == 0 {
        return Ok(false);
    }
    audit::record(
        &mut *conn,
        audit,
        "session",
        &id.to_string(),
        "session.revoked",
        Changes::new().set("reason", reason),
    )
    .await?;
    Ok(true)
}

/// Revokes every session of a user and invalidates every access token issued
/// until now ("not before").
pub async fn revoke_all(conn: &mut PgConnection, audit: &Audit, user_id: Uuid, reason: &str) -> Result<u64, Error> {
    let n = sqlx::query!("UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", user_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query!("UPDATE users SET tokens_not_before = now() WHERE id = $1", user_id).execute(&mut *conn).await?;
    audit::record(
        &mut *conn,
        audit,
        "user",
        &user_id.to_string(),
        "sessions.revoked_all",
        Changes::new().set("reason", reason).set("sessions", n),
    )
    .await?;
    Ok(n)
}

/// Keeps at most `keep` live `basic` sessions (started by HTTP Basic on XNAT
/// paths) of a user: the oldest beyond that end now, logged as
/// `session.revoked` with the reason `basic_session_cap`.
pub async fn cap_basic(conn: &mut PgConnection, audit: &Audit, user_id: Uuid, keep: u32) -> Result<u64, Error> {
    let ended = sqlx::query_scalar!(
        "UPDATE sessions SET revoked_at = now() WHERE id IN (
             SELECT id FROM sessions
             WHERE user_id = $1 AND method = 'basic' AND revoked_at IS NULL AND expires_at > now()
             ORDER BY created_at DESC, id DESC OFFSET $2)
         RETURNING id",
        user_id,
        i64::from(keep),
    )
    .fetch_all(&mut *conn)
    .await?;
    for id in &ended {
        audit::record(
            &mut *conn,
            audit,
            "session",
            &id.to_string(),
            "session.revoked",
            Changes::new().set("reason", "basic_session_cap"),
        )
        .await?;
    }
    Ok(ended.len() as u64)
}

/// Revokes every session of a user but `keep` (e.g. after a password change).
pub async fn revoke_others(
    conn: &mut PgConnection,
    audit: &Audit,
    user_id: Uuid,
    keep: Option<Uuid>,
) -> Result<u64, Error> {
    let n = sqlx::query!(
        "UPDATE sessions SET revoked_at = now()
         WHERE user_id = $1 AND revoked_at IS NULL AND ($2::uuid IS NULL OR id <> $2)",
        user_id,
        keep,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n > 0 {
        audit::record(
            &mut *conn,
            audit,
            "user",
            &user_id.to_string(),
            "sessions.revoked_others",
            Changes::new().set("sessions", n),
        )
        .await?;
    }
    Ok(n)
}

pub async fn list_active(conn: &mut PgConnection, user_id: Uuid) -> Result<Vec<SessionView>, Error> {
    Ok(sqlx::query_as!(
        SessionView,
        "SELECT id, method, created_at, last_seen_at, expires_at, client_ip, user_agent FROM sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now() ORDER BY created_at DESC",
        user_id,
    )
    .fetch_all(conn)
    .await?)
}

/// Every live session as (username, session id), by user name then age.
pub async fn active_everywhere(pool: &sqlx::PgPool) -> Result<Vec<(String, Uuid)>, Error> {
    Ok(sqlx::query!(
        "SELECT u.username, s.id FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.revoked_at IS NULL AND s.expires_at > now() ORDER BY lower(u.username), s.created_at"
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.username, r.id))
    .collect())
}

/// The owner of a session, for the permission check on revoke-one.
pub async fn owner(conn: &mut PgConnection, id: Uuid) -> Result<Option<(Uuid, String)>, Error> {
    Ok(sqlx::query!("SELECT u.id, u.username FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1", id)
        .fetch_optional(conn)
        .await?
        .map(|r| (r.id, r.username)))
}

/// Whether a session last seen at `last_seen` has been idle for longer than
/// `idle_secs` (0: sessions never idle out). "Last seen" is written at most
/// once a minute, so a session may live up to a minute past the limit.
pub fn idle(last_seen: DateTime<Utc>, idle_secs: u64, now: DateTime<Utc>) -> bool {
    idle_secs > 0 && (now - last_seen).num_seconds() > i64::try_from(idle_secs).unwrap_or(i64::MAX)
}
