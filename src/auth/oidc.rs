//! OpenID Connect relying party (authorization code flow with PKCE S256),
//! on the `openidconnect` crate: discovery, the authorization URL, the code
//! exchange and ID token validation (signature, issuer, audience, expiry,
//! nonce). What to do with a validated identity is in `api::oidc`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};

use crate::config::{OidcProvider, Settings};
use crate::domain::{Error, Result};

const DISCOVERY_TTL: Duration = Duration::from_secs(300);

/// Provider metadata cache and the HTTP client used to reach providers.
pub struct Oidc {
    http: openidconnect::reqwest::Client,
    cache: Mutex<HashMap<String, (Instant, CoreProviderMetadata)>>,
}

/// What a validated ID token says about the person.
#[derive(Debug, Clone)]
pub struct Identity {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub preferred_username: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub name: Option<String>,
}

/// A started login: where to send the browser, and what to keep server-side.
pub struct Started {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

fn unavailable(provider: &str, what: impl std::fmt::Display) -> Error {
    tracing::warn!(provider, error = %what, "OIDC provider problem");
    Error::upstream(
        "provider_unavailable",
        format!("the identity provider '{provider}' could not be reached or answered wrongly; try again later"),
    )
}

impl Oidc {
    pub fn new() -> anyhow::Result<Oidc> {
        let http = openidconnect::reqwest::ClientBuilder::new()
            // Following redirects would open an SSRF path.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Oidc { http, cache: Mutex::new(HashMap::new()) })
    }

    async fn metadata(&self, p: &OidcProvider) -> Result<CoreProviderMetadata, Error> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, m)) = cache.get(&p.name) {
                if at.elapsed() < DISCOVERY_TTL {
                    return Ok(m.clone());
                }
            }
        }
        let issuer = IssuerUrl::new(p.issuer.clone()).map_err(|e| unavailable(&p.name, e))?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http).await.map_err(|e| unavailable(&p.name, e))?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(p.name.clone(), (Instant::now(), m.clone()));
        }
        Ok(m)
    }

    async fn client(
        &self,
        settings: &Settings,
        p: &OidcProvider,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        Error,
    > {
        let m = self.metadata(p).await?;
        let secret = p.secret().ok_or_else(|| unavailable(&p.name, "client secret missing"))?;
        let redirect =
            RedirectUrl::new(redirect_uri(settings, &p.name)).map_err(|e| Error::internal(anyhow::anyhow!("{e}")))?;
        Ok(CoreClient::from_provider_metadata(m, ClientId::new(p.client_id.clone()), Some(ClientSecret::new(secret)))
            .set_redirect_uri(redirect))
    }

    /// The provider's authorization URL with a fresh state, nonce and PKCE challenge.
    pub async fn start(&self, settings: &Settings, p: &OidcProvider) -> Result<Started, Error> {
        let client = self.client(settings, p).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req =
            client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
        for s in p.scopes.iter().filter(|s| s.as_str() != "openid") {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        Ok(Started {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges the code (with the PKCE verifier) and validates the ID token.
    pub async fn finish(
        &self,
        settings: &Settings,
        p: &OidcProvider,
        code: &str,
        verifier: String,
        nonce: String,
    ) -> Result<Identity, Error> {
        let client = self.client(settings, p).await?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| unavailable(&p.name, e))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                openidconnect::RequestTokenError::ServerResponse(r) => {
                    let code = r.error().to_string();
                    if matches!(code.as_str(), "server_error" | "temporarily_unavailable") {
                        return unavailable(&p.name, code);
                    }
                    tracing::info!(provider = %p.name, error = %code, "OIDC code exchange refused");
                    Error::unauthorized("the identity provider refused the login").with_code("oidc_rejected")
                }
                other => unavailable(&p.name, other),
            })?;
        let id_token = response.id_token().ok_or_else(|| unavailable(&p.name, "no id_token in the token response"))?;
        let verifier = client.id_token_verifier();
        let claims = id_token.claims(&verifier, &Nonce::new(nonce)).map_err(|e| {
            tracing::warn!(provider = %p.name, error = %e, "ID token refused");
            Error::unauthorized(format!("the identity provider's ID token is not valid: {e}"))
                .with_code("invalid_id_token")
        })?;
        let localized = |c: Option<&openidconnect::LocalizedClaim<_>>| -> Option<String> {
            c.and_then(|l: &openidconnect::LocalizedClaim<openidconnect::EndUserGivenName>| l.get(None))
                .map(|v| v.to_string())
        };
        Ok(Identity {
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            email_verified: claims.email_verified().unwrap_or(false),
            preferred_username: claims.preferred_username().map(|u| u.to_string()),
            given_name: localized(claims.given_name()),
            family_name: claims.family_name().and_then(|l| l.get(None)).map(|v| v.to_string()),
            name: claims.name().and_then(|l| l.get(None)).map(|v| v.to_string()),
        })
    }
}

/// `{public_url}/api/v1/auth/oidc/{name}/callback`.
pub fn redirect_uri(settings: &Settings, provider: &str) -> String {
    format!("{}/api/v1/auth/oidc/{provider}/callback", settings.public_url.trim_end_matches('/'))
}

/// Only relative paths on this server, or URLs on a configured origin: no open redirect.
pub fn check_return_to(settings: &Settings, raw: &str) -> Result<String, Error> {
    let bad = || {
        Error::malformed("invalid_return_to", "return_to must be a path on this server or a URL on a configured origin")
    };
    if raw.len() > 2048 || raw.chars().any(|c| c.is_control() || c == '\\') {
        return Err(bad());
    }
    if raw.starts_with('/') && !raw.starts_with("//") {
        return Ok(raw.to_string());
    }
    let url = url::Url::parse(raw).map_err(|_| bad())?;
    let origin = url.origin().ascii_serialization();
    let own = url::Url::parse(&settings.public_url).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
    if origin == own || settings.oidc.return_origins.iter().any(|o| o.trim_end_matches('/') == origin) {
        return Ok(raw.to_string());
    }
    Err(bad())
}
