//! A small client for the Consul agent HTTP API (hyper, HTTP/1.1).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};

use crate::config::Token;
use crate::tls::ConsulTls;

/// Why a request to Consul failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// No answer: connection refused, reset, or timed out.
    #[error("cannot reach Consul at {address}: {reason}")]
    Unreachable {
        /// The agent address.
        address: String,
        /// What happened.
        reason: String,
    },
    /// Consul answered with an error status.
    #[error("Consul answered {status} to {what}: {body}")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The request, e.g. `PUT /v1/agent/service/register`.
        what: String,
        /// Consul's message.
        body: String,
    },
    /// The request could not be built (e.g. a token with characters HTTP headers cannot
    /// carry); retrying will not help.
    #[error("invalid request to Consul: {0}")]
    InvalidRequest(String),
    /// The answer could not be decoded.
    #[error("cannot decode Consul's answer to {what}: {reason}")]
    Decode {
        /// The request.
        what: String,
        /// What was wrong.
        reason: String,
    },
}

/// An answer: status, headers, body.
pub(crate) struct Answer {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Percent-encodes a path segment or query value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Clone)]
pub(crate) struct ConsulClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    token: Option<Token>,
}

impl ConsulClient {
    /// A client of the agent at `base` (`http://…` or `https://…`, HTTPS set up as
    /// `tls` says); errors name the TLS setting that is wrong.
    pub(crate) fn new(base: String, token: Option<Token>, tls: &ConsulTls) -> Result<Self, String> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.enforce_http(false);
        let https = base.starts_with("https://");
        let config = if https {
            tls.client_config()?
        } else {
            // Never used for an http:// agent; no file is read.
            ConsulTls {
                verify: false,
                ..ConsulTls::default()
            }
            .client_config()?
        };
        let builder = HttpsConnectorBuilder::new().with_tls_config(config);
        let builder = if https {
            builder.https_only()
        } else {
            builder.https_or_http()
        };
        let builder = match tls.server_name()? {
            Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
            None => builder,
        };
        let connector = builder.enable_http1().wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self { http, base, token })
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request; a non-2xx status is an error.
    pub(crate) async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Answer, ConsulError> {
        let what = format!(
            "{method} {}",
            path_and_query.split('?').next().unwrap_or("")
        );
        let unreachable = |reason: String| ConsulError::Unreachable {
            address: self.base.clone(),
            reason,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.base));
        if let Some(t) = &self.token {
            // Marked sensitive: kept out of `Debug` and of HTTP/2 header compression.
            let mut value = http::HeaderValue::from_str(t.expose()).map_err(|_| {
                ConsulError::InvalidRequest(format!(
                    "{what}: the ACL token holds characters an HTTP header cannot carry \
                     (check CONSUL_HTTP_TOKEN)"
                ))
            })?;
            value.set_sensitive(true);
            req = req.header("X-Consul-Token", value);
        }
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            // The error names the part that failed, never the token's value.
            .map_err(|e| {
                ConsulError::InvalidRequest(format!(
                    "{what}: {e} (check CONSUL_HTTP_TOKEN and the address)"
                ))
            })?;
        let response = tokio::time::timeout(timeout, self.http.request(req))
            .await
            .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
            .map_err(|e| unreachable(error_chain(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = tokio::time::timeout(timeout, response.into_body().collect())
            .await
            .map_err(|_| unreachable(format!("answer not complete within {timeout:?}")))?
            .map_err(|e| unreachable(format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(ConsulError::Status {
                status,
                what,
                body: cut(String::from_utf8_lossy(&body).trim(), MAX_ERROR_BODY),
            });
        }
        Ok(Answer { headers, body })
    }
}

/// How much of an error body [`ConsulError::Status`] keeps, in bytes.
pub(crate) const MAX_ERROR_BODY: usize = 500;

/// What ends a body that was cut.
pub(crate) const CUT_MARKER: &str = "… (cut)";

/// `text` if it is at most `max` bytes long, else its longest prefix of at most `max`
/// bytes that ends on a character boundary, followed by [`CUT_MARKER`].
pub(crate) fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let end = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}{CUT_MARKER}", &text[..end])
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_cut_on_a_character_boundary_with_a_marker() {
        // Byte 500 falls inside the first 'é' (two bytes: 499 and 500).
        let body = format!("{}{}", "a".repeat(499), "é".repeat(10));
        let cut_body = cut(&body, MAX_ERROR_BODY);
        assert_eq!(cut_body, format!("{}{CUT_MARKER}", "a".repeat(499)));
        // Four-byte characters straddling the limit at every offset.
        for pad in 0..4 {
            let body = format!("{}{}", "a".repeat(497 + pad), "😀".repeat(3));
            let c = cut(&body, MAX_ERROR_BODY);
            let kept = c
                .strip_suffix(CUT_MARKER)
                .unwrap_or_else(|| panic!("{c:?}"));
            assert!(kept.len() <= MAX_ERROR_BODY && body.starts_with(kept));
        }
        assert_eq!(cut("short", MAX_ERROR_BODY), "short");
        let exact = "é".repeat(250);
        assert_eq!(cut(&exact, MAX_ERROR_BODY), exact);
    }
}
