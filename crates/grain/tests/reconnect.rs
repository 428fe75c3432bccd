//! A link whose connection breaks while its peer stays in the topology: it reconnects
//! on demand, with backoff while the peer cannot be reached (or breaks every new stream
//! before answering); the grain on the other side keeps its state throughout, and a
//! call waiting on an unreachable owner moves on when that owner leaves.
//!
//! The host is reachable only through a TCP proxy in this test, which can cut every
//! connection, refuse new ones (accept and close at once), or forward again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::proxy::Proxy;
use common::*;
use grain::membership::InMemoryMembership;
use grain::{Backoff, CallError, CallOptions, ClusterIdentity, Node};
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(30);

fn count_of(answer: &Result<Bytes, CallError>) -> u64 {
    match answer {
        Ok(b) => member_of(b).1,
        Err(e) => panic!("call failed: {e:?}"),
    }
}

const BACKOFF_MAX: Duration = Duration::from_millis(800);

/// A host of the counter reachable only through a proxy, and a caller hosting nothing
/// whose reconnection backoff is 50 ms doubling to 800 ms.
async fn host_behind_a_proxy(cluster: &str) -> (Proxy, Node, Node, InMemoryMembership) {
    let provider = InMemoryMembership::new(TTL);
    let proxy = Proxy::start().await;
    let mut host_config = config(cluster, "host");
    host_config.advertise = Some(proxy.addr.to_string());
    let host = Node::start(
        host_config,
        vec![counter_kind()],
        Arc::new(provider.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("host: {e}"));
    proxy.forward_to(host.local_addr());
    let mut caller_config = config(cluster, "caller");
    caller_config.reconnect_backoff = Backoff {
        initial: Duration::from_millis(50),
        max: BACKOFF_MAX,
        multiplier: 2,
    };
    let caller = Node::start(caller_config, vec![], Arc::new(provider.clone()))
        .await
        .unwrap_or_else(|e| panic!("caller: {e}"));
    caller
        .cluster()
        .wait_for_kinds(&[COUNTER], Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (proxy, host, caller, provider)
}

/// Calls `ADD` until it answers (within 3 s); returns the count and how long it took.
async fn add_until_it_answers(
    cluster: &grain::Cluster,
    target: &ClusterIdentity,
) -> (u64, Duration) {
    let started = Instant::now();
    let options = CallOptions::default().with_timeout(Duration::from_secs(5));
    loop {
        let r = cluster.call_with(target, ADD, Bytes::new(), &options).await;
        if let Ok(b) = &r {
            return (member_of(b).1, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "no answer within 3 s: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Calls `method` for 2 s while the host is unreachable, checking each outcome with
/// `check`; the proxy must accept few connections meanwhile, showing backoff (pauses of
/// 50, 100, 200, 400, 800, 800, … ms, each jittered down to as little as half: at most
/// about 11 in 2 s; reconnecting once per call or per retry would be dozens or more).
async fn connections_while_failing(
    proxy: &Proxy,
    cluster: &grain::Cluster,
    target: &ClusterIdentity,
    method: &str,
    check: impl Fn(usize, &Result<Bytes, CallError>, Duration),
) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = proxy.accepted();
    let options = CallOptions::default().with_timeout(Duration::from_secs(1));
    let window = Duration::from_secs(2);
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < window {
        let call_started = Instant::now();
        let r = cluster
            .call_with(target, method, Bytes::new(), &options)
            .await;
        calls += 1;
        check(calls, &r, call_started.elapsed());
    }
    let connections = proxy.accepted() - before;
    println!("{method}: {calls} calls and {connections} connections in {window:?}");
    assert!(
        (2..=16).contains(&connections),
        "{connections} connections in {window:?}: no backoff"
    );
}

/// Once the host is reachable again, the link is back within one backoff step and the
/// grain still has its state: the next `ADD` counts `want`.
async fn comes_back_with_its_state(cluster: &grain::Cluster, target: &ClusterIdentity, want: u64) {
    let (count, took) = add_until_it_answers(cluster, target).await;
    assert_eq!(count, want, "the grain lost its state");
    assert!(
        took <= BACKOFF_MAX + Duration::from_millis(1200),
        "came back after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_link_reconnects_with_backoff_and_the_grain_keeps_its_state() {
    let (proxy, host, caller, _) = host_behind_a_proxy("reconnect-test").await;
    let cluster = caller.cluster();
    let target = ClusterIdentity::new(COUNTER, "through-the-proxy");
    assert_eq!(count_of(&cluster.call(&target, ADD, Bytes::new()).await), 1);

    // 1. The connection breaks under a call in flight: that call fails at once, as
    //    "maybe ran" (never retried), instead of waiting for its 5 s deadline.
    let slow = tokio::spawn({
        let cluster = cluster.clone();
        let target = target.clone();
        async move {
            let started = Instant::now();
            (
                cluster.call(&target, SLOW, Bytes::new()).await,
                started.elapsed(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    proxy.cut();
    let (r, took) = slow.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(
            r,
            Err(CallError::MemberUnavailable {
                maybe_ran: true,
                ..
            })
        ),
        "got {r:?}"
    );
    assert!(took < Duration::from_secs(1), "failed after {took:?}");

    // 2. The next call reconnects on demand, and the activation kept its count.
    let before = proxy.accepted();
    assert_eq!(count_of(&cluster.call(&target, ADD, Bytes::new()).await), 2);
    assert_eq!(proxy.accepted(), before + 1, "one new connection");

    // 3. The host cannot be reached (its address accepts and closes): calls fail as
    //    "did not run" (or time out waiting for the next attempt), and connection
    //    attempts back off instead of hammering.
    proxy.refuse(true);
    proxy.cut();
    connections_while_failing(&proxy, &cluster, &target, ADD, |call, r, took| {
        assert!(
            matches!(
                r,
                Err(CallError::MemberUnavailable {
                    maybe_ran: false,
                    ..
                }) | Err(CallError::Timeout { .. })
            ),
            "call {call}: got {r:?}"
        );
        assert!(
            took < Duration::from_secs(2),
            "call {call} took {took:?}, over its 1 s deadline"
        );
    })
    .await;

    // 4. Reachable again.
    proxy.refuse(false);
    comes_back_with_its_state(&cluster, &target, 3).await;
    caller.shutdown().await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_accepts_then_fails_is_retried_with_backoff_not_once_per_call() {
    let (proxy, host, caller, _) = host_behind_a_proxy("flapping-test").await;
    let cluster = caller.cluster();
    let target = ClusterIdentity::new(COUNTER, "flapping");
    assert_eq!(count_of(&cluster.call(&target, ADD, Bytes::new()).await), 1);

    // Every new connection now dies 50 ms after it was accepted, before a 300 ms call
    // can answer: the link must back off, not reconnect as fast as calls come.
    proxy.cut_after(Some(Duration::from_millis(50)));
    proxy.cut();
    connections_while_failing(&proxy, &cluster, &target, SLOW, |call, r, _| {
        assert!(
            matches!(
                r,
                Err(CallError::MemberUnavailable { .. }) | Err(CallError::Timeout { .. })
            ),
            "call {call}: got {r:?}"
        );
    })
    .await;

    // Quick calls get answered before each connection dies: a stream that answered
    // but lived less than a second still counts as failing, so the link keeps backing
    // off instead of reconnecting after every break.
    let quick = ClusterIdentity::new(COUNTER, "flapping-quick");
    connections_while_failing(&proxy, &cluster, &quick, ADD, |call, r, _| {
        assert!(
            matches!(
                r,
                Ok(_) | Err(CallError::MemberUnavailable { .. }) | Err(CallError::Timeout { .. })
            ),
            "call {call}: got {r:?}"
        );
    })
    .await;

    proxy.cut_after(None);
    comes_back_with_its_state(&cluster, &target, 2).await;
    caller.shutdown().await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_for_an_unreachable_owner_moves_on_when_the_owner_leaves() {
    let (proxy, unreachable, caller, provider) = host_behind_a_proxy("failover-test").await;
    let other = Node::start(
        config("failover-test", "other"),
        vec![counter_kind()],
        Arc::new(provider.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("other: {e}"));
    let cluster = caller.cluster();
    assert!(
        cluster
            .wait_until(Duration::from_secs(5), |t| t.members().len() == 3)
            .await,
        "the caller did not see all three members"
    );
    let target = (0..1000)
        .map(|i| ClusterIdentity::new(COUNTER, format!("failover-{i}")))
        .find(|t| {
            cluster
                .owner_of(t)
                .is_some_and(|m| m.id == unreachable.member().id)
        })
        .unwrap_or_else(|| panic!("no identity owned by the host behind the proxy"));
    assert_eq!(count_of(&cluster.call(&target, ADD, Bytes::new()).await), 1);

    // The owner becomes unreachable, but stays in the topology for now.
    proxy.refuse(true);
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting = tokio::spawn({
        let cluster = cluster.clone();
        let target = target.clone();
        async move {
            let options = CallOptions::default()
                .with_timeout(Duration::from_secs(5))
                .with_max_attempts(50);
            let started = Instant::now();
            let r = cluster
                .call_with(&target, ADD, Bytes::new(), &options)
                .await;
            (r, started.elapsed())
        }
    });
    // Then it leaves: the waiting call is not lost with it but answered by the new
    // owner (a fresh activation), within its deadline.
    let leaves_after = Duration::from_millis(800);
    tokio::time::sleep(leaves_after).await;
    let gone = unreachable.member().id.clone();
    unreachable.shutdown().await;
    let (r, took) = waiting.await.unwrap_or_else(|e| panic!("{e}"));
    let answer = r.unwrap_or_else(|e| panic!("the waiting call failed after {took:?}: {e}"));
    let (member, count) = member_of(&answer);
    assert_eq!(
        member,
        other.member().id.as_str(),
        "answered by {member}, not the new owner"
    );
    assert_ne!(member, gone.as_str());
    assert_eq!(count, 1, "a fresh activation on the new owner");
    assert!(
        took >= leaves_after && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    caller.shutdown().await;
    other.shutdown().await;
}
