//! How a node is set up: [`NodeConfig`], plain data checked by [`NodeConfig::validate`]
//! (and by `Node::start`, which also checks the kinds with `validate_kinds`).

use std::net::SocketAddr;
use std::time::Duration;

use crate::call::{Backoff, CallOptions};
use crate::grain::Kind;

/// The most bytes of a call's addressing (kind, identity, method and headers together)
/// and of a failure's message. With the payload limit, this keeps every envelope
/// within `max_message_bytes`, so one oversized call cannot break the stream that other
/// calls share.
pub(crate) const MAX_ENVELOPE_META_BYTES: usize = 64 << 10;

/// How a node is set up. Plain data: build it, then [`NodeConfig::validate`] (done by
/// [`crate::Node::start`] too).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The cluster's name; members of other clusters are refused. Default
    /// `grain-cluster`.
    pub cluster_name: String,
    /// This member's id; default: a random id prefixed with `member_prefix`.
    pub member_id: Option<String>,
    /// The prefix of a random member id (e.g. the role, `fizz`). Default `member`.
    pub member_prefix: String,
    /// Where the gRPC server listens. Default `127.0.0.1:0` (loopback, any free port).
    pub bind: SocketAddr,
    /// The `host:port` other members use to reach this one. Default: the bound address
    /// (required when binding an unspecified address such as `0.0.0.0`).
    pub advertise: Option<String>,
    /// The options of calls made without explicit options.
    pub call_defaults: CallOptions,
    /// Calls a peer may have in flight on this member at once; more wait (backpressure).
    pub max_inflight_per_peer: usize,
    /// Payload bytes a peer may have in flight on this member at once (over all its
    /// streams); requests past it wait, unread, until earlier ones are answered (HTTP/2
    /// flow control then holds the peer back). A request larger than the budget takes
    /// all of it. Default 64 MiB; at most 4 GiB.
    pub max_inflight_bytes_per_peer: usize,
    /// Streams one peer (by member id) may have open to this member at once; more are
    /// refused with `RESOURCE_EXHAUSTED` and a log line. A member opens one per peer
    /// (two while it reconnects). Default 8.
    pub max_streams_per_peer: usize,
    /// Requests queued per outbound link before callers wait.
    pub outbound_queue: usize,
    /// Payload bytes queued per outbound link (not yet written to the peer) before
    /// callers wait, within their deadline. A payload larger than the budget takes all
    /// of it. Default 64 MiB; at most 4 GiB.
    pub outbound_queue_bytes: usize,
    /// The most envelopes written as one batch.
    pub max_batch: usize,
    /// The largest gRPC message, in bytes, sent or accepted.
    pub max_message_bytes: usize,
    /// The largest request or response payload, in bytes.
    pub max_payload_bytes: usize,
    /// How long connecting (and handshaking) with a peer may take.
    pub connect_timeout: Duration,
    /// Pauses between reconnection attempts.
    pub reconnect_backoff: Backoff,
    /// How long a blocking membership query waits.
    pub membership_wait: Duration,
    /// The shortest pause between two membership queries.
    pub membership_min_interval: Duration,
    /// How long a graceful shutdown waits for in-flight calls and passivation.
    pub shutdown_grace: Duration,
    /// How long a grain's `activated` hook (at most, within its call's deadline) and its
    /// `deactivated` hook may run. Default 5 s.
    pub hook_timeout: Duration,
    /// Where the runtime records its metrics ([`crate::metrics::CATALOG`]); `None`
    /// records nothing. Binaries build it from their own `MeterProvider`; nothing is
    /// read from a global.
    pub meter: Option<opentelemetry::metrics::Meter>,
    /// Where the runtime records the spans of grain calls and with which propagator
    /// their trace context travels ([`crate::trace`]); `None` records no span (trace
    /// context a grain receives still passes on to its nested calls). Nothing is read
    /// from a global.
    pub tracing: Option<crate::trace::Tracing>,
    /// TLS between members ([`crate::tls`]); `None`: plaintext HTTP/2, for loopback
    /// and trusted networks. Every member of a cluster must use the same.
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            cluster_name: "grain-cluster".into(),
            member_id: None,
            member_prefix: "member".into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            call_defaults: CallOptions::default(),
            max_inflight_per_peer: 10_000,
            max_inflight_bytes_per_peer: 64 << 20,
            max_streams_per_peer: 8,
            outbound_queue: 10_000,
            outbound_queue_bytes: 64 << 20,
            max_batch: 256,
            max_message_bytes: 16 << 20,
            max_payload_bytes: 4 << 20,
            connect_timeout: Duration::from_secs(2),
            reconnect_backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_secs(5),
                multiplier: 2,
            },
            membership_wait: Duration::from_secs(30),
            membership_min_interval: Duration::from_millis(20),
            shutdown_grace: Duration::from_secs(10),
            hook_timeout: Duration::from_secs(5),
            meter: None,
            tracing: None,
            tls: None,
        }
    }
}

impl NodeConfig {
    /// Checks the configuration; the message names the wrong setting.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !name_ok(&self.cluster_name) {
            return Err(format!(
                "cluster_name {:?} must be 1-128 characters of letters, digits, '-', '_' or '.'",
                self.cluster_name
            ));
        }
        if let Some(id) = &self.member_id
            && !name_ok(id)
        {
            return Err(format!(
                "member_id {id:?} must be 1-128 characters of letters, digits, '-', '_' or '.'"
            ));
        }
        if !name_ok(&self.member_prefix) {
            return Err(format!(
                "member_prefix {:?} is not a valid name",
                self.member_prefix
            ));
        }
        if self.bind.ip().is_unspecified() && self.advertise.is_none() {
            return Err(format!(
                "bind address {} listens on every interface: set advertise to the host:port other members should use",
                self.bind
            ));
        }
        if let Some(a) = &self.advertise {
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(format!(
                    "advertise {a:?} must be host:port with a non-zero port"
                ));
            }
        }
        self.call_defaults
            .validate()
            .map_err(|e| format!("call_defaults: {e}"))?;
        self.reconnect_backoff
            .validate()
            .map_err(|e| format!("reconnect_backoff: {e}"))?;
        let positive = [
            ("max_inflight_per_peer", self.max_inflight_per_peer),
            (
                "max_inflight_bytes_per_peer",
                self.max_inflight_bytes_per_peer,
            ),
            ("max_streams_per_peer", self.max_streams_per_peer),
            ("outbound_queue", self.outbound_queue),
            ("outbound_queue_bytes", self.outbound_queue_bytes),
            ("max_batch", self.max_batch),
            ("max_payload_bytes", self.max_payload_bytes),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        for (name, v) in [
            (
                "max_inflight_bytes_per_peer",
                self.max_inflight_bytes_per_peer,
            ),
            ("outbound_queue_bytes", self.outbound_queue_bytes),
        ] {
            if u32::try_from(v).is_err() {
                return Err(format!("{name} must be at most 4 GiB (4294967295 bytes)"));
            }
        }
        let room = MAX_ENVELOPE_META_BYTES + 1024;
        if self.max_message_bytes < self.max_payload_bytes.saturating_add(room) {
            return Err(format!(
                "max_message_bytes must exceed max_payload_bytes by at least {} KiB \
                 (room for the kind, identity, method and headers of a call)",
                room >> 10
            ));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("membership_wait", self.membership_wait),
            ("shutdown_grace", self.shutdown_grace),
            ("hook_timeout", self.hook_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        Ok(())
    }
}

/// Checks the kinds a node is to host: each name once, every idle timeout positive.
pub(crate) fn validate_kinds(kinds: &[Kind]) -> Result<(), String> {
    let mut names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("kind {} is registered twice", w[0]));
    }
    if let Some(k) = kinds.iter().find(|k| k.idle_timeout.is_zero()) {
        return Err(format!(
            "kind {}: idle_timeout must be greater than zero",
            k.name()
        ));
    }
    Ok(())
}
