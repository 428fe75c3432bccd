//! Telemetry settings: the public types, and the checks every resolved configuration
//! passes. The settings are resolved in layers — defaults, then the New Relic preset,
//! then the standard `OTEL_*` environment variables, then command-line overrides —
//! by [`TelemetryConfig::from_lookup`] (in `resolve`); the variables themselves are
//! read and parsed in `env`.

use std::fmt;
use std::time::Duration;

use crate::TelemetryError;
use crate::redact::redact_url;

pub mod env;
mod resolve;

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
    /// The metrics endpoint (used as is).
    pub endpoint: Option<String>,
    /// Extra headers, `key=value`.
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

/// Everything the exporter needs. `Debug` never shows header values.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryConfig {
    /// The full metrics URL; `None` means no export.
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
}

impl TelemetryConfig {
    /// Sets header `key` (case-insensitively), replacing any earlier value.
    fn set_header(&mut self, key: String, value: String) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
        self.headers.push((key, HeaderValue(value)));
    }

    /// Checks the settings; the message names the wrong one.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        if let Some(e) = &self.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(TelemetryError::Config(format!(
                "metrics endpoint {:?} must start with http:// or https://",
                redact_url(e)
            )));
        }
        if self.interval < Duration::from_millis(100) {
            return Err(TelemetryError::Config(format!(
                "export interval {:?} is below 100ms",
                self.interval
            )));
        }
        for (k, v) in &self.headers {
            if k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                return Err(TelemetryError::Config(format!(
                    "header name {k:?} is not a valid HTTP header name"
                )));
            }
            if v.0.bytes().any(|b| b < 0x20 || b == 0x7f) {
                return Err(TelemetryError::Config(format!(
                    "the value of header {k:?} has control characters"
                )));
            }
        }
        Ok(())
    }

    /// The value of header `name`, if set (for tests and diagnostics; do not log it).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.0.as_str())
    }
}
