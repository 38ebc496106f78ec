//! The service layer: one plain function per flow, under every front end.
//! The native API (`api`), the XNAT adapter (`xnat`) and the command line
//! (`main.rs`) parse their input, call these, and shape the answer; each
//! function runs its whole write in one transaction. Nothing here imports
//! `startup`, `api` handlers or `xnat`.
use crate::domain::{Error, Result};

pub mod access_requests;
pub mod api_keys;
pub mod auth;
pub mod bulk;
pub mod email;
pub mod groups;
pub mod import;
pub mod memberships;
pub mod mfa;
pub mod oauth;
pub mod oidc;
pub mod passkeys;
pub mod permissions;
pub mod projects;
pub mod roles;
pub mod scim;
pub mod scim_patch;
pub mod sessions;
pub mod users;

/// A list of names given to a bulk route: between 1 and 100.
pub fn bounded_list(list: Vec<String>, code: &'static str, what: &str) -> Result<Vec<String>, Error> {
    if list.is_empty() || list.len() > 100 {
        return Err(Error::malformed(code, format!("give between 1 and 100 {what}")));
    }
    Ok(list)
}
