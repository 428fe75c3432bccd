//! Three members in one process, talking over real gRPC on loopback: a counter grain
//! called from every member always runs on its one owner and keeps its count.
//!
//! ```text
//! cargo run -p grain --example three_members
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use grain::membership::InMemoryMembership;
use grain::{ClusterIdentity, Grain, GrainContext, GrainError, Kind, Node, NodeConfig};

/// Counts the calls it receives; answers `count on member`.
#[derive(Default)]
struct Counter {
    count: u64,
}

#[async_trait]
impl Grain for Counter {
    async fn handle(
        &mut self,
        ctx: &GrainContext,
        method: &str,
        _payload: Bytes,
    ) -> Result<Bytes, GrainError> {
        match method {
            "example.Counter/Increment" => {
                self.count += 1;
                Ok(Bytes::from(format!("{} on {}", self.count, ctx.member())))
            }
            other => Err(GrainError::unimplemented(other)),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let membership = InMemoryMembership::new(Duration::from_secs(3));
    let mut nodes = Vec::new();
    for name in ["red", "green", "blue"] {
        let config = NodeConfig {
            cluster_name: "example".into(),
            member_prefix: name.into(),
            ..NodeConfig::default()
        };
        let kind = Kind::new("Counter", |_: &ClusterIdentity| Counter::default());
        let node = Node::start(config, vec![kind], Arc::new(membership.clone())).await?;
        println!("started {} on {}", node.member().id, node.local_addr());
        nodes.push(node);
    }
    for node in &nodes {
        node.cluster()
            .wait_until(Duration::from_secs(5), |t| t.members().len() == 3)
            .await;
    }
    for round in 0..2 {
        for name in ["apples", "pears"] {
            let id = ClusterIdentity::new("Counter", name);
            for node in &nodes {
                let answer = node
                    .cluster()
                    .call(&id, "example.Counter/Increment", Bytes::new())
                    .await?;
                println!(
                    "round {round}: {} asked {id}: {}",
                    node.member().id,
                    String::from_utf8_lossy(&answer)
                );
            }
        }
    }
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
