//! # grain-telemetry — OpenTelemetry for grain binaries
//!
//! The only crate that touches the OpenTelemetry SDK; libraries (the runtime) record
//! through the API on the `Meter` a binary hands them. This crate:
//!
//! - reads the configuration from command-line overrides, the standard `OTEL_*`
//!   environment variables and a New Relic preset, in that order ([`TelemetryConfig`]);
//! - builds a `MeterProvider` with an OTLP/HTTP protobuf exporter (gzip by default, zstd
//!   or none on request), a periodic reader (1 s by default) and a resource naming the
//!   service, instance, version, host and cluster ([`Telemetry::install`]);
//! - records the process's own CPU time and memory (OTel `process.*` conventions);
//! - keeps export trouble away from the application: failures are logged once per kind
//!   per minute with what they mean ("403: the license key was rejected"), never with a
//!   header value, and data that cannot be sent is dropped, not queued.
//!
//! Build it outside an async context and shut it down outside one too: the HTTP client
//! is blocking and runs on the reader's own thread.

mod config;
mod export;
mod process;
mod redact;

pub use process::{INSTRUMENTS as PROCESS_INSTRUMENTS, ProcessInstrument};

pub use config::{
    BatchSettings, Compression, HeaderValue, NewRelicRegion, Overrides, PropagatorKind,
    SamplerConfig, SignalConfig, TelemetryConfig, TemporalityPreference, env,
};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

/// Why telemetry could not be set up. Messages name the setting.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A setting is invalid.
    #[error("invalid telemetry setting: {0}")]
    Config(String),
    /// The exporter could not be built.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// Facts about the process, for the resource.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    /// `service.name` unless configured otherwise (`fizz`, `buzz`, `client`).
    pub service_name: String,
    /// `service.instance.id`: the member id.
    pub instance_id: String,
    /// `service.version`.
    pub version: String,
    /// `grain.cluster.name`.
    pub cluster: String,
}

/// Installed telemetry: a meter provider, or nothing when export is off.
pub struct Telemetry {
    provider: Option<SdkMeterProvider>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

impl Telemetry {
    /// Builds the provider described by `config` for `process`. With no endpoint
    /// configured, nothing is exported and one log line says so.
    pub fn install(
        config: &TelemetryConfig,
        process: &ProcessInfo,
    ) -> Result<Telemetry, TelemetryError> {
        let Some(endpoint) = config.endpoint.clone() else {
            tracing::info!(
                "metrics export is off: set OTEL_EXPORTER_OTLP_ENDPOINT (any OTLP/HTTP collector) \
                 or NEW_RELIC_LICENSE_KEY to export"
            );
            return Ok(Telemetry { provider: None });
        };
        let service_name = config
            .service_name
            .clone()
            .unwrap_or_else(|| process.service_name.clone());
        let mut attributes = vec![
            KeyValue::new("service.name", service_name.clone()),
            KeyValue::new("service.instance.id", process.instance_id.clone()),
            KeyValue::new("service.version", process.version.clone()),
            KeyValue::new("host.name", host_name()),
            KeyValue::new("grain.cluster.name", process.cluster.clone()),
        ];
        for (k, v) in &config.resource_attributes {
            if !attributes.iter().any(|a| a.key.as_str() == k) {
                attributes.push(KeyValue::new(k.clone(), v.clone()));
            }
        }
        let resource = Resource::builder_empty()
            .with_attributes(attributes)
            .build();
        if config.new_relic && !endpoint.contains(".nr-data.net") {
            tracing::warn!(
                endpoint = %redact::redact_url(&endpoint),
                "NEW_RELIC_LICENSE_KEY is sent as the api-key header to an endpoint that is not New Relic's"
            );
        }
        let exporter = export::build_metrics(
            &config.metrics(),
            &endpoint,
            config.temporality,
            config.new_relic,
        )?;
        let reader = PeriodicReader::builder(exporter)
            .with_interval(config.interval)
            .build();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader)
            .build();
        process::register(&provider.meter("grain-telemetry"));
        tracing::info!(
            endpoint = %redact::redact_url(&endpoint),
            interval = ?config.interval,
            temporality = ?config.temporality,
            compression = ?config.compression,
            new_relic = config.new_relic,
            service = %service_name,
            "exporting metrics over OTLP/HTTP"
        );
        Ok(Telemetry {
            provider: Some(provider),
        })
    }

    /// A meter for the runtime (`NodeConfig::meter`), or `None` when export is off.
    pub fn meter(&self, name: &'static str) -> Option<Meter> {
        self.provider.as_ref().map(|p| p.meter(name))
    }

    /// Exports what is left and stops. Call outside an async context.
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::debug!("metrics shutdown: {e}");
        }
    }
}
