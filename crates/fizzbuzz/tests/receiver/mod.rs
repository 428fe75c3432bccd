//! An in-process OTLP/HTTP receiver for tests: it records every request, decodes it by
//! path (`/v1/metrics`, `/v1/traces`, `/v1/logs`) with the official generated types
//! (`opentelemetry-proto`), and answers what the test asks (200, or a failure status).
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod tree;

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

/// One request as received.
#[derive(Clone, Debug)]
pub struct Captured {
    pub path: String,
    pub content_type: String,
    pub content_encoding: String,
    pub api_key: Option<String>,
    pub headers: HashMap<String, String>,
    pub wire_bytes: usize,
    pub decoded_bytes: usize,
    /// The body, decompressed (empty if it could not be).
    pub body: Vec<u8>,
    /// The metrics, for a request to `/v1/metrics`.
    pub request: Option<ExportMetricsServiceRequest>,
    /// The spans, for a request to `/v1/traces`.
    pub traces: Option<ExportTraceServiceRequest>,
    /// The log records, for a request to `/v1/logs`.
    pub logs: Option<ExportLogsServiceRequest>,
    /// Why the body could not be decoded (or the path names no signal).
    pub error: Option<String>,
}

/// The signal a request's path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Metrics,
    Traces,
    Logs,
}

impl Signal {
    fn of(path: &str) -> Option<Signal> {
        match path {
            "/v1/metrics" => Some(Signal::Metrics),
            "/v1/traces" => Some(Signal::Traces),
            "/v1/logs" => Some(Signal::Logs),
            _ => None,
        }
    }

    /// The empty `Export*ServiceResponse` that acknowledges the whole request.
    fn response(self) -> Vec<u8> {
        match self {
            Signal::Metrics => ExportMetricsServiceResponse::default().encode_to_vec(),
            Signal::Traces => ExportTraceServiceResponse::default().encode_to_vec(),
            Signal::Logs => ExportLogsServiceResponse::default().encode_to_vec(),
        }
    }
}

/// What a decoded body holds: metrics, traces or logs.
type Decoded = (
    Option<ExportMetricsServiceRequest>,
    Option<ExportTraceServiceRequest>,
    Option<ExportLogsServiceRequest>,
);

fn decode_signal(signal: Signal, raw: &[u8]) -> Result<Decoded, prost::DecodeError> {
    Ok(match signal {
        Signal::Metrics => (Some(ExportMetricsServiceRequest::decode(raw)?), None, None),
        Signal::Traces => (None, Some(ExportTraceServiceRequest::decode(raw)?), None),
        Signal::Logs => (None, None, Some(ExportLogsServiceRequest::decode(raw)?)),
    })
}

#[derive(Default)]
struct State {
    captured: Vec<Captured>,
    status: Option<(u16, Option<String>)>,
}

/// A running receiver.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn decode(encoding: &str, body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .map(|_| out)
            .map_err(|e| format!("gzip: {e}")),
        "zstd" => zstd::stream::decode_all(body).map_err(|e| format!("zstd: {e}")),
        "" | "identity" => Ok(body.to_vec()),
        other => Err(format!("unknown content-encoding {other}")),
    }
}

impl Receiver {
    /// Starts on a free loopback port, answering 200.
    pub async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = shared.clone();
            async move { handle(state, uri, headers, body) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("receiver bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, state }
    }

    /// The base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer every request with `status` (and `Retry-After`), or 200 with `None`.
    pub fn respond_with(&self, status: Option<(u16, Option<&str>)>) {
        if let Ok(mut s) = self.state.lock() {
            s.status = status.map(|(c, r)| (c, r.map(str::to_string)));
        }
    }

    /// Everything received so far.
    pub fn captured(&self) -> Vec<Captured> {
        self.state
            .lock()
            .map(|s| s.captured.clone())
            .unwrap_or_default()
    }

    /// Polls (every 50 ms, for at most `within`) until `done` holds for what has been
    /// received; returns what was received last, whether or not it got there.
    pub async fn wait_for(
        &self,
        within: Duration,
        done: impl Fn(&[Captured]) -> bool,
    ) -> Vec<Captured> {
        let deadline = Instant::now() + within;
        loop {
            let captured = self.captured();
            if done(&captured) || Instant::now() >= deadline {
                return captured;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn handle(state: Arc<Mutex<State>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let encoding = header("content-encoding");
    let path = uri.path().to_string();
    let signal = Signal::of(&path);
    let none = (None, None, None);
    let (raw, decoded) = match decode(&encoding, &body) {
        Ok(raw) => {
            let decoded = signal.map(|s| decode_signal(s, &raw));
            (
                raw,
                decoded.ok_or_else(|| format!("no OTLP signal at {path}")),
            )
        }
        Err(e) => (Vec::new(), Err(e)),
    };
    let ((request, traces, logs), error) = match decoded {
        Ok(Ok(d)) => (d, None),
        Ok(Err(e)) => (none, Some(format!("protobuf: {e}"))),
        Err(e) => (none, Some(e)),
    };
    let decoded_bytes = raw.len();
    let captured = Captured {
        path,
        content_type: header("content-type"),
        content_encoding: encoding,
        api_key: headers
            .get("api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        wire_bytes: body.len(),
        decoded_bytes,
        body: raw,
        request,
        traces,
        logs,
        error,
    };
    let status = match state.lock() {
        Ok(mut s) => {
            s.captured.push(captured);
            s.status.clone()
        }
        Err(_) => None,
    };
    match status {
        Some((code, retry_after)) => {
            let mut r = (
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "refused by the test",
            )
                .into_response();
            if let Some(ra) = retry_after
                && let Ok(v) = ra.parse()
            {
                r.headers_mut().insert("retry-after", v);
            }
            r
        }
        None => match signal {
            Some(signal) => {
                let body = signal.response();
                ([("content-type", "application/x-protobuf")], body).into_response()
            }
            None => (StatusCode::NOT_FOUND, "no OTLP signal at this path").into_response(),
        },
    }
}

/// A string or integer attribute value, as text.
pub fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

pub fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

/// One data point, flattened.
#[derive(Clone, Debug)]
pub struct Point {
    pub resource: HashMap<String, String>,
    pub metric: String,
    pub unit: String,
    pub attributes: HashMap<String, String>,
    /// Sum or gauge value; histogram count.
    pub value: f64,
    /// 1 delta, 2 cumulative, 0 for gauges.
    pub temporality: i32,
    pub kind: &'static str,
}

/// Every data point of every metrics request received (trace and log requests have
/// none).
pub fn points(captured: &[Captured]) -> Vec<Point> {
    let mut out = Vec::new();
    for c in captured {
        let Some(req) = &c.request else { continue };
        for rm in &req.resource_metrics {
            let resource = rm
                .resource
                .as_ref()
                .map(|r| attrs(&r.attributes))
                .unwrap_or_default();
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    let mut push = |attributes: &[KeyValue],
                                    value: f64,
                                    temporality: i32,
                                    kind: &'static str| {
                        out.push(Point {
                            resource: resource.clone(),
                            metric: m.name.clone(),
                            unit: m.unit.clone(),
                            attributes: attrs(attributes),
                            value,
                            temporality,
                            kind,
                        });
                    };
                    let number = |v: &Option<number_data_point::Value>| match v {
                        Some(number_data_point::Value::AsInt(i)) => *i as f64,
                        Some(number_data_point::Value::AsDouble(d)) => *d,
                        None => 0.0,
                    };
                    match &m.data {
                        Some(metric::Data::Sum(s)) => {
                            for p in &s.data_points {
                                push(
                                    &p.attributes,
                                    number(&p.value),
                                    s.aggregation_temporality,
                                    "sum",
                                );
                            }
                        }
                        Some(metric::Data::Gauge(g)) => {
                            for p in &g.data_points {
                                push(&p.attributes, number(&p.value), 0, "gauge");
                            }
                        }
                        Some(metric::Data::Histogram(h)) => {
                            for p in &h.data_points {
                                push(
                                    &p.attributes,
                                    p.count as f64,
                                    h.aggregation_temporality,
                                    "histogram",
                                );
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    out
}

/// Lowercase hex, as trace and span ids are written (W3C, JSON logs); empty for no id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn service_of(resource: &Option<Resource>) -> String {
    resource
        .as_ref()
        .map(|r| attrs(&r.attributes))
        .and_then(|mut a| a.remove("service.name"))
        .unwrap_or_default()
}

/// One span event: its name and attributes.
#[derive(Clone, Debug)]
pub struct EventRec {
    pub name: String,
    pub attributes: HashMap<String, String>,
}

/// One span, flattened.
#[derive(Clone, Debug)]
pub struct SpanRec {
    /// The resource's `service.name`.
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// The proto's `SpanKind`: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// The proto's `StatusCode`: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    pub attributes: HashMap<String, String>,
    pub events: Vec<EventRec>,
}

/// Every span of every trace request received, in arrival order.
pub fn spans(captured: &[Captured]) -> Vec<SpanRec> {
    let mut out = Vec::new();
    for req in captured.iter().filter_map(|c| c.traces.as_ref()) {
        for rs in &req.resource_spans {
            let service = service_of(&rs.resource);
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                let status = span.status.clone().unwrap_or_default();
                out.push(SpanRec {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name.clone(),
                    kind: span.kind,
                    status_code: status.code,
                    status_message: status.message,
                    attributes: attrs(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|e| EventRec {
                            name: e.name.clone(),
                            attributes: attrs(&e.attributes),
                        })
                        .collect(),
                });
            }
        }
    }
    out
}

/// One log record, flattened.
#[derive(Clone, Debug)]
pub struct LogRec {
    /// The resource's `service.name`.
    pub service: String,
    pub severity_text: String,
    /// The body as text.
    pub body: String,
    /// Empty outside a span.
    pub trace_id: String,
    pub span_id: String,
    pub attributes: HashMap<String, String>,
}

/// Every record of every log request received, in arrival order.
pub fn log_records(captured: &[Captured]) -> Vec<LogRec> {
    let mut out = Vec::new();
    for req in captured.iter().filter_map(|c| c.logs.as_ref()) {
        for rl in &req.resource_logs {
            let service = service_of(&rl.resource);
            for r in rl.scope_logs.iter().flat_map(|sl| &sl.log_records) {
                out.push(LogRec {
                    service: service.clone(),
                    severity_text: r.severity_text.clone(),
                    body: text(&r.body),
                    trace_id: hex(&r.trace_id),
                    span_id: hex(&r.span_id),
                    attributes: attrs(&r.attributes),
                });
            }
        }
    }
    out
}
