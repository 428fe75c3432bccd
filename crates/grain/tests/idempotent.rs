//! An idempotent call is sent again after an attempt that may have run — its link broke
//! while it was in flight, or the attempt timed out — and is answered within its
//! deadline; any other call stays at most once and fails. A call is idempotent when its
//! options say so (`CallOptions::with_idempotent`) or when its `.proto` declares it
//! (generated clients pass that to `codegen::unary`).
//!
//! Over real tonic on loopback; the host is reachable only through a TCP proxy that can
//! cut every connection, refuse new ones (accept and close at once), or forward again.
//! The grain's first call blocks until the test releases it; every wait is bounded.

mod common;

use common::proxy::Proxy;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use grain::codegen::prost::Message;
use grain::membership::InMemoryMembership;
use grain::{
    Backoff, CallError, CallOptions, Cluster, ClusterIdentity, Grain, GrainContext, GrainError,
    Kind, Node, NodeConfig,
};
use tokio::sync::{Semaphore, mpsc};

const GATE: &str = "Gate";
const WAIT: &str = "test.v1.Gate/Wait";
/// The bound of every wait on an event: a failing test ends instead of hanging.
const EVENT: Duration = Duration::from_secs(10);

/// What the grain's calls share with the test: each call reports its number on
/// `entered`; the first then blocks until `release` has a permit (or is cancelled at its
/// deadline); later ones answer at once. Answers are `attempt <n>` (a protobuf string).
struct Gate {
    calls: AtomicU32,
    entered: mpsc::UnboundedSender<u32>,
    release: Semaphore,
}

struct GateGrain(Arc<Gate>);

#[async_trait]
impl Grain for GateGrain {
    async fn handle(
        &mut self,
        _ctx: &GrainContext,
        method: &str,
        _payload: Bytes,
    ) -> Result<Bytes, GrainError> {
        if method != WAIT {
            return Err(GrainError::unimplemented(method));
        }
        let n = self.0.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = self.0.entered.send(n);
        if n == 1 {
            let _permit = self.0.release.acquire().await;
        }
        Ok(grain::codegen::encode(&format!("attempt {n}")))
    }
}

fn config(cluster: &str, prefix: &str) -> NodeConfig {
    NodeConfig {
        cluster_name: cluster.into(),
        member_prefix: prefix.into(),
        shutdown_grace: Duration::from_secs(3),
        ..NodeConfig::default()
    }
}

/// A host of the gate grain reachable only through a proxy, a caller hosting nothing,
/// and what the test sees of the grain's calls.
struct Setup {
    proxy: Proxy,
    host: Node,
    caller: Node,
    gate: Arc<Gate>,
    entered: mpsc::UnboundedReceiver<u32>,
}

impl Setup {
    /// `defaults` are the caller's default call options.
    async fn start(cluster: &str, defaults: &CallOptions) -> Self {
        let provider = InMemoryMembership::new(Duration::from_secs(30));
        let proxy = Proxy::start().await;
        let (tx, entered) = mpsc::unbounded_channel();
        let gate = Arc::new(Gate {
            calls: AtomicU32::new(0),
            entered: tx,
            release: Semaphore::new(0),
        });
        let kind = Kind::new(GATE, {
            let gate = gate.clone();
            move |_id: &ClusterIdentity| GateGrain(gate.clone())
        });
        let mut host_config = config(cluster, "host");
        host_config.advertise = Some(proxy.addr.to_string());
        let host = Node::start(host_config, vec![kind], Arc::new(provider.clone()))
            .await
            .unwrap_or_else(|e| panic!("host: {e}"));
        proxy.forward_to(host.local_addr());
        let mut caller_config = config(cluster, "caller");
        caller_config.call_defaults = defaults.clone();
        caller_config.reconnect_backoff = Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            multiplier: 2,
        };
        let caller = Node::start(caller_config, vec![], Arc::new(provider))
            .await
            .unwrap_or_else(|e| panic!("caller: {e}"));
        caller
            .cluster()
            .wait_for_kinds(&[GATE], Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            proxy,
            host,
            caller,
            gate,
            entered,
        }
    }

    /// Waits for the grain's call number `n` to begin.
    async fn entered(&mut self, n: u32) {
        let got = tokio::time::timeout(EVENT, self.entered.recv()).await;
        assert_eq!(
            got,
            Ok(Some(n)),
            "call {n} of the grain did not begin in time"
        );
    }

    /// Lets the grain's blocked first call answer (to nobody), then stops both members.
    async fn finish(self) {
        self.gate.release.add_permits(Semaphore::MAX_PERMITS / 2);
        self.caller.shutdown().await;
        self.host.shutdown().await;
    }
}

/// How the test makes the call.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// `Cluster::call_with` with these options as they are.
    Options,
    /// `Cluster::call_with` with `with_idempotent(true)`.
    IdempotentOptions,
    /// The generated clients' path, for a method whose `.proto` declares it idempotent.
    DeclaredIdempotent,
    /// The generated clients' path, for a method declared nothing.
    DeclaredNothing,
    /// The generated clients' path without options (the cluster's defaults), for a
    /// method whose `.proto` declares it idempotent.
    DeclaredIdempotentWithDefaults,
}

impl Via {
    fn idempotent(self) -> bool {
        matches!(
            self,
            Via::IdempotentOptions | Via::DeclaredIdempotent | Via::DeclaredIdempotentWithDefaults
        )
    }
}

/// Starts one call of `WAIT` on `target` in a task; its answer is the decoded string.
fn spawn_call(
    cluster: Cluster,
    target: ClusterIdentity,
    options: CallOptions,
    via: Via,
) -> tokio::task::JoinHandle<Result<String, CallError>> {
    tokio::spawn(async move {
        let untyped = |options: CallOptions| {
            let (cluster, target) = (cluster.clone(), target.clone());
            async move {
                let answer = cluster
                    .call_with(&target, WAIT, Bytes::new(), &options)
                    .await?;
                String::decode(answer).map_err(|e| CallError::Codec(e.to_string()))
            }
        };
        let typed = |declared: bool, options: Option<CallOptions>| {
            let (cluster, target) = (cluster.clone(), target.clone());
            async move {
                grain::codegen::unary::<(), String>(
                    &cluster,
                    &target,
                    WAIT,
                    &(),
                    options.as_ref(),
                    declared,
                )
                .await
            }
        };
        match via {
            Via::Options => untyped(options.clone()).await,
            Via::IdempotentOptions => untyped(options.clone().with_idempotent(true)).await,
            Via::DeclaredIdempotent => typed(true, Some(options)).await,
            Via::DeclaredNothing => typed(false, Some(options)).await,
            Via::DeclaredIdempotentWithDefaults => typed(true, None).await,
        }
    })
}

async fn answer_of(
    call: tokio::task::JoinHandle<Result<String, CallError>>,
) -> Result<String, CallError> {
    match tokio::time::timeout(EVENT, call).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("the calling task failed: {e}"),
        Err(_) => panic!("the call did not end within {EVENT:?}"),
    }
}

/// The link to the host breaks while the grain runs the call; the host is unreachable
/// for a moment, then reachable again.
async fn link_breaks_under_the_call(via: Via) {
    let options = CallOptions::default()
        .with_timeout(Duration::from_secs(8))
        .with_max_attempts(50);
    let mut s = Setup::start(&format!("idempotent-link-{via:?}"), &options).await;
    let cluster = s.caller.cluster();
    let target = ClusterIdentity::new(GATE, "gate");
    let call = spawn_call(cluster.clone(), target, options, via);
    s.entered(1).await;

    let mut accepted = s.proxy.accepted_changes();
    let before = *accepted.borrow_and_update();
    s.proxy.refuse(true);
    s.proxy.cut();

    if via.idempotent() {
        // The caller saw the break and is trying to reach the host again: the first
        // attempt's connection is gone, so its answer can no longer arrive.
        // (The watch's `Ref` is dropped at once: holding it would block the proxy.)
        let mut call = call;
        let tried = tokio::time::timeout(EVENT, async {
            tokio::select! {
                r = accepted.wait_for(|n| *n > before) => r.is_ok(),
                r = &mut call => panic!("via {via:?}: the call ended without a new attempt: {r:?}"),
            }
        })
        .await;
        assert_eq!(tried, Ok(true), "via {via:?}: the caller did not try again");
        s.gate.release.add_permits(1);
        s.proxy.refuse(false);
        let answer = answer_of(call).await;
        let retries = cluster.retries();
        assert_eq!(
            answer,
            Ok("attempt 2".to_string()),
            "via {via:?}: retries {:?}, the grain began {} calls",
            retries.by_reason(),
            s.gate.calls.load(Ordering::SeqCst)
        );
        assert!(
            retries.get("maybe_ran") >= 1,
            "via {via:?}: {:?}",
            retries.by_reason()
        );
    } else {
        let answer = answer_of(call).await;
        assert!(
            matches!(
                answer,
                Err(CallError::MemberUnavailable {
                    maybe_ran: true,
                    ..
                })
            ),
            "via {via:?}: got {answer:?}"
        );
        assert_eq!(cluster.retries().get("maybe_ran"), 0);
        s.proxy.refuse(false);
    }
    s.finish().await;
}

/// The first attempt stalls past its attempt timeout (the host cancels it at that
/// deadline); a second attempt would answer at once.
async fn attempt_times_out(via: Via) {
    let options = CallOptions::default()
        .with_timeout(Duration::from_secs(8))
        .with_attempt_timeout(Duration::from_millis(300));
    let mut s = Setup::start(&format!("idempotent-timeout-{via:?}"), &options).await;
    let cluster = s.caller.cluster();
    let target = ClusterIdentity::new(GATE, "gate");
    let call = spawn_call(cluster.clone(), target, options, via);
    s.entered(1).await;
    let answer = answer_of(call).await;
    if via.idempotent() {
        assert_eq!(answer, Ok("attempt 2".to_string()), "via {via:?}");
        let retries = cluster.retries();
        assert!(
            retries.get("attempt_timeout") >= 1,
            "via {via:?}: {:?}",
            retries.by_reason()
        );
    } else {
        assert!(
            matches!(answer, Err(CallError::Timeout { .. })),
            "via {via:?}: got {answer:?}"
        );
        assert_eq!(cluster.retries().get("attempt_timeout"), 0);
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_options_say_idempotent_is_sent_again_after_its_link_broke() {
    link_breaks_under_the_call(Via::IdempotentOptions).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_declared_idempotent_is_sent_again_after_its_link_broke() {
    link_breaks_under_the_call(Via::DeclaredIdempotent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_not_idempotent_fails_as_maybe_ran_when_its_link_broke() {
    link_breaks_under_the_call(Via::Options).await;
    link_breaks_under_the_call(Via::DeclaredNothing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_whose_attempt_timed_out_is_sent_again() {
    attempt_times_out(Via::IdempotentOptions).await;
    attempt_times_out(Via::DeclaredIdempotent).await;
    attempt_times_out(Via::DeclaredIdempotentWithDefaults).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_not_idempotent_whose_attempt_timed_out_fails_as_timeout() {
    attempt_times_out(Via::Options).await;
    attempt_times_out(Via::DeclaredNothing).await;
}
