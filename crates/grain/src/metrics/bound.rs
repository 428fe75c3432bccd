//! Bound instrument handles of the hot path, per (kind, method), made at first use.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{BoundCounter, BoundHistogram};
use parking_lot::RwLock;

use crate::grain::Code;

/// At most this many keys get a shared entry in a [`Table`].
pub(crate) const MAX_BOUND: usize = 512;

/// The pairs a [`Table`] finds by a linear scan before it hashes: a member calls and
/// serves a handful of (kind, method) pairs, and comparing a few short strings costs
/// less than hashing two.
const SCANNED: usize = 8;

/// Bound handles per (kind, method), made at a pair's first call. Past [`MAX_BOUND`]
/// pairs (method names come from peers on the serving side), a lookup makes a fresh
/// entry that is not kept, whose handles the SDK unbinds when it is dropped.
pub(crate) struct Table<T> {
    pairs: RwLock<Pairs<T>>,
}

/// The first [`SCANNED`] pairs in a vector, the rest in a hash map.
struct Pairs<T> {
    first: Vec<(PairKey, Arc<T>)>,
    rest: hashbrown::HashMap<PairKey, Arc<T>>,
}

impl<T> Pairs<T> {
    fn find(&self, kind: &str, method: &str) -> Option<&Arc<T>> {
        let same = |k: &PairKey| *k.1 == *method && *k.0 == *kind;
        match self.first.iter().find(|(k, _)| same(k)) {
            Some((_, t)) => Some(t),
            None if self.first.len() < SCANNED => None,
            None => self.rest.get(&Pair(kind, method)),
        }
    }

    fn len(&self) -> usize {
        self.first.len() + self.rest.len()
    }

    fn insert(&mut self, key: PairKey, t: Arc<T>) {
        if self.first.len() < SCANNED {
            self.first.push((key, t));
        } else {
            self.rest.insert(key, t);
        }
    }
}

/// A (kind, method) pair as a [`Table`] keeps it.
type PairKey = (Arc<str>, Box<str>);

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            pairs: RwLock::new(Pairs {
                first: Vec::with_capacity(SCANNED),
                rest: hashbrown::HashMap::new(),
            }),
        }
    }
}

/// A (kind, method) pair looked up without allocating.
struct Pair<'a>(&'a str, &'a str);

impl Hash for Pair<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // As the tuple `(Arc<str>, Box<str>)` hashes: each `str` in turn.
        self.0.hash(h);
        self.1.hash(h);
    }
}

impl hashbrown::Equivalent<PairKey> for Pair<'_> {
    fn equivalent(&self, key: &PairKey) -> bool {
        *key.0 == *self.0 && *key.1 == *self.1
    }
}

impl<T> Table<T> {
    pub(crate) fn get(&self, kind: &str, method: &str, make: impl FnOnce() -> T) -> Arc<T> {
        if let Some(t) = self.pairs.read().find(kind, method) {
            return t.clone();
        }
        let mut pairs = self.pairs.write();
        if let Some(t) = pairs.find(kind, method) {
            return t.clone();
        }
        let t = Arc::new(make());
        if pairs.len() < MAX_BOUND {
            pairs.insert((kind.into(), method.into()), t.clone());
        }
        t
    }
}

/// The bound handles of the calls a member makes to one method of one kind.
pub(crate) struct ClientMeters {
    pub(crate) kind: KeyValue,
    pub(crate) method: KeyValue,
    pub(crate) rpc_method: Arc<str>,
    pub(crate) started: OnceLock<BoundCounter<u64>>,
    /// `protoactor_future_completed_count` by outcome: ok, error.
    pub(crate) completed: [OnceLock<BoundCounter<u64>>; 2],
    pub(crate) timedout: OnceLock<BoundCounter<u64>>,
    /// `protocluster_virtualactor_requestasync_duration` by source, then outcome.
    pub(crate) request: [[OnceLock<BoundHistogram<f64>>; 3]; 2],
    /// `protocluster_resolve_pid_duration` (owners looked up, not cached).
    pub(crate) resolve: OnceLock<BoundHistogram<f64>>,
    pub(crate) rpc: Rpc,
}

/// What a member records of the calls it serves to one (kind, method label):
/// `protoactor_actor_messagereceive_duration` by outcome, and `rpc.server.call.duration`.
#[derive(Default)]
pub(crate) struct ReceivedMeters {
    pub(crate) by_outcome: [OnceLock<BoundHistogram<f64>>; 2],
    pub(crate) rpc: Rpc,
}

/// The envelope counts of one message ("request" or "response").
#[derive(Default)]
pub(crate) struct Envelopes {
    pub(crate) serialized: OnceLock<BoundCounter<u64>>,
    pub(crate) deserialized: OnceLock<BoundCounter<u64>>,
    pub(crate) batch: OnceLock<BoundHistogram<u64>>,
}

/// At most this many (status code, peer) handles per method in an [`Rpc`].
const MAX_RPC_HANDLES: usize = 64;

/// Bound handles of an RPC duration of one method, by status code and peer address.
#[derive(Default)]
pub(crate) struct Rpc {
    /// The handle of the first peer answered with `OK`, found without a lock: most
    /// calls of a method succeed, and go to one member.
    first_ok: OnceLock<(Option<Box<str>>, BoundHistogram<f64>)>,
    handles: RwLock<Vec<RpcHandle>>,
}

/// A status code, a peer address, and the handle bound to them.
type RpcHandle = (Code, Option<Box<str>>, BoundHistogram<f64>);

impl Rpc {
    /// Records `value` on the handle of (`code`, `peer`), bound by `bind` at its first
    /// use; past [`MAX_RPC_HANDLES`] the handle is bound for this record only.
    pub(crate) fn record(
        &self,
        code: Code,
        peer: Option<&str>,
        value: f64,
        bind: impl FnOnce(Code, Option<&str>) -> BoundHistogram<f64>,
    ) {
        if code == Code::Ok {
            match self.first_ok.get() {
                Some((p, h)) if p.as_deref() == peer => return h.record(value),
                Some(_) => {}
                None => {
                    let h = bind(code, peer);
                    h.record(value);
                    // Another thread may have set it first: this handle is then
                    // dropped, and what it recorded stays with the attribute set.
                    let _ = self.first_ok.set((peer.map(Box::from), h));
                    return;
                }
            }
        }
        self.record_other(code, peer, value, bind);
    }

    /// [`Rpc::record`] past the first `OK` handle.
    fn record_other(
        &self,
        code: Code,
        peer: Option<&str>,
        value: f64,
        bind: impl FnOnce(Code, Option<&str>) -> BoundHistogram<f64>,
    ) {
        let matches = |(c, p, _): &&RpcHandle| *c == code && p.as_deref() == peer;
        if let Some((_, _, h)) = self.handles.read().iter().find(matches) {
            h.record(value);
            return;
        }
        let mut handles = self.handles.write();
        if let Some((_, _, h)) = handles.iter().find(matches) {
            h.record(value);
            return;
        }
        let h = bind(code, peer);
        h.record(value);
        if handles.len() < MAX_RPC_HANDLES {
            handles.push((code, peer.map(Box::from), h));
        }
    }
}

/// Index of a call's outcome in [`ClientMeters`]' arrays.
pub(crate) const TIMEOUT: usize = 2;

pub(crate) fn outcome_index(outcome: &str) -> usize {
    match outcome {
        "ok" => 0,
        "timeout" => TIMEOUT,
        _ => 1,
    }
}

pub(crate) fn source_index(source: &str) -> usize {
    usize::from(source != "cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_finds_each_pair_it_keeps_and_keeps_at_most_max_bound() {
        let table: Table<usize> = Table::default();
        let pair = |i: usize| (format!("Kind{}", i % 3), format!("method{i}"));
        let mut made = 0;
        for i in 0..MAX_BOUND + 10 {
            let (k, m) = pair(i);
            let got = table.get(&k, &m, || {
                made += 1;
                i
            });
            assert_eq!(*got, i);
        }
        assert_eq!(made, MAX_BOUND + 10);
        // Kept pairs, scanned or hashed, are found again without being made.
        for i in [0, 1, SCANNED - 1, SCANNED, SCANNED + 1, MAX_BOUND - 1] {
            let (k, m) = pair(i);
            assert_eq!(*table.get(&k, &m, || usize::MAX), i, "pair {i}");
        }
        // Past the bound, each lookup makes a fresh entry.
        let (k, m) = pair(MAX_BOUND + 3);
        assert_eq!(*table.get(&k, &m, || usize::MAX), usize::MAX);
        assert_eq!(table.pairs.read().len(), MAX_BOUND);
    }

    /// Keeps every measurement with the attributes its handle was bound to.
    #[derive(Clone, Default)]
    struct Kept(Arc<parking_lot::Mutex<Vec<(String, f64)>>>);

    impl opentelemetry::metrics::SyncInstrument<f64> for Kept {
        fn measure(&self, value: f64, attributes: &[KeyValue]) {
            let at: Vec<String> = attributes.iter().map(|kv| kv.value.to_string()).collect();
            self.0.lock().push((at.join(" "), value));
        }

        fn bind(
            &self,
            attributes: &[KeyValue],
        ) -> Box<dyn opentelemetry::metrics::BoundSyncInstrument<f64> + Send + Sync> {
            Box::new(KeptBound(self.clone(), attributes.to_vec()))
        }
    }

    struct KeptBound(Kept, Vec<KeyValue>);

    impl opentelemetry::metrics::BoundSyncInstrument<f64> for KeptBound {
        fn measure(&self, value: f64) {
            opentelemetry::metrics::SyncInstrument::measure(&self.0, value, &self.1);
        }
    }

    #[test]
    fn an_rpc_records_each_value_on_the_handle_of_its_code_and_peer() {
        let kept = Kept::default();
        let histogram = opentelemetry::metrics::Histogram::new(Arc::new(kept.clone()));
        let rpc = Rpc::default();
        let mut bound = 0;
        let mut record = |code: Code, peer: Option<&str>, value: f64| {
            rpc.record(code, peer, value, |code, peer| {
                bound += 1;
                let at = [
                    KeyValue::new("code", format!("{code:?}")),
                    KeyValue::new("peer", peer.unwrap_or("-").to_string()),
                ];
                histogram.bind(&at)
            });
        };
        record(Code::Ok, Some("a:1"), 1.0);
        record(Code::Ok, Some("a:1"), 2.0);
        record(Code::Ok, Some("b:1"), 3.0);
        record(Code::Internal, Some("a:1"), 4.0);
        record(Code::Ok, None, 5.0);
        record(Code::Ok, Some("b:1"), 6.0);
        record(Code::Internal, Some("a:1"), 7.0);
        assert_eq!(bound, 4, "one handle per (code, peer)");
        let got = kept.0.lock().clone();
        let want = [
            ("Ok a:1", 1.0),
            ("Ok a:1", 2.0),
            ("Ok b:1", 3.0),
            ("Internal a:1", 4.0),
            ("Ok -", 5.0),
            ("Ok b:1", 6.0),
            ("Internal a:1", 7.0),
        ];
        let want: Vec<(String, f64)> = want.iter().map(|(a, v)| (a.to_string(), *v)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn pairs_that_share_a_kind_or_a_method_are_other_pairs() {
        let table: Table<u8> = Table::default();
        assert_eq!(*table.get("A", "m", || 1), 1);
        assert_eq!(*table.get("B", "m", || 2), 2);
        assert_eq!(*table.get("A", "n", || 3), 3);
        assert_eq!(*table.get("A", "m", || 0), 1);
        assert_eq!(*table.get("B", "m", || 0), 2);
    }
}
