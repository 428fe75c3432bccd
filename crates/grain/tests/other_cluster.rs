//! A peer of another cluster is refused, with a clear error on both sides.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use grain::membership::{InMemoryMembership, MembershipProvider};
use grain::{CallError, ClusterIdentity, Member, Node};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_from_another_cluster_is_refused_on_both_sides() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let ttl = Duration::from_secs(30);
    let alpha_provider = InMemoryMembership::new(ttl);
    let beta_provider = InMemoryMembership::new(ttl);
    // `alpha` hosts nothing; `beta` hosts the counter, in another cluster.
    let alpha = Node::start(
        config("alpha", "a"),
        vec![],
        Arc::new(alpha_provider.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let beta = Node::start(
        config("beta", "b"),
        vec![counter_kind()],
        Arc::new(beta_provider),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // A misconfiguration: alpha's membership lists beta's endpoint as one of its own.
    let intruder = Member {
        id: beta.member().id.clone(),
        address: beta.local_addr().to_string(),
        kinds: vec![COUNTER.into()],
        incarnation: 1,
    };
    alpha_provider
        .register(&intruder)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let c = alpha.cluster();
    assert!(
        c.wait_for_kinds(&[COUNTER], Duration::from_secs(5))
            .await
            .is_ok()
    );

    let r = c
        .call(&ClusterIdentity::new(COUNTER, "x"), ADD, Bytes::new())
        .await;
    match r {
        Err(CallError::MemberUnavailable {
            reason, maybe_ran, ..
        }) => {
            assert!(!maybe_ran);
            assert!(reason.contains("cluster mismatch"), "reason: {reason}");
            assert!(
                reason.contains("'alpha'") && reason.contains("'beta'"),
                "reason: {reason}"
            );
        }
        other => panic!("a call into another cluster answered {other:?}"),
    }
    assert_eq!(beta.activation_count(), 0, "the refused call must not run");

    let text =
        String::from_utf8(logs.0.lock().map(|v| v.clone()).unwrap_or_default()).unwrap_or_default();
    let callee_side = text
        .lines()
        .find(|l| l.contains("refused a peer of another cluster"))
        .unwrap_or_else(|| panic!("the callee logged no refusal:\n{text}"));
    assert!(
        callee_side.contains("alpha") && callee_side.contains("beta"),
        "{callee_side}"
    );
    let caller_side = text
        .lines()
        .find(|l| l.contains("peer refused this member"))
        .unwrap_or_else(|| panic!("the caller logged no refusal:\n{text}"));
    assert!(caller_side.contains("cluster mismatch"), "{caller_side}");

    alpha.shutdown().await;
    beta.shutdown().await;
}
