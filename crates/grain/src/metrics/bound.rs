//! Bound instrument handles of the hot path, per (kind, method), made at first use.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{BoundCounter, BoundHistogram};
use parking_lot::RwLock;

use crate::grain::Code;

/// At most this many keys get a shared entry in a [`Table`].
pub(crate) const MAX_BOUND: usize = 512;

/// Bound handles per (kind, method), made at a pair's first call. Past [`MAX_BOUND`]
/// pairs (method names come from peers on the serving side), a lookup makes a fresh
/// entry that is not kept, whose handles the SDK unbinds when it is dropped.
pub(crate) struct Table<T> {
    map: RwLock<hashbrown::HashMap<PairKey, Arc<T>>>,
}

/// A (kind, method) pair as a [`Table`] keeps it.
type PairKey = (Arc<str>, Box<str>);

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            map: RwLock::new(hashbrown::HashMap::new()),
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
        if let Some(t) = self.map.read().get(&Pair(kind, method)) {
            return t.clone();
        }
        let mut map = self.map.write();
        if let Some(t) = map.get(&Pair(kind, method)) {
            return t.clone();
        }
        let t = Arc::new(make());
        if map.len() < MAX_BOUND {
            map.insert((kind.into(), method.into()), t.clone());
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
    /// `protocluster_resolve_pid_duration` by source.
    pub(crate) resolve: [OnceLock<BoundHistogram<f64>>; 2],
    pub(crate) rpc: Rpc,
}

/// `protoactor_actor_messagereceive_duration` of one (kind, method), by outcome.
#[derive(Default)]
pub(crate) struct ReceivedMeters {
    pub(crate) by_outcome: [OnceLock<BoundHistogram<f64>>; 2],
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
