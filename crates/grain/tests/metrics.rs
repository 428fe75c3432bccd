//! The runtime records its instruments on the meter it is handed — and only there —
//! with neither the member (which belongs on the meter provider's Resource) nor a grain
//! identity on any data point.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use grain::membership::InMemoryMembership;
use grain::metrics::names;
use grain::{ClusterIdentity, Node};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    AsyncInstrument, AsyncInstrumentBuilder, BoundSyncInstrument, Callback, Counter, Gauge,
    Histogram, HistogramBuilder, InstrumentBuilder, InstrumentProvider, Meter,
    ObservableUpDownCounter, SyncInstrument, UpDownCounter,
};

/// One measurement: instrument, value, attributes, and the member whose meter took it
/// (what the meter provider's Resource says as `service.instance.id`).
type Recorded = (String, f64, HashMap<String, String>, String);

/// Filters on the member whose meter took a measurement, not on an attribute.
const MEMBER: &str = "service.instance.id";

/// An instrument provider that keeps every measurement, for assertions; each member's
/// meter is [`Recorder::of`] one shared sink, as each member has its own provider.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Recorded>>>, Arc<str>, Observers);

/// The callbacks of observable instruments, with the instrument each observes into; run
/// by [`Recorder::collect`], as a reader runs them at export.
type Observers = Arc<Mutex<Vec<(Instrument, Callback<i64>)>>>;

#[derive(Clone)]
struct Instrument {
    name: String,
    sink: Recorder,
}

/// A bound handle: the instrument and the attributes fixed when it was bound, as the
/// SDK keeps them.
struct Bound(Instrument, Vec<KeyValue>);

impl<T: Into<f64> + Copy> BoundSyncInstrument<T> for Bound {
    fn measure(&self, value: T) {
        SyncInstrument::<T>::measure(&self.0, value, &self.1);
    }
}

impl AsyncInstrument<i64> for Instrument {
    fn observe(&self, value: i64, attributes: &[KeyValue]) {
        SyncInstrument::<f64>::measure(self, value as f64, attributes);
    }
}

impl<T: Into<f64> + Copy> SyncInstrument<T> for Instrument {
    fn measure(&self, value: T, attributes: &[KeyValue]) {
        let attrs = attributes
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        if let Ok(mut v) = self.sink.0.lock() {
            v.push((
                self.name.clone(),
                value.into(),
                attrs,
                self.sink.1.to_string(),
            ));
        }
    }

    fn bind(&self, attributes: &[KeyValue]) -> Box<dyn BoundSyncInstrument<T> + Send + Sync> {
        Box::new(Bound(self.clone(), attributes.to_vec()))
    }
}

/// A bound handle of an integer instrument, recorded as `f64`.
struct BoundInt(Instrument, Vec<KeyValue>);

impl<T: Copy> BoundSyncInstrument<T> for BoundInt
where
    i128: From<T>,
{
    fn measure(&self, value: T) {
        SyncInstrument::<f64>::measure(&self.0, i128::from(value) as f64, &self.1);
    }
}

struct I64(Instrument);
impl SyncInstrument<i64> for I64 {
    fn measure(&self, value: i64, attributes: &[KeyValue]) {
        SyncInstrument::<f64>::measure(&self.0, value as f64, attributes);
    }
    fn bind(&self, attributes: &[KeyValue]) -> Box<dyn BoundSyncInstrument<i64> + Send + Sync> {
        Box::new(BoundInt(self.0.clone(), attributes.to_vec()))
    }
}
struct U64(Instrument);
impl SyncInstrument<u64> for U64 {
    fn measure(&self, value: u64, attributes: &[KeyValue]) {
        SyncInstrument::<f64>::measure(&self.0, value as f64, attributes);
    }
    fn bind(&self, attributes: &[KeyValue]) -> Box<dyn BoundSyncInstrument<u64> + Send + Sync> {
        Box::new(BoundInt(self.0.clone(), attributes.to_vec()))
    }
}

impl Recorder {
    /// The meter provider of `member`, recording into the same sink.
    fn of(&self, member: &str) -> Recorder {
        Recorder(self.0.clone(), member.into(), self.2.clone())
    }

    /// Runs every observable instrument's callbacks once (an export's collection).
    fn collect(&self) {
        if let Ok(observers) = self.2.lock() {
            for (instrument, callback) in observers.iter() {
                callback(instrument);
            }
        }
    }

    fn instrument(&self, name: &str) -> Instrument {
        Instrument {
            name: name.to_string(),
            sink: self.clone(),
        }
    }

    fn all(&self) -> Vec<Recorded> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The values recorded on `name` whose attributes include `with`.
    fn values(&self, name: &str, with: &[(&str, &str)]) -> Vec<f64> {
        self.all()
            .into_iter()
            .filter(|(n, _, a, member)| {
                n == name
                    && with.iter().all(|(k, v)| match *k {
                        MEMBER => member == v,
                        _ => a.get(*k).map(String::as_str) == Some(*v),
                    })
            })
            .map(|(_, v, _, _)| v)
            .collect()
    }

    /// Sum of the values recorded on `name` whose attributes include `with`.
    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.values(name, with).iter().sum()
    }

    /// How many measurements `name` got whose attributes include `with`.
    fn count(&self, name: &str, with: &[(&str, &str)]) -> usize {
        self.values(name, with).len()
    }
}

impl InstrumentProvider for Recorder {
    fn u64_counter(&self, b: InstrumentBuilder<'_, Counter<u64>>) -> Counter<u64> {
        Counter::new(Arc::new(U64(self.instrument(&b.name))))
    }
    fn i64_up_down_counter(
        &self,
        b: InstrumentBuilder<'_, UpDownCounter<i64>>,
    ) -> UpDownCounter<i64> {
        UpDownCounter::new(Arc::new(I64(self.instrument(&b.name))))
    }
    fn i64_observable_up_down_counter(
        &self,
        b: AsyncInstrumentBuilder<'_, ObservableUpDownCounter<i64>, i64>,
    ) -> ObservableUpDownCounter<i64> {
        if let Ok(mut observers) = self.2.lock() {
            for callback in b.callbacks {
                observers.push((self.instrument(&b.name), callback));
            }
        }
        ObservableUpDownCounter::new()
    }
    fn u64_gauge(&self, b: InstrumentBuilder<'_, Gauge<u64>>) -> Gauge<u64> {
        Gauge::new(Arc::new(U64(self.instrument(&b.name))))
    }
    fn f64_histogram(&self, b: HistogramBuilder<'_, Histogram<f64>>) -> Histogram<f64> {
        Histogram::new(Arc::new(self.instrument(&b.name)))
    }
    fn u64_histogram(&self, b: HistogramBuilder<'_, Histogram<u64>>) -> Histogram<u64> {
        Histogram::new(Arc::new(U64(self.instrument(&b.name))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_records_its_catalog_on_the_meter_it_is_handed() {
    let recorder = Recorder::default();
    let provider = InMemoryMembership::new(Duration::from_secs(2));
    let mut nodes = Vec::new();
    for i in 0..2 {
        let id = format!("m{i}");
        let config = grain::NodeConfig {
            member_id: Some(id.clone()),
            meter: Some(Meter::new(Arc::new(recorder.of(&id)))),
            ..config("metrics-test", &id)
        };
        let node = Node::start(config, vec![counter_kind()], Arc::new(provider.clone()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        nodes.push(node);
    }
    for n in &nodes {
        assert!(
            n.cluster()
                .wait_until(Duration::from_secs(5), |t| t.members().len() == 2)
                .await
        );
    }
    let caller = nodes[0].cluster();
    let caller_id = caller.member().id.to_string();
    // Ten identities: some local to the caller, some remote.
    for round in 0..3 {
        for i in 0..10 {
            let id = ClusterIdentity::new(COUNTER, format!("metrics-{i}"));
            let r = caller.call(&id, ADD, Bytes::new()).await;
            assert!(r.is_ok(), "round {round}: {r:?}");
        }
    }
    let panicky = ClusterIdentity::new(COUNTER, "metrics-panic");
    assert!(caller.call(&panicky, PANIC, Bytes::new()).await.is_err());
    let by_caller = [
        (MEMBER, caller_id.as_str()),
        ("kind", COUNTER),
        ("method", ADD),
    ];

    assert_eq!(recorder.count(names::FUTURE_STARTED, &by_caller), 30);
    assert_eq!(recorder.count(names::CLUSTER_REQUEST, &by_caller), 30);
    assert_eq!(
        recorder.count(
            names::FUTURE_COMPLETED,
            &[(MEMBER, &caller_id), ("outcome", "ok")]
        ),
        30
    );
    // The owner of each of the 10 identities was looked up once, then came from the cache.
    assert_eq!(
        recorder.count(
            names::CLUSTER_REQUEST,
            &[(MEMBER, &caller_id), ("source", "lookup"), ("method", ADD)]
        ),
        10
    );
    assert_eq!(
        recorder.count(
            names::CLUSTER_REQUEST,
            &[(MEMBER, &caller_id), ("source", "cache"), ("method", ADD)]
        ),
        20
    );
    // Only lookups are timed as resolving the owner, as Proto.Actor times them: one
    // for each of the 10 identities, and one for the panicky one.
    assert_eq!(
        recorder.count(
            names::CLUSTER_RESOLVE,
            &[(MEMBER, &caller_id), ("kind", COUNTER)]
        ),
        11
    );
    // 11 activations in all (10 + the panicky one), over both members; one failed.
    // The failed activation leaves the catalog once it has fully stopped.
    let mut live: usize = 0;
    for _ in 0..100 {
        live = nodes.iter().map(|n| n.activation_count()).sum();
        if live == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(live, 10, "the panicky activation should be gone");
    assert_eq!(recorder.sum(names::ACTOR_SPAWN, &[("kind", COUNTER)]), 11.0);
    assert_eq!(
        recorder.sum(names::CLUSTER_VIRTUALACTORS, &[("kind", COUNTER)]),
        live as f64
    );
    assert_eq!(
        recorder.sum(names::ACTOR_FAILURE, &[("kind", COUNTER)]),
        1.0
    );
    assert_eq!(
        recorder.sum(names::ACTOR_RESTARTED, &[("kind", COUNTER)]),
        1.0
    );
    recorder.collect();
    assert_eq!(
        recorder.count(names::ACTOR_MAILBOX, &[("kind", COUNTER)]),
        2,
        "each member reports its queued calls of the kind it hosts"
    );
    assert_eq!(
        recorder.sum(names::ACTOR_MAILBOX, &[("kind", COUNTER)]),
        0.0,
        "mailboxes are empty"
    );
    assert_eq!(
        recorder.count(names::ACTOR_RECEIVE, &[("kind", COUNTER), ("method", ADD)]),
        30
    );
    // The RPC durations of OpenTelemetry's conventions: 30 ADD calls made by the caller
    // and 30 served (by whichever member owns each identity), plus the panic.
    let rpc = [("rpc.system.name", "grpc"), ("rpc.method", ADD)];
    let ok = [rpc[0], rpc[1], ("rpc.response.status_code", "OK")];
    assert_eq!(recorder.count("rpc.client.call.duration", &ok), 30);
    assert_eq!(recorder.count("rpc.server.call.duration", &ok), 30);
    let failed = [
        ("rpc.method", PANIC),
        ("rpc.response.status_code", "INTERNAL"),
        ("error.type", "INTERNAL"),
    ];
    assert_eq!(recorder.count("rpc.client.call.duration", &failed), 1);
    assert_eq!(recorder.count("rpc.server.call.duration", &failed), 1);
    for (name, _, attrs, _) in recorder.all() {
        if name.starts_with("rpc.") {
            let port = attrs.get("server.port").and_then(|p| p.parse::<u16>().ok());
            assert!(
                port.is_some_and(|p| p > 0),
                "{name} without a server.port: {attrs:?}"
            );
            if attrs.get("rpc.response.status_code").map(String::as_str) == Some("OK") {
                assert!(!attrs.contains_key("error.type"), "{name}: {attrs:?}");
            }
        }
    }
    // Remote calls were serialized and answered; nothing is left in flight.
    assert!(recorder.sum(names::REMOTE_SERIALIZE, &[("message", "request")]) > 0.0);
    assert_eq!(
        recorder.sum(names::REMOTE_SERIALIZE, &[("message", "request")]),
        recorder.sum(names::REMOTE_DESERIALIZE, &[("message", "response")])
    );
    assert_eq!(recorder.sum(names::REMOTE_INFLIGHT, &[]), 0.0);
    assert!(recorder.count(names::REMOTE_CONNECTED, &[]) >= 1);

    for (name, _, attrs, member) in recorder.all() {
        assert!(
            !attrs.contains_key("member") && !attrs.contains_key("address"),
            "{name} names the member on a data point: {attrs:?}"
        );
        assert!(
            member == "m0" || member == "m1",
            "{name} on an unknown meter {member:?}"
        );
        assert!(
            !attrs.values().any(|v| v.starts_with("metrics-")),
            "{name} carries a grain identity: {attrs:?}"
        );
        assert!(
            grain::metrics::CATALOG.iter().any(|d| d.name == name),
            "{name} is not in the catalog"
        );
    }
    for n in nodes {
        n.shutdown().await;
    }
    // After shutdown every activation has been passivated and counted down.
    assert_eq!(
        recorder.sum(names::CLUSTER_VIRTUALACTORS, &[("kind", COUNTER)]),
        0.0
    );
}
