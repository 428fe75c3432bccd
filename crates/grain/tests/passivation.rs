//! Many activations stop together: a node's shutdown runs the `deactivated` hook of
//! every activation it holds, many at a time, within its shutdown grace — not one
//! after another, which would leave most of them unrun.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::config;
use grain::membership::InMemoryMembership;
use grain::{ClusterIdentity, Grain, GrainContext, GrainError, Kind, Node};

const KIND: &str = "Napper";
const PING: &str = "test.v1.Napper/Ping";

/// How long each `deactivated` hook takes.
const NAP: Duration = Duration::from_millis(200);

/// Activations held when the node shuts down: one after another, their hooks would
/// take 1,000 × 200 ms = 200 s, far past the grace below.
const ACTIVATIONS: usize = 1_000;

/// `deactivated` hooks that ran to their end.
static DEACTIVATED: AtomicUsize = AtomicUsize::new(0);

/// Answers `Ping`; its `deactivated` takes [`NAP`].
struct Napper;

#[async_trait]
impl Grain for Napper {
    async fn handle(
        &mut self,
        _ctx: &GrainContext,
        method: &str,
        _payload: Bytes,
    ) -> Result<Bytes, GrainError> {
        match method {
            PING => Ok(Bytes::from_static(b"pong")),
            other => Err(GrainError::unimplemented(other)),
        }
    }

    async fn deactivated(&mut self, _ctx: &GrainContext) {
        tokio::time::sleep(NAP).await;
        DEACTIVATED.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deactivates_every_activation_within_its_grace() {
    let provider = InMemoryMembership::new(Duration::from_secs(30));
    let mut node_config = config("passivation-shutdown", "host");
    node_config.shutdown_grace = Duration::from_secs(10);
    let kind = Kind::new(KIND, |_id: &ClusterIdentity| Napper);
    let node = Node::start(node_config, vec![kind], Arc::new(provider))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cluster = node.cluster();
    cluster
        .wait_for_kinds(&[KIND], Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let calls = (0..ACTIVATIONS).map(|i| {
        let cluster = cluster.clone();
        async move {
            let id = ClusterIdentity::new(KIND, format!("napper-{i}"));
            cluster.call(&id, PING, Bytes::new()).await
        }
    });
    for answer in futures::future::join_all(calls).await {
        assert_eq!(answer.as_deref().ok(), Some(&b"pong"[..]), "{answer:?}");
    }
    assert_eq!(node.activation_count(), ACTIVATIONS);
    assert_eq!(DEACTIVATED.load(Ordering::SeqCst), 0, "none is idle yet");
    node.shutdown().await;
    assert_eq!(
        DEACTIVATED.load(Ordering::SeqCst),
        ACTIVATIONS,
        "every activation's deactivated hook ran to its end within the shutdown grace"
    );
}
