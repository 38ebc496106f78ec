//! Users: SQL and the rules around it (uniqueness, last-admin protection,
//! lockout). Every write takes the request's transaction and logs itself.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::audit::{self, Audit, Changes};
use crate::auth::password::Verified;
use crate::domain::{Email, Username};
use crate::domain::{Error, Result};
use crate::state::AppState;

pub const ADMIN_ROLE: &str = "Administrator";

/// Serialises admin-set changes so two requests cannot each remove "the
/// other" last administrator.
const ADMIN_SET_LOCK: i64 = 0x6164_6d69_6e73; // "admins"

#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    /// `domain::Email::key` of `email`: what comparisons use.
    pub email_key: String,
    pub first_name: String,
    pub last_name: String,
    pub enabled: bool,
    pub verified: bool,
    pub roles: Vec<String>,
    pub has_password: bool,
    pub password_updated: Option<DateTime<Utc>>,
    pub failed_login_attempts: i32,
    pub locked_until: Option<DateTime<Utc>>,
    pub last_login_attempt: Option<DateTime<Utc>>,
    pub last_successful_login: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub last_modified: DateTime<Utc>,
    /// XNAT's integer user id.
    pub xdat_user_id: i32,
    pub affiliation: String,
    pub contact: String,
    pub orcid: String,
    pub url: String,
    /// Has a confirmed second factor (`store::mfa`).
    pub mfa_enabled: bool,
}

impl User {
    pub fn admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN_ROLE)
    }
    pub fn locked(&self) -> bool {
        self.locked_until.is_some_and(|l| l > Utc::now())
    }
}

/// The native API's user object. No password hash, salt or other secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub affiliation: String,
    pub contact: String,
    pub orcid: String,
    pub url: String,
    pub enabled: bool,
    pub verified: bool,
    pub admin: bool,
    pub roles: Vec<String>,
    pub locked: bool,
    #[serde(serialize_with = "crate::json::optional_timestamp")]
    pub locked_until: Option<DateTime<Utc>>,
    pub failed_login_attempts: i32,
    #[serde(serialize_with = "crate::json::optional_timestamp")]
    pub last_successful_login: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::json::optional_timestamp")]
    pub last_login_attempt: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::json::optional_timestamp")]
    pub password_updated: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::json::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::json::timestamp")]
    pub last_modified: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(u: User) -> UserView {
        UserView {
            admin: u.admin(),
            locked: u.locked(),
            id: u.id,
            username: u.username,
            email: u.email,
            first_name: u.first_name,
            last_name: u.last_name,
            affiliation: u.affiliation,
            contact: u.contact,
            orcid: u.orcid,
            url: u.url,
            enabled: u.enabled,
            verified: u.verified,
            roles: u.roles,
            locked_until: u.locked_until,
            failed_login_attempts: u.failed_login_attempts,
            last_successful_login: u.last_successful_login,
            last_login_attempt: u.last_login_attempt,
            password_updated: u.password_updated,
            created_at: u.created_at,
            last_modified: u.last_modified,
        }
    }
}

/// `sqlx::query_as!` of `User` rows: the user columns of `users u`, then
/// `$tail` (the `FROM` clause on), with its arguments. The one place that
/// lists a user's columns; every statement that uses it is checked against
/// the schema at build time.
macro_rules! select_users {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        $crate::store::users::select_users!(as $crate::store::users::User, $tail $(, $arg)*)
    };
    // Into another row type that has the user's fields and the tail's columns.
    (as $row:path, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $row,
            r#"SELECT u.id, u.username, u.email, u.email_key, u.first_name, u.last_name, u.enabled, u.verified,
                      u.roles,
                      (u.password_hash IS NOT NULL) AS "has_password!", u.password_updated,
                      u.failed_login_attempts, u.locked_until, u.last_login_attempt, u.last_successful_login,
                      u.created_at, u.last_modified, u.xdat_user_id, u.affiliation, u.contact, u.orcid,
                      u.url, u.mfa_enabled "# + $tail $(, $arg)*
        )
    };
}
pub(crate) use select_users;

/// `user_not_found` for `name`.
pub fn not_found(name: &str) -> Error {
    Error::not_found("user_not_found", format!("user '{name}' not found"))
}

/// Maps the unique indexes on users to 409s.
pub fn unique_violation(err: sqlx::Error) -> Error {
    Error::on_constraint(err, |c| match c {
        "users_username_key" | "users_scim_user_name_key" => {
            Some(Error::conflict("username_taken", "a user with this username already exists"))
        }
        "users_email_key" => Some(Error::conflict("email_taken", "a user with this email already exists")),
        "users_pkey" => Some(Error::conflict("user_exists", "user already exists")),
        _ => None,
    })
}

pub async fn by_email(conn: &mut PgConnection, email: &Email) -> Result<Option<User>, Error> {
    Ok(select_users!("FROM users u WHERE u.email_key = $1", email.key()).fetch_optional(conn).await?)
}

/// The folded form of a username for lookups: usernames are ASCII, so any
/// other input names nobody (PostgreSQL's `lower()` would fold `İ` to `i`).
fn name_key(username: &str) -> Option<String> {
    username.is_ascii().then(|| username.to_ascii_lowercase())
}

pub async fn by_name(conn: &mut PgConnection, username: &str) -> Result<Option<User>, Error> {
    let Some(key) = name_key(username) else { return Ok(None) };
    Ok(select_users!("FROM users u WHERE lower(u.username) = $1", key).fetch_optional(conn).await?)
}

/// The username of XNAT's integer user id `id`.
pub async fn name_by_xdat_id(conn: &mut PgConnection, id: i32) -> Result<Option<String>, Error> {
    Ok(sqlx::query_scalar!("SELECT username FROM users WHERE xdat_user_id = $1", id).fetch_optional(conn).await?)
}

/// Reads a user by name or id (`domain::user_id_in`), 404 if absent. With
/// `lock`, the row is locked first (`FOR UPDATE`, waiting for whoever holds
/// it) and then read by a second statement, so what is read (the roles
/// too) includes what the previous holder committed: checks made on it
/// cannot race a concurrent change (say, a grant of Administrator).
pub async fn get(conn: &mut PgConnection, username: &str, lock: bool) -> Result<User, Error> {
    let id = match crate::domain::user_id_in(username) {
        Some(id) => Some(id),
        None => {
            let Some(key) = name_key(username) else { return Err(not_found(username)) };
            let found = if lock {
                sqlx::query_scalar!("SELECT id FROM users WHERE lower(username) = $1 FOR UPDATE", key)
                    .fetch_optional(&mut *conn)
                    .await?
            } else {
                let user =
                    select_users!("FROM users u WHERE lower(u.username) = $1", key).fetch_optional(&mut *conn).await?;
                if let Some(user) = user {
                    return Ok(user);
                }
                None
            };
            if found.is_none() {
                return Err(gone_or_renamed(conn, username, &key).await?);
            }
            found
        }
    };
    let Some(id) = id else { return Err(not_found(username)) };
    if lock {
        sqlx::query_scalar!("SELECT id FROM users WHERE id = $1 FOR UPDATE", id).fetch_optional(&mut *conn).await?;
    }
    select_users!("FROM users u WHERE u.id = $1", id).fetch_optional(conn).await?.ok_or_else(|| not_found(username))
}

/// Locks the rows of the users `names` name (by name or id; names nobody
/// has are skipped) in id order, the order every write over many users
/// takes (bulk actions, imports, a role's deletion): two such writes over
/// the same users then wait for each other, where locking them in two
/// orders made them deadlock (one answered 409 `concurrent_update`).
pub async fn lock_many(conn: &mut PgConnection, names: &[&str]) -> Result<(), Error> {
    let (mut ids, mut keys) = (Vec::new(), Vec::new());
    for name in names {
        match crate::domain::user_id_in(name) {
            Some(id) => ids.push(id),
            None => keys.extend(name_key(name)),
        }
    }
    sqlx::query_scalar!(
        "SELECT id FROM users WHERE id = ANY($1) OR lower(username) = ANY($2) ORDER BY id FOR UPDATE",
        &ids,
        &keys
    )
    .fetch_all(conn)
    .await?;
    Ok(())
}

/// The refusal for a name nobody has: 404 `user_renamed` naming the new
/// name when it is an old one, else `user_not_found`.
async fn gone_or_renamed(conn: &mut PgConnection, username: &str, key: &str) -> Result<Error, Error> {
    let now = sqlx::query_scalar!(
        "SELECT u.username FROM username_history h JOIN users u ON u.id = h.user_id WHERE h.name_key = $1",
        key
    )
    .fetch_optional(conn)
    .await?;
    Ok(match now {
        Some(now) => Error::not_found("user_renamed", format!("user '{username}' was renamed to '{now}'")),
        None => not_found(username),
    })
}

/// Whether a username is in use: by an account, or as an account's old name.
pub async fn name_taken(conn: &mut PgConnection, username: &str) -> Result<bool, Error> {
    let Some(key) = name_key(username) else { return Ok(false) };
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users WHERE lower(username) = $1 OR lower(scim_user_name) = $1)
               OR EXISTS (SELECT 1 FROM username_history WHERE name_key = $1) AS "taken!""#,
        key
    )
    .fetch_one(conn)
    .await?)
}

/// Renames `user` (locked by the caller's transaction) to `new`: the old
/// name is kept as theirs (`username_history`), taking back an old name of
/// their own drops it from there, another user's old name is taken (409).
/// Sessions, tokens and keys name the user by id and carry on; the change
/// log keeps each entry's name as it was and records `user.renamed`.
pub async fn rename(conn: &mut PgConnection, audit: &Audit, user: &User, new: &Username) -> Result<User, Error> {
    let new_key = new.as_str().to_ascii_lowercase();
    let old_key = user.username.to_ascii_lowercase();
    let holder = sqlx::query_scalar!("SELECT user_id FROM username_history WHERE name_key = $1", new_key)
        .fetch_optional(&mut *conn)
        .await?;
    if holder.is_some_and(|h| h != user.id) {
        return Err(Error::conflict("username_taken", "this username belonged to another account and stays theirs"));
    }
    // Nor is it another account's SCIM userName.
    let scim_holder = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users WHERE lower(scim_user_name) = $1 AND id <> $2) AS "taken!""#,
        new_key,
        user.id
    )
    .fetch_one(&mut *conn)
    .await?;
    if scim_holder {
        return Err(Error::conflict("username_taken", "a user with this username already exists"));
    }
    sqlx::query!("DELETE FROM username_history WHERE name_key = $1", new_key).execute(&mut *conn).await?;
    sqlx::query!("UPDATE users SET username = $2, last_modified = now() WHERE id = $1", user.id, new.as_str())
        .execute(&mut *conn)
        .await
        .map_err(unique_violation)?;
    if old_key != new_key {
        sqlx::query!(
            "INSERT INTO username_history (name_key, username, user_id) VALUES ($1, $2, $3)
             ON CONFLICT (name_key) DO UPDATE SET username = EXCLUDED.username, renamed_at = now()",
            old_key,
            user.username,
            user.id,
        )
        .execute(&mut *conn)
        .await?;
    }
    let changes = Changes::new().field("username", user.username.as_str(), new.as_str());
    audit::record(&mut *conn, audit, "user", &user.id.to_string(), "user.renamed", changes).await?;
    get_by_id(conn, user.id).await
}

/// Whether the user named `username` (case-insensitive) holds Administrator;
/// false for an unknown name.
pub async fn holds_admin(pool: &PgPool, username: &str) -> Result<bool, Error> {
    if let Some(id) = crate::domain::user_id_in(username) {
        return holds_admin_id(pool, id).await;
    }
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users u JOIN user_roles r ON r.user_id = u.id
                          WHERE lower(u.username) = $1 AND r.role = $2) AS "held!""#,
        name_key(username),
        ADMIN_ROLE,
    )
    .fetch_one(pool)
    .await?)
}

/// `holds_admin_id` inside a transaction.
pub async fn holds_admin_id_conn(conn: &mut PgConnection, id: Uuid) -> Result<bool, Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM user_roles WHERE user_id = $1 AND role = $2) AS "held!""#,
        id,
        ADMIN_ROLE
    )
    .fetch_one(conn)
    .await?)
}

/// `holds_admin` by user id.
pub async fn holds_admin_id(pool: &PgPool, id: Uuid) -> Result<bool, Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM user_roles WHERE user_id = $1 AND role = $2) AS "held!""#,
        id,
        ADMIN_ROLE
    )
    .fetch_one(pool)
    .await?)
}

pub async fn get_by_id(conn: &mut PgConnection, id: Uuid) -> Result<User, Error> {
    select_users!("FROM users u WHERE u.id = $1", id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| not_found(&id.to_string()))
}

/// The profile fields beyond the name (checked: `domain::parse_orcid`,
/// `domain::parse_url`, `domain::parse_text`); empty means unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub affiliation: String,
    pub contact: String,
    pub orcid: String,
    pub url: String,
}

pub struct NewUser {
    pub username: Username,
    pub email: Email,
    pub first_name: String,
    pub last_name: String,
    pub profile: Profile,
    pub password_hash: Option<String>,
    pub enabled: bool,
    pub verified: bool,
    pub roles: Vec<String>,
}

pub async fn create(conn: &mut PgConnection, audit: &Audit, new: NewUser) -> Result<User, Error> {
    let old_name = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM username_history WHERE name_key = $1) AS "held!""#,
        new.username.as_str().to_ascii_lowercase()
    )
    .fetch_one(&mut *conn)
    .await?;
    if old_name {
        return Err(Error::conflict("username_taken", "this username belonged to another account and stays theirs"));
    }
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO users (id, username, email, first_name, last_name, enabled, verified, password_hash, password_updated,
                            email_key, affiliation, contact, orcid, url)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $8::text IS NULL THEN NULL ELSE now() END, $9,
                 $10, $11, $12, $13)",
        id,
        new.username.as_str(),
        new.email.as_str(),
        new.first_name,
        new.last_name,
        new.enabled,
        new.verified,
        new.password_hash,
        new.email.key(),
        new.profile.affiliation,
        new.profile.contact,
        new.profile.orcid,
        new.profile.url,
    )
    .execute(&mut *conn)
    .await
    .map_err(unique_violation)?;
    for role in &new.roles {
        insert_role(conn, id, role).await?;
    }
    let mut changes = Changes::new()
        .field("username", serde_json::Value::Null, new.username.as_str())
        .field("email", serde_json::Value::Null, new.email.as_str())
        .field("first_name", serde_json::Value::Null, new.first_name.as_str())
        .field("last_name", serde_json::Value::Null, new.last_name.as_str())
        .field("affiliation", "", new.profile.affiliation.as_str())
        .field("contact", "", new.profile.contact.as_str())
        .field("orcid", "", new.profile.orcid.as_str())
        .field("url", "", new.profile.url.as_str())
        .field("enabled", serde_json::Value::Null, new.enabled)
        .field("verified", serde_json::Value::Null, new.verified);
    if !new.roles.is_empty() {
        changes = changes.field("roles", serde_json::Value::Null, new.roles.clone());
    }
    if new.password_hash.is_some() {
        changes = changes.secret("password");
    }
    audit::record(&mut *conn, audit, "user", &id.to_string(), "user.created", changes).await?;
    if new.verified && new.enabled {
        crate::store::access_requests::attach_email_invitations(conn, audit, id, new.email.key()).await?;
    }
    get_by_id(conn, id).await
}

async fn insert_role(conn: &mut PgConnection, user: Uuid, role: &str) -> Result<bool, Error> {
    let res = sqlx::query!(
        // FOR KEY SHARE: a role deleted while this waited is not granted
        // (404 below), instead of failing the foreign key (409).
        "INSERT INTO user_roles (user_id, role) SELECT $1, name FROM roles WHERE name = $2 FOR KEY SHARE \
         ON CONFLICT DO NOTHING",
        user,
        role,
    )
    .execute(&mut *conn)
    .await?;
    if res.rows_affected() == 0 {
        if !crate::store::roles::exists(conn, role).await? {
            return Err(Error::not_found("role_not_found", format!("role '{role}' does not exist")));
        }
        return Ok(false);
    }
    Ok(true)
}

/// Takes the admin-set lock and fails if `user` is the last enabled admin.
async fn ensure_not_last_admin(conn: &mut PgConnection, user: &User, what: &str) -> Result<(), Error> {
    if !(user.admin() && user.enabled) {
        return Ok(());
    }
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", ADMIN_SET_LOCK).execute(&mut *conn).await?;
    let others = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM users u JOIN user_roles r ON r.user_id = u.id
           WHERE r.role = $1 AND u.enabled AND u.id <> $2"#,
        ADMIN_ROLE,
        user.id,
    )
    .fetch_one(&mut *conn)
    .await?;
    if others == 0 {
        return Err(Error::conflict("last_admin", format!("cannot {what} the last enabled administrator")));
    }
    Ok(())
}

/// A partial update. `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct Patch {
    pub email: Option<Email>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub affiliation: Option<String>,
    pub contact: Option<String>,
    pub orcid: Option<String>,
    pub url: Option<String>,
    pub enabled: Option<bool>,
    pub verified: Option<bool>,
    pub admin: Option<bool>,
}

impl Patch {
    /// The profile after this patch.
    fn profile(&self, before: &User) -> Profile {
        let pick = |new: &Option<String>, old: &str| new.clone().unwrap_or_else(|| old.to_string());
        Profile {
            affiliation: pick(&self.affiliation, &before.affiliation),
            contact: pick(&self.contact, &before.contact),
            orcid: pick(&self.orcid, &before.orcid),
            url: pick(&self.url, &before.url),
        }
    }

    pub fn touches_privileged(&self) -> bool {
        self.enabled.is_some() || self.verified.is_some() || self.admin.is_some()
    }
}

/// Applies `patch` to the locked row and logs the differences. Disabling a
/// user revokes their sessions. Returns the updated user.
pub async fn update(conn: &mut PgConnection, audit: &Audit, username: &str, patch: Patch) -> Result<User, Error> {
    let before = get(conn, username, true).await?;
    if patch.enabled == Some(false) && before.enabled {
        ensure_not_last_admin(conn, &before, "disable").await?;
    }
    if patch.admin == Some(false) && before.admin() {
        ensure_not_last_admin(conn, &before, "demote").await?;
    }
    let email = patch.email.as_ref().map(|e| e.as_str().to_string()).unwrap_or_else(|| before.email.clone());
    let email_key = patch.email.as_ref().map(|e| e.key().to_string()).unwrap_or_else(|| before.email_key.clone());
    let first = patch.first_name.clone().unwrap_or_else(|| before.first_name.clone());
    let last = patch.last_name.clone().unwrap_or_else(|| before.last_name.clone());
    let enabled = patch.enabled.unwrap_or(before.enabled);
    // A changed email is no longer verified, unless the same request says so.
    let email_changed = email_key != before.email_key;
    let verified = patch.verified.unwrap_or(if email_changed { false } else { before.verified });
    let p = patch.profile(&before);
    let mut changes = Changes::new()
        .field("email", before.email.as_str(), email.as_str())
        .field("first_name", before.first_name.as_str(), first.as_str())
        .field("last_name", before.last_name.as_str(), last.as_str())
        .field("affiliation", before.affiliation.as_str(), p.affiliation.as_str())
        .field("contact", before.contact.as_str(), p.contact.as_str())
        .field("orcid", before.orcid.as_str(), p.orcid.as_str())
        .field("url", before.url.as_str(), p.url.as_str())
        .field("enabled", before.enabled, enabled)
        .field("verified", before.verified, verified);
    if !changes.is_empty() {
        sqlx::query!(
            "UPDATE users SET email = $2, first_name = $3, last_name = $4, enabled = $5, verified = $6,
                    email_key = $7, affiliation = $8, contact = $9, orcid = $10, url = $11, last_modified = now()
             WHERE id = $1",
            before.id,
            email,
            first,
            last,
            enabled,
            verified,
            email_key,
            p.affiliation,
            p.contact,
            p.orcid,
            p.url,
        )
        .execute(&mut *conn)
        .await
        .map_err(unique_violation)?;
    }
    if let Some(admin) = patch.admin.filter(|&a| a != before.admin()) {
        set_admin(conn, before.id, admin).await?;
        changes = changes.field("admin", before.admin(), admin);
    }
    if changes.is_empty() {
        return Ok(before);
    }
    audit::record(&mut *conn, audit, "user", &before.id.to_string(), "user.updated", changes).await?;
    if before.enabled && !enabled {
        crate::store::sessions::revoke_all(conn, audit, before.id, "user disabled").await?;
    }
    if verified && enabled && !(before.verified && before.enabled && !email_changed) {
        crate::store::access_requests::attach_email_invitations(conn, audit, before.id, &email_key).await?;
    }
    get_by_id(conn, before.id).await
}

/// Grants or takes the Administrator role (the caller checked the last-admin rule).
async fn set_admin(conn: &mut PgConnection, id: Uuid, admin: bool) -> Result<(), Error> {
    if admin {
        insert_role(conn, id, ADMIN_ROLE).await?;
    } else {
        delete_role(conn, id, ADMIN_ROLE).await?;
    }
    touch(conn, id).await
}

async fn touch(conn: &mut PgConnection, id: Uuid) -> Result<(), Error> {
    sqlx::query!("UPDATE users SET last_modified = now() WHERE id = $1", id).execute(conn).await?;
    Ok(())
}

async fn delete_role(conn: &mut PgConnection, user: Uuid, role: &str) -> Result<bool, Error> {
    let res = sqlx::query!("DELETE FROM user_roles WHERE user_id = $1 AND role = $2", user, role).execute(conn).await?;
    Ok(res.rows_affected() > 0)
}

pub async fn delete(conn: &mut PgConnection, audit: &Audit, username: &str) -> Result<User, Error> {
    let user = get(conn, username, true).await?;
    ensure_not_last_admin(conn, &user, "delete").await?;
    crate::store::projects::ensure_not_sole_owner(conn, user.id).await?;
    // Logged before the row goes; the log keeps the subject id and values.
    let changes = Changes::new()
        .field("username", user.username.as_str(), serde_json::Value::Null)
        .field("email", user.email.as_str(), serde_json::Value::Null)
        .field("roles", user.roles.clone(), serde_json::Value::Null);
    audit::record(&mut *conn, audit, "user", &user.id.to_string(), "user.deleted", changes).await?;
    sqlx::query!("DELETE FROM users WHERE id = $1", user.id).execute(&mut *conn).await?;
    Ok(user)
}

/// Outcome of applying several role changes at once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ItemResult {
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The refusal itself, for routes that change one item.
    #[serde(skip)]
    #[schema(ignore)]
    pub failure: Option<Error>,
}

impl ItemResult {
    pub fn ok(name: &str) -> ItemResult {
        ItemResult { name: name.to_string(), ok: true, error: None, failure: None }
    }
    pub fn failed(name: &str, e: Error) -> ItemResult {
        ItemResult { name: name.to_string(), ok: false, error: Some(e.to_string()), failure: Some(e) }
    }
    /// The failure as the error it was (`None` if the item applied).
    pub fn into_error(self) -> Option<Error> {
        self.failure
    }
}

/// Adds (`grant = true`) or removes roles, reporting per role. Unknown roles
/// fail alone; removing the Administrator role of the last admin fails alone.
pub async fn change_roles(
    conn: &mut PgConnection,
    audit: &Audit,
    username: &str,
    roles: &[String],
    grant: bool,
) -> Result<(User, Vec<ItemResult>), Error> {
    let user = get(conn, username, true).await?;
    let mut results = Vec::new();
    let mut changed = false;
    for role in roles {
        // Each role in its own savepoint: one that fails leaves nothing behind
        // and does not poison the others.
        let mut sp = sqlx::Connection::begin(&mut *conn).await?;
        let outcome = role_change(&mut sp, &user, role, grant).await;
        if outcome.is_ok() {
            sp.commit().await?;
        } else {
            sp.rollback().await?;
        }
        match outcome {
            Ok(()) => {
                changed = true;
                results.push(ItemResult::ok(role))
            }
            Err(e) if e.is_refusal() => results.push(ItemResult::failed(role, e)),
            Err(e) => return Err(e),
        }
    }
    let after = get_by_id(conn, user.id).await?;
    if changed && after.roles != user.roles {
        touch(conn, user.id).await?;
        let changes = Changes::new().field("roles", user.roles.clone(), after.roles.clone());
        audit::record(&mut *conn, audit, "user", &user.id.to_string(), "user.roles_changed", changes).await?;
    }
    Ok((get_by_id(conn, user.id).await?, results))
}

async fn role_change(conn: &mut PgConnection, user: &User, role: &str, grant: bool) -> Result<(), Error> {
    if grant {
        insert_role(conn, user.id, role).await.map(|_| ())
    } else if role == ADMIN_ROLE && user.roles.iter().any(|r| r == ADMIN_ROLE) {
        ensure_not_last_admin(conn, user, "demote").await?;
        delete_role(conn, user.id, role).await.map(|_| ())
    } else if user.roles.iter().any(|r| r == role) {
        delete_role(conn, user.id, role).await.map(|_| ())
    } else {
        if crate::store::roles::exists(conn, role).await? {
            Ok(())
        } else {
            Err(Error::not_found("role_not_found", format!("role '{role}' does not exist")))
        }
    }
}

/// Sets a new password hash, revokes the user's sessions other than
/// `keep_session`, and logs it (without the secret).
pub async fn set_password(
    conn: &mut PgConnection,
    audit: &Audit,
    user: &User,
    hash: String,
    keep_session: Option<Uuid>,
    action: &str,
) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE users SET password_hash = $2, password_updated = now(), last_modified = now(),
                failed_login_attempts = 0, locked_until = NULL WHERE id = $1",
        user.id,
        hash,
    )
    .execute(&mut *conn)
    .await?;
    audit::record(&mut *conn, audit, "user", &user.id.to_string(), action, Changes::new().secret("password")).await?;
    crate::store::sessions::revoke_others(conn, audit, user.id, keep_session).await?;
    Ok(())
}

pub async fn password_hash(conn: &mut PgConnection, id: Uuid) -> Result<Option<String>, Error> {
    Ok(sqlx::query_scalar!("SELECT password_hash FROM users WHERE id = $1", id).fetch_one(conn).await?)
}

pub async fn unlock(conn: &mut PgConnection, audit: &Audit, username: &str) -> Result<User, Error> {
    let user = get(conn, username, true).await?;
    sqlx::query!(
        "UPDATE users SET failed_login_attempts = 0, mfa_failed_attempts = 0, locked_until = NULL, last_modified = now()
         WHERE id = $1",
        user.id
    )
    .execute(&mut *conn)
    .await?;
    let changes = Changes::new().field("failed_login_attempts", user.failed_login_attempts, 0).field(
        "locked_until",
        serde_json::to_value(user.locked_until).unwrap_or_default(),
        serde_json::Value::Null,
    );
    audit::record(&mut *conn, audit, "user", &user.id.to_string(), "user.unlocked", changes).await?;
    get_by_id(conn, user.id).await
}

#[derive(sqlx::FromRow)]
struct LoginRow {
    id: Uuid,
    username: String,
    enabled: bool,
    password_hash: Option<String>,
    tokens_not_before: DateTime<Utc>,
    mfa_enabled: bool,
    /// The attempt count after reserving this attempt; `None` when locked.
    reserved: Option<i32>,
}

/// A password check that passed. Its bookkeeping (counters reset, rehash,
/// change log) is written by `record_login`, in the caller's transaction.
pub struct LoginOk {
    pub user_id: Uuid,
    pub username: String,
    pub(crate) rehashed: Option<String>,
    /// What the password was checked against, and the user's "not before"
    /// instant, as read when the attempt began: the login's writes happen
    /// only if neither changed since (a password change or "log out
    /// everywhere" racing the hash wins).
    pub(crate) checked_hash: Option<String>,
    pub(crate) not_before: DateTime<Utc>,
    /// The account has a second factor: the password alone is only a first step.
    pub mfa_enabled: bool,
}

/// A login whose password changed (or whose sessions were all revoked)
/// while it was being checked: refused like a wrong password.
fn stale_login() -> Error {
    invalid_credentials()
}

/// Writes what a successful login changes: counters reset, "last login",
/// the upgraded hash if any, and the change log, in one statement, only
/// while the password and "not before" are those the attempt was checked
/// against (see `sessions::create_for_login`, which also starts a session).
pub async fn record_login(pool: &PgPool, audit: &Audit, ok: &LoginOk) -> Result<(), Error> {
    let audit = audit.clone().as_user(ok.user_id, &ok.username);
    let log = crate::store::change_log::rows(&[ok.entry(&audit)]);
    let written = sqlx::query_scalar!(
        r#"WITH login AS (
               UPDATE users SET failed_login_attempts = 0, locked_until = NULL, last_successful_login = now(),
                                logins_in_flight = GREATEST(logins_in_flight - 1, 0),
                                password_hash = COALESCE($2, password_hash)
               WHERE id = $1 AND password_hash IS NOT DISTINCT FROM $3 AND tokens_not_before = $4
               RETURNING id
           ), log AS (
               INSERT INTO change_log (actor_id, actor_username, actor_session_id, actor_api_key_id,
                                       subject_type, subject_id, action, changes, request_id, client_ip)
               SELECT e.actor_id, e.actor_username, e.actor_session_id, e.actor_api_key_id,
                      e.subject_type, e.subject_id, e.action, e.changes, e.request_id, e.client_ip
               FROM jsonb_to_recordset($5) AS e(actor_id uuid, actor_username text, actor_session_id uuid,
                    actor_api_key_id uuid, subject_type text, subject_id text, action text, changes jsonb,
                    request_id text, client_ip text)
               WHERE EXISTS (SELECT 1 FROM login)
           )
           SELECT count(*) AS "written!" FROM login"#,
        ok.user_id,
        ok.rehashed,
        ok.checked_hash,
        ok.not_before,
        log,
    )
    .fetch_one(pool)
    .await?;
    ensure_written(pool, &audit, ok, written).await
}

/// Whether a login statement wrote its session (see `LoginOk`); if not, the
/// login went stale and its try is given back.
pub(crate) async fn ensure_written(pool: &PgPool, audit: &Audit, ok: &LoginOk, written: i64) -> Result<(), Error> {
    if written == 0 {
        let audit = audit.clone().as_user(ok.user_id, &ok.username);
        release_attempt(pool, &audit, ok.user_id, "credentials_changed").await?;
        return Err(stale_login());
    }
    Ok(())
}

impl LoginOk {
    /// The change-log entry of this login (`audit` acting as the user).
    pub(crate) fn entry<'a>(&self, audit: &'a Audit) -> audit::Entry<'a> {
        audit::Entry {
            audit,
            subject_type: "user",
            subject_id: self.user_id.to_string(),
            action: "login.succeeded",
            changes: Changes::new(),
        }
    }
}

/// Checks a login (username or email) and password. Unknown user, wrong
/// password and disabled account give the same error after the same work
/// (a dummy hash is verified when there is no real one). Failed attempts are
/// counted *before* hashing, in the same statement that finds the user, so N
/// parallel wrong passwords can never get more than `max_failed_logins`
/// verifications. A failure is recorded (and committed) here; a success is
/// recorded by the caller with `record_login`.
pub async fn check_login(
    state: &AppState,
    audit: &Audit,
    login: &str,
    password: SecretString,
) -> Result<LoginOk, Error> {
    let limits = LockoutLimits::of(state);
    if login.len() > 254 {
        let _ = state.hasher.verify(password, None).await?;
        return Err(invalid_credentials());
    }
    let Some(row) = reserve_attempt(&state.pool, login, &limits).await? else {
        // An unknown name is counted and locked like an account, so the
        // answers (401, then 429) do not tell which names exist.
        let key = crate::domain::login_key(login);
        return match unknown_attempt(&state.pool, &key, limits.max).await? {
            None => Err(limits.locked(unknown_locked_until(&state.pool, &key).await?)),
            Some(_) => {
                let _ = state.hasher.verify(password, None).await?;
                lock_unknown(&state.pool, &key, limits.max, limits.lockout_secs).await?;
                Err(invalid_credentials())
            }
        };
    };
    if row.reserved.is_none() {
        let until =
            sqlx::query_scalar!("SELECT locked_until FROM users WHERE id = $1", row.id).fetch_one(&state.pool).await?;
        return Err(match until {
            Some(_) => limits.locked(until),
            // Every attempt reserves a try before its hash is checked, so
            // with `max` logins of this account in flight the next waits a
            // moment; the account is not locked (nobody guessed wrong yet).
            None => {
                Error::too_many("login_in_progress", "too many logins for this account at once; retry in a moment", 1)
            }
        });
    }
    let verdict = match state.hasher.verify(password, row.password_hash.clone()).await {
        Ok(v) => v,
        Err(e) => {
            let audit = audit.clone().as_user(row.id, &row.username);
            release_attempt(&state.pool, &audit, row.id, e.code()).await?;
            return Err(e);
        }
    };
    if !matches!(verdict, Verified::No) && row.enabled {
        let rehashed = match verdict {
            Verified::YesRehashed(h) => Some(h),
            _ => None,
        };
        return Ok(LoginOk {
            user_id: row.id,
            username: row.username,
            rehashed,
            checked_hash: row.password_hash,
            not_before: row.tokens_not_before,
            mfa_enabled: row.mfa_enabled,
        });
    }
    if record_failure(&state.pool, audit, &row, &limits).await? {
        state.metrics.lockout();
    }
    if !row.enabled && !matches!(verdict, Verified::No) {
        // The right password of a disabled account: the caller may be told
        // (`service::auth` says so only to the login page); the API answers
        // the same 401 as for anything else.
        return Err(invalid_credentials().with_code(ACCOUNT_DISABLED));
    }
    Err(invalid_credentials())
}

/// The code of a refused login whose password was right but whose account is disabled.
pub const ACCOUNT_DISABLED: &str = "account_disabled";

/// The same 401 for an unknown name, a wrong password and a disabled account.
fn invalid_credentials() -> Error {
    Error::unauthorized("invalid username or password").with_code("invalid_credentials")
}

/// `auth.max_failed_logins` and `auth.lockout_secs`, and the 429 they give.
pub(crate) struct LockoutLimits {
    pub(crate) max: i32,
    pub(crate) lockout_secs: i64,
    /// `auth.login_reservation_secs`.
    reservation_secs: f64,
}

impl LockoutLimits {
    pub(crate) fn of(state: &AppState) -> LockoutLimits {
        LockoutLimits {
            max: i32::try_from(state.settings.auth.max_failed_logins).unwrap_or(5),
            lockout_secs: i64::try_from(state.settings.auth.lockout_secs).unwrap_or(900),
            reservation_secs: state.settings.auth.login_reservation_secs as f64,
        }
    }

    pub(crate) fn locked(&self, until: Option<DateTime<Utc>>) -> Error {
        let retry = until.map(|u| (u - Utc::now()).num_seconds()).unwrap_or(self.lockout_secs).max(1);
        Error::too_many(
            "account_locked",
            "too many failed logins; the account is locked for a while",
            u64::try_from(retry).unwrap_or(1),
        )
    }
}

/// Finds the account (username or email) and reserves an attempt, in one
/// statement: `reserved` is `None` when the account is locked. The
/// reservation commits without waiting for its WAL flush: it is visible to
/// every other attempt at once, and every answer that reveals a verdict
/// follows a durable commit of this login (the success's session, the
/// failure's log entry), which flushes the WAL past it.
///
/// A reservation is not a failure: `failed_login_attempts` counts verdicts
/// only, and the checks in flight (`logins_in_flight`) lapse together
/// `auth.login_reservation_secs` after the latest one began, so a check that ends
/// without a verdict (a client that hung up mid-hash) holds its try only
/// for a moment. Failures plus checks in flight never exceed `max`.
async fn reserve_attempt(pool: &PgPool, login: &str, limits: &LockoutLimits) -> Result<Option<LoginRow>, Error> {
    Ok(sqlx::query_as!(
        LoginRow,
        "WITH target AS (
             SELECT id, username, enabled, password_hash, tokens_not_before, mfa_enabled FROM users
             WHERE lower(username) = $1 OR email_key = $1 LIMIT 1
         ), reserved AS (
             -- Every condition reads `u.` itself (no CTE of the row): when
             -- parallel attempts queue on the row lock, PostgreSQL checks
             -- them again against the row as the previous one left it.
             UPDATE users u SET
                failed_login_attempts = CASE WHEN u.locked_until <= now() THEN 0 ELSE u.failed_login_attempts END,
                mfa_failed_attempts = CASE WHEN u.locked_until <= now() THEN 0 ELSE u.mfa_failed_attempts END,
                locked_until = CASE WHEN u.locked_until <= now() THEN NULL ELSE u.locked_until END,
                logins_in_flight = CASE WHEN u.locked_until <= now()
                                          OR u.logins_in_flight_since IS NULL
                                          OR u.logins_in_flight_since < now() - make_interval(secs => $3)
                                        THEN 1 ELSE u.logins_in_flight + 1 END,
                logins_in_flight_since = now(),
                last_login_attempt = now()
             FROM target t
             WHERE u.id = t.id
               AND (u.locked_until <= now()
                    OR (u.locked_until IS NULL
                        AND u.failed_login_attempts
                            + CASE WHEN u.logins_in_flight_since IS NULL
                                     OR u.logins_in_flight_since < now() - make_interval(secs => $3)
                                   THEN 0 ELSE u.logins_in_flight END < $2))
             RETURNING u.logins_in_flight
         ), no_flush AS (
             SELECT set_config('synchronous_commit', 'off', true)
         )
         SELECT t.id, t.username, t.enabled, t.password_hash, t.tokens_not_before, t.mfa_enabled,
                (SELECT logins_in_flight FROM reserved) AS reserved
         FROM target t, no_flush",
        crate::domain::login_key(login),
        limits.max,
        limits.reservation_secs,
    )
    .fetch_optional(pool)
    .await?)
}

/// Gives back the try a check reserved when it ends without a verdict (the
/// hash could not run, or the password or "not before" changed while it
/// ran: `reason`), logged as `login.abandoned` with the reason.
pub(crate) async fn release_attempt(pool: &PgPool, audit: &Audit, user_id: Uuid, reason: &str) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("UPDATE users SET logins_in_flight = GREATEST(logins_in_flight - 1, 0) WHERE id = $1", user_id)
        .execute(&mut *tx)
        .await?;
    let changes = Changes::new().set("reason", reason);
    audit::record(&mut *tx, audit, "user", &user_id.to_string(), "login.abandoned", changes).await?;
    tx.commit().await?;
    Ok(())
}

/// A failed check of a known account: the failure counted (its try given
/// back), the lock when the limit is reached, and the log entries, in one
/// transaction. `true` when this failure locked the account.
async fn record_failure(pool: &PgPool, audit: &Audit, row: &LoginRow, limits: &LockoutLimits) -> Result<bool, Error> {
    let audit = audit.clone().as_user(row.id, &row.username);
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "UPDATE users SET failed_login_attempts = failed_login_attempts + 1,
                          logins_in_flight = GREATEST(logins_in_flight - 1, 0)
         WHERE id = $1",
        row.id
    )
    .execute(&mut *tx)
    .await?;
    let locked = sqlx::query_scalar!(
        "UPDATE users SET locked_until = now() + make_interval(secs => $3)
         WHERE id = $1 AND failed_login_attempts >= $2 AND locked_until IS NULL RETURNING locked_until",
        row.id,
        limits.max,
        limits.lockout_secs as f64,
    )
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    let reason = if row.enabled { "bad_password" } else { "account_disabled" };
    audit::record(&mut *tx, &audit, "user", &row.id.to_string(), "login.failed", Changes::new().set("reason", reason))
        .await?;
    if let Some(until) = locked {
        audit::record(
            &mut *tx,
            &audit,
            "user",
            &row.id.to_string(),
            "user.locked",
            Changes::new().set("locked_until", until.to_rfc3339()),
        )
        .await?;
    }
    let locked_now = locked.is_some();
    tx.commit().await?;
    Ok(locked_now)
}

/// Reserves an attempt for a name that matches no account (as the account
/// query does for a known one): `None` when the name is locked.
async fn unknown_attempt(pool: &PgPool, login: &str, max: i32) -> Result<Option<i32>, Error> {
    if rand::random::<u8>() < 3 {
        // Forget names whose last failure is a day old.
        sqlx::query!("DELETE FROM unknown_login_attempts WHERE last_attempt < now() - interval '1 day'")
            .execute(pool)
            .await?;
    }
    Ok(sqlx::query_scalar!(
        "INSERT INTO unknown_login_attempts AS t (login, failed) VALUES ($1, 1)
         ON CONFLICT (login) DO UPDATE SET
             failed = CASE WHEN t.locked_until IS NOT NULL AND t.locked_until <= now() THEN 1
                           ELSE t.failed + 1 END,
             locked_until = CASE WHEN t.locked_until IS NOT NULL AND t.locked_until <= now() THEN NULL
                                 ELSE t.locked_until END,
             last_attempt = now()
         WHERE (t.locked_until IS NOT NULL AND t.locked_until <= now())
            OR (t.locked_until IS NULL AND t.failed < $2)
         RETURNING failed",
        login,
        max,
    )
    .fetch_optional(pool)
    .await?)
}

async fn unknown_locked_until(pool: &PgPool, login: &str) -> Result<Option<DateTime<Utc>>, Error> {
    Ok(sqlx::query_scalar!("SELECT locked_until FROM unknown_login_attempts WHERE login = $1", login)
        .fetch_optional(pool)
        .await?
        .flatten())
}

async fn lock_unknown(pool: &PgPool, login: &str, max: i32, lockout: i64) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE unknown_login_attempts SET locked_until = now() + make_interval(secs => $3)
         WHERE login = $1 AND failed >= $2 AND locked_until IS NULL",
        login,
        max,
        lockout as f64,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The bookkeeping of a right `current_password` (see
/// `service::auth::check_own_password`): the try given back and the failure
/// count reset (unless locked). No "last login": nobody logged in.
pub async fn settle_own_check(pool: &PgPool, ok: &LoginOk) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE users SET failed_login_attempts = CASE WHEN locked_until IS NULL THEN 0 ELSE failed_login_attempts END,
                          logins_in_flight = GREATEST(logins_in_flight - 1, 0)
         WHERE id = $1",
        ok.user_id
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// When the account's lockout ends (`None`: not locked).
pub async fn locked_until(conn: &mut PgConnection, user: Uuid) -> Result<Option<DateTime<Utc>>, Error> {
    Ok(sqlx::query_scalar!("SELECT locked_until FROM users WHERE id = $1", user)
        .fetch_optional(&mut *conn)
        .await?
        .flatten())
}

/// Filters of the user list.
#[derive(Debug, Default)]
pub struct ListFilter {
    /// Case-insensitive text in the username, email, first, last or full name.
    pub q: Option<String>,
    /// Case-insensitive text in the email address.
    pub email: Option<String>,
    pub enabled: Option<bool>,
    pub locked: Option<bool>,
    pub verified: Option<bool>,
    pub role: Option<String>,
    /// Members of this group (plain or a project's).
    pub group: Option<String>,
    /// Members of this project, at any level.
    pub project: Option<String>,
    pub sort: Sort,
    pub descending: bool,
    /// Keyset cursor: the sort key (as text) and id of the previous page's last user.
    pub after: Option<(String, Uuid)>,
    pub limit: i64,
}

/// What the user list is ordered by (then by id).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    #[default]
    Username,
    CreatedAt,
    /// The last successful login (never: before everyone).
    LastLogin,
}

impl Sort {
    pub fn parse(raw: &str) -> Option<Sort> {
        match raw {
            "username" => Some(Sort::Username),
            "created_at" => Some(Sort::CreatedAt),
            "last_login" => Some(Sort::LastLogin),
            _ => None,
        }
    }

    /// The SQL of the key, and its type for the cursor's cast.
    fn sql(self) -> (&'static str, &'static str) {
        match self {
            Sort::Username => ("lower(u.username)", "text"),
            Sort::CreatedAt => ("u.created_at", "timestamptz"),
            Sort::LastLogin => ("COALESCE(u.last_successful_login, '-infinity'::timestamptz)", "timestamptz"),
        }
    }

    /// Whether no two users share the key (`users_username_key` is unique
    /// on `lower(username)`): then the key alone orders a page.
    fn unique(self) -> bool {
        matches!(self, Sort::Username)
    }

    pub fn name(self) -> &'static str {
        match self {
            Sort::Username => "username",
            Sort::CreatedAt => "created_at",
            Sort::LastLogin => "last_login",
        }
    }

    /// Whether a cursor's key is one this sort can compare (a timestamp, or
    /// `-infinity` for never logged in). A timestamp is taken as `key_of`
    /// writes it, in UTC, and within years 1 to 9999: PostgreSQL refuses
    /// year 0, offsets past 15:59 and leap seconds (`23:59:60`, which
    /// chrono reads as a nanosecond count of a billion or more), which would
    /// otherwise reach it.
    pub fn valid_key(self, key: &str) -> bool {
        use chrono::{Datelike, Timelike};
        let stamp = |key: &str| {
            DateTime::parse_from_rfc3339(key).is_ok_and(|t| {
                t.offset().local_minus_utc() == 0 && (1..=9999).contains(&t.year()) && t.nanosecond() < 1_000_000_000
            })
        };
        match self {
            Sort::Username => !key.is_empty() && key.len() <= 64,
            Sort::CreatedAt => stamp(key),
            Sort::LastLogin => key == "-infinity" || stamp(key),
        }
    }

    /// The key of `u` as the cursor carries it.
    pub fn key_of(self, u: &User) -> String {
        self.key(&u.username, u.created_at, u.last_successful_login)
    }

    fn key(self, username: &str, created_at: DateTime<Utc>, last_login: Option<DateTime<Utc>>) -> String {
        let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        match self {
            Sort::Username => username.to_lowercase(),
            Sort::CreatedAt => stamp(created_at),
            Sort::LastLogin => last_login.map_or_else(|| "-infinity".into(), stamp),
        }
    }
}

pub async fn list(conn: &mut PgConnection, f: &ListFilter) -> Result<Vec<User>, Error> {
    Ok(list_query(USER_COLUMNS, f).build_query_as::<User>().fetch_all(conn).await?)
}

/// `list` for the native API's pages: each row as it comes, written as a
/// `UserView` straight from the row (`ViewRow`).
pub async fn list_views(conn: &mut PgConnection, f: &ListFilter) -> Result<Vec<ViewRow>, Error> {
    Ok(list_query(VIEW_COLUMNS, f).build().fetch_all(conn).await?.into_iter().map(ViewRow).collect())
}

/// The columns of a `UserView`, in its fields' order, for `ViewRow`.
const VIEW_COLUMNS: &str = "u.id, u.username, u.email, u.first_name, u.last_name, u.affiliation, u.contact, \
    u.orcid, u.url, u.enabled, u.verified, u.roles, u.locked_until, u.failed_login_attempts, \
    u.last_successful_login, u.last_login_attempt, u.password_updated, u.created_at, u.last_modified";

/// A row of `VIEW_COLUMNS`, serialised as the `UserView` of its user
/// without a `User` in between: the text is written from the row's own
/// bytes (borrowed `&str`), not copied into a `String` per field, then moved,
/// then freed. On a page of 50 users, `User::from_row` and its strings
/// were over a quarter of the server's CPU. The fields, their order and
/// their formats are `UserView`'s; `accounts::list_paginates_and_filters`
/// compares every listed user with the same user read by `get` (a
/// `UserView`).
pub struct ViewRow(sqlx::postgres::PgRow);

impl ViewRow {
    /// The cursor key of this row's user for `sort`, and the user's id.
    pub fn key(&self, sort: Sort) -> Result<(String, Uuid), sqlx::Error> {
        use sqlx::Row;
        let r = &self.0;
        Ok((
            sort.key(r.try_get_unchecked(1)?, r.try_get_unchecked(17)?, r.try_get_unchecked(14)?),
            r.try_get_unchecked(0)?,
        ))
    }
}

impl Serialize for ViewRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeStruct};
        use sqlx::Row;
        struct Stamp(Option<DateTime<Utc>>);
        impl Serialize for Stamp {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                crate::json::optional_timestamp(&self.0, s)
            }
        }
        let r = &self.0;
        let text = |i: usize| r.try_get_unchecked::<&str, _>(i).map_err(S::Error::custom);
        let flag = |i: usize| r.try_get_unchecked::<bool, _>(i).map_err(S::Error::custom);
        let stamp = |i: usize| r.try_get_unchecked::<Option<DateTime<Utc>>, _>(i).map(Stamp).map_err(S::Error::custom);
        let roles = r.try_get_unchecked::<Vec<String>, _>(11).map_err(S::Error::custom)?;
        let locked_until = r.try_get_unchecked::<Option<DateTime<Utc>>, _>(12).map_err(S::Error::custom)?;
        let mut v = s.serialize_struct("UserView", 21)?;
        v.serialize_field("id", &r.try_get_unchecked::<Uuid, _>(0).map_err(S::Error::custom)?)?;
        v.serialize_field("username", text(1)?)?;
        v.serialize_field("email", text(2)?)?;
        v.serialize_field("first_name", text(3)?)?;
        v.serialize_field("last_name", text(4)?)?;
        v.serialize_field("affiliation", text(5)?)?;
        v.serialize_field("contact", text(6)?)?;
        v.serialize_field("orcid", text(7)?)?;
        v.serialize_field("url", text(8)?)?;
        v.serialize_field("enabled", &flag(9)?)?;
        v.serialize_field("verified", &flag(10)?)?;
        v.serialize_field("admin", &roles.iter().any(|r| r == ADMIN_ROLE))?;
        v.serialize_field("roles", &roles)?;
        v.serialize_field("locked", &locked_until.is_some_and(|l| l > Utc::now()))?;
        v.serialize_field("locked_until", &Stamp(locked_until))?;
        v.serialize_field("failed_login_attempts", &r.try_get_unchecked::<i32, _>(13).map_err(S::Error::custom)?)?;
        v.serialize_field("last_successful_login", &stamp(14)?)?;
        v.serialize_field("last_login_attempt", &stamp(15)?)?;
        v.serialize_field("password_updated", &stamp(16)?)?;
        v.serialize_field("created_at", &stamp(17)?)?;
        v.serialize_field("last_modified", &stamp(18)?)?;
        v.end()
    }
}

/// The columns of `select_users!`, for the statements built at run time
/// (`list`), in the order `User::from_row` reads them: keep the three the
/// same. `accounts::list_paginates_and_filters` (tests) compares a listed
/// user with the same user read by `get`.
const USER_COLUMNS: &str = "u.id, u.username, u.email, u.email_key, u.first_name, u.last_name, u.enabled, \
    u.verified, u.roles, \
    (u.password_hash IS NOT NULL) AS has_password, u.password_updated, u.failed_login_attempts, u.locked_until, \
    u.last_login_attempt, u.last_successful_login, u.created_at, u.last_modified, u.xdat_user_id, u.affiliation, \
    u.contact, u.orcid, u.url, u.mfa_enabled";

/// A row of `USER_COLUMNS`, by position: a page of 50 users is 1,150
/// columns, and reading them by name (as the derived `FromRow` does) hashed
/// each name each time. Unchecked: each value's type is not compared with
/// the column's (that comparison, a clone of the column's type and a match
/// on it per value, was an eighth of a page's CPU). The columns are this
/// file's own (`USER_COLUMNS`), so the types cannot differ at run time; a
/// wrong one still fails to decode (lengths and UTF-8 are checked), and
/// `accounts::list_paginates_and_filters` compares listed users with
/// `get`'s, whose statement sqlx checks against the schema at build time.
impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for User {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<User, sqlx::Error> {
        use sqlx::Row;
        Ok(User {
            id: row.try_get_unchecked(0)?,
            username: row.try_get_unchecked(1)?,
            email: row.try_get_unchecked(2)?,
            email_key: row.try_get_unchecked(3)?,
            first_name: row.try_get_unchecked(4)?,
            last_name: row.try_get_unchecked(5)?,
            enabled: row.try_get_unchecked(6)?,
            verified: row.try_get_unchecked(7)?,
            roles: row.try_get_unchecked(8)?,
            has_password: row.try_get_unchecked(9)?,
            password_updated: row.try_get_unchecked(10)?,
            failed_login_attempts: row.try_get_unchecked(11)?,
            locked_until: row.try_get_unchecked(12)?,
            last_login_attempt: row.try_get_unchecked(13)?,
            last_successful_login: row.try_get_unchecked(14)?,
            created_at: row.try_get_unchecked(15)?,
            last_modified: row.try_get_unchecked(16)?,
            xdat_user_id: row.try_get_unchecked(17)?,
            affiliation: row.try_get_unchecked(18)?,
            contact: row.try_get_unchecked(19)?,
            orcid: row.try_get_unchecked(20)?,
            url: row.try_get_unchecked(21)?,
            mfa_enabled: row.try_get_unchecked(22)?,
        })
    }
}

/// How many users the filter matches (every page together).
pub async fn count_matching(pool: &PgPool, f: &ListFilter) -> Result<i64, Error> {
    let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new("SELECT count(*) FROM users u WHERE true");
    conditions(&mut qb, f);
    Ok(qb.build_query_scalar().fetch_one(pool).await?)
}

/// The filter's conditions (not the cursor), appended to `qb`.
fn conditions(qb: &mut sqlx::QueryBuilder<'static, sqlx::Postgres>, f: &ListFilter) {
    let like =
        |t: &str| format!("%{}%", t.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    if let Some(q) = &f.q {
        let p = like(q);
        qb.push(" AND (lower(u.username) LIKE ").push_bind(p.clone());
        qb.push(" OR lower(u.email) LIKE ").push_bind(p.clone());
        qb.push(" OR lower(u.first_name) LIKE ").push_bind(p.clone());
        qb.push(" OR lower(u.last_name) LIKE ").push_bind(p.clone());
        qb.push(" OR lower(u.first_name || ' ' || u.last_name) LIKE ").push_bind(p).push(")");
    }
    if let Some(e) = &f.email {
        qb.push(" AND lower(u.email) LIKE ").push_bind(like(e));
    }
    if let Some(e) = f.enabled {
        qb.push(" AND u.enabled = ").push_bind(e);
    }
    if let Some(l) = f.locked {
        qb.push(" AND (u.locked_until IS NOT NULL AND u.locked_until > now()) = ").push_bind(l);
    }
    if let Some(v) = f.verified {
        qb.push(" AND u.verified = ").push_bind(v);
    }
    if let Some(role) = &f.role {
        qb.push(" AND EXISTS (SELECT 1 FROM user_roles r WHERE r.user_id = u.id AND r.role = ")
            .push_bind(role.clone())
            .push(")");
    }
    if let Some(group) = &f.group {
        qb.push(" AND EXISTS (SELECT 1 FROM user_groups g WHERE g.user_id = u.id AND lower(g.group_name) = lower(")
            .push_bind(group.clone())
            .push("))");
    }
    if let Some(project) = &f.project {
        qb.push(" AND EXISTS (SELECT 1 FROM user_groups g WHERE g.user_id = u.id AND lower(g.project_id) = lower(")
            .push_bind(project.clone())
            .push("))");
    }
}

/// `SELECT <columns> FROM users u` with the filter's conditions, after the
/// cursor, in the sort's order, `f.limit` rows.
fn list_query(columns: &str, f: &ListFilter) -> sqlx::QueryBuilder<'static, sqlx::Postgres> {
    let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!("SELECT {columns} FROM users u WHERE true"));
    conditions(&mut qb, f);
    let (key, kind) = f.sort.sql();
    let (cmp, dir) = if f.descending { ("<", "DESC") } else { (">", "ASC") };
    // A unique key orders by itself: no id to break ties, so PostgreSQL
    // walks the key's own index from the cursor on. A row comparison with
    // the id (`(key, id) > (.., ..)`) made it scan that index from the key
    // and sort each page again, which took a seventh of a deep page's time.
    let unique = f.sort.unique();
    if let Some((value, id)) = &f.after {
        if unique {
            qb.push(format!(" AND {key} {cmp} CAST(")).push_bind(value.clone()).push(format!(" AS {kind})"));
        } else {
            qb.push(format!(" AND ({key}, u.id) {cmp} (CAST("))
                .push_bind(value.clone())
                .push(format!(" AS {kind}), "))
                .push_bind(*id)
                .push(")");
        }
    }
    if unique {
        qb.push(format!(" ORDER BY {key} {dir} LIMIT ")).push_bind(f.limit);
    } else {
        qb.push(format!(" ORDER BY {key} {dir}, u.id {dir} LIMIT ")).push_bind(f.limit);
    }
    qb
}

/// Enabled users who share a project with `user`, and `user`, by name.
pub async fn sharing_projects_with(pool: &PgPool, user: Uuid) -> Result<Vec<User>, Error> {
    Ok(select_users!(
        "FROM users u
         WHERE u.enabled AND (u.id = $1 OR EXISTS (
             SELECT 1 FROM user_groups mine JOIN user_groups theirs ON theirs.project_id = mine.project_id
             WHERE mine.user_id = $1 AND theirs.user_id = u.id AND mine.project_id IS NOT NULL))
         ORDER BY lower(u.username), u.id",
        user,
    )
    .fetch_all(pool)
    .await?)
}

pub async fn usernames(pool: &PgPool) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar!("SELECT username FROM users ORDER BY lower(username)").fetch_all(pool).await?)
}

pub async fn count(conn: &mut PgConnection) -> Result<i64, Error> {
    Ok(sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM users"#).fetch_one(conn).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cursor's timestamp key is one PostgreSQL takes: UTC, years 1 to 9999.
    #[test]
    fn cursor_keys_are_timestamps_postgres_takes() {
        for ok in ["2026-12-02T07:00:00.123456789Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59+00:00"] {
            assert!(Sort::CreatedAt.valid_key(ok), "{ok}");
        }
        assert!(Sort::LastLogin.valid_key("-infinity"));
        // Leap seconds: PostgreSQL refuses them (found by attack: a 500).
        for leap in ["2026-06-30T23:59:60.5Z", "9999-12-31T23:59:60.999Z", "2016-12-31T23:59:60Z"] {
            assert!(!Sort::CreatedAt.valid_key(leap), "{leap}");
            assert!(!Sort::LastLogin.valid_key(leap), "{leap}");
        }
        for bad in [
            "0000-01-01T00:00:00Z",
            "2020-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59-23:59",
            "2020-01-01T00:00:00+01:00",
            "-infinity",
            "yesterday",
        ] {
            assert!(!Sort::CreatedAt.valid_key(bad), "{bad}");
        }
        assert!(!Sort::LastLogin.valid_key("0000-06-01T00:00:00Z"));
    }

    /// The dynamic statement, pinned: what the planner sees for no filter
    /// and for every filter at once.
    #[test]
    fn the_user_list_statement() {
        let none = ListFilter { limit: 50, ..Default::default() };
        assert_eq!(
            list_query("u.id", &none).sql(),
            "SELECT u.id FROM users u WHERE true ORDER BY lower(u.username) ASC LIMIT $1"
        );
        // The username is unique: a cursor of it needs no id.
        let after = ListFilter { after: Some(("user500".into(), Uuid::nil())), limit: 51, ..Default::default() };
        assert_eq!(
            list_query("u.id", &after).sql(),
            "SELECT u.id FROM users u WHERE true AND lower(u.username) > CAST($1 AS text) \
             ORDER BY lower(u.username) ASC LIMIT $2"
        );
        let all = ListFilter {
            q: Some("a_b".into()),
            email: Some("@example".into()),
            enabled: Some(true),
            locked: Some(false),
            verified: Some(true),
            role: Some("UserManager".into()),
            group: Some("g".into()),
            project: Some("P".into()),
            sort: Sort::LastLogin,
            descending: true,
            after: Some(("-infinity".into(), Uuid::nil())),
            limit: 10,
        };
        assert_eq!(
            list_query("u.id", &all).sql(),
            "SELECT u.id FROM users u WHERE true AND (lower(u.username) LIKE $1 OR lower(u.email) LIKE $2 \
             OR lower(u.first_name) LIKE $3 OR lower(u.last_name) LIKE $4 \
             OR lower(u.first_name || ' ' || u.last_name) LIKE $5) AND lower(u.email) LIKE $6 AND u.enabled = $7 \
             AND (u.locked_until IS NOT NULL AND u.locked_until > now()) = $8 AND u.verified = $9 \
             AND EXISTS (SELECT 1 FROM user_roles r WHERE r.user_id = u.id AND r.role = $10) \
             AND EXISTS (SELECT 1 FROM user_groups g WHERE g.user_id = u.id AND lower(g.group_name) = lower($11)) \
             AND EXISTS (SELECT 1 FROM user_groups g WHERE g.user_id = u.id AND lower(g.project_id) = lower($12)) \
             AND (COALESCE(u.last_successful_login, '-infinity'::timestamptz), u.id) < (CAST($13 AS timestamptz), $14) \
             ORDER BY COALESCE(u.last_successful_login, '-infinity'::timestamptz) DESC, u.id DESC LIMIT $15"
        );
    }
}
