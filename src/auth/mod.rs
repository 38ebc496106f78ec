//! Authentication: password hashing, tokens, the principal, access rules.

pub mod access;
pub mod cache;
pub mod directory;
pub mod limits;
pub mod oidc;
pub mod password;
pub mod principal;
pub mod reauth;
pub mod tokens;
