//! Traces of grain calls, recorded through the `opentelemetry` API on the tracer and
//! propagator handed to the node ([`Tracing`], in [`crate::NodeConfig::tracing`]); no
//! global is read.
//!
//! A call makes, following OpenTelemetry's RPC conventions (span name = `rpc.method`,
//! such as `fizzbuzz.v1.FizzService/SayFizz`):
//! - on the caller, a CLIENT span around all its attempts, retries as `retry` events;
//! - on the owner, a SERVER span from the call's arrival to its answer, and an
//!   INTERNAL span `activate {kind}` when the call caused an activation.
//!
//! The trace context travels in each envelope's headers (never per stream), injected
//! and extracted by the propagator (W3C `traceparent` by default). Attributes are set
//! only on spans that record: an unsampled call builds no attribute.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use opentelemetry::global::BoxedTracer;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, SpanRef, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

use crate::error::CallError;
use crate::grain::Code;
use crate::identity::{ClusterIdentity, Member, MemberId};

/// What the runtime records spans on and carries trace context with. Binaries build it
/// from their own tracer provider (`grain-telemetry` does); `None` in
/// [`crate::NodeConfig::tracing`] records nothing and costs nothing.
#[derive(Clone)]
pub struct Tracing {
    tracer: Arc<BoxedTracer>,
    propagator: Arc<dyn TextMapPropagator + Send + Sync>,
    /// The sampler never samples a span whose parent is not sampled.
    follows_parent: bool,
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing")
            .field("propagator", &self.propagator)
            .finish_non_exhaustive()
    }
}

/// The `rpc.system.name` of grain calls: they are protobuf methods with gRPC status
/// codes, carried over gRPC streams.
pub const RPC_SYSTEM: &str = "grpc";

/// Header keys of the standard propagation formats (W3C trace context and baggage, B3
/// single and multi): what a grain's nested call carries on when this member records
/// no spans itself.
const CONTEXT_HEADERS: &[&str] = &[
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

impl Tracing {
    /// Spans go to `tracer`; trace context is injected into and extracted from call
    /// headers by `propagator`.
    pub fn new(tracer: BoxedTracer, propagator: Arc<dyn TextMapPropagator + Send + Sync>) -> Self {
        Self {
            tracer: Arc::new(tracer),
            propagator,
            follows_parent: false,
        }
    }

    /// Says that the tracer's sampler never samples a span whose parent is not sampled
    /// (OpenTelemetry's parent-based samplers do not, nor does `always_off`). Then a
    /// call under an unsampled parent makes no span object at all: it passes its
    /// parent's context on, with the sampled flag off — the same trace, as cheaply as
    /// it can be carried.
    pub fn parent_based(mut self, follows_parent: bool) -> Self {
        self.follows_parent = follows_parent;
        self
    }

    /// The tracer spans are recorded on (for an application's own spans around calls:
    /// a call made inside a span's context is its child).
    pub fn tracer(&self) -> &BoxedTracer {
        &self.tracer
    }

    /// The context `headers` carry, if they carry a valid one.
    fn extract(&self, headers: &HashMap<String, String>) -> Option<Context> {
        if headers.is_empty() {
            return None;
        }
        let cx = self.propagator.extract(&Carrier(headers));
        cx.span().span_context().is_valid().then_some(cx)
    }

    /// Replaces whatever trace context `headers` carry with `cx`.
    pub(crate) fn inject(&self, cx: &Context, headers: &mut HashMap<String, String>) {
        if !headers.is_empty() {
            for field in self.propagator.fields() {
                headers.remove(field);
            }
        }
        self.propagator.inject_context(cx, &mut Headers(headers));
    }

    /// Whether a span under `parent` would record nothing, so that `parent`'s context
    /// is carried on instead (its span does not record either, so ending it later
    /// changes nothing).
    fn passes_on(&self, parent: &Context) -> bool {
        self.follows_parent && {
            let span = parent.span();
            let sc = span.span_context();
            sc.is_valid() && !sc.is_sampled()
        }
    }

    fn start(&self, name: &str, kind: SpanKind, parent: &Context) -> Context {
        if self.passes_on(parent) {
            return parent.clone();
        }
        let builder = self
            .tracer
            .span_builder(Cow::Owned(name.to_string()))
            .with_kind(kind);
        let span = self.tracer.build_with_context(builder, parent);
        parent.with_span(span)
    }

    /// Starts the CLIENT span of a call of `method` on `id`: a child of the context in
    /// `headers`, else of the current context. Also says whether the call's future must
    /// run in the returned context: not when it is the current one, carried on.
    pub(crate) fn client_span(
        &self,
        id: &ClusterIdentity,
        method: &str,
        headers: &HashMap<String, String>,
        caller: &MemberId,
    ) -> (Context, bool) {
        let (parent, current) = match self.extract(headers) {
            Some(cx) => (cx, false),
            None => (Context::current(), true),
        };
        if current && self.passes_on(&parent) {
            return (parent, false);
        }
        let cx = self.start(method, SpanKind::Client, &parent);
        let span = cx.span();
        if span.is_recording() {
            span.set_attributes(call_attributes(id, method));
            span.set_attribute(KeyValue::new("grain.caller.member_id", caller.to_string()));
        }
        (cx, true)
    }

    /// Starts the SERVER span of an arriving call: a child of the context its headers
    /// carry (a root when they carry none).
    pub(crate) fn server_span(
        &self,
        id: &ClusterIdentity,
        method: &str,
        headers: &HashMap<String, String>,
        me: &Member,
        caller: Option<&MemberId>,
    ) -> Context {
        let parent = self.extract(headers).unwrap_or_default();
        let cx = self.start(method, SpanKind::Server, &parent);
        let span = cx.span();
        if span.is_recording() {
            span.set_attributes(call_attributes(id, method));
            span.set_attributes(address_attributes(&me.address));
            span.set_attribute(KeyValue::new("grain.owner.member_id", me.id.to_string()));
            if let Some(c) = caller {
                span.set_attribute(KeyValue::new("grain.caller.member_id", c.to_string()));
            }
        }
        cx
    }

    /// Starts the INTERNAL span of activating `id` under `parent` (the SERVER span of
    /// the call that caused it); `None` unless that span records.
    pub(crate) fn activation_span(
        &self,
        parent: &Context,
        id: &ClusterIdentity,
        me: &MemberId,
    ) -> Option<Context> {
        if !parent.span().is_recording() {
            return None;
        }
        let cx = self.start(
            &format!("activate {}", id.kind()),
            SpanKind::Internal,
            parent,
        );
        cx.span().set_attributes([
            KeyValue::new("grain.kind", id.kind().to_string()),
            KeyValue::new("grain.identity", id.identity().to_string()),
            KeyValue::new("grain.owner.member_id", me.to_string()),
        ]);
        Some(cx)
    }

    /// The headers a call made while handling one carries: the trace context of the
    /// span `cx` when this member records spans.
    pub(crate) fn nested_headers(&self, cx: &Context) -> HashMap<String, String> {
        let mut headers = HashMap::new();
        self.propagator
            .inject_context(cx, &mut Headers(&mut headers));
        headers
    }
}

/// Call headers as the propagators read them. (The `opentelemetry` crate's own reader
/// of a `HashMap` lowercases every key it is asked for into a new `String`, then hashes
/// it; the keys propagators ask for are lowercase already, and a call carries a few
/// headers, which are found sooner by comparing them than by hashing.)
struct Carrier<'a>(&'a HashMap<String, String>);

/// Up to this many headers are searched one by one.
const SCANNED: usize = 8;

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if !lowercase_ascii(key) {
            return self.0.get(&key.to_lowercase()).map(String::as_str);
        }
        if self.0.len() <= SCANNED {
            self.0
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
        } else {
            self.0.get(key).map(String::as_str)
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Whether `key` is ASCII with no capital: what propagators read and write, so it
/// needs no lowercased copy.
fn lowercase_ascii(key: &str) -> bool {
    key.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase())
}

/// Call headers as the propagators write them: keys lowercased, as the `opentelemetry`
/// crate's writer of a `HashMap` does (which also allocates a lowercased copy of keys
/// that are lowercase already), and no empty `tracestate`: the SDK's W3C propagator
/// writes one, which means nothing and would cost every envelope an entry.
struct Headers<'a>(&'a mut HashMap<String, String>);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() && key.eq_ignore_ascii_case("tracestate") {
            return;
        }
        let key = if lowercase_ascii(key) {
            key.to_owned()
        } else {
            key.to_lowercase()
        };
        self.0.insert(key, value);
    }
}

/// The trace-context headers among `incoming`, for a nested call of a member that
/// records no spans: the context passes through it unchanged.
pub(crate) fn context_headers(incoming: &HashMap<String, String>) -> HashMap<String, String> {
    incoming
        .iter()
        .filter(|(k, _)| CONTEXT_HEADERS.iter().any(|c| c.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn call_attributes(id: &ClusterIdentity, method: &str) -> [KeyValue; 4] {
    [
        KeyValue::new("rpc.system.name", RPC_SYSTEM),
        KeyValue::new("rpc.method", method.to_string()),
        KeyValue::new("grain.kind", id.kind().to_string()),
        KeyValue::new("grain.identity", id.identity().to_string()),
    ]
}

/// `server.address` and `server.port` of a `host:port` address (IPv6 in brackets).
pub(crate) fn address_attributes(address: &str) -> Vec<KeyValue> {
    match address.rsplit_once(':') {
        Some((host, port)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let mut v = vec![KeyValue::new("server.address", host.to_string())];
            if let Ok(p) = port.parse::<u16>() {
                v.push(KeyValue::new("server.port", i64::from(p)));
            }
            v
        }
        None => vec![KeyValue::new("server.address", address.to_string())],
    }
}

/// Records a retry on the CLIENT span `cx`.
pub(crate) fn retried(cx: &Context, attempt: u32, reason: &'static str, error: &CallError) {
    let span = cx.span();
    if span.is_recording() {
        span.add_event(
            "retry",
            vec![
                KeyValue::new("grain.retry.attempt", i64::from(attempt)),
                KeyValue::new("grain.retry.reason", reason),
                KeyValue::new("error.type", code_name(error.code())),
                KeyValue::new("error.message", error.to_string()),
            ],
        );
    }
}

/// Ends the CLIENT span `cx` with the call's outcome, the last owner tried and the
/// number of attempts.
pub(crate) fn end_client<T>(
    cx: &Context,
    result: &Result<T, CallError>,
    owner: Option<&Member>,
    attempts: u32,
) {
    let span = cx.span();
    if span.is_recording() {
        if let Some(o) = owner {
            span.set_attributes(address_attributes(&o.address));
            span.set_attribute(KeyValue::new("grain.owner.member_id", o.id.to_string()));
        }
        span.set_attribute(KeyValue::new("grain.attempts", i64::from(attempts)));
        set_outcome(&span, result, SpanKind::Client);
    }
    span.end();
}

/// Ends the SERVER span `cx` with the call's outcome.
pub(crate) fn end_server<T>(cx: &Context, result: &Result<T, CallError>) {
    end(cx, result, SpanKind::Server);
}

/// Ends the INTERNAL span `cx` (an activation) with its outcome: any failure is an
/// error.
pub(crate) fn end_internal<T>(cx: &Context, result: &Result<T, CallError>) {
    end(cx, result, SpanKind::Internal);
}

fn end<T>(cx: &Context, result: &Result<T, CallError>, kind: SpanKind) {
    let span = cx.span();
    if span.is_recording() {
        set_outcome(&span, result, kind);
    }
    span.end();
}

fn set_outcome<T>(span: &SpanRef<'_>, result: &Result<T, CallError>, kind: SpanKind) {
    match result {
        Ok(_) => span.set_attribute(KeyValue::new("rpc.response.status_code", "OK")),
        Err(e) => {
            let code = e.code();
            span.set_attribute(KeyValue::new("rpc.response.status_code", code_name(code)));
            if is_error(code, &kind) {
                span.set_attribute(KeyValue::new("error.type", code_name(code)));
                span.set_status(Status::error(e.to_string()));
            }
        }
    }
}

/// Whether `code` makes a span of `kind` an error, per OpenTelemetry's gRPC
/// conventions: every non-OK code on the client; on the server only the codes that
/// mean the server failed.
fn is_error(code: Code, kind: &SpanKind) -> bool {
    match kind {
        SpanKind::Server => matches!(
            code,
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        ),
        _ => code != Code::Ok,
    }
}

/// The name of a gRPC status code, as `rpc.response.status_code` wants it.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        let text = |v: Vec<KeyValue>| {
            v.iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            text(address_attributes("10.0.0.1:4000")),
            "server.address=10.0.0.1 server.port=4000"
        );
        assert_eq!(
            text(address_attributes("[::1]:9")),
            "server.address=::1 server.port=9"
        );
        assert_eq!(text(address_attributes("fizz")), "server.address=fizz");
    }

    #[test]
    fn server_spans_are_errors_only_for_server_faults() {
        assert!(is_error(Code::Internal, &SpanKind::Server));
        assert!(!is_error(Code::InvalidArgument, &SpanKind::Server));
        assert!(is_error(Code::InvalidArgument, &SpanKind::Client));
        assert!(!is_error(Code::Ok, &SpanKind::Client));
    }

    #[test]
    fn the_carrier_finds_headers_in_small_and_large_maps() {
        for n in [1usize, SCANNED, SCANNED + 1, 40] {
            let mut headers: HashMap<String, String> =
                (0..n).map(|i| (format!("h{i}"), format!("v{i}"))).collect();
            headers.insert("traceparent".into(), "tp".into());
            let c = Carrier(&headers);
            assert_eq!(c.get("traceparent"), Some("tp"), "{n} headers");
            assert_eq!(c.get("TraceParent"), Some("tp"), "{n} headers");
            assert_eq!(
                c.get(&format!("h{}", n - 1)),
                Some(format!("v{}", n - 1).as_str())
            );
            assert_eq!(c.get("tracestate"), None, "{n} headers");
            assert_eq!(c.keys().len(), n + 1);
        }
    }

    #[test]
    fn headers_are_written_lowercase_without_an_empty_tracestate() {
        let mut headers = HashMap::new();
        let mut h = Headers(&mut headers);
        h.set("traceparent", "tp".into());
        h.set("X-B3-Sampled", "1".into());
        h.set("Ünïcode-Key", "u".into());
        h.set("tracestate", String::new());
        h.set("baggage", String::new());
        let want: HashMap<String, String> = [
            ("traceparent", "tp"),
            ("x-b3-sampled", "1"),
            ("ünïcode-key", "u"),
            ("baggage", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(headers, want);
        let mut headers = HashMap::new();
        Headers(&mut headers).set("tracestate", "a=1".into());
        assert_eq!(headers.get("tracestate").map(String::as_str), Some("a=1"));
    }

    #[test]
    fn only_trace_context_headers_pass_through() {
        let incoming: HashMap<String, String> = [
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("X-B3-Sampled", "1"),
            ("authorization", "secret"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let out = context_headers(&incoming);
        assert!(out.contains_key("traceparent"));
        assert!(out.contains_key("X-B3-Sampled"));
        assert!(!out.contains_key("authorization"));
    }
}
