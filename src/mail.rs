//! Outgoing mail over SMTP (`lettre`): configured by `[email]`, off while
//! `email.smtp_host` is empty. Messages are sent in the background, so a
//! request's answer (and its timing) never depends on the mail server; a
//! failure is logged with the recipient's domain only, never the body (it
//! holds a single-use link).

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::Settings;

pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Option<Mailbox>,
    public_url: String,
}

impl Mailer {
    pub fn new(settings: &Settings) -> anyhow::Result<Mailer> {
        let e = &settings.email;
        let public_url = settings.public_url.trim_end_matches('/').to_string();
        if !e.enabled() {
            return Ok(Mailer { transport: None, from: None, public_url });
        }
        let host = e.smtp_host.trim();
        let builder = match e.smtp_tls.as_str() {
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?,
            _ => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        };
        let mut builder = builder.port(e.smtp_port).timeout(Some(Duration::from_secs(20)));
        if !e.smtp_username.is_empty() {
            builder = builder
                .credentials(Credentials::new(e.smtp_username.clone(), e.smtp_password.expose_secret().to_string()));
        }
        Ok(Mailer { transport: Some(builder.build()), from: Some(e.from.parse()?), public_url })
    }

    pub fn enabled(&self) -> bool {
        self.transport.is_some()
    }

    /// An absolute link to `path_and_query` on this server.
    pub fn link(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.public_url)
    }

    /// Sends a plain-text message in the background. Does nothing when mail is off.
    pub fn send(&self, to: &str, subject: &str, body: String) {
        let (Some(transport), Some(from)) = (self.transport.clone(), self.from.clone()) else {
            return;
        };
        let domain = to.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
        let message = match to.parse::<Mailbox>().map_err(anyhow::Error::from).and_then(|to| {
            Message::builder()
                .from(from)
                .to(to)
                .subject(subject)
                .header(ContentType::TEXT_PLAIN)
                .body(body)
                .map_err(anyhow::Error::from)
        }) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, to_domain = %domain, "could not build a mail");
                return;
            }
        };
        let subject = subject.to_string();
        tokio::spawn(async move {
            match transport.send(message).await {
                Ok(_) => tracing::info!(to_domain = %domain, subject = %subject, "mail sent"),
                Err(e) => tracing::warn!(error = %e, to_domain = %domain, subject = %subject, "mail not sent"),
            }
        });
    }
}
