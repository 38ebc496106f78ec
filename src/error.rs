//! One error type for the whole server, mapped to HTTP in one place:
//! `{"error": {"code": "...", "message": "...", "request_id": "..."}}`.
//! 500s say nothing internal; the cause goes to the log with the request id.

use std::fmt;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware.
    pub static REQUEST_ID: String;
}

pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
    /// Extra machine-readable detail (e.g. per-item failures); never secrets.
    pub details: Option<serde_json::Value>,
    source: Option<anyhow::Error>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code such as `not_found` or `invalid_username`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

/// Domain refusals: invalid values are 422, reserved ones 400 (as before).
impl From<crate::domain::Error> for ApiError {
    fn from(e: crate::domain::Error) -> ApiError {
        let message = e.to_string();
        match e {
            crate::domain::Error::Invalid { code, .. } => ApiError::unprocessable(code, message),
            crate::domain::Error::Reserved { code, .. } => ApiError::bad_request(code, message),
        }
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None, details: None, source: None }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after: u64) -> ApiError {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, code, message);
        e.retry_after = Some(retry_after.max(1));
        e
    }
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> ApiError {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        e.retry_after = Some(retry_after.max(1));
        e
    }
    pub fn internal(source: impl Into<anyhow::Error>) -> ApiError {
        let mut e = Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal server error");
        e.source = Some(source.into());
        e
    }
    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = code;
        self
    }
    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// Maps a unique-constraint violation named `constraint` to a 409.
    pub fn on_constraint(err: sqlx::Error, f: impl FnOnce(&str) -> Option<ApiError>) -> ApiError {
        if let sqlx::Error::Database(db) = &err {
            if let Some(name) = db.constraint() {
                if let Some(mapped) = f(name) {
                    return mapped;
                }
            }
        }
        ApiError::from(err)
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)?;
        if let Some(src) = &self.source {
            write!(f, " (caused by: {src:#})")?;
        }
        Ok(())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> ApiError {
        match &err {
            sqlx::Error::PoolTimedOut => {
                tracing::warn!("database pool exhausted");
                ApiError::unavailable("database_busy", "the server is busy, try again shortly", 1)
            }
            sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => {
                tracing::warn!(error = %err, "database unreachable");
                ApiError::unavailable("database_unavailable", "the database is unavailable, try again shortly", 2)
            }
            sqlx::Error::Database(db)
                if db.code().as_deref() == Some("40001") || db.code().as_deref() == Some("40P01") =>
            {
                ApiError::conflict("concurrent_update", "the record was changed concurrently; retry the request")
            }
            // Text PostgreSQL cannot store (a NUL character, say): the client's input is at fault.
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("22021" | "22P05")) => {
                ApiError::bad_request(
                    "invalid_characters",
                    "the request contains characters that cannot be stored (such as NUL)",
                )
            }
            sqlx::Error::Database(db)
                if db.code().as_deref().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")) =>
            {
                ApiError::unavailable("database_unavailable", "the database is unavailable, try again shortly", 2)
            }
            _ => ApiError::internal(err),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> ApiError {
        ApiError::internal(err)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let request_id = current_request_id();
        if let Some(src) = &self.source {
            tracing::error!(request_id = request_id.as_deref().unwrap_or("-"), error = %format!("{src:#}"), "internal error");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
                request_id,
                details: self.details.clone(),
            },
        };
        let mut resp = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            resp.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.insert_header((header::WWW_AUTHENTICATE, "Bearer, Basic realm=\"registrar\""));
        }
        resp.insert_header((header::CACHE_CONTROL, "no-store"));
        resp.json(body)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
