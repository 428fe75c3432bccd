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
//! come and go. The counts that move twice per call — the calls queued per kind and the
//! calls in flight to peers — are atomics that one callback each reads at export.
//!
//! The instruments recorded on every call are *bound* to their attribute sets
//! (OpenTelemetry's experimental bound instruments): a call looks its (kind, method)
//! up once in a small table and records on handles the SDK resolved when the pair was
//! first seen, so the SDK neither hashes nor sorts attributes per call. A handle is
//! bound at its first measurement, never before, so no series is exported that was
//! never recorded. The table holds at most [`MAX_BOUND`] pairs; past that, calls bind
//! for themselves, which costs what an unbound record costs.
//!
//! Attributes stay bounded: series add `kind`, `method`, `outcome`, `peer`, `reason` or
//! `source` — never a grain identity. Which member recorded a series is not an
//! attribute: it belongs on the meter provider's Resource (`service.instance.id`, as
//! the binaries set it), once, rather than on every data point. [`CATALOG`] lists them all; `docs/metrics.md` is kept equal to it
//! by a test.

mod bound;
mod catalog;

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    Counter, Gauge, Histogram, InstrumentProvider, Meter, ObservableUpDownCounter, UpDownCounter,
};
use parking_lot::Mutex;

pub(crate) use bound::ClientMeters;
use bound::{Envelopes, ReceivedMeters, Rpc, TIMEOUT, Table, outcome_index, source_index};
pub use catalog::{CATALOG, InstrumentDef, InstrumentKind, names};

use crate::grain::Code;
use crate::identity::Member;

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
    /// The calls written to peers and not answered yet, read at export by `_inflight`.
    inflight: Arc<AtomicI64>,
    _inflight: ObservableUpDownCounter<i64>,
    rpc_client: Histogram<f64>,
    rpc_server: Histogram<f64>,
    /// `server.address` and `server.port` of this member, for the calls it serves.
    served_at: Vec<KeyValue>,
    /// Bound handles of the calls this member makes, per (kind, method).
    client: Table<ClientMeters>,
    /// Bound handles of the calls this member serves, per (kind, method label).
    received_by: Table<ReceivedMeters>,
    /// Bound handles of `rpc.server.call.duration` of calls answered before a grain
    /// handled them, per method (the kind is empty).
    served_by: Table<Rpc>,
    /// Bound handles of the envelope counts, by message: request, response.
    envelopes: [Envelopes; 2],
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
        let inflight = Arc::new(AtomicI64::new(0));
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
                            o.observe(n.load(Ordering::Relaxed), &[kv("kind", kind.clone())]);
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
            inflight: inflight.clone(),
            _inflight: {
                let d = def(REMOTE_INFLIGHT);
                let recorded = recording;
                meter
                    .i64_observable_up_down_counter(d.name)
                    .with_unit(d.unit)
                    .with_description(d.description)
                    .with_callback(move |o| {
                        if recorded {
                            o.observe(inflight.load(Ordering::Relaxed), &[]);
                        }
                    })
                    .build()
            },
            rpc_client: seconds(RPC_CLIENT_DURATION),
            rpc_server: seconds(RPC_SERVER_DURATION),
            served_at: crate::trace::address_attributes(&member.address),
            client: Table::default(),
            received_by: Table::default(),
            served_by: Table::default(),
            envelopes: Default::default(),
            recording,
        }
    }

    /// The bound handles of calls this member makes to `method` of `kind`, or `None`
    /// when nothing is recorded. A call looks them up once and carries them.
    pub(crate) fn client_meters(&self, kind: &Arc<str>, method: &str) -> Option<Arc<ClientMeters>> {
        if !self.recording {
            return None;
        }
        Some(self.client.get(kind, method, || ClientMeters {
            kind: kv("kind", kind.clone()),
            method: kv("method", Arc::<str>::from(method)),
            rpc_method: Arc::from(method),
            started: OnceLock::new(),
            completed: Default::default(),
            timedout: OnceLock::new(),
            request: Default::default(),
            resolve: Default::default(),
            rpc: Rpc::default(),
        }))
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
        meters: &ClientMeters,
        code: Code,
        owner: Option<&str>,
        took: Duration,
    ) {
        meters
            .rpc
            .record(code, owner, took.as_secs_f64(), |code, owner| {
                let at = owner
                    .map(crate::trace::address_attributes)
                    .unwrap_or_default();
                let a = self.rpc_attrs(&meters.rpc_method, code, &at);
                self.rpc_client.bind(&a)
            });
    }

    /// A call this member served, which arrived at `since`, was answered with `code`
    /// (before a grain handled it, or as its turn overran: [`Metrics::served`] records
    /// the rest).
    pub(crate) fn server_call(&self, method: &str, code: Code, since: Instant) {
        if !self.recording {
            return;
        }
        let took = since.elapsed();
        let rpc = self.served_by.get("", method, Rpc::default);
        rpc.record(code, None, took.as_secs_f64(), |code, _| {
            let a = self.rpc_attrs(method, code, &self.served_at);
            self.rpc_server.bind(&a)
        });
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

    /// A grain of `kind` finished handling `method` it began at `since`; `answered`,
    /// when its caller is answered now, is the call's `rpc.method`, status code and
    /// arrival, for `rpc.server.call.duration`. Both take one lookup and one clock read.
    /// `method` is always recorded with the same `rpc.method`.
    pub(crate) fn served(
        &self,
        kind: &Arc<str>,
        method: &str,
        ok: bool,
        since: Instant,
        answered: Option<(&str, Code, Instant)>,
    ) {
        if !self.recording {
            return;
        }
        let now = Instant::now();
        let meters = self.received_by.get(kind, method, ReceivedMeters::default);
        let handle = meters.by_outcome[usize::from(!ok)].get_or_init(|| {
            let a = [
                kv("kind", kind.clone()),
                kv("method", method.to_string()),
                kv("outcome", if ok { "ok" } else { "error" }),
            ];
            self.receive.bind(&a)
        });
        handle.record(now.saturating_duration_since(since).as_secs_f64());
        if let Some((rpc_method, code, arrived)) = answered {
            let took = now.saturating_duration_since(arrived);
            meters
                .rpc
                .record(code, None, took.as_secs_f64(), |code, _| {
                    let a = self.rpc_attrs(rpc_method, code, &self.served_at);
                    self.rpc_server.bind(&a)
                });
        }
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

    pub(crate) fn future_started(&self, meters: &ClientMeters) {
        meters
            .started
            .get_or_init(|| {
                self.future_started
                    .bind(&[meters.kind.clone(), meters.method.clone()])
            })
            .add(1);
    }

    /// Records the end of a call: its outcome, duration and where the owner came from.
    pub(crate) fn future_finished(
        &self,
        meters: &ClientMeters,
        source: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        let (kind, method) = (&meters.kind, &meters.method);
        let o = outcome_index(outcome);
        if o == TIMEOUT {
            meters
                .timedout
                .get_or_init(|| self.future_timedout.bind(&[kind.clone(), method.clone()]))
                .add(1);
        } else {
            meters.completed[o]
                .get_or_init(|| {
                    let a = [kind.clone(), method.clone(), kv("outcome", outcome)];
                    self.future_completed.bind(&a)
                })
                .add(1);
        }
        meters.request[source_index(source)][o]
            .get_or_init(|| {
                let a = [
                    kind.clone(),
                    method.clone(),
                    kv("source", source),
                    kv("outcome", outcome),
                ];
                self.request.bind(&a)
            })
            .record(took.as_secs_f64());
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

    /// The owner of a call's identity was looked up (not found in the placement
    /// cache) in `took`.
    pub(crate) fn resolved(&self, meters: &ClientMeters, took: Duration) {
        meters
            .resolve
            .get_or_init(|| self.resolve.bind(std::slice::from_ref(&meters.kind)))
            .record(took.as_secs_f64());
    }

    /// The bound envelope counts of `message` ("request" or "response").
    fn envelopes(&self, message: &'static str) -> &Envelopes {
        &self.envelopes[usize::from(message != "request")]
    }

    pub(crate) fn serialized(&self, message: &'static str, n: u64) {
        if !self.recording {
            return;
        }
        let a = [kv("message", message)];
        let e = self.envelopes(message);
        e.serialized.get_or_init(|| self.serialize.bind(&a)).add(n);
    }

    pub(crate) fn deserialized(&self, message: &'static str, n: u64) {
        if !self.recording {
            return;
        }
        let a = [kv("message", message)];
        let e = self.envelopes(message);
        e.deserialized
            .get_or_init(|| self.deserialize.bind(&a))
            .add(n);
    }

    pub(crate) fn batch(&self, message: &'static str, n: u64) {
        if !self.recording {
            return;
        }
        let a = [kv("message", message)];
        let e = self.envelopes(message);
        e.batch.get_or_init(|| self.batch.bind(&a)).record(n);
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
        self.inflight.fetch_add(delta, Ordering::Relaxed);
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
