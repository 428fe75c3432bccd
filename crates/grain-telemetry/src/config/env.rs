//! The environment variables read (public constants), and how they are read: pure
//! functions over a lookup, so tests need no process environment. Nothing here knows
//! the order of the layers; `resolve` applies what these functions return.

use std::time::Duration;

use super::{Compression, NewRelicRegion, TemporalityPreference};
use crate::TelemetryError;
use crate::redact::redact_item;

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

/// What the standard `OTEL_*` variables set; `None` (or empty) leaves a setting as the
/// layers below made it.
#[derive(Default)]
pub(super) struct EnvLayer {
    /// The metrics URL (the metrics endpoint, else the base endpoint + `/v1/metrics`).
    pub(super) endpoint: Option<String>,
    /// Headers in order: the general ones, then the metrics-only ones.
    pub(super) headers: Vec<(String, String)>,
    /// Payload compression (metrics-only over general).
    pub(super) compression: Option<Compression>,
    /// Export timeout (metrics-only over general).
    pub(super) timeout: Option<Duration>,
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

/// Refuses any protocol but `http/protobuf` (the metrics-only variable first).
pub(super) fn check_protocol(vars: &Vars<'_>) -> Result<(), TelemetryError> {
    for name in [OTLP_METRICS_PROTOCOL, OTLP_PROTOCOL] {
        if let Some(p) = vars.get(name) {
            if p != "http/protobuf" {
                return Err(TelemetryError::Config(format!(
                    "{name}={p}: only http/protobuf is supported (point it at the collector's OTLP/HTTP port, usually 4318)"
                )));
            }
            break;
        }
    }
    Ok(())
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

/// Reads the standard variables; the first malformed one is the error.
pub(super) fn read(vars: &Vars<'_>) -> Result<EnvLayer, TelemetryError> {
    let mut layer = EnvLayer {
        endpoint: vars.get(OTLP_METRICS_ENDPOINT).or_else(|| {
            vars.get(OTLP_ENDPOINT)
                .map(|base| format!("{}/v1/metrics", base.trim_end_matches('/')))
        }),
        ..EnvLayer::default()
    };
    for name in [OTLP_HEADERS, OTLP_METRICS_HEADERS] {
        if let Some(h) = vars.get(name) {
            layer.headers.extend(parse_pairs(name, &h)?);
        }
    }
    if let Some(c) = vars
        .get(OTLP_METRICS_COMPRESSION)
        .or_else(|| vars.get(OTLP_COMPRESSION))
    {
        layer.compression = Some(parse_compression(&c)?);
    }
    for name in [OTLP_TIMEOUT, OTLP_METRICS_TIMEOUT] {
        if let Some(t) = vars.get(name) {
            layer.timeout = Some(millis(name, &t)?);
        }
    }
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

/// Parses `gzip`, `zstd` or `none`, in any case.
fn parse_compression(s: &str) -> Result<Compression, TelemetryError> {
    match s.to_ascii_lowercase().as_str() {
        "gzip" => Ok(Compression::Gzip),
        "zstd" => Ok(Compression::Zstd),
        "none" => Ok(Compression::None),
        other => Err(TelemetryError::Config(format!(
            "{OTLP_COMPRESSION}: unknown compression {other:?} (use gzip, zstd or none)"
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
        let last_b = l.headers.iter().rev().find(|(k, _)| k == "b");
        assert_eq!(last_b.map(|(_, v)| v.as_str()), Some("3"));
        assert_eq!(l.compression, Some(Compression::None));
        assert_eq!(l.timeout, Some(Duration::from_millis(200)));
    }

    #[test]
    fn blank_values_are_unset_and_escapes_are_decoded() {
        let l = layer(&[(OTLP_ENDPOINT, "  "), (OTLP_HEADERS, "k%3D=v%2Cw,x=%zz")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.endpoint, None);
        assert_eq!(
            l.headers,
            vec![("k=".into(), "v,w".into()), ("x".into(), "%zz".into())]
        );
    }
}
