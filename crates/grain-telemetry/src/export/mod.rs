//! The OTLP/HTTP exporters (opentelemetry-otlp's, with their retries and `Retry-After`
//! handling), configured the same way for every signal — our blocking HTTP client that
//! sets the resolved headers last, the resolved compression and timeout, the endpoint
//! used as is — and wrapped so that export trouble is explained in the log
//! ([`failures`]) and never reaches the application. The metrics wrapper is here; the
//! span and log wrappers sit with their pipelines.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_otlp::{MetricExporter, Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;

use crate::TelemetryError;
use crate::config::{Compression, SignalConfig, TemporalityPreference};
use crate::redact::redact_url;

mod failures;

pub(crate) use failures::FailureLog;

/// Applies `signal`'s settings, with `endpoint` used as is, to an OTLP/HTTP exporter
/// builder of any signal.
pub(crate) fn configure<B>(
    builder: B,
    signal: &SignalConfig,
    endpoint: &str,
) -> Result<B, TelemetryError>
where
    B: WithExportConfig + WithHttpConfig,
{
    let headers: HashMap<String, String> = signal
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    // Our own client, which sets the resolved headers last: the library also adds the
    // OTEL_EXPORTER_OTLP_*HEADERS variables itself, and flags must win over them.
    let client = reqwest::blocking::Client::builder()
        .timeout(signal.timeout)
        .build()
        .map_err(|e| TelemetryError::Exporter(format!("cannot build the HTTP client: {e}")))?;
    let fixed = fixed_headers(&headers);
    let builder = builder
        .with_http_client(HeaderClient {
            inner: client,
            headers: fixed,
        })
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(signal.timeout)
        .with_headers(headers);
    Ok(match signal.compression {
        Compression::Gzip => builder.with_compression(opentelemetry_otlp::Compression::Gzip),
        Compression::Zstd => builder.with_compression(opentelemetry_otlp::Compression::Zstd),
        Compression::None => builder,
    })
}

/// The resolved headers as the HTTP client sets them. Every value is marked sensitive
/// (an `api-key`, an `Authorization`, …): kept out of `Debug` and of HTTP/2 header
/// compression tables.
fn fixed_headers(headers: &HashMap<String, String>) -> Vec<(http::HeaderName, http::HeaderValue)> {
    headers
        .iter()
        .filter_map(|(k, v)| {
            let mut value = http::HeaderValue::from_str(v).ok()?;
            value.set_sensitive(true);
            Some((http::HeaderName::from_bytes(k.as_bytes()).ok()?, value))
        })
        .collect()
}

/// An exporter build error, with the endpoint (which the library's message may quote)
/// redacted.
pub(crate) fn build_error(error: impl std::fmt::Display, endpoint: &str) -> TelemetryError {
    TelemetryError::Exporter(error.to_string().replace(endpoint, &redact_url(endpoint)))
}

/// The metrics exporter: OTLP/HTTP to `endpoint` with `signal`'s settings.
pub(crate) fn build_metrics(
    signal: &SignalConfig,
    endpoint: &str,
    temporality: TemporalityPreference,
    new_relic: bool,
) -> Result<GuardedExporter, TelemetryError> {
    let temporality = match temporality {
        TemporalityPreference::Cumulative => Temporality::Cumulative,
        TemporalityPreference::Delta => Temporality::Delta,
        TemporalityPreference::LowMemory => Temporality::LowMemory,
    };
    let inner = configure(MetricExporter::builder().with_http(), signal, endpoint)?
        .with_temporality(temporality)
        .build()
        .map_err(|e| build_error(e, endpoint))?;
    Ok(GuardedExporter {
        inner,
        failures: FailureLog::new("metrics", redact_url(endpoint), new_relic),
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

/// The metrics exporter the periodic reader drives.
pub(crate) struct GuardedExporter {
    inner: MetricExporter,
    failures: FailureLog,
}

impl std::fmt::Debug for GuardedExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedExporter")
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl PushMetricExporter for GuardedExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.failures.record(&result);
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
    fn every_header_the_client_sets_is_sensitive_and_hidden_from_debug() {
        let headers = HashMap::from([
            ("api-key".to_string(), "license-0123456789".to_string()),
            ("x-team".to_string(), "blue".to_string()),
        ]);
        let fixed = fixed_headers(&headers);
        assert_eq!(fixed.len(), 2);
        for (name, value) in &fixed {
            assert!(value.is_sensitive(), "{name} is not marked sensitive");
        }
        let client = HeaderClient {
            inner: reqwest::blocking::Client::new(),
            headers: fixed.clone(),
        };
        let shown = format!("{client:?} {fixed:?}");
        assert!(!shown.contains("license-0123456789"), "{shown}");
        assert!(shown.contains("api-key"), "{shown}");
    }
}
