//! The change log: who did what to which record, when, with before and after
//! values. Entries are written on the same transaction as the change.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::auth::principal::Principal;
use crate::domain::Result;

/// The acting party and request of a change.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub actor_id: Option<Uuid>,
    pub actor_username: Option<String>,
    pub session_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
}

impl Audit {
    pub fn anonymous(request_id: Option<String>, client_ip: Option<String>) -> Audit {
        Audit { request_id, client_ip, ..Audit::default() }
    }
    pub fn system() -> Audit {
        Audit { actor_username: Some("system".into()), ..Audit::default() }
    }
    /// The audit of a request made by `p` (for handlers that resolve the
    /// caller themselves, outside the access guard).
    pub fn for_principal(req: &actix_web::HttpRequest, p: &Principal) -> Audit {
        Audit {
            actor_id: Some(p.user_id),
            actor_username: Some(p.username.clone()),
            session_id: p.session_id,
            api_key_id: p.api_key_id,
            request_id: crate::telemetry::current_request_id(),
            client_ip: client_ip(req),
        }
    }

    pub fn as_user(mut self, id: Uuid, username: &str) -> Audit {
        self.actor_id = Some(id);
        self.actor_username = Some(username.to_string());
        self
    }
}

/// The reverse proxies whose `X-Forwarded-For` is believed (`trusted_proxies`).
#[derive(Debug, Default, Clone)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

/// The client's address: the peer, or, when the peer is a trusted proxy,
/// the right-most address of `X-Forwarded-For` that is not a trusted proxy
/// itself (the left part is whatever the client claimed).
pub fn client_ip(req: &HttpRequest) -> Option<String> {
    let peer = req.peer_addr()?.ip();
    let trusted = req.app_data::<actix_web::web::Data<TrustedProxies>>();
    let nets = trusted.map(|t| t.0.as_slice()).unwrap_or(&[]);
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    Some(forwarded_client(peer, &forwarded, nets).to_string())
}

fn forwarded_client(peer: std::net::IpAddr, forwarded: &[&str], nets: &[ipnet::IpNet]) -> std::net::IpAddr {
    let trusted = |ip: &std::net::IpAddr| nets.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded.iter().rev() {
        match hop.parse::<std::net::IpAddr>() {
            Ok(ip) if trusted(&ip) => client = ip,
            Ok(ip) => return ip,
            // An unreadable hop: believe nothing further left.
            Err(_) => return client,
        }
    }
    client
}

impl FromRequest for Audit {
    type Error = crate::error::ApiError;
    type Future = Ready<Result<Audit, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let ext = req.extensions();
        let principal = ext.get::<std::sync::Arc<Principal>>();
        ready(Ok(Audit {
            actor_id: principal.map(|p| p.user_id),
            actor_username: principal.map(|p| p.username.clone()),
            session_id: principal.and_then(|p| p.session_id),
            api_key_id: principal.and_then(|p| p.api_key_id),
            request_id: crate::telemetry::current_request_id(),
            client_ip: client_ip(req),
        }))
    }
}

/// Field-level differences: `{"field": {"before": .., "after": ..}}`.
#[derive(Default)]
pub struct Changes(Map<String, Value>);

impl Changes {
    pub fn new() -> Changes {
        Changes(Map::new())
    }
    pub fn field(mut self, name: &str, before: impl Into<Value>, after: impl Into<Value>) -> Changes {
        let (b, a) = (before.into(), after.into());
        if b != a {
            self.0.insert(name.to_string(), json!({"before": b, "after": a}));
        }
        self
    }
    /// A secret that changed: recorded as changed, never its value.
    pub fn secret(mut self, name: &str) -> Changes {
        self.0.insert(name.to_string(), json!({"before": "[redacted]", "after": "[redacted]"}));
        self
    }
    pub fn set(mut self, name: &str, value: impl Into<Value>) -> Changes {
        self.0.insert(name.to_string(), value.into());
        self
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

/// One change-log entry, for statements that write it together with the
/// change it describes (see `push_insert`).
pub struct Entry<'a> {
    pub audit: &'a Audit,
    pub subject_type: &'a str,
    pub subject_id: String,
    pub action: &'a str,
    pub changes: Changes,
}

/// Appends one entry. Pass the request's transaction so the entry commits or
/// rolls back with the change it describes.
pub async fn record<'e, E>(
    exec: E,
    audit: &Audit,
    subject_type: &str,
    subject_id: &str,
    action: &str,
    changes: Changes,
) -> Result<(), sqlx::Error>
where
    E: sqlx::PgExecutor<'e>,
{
    let entry = Entry { audit, subject_type, subject_id: subject_id.to_string(), action, changes };
    crate::store::change_log::write(exec, &[entry]).await
}

#[cfg(test)]
mod tests {
    use super::forwarded_client;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let nets = vec!["10.0.0.0/8".parse().unwrap()];
        let peer_proxy = "10.0.0.5".parse().unwrap();
        let stranger = "203.0.113.9".parse().unwrap();
        assert_eq!(forwarded_client(stranger, &["1.2.3.4"], &nets), stranger);
        assert_eq!(forwarded_client(peer_proxy, &["1.2.3.4"], &nets).to_string(), "1.2.3.4");
        // The client may prepend anything; the right-most untrusted hop counts.
        assert_eq!(forwarded_client(peer_proxy, &["6.6.6.6", "1.2.3.4", "10.0.0.7"], &nets).to_string(), "1.2.3.4");
        assert_eq!(forwarded_client(peer_proxy, &["junk", "10.0.0.7"], &nets).to_string(), "10.0.0.7");
        assert_eq!(forwarded_client(peer_proxy, &[], &nets), peer_proxy);
    }
}
