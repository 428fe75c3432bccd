//! An OTLP/HTTP sink in the bench's own process, for the telemetry overhead figures:
//! it answers 200 (an empty protobuf answer: all accepted) to `POST /v1/metrics`,
//! `/v1/traces` and `/v1/logs`, and counts the requests and bytes of each, so that a
//! figure can tell that something was really exported. Nothing is decoded: the cost
//! measured is the nodes' own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;

use crate::AppError;

/// Requests and bytes (as sent, compressed) received on one signal's path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Received {
    /// Requests.
    pub(super) requests: u64,
    /// Body bytes.
    pub(super) bytes: u64,
}

impl std::ops::Sub for Received {
    type Output = Received;

    fn sub(self, earlier: Received) -> Received {
        Received {
            requests: self.requests.saturating_sub(earlier.requests),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

#[derive(Default)]
struct Counter {
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl Counter {
    fn add(&self, bytes: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn read(&self) -> Received {
        Received {
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

#[derive(Default)]
struct Counters {
    metrics: Counter,
    traces: Counter,
    logs: Counter,
}

/// What the sink received so far, by signal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Totals {
    /// `/v1/metrics`.
    pub(super) metrics: Received,
    /// `/v1/traces`.
    pub(super) traces: Received,
    /// `/v1/logs`.
    pub(super) logs: Received,
}

impl std::ops::Sub for Totals {
    type Output = Totals;

    fn sub(self, earlier: Totals) -> Totals {
        Totals {
            metrics: self.metrics - earlier.metrics,
            traces: self.traces - earlier.traces,
            logs: self.logs - earlier.logs,
        }
    }
}

/// A running sink; stops when dropped.
pub(super) struct Sink {
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

/// The largest body taken (bigger than any export batch the SDK sends).
const BODY_LIMIT: usize = 64 * 1024 * 1024;

async fn take(
    State((counters, signal)): State<(Arc<Counters>, Signal)>,
    body: Bytes,
) -> impl IntoResponse {
    let counter = match signal {
        Signal::Metrics => &counters.metrics,
        Signal::Traces => &counters.traces,
        Signal::Logs => &counters.logs,
    };
    counter.add(body.len());
    // An empty Export*ServiceResponse: everything accepted.
    (
        StatusCode::OK,
        [("content-type", "application/x-protobuf")],
        Bytes::new(),
    )
}

#[derive(Clone, Copy, Debug)]
enum Signal {
    Metrics,
    Traces,
    Logs,
}

impl Sink {
    /// Starts on a free loopback port.
    pub(super) async fn start() -> Result<Sink, AppError> {
        let counters = Arc::new(Counters::default());
        let route = |signal: Signal| post(take).with_state((counters.clone(), signal));
        let app = Router::new()
            .route("/v1/metrics", route(Signal::Metrics))
            .route("/v1/traces", route(Signal::Traces))
            .route("/v1/logs", route(Signal::Logs))
            .layer(DefaultBodyLimit::max(BODY_LIMIT));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| AppError::Failed(format!("the OTLP sink cannot listen: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| AppError::Failed(format!("the OTLP sink: {e}")))?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("bench: the OTLP sink failed: {e}");
            }
        });
        Ok(Sink {
            addr,
            counters,
            task,
        })
    }

    /// The base URL, as `--otlp-endpoint` takes it.
    pub(super) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What was received so far.
    pub(super) fn totals(&self) -> Totals {
        Totals {
            metrics: self.counters.metrics.read(),
            traces: self.counters.traces.read(),
            logs: self.counters.logs.read(),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sink_counts_what_each_path_receives() {
        let sink = Sink::start().await.unwrap_or_else(|e| panic!("{e}"));
        let post = |path: &str, body: &'static [u8]| {
            let url = format!("{}{path}", sink.endpoint());
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let rest = url.trim_start_matches("http://");
                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                let mut s = tokio::net::TcpStream::connect(host)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let head = format!(
                    "POST /{path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                s.write_all(body).await.unwrap_or_else(|e| panic!("{e}"));
                let mut answer = String::new();
                s.read_to_string(&mut answer)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                answer
            }
        };
        let before = sink.totals();
        assert!(
            post("/v1/metrics", b"abc")
                .await
                .starts_with("HTTP/1.1 200")
        );
        assert!(
            post("/v1/traces", b"hello")
                .await
                .starts_with("HTTP/1.1 200")
        );
        assert!(post("/v1/other", b"x").await.starts_with("HTTP/1.1 404"));
        let got = sink.totals() - before;
        assert_eq!(
            got.metrics,
            Received {
                requests: 1,
                bytes: 3
            }
        );
        assert_eq!(
            got.traces,
            Received {
                requests: 1,
                bytes: 5
            }
        );
        assert_eq!(got.logs, Received::default());
    }
}
