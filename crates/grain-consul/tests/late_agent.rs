//! A node started before the agent waits, says so once in its log, and joins when the
//! agent comes up.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grain::membership::MembershipProvider;
use grain::{Node, NodeConfig};
use grain_consul::{ConsulConfig, ConsulMembership, DevAgent, DevAgentConfig};
use tokio::time::Instant;

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

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().map(|v| v.clone()).unwrap_or_default()).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_the_agent_waits_logs_once_and_joins_when_it_comes_up() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    // A free port, with nothing listening on it yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"));
    let address = format!("http://{port}");
    let consul = ConsulConfig {
        address: address.clone(),
        ttl: Duration::from_secs(1),
        keep_alive_interval: Duration::from_millis(300),
        ..ConsulConfig::default()
    };
    let provider = ConsulMembership::new("late", consul.clone()).unwrap_or_else(|e| panic!("{e}"));
    let config = NodeConfig {
        cluster_name: "late".into(),
        member_prefix: "early".into(),
        ..NodeConfig::default()
    };
    let node = Node::start(config, vec![], Arc::new(provider))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let text = logs.text();
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("membership registration failed"))
        .collect();
    assert_eq!(
        failures.len(),
        1,
        "want exactly one log line for the state change:\n{text}"
    );
    assert!(
        failures[0].contains("cannot reach Consul at"),
        "{}",
        failures[0]
    );
    assert!(
        failures[0].contains(&address),
        "the line names the agent address: {}",
        failures[0]
    );

    let agent = DevAgent::start(DevAgentConfig {
        bind: port,
        ..DevAgentConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let up = Instant::now();
    let checker = ConsulMembership::new("late", consul).unwrap_or_else(|e| panic!("{e}"));
    loop {
        let listed = checker
            .members(None, Duration::from_secs(1))
            .await
            .map(|s| s.members.iter().any(|m| m.id == node.member().id))
            .unwrap_or(false);
        if listed {
            break;
        }
        assert!(
            up.elapsed() < Duration::from_secs(3),
            "the node did not join within 3 s of the agent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let joined = up.elapsed();
    eprintln!("the early node joined {joined:?} after the agent came up");
    assert!(
        joined <= Duration::from_secs(1),
        "joined {joined:?} after the agent came up"
    );
    assert!(
        logs.text().contains("membership registration works again"),
        "no recovery line:\n{}",
        logs.text()
    );
    node.shutdown().await;
    agent.stop().await;
}
