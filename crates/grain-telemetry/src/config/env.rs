//! The environment variables read (public constants, the SDK ones parsed in `sdk`),
//! and how the export ones are read — the same way for each signal, its own variable
//! over the general one: pure functions over a lookup, so tests need no process
//! environment. Nothing here knows the order of the layers; `resolve` applies what
//! these functions return.

use std::time::Duration;

use super::{Compression, NewRelicRegion, TemporalityPreference};
use crate::TelemetryError;
use crate::redact::redact_item;

/// Base endpoint for every signal; `/v1/metrics`, `/v1/traces` or `/v1/logs` is
/// appended.
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Metrics endpoint, used as is.
pub const OTLP_METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
/// Traces endpoint, used as is.
pub const OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// Logs endpoint, used as is.
pub const OTLP_LOGS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT";
/// `key=value,key2=value2` headers for every signal (values percent-decoded).
pub const OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// Metrics-only headers, over `OTEL_EXPORTER_OTLP_HEADERS`.
pub const OTLP_METRICS_HEADERS: &str = "OTEL_EXPORTER_OTLP_METRICS_HEADERS";
/// Traces-only headers, over `OTEL_EXPORTER_OTLP_HEADERS`.
pub const OTLP_TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
/// Logs-only headers, over `OTEL_EXPORTER_OTLP_HEADERS`.
pub const OTLP_LOGS_HEADERS: &str = "OTEL_EXPORTER_OTLP_LOGS_HEADERS";
/// `gzip`, `zstd` or `none`.
pub const OTLP_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";
/// Metrics-only compression.
pub const OTLP_METRICS_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION";
/// Traces-only compression.
pub const OTLP_TRACES_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION";
/// Logs-only compression.
pub const OTLP_LOGS_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION";
/// Export timeout in milliseconds.
pub const OTLP_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
/// Metrics-only export timeout, over `OTEL_EXPORTER_OTLP_TIMEOUT`.
pub const OTLP_METRICS_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT";
/// Traces-only export timeout, over `OTEL_EXPORTER_OTLP_TIMEOUT`.
pub const OTLP_TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
/// Logs-only export timeout, over `OTEL_EXPORTER_OTLP_TIMEOUT`.
pub const OTLP_LOGS_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT";
/// Must be `http/protobuf` if set.
pub const OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// Metrics-only protocol.
pub const OTLP_METRICS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL";
/// Traces-only protocol.
pub const OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
/// Logs-only protocol.
pub const OTLP_LOGS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL";
/// `otlp` (default) or `none`.
pub const METRICS_EXPORTER: &str = "OTEL_METRICS_EXPORTER";
/// `otlp` (default) or `none`.
pub const TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
/// `otlp` (default) or `none`.
pub const LOGS_EXPORTER: &str = "OTEL_LOGS_EXPORTER";
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
/// `always_on`, `always_off`, `traceidratio`, `parentbased_always_on` (default),
/// `parentbased_always_off` or `parentbased_traceidratio`.
pub const TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
/// The ratio of the `*traceidratio` samplers, in [0, 1] (default 1).
pub const TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
/// Comma list of `tracecontext`, `baggage`, `b3`, `b3multi`, `none` (default
/// `tracecontext,baggage`).
pub const PROPAGATORS: &str = "OTEL_PROPAGATORS";
/// Delay between two span exports, in milliseconds (default 5000).
pub const BSP_SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
/// Most spans waiting for export (default 2048); more are dropped and counted.
pub const BSP_MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
/// Most spans in one export (default 512, at most the queue size).
pub const BSP_MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";
/// The specification's limit of one span export, in milliseconds (default 30000):
/// checked, but the SDK's thread-based processor does not apply it; each export is
/// bounded by `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` instead.
pub const BSP_EXPORT_TIMEOUT: &str = "OTEL_BSP_EXPORT_TIMEOUT";
/// Delay between two log exports, in milliseconds (default 1000).
pub const BLRP_SCHEDULE_DELAY: &str = "OTEL_BLRP_SCHEDULE_DELAY";
/// Most log records waiting for export (default 2048).
pub const BLRP_MAX_QUEUE_SIZE: &str = "OTEL_BLRP_MAX_QUEUE_SIZE";
/// Most log records in one export (default 512, at most the queue size).
pub const BLRP_MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE";
/// The specification's limit of one log export, in milliseconds (default 30000):
/// checked, but not applied by the SDK's processor; each export is bounded by
/// `OTEL_EXPORTER_OTLP_LOGS_TIMEOUT` instead.
pub const BLRP_EXPORT_TIMEOUT: &str = "OTEL_BLRP_EXPORT_TIMEOUT";
/// A New Relic ingest license key: turns on the New Relic preset.
pub const NEW_RELIC_LICENSE_KEY: &str = "NEW_RELIC_LICENSE_KEY";
/// `us` (default) or `eu`.
pub const NEW_RELIC_REGION: &str = "NEW_RELIC_REGION";

/// An environment as the layers read it: values are trimmed, and an empty value counts
/// as unset.
pub(super) struct Vars<'a>(pub(super) &'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    /// The trimmed value of `name`, if set and not empty.
    pub(super) fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }
}

/// The three signals, for what they share: variables of the same shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Signal {
    /// Metrics.
    Metrics,
    /// Traces.
    Traces,
    /// Logs.
    Logs,
}

/// The variables of one signal.
struct SignalVars {
    endpoint: &'static str,
    headers: &'static str,
    compression: &'static str,
    timeout: &'static str,
    protocol: &'static str,
    exporter: &'static str,
}

impl Signal {
    /// Every signal.
    pub(super) const ALL: [Signal; 3] = [Signal::Metrics, Signal::Traces, Signal::Logs];

    /// The path appended to a base URL: `/v1/metrics`, `/v1/traces`, `/v1/logs`.
    pub(super) fn path(self) -> &'static str {
        match self {
            Signal::Metrics => "/v1/metrics",
            Signal::Traces => "/v1/traces",
            Signal::Logs => "/v1/logs",
        }
    }

    /// The signal-specific variables.
    fn vars(self) -> SignalVars {
        match self {
            Signal::Metrics => SignalVars {
                endpoint: OTLP_METRICS_ENDPOINT,
                headers: OTLP_METRICS_HEADERS,
                compression: OTLP_METRICS_COMPRESSION,
                timeout: OTLP_METRICS_TIMEOUT,
                protocol: OTLP_METRICS_PROTOCOL,
                exporter: METRICS_EXPORTER,
            },
            Signal::Traces => SignalVars {
                endpoint: OTLP_TRACES_ENDPOINT,
                headers: OTLP_TRACES_HEADERS,
                compression: OTLP_TRACES_COMPRESSION,
                timeout: OTLP_TRACES_TIMEOUT,
                protocol: OTLP_TRACES_PROTOCOL,
                exporter: TRACES_EXPORTER,
            },
            Signal::Logs => SignalVars {
                endpoint: OTLP_LOGS_ENDPOINT,
                headers: OTLP_LOGS_HEADERS,
                compression: OTLP_LOGS_COMPRESSION,
                timeout: OTLP_LOGS_TIMEOUT,
                protocol: OTLP_LOGS_PROTOCOL,
                exporter: LOGS_EXPORTER,
            },
        }
    }
}

/// What the variables set for one signal; `None` (or empty) leaves a setting as the
/// layers below made it.
#[derive(Default)]
pub(super) struct SignalLayer {
    /// `OTEL_{S}_EXPORTER=none`: the signal is not exported, whatever else says.
    pub(super) off: bool,
    /// The URL (the signal's endpoint, else the base endpoint + the signal's path).
    pub(super) endpoint: Option<String>,
    /// Headers in order: the general ones, then the signal's own.
    pub(super) headers: Vec<(String, String)>,
    /// Payload compression (the signal's own over the general one).
    pub(super) compression: Option<Compression>,
    /// Export timeout (the signal's own over the general one).
    pub(super) timeout: Option<Duration>,
}

/// What the standard `OTEL_*` export variables set; `None` (or empty) leaves a setting
/// as the layers below made it.
#[derive(Default)]
pub(super) struct EnvLayer {
    /// The metrics signal.
    pub(super) metrics: SignalLayer,
    /// The traces signal.
    pub(super) traces: SignalLayer,
    /// The logs signal.
    pub(super) logs: SignalLayer,
    /// Export interval.
    pub(super) interval: Option<Duration>,
    /// Temporality preference.
    pub(super) temporality: Option<TemporalityPreference>,
    /// Resource attributes; `Some` replaces any earlier list.
    pub(super) resource_attributes: Option<Vec<(String, String)>>,
    /// `OTEL_SERVICE_NAME`, else `service.name` among the resource attributes.
    pub(super) service_name: Option<String>,
}

/// Whether `OTEL_SDK_DISABLED=true` turns telemetry off.
pub(super) fn sdk_disabled(vars: &Vars<'_>) -> bool {
    vars.get(SDK_DISABLED)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The signal-specific variable if set, else the general one, with the name of the
/// one that was read (for errors).
fn specific_or_general(
    vars: &Vars<'_>,
    specific: &'static str,
    general: &'static str,
) -> Option<(&'static str, String)> {
    vars.get(specific)
        .map(|v| (specific, v))
        .or_else(|| vars.get(general).map(|v| (general, v)))
}

/// Parses a New Relic region (`us`, `eu`; empty means `us`).
pub(super) fn parse_region(s: &str) -> Result<NewRelicRegion, TelemetryError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "us" | "" => Ok(NewRelicRegion::Us),
        "eu" => Ok(NewRelicRegion::Eu),
        other => Err(TelemetryError::Config(format!(
            "{NEW_RELIC_REGION}: unknown New Relic region {other:?} (use us or eu)"
        ))),
    }
}

/// Reads the variables of `signal`; the first malformed one is the error.
fn read_signal(vars: &Vars<'_>, signal: Signal) -> Result<SignalLayer, TelemetryError> {
    let names = signal.vars();
    let mut layer = SignalLayer::default();
    if let Some(e) = vars.get(names.exporter) {
        match e.to_ascii_lowercase().as_str() {
            "otlp" => {}
            "none" => layer.off = true,
            _ => {
                return Err(TelemetryError::Config(format!(
                    "{}={e}: unsupported exporter (use otlp or none)",
                    names.exporter
                )));
            }
        }
    }
    if layer.off {
        return Ok(layer);
    }
    if let Some((name, p)) = specific_or_general(vars, names.protocol, OTLP_PROTOCOL)
        && p != "http/protobuf"
    {
        return Err(TelemetryError::Config(format!(
            "{name}={p}: only http/protobuf is supported (point it at the collector's OTLP/HTTP port, usually 4318)"
        )));
    }
    layer.endpoint = vars.get(names.endpoint).or_else(|| {
        vars.get(OTLP_ENDPOINT)
            .map(|base| format!("{}{}", base.trim_end_matches('/'), signal.path()))
    });
    for name in [OTLP_HEADERS, names.headers] {
        if let Some(h) = vars.get(name) {
            layer.headers.extend(parse_pairs(name, &h)?);
        }
    }
    if let Some((name, c)) = specific_or_general(vars, names.compression, OTLP_COMPRESSION) {
        layer.compression = Some(parse_compression(name, &c)?);
    }
    for name in [OTLP_TIMEOUT, names.timeout] {
        if let Some(t) = vars.get(name) {
            layer.timeout = Some(millis(name, &t)?);
        }
    }
    Ok(layer)
}

/// Reads the standard export variables; the first malformed one is the error.
pub(super) fn read(vars: &Vars<'_>) -> Result<EnvLayer, TelemetryError> {
    let mut layer = EnvLayer {
        metrics: read_signal(vars, Signal::Metrics)?,
        traces: read_signal(vars, Signal::Traces)?,
        logs: read_signal(vars, Signal::Logs)?,
        ..EnvLayer::default()
    };
    if let Some(i) = vars.get(EXPORT_INTERVAL) {
        layer.interval = Some(millis(EXPORT_INTERVAL, &i)?);
    }
    if let Some(t) = vars.get(TEMPORALITY) {
        layer.temporality = Some(parse_temporality(&t)?);
    }
    if let Some(r) = vars.get(RESOURCE_ATTRIBUTES) {
        let attributes = parse_pairs(RESOURCE_ATTRIBUTES, &r)?;
        layer.service_name = attributes
            .iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, name)| name.clone());
        layer.resource_attributes = Some(attributes);
    }
    if let Some(n) = vars.get(SERVICE_NAME) {
        layer.service_name = Some(n);
    }
    Ok(layer)
}

/// Parses `gzip`, `zstd` or `none`, in any case; the error names `var`.
fn parse_compression(var: &str, s: &str) -> Result<Compression, TelemetryError> {
    match s.to_ascii_lowercase().as_str() {
        "gzip" => Ok(Compression::Gzip),
        "zstd" => Ok(Compression::Zstd),
        "none" => Ok(Compression::None),
        other => Err(TelemetryError::Config(format!(
            "{var}: unknown compression {other:?} (use gzip, zstd or none)"
        ))),
    }
}

/// Parses `cumulative`, `delta` or `lowmemory`, in any case.
fn parse_temporality(s: &str) -> Result<TemporalityPreference, TelemetryError> {
    match s.to_ascii_lowercase().as_str() {
        "cumulative" => Ok(TemporalityPreference::Cumulative),
        "delta" => Ok(TemporalityPreference::Delta),
        "lowmemory" => Ok(TemporalityPreference::LowMemory),
        other => Err(TelemetryError::Config(format!(
            "{TEMPORALITY}: unknown temporality {other:?} (use cumulative, delta or lowmemory)"
        ))),
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as it is.
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
pub(super) fn parse_pairs(var: &str, s: &str) -> Result<Vec<(String, String)>, TelemetryError> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| {
            TelemetryError::Config(format!("{var}: {} is not key=value", redact_item(item)))
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

/// Parses a positive number of milliseconds; the error names `var`.
pub(super) fn millis(var: &str, s: &str) -> Result<Duration, TelemetryError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn layer(vars: &[(&str, &str)]) -> Result<EnvLayer, TelemetryError> {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        let lookup = |k: &str| map.get(k).map(|v| v.to_string());
        read(&Vars(&lookup))
    }

    #[test]
    fn metrics_only_variables_win_over_the_general_ones() {
        let l = layer(&[
            (OTLP_HEADERS, "a=1,b=2"),
            (OTLP_METRICS_HEADERS, "b=3"),
            (OTLP_COMPRESSION, "zstd"),
            (OTLP_METRICS_COMPRESSION, "none"),
            (OTLP_TIMEOUT, "100"),
            (OTLP_METRICS_TIMEOUT, "200"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let last_b = l.metrics.headers.iter().rev().find(|(k, _)| k == "b");
        assert_eq!(last_b.map(|(_, v)| v.as_str()), Some("3"));
        assert_eq!(l.metrics.compression, Some(Compression::None));
        assert_eq!(l.metrics.timeout, Some(Duration::from_millis(200)));
        // The other signals see only the general values.
        let last_b = l.traces.headers.iter().rev().find(|(k, _)| k == "b");
        assert_eq!(last_b.map(|(_, v)| v.as_str()), Some("2"));
        assert_eq!(l.logs.compression, Some(Compression::Zstd));
        assert_eq!(l.logs.timeout, Some(Duration::from_millis(100)));
    }

    #[test]
    fn each_signal_reads_its_own_variables_over_the_general_ones() {
        let l = layer(&[
            (OTLP_ENDPOINT, "http://base:4318/"),
            (OTLP_LOGS_ENDPOINT, "http://logs:1/custom"),
            (OTLP_HEADERS, "a=1"),
            (OTLP_TRACES_HEADERS, "a=2,t=3"),
            (OTLP_LOGS_COMPRESSION, "zstd"),
            (OTLP_TRACES_TIMEOUT, "300"),
            (OTLP_PROTOCOL, "http/protobuf"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            l.traces.endpoint.as_deref(),
            Some("http://base:4318/v1/traces")
        );
        assert_eq!(l.logs.endpoint.as_deref(), Some("http://logs:1/custom"));
        let last = |h: &[(String, String)], key: &str| {
            h.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(last(&l.traces.headers, "a").as_deref(), Some("2"));
        assert_eq!(last(&l.traces.headers, "t").as_deref(), Some("3"));
        assert_eq!(last(&l.logs.headers, "a").as_deref(), Some("1"));
        assert_eq!(last(&l.logs.headers, "t"), None);
        assert_eq!(l.logs.compression, Some(Compression::Zstd));
        assert_eq!(l.traces.compression, None);
        assert_eq!(l.traces.timeout, Some(Duration::from_millis(300)));
        assert_eq!(l.metrics.timeout, None);
    }

    #[test]
    fn a_signal_protocol_or_compression_error_names_the_signal_variable() {
        for (var, value) in [
            (OTLP_TRACES_PROTOCOL, "grpc"),
            (OTLP_LOGS_PROTOCOL, "http/json"),
            (OTLP_TRACES_COMPRESSION, "brotli"),
            (OTLP_LOGS_TIMEOUT, "soon"),
            (TRACES_EXPORTER, "jaeger"),
            (LOGS_EXPORTER, "console"),
        ] {
            let e = layer(&[(var, value)])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(var), "{var}={value}: {e}");
        }
        let e = layer(&[(METRICS_EXPORTER, "prometheus")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("otlp or none"), "{e}");
    }

    #[test]
    fn exporter_none_turns_a_signal_off_and_skips_its_checks() {
        let l = layer(&[
            (TRACES_EXPORTER, "NONE"),
            (OTLP_TRACES_PROTOCOL, "grpc"),
            (LOGS_EXPORTER, "otlp"),
            (OTLP_ENDPOINT, "http://c:4318"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(l.traces.off);
        assert!(!l.logs.off);
        assert!(!l.metrics.off);
        assert_eq!(l.logs.endpoint.as_deref(), Some("http://c:4318/v1/logs"));
    }

    #[test]
    fn blank_values_are_unset_and_escapes_are_decoded() {
        let l = layer(&[(OTLP_ENDPOINT, "  "), (OTLP_HEADERS, "k%3D=v%2Cw,x=%zz")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.metrics.endpoint, None);
        assert_eq!(
            l.metrics.headers,
            vec![("k=".into(), "v,w".into()), ("x".into(), "%zz".into())]
        );
    }
}
