//! Sessions and refresh tokens. A session is one login; its access tokens
//! (JWTs) name it, so revoking it ends them at the next request.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{self, Audit, Changes};
use crate::auth::tokens;
use crate::domain::{Error, Result};
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
    insert(conn, audit, user_id, method, ttl_secs, user_agent, None).await
}

/// The session of a password login, written in one statement with the
/// login's bookkeeping (`users::record_login`): one round trip and one
/// commit after the hash, all or nothing, so it needs no transaction.
pub async fn create_for_login(
    pool: &sqlx::PgPool,
    audit: &Audit,
    ok: &LoginOk,
    ttl_secs: u64,
    user_agent: Option<&str>,
) -> Result<NewSession, Error> {
    insert(pool, audit, ok.user_id, "password", ttl_secs, user_agent, Some(ok)).await
}

async fn insert<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    audit: &Audit,
    user_id: Uuid,
    method: &str,
    ttl_secs: u64,
    user_agent: Option<&str>,
    login: Option<&LoginOk>,
) -> Result<NewSession, Error> {
    let id = Uuid::new_v4();
    let refresh = tokens::random_secret();
    let cookie = tokens::random_secret();
    let expires = Utc::now() + Duration::seconds(i64::try_from(ttl_secs).unwrap_or(86_400));
    let ua: Option<String> = user_agent.map(|s| s.chars().take(512).collect());
    let mut qb = sqlx::QueryBuilder::new("WITH ");
    if let Some(ok) = login {
        qb.push("login AS (");
        crate::store::users::push_login_update(&mut qb, ok);
        qb.push("), ");
    }
    // With a login, every part below is written only if the login's own
    // update matched (the password and "not before" it was checked against
    // are still the user's): all of it or none of it.
    qb.push(
        "session AS (INSERT INTO sessions (id, user_id, method, expires_at, client_ip, user_agent, cookie_hash)
         SELECT ",
    );
    qb.separated(", ")
        .push_bind(id)
        .push_bind(user_id)
        .push_bind(method.to_owned())
        .push_bind(expires)
        .push_bind(audit.client_ip.clone())
        .push_bind(ua)
        .push_bind(tokens::sha256(&cookie));
    if login.is_some() {
        qb.push(" FROM login");
    }
    qb.push(" RETURNING id), refresh AS (INSERT INTO refresh_tokens (token_hash, session_id) SELECT ")
        .push_bind(tokens::sha256(&refresh))
        .push(", id FROM session), log AS (");
    let mut session_audit = audit.clone();
    session_audit.session_id = Some(id);
    let mut entries = vec![audit::Entry {
        audit: &session_audit,
        subject_type: "session",
        subject_id: id.to_string(),
        action: "session.created",
        changes: Changes::new().set("method", method),
    }];
    if let Some(ok) = login {
        entries.insert(0, ok.entry(audit));
    }
    audit::push_insert_if(&mut qb, entries, "EXISTS (SELECT 1 FROM session)");
    qb.push(") SELECT count(*) FROM session");
    let written: i64 = qb.build_query_scalar().fetch_one(exec).await?;
    crate::store::users::ensure_written(written)?;
    Ok(NewSession { id, refresh_token: refresh, cookie_secret: cookie })
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
    #[derive(sqlx::FromRow)]
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
    let row = sqlx::query_as::<_, Row>(
        "SELECT t.session_id, t.used_at, s.user_id, u.username, u.enabled, s.revoked_at, s.expires_at,
                s.last_seen_at
         FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id
         WHERE t.token_hash = $1 FOR UPDATE OF t, s",
    )
    .bind(tokens::sha256(presented))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(Refreshed::Invalid);
    };
    let mut audit = audit.clone().as_user(row.user_id, &row.username);
    audit.session_id = Some(row.session_id);
    if row.revoked_at.is_some() || row.expires_at <= Utc::now() || !row.enabled || idle(row.last_seen_at, idle_secs) {
        return Ok(Refreshed::Invalid);
    }
    if row.used_at.is_some() {
        revoke(conn, &audit, row.session_id, "refresh token reused").await?;
        return Ok(Refreshed::Reused);
    }
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1")
        .bind(tokens::sha256(presented))
        .execute(&mut *conn)
        .await?;
    let next = tokens::random_secret();
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)")
        .bind(tokens::sha256(&next))
        .bind(row.session_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE sessions SET last_seen_at = now() WHERE id = $1")
        .bind(row.session_id)
        .execute(&mut *conn)
        .await?;
    audit::record(&mut *conn, &audit, "session", &row.session_id.to_string(), "session.refreshed", Changes::new())
        .await?;
    Ok(Refreshed::Ok { session_id: row.session_id, user_id: row.user_id, refresh_token: next })
}

/// Revokes one session. Returns false if it was unknown or already revoked.
pub async fn revoke(conn: &mut PgConnection, audit: &Audit, id: Uuid, reason: &str) -> Result<bool, Error> {
    let res = sqlx::query("UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
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
    let n = sqlx::query("UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query("UPDATE users SET tokens_not_before = now() WHERE id = $1").bind(user_id).execute(&mut *conn).await?;
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
    let ended: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = now() WHERE id IN (
             SELECT id FROM sessions
             WHERE user_id = $1 AND method = 'basic' AND revoked_at IS NULL AND expires_at > now()
             ORDER BY created_at DESC, id DESC OFFSET $2)
         RETURNING id",
    )
    .bind(user_id)
    .bind(i64::from(keep))
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
    let n = sqlx::query(
        "UPDATE sessions SET revoked_at = now()
         WHERE user_id = $1 AND revoked_at IS NULL AND ($2::uuid IS NULL OR id <> $2)",
    )
    .bind(user_id)
    .bind(keep)
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
    Ok(sqlx::query_as::<_, SessionView>(
        "SELECT id, method, created_at, last_seen_at, expires_at, client_ip, user_agent FROM sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now() ORDER BY created_at DESC",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?)
}

/// The owner of a session, for the permission check on revoke-one.
pub async fn owner(conn: &mut PgConnection, id: Uuid) -> Result<Option<(Uuid, String)>, Error> {
    Ok(sqlx::query_as::<_, (Uuid, String)>(
        "SELECT u.id, u.username FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Whether a session last seen at `last_seen` has been idle for longer than
/// `idle_secs` (0: sessions never idle out). "Last seen" is written at most
/// once a minute, so a session may live up to a minute past the limit.
pub fn idle(last_seen: DateTime<Utc>, idle_secs: u64) -> bool {
    idle_secs > 0 && (Utc::now() - last_seen).num_seconds() > i64::try_from(idle_secs).unwrap_or(i64::MAX)
}
