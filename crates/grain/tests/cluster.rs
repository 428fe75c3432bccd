//! Three members in one process, real tonic over loopback, the in-memory provider.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::stream::{FuturesUnordered, StreamExt};
use grain::{CallError, CallOptions, ClusterIdentity, Code};
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(2);

fn id(name: &str) -> ClusterIdentity {
    ClusterIdentity::new(COUNTER, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grain_called_from_any_member_runs_on_its_owner() {
    let (nodes, _p) = start_cluster("owner-test", 3, TTL).await;
    for i in 0..30 {
        let target = id(&format!("g{i}"));
        let owner = nodes[0]
            .cluster()
            .owner_of(&target)
            .map(|m| m.id.to_string());
        for node in &nodes {
            assert_eq!(
                node.cluster().owner_of(&target).map(|m| m.id.to_string()),
                owner
            );
            let answer = node.cluster().call(&target, ADD, Bytes::new()).await;
            let answer = answer.unwrap_or_else(|e| panic!("call to {target} failed: {e}"));
            let (ran_on, _) = member_of(&answer);
            assert_eq!(
                Some(ran_on),
                owner,
                "{target} ran on a member that does not own it"
            );
        }
    }
    // Identities spread: every member owns some of 30.
    let mut owners: Vec<String> = (0..30)
        .filter_map(|i| {
            nodes[0]
                .cluster()
                .owner_of(&id(&format!("g{i}")))
                .map(|m| m.id.to_string())
        })
        .collect();
    owners.sort();
    owners.dedup();
    assert_eq!(owners.len(), 3);
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_identity_keeps_its_state_across_calls_from_every_member() {
    let (nodes, _p) = start_cluster("state-test", 3, TTL).await;
    let target = id("counter-1");
    for round in 0..5u64 {
        for (i, node) in nodes.iter().enumerate() {
            let answer = node.cluster().call(&target, ADD, Bytes::new()).await;
            let (_, count) = member_of(&answer.unwrap_or_else(|e| panic!("add failed: {e}")));
            assert_eq!(count, round * 3 + i as u64 + 1);
        }
    }
    let live: usize = nodes.iter().map(|n| n.activation_count_of(COUNTER)).sum();
    assert_eq!(live, 1, "one identity must have exactly one activation");
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_calls_over_many_identities_all_answer_correctly() {
    let (nodes, _p) = start_cluster("load-test", 3, TTL).await;
    let clusters: Vec<_> = nodes.iter().map(|n| n.cluster()).collect();
    let options = CallOptions::default().with_timeout(Duration::from_secs(30));
    let mut calls = FuturesUnordered::new();
    for i in 0..10_000i64 {
        let cluster = clusters[i as usize % 3].clone();
        let options = options.clone();
        calls.push(async move {
            let target = id(&format!("load-{}", i % 500));
            let r = cluster
                .call_with(&target, DOUBLE, Bytes::from(i.to_string()), &options)
                .await;
            (i, r)
        });
    }
    let mut ok = 0;
    while let Some((i, r)) = calls.next().await {
        let answer = r.unwrap_or_else(|e| panic!("call {i} failed: {e}"));
        assert_eq!(
            answer,
            Bytes::from((2 * i).to_string()),
            "call {i} got a wrong answer"
        );
        ok += 1;
    }
    assert_eq!(ok, 10_000);
    let per_member: Vec<usize> = nodes
        .iter()
        .map(|n| n.activation_count_of(COUNTER))
        .collect();
    assert_eq!(
        per_member.iter().sum::<usize>(),
        500,
        "activations per member: {per_member:?}"
    );
    assert!(
        per_member.iter().all(|&n| n > 0),
        "every member should own some: {per_member:?}"
    );
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_of_a_member_that_leaves_answer_from_their_new_owners() {
    let (mut nodes, _p) = start_cluster("leave-test", 3, TTL).await;
    let leaving = nodes.remove(2);
    let leaving_id = leaving.member().id.clone();
    let caller = nodes[0].cluster();
    let mut theirs = Vec::new();
    for i in 0..60 {
        let target = id(&format!("l{i}"));
        let answer = caller.call(&target, ADD, Bytes::new()).await;
        let (ran_on, _) = member_of(&answer.unwrap_or_else(|e| panic!("{e}")));
        if ran_on == leaving_id.as_str() {
            theirs.push(target);
        }
    }
    assert!(
        !theirs.is_empty(),
        "the leaving member owned none of 60 identities"
    );
    leaving.shutdown().await;
    let gone = caller
        .wait_until(Duration::from_secs(5), |t| t.member(&leaving_id).is_none())
        .await;
    assert!(gone, "the member that left is still in the topology");
    for target in theirs {
        let answer = caller.call(&target, ADD, Bytes::new()).await;
        let (ran_on, count) = member_of(&answer.unwrap_or_else(|e| panic!("{target}: {e}")));
        assert_ne!(ran_on, leaving_id.as_str());
        assert_eq!(
            Some(ran_on),
            caller.owner_of(&target).map(|m| m.id.to_string())
        );
        assert_eq!(
            count, 1,
            "{target} should be a fresh activation on its new owner"
        );
    }
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_fails_only_that_call_and_the_next_call_gets_a_fresh_activation() {
    let (nodes, _p) = start_cluster("panic-test", 3, TTL).await;
    for (n, caller) in nodes.iter().enumerate() {
        let target = id(&format!("panicky-{n}"));
        let c = caller.cluster();
        assert!(c.call(&target, ADD, Bytes::new()).await.is_ok());
        assert!(c.call(&target, ADD, Bytes::new()).await.is_ok());
        match c.call(&target, PANIC, Bytes::new()).await {
            Err(CallError::Application { code, message }) => {
                assert_eq!(code, Code::Internal);
                assert!(message.contains("panicked"), "message: {message}");
            }
            other => panic!("a panicking call answered {other:?}"),
        }
        let answer = c.call(&target, ADD, Bytes::new()).await;
        let (_, count) = member_of(&answer.unwrap_or_else(|e| panic!("after panic: {e}")));
        assert_eq!(
            count, 1,
            "the grain was not activated afresh after the panic"
        );
    }
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_error_reaches_the_caller_with_its_code() {
    let (nodes, _p) = start_cluster("error-test", 3, TTL).await;
    for node in &nodes {
        match node.cluster().call(&id("closed"), FAIL, Bytes::new()).await {
            Err(CallError::Application { code, message }) => {
                assert_eq!(code, Code::FailedPrecondition);
                assert_eq!(message, "counter is closed");
            }
            other => panic!("got {other:?}"),
        }
    }
    for n in nodes {
        n.shutdown().await;
    }
}

/// Two identities owned by the same member, which is not `caller`.
fn two_on_another_member(caller: &grain::Cluster) -> (ClusterIdentity, ClusterIdentity) {
    let me = caller.member().id.clone();
    let mut by_owner: std::collections::HashMap<String, ClusterIdentity> = Default::default();
    for i in 0..1000 {
        let target = id(&format!("oversize-{i}"));
        let owner = caller
            .owner_of(&target)
            .unwrap_or_else(|| panic!("no owner for {target}"));
        if owner.id == me {
            continue;
        }
        if let Some(first) = by_owner.remove(owner.id.as_str()) {
            return (first, target);
        }
        by_owner.insert(owner.id.to_string(), target);
    }
    panic!("no two identities share an owner other than {me}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_call_or_failure_fails_alone_and_the_shared_link_keeps_working() {
    let (nodes, _p) = start_cluster("oversize-test", 3, TTL).await;
    let caller = nodes[0].cluster();
    let (slow, other) = two_on_another_member(&caller);

    // A 17 MB identity would not fit in one gRPC message (16 MiB): refused before
    // sending, naming the limit, while a call on the same link is in flight.
    let in_flight = tokio::spawn({
        let caller = caller.clone();
        let slow = slow.clone();
        async move { caller.call(&slow, SLOW, Bytes::new()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let huge = ClusterIdentity::new(COUNTER, "x".repeat(17 << 20));
    match caller.call(&huge, ADD, Bytes::new()).await {
        Err(CallError::Codec(m)) => assert!(m.contains("over the limit of 65536 bytes"), "{m}"),
        r => panic!("got {r:?}"),
    }
    let r = in_flight.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.as_deref().ok(), Some(&b"slow"[..]), "got {r:?}");

    // A grain failing with a 20 MB message: the caller gets it cut to 64 KiB, and the
    // answer of another call on the same stream still arrives.
    let in_flight = tokio::spawn({
        let caller = caller.clone();
        let slow = slow.clone();
        async move { caller.call(&slow, SLOW, Bytes::new()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let length = Bytes::from((20u64 << 20).to_string());
    match caller.call(&other, FAIL_LONG, length).await {
        Err(CallError::Application { code, message }) => {
            assert_eq!(code, Code::Aborted);
            assert!(message.len() <= 64 << 10, "{} bytes", message.len());
            assert!(
                message.ends_with("(truncated)"),
                "{}",
                &message[message.len() - 40..]
            );
        }
        r => panic!("got {:?}", r.map(|b| b.len())),
    }
    let r = in_flight.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.as_deref().ok(), Some(&b"slow"[..]), "got {r:?}");
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grain_sees_its_callers_deadline_and_a_nested_call_inherits_it() {
    let (nodes, _p) = start_cluster("deadline-test", 3, TTL).await;
    let timeout = Duration::from_secs(2);
    let options = CallOptions::default().with_timeout(timeout);
    let millis = |r: Result<Bytes, CallError>| -> u128 {
        let b = r.unwrap_or_else(|e| panic!("{e}"));
        std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a number: {b:?}"))
    };
    // From every member, so both the local path and the wire carry it.
    for node in &nodes {
        let left = millis(
            node.cluster()
                .call_with(&id("clock"), REMAINING, Bytes::new(), &options)
                .await,
        );
        assert!(
            (1000..=2000).contains(&left),
            "{}: the grain saw {left} ms of a 2000 ms deadline",
            node.member().id
        );
    }
    // A grain that spends 200 ms and then calls another grain with its own call's
    // options: the nested call gets what is left, not the 5 s default.
    let left = millis(
        nodes[0]
            .cluster()
            .call_with(
                &id("outer"),
                NESTED_REMAINING,
                Bytes::from_static(b"inner"),
                &options,
            )
            .await,
    );
    assert!(
        (800..=1800).contains(&left),
        "the nested call saw {left} ms; its caller had at most 1800 ms left"
    );
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grain_that_never_answers_times_out_within_its_deadline_plus_slack() {
    let (nodes, _p) = start_cluster("hang-test", 3, TTL).await;
    let timeout = Duration::from_millis(300);
    let slack = Duration::from_millis(200);
    let options = CallOptions::default().with_timeout(timeout);
    for node in &nodes {
        let target = id("sleeper");
        let started = Instant::now();
        let r = node
            .cluster()
            .call_with(&target, HANG, Bytes::new(), &options)
            .await;
        let took = started.elapsed();
        assert!(matches!(r, Err(CallError::Timeout { .. })), "got {r:?}");
        // The error names the call, whichever member ran it.
        let named = format!("{target} {HANG}");
        assert!(
            matches!(&r, Err(CallError::Timeout { target: t, .. }) if *t == named),
            "got {r:?}, not naming {named}"
        );
        assert!(took >= timeout && took <= timeout + slack, "took {took:?}");
        // The hung call was cancelled at its deadline: the grain answers again.
        let r = node.cluster().call(&target, ADD, Bytes::new()).await;
        assert!(
            r.is_ok(),
            "grain still blocked after a timed-out call: {r:?}"
        );
    }
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_to_a_member_that_leaves_the_topology_fail_at_once() {
    let (nodes, provider) = start_cluster("inflight-test", 3, TTL).await;
    let caller = nodes[0].cluster();
    let target = (0..1000)
        .map(|i| id(&format!("h{i}")))
        .find(|t| {
            caller
                .owner_of(t)
                .is_some_and(|m| m.id == nodes[2].member().id)
        })
        .unwrap_or_else(|| panic!("no identity owned by member 2"));
    let options = CallOptions::default().with_timeout(Duration::from_secs(20));
    let call = {
        let caller = caller.clone();
        let target = target.clone();
        tokio::spawn(async move {
            caller
                .call_with(&target, HANG, Bytes::new(), &options)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    // The provider declares member 2 gone (as Consul does when its check fails).
    use grain::membership::MembershipProvider;
    provider
        .deregister(&nodes[2].member().id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = call.await.unwrap_or_else(|e| panic!("{e}"));
    let took = started.elapsed();
    match r {
        Err(CallError::MemberUnavailable { maybe_ran, .. }) => assert!(maybe_ran),
        other => panic!("got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(2),
        "pending call failed only after {took:?}"
    );
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_kind_nobody_hosts_says_so() {
    let (nodes, _p) = start_cluster("nokind-test", 2, TTL).await;
    let r = nodes[0]
        .cluster()
        .call(&ClusterIdentity::new("Nobody", "x"), ADD, Bytes::new())
        .await;
    assert_eq!(
        r,
        Err(CallError::NoMemberHostsKind {
            kind: "Nobody".into()
        })
    );
    let missing = nodes[0]
        .cluster()
        .wait_for_kinds(&[COUNTER, "Nobody"], Duration::from_millis(200))
        .await;
    assert_eq!(
        missing.map_err(|m| m.missing),
        Err(vec!["Nobody".to_string()])
    );
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_grain_is_passivated_after_its_idle_timeout() {
    let provider = grain::membership::InMemoryMembership::new(TTL);
    let kind = counter_kind().idle_timeout(Duration::from_millis(200));
    let node = grain::Node::start(
        config("idle-test", "idle"),
        vec![kind],
        std::sync::Arc::new(provider),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let c = node.cluster();
    let target = id("sleepy");
    let mut counts = HashMap::new();
    for _ in 0..3 {
        let a = c
            .call(&target, ADD, Bytes::new())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        counts.insert(member_of(&a).1, ());
    }
    assert_eq!(node.activation_count(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(node.activation_count(), 0, "idle grain was not passivated");
    let a = c
        .call(&target, ADD, Bytes::new())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(member_of(&a).1, 1, "a passivated grain starts afresh");
    node.shutdown().await;
}

/// Counts its live instances across activations; deactivating takes a while.
struct SlowToLeave {
    live: std::sync::Arc<std::sync::atomic::AtomicI64>,
    max: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

#[async_trait::async_trait]
impl grain::Grain for SlowToLeave {
    async fn activated(&mut self, _ctx: &grain::GrainContext) -> Result<(), grain::GrainError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.live.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(now, SeqCst);
        Ok(())
    }

    async fn handle(
        &mut self,
        _ctx: &grain::GrainContext,
        _m: &str,
        _p: Bytes,
    ) -> Result<Bytes, grain::GrainError> {
        Ok(Bytes::from_static(b"ok"))
    }

    async fn deactivated(&mut self, _ctx: &grain::GrainContext) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_during_passivation_waits_for_the_old_activation_to_finish_leaving() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
    let live = Arc::new(AtomicI64::new(0));
    let max = Arc::new(AtomicI64::new(0));
    let (l, m) = (live.clone(), max.clone());
    let kind = grain::Kind::new("Slow", move |_: &ClusterIdentity| SlowToLeave {
        live: l.clone(),
        max: m.clone(),
    })
    .idle_timeout(Duration::from_millis(100));
    let provider = grain::membership::InMemoryMembership::new(TTL);
    let node = grain::Node::start(config("slow-test", "slow"), vec![kind], Arc::new(provider))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let c = node.cluster();
    let target = ClusterIdentity::new("Slow", "x");
    assert!(c.call(&target, "any", Bytes::new()).await.is_ok());
    // Idle passivation starts at ~100 ms; its deactivated hook runs until ~400 ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    assert!(c.call(&target, "any", Bytes::new()).await.is_ok());
    let waited = started.elapsed();
    assert_eq!(
        max.load(SeqCst),
        1,
        "two activations of one identity were alive at once"
    );
    assert!(
        waited >= Duration::from_millis(100),
        "the call did not wait for the old activation ({waited:?})"
    );
    node.shutdown().await;
    assert_eq!(live.load(SeqCst), 0);
}
