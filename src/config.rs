//! Settings: `config/default.toml` (compiled in), then the file named by
//! `REGISTRAR_CONFIG`, then `REGISTRAR_*` environment variables.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The defaults file, compiled into the binary so it is always present.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub bind: SocketAddr,
    pub public_url: String,
    pub database_url: SecretString,
    pub data_dir: PathBuf,
    pub workers: usize,
    pub log_format: LogFormat,
    pub admin_username: String,
    pub admin_email: String,
    pub admin_password: SecretString,
    pub database: DatabaseSettings,
    pub local_db: LocalDbSettings,
    pub auth: AuthSettings,
    pub password: PasswordSettings,
    pub limits: LimitSettings,
    pub rate_limits: RateLimitSettings,
    pub oidc: OidcSettings,
    pub directory: DirectorySettings,
    pub access_requests: AccessRequestSettings,
    pub email: EmailSettings,
    pub mfa: MfaSettings,
    pub metrics: MetricsSettings,
    /// Addresses or networks (CIDR) of reverse proxies whose
    /// `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OidcSettings {
    pub return_origins: Vec<String>,
    pub state_ttl_secs: u64,
    pub providers: Vec<OidcProvider>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OidcProvider {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    #[serde(default = "empty_secret")]
    pub client_secret: SecretString,
    #[serde(default)]
    pub client_secret_env: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "yes")]
    pub auto_create: bool,
    #[serde(default)]
    pub link_by_email: bool,
}

fn empty_secret() -> SecretString {
    SecretString::from(String::new())
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

fn yes() -> bool {
    true
}

impl OidcProvider {
    /// The client secret, from the config or the environment variable it names.
    pub fn secret(&self) -> Option<String> {
        let direct = self.client_secret.expose_secret();
        if !direct.is_empty() {
            return Some(direct.to_string());
        }
        if self.client_secret_env.is_empty() {
            return None;
        }
        std::env::var(&self.client_secret_env).ok().filter(|s| !s.is_empty())
    }
}

/// Second factors (`service::mfa`).
#[derive(Debug, Clone, Deserialize)]
pub struct MfaSettings {
    /// Holders of these roles must enrol a second factor at their next login.
    pub required_for_roles: Vec<String>,
    /// How recent a second factor must be, in the session, for a sensitive
    /// operation of a user who has one.
    pub step_up_secs: u64,
    /// The WebAuthn relying-party id of passkeys; empty: the host of
    /// `public_url` (an IP address there means no passkeys).
    pub passkey_rp_id: String,
    /// The origins a passkey's browser may answer from; empty: the origin
    /// of `public_url`.
    pub passkey_origins: Vec<String>,
}

/// Outgoing mail (password reset, email verification, welcome and
/// invitation mails). Off while `smtp_host` is empty.
#[derive(Debug, Clone, Deserialize)]
pub struct EmailSettings {
    pub smtp_host: String,
    pub smtp_port: u16,
    /// `starttls` (upgrade a plain connection, port 587), `tls` (implicit
    /// TLS, port 465) or `none` (plain: a local relay or a test sink only).
    pub smtp_tls: String,
    pub smtp_username: String,
    pub smtp_password: SecretString,
    /// The sender, e.g. `registrar <registrar@example.org>`.
    pub from: String,
    /// Minutes a password-reset or welcome link stays valid.
    pub reset_ttl_mins: u32,
    /// Hours an email-verification link stays valid.
    pub verify_ttl_hours: u32,
    /// Password-reset mails a minute per client address and per address asked for.
    pub forgot_per_minute: u32,
}

impl EmailSettings {
    pub fn enabled(&self) -> bool {
        !self.smtp_host.trim().is_empty()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AccessRequestSettings {
    /// Days an invitation stays valid.
    pub invitation_ttl_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DirectorySettings {
    pub visibility: Visibility,
}

/// Whom an ordinary user sees in directory listings (XNAT's `/data/users`)
/// and whose email they see anywhere. USER_MANAGEMENT sees everyone with
/// emails; everyone sees their own email.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// People who share a project with the caller; names, no emails.
    SharedProjects,
    /// Every enabled user; names, no emails.
    All,
    /// Every enabled user with their email (XNAT's own behaviour).
    AllWithEmail,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LocalDbSettings {
    pub auto_install: bool,
    pub bin_dir: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub jwt_secret: SecretString,
    pub access_token_ttl_secs: u64,
    pub session_ttl_secs: u64,
    pub session_idle_secs: u64,
    pub basic_session_ttl_secs: u64,
    pub basic_sessions_per_user: u32,
    pub reauth_secs: u64,
    pub session_cookie_name: String,
    pub cookie_secure: bool,
    pub max_failed_logins: u32,
    pub lockout_secs: u64,
    /// How long a password check in flight holds its try (see
    /// `store::users::reserve_attempt`).
    pub login_reservation_secs: u64,
    pub cache: bool,
    pub cache_entries: usize,
    pub cache_max_age_secs: u64,
}

impl AuthSettings {
    /// The browser session cookie's name: with `cookie_secure`, prefixed
    /// `__Host-` (the browser then requires Secure, `Path=/` and no Domain,
    /// so no subdomain can set or shadow it).
    pub fn cookie_name(&self) -> std::borrow::Cow<'_, str> {
        if self.cookie_secure && !self.session_cookie_name.starts_with("__Host-") {
            std::borrow::Cow::Owned(format!("__Host-{}", self.session_cookie_name))
        } else {
            std::borrow::Cow::Borrowed(&self.session_cookie_name)
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PasswordSettings {
    pub min_length: usize,
    pub max_length: usize,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub max_concurrent_hashes: usize,
    pub max_queued_hashes: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LimitSettings {
    pub body_bytes: usize,
    pub import_bytes: usize,
    pub header_bytes: usize,
    pub client_request_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub login_per_ip: u32,
    pub login_per_account: u32,
    pub refresh_per_ip: u32,
    pub api_key_create_per_user: u32,
    pub oidc_callback_per_ip: u32,
    /// OpenID Provider token requests a minute per client IP.
    pub token_per_ip: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetricsSettings {
    /// The bearer token of `GET /metrics`; empty turns the endpoint off.
    pub token: SecretString,
}

/// A configuration problem, always naming the offending key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Load from the compiled-in defaults, `REGISTRAR_CONFIG` and the process environment.
    pub fn load() -> Result<Settings, ConfigError> {
        Self::load_from(std::env::var("REGISTRAR_CONFIG").ok().map(PathBuf::from))
    }

    /// The compiled-in defaults only (no file, no environment).
    pub fn defaults() -> Result<Settings, ConfigError> {
        Figment::from(Toml::string(DEFAULT_TOML)).extract().map_err(describe_figment_error)
    }

    pub fn load_from(extra_file: Option<PathBuf>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = extra_file {
            if !path.is_file() {
                return Err(ConfigError(format!("REGISTRAR_CONFIG = {}: no such file", path.display())));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("REGISTRAR_").split("__").ignore(&["CONFIG", "TEST_DATABASE_URL"]));
        warn_unknown_keys(&figment);
        let mut settings: Settings = figment.extract().map_err(describe_figment_error)?;
        // Served over HTTPS, the browser cookies are `Secure` whatever the file says.
        if settings.public_url.starts_with("https://") {
            settings.auth.cookie_secure = true;
        }
        // A value out of range says where it was set, as a type error does.
        settings.validate().map_err(|ConfigError(msg)| {
            let key = msg.split(" = ").next().unwrap_or_default();
            match source_of(&figment, key) {
                Some(source) => ConfigError(format!("{msg} (from {source})")),
                None => ConfigError(msg),
            }
        })?;
        Ok(settings)
    }

    /// Checks that need more than a type: ranges and relations between keys.
    /// `trusted_proxies`, parsed (entries are checked by `validate`).
    pub fn trusted_proxy_nets(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies.iter().filter_map(|e| parse_net(e)).collect()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &str, value: &dyn std::fmt::Display, why: &str| Err(ConfigError(format!("{key} = {value}: {why}")));
        for entry in &self.trusted_proxies {
            if parse_net(entry).is_none() {
                return bad("trusted_proxies", entry, "must be an IP address or a CIDR network such as 10.0.0.0/8");
            }
        }
        let days = self.access_requests.invitation_ttl_days;
        if !(1..=365).contains(&days) {
            return bad("access_requests.invitation_ttl_days", &days, "must be between 1 and 365");
        }
        let e = &self.email;
        if !matches!(e.smtp_tls.as_str(), "starttls" | "tls" | "none") {
            return bad("email.smtp_tls", &e.smtp_tls, "must be starttls, tls or none");
        }
        if e.enabled() && e.from.parse::<lettre::message::Mailbox>().is_err() {
            return bad("email.from", &e.from, "must be an address such as registrar <registrar@example.org>");
        }
        if !(5..=1440).contains(&e.reset_ttl_mins) {
            return bad("email.reset_ttl_mins", &e.reset_ttl_mins, "must be between 5 and 1440");
        }
        if !(1..=720).contains(&e.verify_ttl_hours) {
            return bad("email.verify_ttl_hours", &e.verify_ttl_hours, "must be between 1 and 720");
        }
        let p = &self.password;
        if p.min_length < 8 {
            return bad("password.min_length", &p.min_length, "must be at least 8");
        }
        if p.max_length < 64 || p.max_length < p.min_length {
            return bad("password.max_length", &p.max_length, "must be at least 64 and at least password.min_length");
        }
        if p.parallelism == 0 || p.parallelism > 16 {
            return bad("password.parallelism", &p.parallelism, "must be 1..=16");
        }
        if p.iterations == 0 {
            return bad("password.iterations", &p.iterations, "must be at least 1");
        }
        if p.memory_kib < 8 * p.parallelism {
            return bad("password.memory_kib", &p.memory_kib, "must be at least 8 * password.parallelism");
        }
        if self.auth.access_token_ttl_secs == 0 || self.auth.access_token_ttl_secs > 86_400 {
            return bad("auth.access_token_ttl_secs", &self.auth.access_token_ttl_secs, "must be between 1 and 86400");
        }
        if self.auth.session_idle_secs != 0 && self.auth.session_idle_secs < 120 {
            return bad("auth.session_idle_secs", &self.auth.session_idle_secs, "must be 0 (off) or at least 120");
        }
        if self.auth.basic_session_ttl_secs < 60 {
            return bad("auth.basic_session_ttl_secs", &self.auth.basic_session_ttl_secs, "must be at least 60");
        }
        if self.auth.basic_sessions_per_user == 0 {
            return bad("auth.basic_sessions_per_user", &self.auth.basic_sessions_per_user, "must be at least 1");
        }
        if self.auth.login_reservation_secs == 0 {
            return bad("auth.login_reservation_secs", &self.auth.login_reservation_secs, "must be at least 1");
        }
        if self.mfa.step_up_secs < 30 {
            return bad("mfa.step_up_secs", &self.mfa.step_up_secs, "must be at least 30");
        }
        if self.auth.reauth_secs < 30 {
            return bad("auth.reauth_secs", &self.auth.reauth_secs, "must be at least 30");
        }
        if self.auth.session_ttl_secs < 60 {
            return bad("auth.session_ttl_secs", &self.auth.session_ttl_secs, "must be at least 60");
        }
        if self.auth.max_failed_logins == 0 {
            return bad("auth.max_failed_logins", &0, "must be at least 1");
        }
        let token = self.metrics.token.expose_secret();
        if !token.is_empty() && token.len() < 32 {
            return bad("metrics.token", &"<redacted>", "must be at least 32 characters (or empty: no /metrics)");
        }
        let secret = self.auth.jwt_secret.expose_secret();
        if !secret.is_empty() && secret.len() < 32 {
            return bad("auth.jwt_secret", &"<redacted>", "must be at least 32 bytes");
        }
        if !self.auth.session_cookie_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            || self.auth.session_cookie_name.is_empty()
        {
            return bad(
                "auth.session_cookie_name",
                &self.auth.session_cookie_name,
                "letters, digits, '_' and '-' only",
            );
        }
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            return bad("public_url", &self.public_url, "must start with http:// or https://");
        }
        if crate::domain::Username::parse(&self.admin_username).is_err() {
            return bad("admin_username", &self.admin_username, "not a valid username");
        }
        if crate::domain::Email::parse(&self.admin_email).is_err() {
            return bad("admin_email", &self.admin_email, "not a valid email address");
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections", &0, "must be at least 1");
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.oidc.providers.iter().enumerate() {
            let key = format!("oidc.providers[{i}]");
            let name_ok = !p.name.is_empty()
                && p.name.len() <= 64
                && p.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !name_ok {
                return bad(&format!("{key}.name"), &p.name, "lower-case letters, digits, '-' and '_' only");
            }
            if !names.insert(p.name.clone()) {
                return bad(&format!("{key}.name"), &p.name, "provider names must be unique");
            }
            if url::Url::parse(&p.issuer).map(|u| !matches!(u.scheme(), "http" | "https")).unwrap_or(true) {
                return bad(&format!("{key}.issuer"), &p.issuer, "must be an http(s) URL");
            }
            if p.client_id.is_empty() {
                return bad(&format!("{key}.client_id"), &"\"\"", "must not be empty");
            }
            if p.secret().is_none() {
                return bad(
                    &format!("{key}.client_secret"),
                    &"<missing>",
                    "set client_secret or client_secret_env (naming a set variable)",
                );
            }
            if !p.scopes.iter().any(|s| s == "openid") {
                return bad(&format!("{key}.scopes"), &p.scopes.join(","), "must include openid");
            }
        }
        for o in &self.oidc.return_origins {
            if url::Url::parse(o).map(|u| u.origin().ascii_serialization() != o.trim_end_matches('/')).unwrap_or(true) {
                return bad("oidc.return_origins", o, "each entry must be an origin such as https://app.example.org");
            }
        }
        if self.limits.body_bytes < 1024 {
            return bad("limits.body_bytes", &self.limits.body_bytes, "must be at least 1024");
        }
        Ok(())
    }

    pub fn hash_workers(&self) -> usize {
        match self.password.max_concurrent_hashes {
            0 => num_cpus::get().max(1),
            n => n,
        }
    }

    pub fn http_workers(&self) -> usize {
        match self.workers {
            0 => num_cpus::get().max(1),
            n => n,
        }
    }
}

fn describe_figment_error(err: figment::Error) -> ConfigError {
    let mut parts = Vec::new();
    for e in err {
        let key = e.path.join(".");
        let env_name = format!("REGISTRAR_{}", e.path.iter().map(|p| p.to_uppercase()).collect::<Vec<_>>().join("__"));
        let source = e
            .metadata
            .as_ref()
            .map(|m| match &m.source {
                _ if m.name.contains("environment") => {
                    format!(" (from environment variable {env_name})")
                }
                Some(src) => format!(" (from {} {})", m.name, src),
                None => format!(" (from {})", m.name),
            })
            .unwrap_or_default();
        let kind = e.kind.to_string();
        if key.is_empty() {
            parts.push(format!("{kind}{source}"));
        } else {
            parts.push(format!("{key}: {kind}{source}"));
        }
    }
    ConfigError(parts.join("; "))
}

/// lldap's habit: a misspelt key is reported, not silently ignored.
/// Where `key`'s value came from: the environment variable, the file, or
/// the compiled-in defaults.
fn source_of(figment: &Figment, key: &str) -> Option<String> {
    let m = figment.find_metadata(key)?;
    if m.name.contains("environment") {
        let env = key.split('.').map(str::to_uppercase).collect::<Vec<_>>().join("__");
        return Some(format!("environment variable REGISTRAR_{env}"));
    }
    Some(match &m.source {
        Some(src) => format!("{} {src}", m.name),
        None => m.name.to_string(),
    })
}

fn warn_unknown_keys(figment: &Figment) {
    let known = known_keys();
    let Ok(value) = figment.extract::<figment::value::Value>() else {
        return;
    };
    let mut found = Vec::new();
    collect_keys(&value, "", &mut found);
    for key in found {
        if !known.contains(key.as_str()) {
            let source = source_of(figment, &key).unwrap_or_default();
            // Telemetry may not be up yet; this goes to stderr either way.
            eprintln!("warning: unknown configuration key `{key}` ({source}) is ignored");
        }
    }
}

fn collect_keys(value: &figment::value::Value, prefix: &str, out: &mut Vec<String>) {
    if let figment::value::Value::Dict(_, dict) = value {
        for (k, v) in dict {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            if matches!(v, figment::value::Value::Dict(..)) {
                collect_keys(v, &key, out);
            } else {
                out.push(key);
            }
        }
    }
}

fn known_keys() -> BTreeSet<String> {
    let mut out = Vec::new();
    if let Ok(value) = Figment::from(Toml::string(DEFAULT_TOML)).extract::<figment::value::Value>() {
        collect_keys(&value, "", &mut out);
    }
    out.into_iter().collect()
}

/// An IP network (`10.0.0.0/8`) or a single address (`10.0.0.1`).
fn parse_net(raw: &str) -> Option<ipnet::IpNet> {
    let raw = raw.trim();
    raw.parse::<ipnet::IpNet>().ok().or_else(|| raw.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}
