//! Writing your own grain, end to end: `proto/counter/v1/counter.proto` describes the
//! service, `build.rs` generates the `Counter` trait, `CounterKind` and `CounterClient`,
//! and this program implements the grain, starts two members (one hosting counters, one
//! only calling) and calls them over gRPC.
//!
//! ```text
//! cargo run -p counter-example
//! ```

use std::sync::Arc;
use std::time::Duration;

use grain::membership::InMemoryMembership;
use grain::{CallError, GrainContext, GrainError, Node, NodeConfig};

/// The generated code for package `counter.v1`.
mod counter {
    grain::include_grains!("counter.v1");
}

use counter::{AddRequest, CountResponse, Counter, CounterClient, CounterKind, GetRequest};

/// One counter's state: it lives as long as the activation.
#[derive(Default)]
struct CounterGrain {
    total: i64,
    calls: i64,
}

impl Counter for CounterGrain {
    async fn activated(&mut self, ctx: &GrainContext) -> Result<(), GrainError> {
        println!("  (activated {} on {})", ctx.identity(), ctx.member());
        Ok(())
    }

    async fn add(
        &mut self,
        _ctx: &GrainContext,
        request: AddRequest,
    ) -> Result<CountResponse, GrainError> {
        if request.amount < 0 {
            return Err(GrainError::invalid_argument(format!(
                "amount must not be negative, got {}",
                request.amount
            )));
        }
        self.calls += 1;
        self.total += request.amount;
        Ok(CountResponse {
            total: self.total,
            calls: self.calls,
        })
    }

    async fn get(
        &mut self,
        _ctx: &GrainContext,
        _request: GetRequest,
    ) -> Result<CountResponse, GrainError> {
        self.calls += 1;
        Ok(CountResponse {
            total: self.total,
            calls: self.calls,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One process plays the whole cluster here; with Consul each node is its own process.
    let membership = InMemoryMembership::new(Duration::from_secs(3));
    let config = |role: &str| NodeConfig {
        cluster_name: "counter-example".into(),
        member_prefix: role.into(),
        ..NodeConfig::default()
    };
    let kind =
        CounterKind::new(|_id| CounterGrain::default()).idle_timeout(Duration::from_secs(30));
    let host = Node::start(config("host"), vec![kind], Arc::new(membership.clone())).await?;
    let caller = Node::start(config("caller"), vec![], Arc::new(membership)).await?;
    caller
        .cluster()
        .wait_for_kinds(&[CounterKind::NAME], Duration::from_secs(5))
        .await?;

    let apples = CounterClient::new(&caller.cluster(), "apples");
    let pears = CounterClient::new(&caller.cluster(), "pears");
    for amount in [1, 2, 3] {
        let a = apples.add(AddRequest { amount }).await?;
        println!("apples + {amount} = {} ({} calls)", a.total, a.calls);
    }
    let p = pears.add(AddRequest { amount: 10 }).await?;
    println!("pears + 10 = {}", p.total);
    let a = apples.get(GetRequest {}).await?;
    println!("apples total: {}", a.total);

    match apples.add(AddRequest { amount: -5 }).await {
        Err(CallError::Application { code, message }) => {
            println!("apples - 5 refused: {code:?}: {message}")
        }
        other => return Err(format!("a negative amount should be refused, got {other:?}").into()),
    }

    caller.shutdown().await;
    host.shutdown().await;
    Ok(())
}
