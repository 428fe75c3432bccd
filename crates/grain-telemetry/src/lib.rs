//! # grain-telemetry — OpenTelemetry for grain binaries
//!
//! The only crate that touches the OpenTelemetry SDK; libraries (the runtime) record
//! through the API on the `Meter`, tracer and propagator a binary hands them. Nothing
//! here installs OpenTelemetry globals. This crate:
//!
//! - reads the configuration from command-line overrides, the standard `OTEL_*`
//!   environment variables and a New Relic preset, in that order ([`TelemetryConfig`]):
//!   per signal (metrics, traces, logs) an endpoint, headers, compression and timeout,
//!   the signal's own variables over the general ones as the OpenTelemetry
//!   specification says, and `OTEL_{METRICS,TRACES,LOGS}_EXPORTER=none` to turn one off;
//! - exports three signals over OTLP/HTTP protobuf (gzip by default, zstd or none on
//!   request), each only when it has an endpoint, all with one resource naming the
//!   service, instance, version, host and cluster ([`Telemetry::install`]):
//!   - **metrics** through a periodic reader (1 s by default), with the process's own
//!     CPU time and memory (OTel `process.*` conventions);
//!   - **traces** through the SDK's batch span processor (its own thread, a bounded
//!     queue, `OTEL_BSP_*`) with the sampler of `OTEL_TRACES_SAMPLER` (parent-based
//!     always-on by default); spans the queue has no room for are dropped and counted
//!     on `otel.sdk.processor.span.processed{error.type=queue_full}`
//!     ([`Telemetry::tracer`]);
//!   - **logs**: the `tracing` events, as OTLP log records with the trace context they
//!     were emitted in, through the SDK's batch log processor (`OTEL_BLRP_*`);
//! - propagates context in calls with the propagators of `OTEL_PROPAGATORS` (W3C trace
//!   context and baggage by default; B3 single or multi header; or none), exported or
//!   not ([`Telemetry::propagator`]);
//! - writes the process's log lines to stderr, human or JSON ([`LogFormat`]), each
//!   line written while serving a traced call carrying its `trace_id` and `span_id`
//!   ([`Telemetry::init_logging`], or [`init_logging`] without telemetry);
//! - keeps export trouble away from the application: failures are logged once per kind
//!   per minute with what they mean ("403: the license key was rejected"), never with a
//!   header value, and data that cannot be sent is dropped, not queued without bound.
//!
//! The order in a binary: [`TelemetryConfig::from_env`], [`Telemetry::install`],
//! [`Telemetry::init_logging`], [`Telemetry::log_summary`]; at the end
//! [`Telemetry::shutdown`]. Install and shut down outside an async context: the HTTP
//! client is blocking and runs on the processors' own threads.

mod config;
mod export;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod logging;
mod logs;
mod process;
mod propagation;
mod redact;
mod summary;
mod traces;

pub use process::{INSTRUMENTS as PROCESS_INSTRUMENTS, ProcessInstrument};

/// The instruments of the telemetry pipeline itself: the span processor's count of
/// spans exported and dropped.
pub const SDK_INSTRUMENTS: &[ProcessInstrument] = &[traces::SPAN_PROCESSOR_INSTRUMENT];

pub use config::{
    BatchSettings, Compression, HeaderValue, NewRelicRegion, Overrides, PropagatorKind,
    SamplerConfig, SignalConfig, TelemetryConfig, TemporalityPreference, env,
};
pub use logging::{LogFormat, init_logging};

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::noop::NoopMeterProvider;
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;

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
    /// `grain.member.address`: the `host:port` other members reach it at, when known.
    pub member_address: Option<String>,
}

/// Installed telemetry: a provider per exported signal, and the propagator.
pub struct Telemetry {
    meter_provider: Option<SdkMeterProvider>,
    tracer_provider: Option<SdkTracerProvider>,
    logger_provider: Option<SdkLoggerProvider>,
    propagator: Arc<dyn TextMapPropagator + Send + Sync>,
    summary: summary::Summary,
    follows_parent: bool,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("metrics", &self.meter_provider.is_some())
            .field("traces", &self.tracer_provider.is_some())
            .field("logs", &self.logger_provider.is_some())
            .finish_non_exhaustive()
    }
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The resource every signal shares.
fn resource(config: &TelemetryConfig, process: &ProcessInfo, service_name: &str) -> Resource {
    let mut attributes = vec![
        KeyValue::new("service.name", service_name.to_string()),
        KeyValue::new("service.instance.id", process.instance_id.clone()),
        KeyValue::new("service.version", process.version.clone()),
        KeyValue::new("host.name", host_name()),
        KeyValue::new("grain.cluster.name", process.cluster.clone()),
    ];
    if let Some(address) = &process.member_address {
        attributes.push(KeyValue::new("grain.member.address", address.clone()));
    }
    for (k, v) in &config.resource_attributes {
        if !attributes.iter().any(|a| a.key.as_str() == k) {
            attributes.push(KeyValue::new(k.clone(), v.clone()));
        }
    }
    Resource::builder_empty()
        .with_attributes(attributes)
        .build()
}

impl Telemetry {
    /// Builds the providers described by `config` for `process`, each only when its
    /// signal has an endpoint. Logs nothing (logging is set up after this): call
    /// [`Telemetry::log_summary`] once it is.
    pub fn install(
        config: &TelemetryConfig,
        process: &ProcessInfo,
    ) -> Result<Telemetry, TelemetryError> {
        let service_name = config
            .service_name
            .clone()
            .unwrap_or_else(|| process.service_name.clone());
        let resource = resource(config, process, &service_name);
        let meter_provider = match &config.endpoint {
            Some(endpoint) => {
                let exporter = export::build_metrics(
                    &config.metrics(),
                    endpoint,
                    config.temporality,
                    config.new_relic,
                )?;
                let reader = PeriodicReader::builder(exporter)
                    .with_interval(config.interval)
                    .build();
                let provider = SdkMeterProvider::builder()
                    .with_resource(resource.clone())
                    .with_reader(reader)
                    .build();
                process::register(&provider.meter("grain-telemetry"));
                Some(provider)
            }
            None => None,
        };
        let own_meter = match &meter_provider {
            Some(p) => p.meter("grain-telemetry"),
            None => NoopMeterProvider::new().meter("grain-telemetry"),
        };
        let tracer_provider = match &config.traces.endpoint {
            Some(endpoint) => Some(traces::build(
                config,
                endpoint,
                resource.clone(),
                &own_meter,
            )?),
            None => None,
        };
        let logger_provider = match &config.logs.endpoint {
            Some(endpoint) => Some(logs::build(config, endpoint, resource)?),
            None => None,
        };
        Ok(Telemetry {
            meter_provider,
            tracer_provider,
            logger_provider,
            propagator: propagation::build(&config.propagators),
            summary: summary::Summary::new(config, service_name),
            follows_parent: matches!(
                config.sampler,
                SamplerConfig::AlwaysOff
                    | SamplerConfig::ParentBasedAlwaysOn
                    | SamplerConfig::ParentBasedAlwaysOff
                    | SamplerConfig::ParentBasedTraceIdRatio(_)
            ),
        })
    }

    /// A meter for the runtime (`NodeConfig::meter`), or `None` when metrics are not
    /// exported.
    pub fn meter(&self, name: &'static str) -> Option<Meter> {
        self.meter_provider.as_ref().map(|p| p.meter(name))
    }

    /// A tracer for the runtime, or `None` when traces are not exported.
    pub fn tracer(&self, name: &'static str) -> Option<BoxedTracer> {
        self.tracer_provider
            .as_ref()
            .map(|p| BoxedTracer::new(Box::new(p.tracer(name))))
    }

    /// The configured propagators as one; available whether or not traces are
    /// exported, so context is passed on either way.
    pub fn propagator(&self) -> Arc<dyn TextMapPropagator + Send + Sync> {
        self.propagator.clone()
    }

    /// Whether the sampler never samples a span whose parent is not sampled (the
    /// parent-based samplers and `always_off`): see `grain::Tracing::parent_based`.
    pub fn sampler_follows_parent(&self) -> bool {
        self.follows_parent
    }

    /// Whether traces are exported.
    pub fn traces_enabled(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Whether logs are exported.
    pub fn logs_enabled(&self) -> bool {
        self.logger_provider.is_some()
    }

    /// Logs one line per signal saying what is exported where (endpoints redacted), and
    /// warns when the New Relic key goes to an endpoint that is not New Relic's. Call
    /// after [`Telemetry::init_logging`].
    pub fn log_summary(&self) {
        self.summary.log();
    }

    /// Exports what is left and stops: traces, then logs, then metrics (so the last
    /// span counts are exported too). Call outside an async context.
    pub fn shutdown(self) {
        if let Some(p) = self.tracer_provider
            && let Err(e) = p.shutdown()
        {
            tracing::debug!("traces shutdown: {e}");
        }
        if let Some(p) = self.logger_provider
            && let Err(e) = p.shutdown()
        {
            tracing::debug!("logs shutdown: {e}");
        }
        if let Some(p) = self.meter_provider
            && let Err(e) = p.shutdown()
        {
            tracing::debug!("metrics shutdown: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::Context;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use std::collections::HashMap;

    fn installed(vars: &[(&str, &str)]) -> Telemetry {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = TelemetryConfig::from_lookup(|k| map.get(k).cloned(), &Overrides::default())
            .unwrap_or_else(|e| panic!("{e}"));
        Telemetry::install(&config, &ProcessInfo::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn without_endpoints_nothing_is_exported_but_context_is_passed_on() {
        let t = installed(&[]);
        assert!(t.meter("test").is_none());
        assert!(t.tracer("test").is_none());
        assert!(!t.traces_enabled());
        assert!(!t.logs_enabled());
        let cx = Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(42u128),
            SpanId::from(7u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        let mut carrier = HashMap::new();
        t.propagator().inject_context(&cx, &mut carrier);
        assert!(carrier.contains_key("traceparent"), "{carrier:?}");
        t.shutdown();
    }

    #[test]
    fn each_signal_is_built_only_when_it_has_an_endpoint() {
        // Nothing listens there, and nothing is sent: no span or record is made, and
        // metrics (which would export at shutdown) are off.
        let t = installed(&[
            (env::OTLP_ENDPOINT, "http://127.0.0.1:9"),
            (env::METRICS_EXPORTER, "none"),
            (env::TRACES_EXPORTER, "otlp"),
        ]);
        assert!(t.meter("test").is_none());
        assert!(t.tracer("test").is_some());
        assert!(t.traces_enabled());
        assert!(t.logs_enabled());
        let t2 = installed(&[(env::OTLP_TRACES_ENDPOINT, "http://127.0.0.1:9/v1/traces")]);
        assert!(t2.traces_enabled());
        assert!(!t2.logs_enabled());
        t2.shutdown();
        t.shutdown();
    }
}
