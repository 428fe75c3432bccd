//! Resolution: the layers applied in order — defaults, then the New Relic preset, then
//! the standard `OTEL_*` environment variables, then command-line overrides — each
//! free to override the one before; `OTEL_{METRICS,TRACES,LOGS}_EXPORTER=none` turns
//! its signal off whatever the layers say. The result is validated last.

use std::time::Duration;

use super::env::{self, EnvLayer, Signal, SignalLayer, Vars};
use super::sdk::{self, SdkLayer};
use super::{
    Compression, NewRelicRegion, Overrides, SignalConfig, TelemetryConfig, TemporalityPreference,
    set_header,
};
use crate::TelemetryError;

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
        let vars = Vars(&lookup);
        let mut config = defaults();
        if env::sdk_disabled(&vars) {
            return Ok(config);
        }
        apply_new_relic(&mut config, &vars, overrides)?;
        let layer = env::read(&vars)?;
        let off: Vec<Signal> = Signal::ALL
            .into_iter()
            .filter(|s| layer_of(&layer, *s).off)
            .collect();
        apply_env(&mut config, layer);
        apply_sdk(&mut config, sdk::read(&vars)?);
        apply_overrides(&mut config, overrides)?;
        for signal in off {
            config.with_signal(signal, |s| s.endpoint = None);
        }
        config.validate()?;
        Ok(config)
    }

    /// Runs `f` on the settings of `signal` (for metrics, on a copy of the top-level
    /// fields, written back after).
    fn with_signal(&mut self, signal: Signal, f: impl FnOnce(&mut SignalConfig)) {
        match signal {
            Signal::Traces => f(&mut self.traces),
            Signal::Logs => f(&mut self.logs),
            Signal::Metrics => {
                let mut m = self.metrics();
                f(&mut m);
                self.endpoint = m.endpoint;
                self.headers = m.headers;
                self.compression = m.compression;
                self.timeout = m.timeout;
            }
        }
    }
}

fn layer_of(layer: &EnvLayer, signal: Signal) -> &SignalLayer {
    match signal {
        Signal::Metrics => &layer.metrics,
        Signal::Traces => &layer.traces,
        Signal::Logs => &layer.logs,
    }
}

/// A signal that is not exported: gzip and a 10 s timeout once it is.
fn signal_defaults() -> SignalConfig {
    SignalConfig {
        endpoint: None,
        headers: Vec::new(),
        compression: Compression::Gzip,
        timeout: Duration::from_secs(10),
    }
}

/// The bottom layer: no export, gzip, a 1 s interval, a 10 s timeout, cumulative; the
/// specification's sampler, propagators and batching.
fn defaults() -> TelemetryConfig {
    let metrics = signal_defaults();
    let sdk = sdk::defaults();
    TelemetryConfig {
        endpoint: metrics.endpoint,
        headers: metrics.headers,
        compression: metrics.compression,
        interval: Duration::from_secs(1),
        timeout: metrics.timeout,
        temporality: TemporalityPreference::Cumulative,
        service_name: None,
        resource_attributes: Vec::new(),
        new_relic: false,
        traces: signal_defaults(),
        logs: signal_defaults(),
        sampler: sdk.sampler,
        propagators: sdk.propagators,
        span_batch: sdk.span_batch,
        log_batch: sdk.log_batch,
    }
}

/// With `NEW_RELIC_LICENSE_KEY` set: the region's endpoints, the key as the `api-key`
/// header of every signal, and delta temporality. The region (flag over variable) is
/// checked even without a key.
fn apply_new_relic(
    config: &mut TelemetryConfig,
    vars: &Vars<'_>,
    overrides: &Overrides,
) -> Result<(), TelemetryError> {
    let license = vars.get(env::NEW_RELIC_LICENSE_KEY);
    let region = match overrides
        .new_relic_region
        .as_deref()
        .map(str::to_string)
        .or_else(|| vars.get(env::NEW_RELIC_REGION))
    {
        Some(r) => env::parse_region(&r)?,
        None => NewRelicRegion::Us,
    };
    if let Some(key) = license {
        config.new_relic = true;
        config.temporality = TemporalityPreference::Delta;
        for signal in Signal::ALL {
            let endpoint = match signal {
                Signal::Metrics => region.metrics_endpoint(),
                Signal::Traces => region.traces_endpoint(),
                Signal::Logs => region.logs_endpoint(),
            };
            config.with_signal(signal, |s| {
                s.endpoint = Some(endpoint.to_string());
                set_header(&mut s.headers, "api-key".into(), key.clone());
            });
        }
    }
    Ok(())
}

/// One signal's variables, over the preset.
fn apply_signal(target: &mut SignalConfig, layer: SignalLayer) {
    if let Some(e) = layer.endpoint {
        target.endpoint = Some(e);
    }
    for (k, v) in layer.headers {
        set_header(&mut target.headers, k, v);
    }
    if let Some(c) = layer.compression {
        target.compression = c;
    }
    if let Some(t) = layer.timeout {
        target.timeout = t;
    }
}

/// The standard variables, over the preset.
fn apply_env(config: &mut TelemetryConfig, layer: EnvLayer) {
    let EnvLayer {
        metrics,
        traces,
        logs,
        interval,
        temporality,
        resource_attributes,
        service_name,
    } = layer;
    config.with_signal(Signal::Metrics, |s| apply_signal(s, metrics));
    apply_signal(&mut config.traces, traces);
    apply_signal(&mut config.logs, logs);
    if let Some(i) = interval {
        config.interval = i;
    }
    if let Some(t) = temporality {
        config.temporality = t;
    }
    if let Some(r) = resource_attributes {
        config.resource_attributes = r;
    }
    if let Some(n) = service_name {
        config.service_name = Some(n);
    }
}

/// The sampler, propagators and batch settings (nothing below sets them).
fn apply_sdk(config: &mut TelemetryConfig, layer: SdkLayer) {
    config.sampler = layer.sampler;
    config.propagators = layer.propagators;
    config.span_batch = layer.span_batch;
    config.log_batch = layer.log_batch;
}

/// The base of an endpoint given as a flag: without trailing slashes, and without a
/// signal path (`/v1/metrics`, `/v1/traces`, `/v1/logs`) at its end.
fn base_of(endpoint: &str) -> &str {
    let trimmed = endpoint.trim_end_matches('/');
    Signal::ALL
        .into_iter()
        .find_map(|s| trimmed.strip_suffix(s.path()))
        .map_or(trimmed, |base| base.trim_end_matches('/'))
}

/// Command-line values, over everything else (empty strings are ignored).
fn apply_overrides(
    config: &mut TelemetryConfig,
    overrides: &Overrides,
) -> Result<(), TelemetryError> {
    let mut headers = Vec::new();
    for h in &overrides.headers {
        headers.extend(env::parse_pairs("--otlp-header", h)?);
    }
    let base = overrides
        .endpoint
        .as_deref()
        .filter(|e| !e.is_empty())
        .map(base_of);
    for signal in Signal::ALL {
        config.with_signal(signal, |s| {
            if let Some(base) = base {
                s.endpoint = Some(format!("{base}{}", signal.path()));
            }
            for (k, v) in &headers {
                set_header(&mut s.headers, k.clone(), v.clone());
            }
        });
    }
    if let Some(i) = overrides.interval {
        config.interval = i;
    }
    if let Some(n) = overrides.service_name.clone().filter(|n| !n.is_empty()) {
        config.service_name = Some(n);
    }
    Ok(())
}
