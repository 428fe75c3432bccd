//! Members on the Consul provider, against the dev agent: what happens when a member
//! freezes, when the agent restarts empty, and when the agent is down for 30 s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use grain::membership::MembershipProvider;
use grain::{ClusterIdentity, Grain, GrainContext, GrainError, Kind, Node, NodeConfig};
use grain_consul::{ConsulConfig, ConsulMembership, DevAgent, DevAgentConfig};
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(1);
const KIND: &str = "Where";

/// Answers the member it runs on.
struct Where;

#[async_trait]
impl Grain for Where {
    async fn handle(
        &mut self,
        ctx: &GrainContext,
        _m: &str,
        _p: Bytes,
    ) -> Result<Bytes, GrainError> {
        Ok(Bytes::from(ctx.member().to_string()))
    }
}

async fn agent_at(bind: SocketAddr) -> DevAgent {
    DevAgent::start(DevAgentConfig {
        bind,
        ..DevAgentConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("dev agent: {e}"))
}

fn provider(cluster: &str, agent: &str) -> ConsulMembership {
    let config = ConsulConfig {
        address: agent.to_string(),
        ttl: TTL,
        keep_alive_interval: Duration::from_millis(300),
        ..ConsulConfig::default()
    };
    ConsulMembership::new(cluster, config).unwrap_or_else(|e| panic!("provider: {e}"))
}

async fn node(cluster: &str, agent: &str, prefix: &str) -> Node {
    let config = NodeConfig {
        cluster_name: cluster.into(),
        member_prefix: prefix.into(),
        membership_wait: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(2),
        ..NodeConfig::default()
    };
    let kind = Kind::new(KIND, |_: &ClusterIdentity| Where);
    Node::start(config, vec![kind], Arc::new(provider(cluster, agent)))
        .await
        .unwrap_or_else(|e| panic!("node: {e}"))
}

async fn three_nodes(cluster: &str, agent: &str) -> Vec<Node> {
    let mut nodes = Vec::new();
    for p in ["a", "b", "c"] {
        nodes.push(node(cluster, agent, p).await);
    }
    for n in &nodes {
        let all = n
            .cluster()
            .wait_until(Duration::from_secs(5), |t| t.members().len() == 3)
            .await;
        assert!(all, "{} did not see 3 members", n.member().id);
    }
    nodes
}

async fn passing_ids(cluster: &str, agent: &str) -> Vec<String> {
    match provider(cluster, agent)
        .members(None, Duration::from_secs(1))
        .await
    {
        Ok(s) => {
            let mut ids: Vec<String> = s.members.iter().map(|m| m.id.to_string()).collect();
            ids.sort();
            ids
        }
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_refreshing_leaves_every_topology_within_ttl_plus_one_second() {
    let agent = agent_at("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))).await;
    let addr = agent.http_addr();
    let mut nodes = three_nodes("frozen", &addr).await;
    let frozen = nodes.remove(2);
    let frozen_id = frozen.member().id.clone();
    // Dropping a node aborts its tasks without deregistering: its keep-alives just stop.
    drop(frozen);
    let stopped = Instant::now();
    for n in &nodes {
        let left = n
            .cluster()
            .wait_until(TTL + Duration::from_secs(3), |t| {
                t.member(&frozen_id).is_none()
            })
            .await;
        assert!(left, "{} still lists the frozen member", n.member().id);
    }
    let took = stopped.elapsed();
    eprintln!(
        "the frozen member left every topology {took:?} after its last chance to refresh (TTL {TTL:?})"
    );
    assert!(
        took <= TTL + Duration::from_secs(1),
        "the frozen member left after {took:?} (TTL {TTL:?})"
    );
    for n in nodes {
        n.shutdown().await;
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_agent_restarts_empty_every_node_is_registered_again_within_two_ttls() {
    let agent = agent_at("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))).await;
    let bind = agent.local_addr();
    let addr = agent.http_addr();
    let nodes = three_nodes("restart", &addr).await;
    let mut want: Vec<String> = nodes.iter().map(|n| n.member().id.to_string()).collect();
    want.sort();
    assert_eq!(passing_ids("restart", &addr).await, want);
    let version_before: Vec<u64> = nodes
        .iter()
        .map(|n| n.cluster().topology().version())
        .collect();

    agent.stop().await;
    let agent = agent_at(bind).await;
    let restarted = Instant::now();
    let back = loop {
        if passing_ids("restart", &addr).await == want {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < 4 * TTL,
            "nodes not registered again after {:?}",
            restarted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("every node registered again {back:?} after the agent restarted empty (TTL {TTL:?})");
    assert!(
        back <= 2 * TTL,
        "every node registered again after {back:?} (2 x TTL = {:?})",
        2 * TTL
    );
    // Nobody's topology lost a member on the way (the grace period after the index went
    // backwards kept them).
    tokio::time::sleep(2 * TTL).await;
    for (n, before) in nodes.iter().zip(version_before) {
        assert_eq!(n.cluster().topology().members().len(), 3);
        assert_eq!(
            n.cluster().topology().version(),
            before,
            "{} changed topology",
            n.member().id
        );
    }
    for n in nodes {
        n.shutdown().await;
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_down_for_thirty_seconds_changes_no_topology_and_fails_no_call() {
    let agent = agent_at("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))).await;
    let bind = agent.local_addr();
    let addr = agent.http_addr();
    let nodes = three_nodes("outage", &addr).await;
    let versions: Vec<u64> = nodes
        .iter()
        .map(|n| n.cluster().topology().version())
        .collect();

    agent.stop().await;
    let outage = Duration::from_secs(30);
    let started = Instant::now();
    let mut calls = 0u64;
    let mut failures = Vec::new();
    while started.elapsed() < outage {
        for (i, n) in nodes.iter().enumerate() {
            let id = ClusterIdentity::new(KIND, format!("g{}", calls % 50));
            let owner = n.cluster().owner_of(&id).map(|m| m.id.to_string());
            match n.cluster().call(&id, "where", Bytes::new()).await {
                Ok(answer) => {
                    let ran_on = String::from_utf8_lossy(&answer).to_string();
                    if Some(ran_on.clone()) != owner {
                        failures.push(format!("node {i}: {id} ran on {ran_on}, owner {owner:?}"));
                    }
                }
                Err(e) => failures.push(format!("node {i}: {id}: {e}")),
            }
            calls += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{calls} calls during a {outage:?} agent outage, {} failed",
        failures.len()
    );
    assert!(calls > 1000, "only {calls} calls in the outage");
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    for (n, before) in nodes.iter().zip(&versions) {
        assert_eq!(
            n.cluster().topology().version(),
            *before,
            "{} changed topology during the outage",
            n.member().id
        );
    }

    // The agent comes back empty; everyone registers again and nothing reshuffles.
    let agent = agent_at(bind).await;
    let mut want: Vec<String> = nodes.iter().map(|n| n.member().id.to_string()).collect();
    want.sort();
    let back = Instant::now();
    while passing_ids("outage", &addr).await != want {
        assert!(
            back.elapsed() < 4 * TTL,
            "nodes not registered again after the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(2 * TTL).await;
    for (n, before) in nodes.iter().zip(&versions) {
        assert_eq!(
            n.cluster().topology().version(),
            *before,
            "{} changed topology after the outage",
            n.member().id
        );
    }
    for n in nodes {
        n.shutdown().await;
    }
    agent.stop().await;
}
