//! Second factors: TOTP (RFC 6238: SHA-1, 6 digits, 30 s, one step either
//! side; a code is good once) and single-use recovery codes, and the second
//! step of a login. Every way in (the native API, the login page, the
//! OpenID Provider's login, OpenID Connect first logins) asks for the
//! second factor through `challenge` and finishes with `second_step`.
//!
//! The TOTP secret is sealed with AES-256-GCM under a key derived from the
//! server pepper (it must be read back to check a code); recovery codes are
//! stored as HMAC-SHA-256 under the pepper. A wrong code counts toward the
//! account's lockout like a wrong password, and is counted before it is
//! checked, so parallel guesses cannot outrun the limit.

use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Secret, TOTP};
use uuid::Uuid;

use crate::audit::Audit;
use crate::auth::tokens::{self, Keys};
use crate::domain::{Error, Result};
use crate::service::auth::LoggedIn;
use crate::state::AppState;
use crate::store::mfa::{self as store, NewChallenge};
use crate::store::users::{LockoutLimits, LoginOk};

/// Seconds a login's second step may follow its first.
pub const CHALLENGE_TTL_SECS: i64 = 300;
/// Recovery codes made at a time.
pub const RECOVERY_CODES: usize = 10;
const STEP_SECS: u64 = 30;
const SEAL_PURPOSE: &str = "mfa totp secret v1";

/// What the first step of a login answers when a second factor is due.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Challenge {
    pub mfa_required: bool,
    /// Single use, for `POST /api/v1/auth/mfa`; lives `expires_in` seconds.
    pub mfa_token: String,
    /// The user's factors: `totp`, `passkey`, `recovery_code`.
    pub methods: Vec<&'static str>,
    pub expires_in: i64,
}

/// A pending TOTP enrolment: shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TotpEnrolment {
    /// The secret, base32 (for typing into an authenticator).
    pub secret: String,
    /// `otpauth://totp/...` (for a QR code).
    pub otpauth_uri: String,
}

/// A user's factors (never a secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// The user has a confirmed second factor.
    pub enabled: bool,
    /// `none`, `pending` (enrolment not yet confirmed) or `confirmed`.
    pub totp: &'static str,
    pub recovery_codes_left: i64,
    /// The user's passkeys (names and dates; never a key).
    pub passkeys: Vec<crate::store::passkeys::Passkey>,
    /// Whether this server can register passkeys (it needs a domain name).
    pub passkeys_available: bool,
}

fn seal(keys: &Keys, plain: &[u8]) -> Result<Vec<u8>> {
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &keys.derived_key(SEAL_PURPOSE))
            .map_err(|_| Error::internal(anyhow::anyhow!("seal key")))?,
    );
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut data = plain.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
        .map_err(|_| Error::internal(anyhow::anyhow!("seal")))?;
    let mut out = nonce.to_vec();
    out.extend(data);
    Ok(out)
}

fn unseal(keys: &Keys, sealed: &[u8]) -> Result<Vec<u8>> {
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &keys.derived_key(SEAL_PURPOSE))
            .map_err(|_| Error::internal(anyhow::anyhow!("seal key")))?,
    );
    if sealed.len() < NONCE_LEN {
        return Err(Error::internal(anyhow::anyhow!("a sealed TOTP secret is too short")));
    }
    let (nonce, data) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::internal(anyhow::anyhow!("nonce")))?;
    let mut data = data.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::empty(), &mut data)
        .map_err(|_| Error::internal(anyhow::anyhow!("a TOTP secret does not open under this server's pepper")))?;
    Ok(plain.to_vec())
}

fn totp(secret: Vec<u8>, issuer: &str, account: &str) -> Result<TOTP> {
    TOTP::new(Algorithm::SHA1, 6, 1, STEP_SECS, secret, Some(issuer.to_string()), account.to_string())
        .map_err(|e| Error::internal(anyhow::anyhow!("TOTP: {e}")))
}

fn issuer(state: &AppState) -> String {
    let url = url::Url::parse(&state.settings.public_url).ok();
    let host = url.as_ref().and_then(|u| u.host_str()).unwrap_or("registrar");
    format!("registrar ({host})").replace(':', " ")
}

/// The time step a 6-digit `code` is good for (now, or one step either
/// side), compared in constant time; `None` when it is none of them.
fn matching_step(t: &TOTP, code: &str, now: u64) -> Option<i64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = now / STEP_SECS;
    let mut found = None;
    for s in [step.saturating_sub(1), step, step + 1] {
        if tokens::constant_time_eq(t.generate(s * STEP_SECS).as_bytes(), code.as_bytes()) {
            found = Some(s as i64);
        }
    }
    found
}

/// The whole CPU work of checking a TOTP code: open the sealed secret and
/// compare the code with the three steps around `now`. The time step it is
/// good for, if any (whether that step is still unused is the caller's to
/// check). Public for `examples/totp_cost.rs`, which times it.
pub fn totp_step(keys: &Keys, sealed: &[u8], issuer: &str, account: &str, code: &str, now: u64) -> Result<Option<i64>> {
    let t = totp(unseal(keys, sealed)?, issuer, account)?;
    Ok(matching_step(&t, code, now))
}

/// A sealed TOTP secret (for `examples/totp_cost.rs`).
pub fn seal_secret(keys: &Keys, secret: &[u8]) -> Result<Vec<u8>> {
    seal(keys, secret)
}

/// The current code of `secret` (for `examples/totp_cost.rs`).
pub fn current_code(secret: &[u8], now: u64) -> Result<String> {
    Ok(totp(secret.to_vec(), "registrar", "bench")?.generate(now))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A recovery code as typed: lower case, without blanks or dashes.
fn normal_recovery(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

fn new_recovery_codes(keys: &Keys) -> (Vec<String>, Vec<Vec<u8>>) {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    let mut hashes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let mut bytes = [0u8; 10];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let raw: String = bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
        hashes.push(keys.secret_hash(&format!("recovery:{raw}")));
        codes.push(format!("{}-{}", &raw[..5], &raw[5..]));
    }
    (codes, hashes)
}

fn invalid_code() -> Error {
    Error::unauthorized("the code is wrong, used, or expired").with_code("invalid_code")
}

fn invalid_mfa_token() -> Error {
    Error::unauthorized("the mfa_token is unknown, used or expired: log in again").with_code("invalid_mfa_token")
}

/// The user's factors.
pub async fn status(state: &AppState, user: Uuid) -> Result<Status> {
    let mut conn = state.pool.acquire().await?;
    let t = store::totp(&mut conn, user).await?;
    let left = store::unused_recovery_codes(&mut conn, user).await?;
    let passkeys = crate::store::passkeys::list(&mut conn, user).await?;
    let totp = match &t {
        None => "none",
        Some(t) if t.confirmed_at.is_none() => "pending",
        Some(_) => "confirmed",
    };
    Ok(Status {
        enabled: totp == "confirmed" || !passkeys.is_empty(),
        totp,
        recovery_codes_left: left,
        passkeys,
        passkeys_available: crate::service::passkeys::available(state),
    })
}

/// Starts a TOTP enrolment: a new secret, pending until a first code confirms it.
pub async fn begin_totp(state: &AppState, audit: &Audit, user: Uuid, username: &str) -> Result<TotpEnrolment> {
    let mut secret = vec![0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let t = totp(secret.clone(), &issuer(state), username)?;
    let sealed = seal(&state.keys, &secret)?;
    let mut tx = state.pool.begin().await?;
    if !store::begin_totp(&mut tx, audit, user, &sealed).await? {
        return Err(Error::conflict(
            "totp_exists",
            "an authenticator is already confirmed: remove it before enrolling another",
        ));
    }
    tx.commit().await?;
    Ok(TotpEnrolment { secret: Secret::Raw(secret).to_encoded().to_string(), otpauth_uri: t.get_url() })
}

/// Confirms the pending enrolment with a first code. The first factor of an
/// account also brings its recovery codes (shown this once).
pub async fn confirm_totp(
    state: &AppState,
    audit: &Audit,
    user: Uuid,
    username: &str,
    session: Option<Uuid>,
    code: &str,
) -> Result<Option<Vec<String>>> {
    let mut tx = state.pool.begin().await?;
    let Some(pending) = store::totp(&mut tx, user).await?.filter(|t| t.confirmed_at.is_none()) else {
        return Err(Error::conflict("no_pending_totp", "start an enrolment first (POST .../mfa/totp)"));
    };
    // Counted like any code (a pending secret must not be guessable either).
    if let Some(locked) = reserve_attempt(state, &mut tx, user).await? {
        return Err(locked);
    }
    let accepted = match totp_step(&state.keys, &pending.secret_sealed, &issuer(state), username, code, now_secs())? {
        Some(step) => store::accept_step(&mut tx, user, step).await?,
        None => false,
    };
    if !accepted {
        let refusal = wrong_code(state, &mut tx, audit, user, "totp_confirm").await?;
        tx.commit().await?;
        return Err(refusal);
    }
    store::factor_passed(&mut tx, user).await?;
    store::confirm_totp(&mut tx, audit, user).await?;
    if let Some(session) = session {
        // The code just checked is this session's second factor.
        store::enrolled_in(&mut tx, session, user, "otp").await?;
    }
    let codes = first_recovery_codes(state, &mut tx, audit, user).await?;
    tx.commit().await?;
    Ok(codes)
}

/// The recovery codes that come with an account's first factor (none when
/// it has unused ones already).
pub(crate) async fn first_recovery_codes(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    audit: &Audit,
    user: Uuid,
) -> Result<Option<Vec<String>>> {
    if store::unused_recovery_codes(tx, user).await? > 0 {
        return Ok(None);
    }
    let (codes, hashes) = new_recovery_codes(&state.keys);
    store::replace_recovery_codes(tx, audit, user, &hashes).await?;
    Ok(Some(codes))
}

/// The recovery codes go with the account's last factor.
pub(crate) async fn drop_codes_without_factor(tx: &mut sqlx::PgConnection, audit: &Audit, user: Uuid) -> Result<()> {
    let has_factor = store::step_user(tx, user).await?.is_some_and(|u| u.mfa_enabled);
    if !has_factor && store::unused_recovery_codes(tx, user).await? > 0 {
        store::replace_recovery_codes(tx, audit, user, &[]).await?;
    }
    Ok(())
}

/// Removes the authenticator. The recovery codes go with the last factor.
pub async fn remove_totp(state: &AppState, audit: &Audit, user: Uuid) -> Result<()> {
    let mut tx = state.pool.begin().await?;
    store::lock_user(&mut tx, user).await?;
    if !store::remove_totp(&mut tx, audit, user).await? {
        return Err(Error::not_found("totp_not_found", "no authenticator is enrolled"));
    }
    drop_codes_without_factor(&mut tx, audit, user).await?;
    tx.commit().await?;
    Ok(())
}

/// New recovery codes (the old ones die). Only for a user with a factor.
pub async fn regenerate_recovery_codes(state: &AppState, audit: &Audit, user: Uuid) -> Result<Vec<String>> {
    let mut tx = state.pool.begin().await?;
    let has = store::step_user(&mut tx, user).await?.is_some_and(|u| u.mfa_enabled);
    if !has {
        return Err(Error::conflict("mfa_not_enabled", "recovery codes come with a second factor: enrol one first"));
    }
    let (codes, hashes) = new_recovery_codes(&state.keys);
    store::replace_recovery_codes(&mut tx, audit, user, &hashes).await?;
    tx.commit().await?;
    Ok(codes)
}

/// An administrator removes every factor of a user and ends all their
/// sessions (they log in with the password alone, and may enrol again).
pub async fn reset(
    state: &AppState,
    caller: &crate::auth::principal::Principal,
    audit: &Audit,
    user: Uuid,
) -> Result<()> {
    let mut tx = state.pool.begin().await?;
    // An administrator's factors only by an administrator, checked on the
    // locked row (a grant of Administrator at the same moment is seen).
    crate::service::users::lock_managed(&mut tx, caller, &user.to_string()).await?;
    store::lock_user(&mut tx, user).await?;
    store::reset(&mut tx, audit, user).await?;
    crate::store::sessions::revoke_all(&mut tx, audit, user, "mfa reset").await?;
    tx.commit().await?;
    Ok(())
}

/// After a password that checked, for a user with a second factor: the
/// challenge the second step answers. The password's try is given back;
/// its failure count stays until the second factor passes.
pub async fn challenge(state: &AppState, audit: &Audit, ok: &LoginOk, user_agent: Option<&str>) -> Result<Challenge> {
    let new = NewChallenge {
        user_id: ok.user_id,
        first_factor: "pwd",
        password_fp: ok.checked_hash.as_deref().map(|h| Sha256::digest(h.as_bytes()).to_vec()),
        tokens_not_before: ok.not_before,
        user_agent,
        ttl_secs: CHALLENGE_TTL_SECS,
    };
    issue(state, audit, &ok.username, new, true).await
}

/// After an OpenID Connect login of `user`: the challenge when the account
/// has a second factor, `None` when it has none.
pub async fn challenge_after_oidc(
    state: &AppState,
    audit: &Audit,
    user: Uuid,
    user_agent: Option<&str>,
) -> Result<Option<Challenge>> {
    let mut conn = state.pool.acquire().await?;
    let Some(u) = store::step_user(&mut conn, user).await? else { return Ok(None) };
    drop(conn);
    if !u.mfa_enabled {
        return Ok(None);
    }
    let new = NewChallenge {
        user_id: user,
        first_factor: "oidc",
        password_fp: None,
        tokens_not_before: u.tokens_not_before,
        user_agent,
        ttl_secs: CHALLENGE_TTL_SECS,
    };
    Ok(Some(issue(state, audit, &u.username, new, false).await?))
}

async fn issue(
    state: &AppState,
    audit: &Audit,
    username: &str,
    new: NewChallenge<'_>,
    release_try: bool,
) -> Result<Challenge> {
    let token = tokens::random_secret();
    let audit = audit.clone().as_user(new.user_id, username);
    let user = new.user_id;
    let mut tx = state.pool.begin().await?;
    if release_try {
        store::first_step_done(&mut tx, user).await?;
    }
    store::create_challenge(&mut tx, &audit, &token, new).await?;
    let mut methods = Vec::new();
    if store::totp(&mut tx, user).await?.is_some_and(|t| t.confirmed_at.is_some()) {
        methods.push("totp");
    }
    if crate::service::passkeys::available(state) && !crate::store::passkeys::list(&mut tx, user).await?.is_empty() {
        methods.push("passkey");
    }
    methods.push("recovery_code");
    tx.commit().await?;
    Ok(Challenge { mfa_required: true, mfa_token: token, methods, expires_in: CHALLENGE_TTL_SECS })
}

/// What a second step or a step-up offers.
pub enum Proof {
    /// A TOTP code or a recovery code.
    Code(SecretString),
    /// A passkey's answer (`PublicKeyCredential.toJSON()`) to the ceremony
    /// started for this step.
    Passkey(String),
}

/// Checks a proof for `user`, counting the attempt first. The method that
/// matched (`otp`, `hwk` or `recovery_code`). `bound` is what the passkey
/// ceremony must be bound to.
async fn check_proof(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    audit: &Audit,
    user: Uuid,
    username: &str,
    proof: &Proof,
    (purpose, bound): (crate::service::passkeys::Purpose, &[u8]),
) -> Result<std::result::Result<&'static str, Error>> {
    if let Some(locked) = reserve_attempt(state, tx, user).await? {
        return Ok(Err(locked));
    }
    let code = match proof {
        Proof::Code(code) => code.expose_secret(),
        Proof::Passkey(json) => {
            let verified =
                crate::service::passkeys::verify_assertion(state, tx, audit, purpose, Some(bound), json.as_bytes())
                    .await?;
            return Ok(match verified {
                Ok(owner) if owner == user => Ok("hwk"),
                Ok(_) | Err(_) => {
                    wrong_code(state, tx, audit, user, "passkey").await?;
                    Err(crate::service::passkeys::bad_passkey())
                }
            });
        }
    };
    if code.len() > 64 {
        return Ok(Err(wrong_code(state, tx, audit, user, "code").await?));
    }
    let digits = code.trim();
    let method = if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
        let matched = match store::totp(tx, user).await?.filter(|t| t.confirmed_at.is_some()) {
            Some(t) => match totp_step(&state.keys, &t.secret_sealed, &issuer(state), username, digits, now_secs())? {
                Some(step) => store::accept_step(tx, user, step).await?,
                None => false,
            },
            None => false,
        };
        matched.then_some("otp")
    } else {
        let normal = normal_recovery(code);
        let ok = normal.len() == 10
            && store::use_recovery_code(tx, audit, user, &state.keys.secret_hash(&format!("recovery:{normal}")))
                .await?;
        ok.then_some("recovery_code")
    };
    match method {
        Some(m) => Ok(Ok(m)),
        None => {
            let kind = if digits.len() == 6 { "totp" } else { "recovery_code" };
            Ok(Err(wrong_code(state, tx, audit, user, kind).await?))
        }
    }
}

/// Counts a code attempt before it is checked; the refusal when the
/// account is locked.
async fn reserve_attempt(state: &AppState, tx: &mut sqlx::PgConnection, user: Uuid) -> Result<Option<Error>> {
    let limits = LockoutLimits::of(state);
    if store::reserve_factor_attempt(tx, user, limits.max).await?.is_some() {
        return Ok(None);
    }
    let until = crate::store::users::locked_until(tx, user).await?;
    Ok(Some(limits.locked(until)))
}

/// A wrong code (`kind`): logged, the account locked at the limit; the refusal.
async fn wrong_code(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    audit: &Audit,
    user: Uuid,
    kind: &str,
) -> Result<Error> {
    let limits = LockoutLimits::of(state);
    let lockout = u64::try_from(limits.lockout_secs).unwrap_or(900);
    store::factor_failed(tx, audit, user, limits.max, lockout, kind).await?;
    Ok(invalid_code())
}

/// The second step of a login: `mfa_token` from the first and a code. A
/// session and tokens, as a login without a second factor gives them.
pub async fn second_step(
    state: &AppState,
    audit: &Audit,
    mfa_token: &str,
    proof: &Proof,
    user_agent: Option<&str>,
) -> Result<LoggedIn> {
    if mfa_token.len() > 128 {
        return Err(invalid_mfa_token());
    }
    let mut tx = state.pool.begin().await?;
    let Some(c) = store::live_challenge(&mut tx, mfa_token).await? else { return Err(invalid_mfa_token()) };
    let Some(user) = store::step_user(&mut tx, c.user_id).await? else { return Err(invalid_mfa_token()) };
    // A password change or "log out everywhere" since the first step voids it.
    let fp = user.password_hash.as_deref().map(|h| Sha256::digest(h.as_bytes()).to_vec());
    if !user.enabled
        || user.tokens_not_before != c.tokens_not_before
        || (c.first_factor == "pwd" && fp != c.password_fp)
    {
        store::spend_challenge(&mut tx, mfa_token).await?;
        tx.commit().await?;
        return Err(invalid_mfa_token());
    }
    let audit = audit.clone().as_user(c.user_id, &user.username);
    let bound = crate::service::passkeys::token_binding(mfa_token);
    let purpose = crate::service::passkeys::Purpose::SecondFactor;
    let method = match check_proof(state, &mut tx, &audit, c.user_id, &user.username, proof, (purpose, &bound)).await? {
        Ok(method) => method,
        Err(e) => {
            // The counted attempt and its log stay.
            tx.commit().await?;
            return Err(e);
        }
    };
    store::spend_challenge(&mut tx, mfa_token).await?;
    store::factor_passed(&mut tx, c.user_id).await?;
    tx.commit().await?;
    let ok = LoginOk {
        user_id: c.user_id,
        username: user.username,
        rehashed: None,
        checked_hash: user.password_hash,
        not_before: user.tokens_not_before,
        mfa_enabled: user.mfa_enabled,
    };
    let ua = user_agent.or(c.user_agent.as_deref());
    // A recovery code is a one-time password too (RFC 8176 `otp`).
    let second = if method == "hwk" { "hwk" } else { "otp" };
    crate::service::auth::start_login_session(state, &audit, ok, ua, &[c.first_factor.as_str(), second]).await
}

/// Whether an account without a second factor must enrol one before
/// anything else (`mfa.required_for_roles`).
pub async fn must_enrol(state: &AppState, user: Uuid, mfa_enabled: bool) -> Result<bool> {
    let required = &state.settings.mfa.required_for_roles;
    if mfa_enabled || required.is_empty() {
        return Ok(false);
    }
    let mut conn = state.pool.acquire().await?;
    Ok(store::roles_of(&mut conn, user).await?.iter().any(|r| required.contains(r)))
}

/// Limits a new session to the enrolment.
pub async fn limit_to_enrolment(state: &AppState, session: Uuid) -> Result<()> {
    let mut conn = state.pool.acquire().await?;
    store::enrollment_only(&mut conn, session).await
}

/// The refusal of a password alone where no enrolment can follow.
pub fn enrolment_needed() -> Error {
    Error::Unauthenticated {
        code: "mfa_enrollment_required",
        message: "this account must enrol a second factor first: log in interactively".into(),
    }
}

/// A step-up in the caller's session: a code now makes the session's
/// second factor recent (`mfa.step_up_secs`). Counts toward the lockout
/// like any code.
pub async fn step_up(
    state: &AppState,
    audit: &Audit,
    caller: &crate::auth::principal::Principal,
    proof: &Proof,
) -> Result<()> {
    let Some(session) = caller.session_id else {
        return Err(Error::forbidden("a step-up belongs to a session: log in first").with_code("session_required"));
    };
    let mut tx = state.pool.begin().await?;
    let purpose = crate::service::passkeys::Purpose::StepUp;
    let bound = session.as_bytes().to_vec();
    match check_proof(state, &mut tx, audit, caller.user_id, &caller.username, proof, (purpose, &bound)).await? {
        Ok(method) => {
            store::factor_passed(&mut tx, caller.user_id).await?;
            // A recovery code is a one-time password too (RFC 8176 `otp`).
            let amr = if method == "hwk" { "hwk" } else { "otp" };
            store::stepped_up(&mut tx, audit, session, caller.user_id, amr).await?;
            tx.commit().await?;
            Ok(())
        }
        Err(e) => {
            tx.commit().await?;
            Err(e)
        }
    }
}

/// The passkey options of a login's second step, bound to its `mfa_token`.
pub async fn second_step_passkey_options(
    state: &AppState,
    mfa_token: &str,
) -> Result<crate::service::passkeys::Options> {
    if mfa_token.len() > 128 {
        return Err(invalid_mfa_token());
    }
    let mut conn = state.pool.acquire().await?;
    let Some(c) = store::live_challenge(&mut conn, mfa_token).await? else { return Err(invalid_mfa_token()) };
    let has = !crate::store::passkeys::list(&mut conn, c.user_id).await?.is_empty();
    drop(conn);
    if !has {
        return Err(no_passkey());
    }
    let bound = crate::service::passkeys::token_binding(mfa_token);
    let purpose = crate::service::passkeys::Purpose::SecondFactor;
    crate::service::passkeys::assertion_options(state, purpose, Some(c.user_id), Some(&bound)).await
}

/// The passkey options of a step-up, bound to the caller's session.
pub async fn step_up_passkey_options(
    state: &AppState,
    caller: &crate::auth::principal::Principal,
) -> Result<crate::service::passkeys::Options> {
    let Some(session) = caller.session_id else {
        return Err(Error::forbidden("a step-up belongs to a session: log in first").with_code("session_required"));
    };
    let mut conn = state.pool.acquire().await?;
    if crate::store::passkeys::list(&mut conn, caller.user_id).await?.is_empty() {
        return Err(no_passkey());
    }
    drop(conn);
    let purpose = crate::service::passkeys::Purpose::StepUp;
    crate::service::passkeys::assertion_options(state, purpose, Some(caller.user_id), Some(session.as_bytes())).await
}

fn no_passkey() -> Error {
    Error::conflict("no_passkey", "this account has no passkey: use a code")
}
