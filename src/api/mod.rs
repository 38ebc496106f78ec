//! Native HTTP API: thin handlers (parse, authorize, call the store, map).

pub mod api_keys;
pub mod auth;
pub mod change_log;
pub mod docs;
pub mod groups;
pub mod health;
pub mod meta;
pub mod oidc;
pub mod projects;
pub mod sessions;
pub mod users;

pub use crate::auth::principal::resolve_me;

/// Page size: default 50, at most 500.
pub fn page_limit(limit: Option<i64>) -> Result<i64, crate::error::ApiError> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=500).contains(&n) => Ok(n),
        Some(_) => Err(crate::error::ApiError::bad_request("invalid_limit", "limit must be between 1 and 500")),
    }
}
