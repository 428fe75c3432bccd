//! The logs pipeline: an `SdkLoggerProvider` with the SDK's batch log record processor
//! (its own thread, a bounded queue) over the OTLP/HTTP log exporter, wrapped so that
//! failures are explained in the log like the other signals'. The log records come
//! from the `tracing` bridge installed with the logging (`logging`); the SDK logger
//! gives each the trace context current when it was emitted.

use std::time::Duration;

use opentelemetry::logs::Severity;
use opentelemetry_otlp::LogExporter as OtlpLogExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    BatchConfigBuilder, BatchLogProcessor, LogBatch, LogExporter, SdkLoggerProvider,
};

use crate::TelemetryError;
use crate::config::{BatchSettings, TelemetryConfig};
use crate::export::{self, FailureLog};
use crate::redact::redact_url;

/// The logger provider exporting to `endpoint` (the resolved logs URL).
pub(crate) fn build(
    config: &TelemetryConfig,
    endpoint: &str,
    resource: Resource,
) -> Result<SdkLoggerProvider, TelemetryError> {
    let inner = export::configure(
        OtlpLogExporter::builder().with_http(),
        &config.logs,
        endpoint,
    )?
    .build()
    .map_err(|e| export::build_error(e, endpoint))?;
    let exporter = GuardedLogExporter {
        inner,
        failures: FailureLog::new("logs", redact_url(endpoint), config.new_relic),
    };
    Ok(provider(exporter, &config.log_batch, resource))
}

/// A logger provider with the batch processor over `exporter`.
fn provider<E>(exporter: E, settings: &BatchSettings, resource: Resource) -> SdkLoggerProvider
where
    E: LogExporter + 'static,
{
    // Every setting explicitly: the builder's defaults read the OTEL_BLRP_* variables
    // themselves, silently ignoring bad values.
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(settings.max_queue_size)
        .with_max_export_batch_size(settings.max_export_batch_size)
        .with_scheduled_delay(settings.schedule_delay)
        .build();
    let processor = BatchLogProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    SdkLoggerProvider::builder()
        .with_resource(resource)
        .with_log_processor(processor)
        .build()
}

/// The log exporter the batch processor drives: explains failures in the log.
#[derive(Debug)]
struct GuardedLogExporter {
    inner: OtlpLogExporter,
    failures: FailureLog,
}

impl LogExporter for GuardedLogExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.failures.record(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn event_enabled(&self, level: Severity, target: &str, name: Option<&str>) -> bool {
        self.inner.event_enabled(level, target, name)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::Context;
    use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider};
    use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
    use opentelemetry_sdk::logs::InMemoryLogExporter;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn a_record_emitted_inside_a_span_context_carries_its_trace_context() {
        let exporter = InMemoryLogExporter::default();
        let logs = provider(
            exporter.clone(),
            &BatchSettings::LOGS,
            Resource::builder_empty().build(),
        );
        let traces = SdkTracerProvider::builder().build();
        let span = traces.tracer("test").start("call");
        let expected = span.span_context().clone();
        assert!(expected.is_valid());
        let subscriber =
            tracing_subscriber::registry().with(OpenTelemetryTracingBridge::new(&logs));
        tracing::subscriber::with_default(subscriber, || {
            let cx = Context::current_with_span(span);
            {
                let _attached = cx.attach();
                tracing::info!(grain = "counter", "inside the call");
            }
            tracing::info!("outside any call");
        });
        logs.force_flush().unwrap_or_else(|e| panic!("flush: {e}"));
        let records = exporter
            .get_emitted_logs()
            .unwrap_or_else(|e| panic!("logs: {e}"));
        assert_eq!(records.len(), 2);
        let inside = records[0]
            .record
            .trace_context()
            .unwrap_or_else(|| panic!("the record inside the call has no trace context"));
        assert_eq!(inside.trace_id, expected.trace_id());
        assert_eq!(inside.span_id, expected.span_id());
        assert!(records[1].record.trace_context().is_none());
        let _ = logs.shutdown();
    }
}
