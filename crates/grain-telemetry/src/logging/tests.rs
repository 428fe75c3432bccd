//! The line formats, written into memory under a scoped subscriber (never the global
//! one), inside and outside an OpenTelemetry span context.

use std::io;
use std::sync::{Arc, Mutex};

use opentelemetry::Context;
use opentelemetry::trace::{Span as _, SpanContext, TraceContextExt, Tracer, TracerProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

use super::format::LineFormat;
use super::{LogFormat, init_logging};

/// Lines written into memory.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| panic!("buffer: {e}"));
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| panic!("buffer: {e}"))
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// What `f` logs in `format`.
fn capture(format: LogFormat, f: impl FnOnce()) -> String {
    let buffer = Buffer::default();
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(buffer.clone())
        .with_ansi(false)
        .event_format(LineFormat::from(format));
    let subscriber = tracing_subscriber::registry().with(lines);
    tracing::subscriber::with_default(subscriber, f);
    buffer.text()
}

/// Runs `f` inside the context of a fresh sampled span; returns that span's context.
fn in_span_context(f: impl FnOnce()) -> SpanContext {
    let provider = SdkTracerProvider::builder().build();
    let span = provider.tracer("test").start("call");
    let sc = span.span_context().clone();
    assert!(sc.is_valid());
    let _attached = Context::current_with_span(span).attach();
    f();
    sc
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn a_json_line_in_a_span_context_carries_its_ids_and_typed_fields() {
    let mut sc = None;
    let out = capture(LogFormat::Json, || {
        sc = Some(in_span_context(|| {
            tracing::info!(grain = "counter", n = 3, ok = true, ratio = 0.5, "served");
        }));
    });
    let sc = sc.unwrap_or_else(|| panic!("no span context"));
    let line = parse(out.trim_end());
    let trace_id = line["trace_id"].as_str().unwrap_or_default();
    let span_id = line["span_id"].as_str().unwrap_or_default();
    assert_eq!(trace_id, sc.trace_id().to_string());
    assert_eq!(span_id, sc.span_id().to_string());
    assert!(is_lower_hex(trace_id, 32), "{trace_id}");
    assert!(is_lower_hex(span_id, 16), "{span_id}");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "served");
    assert_eq!(line["target"], module_path!());
    assert_eq!(line["fields"]["grain"], "counter");
    assert_eq!(line["fields"]["n"], 3);
    assert_eq!(line["fields"]["ok"], true);
    assert_eq!(line["fields"]["ratio"], 0.5);
    assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
}

#[test]
fn a_json_line_outside_a_span_context_has_no_ids() {
    let out = capture(LogFormat::Json, || tracing::warn!(n = 1, "alone"));
    let line = parse(out.trim_end());
    assert!(line.get("trace_id").is_none(), "{line}");
    assert!(line.get("span_id").is_none(), "{line}");
    assert_eq!(line["message"], "alone");
}

#[test]
fn quotes_and_newlines_stay_one_valid_json_line() {
    let message = "say \"hi\"\nthen {leave} \\ \u{1b}[31m";
    let out = capture(LogFormat::Json, || {
        tracing::error!(detail = "a \"quoted\"\nvalue", "{message}");
    });
    assert_eq!(out.lines().count(), 1, "{out}");
    let line = parse(out.trim_end());
    assert_eq!(line["message"], message);
    assert_eq!(line["fields"]["detail"], "a \"quoted\"\nvalue");
}

#[test]
fn the_human_line_has_level_target_spans_fields_and_ids() {
    let mut sc = None;
    let out = capture(LogFormat::Human, || {
        let outer = tracing::info_span!("outer", member = 7);
        let _outer = outer.enter();
        let inner = tracing::info_span!("inner");
        let _inner = inner.enter();
        sc = Some(in_span_context(|| {
            tracing::info!(grain = "counter", "served")
        }));
    });
    let sc = sc.unwrap_or_else(|| panic!("no span context"));
    let line = out.trim_end();
    assert!(line.contains(" INFO outer{member=7}:inner: "), "{line}");
    assert!(
        line.contains(&format!("{}: served grain=\"counter\"", module_path!())),
        "{line}"
    );
    assert!(
        line.ends_with(&format!(
            " trace_id={} span_id={}",
            sc.trace_id(),
            sc.span_id()
        )),
        "{line}"
    );
    let outside = capture(LogFormat::Human, || tracing::info!("alone"));
    assert!(!outside.contains("trace_id="), "{outside}");
}

#[test]
fn log_formats_parse_in_any_case_and_print_back() {
    for (text, want) in [
        ("human", LogFormat::Human),
        ("TEXT", LogFormat::Human),
        ("Json", LogFormat::Json),
    ] {
        let got: LogFormat = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(got, want);
        let again: LogFormat = got
            .to_string()
            .parse()
            .unwrap_or_else(|e| panic!("{got}: {e}"));
        assert_eq!(again, got);
    }
    let e = "yaml"
        .parse::<LogFormat>()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("human") && e.contains("json"), "{e}");
}

#[test]
fn init_logging_twice_is_fine_and_a_bad_filter_names_the_flag() {
    let e = init_logging("grain=loud", LogFormat::Human)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("--log-level"), "{e}");
    for format in [LogFormat::Human, LogFormat::Json] {
        if let Err(e) = init_logging("warn", format) {
            panic!("{format}: {e}");
        }
    }
}

#[test]
fn the_export_machinery_is_not_exported_but_everything_else_is() {
    for target in [
        "hyper",
        "hyper_util::client",
        "reqwest::connect",
        "h2::codec",
        "opentelemetry_sdk",
        "opentelemetry-otlp",
        "rustls::client",
    ] {
        let exported = !super::is_export_machinery(target);
        assert_eq!(exported, target == "opentelemetry-otlp", "{target}");
    }
    for target in [
        "fizzbuzz::grains",
        "grain::cluster",
        "hyperion",
        "tonic::transport",
    ] {
        assert!(!super::is_export_machinery(target), "{target}");
    }
}
