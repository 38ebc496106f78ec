//! argon2id hashing off the async workers, with a bound on concurrent hashes
//! (each holds `memory_kib` of memory) and on the queue in front of them, plus
//! the password policy (NIST SP 800-63B-4, OWASP ASVS 5 6.2).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::config::PasswordSettings;
use crate::domain::{Error, Result};

/// Top common and breached passwords (Django's list of 19,640, lower-case).
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

fn blocklist() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| COMMON_PASSWORDS.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads that run hashes. A fixed set (rather than tokio's
/// growing blocking pool) bounds memory: at most one hash's working memory
/// (`memory_kib`) per thread, freed when idle (`Memory`).
struct Pool {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
}

impl Pool {
    fn new(threads: usize) -> anyhow::Result<Pool> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || loop {
                // Ends when every sender (every Hasher clone) is gone.
                let job = match rx.lock() {
                    Ok(guard) => guard.recv_timeout(IDLE_RELEASE),
                    Err(_) => return,
                };
                match job {
                    Ok(job) => job(),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => MEMORY.release_if_idle(),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            })?;
        }
        Ok(Pool { jobs: std::sync::Mutex::new(tx) })
    }
}

#[derive(Clone)]
pub struct Hasher {
    pool: Arc<Pool>,
    params: Params,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    concurrency: usize,
    /// Where the wait for a slot is reported (`report_to`).
    metrics: Arc<OnceLock<Arc<crate::metrics::Metrics>>>,
    dummy_hash: Arc<String>,
    pub min_length: usize,
    pub max_length: usize,
}

/// The password policy as clients see it. Lengths count characters
/// (Unicode scalar values); any character is allowed.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Policy {
    pub min_length: usize,
    pub max_length: usize,
    /// What is refused, each with the error code a refusal carries.
    pub refused: Vec<Refusal>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Refusal {
    pub code: &'static str,
    pub rule: String,
}

/// Outcome of verifying a password against a stored hash.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    No,
    Yes,
    /// Correct, and the stored hash used other parameters: here is a new one.
    YesRehashed(String),
}

impl Hasher {
    pub fn new(settings: &PasswordSettings, concurrency: usize) -> anyhow::Result<Hasher> {
        let params = Params::new(settings.memory_kib, settings.iterations, settings.parallelism, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let dummy = argon
            .hash_password(b"registrar dummy password for timing", &salt)
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
            .to_string();
        Ok(Hasher {
            pool: Arc::new(Pool::new(concurrency.max(1))?),
            params,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting: settings.max_queued_hashes,
            concurrency: concurrency.max(1),
            metrics: Arc::default(),
            dummy_hash: Arc::new(dummy),
            min_length: settings.min_length,
            max_length: settings.max_length,
        })
    }

    /// Reports each hash's wait for a slot to `metrics`.
    pub fn report_to(&self, metrics: &Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics.clone());
    }

    /// Hashes waiting for a slot, and hashes running.
    pub fn queue(&self) -> (usize, usize) {
        (self.waiting.load(Ordering::Relaxed), self.concurrency.saturating_sub(self.slots.available_permits()))
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Runs `f` on a hashing thread once a slot is free. Answers 503
    /// at once when too many requests already wait (a login flood must not
    /// pile up memory or latency).
    async fn run<T: Send + 'static>(&self, f: impl FnOnce(Argon2<'static>) -> T + Send + 'static) -> Result<T, Error> {
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let permit = if queued >= self.max_waiting + self.slots.available_permits() {
            None
        } else {
            self.slots.clone().acquire_owned().await.ok()
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let Some(permit) = permit else {
            return Err(Error::unavailable("busy", "too many logins in progress, try again shortly", 1));
        };
        if let Some(m) = self.metrics.get() {
            m.hash_waited(started.elapsed());
        }
        let argon = self.argon();
        let span = tracing::Span::current();
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _entered = span.enter();
            let out = f(argon);
            drop(permit);
            let _ = done.send(out);
        });
        let sent = self.pool.jobs.lock().map(|tx| tx.send(job).is_ok()).unwrap_or(false);
        if !sent {
            return Err(Error::internal(anyhow::anyhow!("hashing threads are gone")));
        }
        result.await.map_err(|e| Error::internal(anyhow::anyhow!("hashing task failed: {e}")))
    }

    /// Hashes a password (PHC string with a random salt).
    pub async fn hash(&self, password: SecretString) -> Result<String, Error> {
        let params = self.params.clone();
        self.run(move |_| hash_phc(&params, password.expose_secret().as_bytes())).await?
    }

    /// Verifies `password` against `stored`; with no stored hash (unknown
    /// user, no password) it verifies against a dummy hash so timing does not
    /// tell the cases apart, and answers `No`.
    pub async fn verify(&self, password: SecretString, stored: Option<String>) -> Result<Verified, Error> {
        let dummy = self.dummy_hash.clone();
        let wanted = self.params.clone();
        self.run(move |argon| {
            let (phc, real) = match &stored {
                Some(s) => (s.as_str(), true),
                None => (dummy.as_str(), false),
            };
            let Ok(parsed) = PasswordHash::new(phc) else {
                return Verified::No;
            };
            let ok = verify_phc(&argon, &parsed, password.expose_secret().as_bytes());
            if !(ok && real) {
                return Verified::No;
            }
            let same = Params::try_from(&parsed).is_ok_and(|p| {
                p.m_cost() == wanted.m_cost() && p.t_cost() == wanted.t_cost() && p.p_cost() == wanted.p_cost()
            }) && parsed.algorithm.as_str() == "argon2id";
            if same {
                return Verified::Yes;
            }
            match hash_phc(&wanted, password.expose_secret().as_bytes()) {
                Ok(h) => Verified::YesRehashed(h),
                Err(_) => Verified::Yes,
            }
        })
        .await
    }

    /// The password policy: length in code points between min and max, not a
    /// common or breached password, not containing the username or email.
    /// No composition rules; the password is used exactly as received.
    /// The rules `check_policy` applies, for clients that explain them
    /// before the user types (`GET /api/v1/password-policy`).
    pub fn policy(&self) -> Policy {
        Policy {
            min_length: self.min_length,
            max_length: self.max_length,
            refused: vec![
                Refusal { code: "password_too_short", rule: format!("fewer than {} characters", self.min_length) },
                Refusal { code: "password_too_long", rule: format!("more than {} characters", self.max_length) },
                Refusal {
                    code: "password_too_common",
                    rule: format!("one of {} common or breached passwords (any case)", blocklist().len()),
                },
                Refusal {
                    code: "password_contains_identity",
                    rule: "containing the username or the email address".into(),
                },
                Refusal {
                    code: "password_too_weak",
                    rule: "easy to guess: repeated or sequential characters, keyboard runs, common words or names \
                           (a zxcvbn score below 3)"
                        .into(),
                },
            ],
        }
    }

    /// Checks a new password against the policy; a refusal names the
    /// field `password` (front ends that call it otherwise rename it).
    pub fn check_policy(&self, password: &str, username: &str, email: &str) -> Result<(), Error> {
        self.policy_check(password, username, email).map_err(|e| e.on_field("password"))
    }

    fn policy_check(&self, password: &str, username: &str, email: &str) -> Result<(), Error> {
        let len = password.chars().count();
        if len < self.min_length {
            return Err(Error::invalid(
                "password_too_short",
                format!("password must be at least {} characters long", self.min_length),
            ));
        }
        if len > self.max_length {
            return Err(Error::invalid(
                "password_too_long",
                format!("password must be at most {} characters long", self.max_length),
            ));
        }
        let lower = password.to_lowercase();
        if blocklist().contains(lower.as_str()) {
            return Err(Error::invalid(
                "password_too_common",
                "this password is in a list of common or breached passwords; choose another",
            ));
        }
        let contains = |needle: &str| !needle.is_empty() && lower.contains(&needle.to_lowercase());
        if contains(username) || contains(email) {
            return Err(Error::invalid(
                "password_contains_identity",
                "password must not contain the username or email address",
            ));
        }
        // Length alone lets `passwordpassword` and twenty `a`s through:
        // estimate the guesses (zxcvbn: repeats, sequences, keyboard runs,
        // dictionary words, the user's own names) and refuse what is
        // guessable (score below 3). Only the first 100 characters are
        // estimated (zxcvbn's time grows with length; a longer password is
        // judged by its start, which a repetitive one fails anyway).
        let head: String = password.chars().take(100).collect();
        let local = email.split('@').next().unwrap_or("");
        let estimate = zxcvbn::zxcvbn(&head, &[username, email, local]);
        if (estimate.score() as u8) < 3 {
            return Err(Error::invalid(
                "password_too_weak",
                "this password is easy to guess (repeated or sequential characters, common words or names); \
                 a few unrelated words make a strong one",
            ));
        }
        Ok(())
    }
}

/// The hashing threads' argon2 working memory: one block array per hash
/// running, taken for a hash and put back after it, so a busy server
/// allocates and zeroes none (memory stays at `memory_kib` per hashing
/// thread however many logins come). After `IDLE_RELEASE` without a hash
/// the arrays are freed (`release_if_idle`): an idle server does not keep
/// tens of MiB for the next login.
struct Memory(std::sync::Mutex<Kept>);

/// The arrays not in use, and when the last hash ended.
struct Kept {
    free: Vec<Vec<argon2::Block>>,
    last_used: Option<std::time::Instant>,
}

static MEMORY: Memory = Memory(std::sync::Mutex::new(Kept { free: Vec::new(), last_used: None }));

/// Block arrays are reserved at least this large (32 MiB and a block; see `raw_hash`).
const MAPPED_BLOCKS: usize = 32 * 1024 + 1;

/// How long the hashing memory is kept after the last hash.
const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_secs(5);

impl Memory {
    fn take(&self) -> Vec<argon2::Block> {
        self.0.lock().ok().and_then(|mut k| k.free.pop()).unwrap_or_default()
    }

    fn put(&self, blocks: Vec<argon2::Block>) {
        if let Ok(mut k) = self.0.lock() {
            k.free.push(blocks);
            k.last_used = Some(std::time::Instant::now());
        }
    }

    /// Frees the arrays not in use once no hash has run for `IDLE_RELEASE`.
    fn release_if_idle(&self) {
        if let Ok(mut k) = self.0.lock() {
            if k.last_used.is_some_and(|t| t.elapsed() >= IDLE_RELEASE) {
                k.free = Vec::new();
            }
        }
    }

    /// Block arrays kept for the next hashes.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.0.lock().map(|k| k.free.len()).unwrap_or(0)
    }
}

fn raw_hash(
    argon: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    let mut m = MEMORY.take();
    let blocks = params.block_count();
    if m.len() < blocks {
        // Reserved past 32 MiB (address space only: the pages `resize`
        // does not touch are never resident), the array gets a mapping of
        // its own from the C library, unmapped when it is freed. In the
        // library's heap it would stay resident after `release_if_idle`:
        // glibc maps only blocks above a threshold that grows (up to 32 MiB)
        // with every mapped block freed, and trims its heap only past twice
        // that threshold.
        let mut fresh = Vec::with_capacity(blocks.max(MAPPED_BLOCKS));
        fresh.resize(blocks, argon2::Block::default());
        m = fresh;
    }
    let result = argon.hash_password_into_with_memory(password, salt, out, &mut m[..blocks]);
    MEMORY.put(m);
    result
}

/// A new argon2id PHC string for `password` with a random salt.
fn hash_phc(params: &Params, password: &[u8]) -> Result<String, Error> {
    let fail = |e: &dyn std::fmt::Display| Error::internal(anyhow::anyhow!("argon2: {e}"));
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(|e| fail(&e))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    raw_hash(&argon, params, password, salt_bytes, &mut out).map_err(|e| fail(&e))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: argon2::password_hash::ParamsString::try_from(params).map_err(|e| fail(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(argon2::password_hash::Output::new(&out).map_err(|e| fail(&e))?),
    };
    Ok(phc.to_string())
}

/// Checks `password` against a parsed PHC string, in constant time. argon2id
/// hashes use the thread's reused memory; anything else the crate's verifier.
fn verify_phc(fallback: &Argon2<'_>, parsed: &PasswordHash<'_>, password: &[u8]) -> bool {
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return fallback.verify_password(password, parsed).is_ok();
    }
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    let Ok(p) = Params::try_from(parsed) else { return false };
    let Ok(params) = Params::new(p.m_cost(), p.t_cost(), p.p_cost(), Some(expected.len())) else { return false };
    let version = parsed.version.and_then(|v| Version::try_from(v).ok()).unwrap_or(Version::V0x13);
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else { return false };
    let argon = Argon2::new(Algorithm::Argon2id, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    if raw_hash(&argon, &params, password, salt_bytes, &mut out).is_err() {
        return false;
    }
    crate::auth::tokens::constant_time_eq(&out, expected.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_memory_is_kept_while_busy_and_freed_when_idle() {
        let m = Memory(std::sync::Mutex::new(Kept { free: Vec::new(), last_used: None }));
        m.release_if_idle();
        assert_eq!(m.kept(), 0);
        let blocks = m.take();
        assert!(blocks.is_empty(), "nothing kept yet: a new array");
        m.put(vec![argon2::Block::default(); 8]);
        assert_eq!(m.take().len(), 8, "the next hash reuses the array");
        m.put(vec![argon2::Block::default(); 8]);
        m.release_if_idle();
        assert_eq!(m.kept(), 1, "used a moment ago: kept");
        m.0.lock().unwrap().last_used = std::time::Instant::now().checked_sub(IDLE_RELEASE);
        m.release_if_idle();
        assert_eq!(m.kept(), 0, "idle for IDLE_RELEASE: freed");
    }

    #[test]
    fn guessable_passwords_are_refused_whatever_their_length() {
        let h = cheap();
        for weak in [
            "passwordpassword",
            "aaaaaaaaaaaaaaaaaaaa",
            "abcdefghijklmnopqrst",
            "qwertyuiopasdfghjkl",
            "1234567890123456789",
            "alicealicealicealice1",
            &"ab".repeat(120),
        ] {
            let e = h.check_policy(weak, "alice", "alice@example.org").expect_err(weak);
            assert!(
                matches!(e.code(), "password_too_weak" | "password_too_common" | "password_contains_identity"),
                "{weak}: {}",
                e.code()
            );
        }
        for strong in [
            "a long enough passphrase for tests",
            "correct-horse-battery-staple-42",
            "a long enough passphrase for load tests",
            "correct horse battery staple for bench",
            "a brand new long passphrase 9",
            "another long passphrase for the tests",
        ] {
            assert!(h.check_policy(strong, "alice", "alice@example.org").is_ok(), "{strong}");
        }
    }

    fn cheap() -> Hasher {
        let s = PasswordSettings {
            min_length: 15,
            max_length: 256,
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            max_concurrent_hashes: 1,
            max_queued_hashes: 4,
        };
        Hasher::new(&s, 1).expect("hasher")
    }

    #[tokio::test]
    async fn compatible_with_the_crates_own_phc_strings() {
        let h = cheap();
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(64, 1, 1, None).expect("params"));
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let theirs = argon.hash_password(b"correct horse battery staple", &salt).expect("hash").to_string();
        assert_eq!(
            h.verify(SecretString::from("correct horse battery staple"), Some(theirs.clone())).await.expect("v"),
            Verified::Yes
        );
        assert_eq!(
            h.verify(SecretString::from("correct horse battery stapl"), Some(theirs)).await.expect("v"),
            Verified::No
        );
        let ours = h.hash(SecretString::from("correct horse battery staple")).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(argon.verify_password(b"correct horse battery staple", &parsed).is_ok());
    }

    #[test]
    fn blocklist_is_large() {
        assert!(blocklist().len() >= 10_000);
        assert!(blocklist().contains("password"));
    }

    #[test]
    fn policy() {
        let h = cheap();
        assert_eq!(h.check_policy("short", "u", "e@x.org").unwrap_err().code(), "password_too_short");
        assert!(h.check_policy("correct horse battery staple", "alice", "alice@x.org").is_ok());
        assert_eq!(
            h.check_policy("my name is alice and that is it", "alice", "a@x.org").unwrap_err().code(),
            "password_contains_identity"
        );
        // Code points, not bytes: 15 emoji are 60 bytes but 15 characters.
        let emoji = "🔑🌍🎲🦀🧪📎🚲🍋🎻🧭🪁🌵🛶🧩🐙";
        assert!(h.check_policy(emoji, "bob", "b@x.org").is_ok());
        let fourteen: String = emoji.chars().take(14).collect();
        assert_eq!(h.check_policy(&fourteen, "bob", "b@x.org").unwrap_err().code(), "password_too_short");
        // The same one fifteen times is guessable, whatever its length.
        assert_eq!(h.check_policy(&"🔑".repeat(15), "bob", "b@x.org").unwrap_err().code(), "password_too_weak");
    }

    #[tokio::test]
    async fn hash_verify_rehash() {
        let h = cheap();
        let hash = h.hash(SecretString::from("correct horse battery staple")).await.expect("hash");
        assert_eq!(
            h.verify(SecretString::from("correct horse battery staple"), Some(hash.clone())).await.expect("v"),
            Verified::Yes
        );
        assert_eq!(h.verify(SecretString::from("wrong"), Some(hash.clone())).await.expect("v"), Verified::No);
        assert_eq!(h.verify(SecretString::from("x"), None).await.expect("v"), Verified::No);
        let mut other = PasswordSettings {
            min_length: 15,
            max_length: 256,
            memory_kib: 128,
            iterations: 1,
            parallelism: 1,
            max_concurrent_hashes: 1,
            max_queued_hashes: 4,
        };
        other.memory_kib = 128;
        let h2 = Hasher::new(&other, 1).expect("hasher");
        assert!(matches!(
            h2.verify(SecretString::from("correct horse battery staple"), Some(hash)).await.expect("v"),
            Verified::YesRehashed(_)
        ));
    }
}
