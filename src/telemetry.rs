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
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
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
            push_timestamp(&mut line);
            line.push('"');
            JsonFields::put_str(&mut line, "level", meta.level().as_str());
            JsonFields::put_str(&mut line, "target", meta.target());
            event.record(&mut JsonFields(&mut line));
            let _outside_requests = REQUEST.try_with(|r| {
                JsonFields::put_str(&mut line, "request_id", &r.id);
                JsonFields::put_str(&mut line, "method", r.method.as_str());
                JsonFields::put_str(&mut line, "path", r.uri.path());
            });
            line.push_str("}\n");
            return w.write_str(&line);
        }
        let mut line = String::with_capacity(192);
        push_timestamp(&mut line);
        line.push_str(match *meta.level() {
            Level::ERROR => " ERROR ",
            Level::WARN => "  WARN ",
            Level::INFO => "  INFO ",
            Level::DEBUG => " DEBUG ",
            Level::TRACE => " TRACE ",
        });
        line.push_str(meta.target());
        line.push_str(": ");
        if meta.target() == ACCESS_TARGET {
            // The line of every request: its fields are written here, with
            // no `core::fmt` for its numbers (`AccessFields`).
            let mut fields = AccessFields { line: &mut line, first: true };
            event.record(&mut fields);
            w.write_str(&line)?;
        } else {
            w.write_str(&line)?;
            ctx.format_fields(w.by_ref(), event)?;
        }
        if let Ok(written) =
            REQUEST.try_with(|r| write!(w, " request_id={} method={} path={}", r.id, r.method, r.uri.path()))
        {
            written?;
        }
        w.write_char('\n')
    }
}

/// The target of the access line (`front`).
pub const ACCESS_TARGET: &str = "registrar::access";

thread_local! {
    /// The text of the current second (`2026-12-02T13:13:37.`), per thread:
    /// the date is formatted once a second, not once a line.
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// Now, as tracing-subscriber's `SystemTime` writes it: UTC, microseconds,
/// `Z` (`2026-12-02T13:13:37.341236Z`).
fn push_timestamp(line: &mut String) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, micros) = (now.as_secs(), now.subsec_micros());
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs {
            *second = secs;
            text.clear();
            let at = chrono::DateTime::from_timestamp(secs as i64, 0).unwrap_or_default();
            let _ = write!(text, "{}.", at.format("%Y-%m-%dT%H:%M:%S"));
        }
        line.push_str(text);
    });
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(micros);
    line.push_str(&"000000"[digits.len()..]);
    line.push_str(digits);
    line.push('Z');
}

/// The access line's fields, as tracing-subscriber's default text writes
/// them (`name=value`, numbers as `{:?}` writes them, strings quoted and
/// escaped by `{:?}`), but numbers by `itoa` and `ryu`. Its message is
/// a literal of `front`'s, written as it is.
struct AccessFields<'a> {
    line: &'a mut String,
    first: bool,
}

impl AccessFields<'_> {
    fn name(&mut self, field: &Field) {
        if !std::mem::take(&mut self.first) {
            self.line.push(' ');
        }
        if field.name() != "message" {
            self.line.push_str(field.name());
            self.line.push('=');
        }
    }
}

impl Visit for AccessFields<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.name(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.name(field);
        push_f64(self.line, value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.name(field);
        if field.name() == "message" {
            self.line.push_str(value);
        } else {
            let _ = write!(self.line, "{value:?}");
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.name(field);
        let _ = write!(self.line, "{value:?}");
    }
}

/// `value` as `{:?}` writes it (`1.047`, `0.0`, `1e-7`, `inf`), by `ryu`:
/// the shortest digits that read back as `value`. Where two such forms are
/// equally near (`-1439172219633947.25` is `…947.2` or `…947.3`), `ryu`
/// and `core` may pick different ones; both read back as `value`.
fn push_f64(line: &mut String, value: f64) {
    if value.is_finite() && (value == 0.0 || (1e-4..1e16).contains(&value.abs())) {
        line.push_str(ryu::Buffer::new().format_finite(value));
    } else {
        let _ = write!(line, "{value:?}");
    }
}

/// An event's fields as JSON members, appended to a line being written.
struct JsonFields<'a>(&'a mut String);

impl JsonFields<'_> {
    /// `,"name":` (names are escaped only when they need it).
    fn key(line: &mut String, name: &str) {
        line.push(',');
        if name.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f) {
            line.push('"');
            line.push_str(name);
            line.push('"');
        } else {
            line.push_str(&serde_json::Value::from(name).to_string());
        }
        line.push(':');
    }

    fn put_str(line: &mut String, name: &str, value: &str) {
        JsonFields::key(line, name);
        // A string always serializes.
        let _ = serde_json::to_writer(StringWriter(line), value);
    }
}

/// `io::Write` into a `String`, for serde_json (which writes only UTF-8).
struct StringWriter<'a>(&'a mut String);

impl std::io::Write for StringWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push_str(std::str::from_utf8(buf).map_err(std::io::Error::other)?);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Visit for JsonFields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        JsonFields::key(self.0, field.name());
        if value.is_finite() {
            self.0.push_str(ryu::Buffer::new().format_finite(value));
        } else {
            self.0.push_str("null");
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        JsonFields::key(self.0, field.name());
        self.0.push_str(itoa::Buffer::new().format(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        JsonFields::key(self.0, field.name());
        self.0.push_str(itoa::Buffer::new().format(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        JsonFields::key(self.0, field.name());
        self.0.push_str(if value { "true" } else { "false" });
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        JsonFields::put_str(self.0, field.name(), value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        JsonFields::put_str(self.0, field.name(), &format!("{value:?}"));
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

    /// The access line's own writer (`AccessFields`) writes what the
    /// general one writes for the same fields.
    #[test]
    fn the_access_line_is_written_as_any_other_line() {
        let text = logged(false, || {
            in_request(|| {
                for (status, elapsed, client) in
                    [(200u16, 1.047, None), (503, 0.0, Some("a \"b\"\x1b\n")), (431, 30000.125, Some("x"))]
                {
                    tracing::info!(target: ACCESS_TARGET, status, elapsed_ms = elapsed, client_request_id = client, "served");
                    tracing::info!(status, elapsed_ms = elapsed, client_request_id = client, "served");
                }
            })
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        for pair in lines.chunks(2) {
            let (fast, general) = (pair[0].split_once(": ").unwrap(), pair[1].split_once(": ").unwrap());
            assert!(fast.0.ends_with("  INFO registrar::access"), "{text}");
            assert!(general.0.ends_with("  INFO registrar::telemetry::tests"), "{text}");
            assert_eq!(fast.1, general.1);
            assert!(fast.1.starts_with("served status="), "{text}");
        }
    }

    /// The cached second gives the same text as tracing-subscriber's clock.
    #[test]
    fn timestamps_are_those_of_tracing_subscriber() {
        use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
        for _ in 0..3 {
            let (mut ours, mut theirs) = (String::new(), String::new());
            push_timestamp(&mut ours);
            SystemTime.format_time(&mut Writer::new(&mut theirs)).unwrap();
            assert_eq!(ours.len(), theirs.len(), "{ours} {theirs}");
            assert!(ours.ends_with('Z'));
            if ours[..20] == theirs[..20] {
                assert!(ours <= theirs, "{ours} {theirs}");
                return;
            }
            // A second ended in between.
        }
        panic!("the seconds never matched");
    }

    proptest::proptest! {
        #[test]
        fn numbers_are_written_as_debug_writes_them(bits in proptest::prelude::any::<u64>(), small in -1e6f64..1e6) {
            for value in [f64::from_bits(bits), small, (small * 1000.0).round() / 1000.0] {
                let mut line = String::new();
                push_f64(&mut line, value);
                let debug = format!("{value:?}");
                // As `{:?}` writes it: as long, in the same notation, and
                // the same number read back (a tie between two equally
                // near shortest forms may pick the other one).
                proptest::prop_assert_eq!(line.len(), debug.len(), "{} {}", line, debug);
                proptest::prop_assert_eq!(line.contains('e'), debug.contains('e'), "{} {}", line, debug);
                let back: f64 = line.parse().expect("a number");
                proptest::prop_assert!(back.to_bits() == value.to_bits() || (back.is_nan() && value.is_nan()), "{} {}", line, debug);
                if line != debug {
                    let theirs: f64 = debug.parse().expect("a number");
                    proptest::prop_assert_eq!(theirs.to_bits(), value.to_bits());
                }
            }
        }
    }
}
