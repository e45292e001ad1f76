//! Structured logs: JSON lines by default, human-readable with `--log-format pretty`; the level comes from
//! `RUST_LOG` when set, else from settings (and can be changed live).
//!
//! A panic is a log line too ([`log_panics`]): Rust's default hook writes its message and backtrace to stderr
//! in many small writes, which land in the middle of other threads' JSON lines and break them (a chaos run
//! lost a `task.done` line that way: it began with a backtrace frame number). One `panic` event per panic,
//! backtrace inside it as a field, keeps every line of the log one parseable record.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::Cell;

use serde_json::Value;
use tracing::Subscriber;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use batos_actors::settings::LogFormat;

/// Changes the active log filter (settings hot reload).
#[derive(Clone)]
pub struct LogHandle {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    from_env: bool,
}

impl LogHandle {
    /// Applies a new level directive unless `RUST_LOG` pins it. Returns whether it changed anything.
    pub fn set_level(&self, level: &str) -> Result<bool, String> {
        if self.from_env {
            return Ok(false);
        }
        let Some(h) = &self.handle else {
            return Ok(false);
        };
        let filter =
            EnvFilter::try_new(level).map_err(|e| format!("invalid log level `{level}`: {e}"))?;
        h.reload(filter).map_err(|e| e.to_string())?;
        Ok(true)
    }
}

/// Installs the global subscriber (to stderr).
pub fn init(format: LogFormat, level: &str) -> LogHandle {
    let from_env = std::env::var("RUST_LOG")
        .map(|v| !v.is_empty())
        .unwrap_or(false);
    let filter = if from_env {
        EnvFilter::from_default_env()
    } else {
        EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(SpreadFields(
                        tracing_subscriber::fmt::format()
                            .json()
                            .flatten_event(true)
                            .with_current_span(false)
                            .with_span_list(false),
                    ))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .pretty()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if result.is_ok() {
        log_panics();
    }
    LogHandle {
        handle: result.is_ok().then_some(handle),
        from_env,
    }
}

/// The JSON line format, with an event's `fields` (the one JSON object an `EventHub` log line carries, see
/// `batos_actors::events`) spread into the line: `{"event":"actor.failed","actor":"root/personas/BRICK",..}`
/// rather than one escaped string, so each line is greppable by what it is about. A member never replaces a
/// key the line has already (`level`, `timestamp`, `message`, `event`, `seq`).
struct SpreadFields(Format<Json>);

impl<S, N> FormatEvent<S, N> for SpreadFields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match spread(&line) {
            Some(spread) => writeln!(writer, "{spread}"),
            None => writer.write_str(&line),
        }
    }
}

/// `line` with the members of its `fields` string (a JSON object) moved to the top level; `None` when it has
/// no such field.
fn spread(line: &str) -> Option<String> {
    if !line.contains("\"fields\":") {
        return None;
    }
    let mut top: serde_json::Map<String, Value> = serde_json::from_str(line).ok()?;
    let Some(Value::String(fields)) = top.remove("fields") else {
        return None;
    };
    let Ok(Value::Object(members)) = serde_json::from_str::<Value>(&fields) else {
        return None;
    };
    for (k, v) in members {
        top.entry(k).or_insert(v);
    }
    serde_json::to_string(&top).ok()
}

thread_local! {
    /// Set while this thread is inside the panic hook: a panic raised by the logging itself goes to the
    /// default hook instead of recursing.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Replaces the panic hook with one that writes each panic as a single `panic` event: the message, where it
/// happened, the thread, and (when `RUST_BACKTRACE` asks for one) the backtrace as one escaped field.
fn log_panics() {
    let fallback = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if IN_HOOK.with(|f| f.replace(true)) {
            fallback(info);
            return;
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(a panic without a message)");
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("(unnamed)");
        let backtrace = Backtrace::capture();
        if backtrace.status() == BacktraceStatus::Captured {
            tracing::error!(event = "panic", panic = message, location, thread, backtrace = %backtrace, "a thread panicked");
        } else {
            tracing::error!(
                event = "panic",
                panic = message,
                location,
                thread,
                "a thread panicked"
            );
        }
        IN_HOOK.with(|f| f.set(false));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_fields_are_spread_into_its_line_and_never_replace_its_own() {
        let line = r#"{"timestamp":"t","level":"ERROR","event":"actor.failed","seq":3,"fields":"{\"actor\":\"root/personas/BRICK\",\"reason\":\"boom\",\"level\":\"x\"}","message":"actor failed"}"#;
        let out: Value = serde_json::from_str(&spread(line).unwrap()).unwrap();
        assert_eq!(out["actor"], "root/personas/BRICK");
        assert_eq!(out["reason"], "boom");
        assert_eq!(
            out["level"], "ERROR",
            "a member never replaces the line's own key"
        );
        assert_eq!(out["seq"], 3);
        assert!(out.get("fields").is_none());
        // A line without `fields` (every log line that is not an event's) is written as it came.
        assert_eq!(spread(r#"{"level":"INFO","event":"image.booted"}"#), None);
    }
}
