//! W3C Trace Context (`traceparent`, `tracestate`), written and read without the
//! formatting machinery: every grain call carries it, sampled or not, so it is on the
//! hot path of each member. It writes what the SDK's `TraceContextPropagator` writes
//! (less an empty `tracestate`, which the W3C recommendation says not to send) and
//! reads `traceparent` as the recommendation defines it: version 00 exactly as
//! `00-{32 hex}-{16 hex}-{2 hex}`, lowercase, neither id all zeros; a later version
//! at least that, followed by `-` and more.

use std::str::FromStr;
use std::sync::OnceLock;

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
/// `00-` + 32 + `-` + 16 + `-` + 2.
const TRACEPARENT_LEN: usize = 55;

fn fields() -> &'static [String; 2] {
    static FIELDS: OnceLock<[String; 2]> = OnceLock::new();
    FIELDS.get_or_init(|| [TRACEPARENT.to_owned(), TRACESTATE.to_owned()])
}

/// The W3C Trace Context propagator (`OTEL_PROPAGATORS=tracecontext`).
#[derive(Clone, Debug, Default)]
pub(crate) struct W3cTraceContext;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lowercase hex into `out`, which holds twice as many bytes.
fn put_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        if let [hi, lo] = pair {
            *hi = HEX[usize::from(b >> 4)];
            *lo = HEX[usize::from(b & 0x0f)];
        }
    }
}

/// The `traceparent` of `sc` (valid), written into a buffer of its length: pushing
/// its 55 characters one by one into a `String` cost ten times as much.
fn traceparent(sc: &SpanContext) -> String {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let flags = [(sc.trace_flags() & TraceFlags::SAMPLED).to_u8()];
    put_hex(&mut out[3..35], &sc.trace_id().to_bytes());
    put_hex(&mut out[36..52], &sc.span_id().to_bytes());
    put_hex(&mut out[53..], &flags);
    // Hex digits and dashes only: always UTF-8 (checked on ASCII's fast path).
    std::str::from_utf8(&out).map_or_else(|_| String::new(), str::to_owned)
}

/// The value of one lowercase hex digit.
fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// `N` bytes from exactly `2 * N` lowercase hex digits.
fn bytes<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let hex = hex.as_bytes();
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *o = (digit(*hi)? << 4) | digit(*lo)?;
    }
    Some(out)
}

/// The trace id, span id and flags of a `traceparent` value, if it is a valid one.
fn parse(value: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let (head, rest) = (value.get(..TRACEPARENT_LEN)?, value.get(TRACEPARENT_LEN..)?);
    let dashes = head.as_bytes();
    if [2, 35, 52].iter().any(|&i| dashes.get(i) != Some(&b'-')) {
        return None;
    }
    let [version] = bytes::<1>(head.get(..2)?)?;
    let trace_id = TraceId::from_bytes(bytes::<16>(head.get(3..35)?)?);
    let span_id = SpanId::from_bytes(bytes::<8>(head.get(36..52)?)?);
    let [flags] = bytes::<1>(head.get(53..)?)?;
    let valid_version = match version {
        0 => rest.is_empty(),
        0xff => false,
        // A later version: what follows the flags is its own.
        _ => rest.is_empty() || rest.starts_with('-'),
    };
    (valid_version && trace_id != TraceId::INVALID && span_id != SpanId::INVALID).then(|| {
        (
            trace_id,
            span_id,
            TraceFlags::new(flags) & TraceFlags::SAMPLED,
        )
    })
}

impl TextMapPropagator for W3cTraceContext {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        injector.set(TRACEPARENT, traceparent(sc));
        if *sc.trace_state() != TraceState::NONE {
            let state = sc.trace_state().header();
            if !state.is_empty() {
                injector.set(TRACESTATE, state);
            }
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let Some((trace_id, span_id, flags)) = extractor.get(TRACEPARENT).and_then(parse) else {
            return cx.clone();
        };
        let state = extractor
            .get(TRACESTATE)
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default();
        cx.with_remote_span_context(SpanContext::new(trace_id, span_id, flags, true, state))
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(fields())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use std::collections::HashMap;

    fn context(trace: u128, span: u64, flags: u8, state: &str) -> Context {
        let state = TraceState::from_str(state).unwrap_or_default();
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::new(flags),
            true,
            state,
        ))
    }

    fn inject(p: &dyn TextMapPropagator, cx: &Context) -> HashMap<String, String> {
        let mut h = HashMap::new();
        p.inject_context(cx, &mut h);
        // The SDK writes an empty tracestate; the recommendation says not to send one.
        h.retain(|k, v| k != TRACESTATE || !v.is_empty());
        h
    }

    fn extract(p: &dyn TextMapPropagator, traceparent: &str, state: Option<&str>) -> SpanContext {
        let mut h = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
        if let Some(s) = state {
            h.insert(TRACESTATE.to_string(), s.to_string());
        }
        p.extract(&h).span().span_context().clone()
    }

    /// A few thousand contexts from a small generator: ids with leading zeros and high
    /// bits, each flag byte, with and without a trace state.
    fn contexts() -> impl Iterator<Item = Context> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..4096u32).map(move |i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let shift = i % 64;
            let trace = (u128::from(x) << 64 | u128::from(x.rotate_left(17))) >> shift;
            let span = (x.rotate_left(31) >> (shift / 2)) | 1;
            let state = if i % 3 == 0 {
                "vendor=a1,other=b-2"
            } else {
                ""
            };
            context(trace | 1, span, (i % 256) as u8, state)
        })
    }

    #[test]
    fn it_writes_what_the_sdk_writes_and_reads_it_back() {
        let sdk = TraceContextPropagator::new();
        for cx in contexts() {
            let ours = inject(&W3cTraceContext, &cx);
            assert_eq!(ours, inject(&sdk, &cx));
            let want = cx.span().span_context().clone();
            let tp = &ours[TRACEPARENT];
            let state = ours.get(TRACESTATE).map(String::as_str);
            let got = extract(&W3cTraceContext, tp, state);
            assert_eq!(got.trace_id(), want.trace_id(), "{tp}");
            assert_eq!(got.span_id(), want.span_id(), "{tp}");
            assert_eq!(got.is_sampled(), want.is_sampled(), "{tp}");
            assert_eq!(got.trace_state(), want.trace_state(), "{tp}");
            assert!(got.is_remote());
            assert_eq!(got, extract(&sdk, tp, state), "{tp}");
        }
    }

    #[test]
    fn it_writes_nothing_for_an_invalid_context() {
        assert!(inject(&W3cTraceContext, &Context::new()).is_empty());
    }

    #[test]
    fn it_reads_the_recommendations_examples_and_later_versions() {
        let sc = extract(
            &W3cTraceContext,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        );
        assert_eq!(
            sc.trace_id(),
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736)
        );
        assert_eq!(sc.span_id(), SpanId::from(0x00f0_67aa_0ba9_02b7));
        assert!(sc.is_sampled());
        assert_eq!(sc.trace_state().get("congo"), Some("t61rcWkgMzE"));
        // Flags other than sampled are not kept; a later version may carry more.
        for tp in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\t",
        ] {
            let sc = extract(&W3cTraceContext, tp, None);
            assert!(sc.is_valid(), "{tp:?}");
            assert_eq!(sc.trace_flags(), TraceFlags::SAMPLED, "{tp:?}");
        }
        // A bad tracestate is dropped; the traceparent still holds.
        let sc = extract(
            &W3cTraceContext,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            Some("vendor=a,no-equals-sign"),
        );
        assert!(sc.is_valid() && !sc.is_sampled());
        assert_eq!(*sc.trace_state(), TraceState::default());
    }

    #[test]
    fn it_refuses_what_the_recommendation_refuses() {
        for tp in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902é-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        ] {
            let sc = extract(&W3cTraceContext, tp, Some("a=b"));
            assert!(!sc.is_valid(), "{tp:?} was taken as {sc:?}");
        }
    }
}
