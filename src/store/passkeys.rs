//! Passkeys (migration `20261201000016_passkeys`): registered WebAuthn
//! credentials and the ceremonies in flight. The bytes are
//! `webauthn_rp`'s own encodings (`service::passkeys` makes and reads
//! them); nothing here is a secret, and the change log names the passkey,
//! never its key.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{self, Audit, Changes};
use crate::domain::Error;

/// A registered passkey as the owner sees it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Passkey {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// What an assertion is checked against.
pub struct Stored {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub credential_id: Vec<u8>,
    pub static_state: Vec<u8>,
    pub dynamic_state: Vec<u8>,
}

pub struct NewPasskey<'a> {
    pub user_id: Uuid,
    pub name: &'a str,
    pub credential_id: &'a [u8],
    pub transports: i16,
    pub static_state: &'a [u8],
    pub dynamic_state: &'a [u8],
}

pub async fn list(conn: &mut PgConnection, user: Uuid) -> Result<Vec<Passkey>, Error> {
    Ok(sqlx::query_as!(
        Passkey,
        "SELECT id, name, created_at, last_used_at FROM mfa_passkeys WHERE user_id = $1 ORDER BY created_at, id",
        user
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// The user's credential ids and transports (to exclude at registration).
pub async fn descriptors(conn: &mut PgConnection, user: Uuid) -> Result<Vec<(Vec<u8>, i16)>, Error> {
    Ok(sqlx::query!("SELECT credential_id, transports FROM mfa_passkeys WHERE user_id = $1", user)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| (r.credential_id, r.transports))
        .collect())
}

/// Stores a new passkey. `None` when the credential is already registered
/// (to anyone).
pub async fn insert(conn: &mut PgConnection, audit: &Audit, p: NewPasskey<'_>) -> Result<Option<Passkey>, Error> {
    let id = Uuid::now_v7();
    let row = sqlx::query_as!(
        Passkey,
        "INSERT INTO mfa_passkeys (id, user_id, credential_id, name, transports, static_state, dynamic_state)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (credential_id) DO NOTHING
         RETURNING id, name, created_at, last_used_at",
        id,
        p.user_id,
        p.credential_id,
        p.name,
        p.transports,
        p.static_state,
        p.dynamic_state
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = &row {
        crate::store::mfa::refresh_enabled(conn, p.user_id).await?;
        let changes = Changes::new().set("passkey", row.id.to_string()).set("name", row.name.clone());
        audit::record(&mut *conn, audit, "user", &p.user_id.to_string(), "mfa.passkey_registered", changes).await?;
    }
    Ok(row)
}

/// The credential `credential_id` of `user`, locked for this transaction.
pub async fn by_credential(conn: &mut PgConnection, user: Uuid, credential_id: &[u8]) -> Result<Option<Stored>, Error> {
    Ok(sqlx::query_as!(
        Stored,
        "SELECT id, user_id, name, credential_id, static_state, dynamic_state FROM mfa_passkeys
         WHERE user_id = $1 AND credential_id = $2 FOR UPDATE",
        user,
        credential_id
    )
    .fetch_optional(&mut *conn)
    .await?)
}

/// Records a use: the new dynamic state (signature counter) when it moved.
pub async fn used(conn: &mut PgConnection, id: Uuid, dynamic_state: Option<&[u8]>) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE mfa_passkeys SET last_used_at = now(), dynamic_state = COALESCE($2, dynamic_state) WHERE id = $1",
        id,
        dynamic_state
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn rename(
    conn: &mut PgConnection,
    audit: &Audit,
    user: Uuid,
    id: Uuid,
    name: &str,
) -> Result<Option<Passkey>, Error> {
    let before =
        sqlx::query_scalar!("SELECT name FROM mfa_passkeys WHERE id = $1 AND user_id = $2 FOR UPDATE", id, user)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(before) = before else { return Ok(None) };
    let row = sqlx::query_as!(
        Passkey,
        "UPDATE mfa_passkeys SET name = $3 WHERE id = $1 AND user_id = $2 RETURNING id, name, created_at, last_used_at",
        id,
        user,
        name
    )
    .fetch_one(&mut *conn)
    .await?;
    if before != name {
        let changes = Changes::new().set("passkey", id.to_string()).field("name", before, name.to_string());
        audit::record(&mut *conn, audit, "user", &user.to_string(), "mfa.passkey_renamed", changes).await?;
    }
    Ok(Some(row))
}

/// Removes one passkey. Whether it was the user's.
pub async fn remove(conn: &mut PgConnection, audit: &Audit, user: Uuid, id: Uuid) -> Result<bool, Error> {
    let name = sqlx::query_scalar!("DELETE FROM mfa_passkeys WHERE id = $1 AND user_id = $2 RETURNING name", id, user)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(name) = name else { return Ok(false) };
    crate::store::mfa::refresh_enabled(conn, user).await?;
    let changes = Changes::new().set("passkey", id.to_string()).set("name", name);
    audit::record(&mut *conn, audit, "user", &user.to_string(), "mfa.passkey_removed", changes).await?;
    Ok(true)
}

/// A ceremony in flight, as it is finished.
pub struct Ceremony {
    pub user_id: Option<Uuid>,
    pub bound: Option<Vec<u8>>,
    pub state: Vec<u8>,
}

pub struct NewCeremony<'a> {
    pub challenge: &'a [u8],
    pub purpose: &'a str,
    pub user_id: Option<Uuid>,
    pub bound: Option<&'a [u8]>,
    pub state: &'a [u8],
    pub expires_at: DateTime<Utc>,
}

pub async fn start_ceremony(conn: &mut PgConnection, c: NewCeremony<'_>) -> Result<(), Error> {
    // Expired ceremonies of anyone go as new ones come.
    sqlx::query!("DELETE FROM webauthn_ceremonies WHERE expires_at < now()").execute(&mut *conn).await?;
    sqlx::query!(
        "INSERT INTO webauthn_ceremonies (challenge, purpose, user_id, bound, state, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        c.challenge,
        c.purpose,
        c.user_id,
        c.bound,
        c.state,
        c.expires_at
    )
    .execute(&mut *conn)
    .await?;
    if let Some(user) = c.user_id {
        // A user's ceremonies of one purpose: the newest few only (a
        // session asking for options in a loop makes no more rows).
        sqlx::query!(
            "DELETE FROM webauthn_ceremonies WHERE user_id = $1 AND purpose = $2 AND challenge NOT IN
               (SELECT challenge FROM webauthn_ceremonies WHERE user_id = $1 AND purpose = $2
                ORDER BY expires_at DESC LIMIT 5)",
            user,
            c.purpose
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Takes (single use) the live ceremony of `challenge` for `purpose`.
pub async fn take_ceremony(
    conn: &mut PgConnection,
    challenge: &[u8],
    purpose: &str,
) -> Result<Option<Ceremony>, Error> {
    Ok(sqlx::query_as!(
        Ceremony,
        "DELETE FROM webauthn_ceremonies WHERE challenge = $1 AND purpose = $2 AND expires_at > now()
         RETURNING user_id, bound, state",
        challenge,
        purpose
    )
    .fetch_optional(&mut *conn)
    .await?)
}
