//! Single-use links sent by mail (migration `20261201000009`): password
//! reset, the welcome link of an account created without a password, and
//! email verification. Only the SHA-256 of a token is stored; a token is
//! bound to the address it was sent to, and a newer link of the same
//! purpose voids the older ones.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::auth::tokens;
use crate::domain::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    PasswordReset,
    Welcome,
    VerifyEmail,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::PasswordReset => "password_reset",
            Purpose::Welcome => "welcome",
            Purpose::VerifyEmail => "verify_email",
        }
    }
    fn parse(s: &str) -> Option<Purpose> {
        match s {
            "password_reset" => Some(Purpose::PasswordReset),
            "welcome" => Some(Purpose::Welcome),
            "verify_email" => Some(Purpose::VerifyEmail),
            _ => None,
        }
    }
}

/// A valid token's owner and purpose.
#[derive(Debug, Clone)]
pub struct Valid {
    pub user_id: Uuid,
    pub purpose: Purpose,
}

/// A new token for `user_id` at `email_key` (voiding their unused ones of
/// the same purpose). The token itself, to put in the mail.
pub async fn issue(
    conn: &mut PgConnection,
    purpose: Purpose,
    user_id: Uuid,
    email_key: &str,
    ttl: chrono::Duration,
) -> Result<String, Error> {
    sqlx::query!(
        "DELETE FROM email_tokens WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
        user_id,
        purpose.as_str()
    )
    .execute(&mut *conn)
    .await?;
    let token = tokens::random_secret();
    sqlx::query!(
        "INSERT INTO email_tokens (token_hash, purpose, user_id, email, expires_at) VALUES ($1, $2, $3, $4, now() + $5::interval)",
        tokens::sha256(&token),
        purpose.as_str(),
        user_id,
        email_key,
        sqlx::postgres::types::PgInterval::try_from(ttl).map_err(|e| Error::internal(anyhow::anyhow!(e)))?,
    )
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

/// Whether `token` is valid for one of `purposes` (unused, unexpired, and
/// its address still the account's), without using it.
pub async fn peek(conn: &mut PgConnection, token: &str, purposes: &[Purpose]) -> Result<Option<Valid>, Error> {
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    let wanted: Vec<String> = purposes.iter().map(|p| p.as_str().to_string()).collect();
    let row = sqlx::query!(
        "SELECT t.user_id, t.purpose FROM email_tokens t JOIN users u ON u.id = t.user_id
          WHERE t.token_hash = $1 AND t.purpose = ANY($2) AND t.used_at IS NULL AND t.expires_at > now()
            AND u.email_key = t.email",
        tokens::sha256(token),
        &wanted
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.and_then(|r| Purpose::parse(&r.purpose).map(|purpose| Valid { user_id: r.user_id, purpose })))
}

/// Uses `token` (once: a second use finds nothing), on the caller's
/// transaction.
pub async fn consume(conn: &mut PgConnection, token: &str, purposes: &[Purpose]) -> Result<Option<Valid>, Error> {
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    let wanted: Vec<String> = purposes.iter().map(|p| p.as_str().to_string()).collect();
    let row = sqlx::query!(
        "UPDATE email_tokens t SET used_at = now() FROM users u
          WHERE t.token_hash = $1 AND t.purpose = ANY($2) AND t.used_at IS NULL AND t.expires_at > now()
            AND u.id = t.user_id AND u.email_key = t.email
          RETURNING t.user_id, t.purpose",
        tokens::sha256(token),
        &wanted
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.and_then(|r| Purpose::parse(&r.purpose).map(|purpose| Valid { user_id: r.user_id, purpose })))
}
