//! The traces pipeline: an `SdkTracerProvider` with the configured sampler, and the
//! SDK's batch span processor (its own thread, off the async runtime, a bounded queue)
//! behind our queue limit ([`queue`]), over the OTLP/HTTP span exporter.

use opentelemetry::metrics::Meter;
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

use crate::TelemetryError;
use crate::config::{SamplerConfig, TelemetryConfig};
use crate::export::{self, FailureLog};
use crate::redact::redact_url;

mod queue;

pub(crate) use queue::INSTRUMENT as SPAN_PROCESSOR_INSTRUMENT;

/// The SDK sampler for `config`.
pub(crate) fn sampler(config: SamplerConfig) -> Sampler {
    match config {
        SamplerConfig::AlwaysOn => Sampler::AlwaysOn,
        SamplerConfig::AlwaysOff => Sampler::AlwaysOff,
        SamplerConfig::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
        SamplerConfig::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerConfig::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerConfig::ParentBasedTraceIdRatio(r) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
        }
    }
}

/// The tracer provider exporting to `endpoint` (the resolved traces URL); spans the
/// queue has no room for are counted on `meter`.
pub(crate) fn build(
    config: &TelemetryConfig,
    endpoint: &str,
    resource: Resource,
    meter: &Meter,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = export::configure(
        SpanExporter::builder().with_http(),
        &config.traces,
        endpoint,
    )?
    .build()
    .map_err(|e| export::build_error(e, endpoint))?;
    let failures = FailureLog::new("traces", redact_url(endpoint), config.new_relic);
    let processor = queue::processor(exporter, failures, &config.span_batch, meter);
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler(config.sampler))
        .with_span_processor(processor)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::Context;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};

    fn sampled(config: SamplerConfig, parent: Option<bool>) -> bool {
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampler(config))
            .build();
        let tracer = provider.tracer("test");
        let cx = match parent {
            None => Context::new(),
            Some(p) => {
                let flags = if p {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                };
                Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from(7u128),
                    SpanId::from(9u64),
                    flags,
                    true,
                    TraceState::default(),
                ))
            }
        };
        let span = tracer.start_with_context("s", &cx);
        opentelemetry::trace::Span::span_context(&span).is_sampled()
    }

    #[test]
    fn samplers_decide_as_configured() {
        assert!(sampled(SamplerConfig::AlwaysOn, Some(false)));
        assert!(!sampled(SamplerConfig::AlwaysOff, Some(true)));
        assert!(sampled(SamplerConfig::TraceIdRatio(1.0), None));
        assert!(!sampled(SamplerConfig::TraceIdRatio(0.0), Some(true)));
        assert!(sampled(SamplerConfig::ParentBasedAlwaysOn, None));
        assert!(!sampled(SamplerConfig::ParentBasedAlwaysOn, Some(false)));
        assert!(!sampled(SamplerConfig::ParentBasedAlwaysOff, None));
        assert!(sampled(SamplerConfig::ParentBasedAlwaysOff, Some(true)));
        assert!(!sampled(SamplerConfig::ParentBasedTraceIdRatio(0.0), None));
        assert!(sampled(
            SamplerConfig::ParentBasedTraceIdRatio(0.0),
            Some(true)
        ));
    }
}
