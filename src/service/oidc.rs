//! The account an OpenID Connect login ends in: an existing link, a link
//! for the logged-in caller, a verified email of an existing account (when
//! the provider may link), or a new account.

use crate::audit::{Audit, Changes};
use crate::auth::oidc::Identity;
use crate::config::OidcProvider;
use crate::domain::Email;
use crate::domain::{Error, Result};
use crate::service::auth::{start_session, SessionKind};
use crate::state::AppState;
use crate::store::sessions::NewSession;
use crate::store::{identities, users};

/// Finishes a login the provider answered with `code`: exchanges it, checks
/// the ID token against the saved nonce and verifier, resolves the account
/// (`resolve_account`) and starts an `oidc` session. A failure at the
/// provider is logged as `oidc.login_failed`, a refused account as
/// `oidc.login_refused`.
pub async fn finish_login(
    state: &AppState,
    audit: &Audit,
    p: &OidcProvider,
    code: &str,
    saved: identities::LoginState,
    user_agent: Option<&str>,
) -> Result<OidcLogin> {
    let id = match state.oidc.finish(&state.settings, p, code, saved.pkce_verifier, saved.nonce).await {
        Ok(id) => id,
        Err(e) => {
            let mut a = audit.clone();
            a.actor_username = Some(format!("oidc:{}", p.name));
            record_outcome(state, &a, &p.name, "oidc.login_failed", Changes::new().set("error", e.code())).await;
            return Err(e);
        }
    };
    let user = match resolve_account(state, audit, p, &id, saved.link_user_id).await {
        Ok(u) => u,
        Err(e) => {
            let mut a = audit.clone();
            a.actor_username = Some(format!("oidc:{}:{}", p.name, id.subject));
            let changes = Changes::new()
                .set("error", e.code())
                .set("subject", id.subject.as_str())
                .set("email", id.email.clone());
            record_outcome(state, &a, &p.name, "oidc.login_refused", changes).await;
            return Err(e);
        }
    };
    let audit = audit.clone().as_user(user.id, &user.username);
    // The provider was the first step; an account with a second factor
    // takes the second as a password login does.
    if let Some(challenge) = crate::service::mfa::challenge_after_oidc(state, &audit, user.id, user_agent).await? {
        return Ok(OidcLogin::SecondFactor(challenge));
    }
    let session = start_session(state, &audit, user.id, SessionKind::Oidc, user_agent).await?;
    Ok(OidcLogin::Done(Box::new(user), session))
}

/// What an OpenID Connect login comes to.
pub enum OidcLogin {
    Done(Box<users::User>, NewSession),
    /// The account has a second factor (`service::mfa`).
    SecondFactor(crate::service::mfa::Challenge),
}

/// Logs a refused or failed login on its own (the request has no other write).
/// Unlinks a provider from an account, unless it is the account's only way
/// to log in (409).
pub async fn unlink(pool: &sqlx::PgPool, audit: &Audit, user_id: uuid::Uuid, provider: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    crate::store::identities::unlink(&mut tx, audit, user_id, provider).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn record_outcome(state: &AppState, audit: &Audit, provider: &str, action: &str, changes: Changes) {
    if let Err(e) = crate::audit::record(&state.pool, audit, "oidc_provider", provider, action, changes).await {
        tracing::warn!(error = %e, "could not log an OIDC outcome");
    }
}

/// The account rules, in order: an existing link; linking for a logged-in
/// caller; a verified email of an existing account (when allowed); refusing
/// an unverified email that matches an account; creating a new account.
pub async fn resolve_account(
    state: &AppState,
    audit: &Audit,
    p: &OidcProvider,
    id: &Identity,
    link_user: Option<uuid::Uuid>,
) -> Result<users::User> {
    let mut tx = state.pool.begin().await?;
    if let Some(user_id) = identities::find(&mut tx, &p.name, &id.subject).await? {
        let user = existing_link(&mut tx, audit, p, id, user_id, link_user).await?;
        tx.commit().await?;
        return Ok(user);
    }
    if let Some(user_id) = link_user {
        let user = users::get_by_id(&mut tx, user_id).await?;
        let a = audit.clone().as_user(user.id, &user.username);
        identities::link(&mut tx, &a, user.id, &p.name, &id.subject, id.email.as_deref(), "by the account holder")
            .await?;
        tx.commit().await?;
        return Ok(user);
    }
    if let Some(user) = link_by_email(state, &mut tx, audit, p, id).await? {
        tx.commit().await?;
        return Ok(user);
    }
    let user = create_account(&mut tx, audit, p, id).await?;
    tx.commit().await?;
    Ok(user)
}

/// Rule 1: the identity is linked already; that user logs in (not when
/// disabled, nor when the caller wanted it linked to someone else).
async fn existing_link(
    tx: &mut sqlx::PgConnection,
    audit: &Audit,
    p: &OidcProvider,
    id: &Identity,
    user_id: uuid::Uuid,
    link_user: Option<uuid::Uuid>,
) -> Result<users::User> {
    let user = users::get_by_id(tx, user_id).await?;
    if link_user.is_some_and(|wanted| wanted != user_id) {
        return Err(Error::conflict("identity_in_use", "this identity is already linked to another account"));
    }
    if !user.enabled {
        return Err(Error::forbidden("this account is disabled").with_code("account_disabled"));
    }
    identities::touch(tx, &p.name, &id.subject).await?;
    let a = audit.clone().as_user(user.id, &user.username);
    crate::audit::record(
        &mut *tx,
        &a,
        "user",
        &user.id.to_string(),
        "login.succeeded",
        Changes::new().set("method", "oidc").set("provider", p.name.as_str()),
    )
    .await?;
    Ok(user)
}

/// Rules 3 and 4: an account with the identity's email. Linked only when
/// both sides verified the address, the provider may link, and the account
/// holds no permission; otherwise 409 `email_in_use`. `None`: no such account.
async fn link_by_email(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    audit: &Audit,
    p: &OidcProvider,
    id: &Identity,
) -> Result<Option<users::User>> {
    let existing = match &id.email {
        // An address this server would refuse (invisible or compatibility
        // characters) names nobody here.
        Some(email) => match Email::parse(email) {
            Ok(email) => users::by_email(tx, &email).await?,
            Err(_) => None,
        },
        None => None,
    };
    let Some(user) = existing else { return Ok(None) };
    // Linking by email trusts both sides: the provider verified the
    // address, and so did this server (a self-set, unverified address is
    // anyone's claim). An account holding any permission is never linked
    // automatically: its owner links the identity from their profile.
    let privileged = !state.role_permissions.of(&user.roles).is_empty();
    if !(p.link_by_email && id.email_verified && user.verified && !privileged) {
        return Err(Error::conflict(
            "email_in_use",
            format!(
                "an account with this email already exists; log in with your password and link {} from your profile",
                if p.display_name.is_empty() { &p.name } else { &p.display_name }
            ),
        ));
    }
    if !user.enabled {
        return Err(Error::forbidden("this account is disabled").with_code("account_disabled"));
    }
    let a = audit.clone().as_user(user.id, &user.username);
    identities::link(tx, &a, user.id, &p.name, &id.subject, id.email.as_deref(), "verified email").await?;
    Ok(Some(user))
}

/// Rules 5 and 6: a new account (username from the claims, made valid and
/// unique; `verified` from `email_verified`; no password), or 403
/// `no_account` when the provider may not create accounts.
async fn create_account(
    tx: &mut sqlx::PgConnection,
    audit: &Audit,
    p: &OidcProvider,
    id: &Identity,
) -> Result<users::User> {
    if !p.auto_create {
        return Err(Error::forbidden("no account is linked to this identity; ask an administrator to create one")
            .with_code("no_account"));
    }
    let email = id
        .email
        .as_deref()
        .ok_or_else(|| Error::invalid("email_required", "the identity provider did not share an email address"))?;
    let email = Email::parse(email)?;
    let username = crate::service::users::unique_username(tx, id.preferred_username.as_deref(), &email).await?;
    let clean = |s: &Option<String>| {
        s.as_deref().map(|v| crate::domain::parse_name("name", v).unwrap_or_default()).unwrap_or_default()
    };
    let (first, last) = match (clean(&id.given_name), clean(&id.family_name)) {
        (f, l) if f.is_empty() && l.is_empty() => {
            let full = clean(&id.name);
            match full.rsplit_once(' ') {
                Some((f, l)) => (f.to_string(), l.to_string()),
                None => (full, String::new()),
            }
        }
        other => other,
    };
    let system = Audit { actor_username: Some(format!("oidc:{}", p.name)), ..audit.clone() };
    let user = users::create(
        tx,
        &system,
        users::NewUser {
            username,
            email,
            first_name: first,
            last_name: last,
            profile: Default::default(),
            password_hash: None,
            enabled: true,
            verified: id.email_verified,
            roles: Vec::new(),
        },
    )
    .await?;
    let a = audit.clone().as_user(user.id, &user.username);
    identities::link(tx, &a, user.id, &p.name, &id.subject, id.email.as_deref(), "first login").await?;
    Ok(user)
}
