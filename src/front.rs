//! What every request goes through before routing, in one layer (`Front`):
//!
//! - its own request id (a new UUID: the key of the request's log lines and
//!   change-log entries, and of `request_id` in error bodies), set for the
//!   request's task (`telemetry::REQUEST`, `telemetry::current_request_id`), and sent
//!   back as `X-Request-Id`. A client's own `X-Request-Id` (up to 64 of
//!   `A-Z a-z 0-9 - _`) never replaces it: it is logged as
//!   `client_request_id` and echoed as `X-Client-Request-Id`, so a client
//!   cannot reuse another request's id;
//! - the count of requests in flight (a graceful stop waits for them);
//! - 431 for headers over `limits.header_bytes`;
//! - after a write, the wait for this instance's auth cache to apply what
//!   the write revoked (`access::settle`);
//! - the headers every answer carries (`nosniff`, `DENY`, `no-referrer`);
//! - the request's metrics and its access line (`registrar::access`, INFO).
//!
//! One hand-written layer rather than one per concern: each
//! `middleware::from_fn` layer costs two boxed futures and a dynamic call
//! per request, which a cached read (a few microseconds of work) notices.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{web, HttpMessage, ResponseError};
use futures_util::future::LocalBoxFuture;

use crate::auth::access;
use crate::error::ApiError;
use crate::state::{AppState, InFlight};
use crate::telemetry::{RequestContext, RoutePattern, REQUEST, REQUEST_ID_HEADER};

/// The layer; wrap the whole app in it (`App::wrap(Front)`).
pub struct Front;

impl<S, B> Transform<S, ServiceRequest> for Front
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = FrontService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<FrontService<S>, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(FrontService { service: Rc::new(service) }))
    }
}

pub struct FrontService<S> {
    service: Rc<S>,
}

impl<S, B> Service<ServiceRequest> for FrontService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        Box::pin(serve(self.service.clone(), req))
    }
}

async fn serve<S, B>(service: Rc<S>, req: ServiceRequest) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let started = Instant::now();
    let id: Arc<str> = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).into();
    let _in_flight = req.app_data::<web::Data<InFlight>>().map(|f| f.enter());
    let header = HeaderValue::from_str(&id).ok();
    let context = RequestContext { id, method: req.method().clone(), uri: req.uri().clone() };
    REQUEST.scope(context, answer(service, req, started, header)).await
}

/// The request, served inside its task's `REQUEST` scope.
async fn answer<S, B>(
    service: Rc<S>,
    req: ServiceRequest,
    started: Instant,
    request_id: Option<HeaderValue>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let client_id = req.headers().get(REQUEST_ID_HEADER).filter(|v| valid_client_id(v.as_bytes())).cloned();
    let header_bytes = state.as_ref().map_or(16_384, |s| s.settings.limits.header_bytes);
    let method = req.method().clone();
    let mut res = if let Some(err) = headers_too_large(req.headers(), header_bytes) {
        req.into_response(err.error_response()).map_into_right_body()
    } else {
        let writes = access::writes(req.method());
        let res = match service.call(req).await {
            Ok(res) => res,
            Err(e) => {
                // Handlers' and extractors' errors arrive as responses; only a
                // layer's own `Err` gets here, and actix answers it. Keeping a
                // clone of the request to answer it here instead breaks
                // routing (the router needs the only reference to the
                // request to record its match).
                tracing::warn!(error = %e, "request failed");
                return Err(e);
            }
        };
        if let (true, Some(state)) = (writes, &state) {
            // By the route that took it, not the raw path (`/%6fauth2/token`
            // is `/oauth2/token`); a write no route took settles too.
            let route = res.request().extensions().get::<RoutePattern>().map_or("", |r| r.0);
            access::settle(state, access::settle_rule(&method, route), res.status()).await;
        }
        res.map_into_left_body()
    };
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    if let Some(state) = &state {
        // The route template, never the raw path (ids would become series).
        let route = res.request().extensions().get::<RoutePattern>().map_or("unmatched", |r| r.0);
        state.metrics.request(route, method.as_str(), status, elapsed);
    }
    tracing::info!(
        target: crate::telemetry::ACCESS_TARGET,
        status,
        elapsed_ms = elapsed.as_micros() as f64 / 1000.0,
        client_request_id = client_id.as_ref().and_then(|v| v.to_str().ok()),
        "served"
    );
    let headers = res.headers_mut();
    if let Some(v) = request_id {
        headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), v);
    }
    if let Some(v) = client_id {
        headers.insert(HeaderName::from_static("x-client-request-id"), v);
    }
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    Ok(res)
}

/// A client's `X-Request-Id` worth logging: 1 to 64 of `A-Z a-z 0-9 - _`.
fn valid_client_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 64 && v.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

/// 431 when the request's headers (names, values, and 4 bytes each for
/// `: ` and the line end) are larger than `limit` bytes.
fn headers_too_large(headers: &HeaderMap, limit: usize) -> Option<ApiError> {
    let size: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    (size > limit).then(|| {
        ApiError::new(
            actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers are larger than {limit} bytes"),
        )
    })
}
