//! Logging: the global `tracing` subscriber of a binary — a filter (`--log-level`), one
//! line per event on stderr, human or JSON ([`LogFormat`]), each carrying the
//! `trace_id` and `span_id` of the OpenTelemetry context it was written in — and, when
//! logs are exported, the bridge that turns the same events into OTLP log records.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::{Telemetry, TelemetryError};

mod format;
#[cfg(test)]
mod tests;

use format::LineFormat;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-12-01T23:59:59.123456Z  INFO target: message key=value trace_id=… span_id=…`
    #[default]
    Human,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`, `fields`,
    /// and `trace_id`/`span_id` inside a span context.
    Json,
}

impl FromStr for LogFormat {
    type Err = TelemetryError;

    /// `human` (or `text`) and `json`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "human" | "text" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(TelemetryError::Config(format!(
                "log format {other:?}: use human (or text) or json"
            ))),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        })
    }
}

/// Installs the global subscriber for a process without telemetry: `filter` (an
/// `EnvFilter` directive such as `info,grain=debug`) and lines in `format` on stderr.
/// A second call (or another subscriber already installed) is left alone.
pub fn init_logging(filter: &str, format: LogFormat) -> Result<(), TelemetryError> {
    install(filter, format, None)
}

impl Telemetry {
    /// Like [`init_logging`], and when logs are exported, every event also becomes an
    /// OTLP log record (with the trace context it was emitted in). Call after
    /// [`Telemetry::install`], then [`Telemetry::log_summary`].
    pub fn init_logging(&self, filter: &str, format: LogFormat) -> Result<(), TelemetryError> {
        install(filter, format, self.logger_provider.as_ref())
    }
}

/// Whether `target` is a crate the export itself runs on (their events stay on
/// stderr and are not exported).
fn is_export_machinery(target: &str) -> bool {
    ["hyper", "reqwest", "h2", "opentelemetry", "tower", "rustls"]
        .iter()
        .any(|c| {
            target == *c
                || target
                    .strip_prefix(c)
                    .is_some_and(|rest| rest.starts_with("::") || rest.starts_with('_'))
        })
}

/// The filter, the stderr layer in `format`, and the bridge to `logs` if any.
fn install(
    filter: &str,
    format: LogFormat,
    logs: Option<&SdkLoggerProvider>,
) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| TelemetryError::Config(format!("--log-level {filter:?}: {e}")))?;
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .event_format(LineFormat::from(format));
    // The export's own HTTP stack and the SDK log while exporting: exported too, each
    // export would make records of its own, without end at debug level.
    let exported = logs.map(|p| {
        OpenTelemetryTracingBridge::new(p)
            .with_filter(filter_fn(|m| !is_export_machinery(m.target())))
    });
    // Already installed (a second call, or a test harness): keep the one there.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .with(exported)
        .try_init();
    Ok(())
}
