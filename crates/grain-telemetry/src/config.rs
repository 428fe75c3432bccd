//! Telemetry settings: command-line overrides over the standard `OTEL_*` environment
//! variables over the New Relic preset over defaults.

use std::fmt;
use std::time::Duration;

use crate::TelemetryError;

/// The environment variables read, as constants.
pub mod env {
    /// Base endpoint; `/v1/metrics` is appended.
    pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    /// Metrics endpoint, used as is.
    pub const OTLP_METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
    /// `key=value,key2=value2` headers (values percent-decoded).
    pub const OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
    /// Metrics-only headers, over `OTEL_EXPORTER_OTLP_HEADERS`.
    pub const OTLP_METRICS_HEADERS: &str = "OTEL_EXPORTER_OTLP_METRICS_HEADERS";
    /// `gzip`, `zstd` or `none`.
    pub const OTLP_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";
    /// Metrics-only compression.
    pub const OTLP_METRICS_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION";
    /// Export timeout in milliseconds.
    pub const OTLP_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
    /// Metrics-only export timeout, over `OTEL_EXPORTER_OTLP_TIMEOUT`.
    pub const OTLP_METRICS_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT";
    /// Must be `http/protobuf` if set.
    pub const OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
    /// Metrics-only protocol.
    pub const OTLP_METRICS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL";
    /// `cumulative`, `delta` or `lowmemory`.
    pub const TEMPORALITY: &str = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";
    /// Export interval in milliseconds.
    pub const EXPORT_INTERVAL: &str = "OTEL_METRIC_EXPORT_INTERVAL";
    /// `service.name`.
    pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
    /// `key=value,…` resource attributes.
    pub const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
    /// `true` turns telemetry off.
    pub const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
    /// A New Relic ingest license key: turns on the New Relic preset.
    pub const NEW_RELIC_LICENSE_KEY: &str = "NEW_RELIC_LICENSE_KEY";
    /// `us` (default) or `eu`.
    pub const NEW_RELIC_REGION: &str = "NEW_RELIC_REGION";
}

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

    fn parse(s: &str) -> Result<Self, TelemetryError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "us" | "" => Ok(NewRelicRegion::Us),
            "eu" => Ok(NewRelicRegion::Eu),
            other => Err(TelemetryError::Config(format!(
                "{}: unknown New Relic region {other:?} (use us or eu)",
                env::NEW_RELIC_REGION
            ))),
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
            .field(
                "endpoint",
                &self.endpoint.as_deref().map(crate::redact::redact_url),
            )
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

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `k=v,k2=v2` (W3C baggage-like, values percent-decoded). Empty items are
/// skipped; an item without `=` is an error naming `var`.
fn parse_pairs(var: &str, s: &str) -> Result<Vec<(String, String)>, TelemetryError> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| {
            TelemetryError::Config(format!(
                "{var}: {} is not key=value",
                crate::redact::redact_item(item)
            ))
        })?;
        let k = percent_decode(k.trim());
        if k.is_empty() {
            return Err(TelemetryError::Config(format!(
                "{var}: an item has an empty key"
            )));
        }
        out.push((k, percent_decode(v.trim())));
    }
    Ok(out)
}

fn millis(var: &str, s: &str) -> Result<Duration, TelemetryError> {
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| {
            TelemetryError::Config(format!(
                "{var}: {s:?} is not a positive number of milliseconds"
            ))
        })
}

impl TelemetryConfig {
    /// Reads the process environment under `overrides`.
    pub fn from_env(overrides: &Overrides) -> Result<Self, TelemetryError> {
        Self::from_lookup(|k| std::env::var(k).ok(), overrides)
    }

    /// Reads settings through `lookup` (an environment) under `overrides`.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Self, TelemetryError> {
        let var = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut config = TelemetryConfig {
            endpoint: None,
            headers: Vec::new(),
            compression: Compression::Gzip,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            temporality: TemporalityPreference::Cumulative,
            service_name: None,
            resource_attributes: Vec::new(),
            new_relic: false,
        };
        if var(env::SDK_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(config);
        }
        for name in [env::OTLP_METRICS_PROTOCOL, env::OTLP_PROTOCOL] {
            if let Some(p) = var(name) {
                if p != "http/protobuf" {
                    return Err(TelemetryError::Config(format!(
                        "{name}={p}: only http/protobuf is supported (point it at the collector's OTLP/HTTP port, usually 4318)"
                    )));
                }
                break;
            }
        }

        // The New Relic preset first; everything below may override it.
        let license = var(env::NEW_RELIC_LICENSE_KEY);
        let region = match overrides
            .new_relic_region
            .as_deref()
            .map(str::to_string)
            .or_else(|| var(env::NEW_RELIC_REGION))
        {
            Some(r) => NewRelicRegion::parse(&r)?,
            None => NewRelicRegion::Us,
        };
        if let Some(key) = &license {
            config.new_relic = true;
            config.endpoint = Some(region.metrics_endpoint().to_string());
            config
                .headers
                .push(("api-key".into(), HeaderValue(key.clone())));
            config.temporality = TemporalityPreference::Delta;
        }

        // Standard variables.
        if let Some(base) = var(env::OTLP_ENDPOINT) {
            config.endpoint = Some(format!("{}/v1/metrics", base.trim_end_matches('/')));
        }
        if let Some(e) = var(env::OTLP_METRICS_ENDPOINT) {
            config.endpoint = Some(e);
        }
        let mut headers = Vec::new();
        if let Some(h) = var(env::OTLP_HEADERS) {
            headers.extend(parse_pairs(env::OTLP_HEADERS, &h)?);
        }
        if let Some(h) = var(env::OTLP_METRICS_HEADERS) {
            headers.extend(parse_pairs(env::OTLP_METRICS_HEADERS, &h)?);
        }
        for (k, v) in headers {
            config.set_header(k, v);
        }
        if let Some(c) = var(env::OTLP_METRICS_COMPRESSION).or_else(|| var(env::OTLP_COMPRESSION)) {
            config.compression = match c.to_ascii_lowercase().as_str() {
                "gzip" => Compression::Gzip,
                "zstd" => Compression::Zstd,
                "none" => Compression::None,
                other => {
                    return Err(TelemetryError::Config(format!(
                        "{}: unknown compression {other:?} (use gzip, zstd or none)",
                        env::OTLP_COMPRESSION
                    )));
                }
            };
        }
        if let Some(t) = var(env::OTLP_TIMEOUT) {
            config.timeout = millis(env::OTLP_TIMEOUT, &t)?;
        }
        if let Some(t) = var(env::OTLP_METRICS_TIMEOUT) {
            config.timeout = millis(env::OTLP_METRICS_TIMEOUT, &t)?;
        }
        if let Some(i) = var(env::EXPORT_INTERVAL) {
            config.interval = millis(env::EXPORT_INTERVAL, &i)?;
        }
        if let Some(t) = var(env::TEMPORALITY) {
            config.temporality = match t.to_ascii_lowercase().as_str() {
                "cumulative" => TemporalityPreference::Cumulative,
                "delta" => TemporalityPreference::Delta,
                "lowmemory" => TemporalityPreference::LowMemory,
                other => {
                    return Err(TelemetryError::Config(format!(
                        "{}: unknown temporality {other:?} (use cumulative, delta or lowmemory)",
                        env::TEMPORALITY
                    )));
                }
            };
        }
        if let Some(r) = var(env::RESOURCE_ATTRIBUTES) {
            config.resource_attributes = parse_pairs(env::RESOURCE_ATTRIBUTES, &r)?;
            if let Some((_, name)) = config
                .resource_attributes
                .iter()
                .find(|(k, _)| k == "service.name")
            {
                config.service_name = Some(name.clone());
            }
        }
        if let Some(n) = var(env::SERVICE_NAME) {
            config.service_name = Some(n);
        }

        // Command-line overrides.
        if let Some(e) = overrides.endpoint.clone().filter(|e| !e.is_empty()) {
            config.endpoint = Some(e);
        }
        for h in &overrides.headers {
            for (k, v) in parse_pairs("--otlp-header", h)? {
                config.set_header(k, v);
            }
        }
        if let Some(i) = overrides.interval {
            config.interval = i;
        }
        if let Some(n) = overrides.service_name.clone().filter(|n| !n.is_empty()) {
            config.service_name = Some(n);
        }
        config.validate()?;
        Ok(config)
    }

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
                crate::redact::redact_url(e)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(
        vars: &[(&str, &str)],
        overrides: &Overrides,
    ) -> Result<TelemetryConfig, TelemetryError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TelemetryConfig::from_lookup(|k| map.get(k).cloned(), overrides)
    }

    #[test]
    fn no_endpoint_means_no_export() {
        let c = config(&[], &Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.endpoint, None);
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.compression, Compression::Gzip);
    }

    #[test]
    fn the_base_endpoint_gets_v1_metrics_and_the_metrics_endpoint_is_used_as_is() {
        let c = config(
            &[(env::OTLP_ENDPOINT, "http://collector:4318/")],
            &Overrides::default(),
        );
        assert_eq!(
            c.ok().and_then(|c| c.endpoint).as_deref(),
            Some("http://collector:4318/v1/metrics")
        );
        let c = config(
            &[
                (env::OTLP_ENDPOINT, "http://a:4318"),
                (env::OTLP_METRICS_ENDPOINT, "http://b:9/custom"),
            ],
            &Overrides::default(),
        );
        assert_eq!(
            c.ok().and_then(|c| c.endpoint).as_deref(),
            Some("http://b:9/custom")
        );
    }

    #[test]
    fn the_new_relic_preset_gives_endpoint_api_key_and_delta() {
        let c = config(
            &[(env::NEW_RELIC_LICENSE_KEY, "nr-key-123")],
            &Overrides::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.endpoint.as_deref(),
            Some("https://otlp.nr-data.net:4318/v1/metrics")
        );
        assert_eq!(c.header("api-key"), Some("nr-key-123"));
        assert_eq!(c.temporality, TemporalityPreference::Delta);
        assert!(c.new_relic);
        let eu = config(
            &[
                (env::NEW_RELIC_LICENSE_KEY, "k"),
                (env::NEW_RELIC_REGION, "EU"),
            ],
            &Overrides::default(),
        );
        assert_eq!(
            eu.ok().and_then(|c| c.endpoint).as_deref(),
            Some("https://otlp.eu01.nr-data.net:4318/v1/metrics")
        );
        assert!(
            config(
                &[
                    (env::NEW_RELIC_LICENSE_KEY, "k"),
                    (env::NEW_RELIC_REGION, "mars")
                ],
                &Overrides::default()
            )
            .is_err()
        );
    }

    #[test]
    fn flags_win_over_environment_which_wins_over_the_preset() {
        let vars = [
            (env::NEW_RELIC_LICENSE_KEY, "k"),
            (env::OTLP_ENDPOINT, "http://env:4318"),
            (env::TEMPORALITY, "cumulative"),
            (env::EXPORT_INTERVAL, "5000"),
            (env::OTLP_HEADERS, "x-team=blue,api-key=from%20env"),
        ];
        let o = Overrides {
            endpoint: Some("http://flag:1/v1/metrics".into()),
            headers: vec!["x-team=red".into()],
            interval: Some(Duration::from_millis(250)),
            ..Overrides::default()
        };
        let c = config(&vars, &o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.endpoint.as_deref(), Some("http://flag:1/v1/metrics"));
        assert_eq!(c.header("x-team"), Some("red"));
        assert_eq!(c.header("api-key"), Some("from env"));
        assert_eq!(c.temporality, TemporalityPreference::Cumulative);
        assert_eq!(c.interval, Duration::from_millis(250));
    }

    #[test]
    fn bad_values_are_errors_that_name_the_variable() {
        let cases: &[(&str, &str, &str)] = &[
            (env::OTLP_PROTOCOL, "grpc", "http/protobuf"),
            (env::OTLP_COMPRESSION, "brotli", env::OTLP_COMPRESSION),
            (env::EXPORT_INTERVAL, "soon", env::EXPORT_INTERVAL),
            (env::TEMPORALITY, "sometimes", env::TEMPORALITY),
            (env::OTLP_HEADERS, "novalue", env::OTLP_HEADERS),
            (env::OTLP_ENDPOINT, "collector:4318", "http://"),
        ];
        for (k, v, named) in cases {
            let e = config(&[(k, v)], &Overrides::default())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(named), "{k}={v}: {e}");
        }
    }

    #[test]
    fn header_values_never_show_in_debug_or_errors() {
        let c = config(
            &[(env::NEW_RELIC_LICENSE_KEY, "very-secret-license")],
            &Overrides::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{c:?}").contains("very-secret"));
        let e = config(
            &[(env::OTLP_HEADERS, "api-keyvery-secret-license")],
            &Overrides::default(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(!e.contains("secret-license"), "{e}");
    }

    #[test]
    fn service_name_and_resource_attributes_follow_the_spec() {
        let c = config(
            &[
                (
                    env::RESOURCE_ATTRIBUTES,
                    "service.name=a,deployment.environment=dev",
                ),
                (env::SERVICE_NAME, "b"),
            ],
            &Overrides::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.service_name.as_deref(), Some("b"));
        assert!(
            c.resource_attributes
                .contains(&("deployment.environment".into(), "dev".into()))
        );
        let off = config(
            &[
                (env::SDK_DISABLED, "true"),
                (env::NEW_RELIC_LICENSE_KEY, "k"),
            ],
            &Overrides::default(),
        );
        assert_eq!(off.ok().and_then(|c| c.endpoint), None);
    }
}
