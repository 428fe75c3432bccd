//! The two line formats, as `tracing_subscriber` event formatters. Both end a line
//! written inside a valid OpenTelemetry span context (the one the runtime attaches to
//! the call being served) with its `trace_id` and `span_id`, whether or not `tracing`
//! spans are open.

use std::fmt;

use opentelemetry::trace::{SpanContext, TraceContextExt};
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::LogFormat;

/// The OpenTelemetry span context current on this thread, if it is valid.
fn current_span_context() -> Option<SpanContext> {
    let sc = opentelemetry::Context::map_current(|cx| cx.span().span_context().clone());
    sc.is_valid().then_some(sc)
}

/// A line format chosen at run time (one layer type for both).
#[derive(Debug)]
pub(crate) enum LineFormat {
    /// [`HumanFormat`].
    Human(HumanFormat),
    /// [`JsonFormat`].
    Json(JsonFormat),
}

impl From<LogFormat> for LineFormat {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Human => LineFormat::Human(HumanFormat::default()),
            LogFormat::Json => LineFormat::Json(JsonFormat::default()),
        }
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        match self {
            LineFormat::Human(f) => f.format_event(ctx, writer, event),
            LineFormat::Json(f) => f.format_event(ctx, writer, event),
        }
    }
}

/// `2026-12-01T23:59:59.123456Z  INFO span1:span2: target: message key=value
/// trace_id=… span_id=…`, the level coloured when the writer takes ANSI escapes.
#[derive(Debug, Default)]
pub(crate) struct HumanFormat {
    timer: SystemTime,
}

/// The escape that colours `level` as tracing-subscriber's own format does.
fn colour(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "\x1b[35m",
        Level::DEBUG => "\x1b[34m",
        Level::INFO => "\x1b[32m",
        Level::WARN => "\x1b[33m",
        Level::ERROR => "\x1b[31m",
    }
}

impl<S, N> FormatEvent<S, N> for HumanFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ansi = writer.has_ansi_escapes();
        let level = event.metadata().level();
        if ansi {
            writer.write_str("\x1b[2m")?;
            self.timer.format_time(&mut writer)?;
            write!(
                writer,
                "\x1b[0m {}{:>5}\x1b[0m ",
                colour(level),
                level.as_str()
            )?;
        } else {
            self.timer.format_time(&mut writer)?;
            write!(writer, " {:>5} ", level.as_str())?;
        }
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
                writer.write_char(':')?;
                seen = true;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        write!(writer, "{}: ", Target::of(event))?;
        ctx.format_fields(writer.by_ref(), event)?;
        if let Some(sc) = current_span_context() {
            write!(
                writer,
                " trace_id={} span_id={}",
                sc.trace_id(),
                sc.span_id()
            )?;
        }
        writeln!(writer)
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, `message`, `fields`
/// (numbers and booleans kept as such), then `trace_id` and `span_id` inside a span
/// context. Valid JSON whatever the message holds.
#[derive(Debug, Default)]
pub(crate) struct JsonFormat {
    timer: SystemTime,
}

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        self.timer.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let target = fields
            .log_target
            .take()
            .unwrap_or_else(|| event.metadata().target().to_string());
        // Written key by key (each value by serde_json) to keep this order.
        let json = |v: Value| serde_json::to_string(&v).map_err(|_| fmt::Error);
        write!(
            writer,
            "{{\"timestamp\":{},\"level\":{},\"target\":{},\"message\":{},\"fields\":{}",
            json(timestamp.into())?,
            json(event.metadata().level().as_str().into())?,
            json(target.into())?,
            json(fields.message.unwrap_or_default().into())?,
            json(Value::Object(fields.fields))?,
        )?;
        if let Some(sc) = current_span_context() {
            write!(
                writer,
                ",\"trace_id\":\"{}\",\"span_id\":\"{}\"",
                sc.trace_id(),
                sc.span_id()
            )?;
        }
        writeln!(writer, "}}")
    }
}

/// The target to show: the `log` crate's own for records bridged from it (whose
/// metadata says `log`), else the event's.
struct Target(String);

impl Target {
    fn of(event: &Event<'_>) -> Target {
        let mut log_target = LogTarget(None);
        event.record(&mut log_target);
        Target(
            log_target
                .0
                .unwrap_or_else(|| event.metadata().target().to_string()),
        )
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Visits only the `log.target` field.
struct LogTarget(Option<String>);

impl Visit for LogTarget {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "log.target" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn fmt::Debug) {}
}

/// An event's fields as JSON: the message apart, `log.*` metadata left out.
#[derive(Default)]
struct JsonFields {
    message: Option<String>,
    log_target: Option<String>,
    fields: serde_json::Map<String, Value>,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => {
                self.message = Some(match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                });
            }
            "log.target" => {
                if let Value::String(s) = value {
                    self.log_target = Some(s);
                }
            }
            name if name.starts_with("log.") => {}
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                self.fields.insert(name.to_string(), value);
            }
        }
    }
}

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities have no JSON number: keep them as text.
        let v = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, v);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = i64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, v);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, v);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}
