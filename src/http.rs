//! HTTP plumbing shared by every front end: body, form, query and path
//! extractor configuration with their error answers, the header-size limit,
//! and the answers for unknown routes and methods.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::ApiError;
use crate::state::AppState;

pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default().limit(limit).error_handler(|err, _req| json_error(err).into())
}

/// Maps body problems to 400/413/415 without echoing values (they may be secrets).
pub fn json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::ContentType => ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected a JSON body with Content-Type: application/json",
        ),
        JsonPayloadError::Overflow { limit } | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        ),
        JsonPayloadError::Deserialize(e) => {
            let msg = e.to_string();
            let safe = ["missing field", "unknown field", "duplicate field"].iter().any(|k| msg.contains(k));
            let text = if safe {
                let head = msg.split(" at line").next().unwrap_or(&msg);
                format!("invalid request body: {head}")
            } else if e.is_syntax() || e.is_eof() {
                format!("malformed JSON at line {} column {}", e.line(), e.column())
            } else {
                format!("a field has an invalid value or type (line {} column {})", e.line(), e.column())
            };
            ApiError::bad_request("invalid_json", text)
        }
        JsonPayloadError::Serialize(e) => ApiError::internal(e),
        JsonPayloadError::Payload(_) => ApiError::bad_request("invalid_body", "could not read the request body"),
        _ => ApiError::bad_request("invalid_body", "invalid request body"),
    }
}

/// Maps form-body problems (XNAT's login form) like JSON ones.
pub fn form_error(err: actix_web::error::UrlencodedError) -> ApiError {
    use actix_web::error::UrlencodedError as E;
    match err {
        E::ContentType => ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected a form body (application/x-www-form-urlencoded)",
        ),
        E::Overflow { limit, .. } => ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        ),
        _ => ApiError::bad_request("invalid_form", "invalid form body: username and password are required"),
    }
}

pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let msg = match &err {
        QueryPayloadError::Deserialize(e) => e.to_string(),
        _ => "invalid query string".into(),
    };
    ApiError::bad_request("invalid_query", format!("invalid query parameters: {msg}")).into()
}

pub fn path_error(_err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::not_found("not_found", "no such resource").into()
}

/// Refuses requests whose headers exceed `limits.header_bytes` (431).
pub async fn header_limit(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    use actix_web::ResponseError;
    let limit = req.app_data::<web::Data<AppState>>().map(|s| s.settings.limits.header_bytes).unwrap_or(16_384);
    let size: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if size > limit {
        let err = ApiError::new(
            actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers are larger than {limit} bytes"),
        );
        return Ok(req.into_response(err.error_response()));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("not_found", "no such route"))
}

pub async fn method_not_allowed() -> HttpResponse {
    use actix_web::ResponseError;
    ApiError::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
    .error_response()
}
