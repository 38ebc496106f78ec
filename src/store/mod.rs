//! Storage: SQL and the rules that live next to it, one file per aggregate.
//! Write functions take the request's transaction (`&mut PgConnection`) and
//! an `Audit`, and log their change on that same transaction.

pub mod access_requests;
pub mod api_keys;
pub mod change_log;
pub mod credentials;
pub mod db;
pub mod email_tokens;
pub mod groups;
pub mod identities;
pub mod mfa;
pub mod oauth;
pub mod op_keys;
pub mod passkeys;
pub mod permissions;
pub mod projects;
pub mod rate_limits;
pub mod roles;
pub mod scim;
pub mod secrets;
pub mod sessions;
pub mod users;
