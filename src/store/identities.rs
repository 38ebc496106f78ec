//! OpenID Connect identity links (provider, subject) -> user, and the
//! server-side state of logins in flight.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{self, Audit, Changes};
use crate::domain::{Error, Result};

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Identity {
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

pub async fn of_user(conn: &mut PgConnection, user: Uuid) -> Result<Vec<Identity>, Error> {
    Ok(sqlx::query_as!(
        Identity,
        "SELECT provider, subject, email, created_at, last_login_at FROM oidc_identities
         WHERE user_id = $1 ORDER BY provider, subject",
        user,
    )
    .fetch_all(conn)
    .await?)
}

/// The user linked to (provider, subject), if any.
pub async fn find(conn: &mut PgConnection, provider: &str, subject: &str) -> Result<Option<Uuid>, Error> {
    Ok(sqlx::query_scalar!(
        "SELECT user_id FROM oidc_identities WHERE provider = $1 AND subject = $2 FOR UPDATE",
        provider,
        subject,
    )
    .fetch_optional(conn)
    .await?)
}

pub async fn link(
    conn: &mut PgConnection,
    audit: &Audit,
    user: Uuid,
    provider: &str,
    subject: &str,
    email: Option<&str>,
    how: &str,
) -> Result<(), Error> {
    sqlx::query!(
        "INSERT INTO oidc_identities (provider, subject, user_id, email, last_login_at) VALUES ($1, $2, $3, $4, now())",
        provider,
        subject,
        user,
        email,
    )
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        Error::on_constraint(e, |c| {
            (c == "oidc_identities_pkey")
                .then(|| Error::conflict("identity_in_use", "this identity is already linked to an account"))
        })
    })?;
    let changes = Changes::new().set("provider", provider).set("subject", subject).set("email", email).set("how", how);
    audit::record(&mut *conn, audit, "user", &user.to_string(), "identity.linked", changes).await?;
    Ok(())
}

pub async fn touch(conn: &mut PgConnection, provider: &str, subject: &str) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE oidc_identities SET last_login_at = now() WHERE provider = $1 AND subject = $2",
        provider,
        subject
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes a user's links to `provider`, unless that would leave the user
/// with no way to log in (no password and no other identity).
/// Unlinks every OpenID identity of a user who has a password (a password
/// reset that asked for it); one change-log entry per identity.
pub async fn unlink_all(conn: &mut PgConnection, audit: &Audit, user: Uuid) -> Result<u64, Error> {
    let gone: Vec<String> =
        sqlx::query_scalar!("DELETE FROM oidc_identities WHERE user_id = $1 RETURNING provider", user)
            .fetch_all(&mut *conn)
            .await?;
    for provider in &gone {
        crate::audit::record(
            &mut *conn,
            audit,
            "user",
            &user.to_string(),
            "identity.unlinked",
            crate::audit::Changes::new().set("provider", provider.as_str()),
        )
        .await?;
    }
    Ok(gone.len() as u64)
}

pub async fn unlink(conn: &mut PgConnection, audit: &Audit, user: Uuid, provider: &str) -> Result<u64, Error> {
    let has_password: bool =
        sqlx::query_scalar!(r#"SELECT password_hash IS NOT NULL AS "has!" FROM users WHERE id = $1 FOR UPDATE"#, user)
            .fetch_one(&mut *conn)
            .await?;
    let others: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM oidc_identities WHERE user_id = $1 AND provider <> $2"#,
        user,
        provider,
    )
    .fetch_one(&mut *conn)
    .await?;
    let subjects: Vec<String> =
        sqlx::query_scalar!("SELECT subject FROM oidc_identities WHERE user_id = $1 AND provider = $2", user, provider)
            .fetch_all(&mut *conn)
            .await?;
    if subjects.is_empty() {
        return Err(Error::not_found("identity_not_found", format!("no identity of provider '{provider}' is linked")));
    }
    if !has_password && others == 0 {
        return Err(Error::conflict(
            "last_login_method",
            "this identity is the account's only way to log in; set a password or link another provider first",
        ));
    }
    let n = sqlx::query!("DELETE FROM oidc_identities WHERE user_id = $1 AND provider = $2", user, provider)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let changes = Changes::new().set("provider", provider).set("subjects", subjects);
    audit::record(&mut *conn, audit, "user", &user.to_string(), "identity.unlinked", changes).await?;
    Ok(n)
}

/// A login in flight.
#[derive(Debug, sqlx::FromRow)]
pub struct LoginState {
    pub provider: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: Option<String>,
    pub link_user_id: Option<Uuid>,
}

#[allow(clippy::too_many_arguments)]
pub async fn save_state(
    conn: &mut PgConnection,
    state: &str,
    provider: &str,
    nonce: &str,
    verifier: &str,
    return_to: Option<&str>,
    link_user: Option<Uuid>,
    ttl_secs: u64,
) -> Result<(), Error> {
    // Old, abandoned logins go as new ones arrive.
    sqlx::query!("DELETE FROM oidc_states WHERE expires_at < now()").execute(&mut *conn).await?;
    sqlx::query!(
        "INSERT INTO oidc_states (state, provider, nonce, pkce_verifier, return_to, link_user_id, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        state,
        provider,
        nonce,
        verifier,
        return_to,
        link_user,
        Utc::now() + Duration::seconds(i64::try_from(ttl_secs).unwrap_or(600)),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes (deletes) a state: a second use finds nothing.
pub async fn take_state(conn: &mut PgConnection, state: &str, provider: &str) -> Result<Option<LoginState>, Error> {
    Ok(sqlx::query_as!(
        LoginState,
        "DELETE FROM oidc_states WHERE state = $1 AND provider = $2 AND expires_at > now()
         RETURNING provider, nonce, pkce_verifier, return_to, link_user_id",
        state,
        provider,
    )
    .fetch_optional(conn)
    .await?)
}

/// The `(user, provider, subject)` of every identity linked to one of `users`.
pub async fn subjects_of(pool: &sqlx::PgPool, users: &[Uuid]) -> Result<Vec<(Uuid, String, String)>, Error> {
    let rows = sqlx::query!(
        "SELECT user_id, provider, subject FROM oidc_identities WHERE user_id = ANY($1) ORDER BY provider, subject",
        users,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.user_id, r.provider, r.subject)).collect())
}
