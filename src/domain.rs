//! Validated domain types with no HTTP or SQL in them. Past the edge of the
//! API, a `Username` is always valid.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The reserved name that means "the caller" wherever a username is accepted.
pub const ME: &str = "me";

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    /// 1 to 64 characters: ASCII letters, digits, `.`, `_`, `-`, starting with a
    /// letter or digit (XNAT logins). `me` is reserved (MLTE).
    pub fn parse(raw: &str) -> Result<Username, ApiError> {
        let ok_len = (1..=64).contains(&raw.len());
        let mut chars = raw.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !(ok_len && first_ok && rest_ok) {
            return Err(ApiError::unprocessable(
                "invalid_username",
                "username must be 1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit",
            ));
        }
        if raw.eq_ignore_ascii_case(ME) {
            return Err(ApiError::bad_request("reserved_username", "'me' is reserved and can't be used as a username"));
        }
        Ok(Username(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// A pragmatic check (one `@`, a non-empty local part, a dotted or
    /// `localhost` domain, no spaces or control characters, at most 254 bytes).
    pub fn parse(raw: &str) -> Result<Email, ApiError> {
        let err = || ApiError::unprocessable("invalid_email", "email must be a valid address such as name@example.org");
        let raw = raw.trim();
        if raw.len() < 3 || raw.len() > 254 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err());
        }
        let (local, domain) = raw.split_once('@').ok_or_else(err)?;
        if local.is_empty()
            || local.len() > 64
            || domain.is_empty()
            || domain.contains('@')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
            || !(domain.contains('.') || domain.eq_ignore_ascii_case("localhost"))
            || raw.contains(['<', '>', '"', ',', ';', '\\'])
        {
            return Err(err());
        }
        Ok(Email(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person's name part: at most 128 characters, no control characters.
pub fn parse_name(field: &'static str, raw: &str) -> Result<String, ApiError> {
    let trimmed = raw.trim();
    if trimmed.chars().count() > 128 || trimmed.chars().any(|c| c.is_control()) {
        return Err(ApiError::unprocessable(
            "invalid_name",
            format!("{field} must be at most 128 characters with no control characters"),
        ));
    }
    Ok(trimmed.to_string())
}

/// Named capabilities. Roles grant permissions; `ADMIN` implies everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Permission {
    Admin,
    UserManagement,
}

impl Permission {
    pub const ALL: [Permission; 2] = [Permission::Admin, Permission::UserManagement];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Admin => "ADMIN",
            Permission::UserManagement => "USER_MANAGEMENT",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Permission::Admin => "Everything, including site configuration and other administrators",
            Permission::UserManagement => {
                "Create, edit, disable and delete other users; manage their roles, groups, sessions and API keys"
            }
        }
    }

    pub fn from_name(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A project id: 1-64 ASCII letters, digits, `_` or `-`, starting with a
/// letter or digit (XNAT project ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ProjectId(String);

impl ProjectId {
    pub fn parse(raw: &str) -> Result<ProjectId, ApiError> {
        let ok = (1..=64).contains(&raw.len())
            && raw.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(ApiError::unprocessable(
                "invalid_project_id",
                "project id must be 1-64 characters: letters, digits, '_' or '-', starting with a letter or digit",
            ));
        }
        Ok(ProjectId(raw.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A group name: 1-128 ASCII letters, digits, `_`, `.` or `-`.
pub fn parse_group_name(raw: &str) -> Result<String, ApiError> {
    let ok = (1..=128).contains(&raw.len())
        && raw.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(ApiError::unprocessable(
            "invalid_group_name",
            "group name must be 1-128 characters: letters, digits, '_', '.' or '-', starting with a letter or digit",
        ));
    }
    Ok(raw.to_string())
}

/// Free text such as a project name or description: bounded, no control
/// characters other than newlines and tabs.
pub fn parse_text(field: &'static str, raw: &str, max: usize) -> Result<String, ApiError> {
    let t = raw.trim();
    if t.chars().count() > max || t.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')) {
        return Err(ApiError::unprocessable(
            "invalid_text",
            format!("{field} must be at most {max} characters with no control characters"),
        ));
    }
    Ok(t.to_string())
}

/// Access level of a user in a project, from most to least privileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Owner,
    Member,
    Collaborator,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Owner, Level::Member, Level::Collaborator];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Owner => "owner",
            Level::Member => "member",
            Level::Collaborator => "collaborator",
        }
    }

    pub fn parse(raw: &str) -> Result<Level, ApiError> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(raw))
            .ok_or_else(|| ApiError::unprocessable("invalid_level", "level must be owner, member or collaborator"))
    }

    /// Higher is more access: owner 3, member 2, collaborator 1.
    pub fn rank(self) -> u8 {
        match self {
            Level::Owner => 3,
            Level::Member => 2,
            Level::Collaborator => 1,
        }
    }

    /// The group that carries this level in `project`: `{project}_{level}`.
    pub fn group(self, project: &str) -> String {
        format!("{project}_{}", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["a", "alice", "Bob.Smith", "x_1-2", &"a".repeat(64)] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "me", "ME", "-a", ".a", "a b", "a/b", "é", &"a".repeat(65), "a\0"] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails() {
        for ok in ["a@b.co", "admin@localhost", "first.last+tag@example.org"] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "a@", "@b.c", "a@b", "a b@c.d", "a@b..c", "a@@b.c", "<a@b.c>"] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }
}
