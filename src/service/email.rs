//! The flows that go through the user's mailbox: "forgot password", the
//! welcome link of an account created without a password, email
//! verification, and project-invitation mails. Each link is a single-use
//! token (`store::email_tokens`); following a reset or welcome link proves
//! the address, so it also verifies it.

use secrecy::{ExposeSecret, SecretString};

use crate::audit::{self, Audit, Changes};
use crate::auth::principal::Principal;
use crate::domain::{Email, Error, Result};
use crate::state::AppState;
use crate::store::email_tokens::{self, Purpose};
use crate::store::users::{self, User};

/// The answer to a link that cannot be used, whatever the reason.
pub fn invalid_link() -> Error {
    Error::invalid("invalid_link", "this link is invalid, already used or expired")
}

fn mail_off() -> Error {
    Error::conflict("email_unavailable", "this server sends no mail (email.smtp_host is not set)")
}

/// "Forgot password": mails a reset link when `raw_email` is an enabled
/// account's address, and answers the same either way (no enumeration: the
/// mail goes out in the background, so the timing says nothing either).
/// Rate-limited per client address and per address asked for.
pub async fn forgot_password(state: &AppState, audit: &Audit, raw_email: &str) -> Result<()> {
    if !state.mailer.enabled() {
        return Err(mail_off());
    }
    state.limits.forgot_ip.check(audit.client_ip.as_deref().unwrap_or("-")).await?;
    let Ok(email) = Email::parse(raw_email.trim()) else {
        return Ok(());
    };
    state.limits.forgot_address.check(email.key()).await?;
    let mut conn = state.pool.acquire().await?;
    let user = users::by_email(&mut conn, &email).await?.filter(|u| u.enabled);
    drop(conn);
    match user {
        Some(user) => send_reset(state, audit, &user).await,
        None => Ok(()),
    }
}

/// Mails `user` a password-reset link (voiding their earlier ones): the
/// "forgot password" page, or a user manager for them.
pub async fn send_reset(state: &AppState, audit: &Audit, user: &User) -> Result<()> {
    if !state.mailer.enabled() {
        return Err(mail_off());
    }
    let mut tx = state.pool.begin().await?;
    let body = issue_reset(state, &mut tx, audit, user).await?;
    tx.commit().await?;
    state.mailer.send(&user.email, RESET_SUBJECT, body);
    Ok(())
}

/// `send_reset` by a user manager for the account `name`: the account is
/// taken as every manager's write takes one (`users::lock_managed`: locked,
/// and no administrator's account without ADMIN), and the link is issued
/// in that same transaction.
pub async fn send_reset_for(state: &AppState, caller: &Principal, audit: &Audit, name: &str) -> Result<()> {
    if !state.mailer.enabled() {
        return Err(mail_off());
    }
    let mut tx = state.pool.begin().await?;
    let user = crate::service::users::lock_managed(&mut tx, caller, name).await?;
    let body = issue_reset(state, &mut tx, audit, &user).await?;
    tx.commit().await?;
    state.mailer.send(&user.email, RESET_SUBJECT, body);
    Ok(())
}

const RESET_SUBJECT: &str = "Reset your registrar password";

/// Issues `user`'s reset link in `tx` and logs it; the mail's body, to
/// send once `tx` has committed.
async fn issue_reset(state: &AppState, tx: &mut sqlx::PgConnection, audit: &Audit, user: &User) -> Result<String> {
    let ttl = chrono::Duration::minutes(i64::from(state.settings.email.reset_ttl_mins));
    let token = email_tokens::issue(&mut *tx, Purpose::PasswordReset, user.id, &user.email_key, ttl).await?;
    let changes = Changes::new().set("email", user.email.as_str());
    audit::record(&mut *tx, audit, "user", &user.id.to_string(), "password.reset_requested", changes).await?;
    let link = state.mailer.link(&format!("/reset-password?token={token}"));
    Ok(format!(
        "Hello {name},\n\nSomeone (hopefully you) asked to reset the password of the registrar account '{username}'.\n\
         To choose a new password, open this link within {mins} minutes:\n\n{link}\n\n\
         If you did not ask for this, ignore this mail: your password stays as it is.\n",
        name = display_name(user),
        username = user.username,
        mins = state.settings.email.reset_ttl_mins,
    ))
}

/// Mails a new account (created without a password) its welcome link,
/// where the user chooses a password. Nothing when mail is off.
pub async fn send_welcome(state: &AppState, user: &User) -> Result<bool> {
    if !state.mailer.enabled() {
        return Ok(false);
    }
    let ttl = chrono::Duration::hours(i64::from(state.settings.email.verify_ttl_hours));
    let mut conn = state.pool.acquire().await?;
    let token = email_tokens::issue(&mut conn, Purpose::Welcome, user.id, &user.email_key, ttl).await?;
    let link = state.mailer.link(&format!("/reset-password?token={token}"));
    let body = format!(
        "Hello {name},\n\nAn account was created for you on registrar: your username is '{username}'.\n\
         To choose your password, open this link within {hours} hours:\n\n{link}\n",
        name = display_name(user),
        username = user.username,
        hours = state.settings.email.verify_ttl_hours,
    );
    state.mailer.send(&user.email, "Your registrar account", body);
    Ok(true)
}

/// Mails `user` a link that verifies their current address. Nothing when
/// mail is off or the address is already verified.
pub async fn send_verification(state: &AppState, user: &User) -> Result<bool> {
    if !state.mailer.enabled() || user.verified {
        return Ok(false);
    }
    let ttl = chrono::Duration::hours(i64::from(state.settings.email.verify_ttl_hours));
    let mut conn = state.pool.acquire().await?;
    let token = email_tokens::issue(&mut conn, Purpose::VerifyEmail, user.id, &user.email_key, ttl).await?;
    let link = state.mailer.link(&format!("/verify-email?token={token}"));
    let body = format!(
        "Hello {name},\n\nTo confirm that {email} is the address of the registrar account '{username}', \
         open this link within {hours} hours:\n\n{link}\n",
        name = display_name(user),
        email = user.email,
        username = user.username,
        hours = state.settings.email.verify_ttl_hours,
    );
    state.mailer.send(&user.email, "Verify your email address", body);
    Ok(true)
}

/// The account a link belongs to, when it can still be used (the page
/// that shows the form asks; nothing is used up).
pub async fn check_link(state: &AppState, token: &str, purposes: &[Purpose]) -> Result<(User, Purpose)> {
    let mut conn = state.pool.acquire().await?;
    let valid = email_tokens::peek(&mut conn, token, purposes).await?.ok_or_else(invalid_link)?;
    Ok((users::get_by_id(&mut conn, valid.user_id).await?, valid.purpose))
}

/// Sets a password through a reset or welcome link: the policy, then in one
/// transaction the link used up, the password reset (every session ends)
/// and the address verified.
pub async fn set_password_by_link(
    state: &AppState,
    audit: &Audit,
    token: &str,
    password: SecretString,
) -> Result<User> {
    let purposes = [Purpose::PasswordReset, Purpose::Welcome];
    let (user, _) = check_link(state, token, &purposes).await?;
    state
        .hasher
        .check_policy(password.expose_secret(), &user.username, &user.email)
        .map_err(|e| e.as_field("password"))?;
    let hash = state.hasher.hash(password).await?;
    let audit = audit.clone().as_user(user.id, &user.username);
    let mut tx = state.pool.begin().await?;
    let valid = email_tokens::consume(&mut tx, token, &purposes).await?.filter(|v| v.user_id == user.id);
    valid.ok_or_else(invalid_link)?;
    let user = users::get_by_id(&mut tx, user.id).await?;
    crate::service::users::write_reset(&mut tx, &audit, &user, hash).await?;
    let user = verify(&mut tx, &audit, &user).await?;
    tx.commit().await?;
    Ok(user)
}

/// Verifies an address through its link (single use).
pub async fn verify_by_link(state: &AppState, audit: &Audit, token: &str) -> Result<User> {
    let mut tx = state.pool.begin().await?;
    let valid = email_tokens::consume(&mut tx, token, &[Purpose::VerifyEmail]).await?.ok_or_else(invalid_link)?;
    let user = users::get_by_id(&mut tx, valid.user_id).await?;
    let audit = audit.clone().as_user(user.id, &user.username);
    let user = verify(&mut tx, &audit, &user).await?;
    tx.commit().await?;
    Ok(user)
}

async fn verify(tx: &mut sqlx::PgConnection, audit: &Audit, user: &User) -> Result<User> {
    if user.verified {
        return Ok(user.clone());
    }
    let patch = users::Patch { verified: Some(true), ..Default::default() };
    users::update(tx, audit, &user.id.to_string(), patch).await
}

/// Mails the person an invitation is for (after the invitation committed):
/// the address typed for an email invitation, the account's otherwise.
pub fn invitation_sent(state: &AppState, par: &crate::store::access_requests::AccessRequest) {
    let Some(to) = par.invited_email.clone().or_else(|| par.email.clone()) else {
        return;
    };
    let link = state.mailer.link("/account/projects");
    let by = par.created_by.as_deref().unwrap_or("an owner");
    let body = format!(
        "Hello,\n\n{by} invited you to the project '{name}' ({id}) on registrar, as {level}.\n\
         To accept or decline, log in (or create your account with this address) and open:\n\n{link}\n",
        name = par.project_name,
        id = par.project_id,
        level = par.level,
    );
    state.mailer.send(&to, &format!("Invitation to project {}", par.project_id), body);
}

fn display_name(user: &User) -> String {
    let full = format!("{} {}", user.first_name, user.last_name);
    let full = full.trim();
    if full.is_empty() {
        user.username.clone()
    } else {
        full.to_string()
    }
}
