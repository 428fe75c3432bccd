//! An in-process OTLP/HTTP receiver for tests: it records every request, decodes it
//! with the official generated types (`opentelemetry-proto`), and answers what the test
//! asks (200, or a failure status).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
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
    pub request: Option<ExportMetricsServiceRequest>,
    pub error: Option<String>,
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
    let (request, decoded_bytes, error) = match decode(&encoding, &body) {
        Ok(raw) => match ExportMetricsServiceRequest::decode(raw.as_slice()) {
            Ok(r) => (Some(r), raw.len(), None),
            Err(e) => (None, raw.len(), Some(format!("protobuf: {e}"))),
        },
        Err(e) => (None, 0, Some(e)),
    };
    let captured = Captured {
        path: uri.path().to_string(),
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
        request,
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
        None => {
            let body = ExportMetricsServiceResponse::default().encode_to_vec();
            ([("content-type", "application/x-protobuf")], body).into_response()
        }
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

/// Every data point of every request received.
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
