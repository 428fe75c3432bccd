//! Shared test grains and a three-member cluster over real tonic on loopback.
#![allow(dead_code, missing_docs, unreachable_pub)]

pub mod certs;
pub mod proxy;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use grain::membership::InMemoryMembership;
use grain::{ClusterIdentity, Grain, GrainContext, GrainError, Kind, Node, NodeConfig};

pub const COUNTER: &str = "Counter";
pub const ADD: &str = "test.v1.Counter/Add";
pub const DOUBLE: &str = "test.v1.Counter/Double";
pub const PANIC: &str = "test.v1.Counter/Panic";
pub const HANG: &str = "test.v1.Counter/Hang";
pub const FAIL: &str = "test.v1.Counter/Fail";
pub const SLOW: &str = "test.v1.Counter/Slow";
pub const FAIL_LONG: &str = "test.v1.Counter/FailLong";
pub const REMAINING: &str = "test.v1.Counter/Remaining";
pub const NESTED_REMAINING: &str = "test.v1.Counter/NestedRemaining";

/// A counter: `Add` answers `member:count`, `Double` answers `2 * n`, `Panic` panics,
/// `Hang` never answers, `Fail` answers `FailedPrecondition`, `Slow` answers `slow` after
/// 300 ms, `FailLong` answers `Aborted` with a message of as many bytes as its payload says,
/// `Remaining` answers the milliseconds left of its deadline, and `NestedRemaining` asks
/// `Remaining` of the identity in its payload with the options of a nested call.
#[derive(Default)]
pub struct CounterGrain {
    count: u64,
}

#[async_trait]
impl Grain for CounterGrain {
    async fn handle(
        &mut self,
        ctx: &GrainContext,
        method: &str,
        payload: Bytes,
    ) -> Result<Bytes, GrainError> {
        match method {
            ADD => {
                self.count += 1;
                Ok(Bytes::from(format!("{}:{}", ctx.member(), self.count)))
            }
            DOUBLE => {
                let n: i64 = std::str::from_utf8(&payload)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| GrainError::invalid_argument("not a number"))?;
                Ok(Bytes::from((2 * n).to_string()))
            }
            PANIC => panic!("asked to panic"),
            HANG => {
                futures::future::pending::<()>().await;
                unreachable!()
            }
            FAIL => Err(GrainError::new(
                grain::Code::FailedPrecondition,
                "counter is closed",
            )),
            SLOW => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(Bytes::from_static(b"slow"))
            }
            FAIL_LONG => {
                let n: usize = std::str::from_utf8(&payload)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| GrainError::invalid_argument("not a length"))?;
                Err(GrainError::new(grain::Code::Aborted, "é".repeat(n / 2)))
            }
            REMAINING => {
                let left = ctx.remaining().unwrap_or_default();
                Ok(Bytes::from(left.as_millis().to_string()))
            }
            NESTED_REMAINING => {
                let other =
                    ClusterIdentity::new(COUNTER, String::from_utf8_lossy(&payload).into_owned());
                tokio::time::sleep(Duration::from_millis(200)).await;
                ctx.cluster()
                    .call_with(&other, REMAINING, Bytes::new(), &ctx.call_options())
                    .await
                    .map_err(|e| GrainError::internal(e.to_string()))
            }
            other => Err(GrainError::unimplemented(other)),
        }
    }
}

pub fn counter_kind() -> Kind {
    Kind::new(COUNTER, |_id: &ClusterIdentity| CounterGrain::default())
}

pub fn config(cluster: &str, prefix: &str) -> NodeConfig {
    NodeConfig {
        cluster_name: cluster.into(),
        member_prefix: prefix.into(),
        shutdown_grace: Duration::from_secs(3),
        ..NodeConfig::default()
    }
}

/// Starts `n` members of cluster `name` sharing one in-memory provider, all hosting the
/// counter, and waits until each sees all of them.
pub async fn start_cluster(name: &str, n: usize, ttl: Duration) -> (Vec<Node>, InMemoryMembership) {
    let provider = InMemoryMembership::new(ttl);
    let mut nodes = Vec::new();
    for i in 0..n {
        let node = Node::start(
            config(name, &format!("m{i}")),
            vec![counter_kind()],
            Arc::new(provider.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("node {i} did not start: {e}"));
        nodes.push(node);
    }
    for node in &nodes {
        let seen = node
            .cluster()
            .wait_until(Duration::from_secs(5), |t| t.members().len() == n)
            .await;
        assert!(
            seen,
            "member {} did not see all {n} members",
            node.member().id
        );
    }
    (nodes, provider)
}

pub fn member_of(answer: &[u8]) -> (String, u64) {
    let s = std::str::from_utf8(answer).unwrap_or_default();
    let (m, c) = s.rsplit_once(':').unwrap_or(("", "0"));
    (m.to_string(), c.parse().unwrap_or(0))
}
