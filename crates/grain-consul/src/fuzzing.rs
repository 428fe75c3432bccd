//! Entry points for `cargo fuzz` (the `fuzz/` directory of the repository), compiled
//! only with the off-by-default feature `fuzzing` (which turns on `dev-agent`). Each
//! takes bytes as they come off the network and runs the code that reads them; none
//! panics on any input (a panic is a bug, and the fuzzer reports it).
//!
//! - [`health_reply`]: Consul's answer to `GET /v1/health/service/<cluster>`, decoded
//!   into members one entry at a time as the provider does, and as the API shapes.
//! - [`go_duration`]: a Go duration (`TTL`, `DeregisterCriticalServiceAfter`, `wait`).
//! - [`agent_requests`]: HTTP requests to the dev agent — paths, query strings
//!   (`index`, `wait`, `passing`, `dc`, `token`, `note`, `replace-existing-checks`),
//!   headers and JSON bodies — served by its real router and state.
//!
//! The dev agent runs on a single-threaded runtime whose clock is paused (time moves
//! only when every task waits), so blocking queries and TTLs cost no real time.
#![doc(hidden)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use hyper::service::Service;
use hyper_util::service::TowerToHyperService;

use crate::agent::state::AgentState;
use crate::agent::{DevAgentConfig, router};
use crate::api::{ServiceEntry, format_go_duration, parse_go_duration};
use crate::config::Token;

/// The ACL token of the fuzzed dev agent (requests without it are refused).
pub const TOKEN: &str = "fuzz-token";

/// The line that separates requests in [`agent_requests`]' input.
pub const SEPARATOR: &str = "\n###\n";

/// Decodes `bytes` as Consul's health answer: into members and skipped entries (the
/// provider's decoding) and into [`ServiceEntry`]s.
pub fn health_reply(bytes: &[u8]) {
    if let Ok((members, skipped)) = crate::health::members_of(bytes) {
        let _ = (members.len(), skipped.len());
    }
    let _ = serde_json::from_slice::<Vec<ServiceEntry>>(bytes);
}

/// Parses `bytes` (as UTF-8) as a Go duration, and what it formats to back again.
pub fn go_duration(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Some(d) = parse_go_duration(text) {
        let _ = parse_go_duration(&format_go_duration(d));
    }
}

/// Serves `bytes` as a sequence of HTTP requests (separated by [`SEPARATOR`]) to a
/// fresh dev agent whose ACL token is [`TOKEN`]. A request is written as in HTTP/1.1,
/// loosely: `METHOD /path?query`, then `Name: value` header lines, an empty line and
/// the body. A request that HTTP could not carry (bad method, target or header) is
/// left out. Between requests a second passes, and expired TTLs and reaping are
/// checked.
pub fn agent_requests(bytes: &[u8]) {
    let Ok(runtime) = runtime() else { return };
    runtime.block_on(serve(bytes));
}

fn runtime() -> Result<&'static tokio::runtime::Runtime, &'static std::io::Error> {
    static RUNTIME: OnceLock<std::io::Result<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
        })
        .as_ref()
}

async fn serve(bytes: &[u8]) {
    let config = DevAgentConfig {
        token: Some(Token::new(TOKEN)),
        min_deregister_critical_after: Duration::from_secs(1),
        ..DevAgentConfig::default()
    };
    let state = Arc::new(AgentState::new(
        &config,
        SocketAddr::from(([127, 0, 0, 1], 8500)),
    ));
    let service = TowerToHyperService::new(router(state.clone()));
    for text in split(bytes, SEPARATOR.as_bytes()) {
        if let Some(request) = request_of(text) {
            let Ok(response) = service.call(request).await;
            let _ = axum::body::to_bytes(response.into_body(), 1 << 20).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        state.sweep();
    }
}

/// The pieces of `bytes` between occurrences of `sep`.
fn split<'a>(bytes: &'a [u8], sep: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let now = rest?;
        match now.windows(sep.len()).position(|w| w == sep) {
            Some(i) => {
                rest = now.get(i + sep.len()..);
                now.get(..i)
            }
            None => {
                rest = None;
                Some(now)
            }
        }
    })
}

/// One request written as described at [`agent_requests`], if HTTP could carry it.
fn request_of(text: &[u8]) -> Option<http::Request<Body>> {
    let (head, body) = match text.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (text.get(..i)?, text.get(i + 2..)?),
        None => (text, &[][..]),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let start = lines.next()?;
    let (method, target) = match start.iter().position(|b| *b == b' ') {
        Some(i) => (start.get(..i)?, start.get(i + 1..)?),
        None => (start, &b"/"[..]),
    };
    let mut builder = http::Request::builder()
        .method(http::Method::from_bytes(method).ok()?)
        .uri(http::Uri::try_from(target).ok()?);
    for line in lines {
        let i = line.iter().position(|b| *b == b':')?;
        let name = http::HeaderName::from_bytes(line.get(..i)?).ok()?;
        let value = line.get(i + 1..)?;
        let value = value.strip_prefix(b" ").unwrap_or(value);
        builder = builder.header(name, http::HeaderValue::from_bytes(value).ok()?);
    }
    builder.body(Body::from(body.to_vec())).ok()
}
