//! The `fizz` and `buzz` nodes: host a kind until told to stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use grain::Node;

use crate::config::{CommonArgs, ENV_PROBE, NodeSetup, Role, parse_duration};
use crate::grains::{BuzzGrain, FizzGrain, ProbeGrain};
use crate::proto::{BuzzServiceKind, FizzServiceKind, ProbeServiceKind};
use crate::{AppError, start_error};

/// Options of the `fizz` and `buzz` nodes.
#[derive(clap::Args, Clone, Debug)]
pub struct HostArgs {
    /// Options every node takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Passivate a grain after this long without calls.
    #[arg(long, env = "FIZZBUZZ_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Diagnostic: also host the ProbeService grain, which answers which member and
    /// activation serve an identity (and counts the calls each activation answered).
    #[arg(long, env = ENV_PROBE)]
    pub probe: bool,
}

/// Starts a node hosting the kind of `role` (`Fizz` or `Buzz`). Returns once it listens;
/// it joins the cluster in the background (and keeps trying while Consul is away).
pub async fn start_host(role: Role, args: &HostArgs, setup: &NodeSetup) -> Result<Node, AppError> {
    if args.idle_timeout.is_zero() {
        return Err(AppError::Usage(
            "--idle-timeout must be greater than zero".into(),
        ));
    }
    let kind = match role {
        Role::Fizz => FizzServiceKind::new(|_| FizzGrain),
        Role::Buzz => BuzzServiceKind::new(|_| BuzzGrain),
        Role::Client => return Err(AppError::Usage("the client node hosts no kind".into())),
    }
    .idle_timeout(args.idle_timeout);
    let mut kinds = vec![kind];
    if args.probe {
        kinds
            .push(ProbeServiceKind::new(|_| ProbeGrain::default()).idle_timeout(args.idle_timeout));
    }
    let config = args.common.node_config(role, setup)?;
    let membership = args.common.membership(role)?;
    let consul = membership.address().to_string();
    let health = match args.common.health_bind {
        Some(bind) => Some(crate::health::bind(bind).await?),
        None => None,
    };
    let node = Node::start_on(setup.take_listener()?, config, kinds, Arc::new(membership))
        .await
        .map_err(start_error)?;
    if let Some(listener) = health {
        crate::health::serve(listener, node.readiness()).await;
    }
    tracing::info!(
        member = %node.member().id,
        address = %node.member().address,
        cluster = %args.common.cluster,
        %consul,
        probe = args.probe,
        "{} node serving",
        role.name()
    );
    Ok(node)
}

/// Runs a hosting node until `stop` resolves, then leaves the cluster gracefully.
pub async fn run_host(
    role: Role,
    args: &HostArgs,
    setup: &NodeSetup,
    stop: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let node = start_host(role, args, setup).await?;
    stop.await;
    tracing::info!("{} node stopping", role.name());
    node.shutdown().await;
    Ok(())
}
