//! Telemetry settings: the public types, and the checks every resolved configuration
//! passes. The settings are resolved in layers — defaults, then the New Relic preset,
//! then the standard `OTEL_*` environment variables, then command-line overrides —
//! by [`TelemetryConfig::from_lookup`] (in `resolve`); the export variables are read
//! and parsed in `env`, the SDK ones (sampler, propagators, batching) in `sdk`.

use std::fmt;
use std::time::Duration;

use crate::TelemetryError;
use crate::redact::redact_url;

pub mod env;
mod resolve;
mod sdk;
#[cfg(test)]
mod tests;

/// Payload compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip (the default).
    Gzip,
    /// zstd.
    Zstd,
    /// No compression.
    None,
}

/// The temporality asked of sums and histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemporalityPreference {
    /// Totals since start (the OTel default).
    Cumulative,
    /// Changes since the last export (New Relic's preference).
    Delta,
    /// Delta for synchronous counters and histograms only.
    LowMemory,
}

/// New Relic's OTLP regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewRelicRegion {
    /// `https://otlp.nr-data.net:4318`
    Us,
    /// `https://otlp.eu01.nr-data.net:4318`
    Eu,
}

impl NewRelicRegion {
    /// The metrics endpoint of the region.
    pub fn metrics_endpoint(self) -> &'static str {
        match self {
            NewRelicRegion::Us => "https://otlp.nr-data.net:4318/v1/metrics",
            NewRelicRegion::Eu => "https://otlp.eu01.nr-data.net:4318/v1/metrics",
        }
    }

    /// The traces endpoint of the region.
    pub fn traces_endpoint(self) -> &'static str {
        match self {
            NewRelicRegion::Us => "https://otlp.nr-data.net:4318/v1/traces",
            NewRelicRegion::Eu => "https://otlp.eu01.nr-data.net:4318/v1/traces",
        }
    }

    /// The logs endpoint of the region.
    pub fn logs_endpoint(self) -> &'static str {
        match self {
            NewRelicRegion::Us => "https://otlp.nr-data.net:4318/v1/logs",
            NewRelicRegion::Eu => "https://otlp.eu01.nr-data.net:4318/v1/logs",
        }
    }
}

/// The export settings of one signal (traces or logs; the metrics ones are the
/// top-level fields of [`TelemetryConfig`]). `Debug` never shows header values, and
/// shows the endpoint redacted.
#[derive(Clone, PartialEq)]
pub struct SignalConfig {
    /// The full URL, used as is; `None` means this signal is not exported.
    pub endpoint: Option<String>,
    /// Headers sent with every export of this signal.
    pub headers: Vec<(String, HeaderValue)>,
    /// Payload compression.
    pub compression: Compression,
    /// The limit of one export, retries included.
    pub timeout: Duration,
}

impl fmt::Debug for SignalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalConfig")
            .field("endpoint", &self.endpoint.as_deref().map(redact_url))
            .field("headers", &self.headers)
            .field("compression", &self.compression)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("endpoint", &self.endpoint.as_deref().map(redact_url))
            .field("headers", &self.headers)
            .field("compression", &self.compression)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("temporality", &self.temporality)
            .field("service_name", &self.service_name)
            .field("resource_attributes", &self.resource_attributes)
            .field("new_relic", &self.new_relic)
            .field("traces", &self.traces)
            .field("logs", &self.logs)
            .field("sampler", &self.sampler)
            .field("propagators", &self.propagators)
            .field("span_batch", &self.span_batch)
            .field("log_batch", &self.log_batch)
            .finish()
    }
}

impl SignalConfig {
    /// The value of header `name`, if set (for tests and diagnostics; do not log it).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// Which spans are sampled (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerConfig {
    /// Every span (`always_on`).
    AlwaysOn,
    /// No span (`always_off`).
    AlwaysOff,
    /// This fraction of traces, by trace id (`traceidratio`).
    TraceIdRatio(f64),
    /// The parent's decision; roots sampled (`parentbased_always_on`, the default).
    ParentBasedAlwaysOn,
    /// The parent's decision; roots not sampled (`parentbased_always_off`).
    ParentBasedAlwaysOff,
    /// The parent's decision; this fraction of roots (`parentbased_traceidratio`).
    ParentBasedTraceIdRatio(f64),
}

/// A context propagation format (`OTEL_PROPAGATORS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropagatorKind {
    /// W3C Trace Context (`traceparent`, `tracestate`): `tracecontext`.
    TraceContext,
    /// W3C Baggage: `baggage`.
    Baggage,
    /// B3 single header (`b3`).
    B3,
    /// B3 multiple headers (`X-B3-*`): `b3multi`.
    B3Multi,
    /// No propagation: `none`.
    None,
}

/// Settings of a batch processor (`OTEL_BSP_*` for spans, `OTEL_BLRP_*` for logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    /// The delay between two exports.
    pub schedule_delay: Duration,
    /// How many items wait at most; more are dropped.
    pub max_queue_size: usize,
    /// The most items in one export (at most `max_queue_size`).
    pub max_export_batch_size: usize,
    /// The limit of one export. Parsed and checked, but the SDK's thread-based batch
    /// processors do not honour it (its builder setter is behind an experimental
    /// feature); the exporter's own timeout bounds an export.
    pub export_timeout: Duration,
}

impl BatchSettings {
    /// The span processor defaults of the specification: 5 s, 2048, 512, 30 s.
    pub const SPANS: BatchSettings = BatchSettings {
        schedule_delay: Duration::from_millis(5000),
        max_queue_size: 2048,
        max_export_batch_size: 512,
        export_timeout: Duration::from_millis(30_000),
    };

    /// The log record processor defaults of the specification: 1 s, 2048, 512, 30 s.
    pub const LOGS: BatchSettings = BatchSettings {
        schedule_delay: Duration::from_millis(1000),
        max_queue_size: 2048,
        max_export_batch_size: 512,
        export_timeout: Duration::from_millis(30_000),
    };
}

/// A header value that may be a secret: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderValue(pub(crate) String);

impl fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Values given on the command line; they win over the environment. `Debug` shows
/// header names only.
#[derive(Clone, Default)]
pub struct Overrides {
    /// The OTLP/HTTP base URL for every signal: metrics go to `{base}/v1/metrics`,
    /// traces to `{base}/v1/traces`, logs to `{base}/v1/logs`. A URL that already ends
    /// in one of these paths has it cut off first, so a metrics URL
    /// (`http://host:4318/v1/metrics`) works too.
    pub endpoint: Option<String>,
    /// Extra headers, `key=value`, sent with every signal.
    pub headers: Vec<String>,
    /// The export interval.
    pub interval: Option<Duration>,
    /// `service.name`.
    pub service_name: Option<String>,
    /// The New Relic region.
    pub new_relic_region: Option<String>,
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .headers
            .iter()
            .map(|h| h.split('=').next().unwrap_or(""))
            .collect();
        f.debug_struct("Overrides")
            .field("endpoint", &self.endpoint.as_deref().map(redact_url))
            .field("headers", &names)
            .field("interval", &self.interval)
            .field("service_name", &self.service_name)
            .field("new_relic_region", &self.new_relic_region)
            .finish()
    }
}

/// Everything the exporters need. The first fields are the metrics signal's; traces
/// and logs have theirs in [`SignalConfig`]s. `Debug` never shows header values, and
/// shows endpoints redacted.
#[derive(Clone, PartialEq)]
pub struct TelemetryConfig {
    /// The full metrics URL; `None` means no metrics export.
    pub endpoint: Option<String>,
    /// Headers sent with every export.
    pub headers: Vec<(String, HeaderValue)>,
    /// Payload compression.
    pub compression: Compression,
    /// How often metrics are exported.
    pub interval: Duration,
    /// The limit of one export, retries included.
    pub timeout: Duration,
    /// Temporality of sums and histograms.
    pub temporality: TemporalityPreference,
    /// `service.name`, if configured (else the role).
    pub service_name: Option<String>,
    /// Extra resource attributes.
    pub resource_attributes: Vec<(String, String)>,
    /// Whether the New Relic preset applied.
    pub new_relic: bool,
    /// The traces signal.
    pub traces: SignalConfig,
    /// The logs signal.
    pub logs: SignalConfig,
    /// Which spans are sampled.
    pub sampler: SamplerConfig,
    /// How context is passed on in calls, in order; `[None]` passes nothing on.
    pub propagators: Vec<PropagatorKind>,
    /// The batch span processor.
    pub span_batch: BatchSettings,
    /// The batch log record processor.
    pub log_batch: BatchSettings,
}

/// Sets header `key` (case-insensitively) in `headers`, replacing any earlier value.
pub(crate) fn set_header(headers: &mut Vec<(String, HeaderValue)>, key: String, value: String) {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
    headers.push((key, HeaderValue(value)));
}

fn find_header<'a>(headers: &'a [(String, HeaderValue)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.0.as_str())
}

/// Checks one signal's endpoint and headers; `signal` names it in the message.
fn validate_signal(
    signal: &str,
    endpoint: Option<&str>,
    headers: &[(String, HeaderValue)],
) -> Result<(), TelemetryError> {
    if let Some(e) = endpoint
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        return Err(TelemetryError::Config(format!(
            "{signal} endpoint {:?} must start with http:// or https://",
            redact_url(e)
        )));
    }
    for (k, v) in headers {
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(TelemetryError::Config(format!(
                "{signal} header name {k:?} is not a valid HTTP header name"
            )));
        }
        if v.0.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(TelemetryError::Config(format!(
                "the value of {signal} header {k:?} has control characters"
            )));
        }
    }
    Ok(())
}

impl TelemetryConfig {
    /// Checks the settings; the message names the wrong one.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        validate_signal("metrics", self.endpoint.as_deref(), &self.headers)?;
        validate_signal(
            "traces",
            self.traces.endpoint.as_deref(),
            &self.traces.headers,
        )?;
        validate_signal("logs", self.logs.endpoint.as_deref(), &self.logs.headers)?;
        if self.interval < Duration::from_millis(100) {
            return Err(TelemetryError::Config(format!(
                "export interval {:?} is below 100ms",
                self.interval
            )));
        }
        Ok(())
    }

    /// The value of metrics header `name`, if set (for tests and diagnostics; do not
    /// log it).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The metrics settings in the shape of the other signals (a copy).
    pub fn metrics(&self) -> SignalConfig {
        SignalConfig {
            endpoint: self.endpoint.clone(),
            headers: self.headers.clone(),
            compression: self.compression,
            timeout: self.timeout,
        }
    }

    /// Whether any signal is exported.
    pub fn exports_anything(&self) -> bool {
        self.endpoint.is_some() || self.traces.endpoint.is_some() || self.logs.endpoint.is_some()
    }
}
