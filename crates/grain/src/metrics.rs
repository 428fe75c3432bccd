//! Every instrument the runtime records, in one place.
//!
//! Names follow Proto.Actor's current set (`protoactor_*`, `protoremote_*`,
//! `protocluster_*`) so existing dashboards and habits carry over; `grain_*` names are
//! what Proto.Actor lacks. Units follow OpenTelemetry (`s`, `By`, `{call}`).
//!
//! Recording goes through the `opentelemetry` API only, on the [`Meter`] handed to the
//! node ([`crate::NodeConfig::meter`]); without one, instruments are no-ops. No global
//! provider is read and no per-activation callback is registered: live counts are
//! up-down counters moved at activation and passivation, so nothing leaks when grains
//! come and go. The one count that moves twice per call, the calls queued per kind, is
//! an atomic per hosted kind that one callback reads at export.
//!
//! Attributes stay bounded: series add `kind`, `method`, `outcome`, `peer`, `reason` or
//! `source` — never a grain identity. Which member recorded a series is not an
//! attribute: it belongs on the meter provider's Resource (`service.instance.id`, as
//! the binaries set it), once, rather than on every data point. [`CATALOG`] lists them all; `docs/metrics.md` is kept equal to it
//! by a test.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    Counter, Gauge, Histogram, InstrumentProvider, Meter, ObservableUpDownCounter, UpDownCounter,
};
use parking_lot::Mutex;

use crate::grain::Code;
use crate::identity::Member;

/// The kind of an instrument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstrumentKind {
    /// A monotonic sum.
    Counter,
    /// A sum that goes up and down.
    UpDownCounter,
    /// A distribution.
    Histogram,
    /// The last value.
    Gauge,
}

impl InstrumentKind {
    /// The word used in `docs/metrics.md`.
    pub fn as_str(self) -> &'static str {
        match self {
            InstrumentKind::Counter => "counter",
            InstrumentKind::UpDownCounter => "updowncounter",
            InstrumentKind::Histogram => "histogram",
            InstrumentKind::Gauge => "gauge",
        }
    }
}

/// One instrument of the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstrumentDef {
    /// The metric name.
    pub name: &'static str,
    /// Counter, up-down counter, histogram or gauge.
    pub kind: InstrumentKind,
    /// The OpenTelemetry unit.
    pub unit: &'static str,
    /// The attributes of its data points.
    pub attributes: &'static [&'static str],
    /// What it means.
    pub description: &'static str,
}

macro_rules! catalog {
    ($($id:ident = $name:literal, $kind:ident, $unit:literal, [$($attr:literal),*], $desc:literal;)*) => {
        /// Instrument names, as constants.
        pub mod names {
            $(
                #[doc = $desc]
                pub const $id: &str = $name;
            )*
        }
        /// Every instrument the runtime records.
        pub const CATALOG: &[InstrumentDef] = &[
            $(InstrumentDef {
                name: $name,
                kind: InstrumentKind::$kind,
                unit: $unit,
                attributes: &[$($attr),*],
                description: $desc,
            },)*
        ];
    };
}

catalog! {
    ACTOR_SPAWN = "protoactor_actor_spawn_count", Counter, "{activation}", ["kind"],
        "Grain activations started.";
    ACTOR_STOPPED = "protoactor_actor_stopped_count", Counter, "{activation}", ["kind"],
        "Grain activations stopped (idle passivation, shutdown, or after a failure).";
    ACTOR_RESTARTED = "protoactor_actor_restarted_count", Counter, "{activation}", ["kind"],
        "Grain activations discarded after a failure, to be activated afresh by the next call.";
    ACTOR_FAILURE = "protoactor_actor_failure_count", Counter, "{failure}", ["kind"],
        "Panics in grain methods or activation hooks, and failed activations.";
    ACTOR_RECEIVE = "protoactor_actor_messagereceive_duration", Histogram, "s", ["kind", "method", "outcome"],
        "Time a grain spent handling one call.";
    ACTOR_MAILBOX = "protoactor_actor_mailbox_length", UpDownCounter, "{call}", ["kind"],
        "Calls waiting in activation mailboxes.";
    DEADLETTER = "protoactor_deadletter_count", Counter, "{message}", ["reason"],
        "Answers that found no caller (it had given up) and calls that found no activation.";
    FUTURE_STARTED = "protoactor_future_started_count", Counter, "{call}", ["kind", "method"],
        "Grain calls started by this member.";
    FUTURE_COMPLETED = "protoactor_future_completed_count", Counter, "{call}", ["kind", "method", "outcome"],
        "Grain calls that completed (with an answer or an error other than a timeout).";
    FUTURE_TIMEDOUT = "protoactor_future_timedout_count", Counter, "{call}", ["kind", "method"],
        "Grain calls that timed out.";
    REMOTE_SERIALIZE = "protoremote_message_serialize_count", Counter, "{message}", ["message"],
        "Envelopes written to peers (requests by callers, responses by callees).";
    REMOTE_DESERIALIZE = "protoremote_message_deserialize_count", Counter, "{message}", ["message"],
        "Envelopes read from peers.";
    REMOTE_CONNECTED = "protoremote_endpoint_connected_count", Counter, "{connection}", ["peer"],
        "Links to peers established.";
    REMOTE_DISCONNECTED = "protoremote_endpoint_disconnected_count", Counter, "{connection}", ["peer", "reason"],
        "Links to peers lost or closed.";
    REMOTE_WRITE = "protoremote_write_duration", Histogram, "s", [],
        "Time a batch waited for the peer stream to accept it (backpressure).";
    CLUSTER_SPAWN = "protocluster_virtualactor_spawn_duration", Histogram, "s", ["kind"],
        "Time to activate a grain (its activated hook).";
    CLUSTER_REQUEST = "protocluster_virtualactor_requestasync_duration", Histogram, "s", ["kind", "method", "source", "outcome"],
        "Duration of grain calls made by this member; source says whether the owner came from the placement cache or a lookup.";
    CLUSTER_RETRY = "protocluster_virtualactor_requestasync_retry_count", Counter, "{retry}", ["kind", "method", "reason"],
        "Retries of grain calls that provably did not run.";
    CLUSTER_RESOLVE = "protocluster_resolve_pid_duration", Histogram, "s", ["kind", "source"],
        "Time to find the member owning a grain.";
    CLUSTER_VIRTUALACTORS = "protocluster_virtualactors", UpDownCounter, "{activation}", ["kind"],
        "Live grain activations on this member.";
    CLUSTER_MEMBERS = "protocluster_members_count", Gauge, "{member}", [],
        "Members in this member's topology.";
    TOPOLOGY_CHANGES = "grain_cluster_topology_changes_count", Counter, "{change}", [],
        "Topology changes seen by this member.";
    MEMBERSHIP_ERRORS = "grain_membership_errors_count", Counter, "{error}", ["operation", "reason"],
        "Failed calls to the membership provider (register, keep_alive, watch, deregister).";
    MEMBERSHIP_UP = "grain_membership_provider_up", Gauge, "1", [],
        "1 while the membership provider answers, 0 while it fails (the last topology is kept).";
    REMOTE_BATCH = "grain_remote_batch_size", Histogram, "{message}", ["message"],
        "Envelopes per batch written to a peer.";
    REMOTE_INFLIGHT = "grain_remote_inflight_calls", UpDownCounter, "{call}", [],
        "Calls written to peers and not yet answered.";
    RPC_CLIENT_DURATION = "rpc.client.call.duration", Histogram, "s", ["rpc.system.name", "rpc.method", "rpc.response.status_code", "error.type", "server.address", "server.port"],
        "Duration of grain calls made by this member, retries included (OpenTelemetry RPC conventions; equal to the CLIENT span's duration).";
    RPC_SERVER_DURATION = "rpc.server.call.duration", Histogram, "s", ["rpc.system.name", "rpc.method", "rpc.response.status_code", "error.type", "server.address", "server.port"],
        "Duration of grain calls served by this member, from arrival to answer (OpenTelemetry RPC conventions; equal to the SERVER span's duration).";
}

/// Histogram boundaries for durations in seconds, 50 µs to 10 s.
const SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Per hosted kind, the count of calls queued in its activations.
type Queued = Arc<Mutex<Vec<(Arc<str>, Arc<AtomicI64>)>>>;

struct Noop;
impl InstrumentProvider for Noop {}

fn def(name: &str) -> &'static InstrumentDef {
    CATALOG
        .iter()
        .find(|d| d.name == name)
        .unwrap_or(&CATALOG[0])
}

/// The instruments of one member.
pub(crate) struct Metrics {
    spawn: Counter<u64>,
    stopped: Counter<u64>,
    restarted: Counter<u64>,
    failure: Counter<u64>,
    receive: Histogram<f64>,
    /// Calls queued per hosted kind, read at export by `_mailbox`'s callback.
    queued: Queued,
    _mailbox: ObservableUpDownCounter<i64>,
    deadletter: Counter<u64>,
    future_started: Counter<u64>,
    future_completed: Counter<u64>,
    future_timedout: Counter<u64>,
    serialize: Counter<u64>,
    deserialize: Counter<u64>,
    connected: Counter<u64>,
    disconnected: Counter<u64>,
    write: Histogram<f64>,
    spawn_duration: Histogram<f64>,
    request: Histogram<f64>,
    retry: Counter<u64>,
    resolve: Histogram<f64>,
    virtualactors: UpDownCounter<i64>,
    members: Gauge<u64>,
    topology_changes: Counter<u64>,
    membership_errors: Counter<u64>,
    membership_up: Gauge<u64>,
    batch: Histogram<u64>,
    inflight: UpDownCounter<i64>,
    rpc_client: Histogram<f64>,
    rpc_server: Histogram<f64>,
    /// `server.address` and `server.port` of this member, for the calls it serves.
    served_at: Vec<KeyValue>,
    /// Whether a meter was handed in: without one, nothing is recorded, so no call
    /// builds an attribute.
    recording: bool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn kv(key: &'static str, value: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(key, value)
}

impl Metrics {
    /// Instruments on `meter` (or no-ops) of `member`, which serves at its address.
    pub(crate) fn new(meter: Option<&Meter>, member: &Member) -> Self {
        let recording = meter.is_some();
        let noop;
        let meter = match meter {
            Some(m) => m,
            None => {
                noop = Meter::new(Arc::new(Noop));
                &noop
            }
        };
        let counter = |n: &str| {
            let d = def(n);
            meter
                .u64_counter(d.name)
                .with_unit(d.unit)
                .with_description(d.description)
                .build()
        };
        let updown = |n: &str| {
            let d = def(n);
            meter
                .i64_up_down_counter(d.name)
                .with_unit(d.unit)
                .with_description(d.description)
                .build()
        };
        let seconds = |n: &str| {
            let d = def(n);
            meter
                .f64_histogram(d.name)
                .with_unit(d.unit)
                .with_description(d.description)
                .with_boundaries(SECONDS.to_vec())
                .build()
        };
        let gauge = |n: &str| {
            let d = def(n);
            meter
                .u64_gauge(d.name)
                .with_unit(d.unit)
                .with_description(d.description)
                .build()
        };
        use names::*;
        let batch_def = def(REMOTE_BATCH);
        let queued = Queued::default();
        Self {
            spawn: counter(ACTOR_SPAWN),
            stopped: counter(ACTOR_STOPPED),
            restarted: counter(ACTOR_RESTARTED),
            failure: counter(ACTOR_FAILURE),
            receive: seconds(ACTOR_RECEIVE),
            queued: queued.clone(),
            _mailbox: {
                let d = def(ACTOR_MAILBOX);
                meter
                    .i64_observable_up_down_counter(d.name)
                    .with_unit(d.unit)
                    .with_description(d.description)
                    .with_callback(move |o| {
                        for (kind, n) in queued.lock().iter() {
                            o.observe(
                                n.load(std::sync::atomic::Ordering::Relaxed),
                                &[kv("kind", kind.clone())],
                            );
                        }
                    })
                    .build()
            },
            deadletter: counter(DEADLETTER),
            future_started: counter(FUTURE_STARTED),
            future_completed: counter(FUTURE_COMPLETED),
            future_timedout: counter(FUTURE_TIMEDOUT),
            serialize: counter(REMOTE_SERIALIZE),
            deserialize: counter(REMOTE_DESERIALIZE),
            connected: counter(REMOTE_CONNECTED),
            disconnected: counter(REMOTE_DISCONNECTED),
            write: seconds(REMOTE_WRITE),
            spawn_duration: seconds(CLUSTER_SPAWN),
            request: seconds(CLUSTER_REQUEST),
            retry: counter(CLUSTER_RETRY),
            resolve: seconds(CLUSTER_RESOLVE),
            virtualactors: updown(CLUSTER_VIRTUALACTORS),
            members: gauge(CLUSTER_MEMBERS),
            topology_changes: counter(TOPOLOGY_CHANGES),
            membership_errors: counter(MEMBERSHIP_ERRORS),
            membership_up: gauge(MEMBERSHIP_UP),
            batch: meter
                .u64_histogram(batch_def.name)
                .with_unit(batch_def.unit)
                .with_description(batch_def.description)
                .with_boundaries(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
                .build(),
            inflight: updown(REMOTE_INFLIGHT),
            rpc_client: seconds(RPC_CLIENT_DURATION),
            rpc_server: seconds(RPC_SERVER_DURATION),
            served_at: crate::trace::address_attributes(&member.address),
            recording,
        }
    }

    /// The attributes of an RPC duration: system, method, status code and error type.
    fn rpc_attrs(&self, method: &str, code: Code, at: &[KeyValue]) -> Vec<KeyValue> {
        let status = crate::trace::code_name(code);
        let mut a = vec![
            kv("rpc.system.name", crate::trace::RPC_SYSTEM),
            kv("rpc.method", method.to_string()),
            kv("rpc.response.status_code", status),
        ];
        if code != Code::Ok {
            a.push(kv("error.type", status));
        }
        a.extend_from_slice(at);
        a
    }

    /// A call this member made ended with `code`; `owner` is the address of the last
    /// member it went to.
    pub(crate) fn client_call(
        &self,
        method: &str,
        code: Code,
        owner: Option<&str>,
        took: Duration,
    ) {
        if !self.recording {
            return;
        }
        let at = owner
            .map(crate::trace::address_attributes)
            .unwrap_or_default();
        let a = self.rpc_attrs(method, code, &at);
        self.rpc_client.record(took.as_secs_f64(), &a);
    }

    /// A call this member served was answered with `code`.
    pub(crate) fn server_call(&self, method: &str, code: Code, took: Duration) {
        if !self.recording {
            return;
        }
        let a = self.rpc_attrs(method, code, &self.served_at);
        self.rpc_server.record(took.as_secs_f64(), &a);
    }

    pub(crate) fn activation_started(&self, kind: &Arc<str>) {
        if !self.recording {
            return;
        }
        let a = [kv("kind", kind.clone())];
        self.spawn.add(1, &a);
        self.virtualactors.add(1, &a);
    }

    pub(crate) fn activation_stopped(&self, kind: &Arc<str>, failed: bool) {
        if !self.recording {
            return;
        }
        let a = [kv("kind", kind.clone())];
        self.stopped.add(1, &a);
        self.virtualactors.add(-1, &a);
        if failed {
            self.restarted.add(1, &a);
        }
    }

    pub(crate) fn activation_failed(&self, kind: &Arc<str>) {
        if !self.recording {
            return;
        }
        self.failure.add(1, &[kv("kind", kind.clone())]);
    }

    pub(crate) fn spawned_in(&self, kind: &Arc<str>, took: Duration) {
        if !self.recording {
            return;
        }
        self.spawn_duration
            .record(took.as_secs_f64(), &[kv("kind", kind.clone())]);
    }

    pub(crate) fn received(&self, kind: &Arc<str>, method: &str, ok: bool, took: Duration) {
        if !self.recording {
            return;
        }
        let a = [
            kv("kind", kind.clone()),
            kv("method", method.to_string()),
            kv("outcome", if ok { "ok" } else { "error" }),
        ];
        self.receive.record(took.as_secs_f64(), &a);
    }

    /// The count of calls queued for activations of `kind` (`protoactor_actor_mailbox_length`),
    /// which the catalog moves itself: one atomic per kind, read at export.
    pub(crate) fn queued(&self, kind: &Arc<str>) -> Arc<AtomicI64> {
        let mut queued = self.queued.lock();
        if let Some((_, n)) = queued.iter().find(|(k, _)| k == kind) {
            return n.clone();
        }
        let n = Arc::new(AtomicI64::new(0));
        queued.push((kind.clone(), n.clone()));
        n
    }

    pub(crate) fn deadletter(&self, reason: &'static str) {
        if !self.recording {
            return;
        }
        self.deadletter.add(1, &[kv("reason", reason)]);
    }

    pub(crate) fn future_started(&self, kind: &Arc<str>, method: &str) {
        if !self.recording {
            return;
        }
        let a = [kv("kind", kind.clone()), kv("method", method.to_string())];
        self.future_started.add(1, &a);
    }

    /// Records the end of a call: its outcome, duration and where the owner came from.
    pub(crate) fn future_finished(
        &self,
        kind: &Arc<str>,
        method: &str,
        source: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        if !self.recording {
            return;
        }
        // One allocation for the method, shared by the three data points.
        let method: Arc<str> = method.into();
        let (kind, method) = (kv("kind", kind.clone()), kv("method", method));
        if outcome == "timeout" {
            self.future_timedout.add(1, &[kind.clone(), method.clone()]);
        } else {
            let a = [kind.clone(), method.clone(), kv("outcome", outcome)];
            self.future_completed.add(1, &a);
        }
        let a = [kind, method, kv("source", source), kv("outcome", outcome)];
        self.request.record(took.as_secs_f64(), &a);
    }

    pub(crate) fn retried(&self, kind: &Arc<str>, method: &str, reason: &'static str) {
        if !self.recording {
            return;
        }
        let a = [
            kv("kind", kind.clone()),
            kv("method", method.to_string()),
            kv("reason", reason),
        ];
        self.retry.add(1, &a);
    }

    pub(crate) fn resolved(&self, kind: &Arc<str>, source: &'static str, took: Duration) {
        if !self.recording {
            return;
        }
        let a = [kv("kind", kind.clone()), kv("source", source)];
        self.resolve.record(took.as_secs_f64(), &a);
    }

    pub(crate) fn serialized(&self, message: &'static str, n: u64) {
        if !self.recording {
            return;
        }
        self.serialize.add(n, &[kv("message", message)]);
    }

    pub(crate) fn deserialized(&self, message: &'static str, n: u64) {
        if !self.recording {
            return;
        }
        self.deserialize.add(n, &[kv("message", message)]);
    }

    pub(crate) fn batch(&self, message: &'static str, n: u64) {
        if !self.recording {
            return;
        }
        self.batch.record(n, &[kv("message", message)]);
    }

    pub(crate) fn connected(&self, peer: &str) {
        self.connected.add(1, &[kv("peer", peer.to_string())]);
    }

    pub(crate) fn disconnected(&self, peer: &str, reason: &'static str) {
        let a = [kv("peer", peer.to_string()), kv("reason", reason)];
        self.disconnected.add(1, &a);
    }

    pub(crate) fn write_waited(&self, took: Duration) {
        if !self.recording {
            return;
        }
        self.write.record(took.as_secs_f64(), &[]);
    }

    pub(crate) fn inflight(&self, delta: i64) {
        if !self.recording {
            return;
        }
        self.inflight.add(delta, &[]);
    }

    pub(crate) fn topology(&self, members: usize) {
        self.members.record(members as u64, &[]);
        self.topology_changes.add(1, &[]);
    }

    pub(crate) fn membership_error(&self, operation: &'static str, reason: &'static str) {
        let a = [kv("operation", operation), kv("reason", reason)];
        self.membership_errors.add(1, &a);
        self.membership_up.record(0, &[]);
    }

    pub(crate) fn membership_ok(&self) {
        self.membership_up.record(1, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_the_conventions() {
        let mut seen = std::collections::HashSet::new();
        for d in CATALOG {
            assert!(seen.insert(d.name), "{} is listed twice", d.name);
            assert!(
                [
                    "protoactor_",
                    "protoremote_",
                    "protocluster_",
                    "grain_",
                    "rpc."
                ]
                .iter()
                .any(|p| d.name.starts_with(p)),
                "{} has no known prefix",
                d.name
            );
            if d.kind == InstrumentKind::Histogram && d.name.ends_with("duration") {
                assert_eq!(d.unit, "s", "{} is a duration in seconds", d.name);
            }
            assert!(
                !d.attributes.contains(&"identity"),
                "{} carries grain identities",
                d.name
            );
        }
    }
}
