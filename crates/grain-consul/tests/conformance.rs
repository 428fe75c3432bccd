//! The Consul provider passes the runtime's membership conformance suite: against the
//! dev agent always, and against a real Consul agent when asked.

use std::time::Duration;

use grain::membership::testkit::Harness;
use grain_consul::{ConsulConfig, ConsulMembership, DevAgent, DevAgentConfig};

const TTL: Duration = Duration::from_secs(1);

fn config(address: String) -> ConsulConfig {
    ConsulConfig {
        address,
        ttl: TTL,
        keep_alive_interval: Duration::from_millis(300),
        ..ConsulConfig::from_env().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Against the dev agent: each test gets its own agent on a free loopback port. The
/// agent lives as long as the test's runtime (it is stopped when dropped).
mod dev_agent {
    use super::*;

    grain::membership_conformance_tests!(|| async {
        let agent = DevAgent::start(DevAgentConfig {
            bind: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
            ..DevAgentConfig::default()
        })
        .await
        .unwrap_or_else(|e| panic!("dev agent: {e}"));
        let address = agent.http_addr();
        // Keep the agent running for the rest of the test.
        std::mem::forget(agent);
        let provider = ConsulMembership::new("conformance", config(address))
            .unwrap_or_else(|e| panic!("provider: {e}"));
        Harness::new(provider, TTL)
    });
}

/// Against a real Consul agent: `CONSUL_HTTP_ADDR=http://127.0.0.1:8500 cargo test -p
/// grain-consul --test conformance -- --ignored` (with `consul agent -dev` running).
mod real_consul {
    use super::*;

    grain::membership_conformance_tests!(
        ignore = "needs a real Consul agent: set CONSUL_HTTP_ADDR and run with --ignored",
        || async {
            let address = std::env::var(grain_consul::config::ENV_HTTP_ADDR)
                .unwrap_or_else(|_| panic!("CONSUL_HTTP_ADDR is not set"));
            let provider = ConsulMembership::new("grain-conformance", config(address))
                .unwrap_or_else(|e| panic!("provider: {e}"));
            Harness::new(provider, TTL)
        }
    );
}
