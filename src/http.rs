//! HTTP plumbing shared by every front end: body, form, query and path
//! extractor configuration with their error answers, the header-size limit,
//! and the answers for unknown routes and methods.

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

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

/// A JSON body whose refusals name the field. `web::Json` checks the
/// content type, the size and the syntax (`json_error`); the value is then
/// read into `T` through `serde_path_to_error`, so a missing, unknown or
/// mistyped field is answered with its path in `details.field`.
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = web::Json::<Box<serde_json::value::RawValue>>::from_request(req, payload);
        Box::pin(async move {
            let raw = body.await?.into_inner();
            // Read from the text itself: a field given twice is still refused.
            let mut de = serde_json::Deserializer::from_str(raw.get());
            serde_path_to_error::deserialize(&mut de).map(Json).map_err(|e| {
                let path = e.path().to_string();
                field_error(&path, &e.into_inner().to_string(), "body").into()
            })
        })
    }
}

/// A query string whose refusals name the parameter (`Json`'s rules).
pub struct Query<T>(pub T);

impl<T> Query<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Query<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let pairs = url::form_urlencoded::parse(req.query_string().as_bytes());
        let read = serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs));
        std::future::ready(read.map(Query).map_err(|e| {
            let path = e.path().to_string();
            field_error(&path, &e.into_inner().to_string(), "query").into()
        }))
    }
}

/// The refusal of a value that does not fit its field: 400 with the field's
/// path in `details.field` and codes `missing_field`, `unknown_field` or
/// `invalid_field`. Only what the schema says ("expected ...") is repeated,
/// never the value sent (it may be a secret).
fn field_error(path: &str, inner: &str, place: &str) -> ApiError {
    let join = |name: &str| if path == "." { name.to_string() } else { format!("{path}.{name}") };
    let quoted = |rest: &str| rest.split('`').next().unwrap_or_default().to_string();
    let (code, field, message) = if let Some(rest) = inner.strip_prefix("missing field `") {
        let field = join(&quoted(rest));
        ("missing_field", field.clone(), format!("`{field}` is required"))
    } else if let Some(rest) = inner.strip_prefix("duplicate field `") {
        let field = join(&quoted(rest));
        ("duplicate_field", field.clone(), format!("`{field}` is given more than once"))
    } else if let Some(rest) = inner.strip_prefix("unknown field `") {
        // The path already ends at the unknown field.
        let field = if path == "." { quoted(rest) } else { path.to_string() };
        let known = rest
            .split_once(", expected ")
            .map(|(_, k)| format!(" (expected {})", k.split(" at line").next().unwrap_or(k)))
            .unwrap_or_default();
        ("unknown_field", field.clone(), format!("unknown field `{field}`{known}"))
    } else {
        let schema_said = ["invalid type:", "invalid value:", "invalid length"].iter().any(|p| inner.starts_with(p));
        let expected = inner
            .split_once(", expected ")
            .filter(|_| schema_said)
            .map(|(_, e)| format!(": expected {}", e.split(" at line").next().unwrap_or(e)))
            .unwrap_or_default();
        let field = if path == "." { place.to_string() } else { path.to_string() };
        ("invalid_field", field.clone(), format!("`{field}` has an invalid value{expected}"))
    };
    ApiError::bad_request(code, message).with_details(serde_json::json!({ "field": field }))
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

pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    let err = ApiError::not_found("not_found", "no such route");
    // SCIM clients expect SCIM's error body everywhere under /scim, however
    // the path is spelled (`/sc%69m/...` is routed as `/scim/...`).
    let path = percent_encoding::percent_decode_str(req.path()).decode_utf8_lossy();
    let mut res = if path.starts_with("/scim/") { crate::scim::denied(&err) } else { err.error_response() };
    no_store(res.headers_mut());
    res
}

/// `Cache-Control: no-store`, unless the answer already says how to cache it.
pub fn no_store(headers: &mut header::HeaderMap) {
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    }
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
