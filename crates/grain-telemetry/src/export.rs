//! The OTLP/HTTP exporter (opentelemetry-otlp's, with its retries and `Retry-After`
//! handling), wrapped so that export trouble is explained in the log once per kind of
//! failure per minute, never with a header value, and never reaches the application.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry_otlp::{MetricExporter, Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;

use crate::TelemetryError;
use crate::config::{Compression, TelemetryConfig, TemporalityPreference};
use crate::redact::redact_url;

/// How often the same kind of failure is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

pub(crate) fn build(
    config: &TelemetryConfig,
    endpoint: &str,
) -> Result<GuardedExporter, TelemetryError> {
    let headers: HashMap<String, String> = config
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    let temporality = match config.temporality {
        TemporalityPreference::Cumulative => Temporality::Cumulative,
        TemporalityPreference::Delta => Temporality::Delta,
        TemporalityPreference::LowMemory => Temporality::LowMemory,
    };
    // Our own client, which sets the resolved headers last: the library also adds the
    // OTEL_EXPORTER_OTLP_*HEADERS variables itself, and flags must win over them.
    let client = reqwest::blocking::Client::builder()
        .timeout(config.timeout)
        .build()
        .map_err(|e| TelemetryError::Exporter(format!("cannot build the HTTP client: {e}")))?;
    let fixed = headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                http::HeaderName::from_bytes(k.as_bytes()).ok()?,
                http::HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect();
    let mut builder = MetricExporter::builder()
        .with_http()
        .with_http_client(HeaderClient {
            inner: client,
            headers: fixed,
        })
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(config.timeout)
        .with_headers(headers);
    builder = match config.compression {
        Compression::Gzip => builder.with_compression(opentelemetry_otlp::Compression::Gzip),
        Compression::Zstd => builder.with_compression(opentelemetry_otlp::Compression::Zstd),
        Compression::None => builder,
    };
    let inner = builder
        .with_temporality(temporality)
        .build()
        // The library's message may quote the endpoint: say only which one, redacted.
        .map_err(|e| {
            let text = e.to_string().replace(endpoint, &redact_url(endpoint));
            TelemetryError::Exporter(text)
        })?;
    Ok(GuardedExporter {
        inner,
        endpoint: redact_url(endpoint),
        new_relic: config.new_relic,
        log: Mutex::new(LogState::default()),
    })
}

/// The blocking HTTP client, setting the resolved headers on every request.
struct HeaderClient {
    inner: reqwest::blocking::Client,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl std::fmt::Debug for HeaderClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("HeaderClient")
            .field("headers", &names)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for HeaderClient {
    async fn send_bytes(
        &self,
        mut request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        for (k, v) in &self.headers {
            request.headers_mut().insert(k.clone(), v.clone());
        }
        self.inner.send_bytes(request).await
    }
}

#[derive(Default)]
struct LogState {
    last_logged: HashMap<&'static str, Instant>,
    failing: bool,
}

/// What an export failure means, for a human.
pub(crate) fn explain(error: &str, new_relic: bool) -> (&'static str, String) {
    let status = error
        .rsplit("status code: ")
        .next()
        .filter(|_| error.contains("status code: "))
        .and_then(|s| s.trim().get(..3))
        .and_then(|s| s.parse::<u16>().ok());
    let key = if new_relic {
        "the license key"
    } else {
        "the api key or token"
    };
    match status {
        Some(401) => ("401", "401: the backend wants credentials; none were accepted (set NEW_RELIC_LICENSE_KEY or an api-key header)".to_string()),
        Some(403) => ("403", format!("403: {key} was rejected")),
        Some(404) => ("404", "404: nothing answers at this path; the metrics URL usually ends in /v1/metrics".into()),
        Some(413) => ("413", "413: the payload is too large for the backend".into()),
        Some(429) => ("429", "429: the backend is rate-limiting us; retried after its Retry-After, then dropped".into()),
        Some(s) if (500..600).contains(&s) => ("5xx", format!("{s}: the backend failed; retried, then dropped")),
        Some(s) => ("other", format!("{s}: the backend refused the export")),
        None if error.contains("network error") => (
            "network",
            "cannot reach the endpoint (connection refused, DNS or TLS failure); retried, then dropped".into(),
        ),
        None if error.to_ascii_lowercase().contains("timed out") || error.to_ascii_lowercase().contains("timeout") => {
            ("timeout", "the export timed out".into())
        }
        None => ("other", "the export failed".into()),
    }
}

/// The exporter the periodic reader drives.
pub(crate) struct GuardedExporter {
    inner: MetricExporter,
    endpoint: String,
    new_relic: bool,
    log: Mutex<LogState>,
}

impl std::fmt::Debug for GuardedExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedExporter")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl GuardedExporter {
    fn record(&self, result: &OTelSdkResult) {
        let Ok(mut log) = self.log.lock() else {
            return;
        };
        match result {
            Ok(()) => {
                if log.failing {
                    log.failing = false;
                    // Rate-limited like the failures, so a flapping endpoint stays quiet.
                    let now = Instant::now();
                    let due = log
                        .last_logged
                        .get("recovered")
                        .is_none_or(|t| now.duration_since(*t) >= LOG_EVERY);
                    if due {
                        log.last_logged.insert("recovered", now);
                        tracing::info!(endpoint = %self.endpoint, "metrics export works again");
                    }
                }
            }
            Err(e) => {
                log.failing = true;
                let (kind, meaning) = explain(&e.to_string(), self.new_relic);
                let now = Instant::now();
                let due = log
                    .last_logged
                    .get(kind)
                    .is_none_or(|t| now.duration_since(*t) >= LOG_EVERY);
                if due {
                    log.last_logged.insert(kind, now);
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        "metrics export failed: {meaning}; these metrics are dropped and the cluster \
                         carries on (logged at most once a minute)"
                    );
                }
            }
        }
    }
}

impl PushMetricExporter for GuardedExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.record(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_explained_by_status() {
        let table: &[(&str, bool, &str, &str)] = &[
            (
                "HTTP export failed with status code: 403",
                true,
                "403",
                "the license key was rejected",
            ),
            (
                "HTTP export failed with status code: 403",
                false,
                "403",
                "the api key or token was rejected",
            ),
            (
                "HTTP export failed with status code: 401",
                true,
                "401",
                "credentials",
            ),
            (
                "HTTP export failed with status code: 404",
                true,
                "404",
                "/v1/metrics",
            ),
            (
                "HTTP export failed with status code: 413",
                true,
                "413",
                "too large",
            ),
            (
                "HTTP export failed with status code: 429",
                true,
                "429",
                "rate-limiting",
            ),
            (
                "HTTP export failed with status code: 503",
                true,
                "5xx",
                "503",
            ),
            (
                "HTTP export failed: network error",
                true,
                "network",
                "cannot reach",
            ),
        ];
        for (error, nr, kind, says) in table {
            let (k, meaning) = explain(error, *nr);
            assert_eq!(k, *kind, "{error}");
            assert!(meaning.contains(says), "{error}: {meaning}");
        }
    }
}
