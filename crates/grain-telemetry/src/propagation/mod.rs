//! Context propagation: the configured propagators (`OTEL_PROPAGATORS`) as one
//! composite, handed to the runtime whether or not traces are exported, so a node that
//! exports nothing still passes its callers' context on.

// The B3 propagator lives in the Zipkin crate, deprecated as a whole for its exporter;
// the propagator itself has no other home in this OpenTelemetry release.
#![allow(deprecated)]

pub(crate) mod w3c;

use std::sync::Arc;

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry_sdk::propagation::BaggagePropagator;
use opentelemetry_zipkin::{B3Encoding, Propagator as B3Propagator};

use crate::config::PropagatorKind;

/// The composite of `kinds`, in order; `none` (or an empty list) propagates nothing.
pub(crate) fn build(kinds: &[PropagatorKind]) -> Arc<dyn TextMapPropagator + Send + Sync> {
    let propagators: Vec<Box<dyn TextMapPropagator + Send + Sync>> = kinds
        .iter()
        .filter_map(|kind| -> Option<Box<dyn TextMapPropagator + Send + Sync>> {
            match kind {
                PropagatorKind::TraceContext => Some(Box::new(w3c::W3cTraceContext)),
                PropagatorKind::Baggage => Some(Box::new(BaggagePropagator::new())),
                PropagatorKind::B3 => Some(Box::new(B3Single(B3Propagator::with_encoding(
                    B3Encoding::SingleHeader,
                )))),
                PropagatorKind::B3Multi => Some(Box::new(B3Propagator::with_encoding(
                    B3Encoding::MultipleHeader,
                ))),
                PropagatorKind::None => None,
            }
        })
        .collect();
    Arc::new(TextMapCompositePropagator::new(propagators))
}

/// The B3 header of the single-header format.
const B3_SINGLE: &str = "b3";

/// B3 in its single header only. (The Zipkin propagator with `SingleHeader` writes the
/// `X-B3-*` headers too: its encoding check treats every encoding as "unspecified".)
#[derive(Debug)]
struct B3Single(B3Propagator);

/// Passes on the `b3` header only.
struct SingleHeaderOnly<'a>(&'a mut dyn Injector);

impl Injector for SingleHeaderOnly<'_> {
    fn set(&mut self, key: &str, value: String) {
        if key.eq_ignore_ascii_case(B3_SINGLE) {
            self.0.set(key, value);
        }
    }
}

impl TextMapPropagator for B3Single {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        self.0.inject_context(cx, &mut SingleHeaderOnly(injector));
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        self.0.extract_with_context(cx, extractor)
    }

    fn fields(&self) -> FieldIter<'_> {
        self.0.fields()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry::baggage::BaggageExt;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use std::collections::HashMap;

    fn context() -> Context {
        Context::new()
            .with_remote_span_context(SpanContext::new(
                TraceId::from(0x0af7651916cd43dd8448eb211c80319cu128),
                SpanId::from(0xb7ad6b7169203331u64),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ))
            .with_baggage(vec![KeyValue::new("tenant", "blue")])
    }

    fn injected(kinds: &[PropagatorKind]) -> HashMap<String, String> {
        let mut carrier = HashMap::new();
        build(kinds).inject_context(&context(), &mut carrier);
        carrier
    }

    #[test]
    fn each_kind_writes_its_own_headers_and_none_writes_nothing() {
        let both = injected(&[PropagatorKind::TraceContext, PropagatorKind::Baggage]);
        assert!(both.contains_key("traceparent"), "{both:?}");
        assert!(both.contains_key("baggage"), "{both:?}");
        let b3 = injected(&[PropagatorKind::B3]);
        assert!(
            b3.contains_key("b3") && !b3.contains_key("x-b3-traceid"),
            "{b3:?}"
        );
        let multi = injected(&[PropagatorKind::B3Multi]);
        assert!(
            multi.contains_key("x-b3-traceid") && !multi.contains_key("b3"),
            "{multi:?}"
        );
        assert!(injected(&[PropagatorKind::None]).is_empty());
    }

    #[test]
    fn what_is_injected_is_extracted_again() {
        for kinds in [
            &[PropagatorKind::TraceContext][..],
            &[PropagatorKind::B3][..],
            &[PropagatorKind::B3Multi][..],
        ] {
            let carrier = injected(kinds);
            let cx = build(kinds).extract(&carrier);
            assert_eq!(
                cx.span().span_context().trace_id(),
                context().span().span_context().trace_id(),
                "{kinds:?}"
            );
        }
    }
}
