//! One error type for the whole server, mapped to HTTP in one place:
//! `{"error": {"code": "...", "message": "...", "request_id": "..."}}`.
//! 500s say nothing internal; the cause goes to the log with the request id.

use std::fmt;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

pub use crate::telemetry::current_request_id;

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

/// The one mapping from domain errors to HTTP.
impl From<crate::domain::Error> for ApiError {
    fn from(e: crate::domain::Error) -> ApiError {
        use crate::domain::Error as E;
        let message = e.to_string();
        match e {
            E::Invalid { code, field, .. } => {
                let err = ApiError::unprocessable(code, message);
                match field {
                    Some(field) => err.with_details(serde_json::json!({ "field": field })),
                    None => err,
                }
            }
            E::Malformed { code, field, .. } => {
                let err = ApiError::bad_request(code, message);
                match field {
                    Some(field) => err.with_details(serde_json::json!({ "field": field })),
                    None => err,
                }
            }
            E::NotFound { code, .. } => ApiError::not_found(code, message),
            E::Conflict { code, .. } => ApiError::conflict(code, message),
            E::Unauthenticated { code, .. } => ApiError::unauthorized(message).with_code(code),
            E::Forbidden { code, .. } => ApiError::forbidden(message).with_code(code),
            E::Locked { code, retry_after, .. } => ApiError::too_many(code, message, retry_after),
            E::Unavailable { code, retry_after, .. } => ApiError::unavailable(code, message, retry_after),
            E::Upstream { code, .. } => ApiError::new(StatusCode::BAD_GATEWAY, code, message),
            E::Internal(source) => ApiError::internal(source),
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
    /// Logs the cause of an internal error (the line carries the request
    /// id); answers in other shapes (XNAT's, MLTE's) call it too.
    pub fn log_cause(&self) {
        if let Some(src) = &self.source {
            tracing::error!(error = %format!("{src:#}"), "internal error");
        }
    }
    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
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
        crate::domain::Error::from(err).into()
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
        self.log_cause();
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
