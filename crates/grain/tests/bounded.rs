//! Bounded everywhere: user code that is slow or never returns costs its own calls,
//! never a whole stream or an identity for good, and a call cancelled at its deadline
//! never leaves a grain's state torn.
//!
//! - the grain factory runs inside the activation, off the task that reads a peer's
//!   stream: a slow factory delays only the calls of its own identity;
//! - `deactivated` has a time limit (`NodeConfig::hook_timeout`): one that never
//!   returns does not keep its identity's next calls waiting forever;
//! - a call whose deadline passes mid-turn is answered `Timeout` at once; the turn may
//!   still finish within a second (the grain keeps its whole state), and one that does
//!   not is cancelled and its activation discarded (as after a panic): the next call
//!   never sees half an update.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::config;
use grain::membership::InMemoryMembership;
use grain::{CallError, CallOptions, ClusterIdentity, Grain, GrainContext, GrainError, Kind, Node};
use tokio::time::Instant;

const KIND: &str = "Slowpoke";
const PING: &str = "test.v1.Slowpoke/Ping";
const TEAR: &str = "test.v1.Slowpoke/Tear";
const CHECK: &str = "test.v1.Slowpoke/Check";
const LATE: &str = "test.v1.Slowpoke/Late";
const COUNT: &str = "test.v1.Slowpoke/Count";

/// `Ping` answers `pong`; `Tear` updates `a`, waits 3 s, then updates `b`; `Late` does
/// the same with a 300 ms wait; `Check` answers whether `a == b`; `Count` answers `a`.
/// Its `deactivated` never returns.
#[derive(Default)]
struct Slowpoke {
    a: u64,
    b: u64,
}

#[async_trait]
impl Grain for Slowpoke {
    async fn handle(
        &mut self,
        _ctx: &GrainContext,
        method: &str,
        _payload: Bytes,
    ) -> Result<Bytes, GrainError> {
        match method {
            PING => Ok(Bytes::from_static(b"pong")),
            TEAR | LATE => {
                self.a += 1;
                let wait = if method == TEAR { 3000 } else { 300 };
                tokio::time::sleep(Duration::from_millis(wait)).await;
                self.b += 1;
                Ok(Bytes::new())
            }
            COUNT => Ok(Bytes::from(self.a.to_string())),
            CHECK => Ok(Bytes::from(if self.a == self.b {
                "consistent"
            } else {
                "torn"
            })),
            other => Err(GrainError::unimplemented(other)),
        }
    }

    async fn deactivated(&mut self, _ctx: &GrainContext) {
        DEACTIVATING.fetch_add(1, Ordering::SeqCst);
        futures::future::pending::<()>().await;
    }
}

/// How many `deactivated` hooks have started (and hang).
static DEACTIVATING: AtomicUsize = AtomicUsize::new(0);

/// How many slow factories have started.
static SLOW_FACTORIES: AtomicUsize = AtomicUsize::new(0);

/// A kind whose factory blocks for 600 ms for identities starting with `slow`.
fn kind(idle: Duration) -> Kind {
    Kind::new(KIND, |id: &ClusterIdentity| {
        if id.identity().starts_with("slow") {
            SLOW_FACTORIES.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(600));
        }
        Slowpoke::default()
    })
    .idle_timeout(idle)
}

async fn pair(cluster: &str, idle: Duration) -> (Node, Node) {
    let provider = InMemoryMembership::new(Duration::from_secs(30));
    let mut host_config = config(cluster, "host");
    host_config.hook_timeout = Duration::from_millis(300);
    let host = Node::start(host_config, vec![kind(idle)], Arc::new(provider.clone()))
        .await
        .unwrap_or_else(|e| panic!("host: {e}"));
    let caller = Node::start(config(cluster, "caller"), vec![], Arc::new(provider))
        .await
        .unwrap_or_else(|e| panic!("caller: {e}"));
    caller
        .cluster()
        .wait_for_kinds(&[KIND], Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (host, caller)
}

fn grain(identity: &str) -> ClusterIdentity {
    ClusterIdentity::new(KIND, identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_factory_delays_only_its_own_identity_not_the_stream() {
    let (host, caller) = pair("bounded-factory", Duration::from_secs(600)).await;
    let cluster = caller.cluster();
    // Warm the link up so both calls below travel on the same open stream.
    let _ = cluster.call(&grain("warm"), PING, Bytes::new()).await;
    let slow = {
        let cluster = cluster.clone();
        tokio::spawn(async move { cluster.call(&grain("slow-1"), PING, Bytes::new()).await })
    };
    // Wait until the slow factory is running.
    let until = Instant::now() + Duration::from_secs(5);
    while SLOW_FACTORIES.load(Ordering::SeqCst) == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    let fast = cluster.call(&grain("fast-1"), PING, Bytes::new()).await;
    let took = started.elapsed();
    assert_eq!(fast.as_deref().ok(), Some(&b"pong"[..]), "{fast:?}");
    println!("a call behind another identity's 600 ms factory took {took:?}");
    assert!(
        took < Duration::from_millis(300),
        "a call waited {took:?} behind another identity's slow factory"
    );
    let slow = slow.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(slow.as_deref().ok(), Some(&b"pong"[..]), "{slow:?}");
    caller.shutdown().await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_hook_that_never_returns_does_not_block_its_identity() {
    // Passivated after 100 ms idle; its `deactivated` never returns.
    let (host, caller) = pair("bounded-deactivated", Duration::from_millis(100)).await;
    let cluster = caller.cluster();
    let id = grain("stuck");
    let options = CallOptions::default().with_timeout(Duration::from_secs(3));
    let first = cluster.call_with(&id, PING, Bytes::new(), &options).await;
    assert!(first.is_ok(), "{first:?}");
    // Wait until it went idle and its (hanging) `deactivated` hook runs, then call
    // again: the call waits for the old activation to end, which the hook's time limit
    // (300 ms) guarantees.
    let until = Instant::now() + Duration::from_secs(5);
    while DEACTIVATING.load(Ordering::SeqCst) == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        DEACTIVATING.load(Ordering::SeqCst) > 0,
        "the activation never passivated"
    );
    let started = Instant::now();
    let again = cluster.call_with(&id, PING, Bytes::new(), &options).await;
    let took = started.elapsed();
    assert_eq!(
        again.as_deref().ok(),
        Some(&b"pong"[..]),
        "the identity stayed blocked behind a hung deactivated hook: {again:?}"
    );
    println!("a call behind a hung deactivated hook took {took:?}");
    caller.shutdown().await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_that_ends_soon_after_its_deadline_finishes_and_keeps_the_state() {
    let (host, caller) = pair("bounded-late", Duration::from_secs(600)).await;
    let cluster = caller.cluster();
    let id = grain("late");
    let short = CallOptions::default().with_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let late = cluster.call_with(&id, LATE, Bytes::new(), &short).await;
    assert!(matches!(late, Err(CallError::Timeout { .. })), "{late:?}");
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "answered late"
    );
    let check = cluster.call(&id, CHECK, Bytes::new()).await;
    assert_eq!(check.as_deref().ok(), Some(&b"consistent"[..]), "{check:?}");
    let count = cluster.call(&id, COUNT, Bytes::new()).await;
    assert_eq!(
        count.as_deref().ok(),
        Some(&b"1"[..]),
        "the finished turn's update was lost: {count:?}"
    );
    caller.shutdown().await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_cancelled_long_after_its_deadline_leaves_no_torn_state_behind() {
    let (host, caller) = pair("bounded-torn", Duration::from_secs(600)).await;
    let cluster = caller.cluster();
    let id = grain("ledger");
    let short = CallOptions::default().with_timeout(Duration::from_millis(200));
    let torn = cluster.call_with(&id, TEAR, Bytes::new(), &short).await;
    assert!(matches!(torn, Err(CallError::Timeout { .. })), "{torn:?}");
    let check = cluster.call(&id, CHECK, Bytes::new()).await;
    assert_eq!(
        check.as_deref().ok(),
        Some(&b"consistent"[..]),
        "after a call cancelled mid-turn: {check:?}"
    );
    caller.shutdown().await;
    host.shutdown().await;
}
