//! User flows: create, update, passwords (change, reset), roles. The native
//! API, the XNAT API and the command line all call these.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::audit::Audit;
use crate::auth::password::Hasher;
use crate::auth::principal::resolve_me;
use crate::auth::principal::Principal;
use crate::domain::{parse_name, parse_orcid, parse_text, parse_url, Email, Permission, Username};
use crate::domain::{Error, Result};
use crate::state::AppState;
use crate::store::users::{self, ItemResult, Patch, User, ADMIN_ROLE};
use sqlx::PgPool;

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    pub email: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default)]
    pub affiliation: String,
    /// Contact details (a phone number, an address), free text.
    #[serde(default)]
    pub contact: String,
    /// An ORCID iD such as `0000-0002-1825-0097`.
    #[serde(default)]
    pub orcid: String,
    /// A web page (http or https).
    #[serde(default)]
    pub url: String,
    /// Omit for an account that logs in only through OpenID Connect.
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub verified: bool,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub roles: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// A new username (USER_MANAGEMENT, not one's own): the old one stays
    /// the user's and answers 404 `user_renamed`; sessions and keys carry on.
    pub username: Option<String>,
    pub email: Option<String>,
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// Required when changing one's own password.
    #[schema(value_type = Option<String>, format = Password)]
    pub current_password: Option<SecretString>,
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
    /// Also revoke every API key of the user.
    #[serde(default)]
    pub revoke_api_keys: bool,
    /// Also unlink every OpenID identity of the user.
    #[serde(default)]
    pub unlink_identities: bool,
}

/// Managing an administrator (or granting the Administrator role) takes ADMIN:
/// a UserManager must not be able to take over or mint an administrator.
pub fn require_admin_for(caller: &Principal, target: &User) -> Result<(), Error> {
    if target.admin() && !caller.is_admin() && target.id != caller.user_id {
        return Err(Error::forbidden("only an administrator may manage an administrator account"));
    }
    Ok(())
}

/// The account `name` (a username or id), locked in `tx`, if `caller` may
/// manage it: `require_admin_for` on the locked row, so a grant of
/// Administrator made at the same moment is seen or waits. Every write on
/// another user's account takes its target this way.
pub async fn lock_managed(tx: &mut sqlx::PgConnection, caller: &Principal, name: &str) -> Result<User, Error> {
    let target = users::get(tx, name, true).await?;
    require_admin_for(caller, &target)?;
    Ok(target)
}

/// Parses and checks a creation request into a `NewUser` (hashing the password).
pub async fn new_user(hasher: &Hasher, caller: &Principal, body: CreateUser) -> Result<users::NewUser, Error> {
    let username = Username::parse(body.username.trim())?;
    let email = Email::parse(&body.email)?;
    let mut roles = body.roles;
    if body.admin && !roles.iter().any(|r| r == ADMIN_ROLE) {
        roles.push(ADMIN_ROLE.into());
    }
    if roles.iter().any(|r| r == ADMIN_ROLE) && !caller.is_admin() {
        return Err(Error::forbidden("only an administrator may create an administrator"));
    }
    // Whoever the route lets add users (USER_ADD, MLTE's `user post`) adds
    // plain accounts: roles and a verified email are user management.
    if (!roles.is_empty() || body.verified) && !caller.has(Permission::UserManagement) {
        return Err(Error::forbidden("giving a new user roles or a verified email needs USER_MANAGEMENT"));
    }
    let password_hash = match body.password {
        Some(p) => {
            hasher.check_policy(p.expose_secret(), username.as_str(), email.as_str())?;
            Some(hasher.hash(p).await?)
        }
        None => None,
    };
    Ok(users::NewUser {
        username,
        email,
        first_name: parse_name("first_name", &body.first_name)?,
        last_name: parse_name("last_name", &body.last_name)?,
        profile: users::Profile {
            affiliation: parse_text("affiliation", &body.affiliation, 200)?,
            contact: parse_text("contact", &body.contact, 200)?,
            orcid: parse_orcid(&body.orcid)?,
            url: parse_url(&body.url)?,
        },
        password_hash,
        enabled: body.enabled,
        verified: body.verified,
        roles,
    })
}

/// Creates a user (one transaction). USER_MANAGEMENT; ADMIN for an administrator.
pub async fn create_user(
    pool: &PgPool,
    hasher: &Hasher,
    caller: &Principal,
    audit: &Audit,
    body: CreateUser,
) -> Result<User> {
    let new = new_user(hasher, caller, body).await?;
    let mut tx = pool.begin().await?;
    let user = users::create(&mut tx, audit, new).await?;
    tx.commit().await?;
    Ok(user)
}

/// `create_user` inside the caller's transaction, for front ends that write
/// more in the same request (MLTE's groups of the new user).
pub async fn create_user_in(
    tx: &mut sqlx::PgConnection,
    hasher: &Hasher,
    caller: &Principal,
    audit: &Audit,
    body: CreateUser,
) -> Result<User> {
    let new = new_user(hasher, caller, body).await?;
    users::create(tx, audit, new).await
}

/// Deletes the account `name` inside the caller's transaction: never one's
/// own (through a management route), an account that manages users only by
/// a user manager, an administrator's only by an administrator
/// (`permissions::may_touch_account`). The native, MLTE and data-tracker
/// deletes.
pub async fn delete_user_in(
    tx: &mut sqlx::PgConnection,
    roles: &crate::auth::principal::RolePermissions,
    caller: &Principal,
    audit: &Audit,
    name: &str,
) -> Result<User> {
    // Locked: a concurrent grant of Administrator is either seen here or waits.
    let target = users::get(tx, name, true).await?;
    if target.id == caller.user_id {
        return Err(Error::forbidden("you cannot delete your own account").with_code("self_destructive"));
    }
    crate::service::permissions::may_touch_account(caller, &target, &roles.of(&target.roles))?;
    users::delete(tx, audit, name).await
}

/// A valid, unused username made from `preferred` (else the email's local
/// part): invalid characters become `_`, a taken name gets a number. For
/// accounts whose front end has no username (OpenID first login, the data
/// tracker's add).
pub async fn unique_username(
    conn: &mut sqlx::PgConnection,
    preferred: Option<&str>,
    email: &Email,
) -> Result<Username> {
    let raw =
        preferred.map(str::to_string).unwrap_or_else(|| email.as_str().split('@').next().unwrap_or("user").to_string());
    let mut base: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(56)
        .collect();
    if Username::parse(&base).is_err() {
        // Empty, reserved (`me`, an XNAT route word, a UUID) or all digits.
        base = if base.is_empty() { "user".into() } else { format!("user-{}", &base[..base.len().min(51)]) };
    }
    for n in 0..1000u32 {
        let candidate = if n == 0 { base.clone() } else { format!("{base}{}", n + 1) };
        if !users::name_taken(conn, &candidate).await? {
            return Username::parse(&candidate);
        }
    }
    Username::parse(&format!("{base}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]))
}

/// The update rules, shared by the native and XNAT APIs. Returns the user
/// and whether anything changed. Privileged fields count only when their
/// value would change (clients send whole objects back). `reset_to` is a
/// new password hash set by a manager (XNAT's `PUT /xapi/users/{u}` with a
/// `password`), written in the same transaction after every check passed.
pub async fn update_user(
    pool: &PgPool,
    caller: &Principal,
    audit: &Audit,
    name: &str,
    body: UpdateUser,
    reset_to: Option<String>,
) -> Result<(User, bool)> {
    let mut tx = pool.begin().await?;
    let out = update_user_in(&mut tx, caller, audit, name, body, reset_to).await?;
    tx.commit().await?;
    Ok(out)
}

/// `update_user` inside the caller's transaction.
pub async fn update_user_in(
    tx: &mut sqlx::PgConnection,
    caller: &Principal,
    audit: &Audit,
    name: &str,
    body: UpdateUser,
    reset_to: Option<String>,
) -> Result<(User, bool)> {
    let patch = Patch {
        email: body.email.as_deref().map(Email::parse).transpose()?,
        first_name: body.first_name.as_deref().map(|n| parse_name("first_name", n)).transpose()?,
        last_name: body.last_name.as_deref().map(|n| parse_name("last_name", n)).transpose()?,
        affiliation: body.affiliation.as_deref().map(|t| parse_text("affiliation", t, 200)).transpose()?,
        contact: body.contact.as_deref().map(|t| parse_text("contact", t, 200)).transpose()?,
        orcid: body.orcid.as_deref().map(parse_orcid).transpose()?,
        url: body.url.as_deref().map(parse_url).transpose()?,
        enabled: body.enabled,
        verified: body.verified,
        admin: body.admin,
    };
    // Locked: a concurrent grant of Administrator is either seen here or
    // waits for this change (`require_admin_for` below).
    let target = users::get(tx, name, true).await?;
    let rename = body
        .username
        .as_deref()
        .map(|n| Username::parse(n.trim()))
        .transpose()?
        .filter(|n| n.as_str() != target.username);
    let admin_change = patch.admin.is_some_and(|a| a != target.admin());
    // A changed email is unverified unless the request says otherwise, and
    // saying otherwise is a manager's call: `verified` counts as a change
    // when it differs from what the edit would leave, not from the old
    // value (else anyone could keep `verified: true` across a new address).
    let email_changed = patch.email.as_ref().is_some_and(|e| e.key() != target.email_key);
    let verified_by_default = target.verified && !email_changed;
    let privileged = admin_change
        || rename.is_some()
        || patch.enabled.is_some_and(|e| e != target.enabled)
        || patch.verified.is_some_and(|v| v != verified_by_default);
    let is_self = target.id == caller.user_id;
    if privileged && (is_self || !caller.has(Permission::UserManagement)) {
        return Err(Error::forbidden("you cannot change your own username, enabled, verified or admin state"));
    }
    if admin_change && !caller.is_admin() {
        return Err(Error::forbidden("only an administrator may change the admin flag"));
    }
    require_admin_for(caller, &target)?;
    let name = match rename {
        Some(new) => {
            let locked = users::get(tx, &target.id.to_string(), true).await?;
            users::rename(tx, audit, &locked, &new).await?.id.to_string()
        }
        None => name.to_string(),
    };
    let user = users::update(tx, audit, &name, patch).await?;
    let reset = reset_to.is_some();
    if let Some(hash) = reset_to {
        write_reset(tx, audit, &user, hash).await?;
    }
    let changed = reset || user.last_modified != target.last_modified;
    Ok((user, changed))
}

/// Changes a password: the user themself (with `current_password`, which
/// counts toward the lockout; other sessions end) or a manager's reset (every
/// session ends). `revoke_api_keys`/`unlink_identities` end those too, in
/// the same transaction.
pub async fn change_password(
    state: &AppState,
    caller: &Principal,
    audit: &Audit,
    username: &str,
    body: PasswordChange,
) -> Result<()> {
    crate::auth::reauth::require_factor(caller)?;
    let name = resolve_me(caller, username).to_string();
    let mut conn = state.pool.acquire().await?;
    let target = users::get(&mut conn, &name, false).await?;
    drop(conn);
    let is_self = target.id == caller.user_id;
    let hash = if is_self {
        state
            .hasher
            .check_policy(body.new_password.expose_secret(), &target.username, &target.email)
            .map_err(|e| e.as_field("new_password"))?;
        let current = body.current_password.ok_or_else(|| {
            Error::invalid("current_password_required", "give current_password to change your own password")
        })?;
        let mut conn = state.pool.acquire().await?;
        let stored = users::password_hash(&mut conn, target.id).await?;
        drop(conn);
        if stored.is_none() {
            // An account without a password (OpenID only) has nothing to
            // check against: setting its first password needs a recent login.
            if !crate::auth::reauth::is_recent(state, caller) {
                return Err(crate::auth::reauth::required());
            }
        } else {
            crate::service::auth::check_own_password(state, audit, &target.username, current).await?;
        }
        state.hasher.hash(body.new_password).await?
    } else {
        reset_hash(&state.hasher, caller, &target, body.new_password).await?
    };
    let mut tx = state.pool.begin().await?;
    // The hash took a while: the rules are checked again on the locked row,
    // so an account made an administrator meanwhile is not reset by a
    // user manager.
    let target = users::get(&mut tx, &target.id.to_string(), true).await?;
    if !is_self {
        require_admin_for(caller, &target)?;
    }
    if is_self {
        users::set_password(&mut tx, audit, &target, hash, caller.session_id, "password.changed").await?;
    } else {
        write_reset(&mut tx, audit, &target, hash).await?;
    }
    if body.revoke_api_keys {
        crate::store::api_keys::revoke_all(&mut tx, audit, target.id).await?;
    }
    if body.unlink_identities {
        crate::store::identities::unlink_all(&mut tx, audit, target.id).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The rules of a manager's reset of `target`'s password, and the new hash
/// (for `write_reset` in the caller's transaction): never one's own (that is
/// a change, with the current password), only with USER_MANAGEMENT, an
/// administrator's only by an administrator, and within the password policy.
pub async fn reset_hash(hasher: &Hasher, caller: &Principal, target: &User, password: SecretString) -> Result<String> {
    if target.id == caller.user_id {
        return Err(Error::forbidden(
            "change your own password with your current password (PUT /api/v1/users/me/password)",
        ));
    }
    if !caller.has(Permission::UserManagement) {
        return Err(Error::forbidden("resetting a password needs USER_MANAGEMENT"));
    }
    require_admin_for(caller, target)?;
    hasher.check_policy(password.expose_secret(), &target.username, &target.email)?;
    hasher.hash(password).await
}

/// A reset from the command line (`registrar admin reset-password`): the
/// same reset as a manager's, by the system. Returns the user.
pub async fn reset_password(
    pool: &sqlx::PgPool,
    hasher: &crate::auth::password::Hasher,
    username: &str,
    password: SecretString,
    check_policy: bool,
) -> Result<User> {
    let mut tx = pool.begin().await?;
    let user = users::get(&mut tx, username, true).await?;
    if check_policy {
        hasher.check_policy(password.expose_secret(), &user.username, &user.email)?;
    }
    let hash = hasher.hash(password).await?;
    write_reset(&mut tx, &Audit::system(), &user, hash).await?;
    tx.commit().await?;
    Ok(user)
}

/// The one place a password is reset (native manager reset, XNAT's
/// `PUT /xapi/users/{u}` with a password, the command line): the new hash,
/// the log entry, and every session of the user ended.
pub async fn write_reset(tx: &mut sqlx::PgConnection, audit: &Audit, user: &User, hash: String) -> Result<()> {
    // Ends every session of the user (and so every token naming one).
    users::set_password(tx, audit, user, hash, None, "password.reset").await
}

/// Clears a user's failed logins and lockout (an administrator's only by an
/// administrator).
pub async fn unlock(pool: &PgPool, caller: &Principal, audit: &Audit, username: &str) -> Result<User> {
    let mut tx = pool.begin().await?;
    lock_managed(&mut tx, caller, username).await?;
    let user = users::unlock(&mut tx, audit, username).await?;
    tx.commit().await?;
    Ok(user)
}

/// The role-change rules, shared by the native, XNAT and data-tracker APIs:
/// nobody changes their own roles; only an administrator grants or removes
/// Administrator.
pub async fn apply_roles(
    pool: &PgPool,
    caller: &Principal,
    audit: &Audit,
    username: &str,
    roles: Vec<String>,
    grant: bool,
) -> Result<(User, Vec<ItemResult>)> {
    let mut tx = pool.begin().await?;
    let out = apply_roles_in(&mut tx, caller, audit, username, &roles, grant).await?;
    tx.commit().await?;
    Ok(out)
}

/// `apply_roles` inside the caller's transaction.
pub async fn apply_roles_in(
    tx: &mut sqlx::PgConnection,
    caller: &Principal,
    audit: &Audit,
    username: &str,
    roles: &[String],
    grant: bool,
) -> Result<(User, Vec<ItemResult>)> {
    let name = resolve_me(caller, username).to_string();
    if caller.is(&name) {
        return Err(Error::forbidden("you cannot change your own roles"));
    }
    if grant {
        crate::auth::reauth::require_factor(caller)?;
    }
    if roles.iter().any(|r| r == ADMIN_ROLE) && !caller.is_admin() {
        return Err(Error::forbidden("only an administrator may grant or remove the Administrator role"));
    }
    let target = users::get(tx, &name, true).await?;
    require_admin_for(caller, &target)?;
    users::change_roles(tx, audit, &name, roles, grant).await
}
