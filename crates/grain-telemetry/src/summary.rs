//! What `Telemetry::log_summary` says: one line per signal — exported where (endpoint
//! redacted) and how, or off — and a warning for each signal that sends the New Relic
//! key to an endpoint that is not New Relic's. Kept from the configuration at install
//! time, because logging is set up after it.

use std::time::Duration;

use crate::config::{
    BatchSettings, Compression, PropagatorKind, SamplerConfig, TelemetryConfig,
    TemporalityPreference,
};
use crate::redact::redact_url;

/// An exported signal: the redacted endpoint and compression.
struct Target {
    endpoint: String,
    compression: Compression,
}

/// The facts the summary lines give.
pub(crate) struct Summary {
    metrics: Option<Target>,
    traces: Option<Target>,
    logs: Option<Target>,
    interval: Duration,
    temporality: TemporalityPreference,
    sampler: SamplerConfig,
    propagators: Vec<PropagatorKind>,
    span_batch: BatchSettings,
    new_relic: bool,
    service: String,
    /// Signals whose endpoint gets the New Relic key but is not New Relic's.
    mismatched: Vec<(&'static str, String)>,
}

impl Summary {
    /// The summary of `config`, for service `service`.
    pub(crate) fn new(config: &TelemetryConfig, service: String) -> Summary {
        let target = |endpoint: &Option<String>, compression| {
            endpoint.as_deref().map(|e| Target {
                endpoint: redact_url(e),
                compression,
            })
        };
        let mismatched = [
            ("metrics", &config.endpoint),
            ("traces", &config.traces.endpoint),
            ("logs", &config.logs.endpoint),
        ]
        .into_iter()
        .filter_map(|(signal, e)| Some((signal, e.as_deref()?)))
        .filter(|(_, e)| config.new_relic && !e.contains(".nr-data.net"))
        .map(|(signal, e)| (signal, redact_url(e)))
        .collect();
        Summary {
            metrics: target(&config.endpoint, config.compression),
            traces: target(&config.traces.endpoint, config.traces.compression),
            logs: target(&config.logs.endpoint, config.logs.compression),
            interval: config.interval,
            temporality: config.temporality,
            sampler: config.sampler,
            propagators: config.propagators.clone(),
            span_batch: config.span_batch,
            new_relic: config.new_relic,
            service,
            mismatched,
        }
    }

    /// Logs the lines.
    pub(crate) fn log(&self) {
        for (signal, endpoint) in &self.mismatched {
            tracing::warn!(
                signal,
                endpoint = %endpoint,
                "NEW_RELIC_LICENSE_KEY is sent as the api-key header to an endpoint that is not New Relic's"
            );
        }
        match &self.metrics {
            Some(t) => tracing::info!(
                endpoint = %t.endpoint,
                interval = ?self.interval,
                temporality = ?self.temporality,
                compression = ?t.compression,
                new_relic = self.new_relic,
                service = %self.service,
                "exporting metrics over OTLP/HTTP"
            ),
            None if self.traces.is_none() && self.logs.is_none() => tracing::info!(
                "metrics export is off: set OTEL_EXPORTER_OTLP_ENDPOINT (any OTLP/HTTP collector) \
                 or NEW_RELIC_LICENSE_KEY to export"
            ),
            None => tracing::info!("metrics export is off"),
        }
        match &self.traces {
            Some(t) => tracing::info!(
                endpoint = %t.endpoint,
                sampler = ?self.sampler,
                propagators = ?self.propagators,
                queue = self.span_batch.max_queue_size,
                compression = ?t.compression,
                service = %self.service,
                "exporting traces over OTLP/HTTP"
            ),
            None => tracing::info!(
                propagators = ?self.propagators,
                "traces export is off (context is still propagated)"
            ),
        }
        match &self.logs {
            Some(t) => tracing::info!(
                endpoint = %t.endpoint,
                compression = ?t.compression,
                service = %self.service,
                "exporting logs over OTLP/HTTP"
            ),
            None => tracing::info!("logs export is off"),
        }
    }
}
