//! Logging and request ids.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::error::REQUEST_ID;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Installs the global subscriber. `RUST_LOG` filters (default `info`,
/// without PostgreSQL's notices such as "relation already exists,
/// skipping"). Colours only on a terminal.
///
/// Lines are formatted on the thread that logs them and written to stderr
/// by a thread of their own, a batch at a time (one write for every line
/// waiting), so a request does not wait for the write. No line is dropped:
/// when `LOG_LINES_WAITING` lines are waiting, loggers wait. Keep the returned guard until
/// the end of `main`: dropping it writes what is still waiting.
pub fn init(format: LogFormat) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_LINES_WAITING)
        .lossy(false)
        .thread_name("registrar-log")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.ok().map(|()| guard)
}

/// Lines formatted and not yet written, at most (the queue is allocated
/// whole at start-up: the default, 128k lines, would be 4 MiB).
const LOG_LINES_WAITING: usize = 8192;

/// Where the request was routed: the pattern of the resource that took it
/// (set by its guard, `auth::access::enforce`).
#[derive(Clone, Copy, Debug)]
pub struct RoutePattern(pub &'static str);

/// The request id of the current request, as stored in its extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Gives every request its own id (a new UUID: the key of the request's
/// log lines and change-log entries, and of `request_id` in error bodies),
/// logs the request in a span carrying that id, and sends it back as
/// `X-Request-Id`. A client's own `X-Request-Id` (up to 64 of `A-Z a-z 0-9
/// - _`) never replaces it: it is logged as `client_request_id` and echoed
/// as `X-Client-Request-Id`, so a client cannot reuse another request's id.
pub async fn request_id_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let client_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map(str::to_string);
    let id = uuid::Uuid::new_v4().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    let _in_flight = req.app_data::<actix_web::web::Data<crate::state::InFlight>>().map(|f| f.enter());
    let span = tracing::info_span!("request", request_id = %id, client_request_id = client_id.as_deref().unwrap_or(""),
        method = %req.method(), path = %req.path());
    let started = std::time::Instant::now();
    let metrics = req.app_data::<actix_web::web::Data<crate::state::AppState>>().map(|s| s.metrics.clone());
    let method = req.method().clone();
    let result = REQUEST_ID.scope(id.clone(), next.call(req)).instrument(span.clone()).await;
    let _enter = span.enter();
    match result {
        Ok(mut res) => {
            let status = res.status().as_u16();
            let elapsed = started.elapsed();
            if let Some(m) = metrics {
                // The route template, never the raw path (ids would become series).
                let route = res.request().extensions().get::<RoutePattern>().map_or("unmatched", |r| r.0);
                m.request(route, method.as_str(), status, elapsed);
            }
            tracing::info!(status, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "served");
            if let Ok(v) = HeaderValue::from_str(&id) {
                res.headers_mut().insert(HeaderName::from_static(REQUEST_ID_HEADER), v);
            }
            if let Some(v) = client_id.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
                res.headers_mut().insert(HeaderName::from_static("x-client-request-id"), v);
            }
            Ok(res)
        }
        Err(e) => {
            tracing::warn!(error = %e, "request failed");
            Err(e)
        }
    }
}
