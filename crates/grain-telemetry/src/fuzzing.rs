//! Entry points for `cargo fuzz` (the `fuzz/` directory of the repository), compiled
//! only with the off-by-default feature `fuzzing`. A panic is a bug, and the fuzzer
//! reports it.
//!
//! - [`trace_context`]: the `traceparent` and `tracestate` headers of a grain call as
//!   a peer sends them, read by the W3C propagator every member uses.
#![doc(hidden)]

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;

use crate::propagation::w3c::W3cTraceContext;

/// `data` is `traceparent`, and after the first `\n` (if any) `tracestate`; call
/// headers are strings, so input that is not UTF-8 is not a header. What the W3C
/// propagator takes, it writes back and reads again the same; and the SDK's own
/// (more lenient) propagator reads the same context from it.
pub fn trace_context(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (traceparent, tracestate) = match text.split_once('\n') {
        Some((p, s)) => (p, Some(s)),
        None => (text, None),
    };
    let mut headers = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    if let Some(s) = tracestate {
        headers.insert("tracestate".to_string(), s.to_string());
    }
    let ours = W3cTraceContext;
    let cx = ours.extract(&headers);
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    let mut written = HashMap::new();
    ours.inject_context(&cx, &mut written);
    let again = ours.extract(&written);
    assert_eq!(
        again.span().span_context(),
        sc,
        "{headers:?} -> {written:?}"
    );
    let sdk = TraceContextPropagator::new().extract(&headers);
    let sdk_span = sdk.span();
    let theirs = sdk_span.span_context();
    assert_eq!(
        (theirs.trace_id(), theirs.span_id(), theirs.trace_flags()),
        (sc.trace_id(), sc.span_id(), sc.trace_flags()),
        "{headers:?}"
    );
}
