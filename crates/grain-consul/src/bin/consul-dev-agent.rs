//! `consul-dev-agent`: runs the Consul-compatible dev agent until Ctrl-C or SIGTERM.
//! The first line on stdout is `listening on http://<address>`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use grain_consul::{DevAgent, DevAgentConfig, Token};

/// A Consul-compatible dev agent (the part of Consul's HTTP API grain clusters use).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "GRAIN_DEV_AGENT_BIND", default_value = "127.0.0.1:8500")]
    bind: SocketAddr,
    /// Allow a non-loopback bind address (the dev agent has no real security).
    #[arg(long)]
    allow_non_loopback: bool,
    /// Require this ACL token on every request (as Consul's X-Consul-Token).
    #[arg(long, env = "GRAIN_DEV_AGENT_TOKEN", hide_env_values = true)]
    token: Option<Token>,
    /// The datacenter name.
    #[arg(long, default_value = "dc1")]
    datacenter: String,
    /// The smallest DeregisterCriticalServiceAfter honoured, in seconds (Consul: 60).
    #[arg(long, default_value_t = 60)]
    min_reap_seconds: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = DevAgentConfig {
        bind: args.bind,
        allow_non_loopback: args.allow_non_loopback,
        token: args.token.filter(|t| !t.expose().is_empty()),
        datacenter: args.datacenter,
        min_deregister_critical_after: Duration::from_secs(args.min_reap_seconds),
        ..DevAgentConfig::default()
    };
    let agent = match DevAgent::start(config).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("consul-dev-agent: {e}");
            return ExitCode::from(
                if matches!(e, grain_consul::DevAgentError::NotLoopback(_)) {
                    64
                } else {
                    1
                },
            );
        }
    };
    println!("listening on {}", agent.http_addr());
    agent.run_until(shutdown_signal()).await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
