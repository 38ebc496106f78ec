//! The one error type of the domain, the store and the service layer.
//!
//! It says *what* went wrong in domain words (not found, conflict, invalid
//! with the field, forbidden, locked with the wait, unavailable, ...) and
//! carries no HTTP. The HTTP layer maps it in one place
//! (`impl From<domain::Error> for ApiError`); the XNAT adapter keeps its own
//! plain-text mapping; the command line prints it with `?`.

/// A domain refusal or failure. Every refusal has a stable, machine-readable
/// `code` (such as `invalid_email`) and a human message without secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value that is not valid; `field` names the input it came from when known.
    #[error("{message}")]
    Invalid { code: &'static str, message: String, field: Option<&'static str> },
    /// A request that cannot be understood or is refused as such: a reserved
    /// name, characters that cannot be stored.
    #[error("{message}")]
    Malformed { code: &'static str, message: String, field: Option<&'static str> },
    /// The thing named does not exist (or the caller may not know it does).
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// The change contradicts the current state (a duplicate, the last owner,
    /// a concurrent update).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The caller is not (or no longer) authenticated.
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    /// The caller is known but may not do this.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// Too many attempts: try again after `retry_after` seconds.
    #[error("{message}")]
    Locked { code: &'static str, message: String, retry_after: u64 },
    /// Something the server needs is unavailable for now (the database, say).
    #[error("{message}")]
    Unavailable { code: &'static str, message: String, retry_after: u64 },
    /// An upstream service (the OpenID provider) failed or answered wrongly.
    #[error("{message}")]
    Upstream { code: &'static str, message: String },
    /// A fault of the server; the cause goes to the log, never to the caller.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Error {
        Error::Invalid { code, message: message.into(), field: None }
    }
    /// Reserved values (`me`, route words) and unreadable input.
    pub fn reserved(code: &'static str, message: impl Into<String>) -> Error {
        Error::Malformed { code, message: message.into(), field: None }
    }
    pub fn malformed(code: &'static str, message: impl Into<String>) -> Error {
        Error::Malformed { code, message: message.into(), field: None }
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Error {
        Error::NotFound { code, message: message.into() }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Error {
        Error::Conflict { code, message: message.into() }
    }
    /// Not authenticated, with the generic code `unauthenticated`.
    pub fn unauthorized(message: impl Into<String>) -> Error {
        Error::Unauthenticated { code: "unauthenticated", message: message.into() }
    }
    /// Forbidden, with the generic code `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::Forbidden { code: "forbidden", message: message.into() }
    }
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after: u64) -> Error {
        Error::Locked { code, message: message.into(), retry_after: retry_after.max(1) }
    }
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Error {
        Error::Unavailable { code, message: message.into(), retry_after: retry_after.max(1) }
    }
    pub fn upstream(code: &'static str, message: impl Into<String>) -> Error {
        Error::Upstream { code, message: message.into() }
    }
    pub fn internal(source: impl Into<anyhow::Error>) -> Error {
        Error::Internal(source.into())
    }

    /// The stable code (`internal_error` for server faults).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid { code, .. }
            | Error::Malformed { code, .. }
            | Error::NotFound { code, .. }
            | Error::Conflict { code, .. }
            | Error::Unauthenticated { code, .. }
            | Error::Forbidden { code, .. }
            | Error::Locked { code, .. }
            | Error::Unavailable { code, .. }
            | Error::Upstream { code, .. } => code,
            Error::Internal(_) => "internal_error",
        }
    }

    /// Replaces the code, keeping the kind and message.
    pub fn with_code(mut self, new: &'static str) -> Error {
        match &mut self {
            Error::Invalid { code, .. }
            | Error::Malformed { code, .. }
            | Error::NotFound { code, .. }
            | Error::Conflict { code, .. }
            | Error::Unauthenticated { code, .. }
            | Error::Forbidden { code, .. }
            | Error::Locked { code, .. }
            | Error::Unavailable { code, .. }
            | Error::Upstream { code, .. } => *code = new,
            Error::Internal(_) => {}
        }
        self
    }

    /// Names the input field an `Invalid` (or `Malformed`) error is about;
    /// a field already named stays (the innermost check knows best).
    pub fn on_field(mut self, name: &'static str) -> Error {
        if let Error::Invalid { field, .. } | Error::Malformed { field, .. } = &mut self {
            field.get_or_insert(name);
        }
        self
    }

    /// `on_field`, replacing a name already given (a front end whose field
    /// is called otherwise, such as `new_password`).
    pub fn as_field(mut self, name: &'static str) -> Error {
        if let Error::Invalid { field, .. } | Error::Malformed { field, .. } = &mut self {
            *field = Some(name);
        }
        self
    }

    /// A refusal of this request (the caller's input or the state it met),
    /// as opposed to a fault of the server or of what it depends on. Bulk
    /// changes report refusals per item and stop at faults.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Error::Internal(_) | Error::Unavailable { .. } | Error::Upstream { .. })
    }

    /// Maps a unique-constraint violation named `constraint` to the refusal
    /// `f` gives for it; every other database error maps as `From` does.
    pub fn on_constraint(err: sqlx::Error, f: impl FnOnce(&str) -> Option<Error>) -> Error {
        if let sqlx::Error::Database(db) = &err {
            if let Some(name) = db.constraint() {
                if let Some(mapped) = f(name) {
                    return mapped;
                }
            }
        }
        Error::from(err)
    }
}

/// Database errors in domain words: a pool or connection problem is
/// `Unavailable`; a serialization failure, a deadlock, or a key or reference
/// a concurrent request changed a `Conflict` the caller may retry; text
/// PostgreSQL cannot store `Malformed`; the rest `Internal`.
impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Error {
        match &err {
            sqlx::Error::PoolTimedOut => {
                tracing::warn!("database pool exhausted");
                crate::metrics::pool_timed_out();
                Error::unavailable("database_busy", "the server is busy, try again shortly", 1)
            }
            sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => {
                tracing::warn!(error = %err, "database unreachable");
                Error::unavailable("database_unavailable", "the database is unavailable, try again shortly", 2)
            }
            // A lock or statement timeout: somebody else holds what this needs.
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("55P03" | "57014")) => {
                Error::unavailable("busy", "the record is busy (another change holds it); try again shortly", 2)
            }
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")) => {
                Error::conflict("concurrent_update", "the record was changed concurrently; retry the request")
            }
            // A key another request took, or a record this one refers to that
            // another removed, after this request's own checks read (they
            // could not see it yet): what the client can do is retry.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                Error::conflict("already_exists", "the record was created concurrently by another request")
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => Error::conflict(
                "concurrent_update",
                "a record this request refers to was changed or removed concurrently; retry the request",
            ),
            // Text PostgreSQL cannot store (a NUL character, say): the client's input is at fault.
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("22021" | "22P05")) => Error::malformed(
                "invalid_characters",
                "the request contains characters that cannot be stored (such as NUL)",
            ),
            sqlx::Error::Database(db)
                if db.code().as_deref().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")) =>
            {
                Error::unavailable("database_unavailable", "the database is unavailable, try again shortly", 2)
            }
            _ => Error::Internal(err.into()),
        }
    }
}

impl From<anyhow::Error> for Error {
    fn from(err: anyhow::Error) -> Error {
        Error::Internal(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_survive_and_faults_are_not_refusals() {
        let e = Error::forbidden("no").with_code("wrong_password");
        assert_eq!(e.code(), "wrong_password");
        assert!(e.is_refusal());
        assert!(!Error::internal(anyhow::anyhow!("boom")).is_refusal());
        assert!(!Error::from(sqlx::Error::PoolTimedOut).is_refusal());
        let field = Error::invalid("invalid_limit", "limit must be 1 to 100").on_field("limit");
        assert!(matches!(field, Error::Invalid { field: Some("limit"), .. }));
    }
}
