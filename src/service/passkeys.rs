//! Passkeys (WebAuthn Level 3, through the pure-Rust `webauthn_rp`):
//! register several, name them, remove them; log in with one and no
//! password (username-less: the credential names its user); or use one as
//! the second step of a password or OpenID Connect login, or for a step-up.
//!
//! Every credential is registered as discoverable, with user verification
//! required, so a passkey login is itself two factors (the device and its
//! PIN or biometric): it counts as the session's second factor (`amr`
//! `hwk`, `user`). The signature counter must move forward: an
//! authenticator that answers with an old counter (a cloned credential) is
//! refused and the refusal is logged.
//!
//! Ceremonies live in the database (`webauthn_ceremonies`), keyed by their
//! challenge and bound to what started them, so that any instance can
//! finish them and each is used once. The relying-party id is the host of
//! `public_url` (or `mfa.passkey_rp_id`); the accepted origins are
//! `public_url`'s origin (or `mfa.passkey_origins`). A server whose public
//! address is an IP address has no passkeys (WebAuthn needs a domain).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use webauthn_rp::bin::{Decode, Encode};
use webauthn_rp::request::auth::{AuthenticationVerificationOptions, DiscoverableCredentialRequestOptions};
use webauthn_rp::request::register::{
    CredProtect, Nickname, PublicKeyCredentialCreationOptions, PublicKeyCredentialUserEntity,
    RegistrationVerificationOptions, UserHandle, Username,
};
use webauthn_rp::request::{AsciiDomain, ExtensionInfo, PublicKeyCredentialDescriptor, RpId, TimedCeremony};
use webauthn_rp::response::auth::error::AuthCeremonyErr;
use webauthn_rp::response::auth::ser_relaxed::DiscoverableAuthenticationRelaxed16;
use webauthn_rp::response::register::ser_relaxed::RegistrationRelaxed;
use webauthn_rp::response::register::{CompressedPubKey, DynamicState, StaticState};
use webauthn_rp::response::{AuthTransports, CredentialId};
use webauthn_rp::{AuthenticatedCredential, DiscoverableAuthenticationServerState, RegistrationServerState};

use crate::audit::{self, Audit, Changes};
use crate::domain::{Error, Result};
use crate::service::auth::LoggedIn;
use crate::state::AppState;
use crate::store::passkeys::{self as store, NewCeremony, NewPasskey, Passkey};

/// Our user handles are the users' ids (16 random-looking bytes, no
/// personal data).
const HANDLE: usize = 16;
type Handle = UserHandle<HANDLE>;
type PubKey = CompressedPubKey<[u8; 32], [u8; 32], [u8; 48], Vec<u8>>;
/// Longest credential JSON accepted (an attestation with a certificate
/// chain fits well within it).
pub const MAX_CREDENTIAL_JSON: usize = 32 * 1024;
pub const MAX_NAME: usize = 64;

/// The relying party: its id and the origins a browser may answer from.
pub struct Rp {
    id: RpId,
    origins: Vec<String>,
}

fn unavailable() -> Error {
    Error::conflict(
        "passkeys_unavailable",
        "passkeys need a domain name: set public_url to this server's https:// address (or mfa.passkey_rp_id)",
    )
}

/// The relying party of this server, or `None` when it has no domain name.
pub fn rp(state: &AppState) -> Option<Rp> {
    let url = url::Url::parse(&state.settings.public_url).ok()?;
    let host = match state.settings.mfa.passkey_rp_id.trim() {
        "" => match url.host()? {
            url::Host::Domain(d) => d.to_ascii_lowercase(),
            _ => return None,
        },
        id => id.to_ascii_lowercase(),
    };
    let id = RpId::Domain(AsciiDomain::try_from(host).ok()?);
    let origins = if state.settings.mfa.passkey_origins.is_empty() {
        vec![url.origin().ascii_serialization()]
    } else {
        state.settings.mfa.passkey_origins.clone()
    };
    Some(Rp { id, origins })
}

/// Whether passkeys can be used here.
pub fn available(state: &AppState) -> bool {
    rp(state).is_some()
}

fn handle_of(user: Uuid) -> Handle {
    match Handle::decode(*user.as_bytes()) {
        Ok(h) => h,
        Err(never) => match never {},
    }
}

fn user_of(handle: &Handle) -> Uuid {
    match handle.encode() {
        Ok(bytes) => Uuid::from_bytes(bytes),
        Err(never) => match never {},
    }
}

fn challenge_key(c: u128) -> [u8; 16] {
    c.to_le_bytes()
}

fn expiry(t: std::time::SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

/// A refusal's reason as logged: the library's words may quote the
/// caller's input, so they are cut short.
fn short(reason: &str) -> String {
    let mut s: String = reason.chars().take(160).collect();
    if s.len() < reason.len() {
        s.push('…');
    }
    s
}

pub(crate) fn bad_passkey() -> Error {
    Error::unauthorized("the passkey's answer does not verify, or its ceremony is unknown, used or expired")
        .with_code("invalid_passkey")
}

fn internal(what: &str) -> impl FnOnce(String) -> Error + '_ {
    move |e| Error::internal(anyhow::anyhow!("passkey {what}: {e}"))
}

/// What the browser needs for `navigator.credentials.create` or `.get`
/// (the WebAuthn JSON options: `PublicKeyCredential.parseCreationOptionsFromJSON`
/// and `parseRequestOptionsFromJSON` take it as it is).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Options {
    #[serde(rename = "publicKey")]
    #[schema(value_type = Object)]
    pub public_key: serde_json::Value,
}

/// Registration, first half: the creation options for the user's next
/// passkey (their other passkeys excluded), bound to their session.
pub async fn registration_options(
    state: &AppState,
    user: Uuid,
    username: &str,
    display_name: &str,
    session: Option<Uuid>,
) -> Result<Options> {
    let rp = rp(state).ok_or_else(unavailable)?;
    let handle = handle_of(user);
    let name = Username::try_from(username).map_err(|e| internal("username")(e.to_string()))?;
    let display_name = Nickname::try_from(display_name.trim()).ok();
    let mut conn = state.pool.acquire().await?;
    let exclude = store::descriptors(&mut conn, user)
        .await?
        .into_iter()
        .filter_map(|(id, transports)| {
            Some(PublicKeyCredentialDescriptor {
                id: CredentialId::<Vec<u8>>::decode(id).ok()?,
                transports: AuthTransports::decode(u8::try_from(transports).ok()?).ok()?,
            })
        })
        .collect();
    let entity = PublicKeyCredentialUserEntity { name, id: &handle, display_name };
    let mut options = PublicKeyCredentialCreationOptions::passkey(&rp.id, entity, exclude);
    // Ask for credProtect (user verification required) without making the
    // browser refuse authenticators that lack it: every login of ours
    // requires user verification anyway.
    options.extensions.cred_protect = CredProtect::UserVerificationRequired(ExtensionInfo::AllowDontEnforceValue);
    let (server, client) = options.start_ceremony().map_err(|e| internal("options")(e.to_string()))?;
    let public_key = serde_json::to_value(&client).map_err(|e| internal("options")(e.to_string()))?;
    let state_bytes = server.encode().map_err(|e| internal("state")(e.to_string()))?;
    let challenge = challenge_key(server.sent_challenge().encode().unwrap_or_else(|never| match never {}));
    let bound = session.map(|s| s.as_bytes().to_vec());
    store::start_ceremony(
        &mut conn,
        NewCeremony {
            challenge: &challenge,
            purpose: "register",
            user_id: Some(user),
            bound: bound.as_deref(),
            state: &state_bytes,
            expires_at: expiry(server.expiration()),
        },
    )
    .await?;
    Ok(Options { public_key })
}

/// A registered passkey, and the recovery codes when it is the account's
/// first factor (shown this once).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Registered {
    pub passkey: Passkey,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_codes: Option<Vec<String>>,
}

fn check_name(name: &str) -> Result<&str> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || !name.chars().all(crate::domain::visible) {
        return Err(Error::invalid(
            "invalid_passkey_name",
            format!("give the passkey a name of 1 to {MAX_NAME} characters"),
        )
        .on_field("name"));
    }
    Ok(name)
}

/// Registration, second half: checks the authenticator's answer against
/// the ceremony the caller's session started, and stores the passkey.
pub async fn register(
    state: &AppState,
    audit: &Audit,
    user: Uuid,
    session: Option<Uuid>,
    name: &str,
    credential: &[u8],
) -> Result<Registered> {
    let rp = rp(state).ok_or_else(unavailable)?;
    let name = check_name(name)?;
    if credential.len() > MAX_CREDENTIAL_JSON {
        return Err(Error::invalid("invalid_passkey", "the credential is too large").on_field("credential"));
    }
    let refused = |why: String| {
        tracing::info!(reason = %short(&why), "passkey registration refused");
        Error::invalid("invalid_passkey", "the authenticator's answer does not verify: try again")
            .on_field("credential")
    };
    // The browser's `PublicKeyCredential.toJSON()`; fields a newer browser
    // adds are ignored, everything checked is still required.
    let reg = serde_json::from_slice::<RegistrationRelaxed>(credential).map_err(|e| refused(e.to_string()))?.0;
    let challenge = challenge_key(
        reg.challenge_relaxed().map_err(|e| refused(e.to_string()))?.encode().unwrap_or_else(|never| match never {}),
    );
    let mut tx = state.pool.begin().await?;
    let Some(c) = store::take_ceremony(&mut tx, &challenge, "register").await? else {
        return Err(refused("no such ceremony".into()));
    };
    let bound = session.map(|s| s.as_bytes().to_vec());
    if c.user_id != Some(user) || c.bound != bound {
        tx.commit().await?;
        return Err(refused("the ceremony belongs to another user or session".into()));
    }
    let server = RegistrationServerState::<HANDLE>::decode(&c.state).map_err(|e| internal("state")(e.to_string()))?;
    let options = RegistrationVerificationOptions::<'_, '_, String, String> {
        allowed_origins: &rp.origins,
        ..Default::default()
    };
    let cred = match server.verify(&rp.id, &reg, &options) {
        Ok(c) => c,
        Err(e) => {
            tx.commit().await?;
            return Err(refused(e.to_string()));
        }
    };
    let (id, transports, handle, static_state, dynamic_state, _metadata) = cred.into_parts();
    if user_of(&handle) != user {
        tx.commit().await?;
        return Err(refused("the credential names another user".into()));
    }
    let static_bytes = static_state.encode().unwrap_or_else(|never| match never {});
    let dynamic_bytes = dynamic_state.encode().unwrap_or_else(|never| match never {});
    let transports = i16::from(transports.encode().unwrap_or_else(|never| match never {}));
    let new = NewPasskey {
        user_id: user,
        name,
        credential_id: id.as_ref(),
        transports,
        static_state: &static_bytes,
        dynamic_state: &dynamic_bytes,
    };
    let Some(passkey) = store::insert(&mut tx, audit, new).await? else {
        // The ceremony is spent all the same.
        tx.commit().await?;
        return Err(Error::conflict("passkey_exists", "this passkey is already registered"));
    };
    let recovery_codes = crate::service::mfa::first_recovery_codes(state, &mut tx, audit, user).await?;
    if let Some(session) = session {
        // The authenticator just verified the user: the session's second factor.
        crate::store::mfa::enrolled_in(&mut tx, session, user, "hwk").await?;
    }
    tx.commit().await?;
    Ok(Registered { passkey, recovery_codes })
}

pub async fn list(state: &AppState, user: Uuid) -> Result<Vec<Passkey>> {
    let mut conn = state.pool.acquire().await?;
    store::list(&mut conn, user).await
}

fn not_found() -> Error {
    Error::not_found("passkey_not_found", "no such passkey")
}

pub async fn rename(state: &AppState, audit: &Audit, user: Uuid, id: Uuid, name: &str) -> Result<Passkey> {
    let name = check_name(name)?;
    let mut tx = state.pool.begin().await?;
    let p = store::rename(&mut tx, audit, user, id, name).await?.ok_or_else(not_found)?;
    tx.commit().await?;
    Ok(p)
}

/// Removes a passkey. The recovery codes go with the last factor.
pub async fn remove(state: &AppState, audit: &Audit, user: Uuid, id: Uuid) -> Result<()> {
    let mut tx = state.pool.begin().await?;
    crate::store::mfa::lock_user(&mut tx, user).await?;
    if !store::remove(&mut tx, audit, user, id).await? {
        return Err(not_found());
    }
    crate::service::mfa::drop_codes_without_factor(&mut tx, audit, user).await?;
    tx.commit().await?;
    Ok(())
}

/// What an assertion's ceremony is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A login with the passkey alone (username-less).
    Login,
    /// The second step of the login whose `mfa_token` is given.
    SecondFactor,
    /// A step-up in a session.
    StepUp,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Login => "login",
            Purpose::SecondFactor => "second_factor",
            Purpose::StepUp => "step_up",
        }
    }
}

/// Options for `navigator.credentials.get` (any of the user's passkeys:
/// they are all discoverable), bound as `purpose` needs: nothing for a
/// login, the `mfa_token`'s hash for a second step, the session for a
/// step-up.
pub async fn assertion_options(
    state: &AppState,
    purpose: Purpose,
    user: Option<Uuid>,
    bound: Option<&[u8]>,
) -> Result<Options> {
    let rp = rp(state).ok_or_else(unavailable)?;
    let (server, client) = DiscoverableCredentialRequestOptions::passkey(&rp.id)
        .start_ceremony()
        .map_err(|e| internal("options")(e.to_string()))?;
    let public_key = serde_json::to_value(&client).map_err(|e| internal("options")(e.to_string()))?;
    let state_bytes = server.encode().map_err(|e| internal("state")(e.to_string()))?;
    let challenge = challenge_key(server.sent_challenge().encode().unwrap_or_else(|never| match never {}));
    let mut conn = state.pool.acquire().await?;
    store::start_ceremony(
        &mut conn,
        NewCeremony {
            challenge: &challenge,
            purpose: purpose.as_str(),
            user_id: user,
            bound,
            state: &state_bytes,
            expires_at: expiry(server.expiration()),
        },
    )
    .await?;
    Ok(Options { public_key })
}

/// The hash an `mfa_token`'s ceremonies are bound to.
pub fn token_binding(mfa_token: &str) -> Vec<u8> {
    Sha256::digest(format!("passkey ceremony:{mfa_token}").as_bytes()).to_vec()
}

/// Checks an assertion (`credential`, the JSON of `PublicKeyCredential.toJSON()`)
/// against its ceremony, which must be for `purpose`, bound to `bound`
/// and (when it names one) for `user`. The user the passkey belongs to.
/// The ceremony is used up either way; a refusal is logged.
pub async fn verify_assertion(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    audit: &Audit,
    purpose: Purpose,
    bound: Option<&[u8]>,
    credential: &[u8],
) -> Result<std::result::Result<Uuid, Error>> {
    let rp = rp(state).ok_or_else(unavailable)?;
    if credential.len() > MAX_CREDENTIAL_JSON {
        return Ok(Err(bad_passkey()));
    }
    let auth = match serde_json::from_slice::<DiscoverableAuthenticationRelaxed16>(credential) {
        Ok(a) => a.0,
        Err(e) => {
            tracing::info!(reason = %short(&e.to_string()), "passkey assertion unreadable");
            return Ok(Err(bad_passkey()));
        }
    };
    let Ok(challenge) = auth.challenge_relaxed() else { return Ok(Err(bad_passkey())) };
    let challenge = challenge_key(challenge.encode().unwrap_or_else(|never| match never {}));
    let Some(c) = store::take_ceremony(tx, &challenge, purpose.as_str()).await? else { return Ok(Err(bad_passkey())) };
    let handle = auth.response().user_handle();
    let user = user_of(handle);
    if c.bound.as_deref() != bound || c.user_id.is_some_and(|u| u != user) {
        return Ok(Err(bad_passkey()));
    }
    let Some(stored) = store::by_credential(tx, user, auth.raw_id().as_ref()).await? else {
        return Ok(Err(bad_passkey()));
    };
    let static_state =
        StaticState::<PubKey>::decode(&stored.static_state).map_err(|e| internal("stored key")(e.to_string()))?;
    let dynamic: [u8; 7] =
        stored.dynamic_state.as_slice().try_into().map_err(|_| internal("stored state")("length".into()))?;
    let dynamic_state = DynamicState::decode(dynamic).map_err(|e| internal("stored state")(e.to_string()))?;
    let id = CredentialId::<&[u8]>::decode(&stored.credential_id).map_err(|e| internal("stored id")(e.to_string()))?;
    let mut cred = AuthenticatedCredential::new(id, handle, static_state, dynamic_state)
        .map_err(|e| internal("stored credential")(e.to_string()))?;
    let server =
        DiscoverableAuthenticationServerState::decode(&c.state).map_err(|e| internal("state")(e.to_string()))?;
    let options = AuthenticationVerificationOptions::<'_, '_, String, String> {
        allowed_origins: &rp.origins,
        update_uv: true,
        ..Default::default()
    };
    match server.verify(&rp.id, &auth, &mut cred, &options) {
        Ok(changed) => {
            let dynamic =
                if changed { Some(cred.dynamic_state().encode().unwrap_or_else(|never| match never {})) } else { None };
            store::used(tx, stored.id, dynamic.as_ref().map(|d| d.as_slice())).await?;
            Ok(Ok(user))
        }
        Err(e) => {
            let why = if matches!(e, AuthCeremonyErr::SignatureCounter) {
                "signature counter did not move forward (a cloned authenticator?)"
            } else {
                "the signature or its data does not verify"
            };
            tracing::warn!(passkey = %stored.id, reason = %e, "passkey assertion refused");
            let changes = Changes::new()
                .set("passkey", stored.id.to_string())
                .set("name", stored.name.clone())
                .set("reason", why);
            audit::record(&mut *tx, audit, "user", &user.to_string(), "mfa.passkey_refused", changes).await?;
            Ok(Err(bad_passkey()))
        }
    }
}

/// A login with a passkey alone (no password): the session and tokens.
pub async fn login(state: &AppState, audit: &Audit, credential: &[u8], user_agent: Option<&str>) -> Result<LoggedIn> {
    let mut tx = state.pool.begin().await?;
    let user = match verify_assertion(state, &mut tx, audit, Purpose::Login, None, credential).await? {
        Ok(user) => user,
        Err(e) => {
            tx.commit().await?;
            return Err(e);
        }
    };
    // The account as a login reads it: enabled, not locked.
    let account = crate::store::mfa::step_user(&mut tx, user).await?;
    let locked_until = crate::store::users::locked_until(&mut tx, user).await?;
    tx.commit().await?;
    let Some(account) = account.filter(|a| a.enabled) else { return Err(bad_passkey()) };
    if locked_until.is_some_and(|l| l > Utc::now()) {
        return Err(crate::store::users::LockoutLimits::of(state).locked(locked_until));
    }
    let ok = crate::store::users::LoginOk {
        user_id: user,
        username: account.username,
        rehashed: None,
        checked_hash: account.password_hash,
        not_before: account.tokens_not_before,
        mfa_enabled: account.mfa_enabled,
    };
    crate::service::auth::start_login_session(state, audit, ok, user_agent, &["hwk", "user"]).await
}
