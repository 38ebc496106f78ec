//! Logging and request ids.
//!
//! Every line logged while a request is served carries that request's id,
//! method and path. They come from the request's task (`RequestContext`,
//! set by `front::Front`), not from a tracing span: a span per request
//! cost a fifth of a cached read's CPU at INFO (its creation, its fields
//! formatted and stored, an enter and exit on every poll), and one line
//! per request needs none of that.

use std::fmt::Write as _;
use std::sync::Arc;

use actix_web::http::{Method, Uri};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

mod batch;

/// Installs the global subscriber. `RUST_LOG` filters (default `info`,
/// without PostgreSQL's notices such as "relation already exists,
/// skipping").
///
/// Lines are formatted on the thread that logs them and written to stderr
/// by a thread of their own, a batch at a time (`batch`), so a request does
/// not wait for the write. No line is dropped. Keep the returned guard
/// until the end of `main`: dropping it writes what is still waiting.
pub fn init(format: LogFormat) -> Option<batch::Guard> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let (writer, guard) = batch::writer(std::io::stderr()).ok()?;
    let lines = Lines { json: matches!(format, LogFormat::Json) };
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .event_format(lines)
        .try_init();
    installed.ok().map(|()| guard)
}

/// Where the request was routed: the pattern of the resource that took it
/// (set by its guard, `auth::access::enforce`).
#[derive(Clone, Copy, Debug)]
pub struct RoutePattern(pub &'static str);

/// What each line logged while serving a request says of it.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub id: Arc<str>,
    pub method: Method,
    pub uri: Uri,
}

tokio::task_local! {
    /// The request being served on this task (see `front::Front`).
    pub static REQUEST: RequestContext;
}

/// The id of the request being served on this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST.try_with(|r| r.id.to_string()).ok()
}

/// One line per event: text (`<time> <LEVEL> <target>: <message> <fields>
/// request_id=… method=… path=…`) or one JSON object (`timestamp`,
/// `level`, `target`, `message`, the fields, then `request_id`, `method`,
/// `path`). registrar opens no spans; they are not printed.
struct Lines {
    json: bool,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let meta = event.metadata();
        if self.json {
            let mut line = String::with_capacity(256);
            line.push_str("{\"timestamp\":\"");
            SystemTime.format_time(&mut Writer::new(&mut line))?;
            line.push('"');
            JsonFields::put(&mut line, "level", meta.level().as_str());
            JsonFields::put(&mut line, "target", meta.target());
            event.record(&mut JsonFields(&mut line));
            let _outside_requests = REQUEST.try_with(|r| {
                JsonFields::put(&mut line, "request_id", &*r.id);
                JsonFields::put(&mut line, "method", r.method.as_str());
                JsonFields::put(&mut line, "path", r.uri.path());
            });
            line.push('}');
            return writeln!(w, "{line}");
        }
        SystemTime.format_time(&mut w)?;
        write!(w, " {:>5} {}: ", meta.level().as_str(), meta.target())?;
        ctx.format_fields(w.by_ref(), event)?;
        if let Ok(written) =
            REQUEST.try_with(|r| write!(w, " request_id={} method={} path={}", r.id, r.method, r.uri.path()))
        {
            written?;
        }
        writeln!(w)
    }
}

/// An event's fields as JSON members, appended to a line being written.
struct JsonFields<'a>(&'a mut String);

impl JsonFields<'_> {
    fn put(line: &mut String, name: &str, value: impl serde::Serialize) {
        // Strings and numbers always serialize.
        let _ = write!(
            line,
            ",{}:{}",
            serde_json::Value::from(name),
            serde_json::to_string(&value).unwrap_or_else(|_| "null".into())
        );
    }
}

impl Visit for JsonFields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        JsonFields::put(self.0, field.name(), value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        JsonFields::put(self.0, field.name(), value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        JsonFields::put(self.0, field.name(), value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        JsonFields::put(self.0, field.name(), value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        JsonFields::put(self.0, field.name(), value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        JsonFields::put(self.0, field.name(), format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(json: bool, f: impl FnOnce()) -> String {
        let out = Captured::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .event_format(Lines { json })
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn in_request(f: impl FnOnce()) {
        let ctx = RequestContext {
            id: "0b6b5f3e-1111-4222-8333-944455556666".into(),
            method: Method::PATCH,
            uri: "/api/v1/users/ann?x=secret-query".parse().unwrap(),
        };
        REQUEST.sync_scope(ctx, f);
    }

    #[test]
    fn lines_carry_the_request_they_were_logged_in() {
        let text = logged(false, || {
            in_request(|| tracing::warn!(status = 409u64, who = "ann \"b\"", "conflict"));
            tracing::info!("outside");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains(" WARN registrar::telemetry::tests: conflict status=409 who=\"ann \\\"b\\\"\""),
            "{text}"
        );
        assert!(
            lines[0].ends_with(" request_id=0b6b5f3e-1111-4222-8333-944455556666 method=PATCH path=/api/v1/users/ann"),
            "{text}"
        );
        assert!(!text.contains("secret-query"), "the query string is never logged: {text}");
        assert!(lines[1].ends_with(" INFO registrar::telemetry::tests: outside"), "{text}");

        let json = logged(true, || {
            in_request(|| tracing::warn!(status = 409u64, elapsed_ms = 1.5, who = "ann \"b\"", "conflict"));
            tracing::info!(ok = true, "outside");
        });
        let lines: Vec<serde_json::Value> =
            json.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        assert_eq!(lines.len(), 2, "{json}");
        let first = &lines[0];
        assert_eq!(first["level"], "WARN");
        assert_eq!(first["target"], "registrar::telemetry::tests");
        assert_eq!(first["message"], "conflict");
        assert_eq!((first["status"].as_u64(), first["elapsed_ms"].as_f64()), (Some(409), Some(1.5)));
        assert_eq!(first["who"], "ann \"b\"");
        assert_eq!(first["request_id"], "0b6b5f3e-1111-4222-8333-944455556666");
        assert_eq!((first["method"].as_str(), first["path"].as_str()), (Some("PATCH"), Some("/api/v1/users/ann")));
        assert!(first["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{json}");
        assert_eq!((lines[1]["ok"].as_bool(), lines[1].get("request_id")), (Some(true), None));
    }
}
