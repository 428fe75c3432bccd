//! `consul-dev-agent`: runs the Consul-compatible dev agent until Ctrl-C or SIGTERM.
//! The first line on stdout is `listening on http://<address>`.

use std::process::ExitCode;

use clap::Parser;
use grain_consul::{DevAgent, DevAgentArgs};

/// A Consul-compatible dev agent (the part of Consul's HTTP API grain clusters use).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    agent: DevAgentArgs,
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
    let config = match args.agent.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("consul-dev-agent: {e}");
            return ExitCode::from(64);
        }
    };
    let agent = match DevAgent::start(config).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("consul-dev-agent: {e}");
            return ExitCode::from(
                if matches!(
                    e,
                    grain_consul::DevAgentError::NotLoopback(_)
                        | grain_consul::DevAgentError::Tls(_)
                ) {
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
