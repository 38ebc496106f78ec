//! Second factors (migration `20261201000013_mfa`): a TOTP authenticator
//! (its secret sealed, see `service::mfa`), recovery codes (HMAC under the
//! pepper) and the challenges between a login's two steps (SHA-256).
//! Nothing here logs a secret or a code: the change log names the event.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{self, Audit, Changes};
use crate::auth::tokens::sha256;
use crate::domain::Error;

/// A user's TOTP authenticator.
pub struct Totp {
    pub secret_sealed: Vec<u8>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub last_step: Option<i64>,
}

pub async fn totp(conn: &mut PgConnection, user: Uuid) -> Result<Option<Totp>, Error> {
    Ok(sqlx::query_as!(Totp, "SELECT secret_sealed, confirmed_at, last_step FROM mfa_totp WHERE user_id = $1", user)
        .fetch_optional(&mut *conn)
        .await?)
}

/// Starts (or restarts) a pending TOTP enrolment. A confirmed authenticator
/// is never replaced this way: it must be removed first.
pub async fn begin_totp(conn: &mut PgConnection, audit: &Audit, user: Uuid, sealed: &[u8]) -> Result<bool, Error> {
    let started = sqlx::query_scalar!(
        "INSERT INTO mfa_totp (user_id, secret_sealed) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET secret_sealed = EXCLUDED.secret_sealed, created_at = now(), last_step = NULL
           WHERE mfa_totp.confirmed_at IS NULL
         RETURNING user_id",
        user,
        sealed
    )
    .fetch_optional(&mut *conn)
    .await?
    .is_some();
    if started {
        audit::record(&mut *conn, audit, "user", &user.to_string(), "mfa.totp_enrolment_started", Changes::new())
            .await?;
    }
    Ok(started)
}

/// Accepts time step `step` for the user's authenticator if no code of that
/// step or a later one was accepted before (a code is good once). Whether it
/// was accepted.
pub async fn accept_step(conn: &mut PgConnection, user: Uuid, step: i64) -> Result<bool, Error> {
    Ok(sqlx::query_scalar!(
        "UPDATE mfa_totp SET last_step = $2 WHERE user_id = $1 AND (last_step IS NULL OR last_step < $2)
         RETURNING user_id",
        user,
        step
    )
    .fetch_optional(&mut *conn)
    .await?
    .is_some())
}

/// Marks the pending authenticator confirmed; the user now has a factor.
pub async fn confirm_totp(conn: &mut PgConnection, audit: &Audit, user: Uuid) -> Result<bool, Error> {
    let done = sqlx::query_scalar!(
        "UPDATE mfa_totp SET confirmed_at = now() WHERE user_id = $1 AND confirmed_at IS NULL RETURNING user_id",
        user
    )
    .fetch_optional(&mut *conn)
    .await?
    .is_some();
    if done {
        refresh_enabled(conn, user).await?;
        audit::record(&mut *conn, audit, "user", &user.to_string(), "mfa.totp_enrolled", Changes::new()).await?;
    }
    Ok(done)
}

/// Removes the authenticator (pending or confirmed). Whether there was one.
pub async fn remove_totp(conn: &mut PgConnection, audit: &Audit, user: Uuid) -> Result<bool, Error> {
    let gone = sqlx::query_scalar!("DELETE FROM mfa_totp WHERE user_id = $1 RETURNING confirmed_at IS NOT NULL", user)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(was_confirmed) = gone else { return Ok(false) };
    refresh_enabled(conn, user).await?;
    let changes = Changes::new().set("was_confirmed", was_confirmed.unwrap_or(false));
    audit::record(&mut *conn, audit, "user", &user.to_string(), "mfa.totp_removed", changes).await?;
    Ok(true)
}

/// Replaces the user's recovery codes (the old ones die) with these hashes.
pub async fn replace_recovery_codes(
    conn: &mut PgConnection,
    audit: &Audit,
    user: Uuid,
    hashes: &[Vec<u8>],
) -> Result<(), Error> {
    sqlx::query!("DELETE FROM mfa_recovery_codes WHERE user_id = $1", user).execute(&mut *conn).await?;
    sqlx::query!(
        "INSERT INTO mfa_recovery_codes (user_id, code_hash) SELECT $1, h FROM unnest($2::bytea[]) AS h",
        user,
        hashes
    )
    .execute(&mut *conn)
    .await?;
    let changes = Changes::new().set("count", hashes.len() as i64);
    audit::record(&mut *conn, audit, "user", &user.to_string(), "mfa.recovery_codes_generated", changes).await?;
    Ok(())
}

/// Spends one recovery code (by its hash). Whether it was an unused one of the user's.
pub async fn use_recovery_code(conn: &mut PgConnection, audit: &Audit, user: Uuid, hash: &[u8]) -> Result<bool, Error> {
    let used = sqlx::query_scalar!(
        "UPDATE mfa_recovery_codes SET used_at = now() WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL
         RETURNING user_id",
        user,
        hash
    )
    .fetch_optional(&mut *conn)
    .await?
    .is_some();
    if used {
        let left = unused_recovery_codes(conn, user).await?;
        let changes = Changes::new().set("codes_left", left);
        audit::record(&mut *conn, audit, "user", &user.to_string(), "mfa.recovery_code_used", changes).await?;
    }
    Ok(used)
}

pub async fn unused_recovery_codes(conn: &mut PgConnection, user: Uuid) -> Result<i64, Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL"#,
        user
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// Removes every factor of a user (an administrator's reset). What was removed.
pub async fn reset(conn: &mut PgConnection, audit: &Audit, user: Uuid) -> Result<(bool, i64), Error> {
    let totp = sqlx::query_scalar!("DELETE FROM mfa_totp WHERE user_id = $1 RETURNING user_id", user)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    let codes = sqlx::query!("DELETE FROM mfa_recovery_codes WHERE user_id = $1", user)
        .execute(&mut *conn)
        .await?
        .rows_affected() as i64;
    let passkeys =
        sqlx::query!("DELETE FROM mfa_passkeys WHERE user_id = $1", user).execute(&mut *conn).await?.rows_affected()
            as i64;
    sqlx::query!("DELETE FROM mfa_challenges WHERE user_id = $1", user).execute(&mut *conn).await?;
    sqlx::query!("DELETE FROM webauthn_ceremonies WHERE user_id = $1", user).execute(&mut *conn).await?;
    refresh_enabled(conn, user).await?;
    let changes = Changes::new().set("totp", totp).set("passkeys", passkeys).set("recovery_codes", codes);
    audit::record(&mut *conn, audit, "user", &user.to_string(), "mfa.reset", changes).await?;
    Ok((totp, codes))
}

/// Keeps `users.mfa_enabled` equal to "has a confirmed factor" (a TOTP
/// authenticator or a passkey).
pub(crate) async fn refresh_enabled(conn: &mut PgConnection, user: Uuid) -> Result<(), Error> {
    sqlx::query!(
        "WITH f AS (SELECT EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL)
                        OR EXISTS (SELECT 1 FROM mfa_passkeys WHERE user_id = $1) AS has)
         UPDATE users SET mfa_enabled = f.has FROM f WHERE id = $1 AND mfa_enabled IS DISTINCT FROM f.has",
        user
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A challenge between a login's two steps, as the second step reads it.
pub struct Challenge {
    pub user_id: Uuid,
    pub first_factor: String,
    pub password_fp: Option<Vec<u8>>,
    pub tokens_not_before: DateTime<Utc>,
    pub user_agent: Option<String>,
}

pub struct NewChallenge<'a> {
    pub user_id: Uuid,
    pub first_factor: &'a str,
    pub password_fp: Option<Vec<u8>>,
    pub tokens_not_before: DateTime<Utc>,
    pub user_agent: Option<&'a str>,
    pub ttl_secs: i64,
}

pub async fn create_challenge(
    conn: &mut PgConnection,
    audit: &Audit,
    token: &str,
    c: NewChallenge<'_>,
) -> Result<(), Error> {
    // Old, spent or expired challenges of anyone go as new ones come.
    sqlx::query!("DELETE FROM mfa_challenges WHERE expires_at < now() - interval '1 hour'").execute(&mut *conn).await?;
    sqlx::query!(
        "INSERT INTO mfa_challenges (token_hash, user_id, first_factor, password_fp, tokens_not_before, user_agent,
                                     expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))",
        sha256(token),
        c.user_id,
        c.first_factor,
        c.password_fp,
        c.tokens_not_before,
        c.user_agent,
        c.ttl_secs as f64,
    )
    .execute(&mut *conn)
    .await?;
    let changes = Changes::new().set("first_factor", c.first_factor);
    audit::record(&mut *conn, audit, "user", &c.user_id.to_string(), "mfa.challenged", changes).await?;
    Ok(())
}

/// The live challenge `token` (not spent, not expired), locked for this transaction.
pub async fn live_challenge(conn: &mut PgConnection, token: &str) -> Result<Option<Challenge>, Error> {
    Ok(sqlx::query_as!(
        Challenge,
        "SELECT user_id, first_factor, password_fp, tokens_not_before, user_agent FROM mfa_challenges
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() FOR UPDATE",
        sha256(token)
    )
    .fetch_optional(&mut *conn)
    .await?)
}

pub async fn spend_challenge(conn: &mut PgConnection, token: &str) -> Result<(), Error> {
    sqlx::query!("UPDATE mfa_challenges SET used_at = now() WHERE token_hash = $1", sha256(token))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Counts one second-factor attempt *before* the code is checked (so that
/// parallel guesses cannot outrun the limit), refusing when the account is
/// locked. Second-factor failures have their own counter (migration
/// `20261201000015`): a right password never clears it. The count after
/// this attempt, or `None` when locked.
pub async fn reserve_factor_attempt(conn: &mut PgConnection, user: Uuid, max: i32) -> Result<Option<i32>, Error> {
    Ok(sqlx::query_scalar!(
        "UPDATE users SET
            mfa_failed_attempts = CASE WHEN locked_until <= now() THEN 1 ELSE mfa_failed_attempts + 1 END,
            failed_login_attempts = CASE WHEN locked_until <= now() THEN 0 ELSE failed_login_attempts END,
            locked_until = CASE WHEN locked_until <= now() THEN NULL ELSE locked_until END,
            last_login_attempt = now()
         WHERE id = $1
           AND (locked_until <= now() OR (locked_until IS NULL AND mfa_failed_attempts < $2))
         RETURNING mfa_failed_attempts",
        user,
        max
    )
    .fetch_optional(&mut *conn)
    .await?)
}

/// A wrong code: logged, and the account locked when the count reached the
/// limit. The lock's end, if it locked.
pub async fn factor_failed(
    conn: &mut PgConnection,
    audit: &Audit,
    user: Uuid,
    max: i32,
    lockout_secs: u64,
    method: &str,
) -> Result<Option<DateTime<Utc>>, Error> {
    let locked = sqlx::query_scalar!(
        "UPDATE users SET locked_until = now() + make_interval(secs => $3)
         WHERE id = $1 AND mfa_failed_attempts >= $2 AND locked_until IS NULL RETURNING locked_until",
        user,
        max,
        lockout_secs as f64,
    )
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    audit::record(&mut *conn, audit, "user", &user.to_string(), "mfa.failed", Changes::new().set("method", method))
        .await?;
    if let Some(until) = locked {
        let changes = Changes::new().set("locked_until", until.to_rfc3339()).set("reason", "second factor");
        audit::record(&mut *conn, audit, "user", &user.to_string(), "user.locked", changes).await?;
    }
    Ok(locked)
}

/// When a session last used a second factor is now (a step-up).
pub async fn stepped_up(
    conn: &mut PgConnection,
    audit: &Audit,
    session: Uuid,
    user: Uuid,
    method: &str,
) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE sessions SET mfa_at = now(), amr = CASE WHEN $3 = ANY (amr) THEN amr ELSE amr || $3 END
         WHERE id = $1 AND user_id = $2",
        session,
        user,
        method
    )
    .execute(&mut *conn)
    .await?;
    audit::record(&mut *conn, audit, "user", &user.to_string(), "mfa.step_up", Changes::new()).await?;
    Ok(())
}

/// The account as a login's second step needs it.
pub struct StepUser {
    pub username: String,
    pub enabled: bool,
    pub password_hash: Option<String>,
    pub tokens_not_before: DateTime<Utc>,
    pub mfa_enabled: bool,
}

pub async fn step_user(conn: &mut PgConnection, user: Uuid) -> Result<Option<StepUser>, Error> {
    Ok(sqlx::query_as!(
        StepUser,
        "SELECT username, enabled, password_hash, tokens_not_before, mfa_enabled FROM users WHERE id = $1",
        user
    )
    .fetch_optional(&mut *conn)
    .await?)
}

/// A password login's first step is done: its try is given back without
/// clearing the failure count (only the second factor does that).
pub async fn first_step_done(conn: &mut PgConnection, user: Uuid) -> Result<(), Error> {
    sqlx::query!("UPDATE users SET logins_in_flight = GREATEST(logins_in_flight - 1, 0) WHERE id = $1", user)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Marks a new session as one that may only enrol a second factor.
pub async fn enrollment_only(conn: &mut PgConnection, session: Uuid) -> Result<(), Error> {
    sqlx::query!("UPDATE sessions SET mfa_enrollment_only = true WHERE id = $1", session).execute(&mut *conn).await?;
    Ok(())
}

/// A factor was just enrolled in this session: it is a full session now,
/// with the factor used.
pub async fn enrolled_in(conn: &mut PgConnection, session: Uuid, user: Uuid, method: &str) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE sessions SET mfa_enrollment_only = false, mfa_at = now(),
                             amr = CASE WHEN $3 = ANY (amr) THEN amr ELSE amr || $3 END
         WHERE id = $1 AND user_id = $2",
        session,
        user,
        method
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The roles of a user (the enrolment policy's check).
pub async fn roles_of(conn: &mut PgConnection, user: Uuid) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar!("SELECT role FROM user_roles WHERE user_id = $1", user).fetch_all(&mut *conn).await?)
}

/// A second factor passed: the second-factor failures (this attempt's
/// reservation included) are cleared.
pub async fn factor_passed(conn: &mut PgConnection, user: Uuid) -> Result<(), Error> {
    sqlx::query!("UPDATE users SET mfa_failed_attempts = 0 WHERE id = $1 AND locked_until IS NULL", user)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Locks the user's row first, so that removing a factor and checking one
/// (which counts the attempt on the user's row, then reads the factor)
/// take their locks in the same order.
pub async fn lock_user(conn: &mut PgConnection, user: Uuid) -> Result<(), Error> {
    sqlx::query!("SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE", user).fetch_optional(&mut *conn).await?;
    Ok(())
}
