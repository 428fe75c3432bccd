//! `fizzbuzz up` (a dev agent and the three nodes as child processes) and
//! `fizzbuzz agent` (the dev agent alone). `up` configures its children through their
//! environment only: their command line carries at most the role.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use grain_consul::{DevAgent, DevAgentConfig};
use tokio::process::{Child, Command};

use crate::AppError;
use crate::client::ClientArgs;
use crate::config::{
    ENV_CLUSTER, ENV_LOG, ENV_LOG_FORMAT, ENV_WORKERS, ExportArgs, Role, TlsArgs, parse_log_format,
    parse_workers,
};
use crate::process::ENV_PARENT_PID;
use grain_telemetry::LogFormat;

/// Options of `fizzbuzz up`.
#[derive(clap::Args, Clone, Debug)]
pub struct UpArgs {
    /// Use this Consul agent instead of starting a dev agent on a free loopback port.
    #[arg(long)]
    pub consul_addr: Option<String>,
    /// Cluster name.
    #[arg(long, env = ENV_CLUSTER, default_value = "fizzbuzz-cluster")]
    pub cluster: String,
    /// Log filter of the three nodes (their logs go to stderr).
    #[arg(long, env = ENV_LOG, default_value = "warn")]
    pub log_level: String,
    /// Log line format of `up` and the three nodes: human (the default) or json.
    #[arg(long, env = ENV_LOG_FORMAT, default_value = "human", value_parser = parse_log_format)]
    pub log_format: LogFormat,
    /// Async runtime worker threads of each node. Default: the machine's cores shared
    /// among the three nodes, at least one each (1 on a machine of up to 5 cores), the
    /// fastest setting `fizzbuzz bench` found when the nodes share a machine.
    #[arg(long, env = ENV_WORKERS, value_parser = parse_workers)]
    pub workers: Option<usize>,
    /// TLS between the three nodes (their certificates must name 127.0.0.1).
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Metrics export of every node (each is named after its role: fizz, buzz, client).
    #[command(flatten)]
    pub export: ExportArgs,
    /// What the client does.
    #[command(flatten)]
    pub client: ClientArgs,
}

impl UpArgs {
    /// The worker threads each node gets: `--workers`, or the cores shared among the
    /// three nodes.
    pub fn workers_per_node(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / 3).max(1)
        })
    }
}

/// Options of `fizzbuzz agent`: the `consul-dev-agent` binary's.
pub type AgentArgs = grain_consul::DevAgentArgs;

/// Runs the dev agent until `stop` resolves.
pub async fn agent(args: &AgentArgs, stop: impl Future<Output = ()>) -> Result<(), AppError> {
    let config = args.config().map_err(AppError::Usage)?;
    let agent = DevAgent::start(config).await.map_err(|e| match e {
        grain_consul::DevAgentError::NotLoopback(_) => AppError::Usage(format!("--bind: {e}")),
        grain_consul::DevAgentError::Tls(_) => {
            AppError::Usage(format!("--tls-cert/--tls-key: {e}"))
        }
        other => AppError::Failed(other.to_string()),
    })?;
    println!("listening on {}", agent.http_addr());
    agent.run_until(stop).await;
    Ok(())
}

/// How to start the node of `role`: the sibling binary (`fizz` next to `fizzbuzz`), or,
/// when it was not built (`cargo run --bin fizzbuzz` builds only this one), this same
/// executable with the role as subcommand — the same code either way.
fn node_command(role: Role) -> Result<Command, AppError> {
    let me = std::env::current_exe()
        .map_err(|e| AppError::Failed(format!("cannot find this executable: {e}")))?;
    let sibling: PathBuf =
        me.with_file_name(format!("{}{}", role.name(), std::env::consts::EXE_SUFFIX));
    let mut command = if sibling.is_file() {
        Command::new(sibling)
    } else {
        tracing::debug!(
            "no {} binary next to {}; running `{} {}`",
            role.name(),
            me.display(),
            me.display(),
            role.name()
        );
        let mut c = Command::new(&me);
        c.arg(role.name());
        c
    };
    // The child watches its parent: when this process goes away, however it dies, the
    // child shuts down gracefully instead of running on orphaned.
    command
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .env(ENV_PARENT_PID, std::process::id().to_string());
    Ok(command)
}

/// Every setting `up` gives the node of `role`, as the environment variables its options
/// read; `None`: unset (so the child does not inherit a stale value).
fn child_env(role: Role, args: &UpArgs, consul_addr: &str) -> Vec<(&'static str, Option<String>)> {
    let mut env = vec![
        (
            grain_consul::config::ENV_HTTP_ADDR,
            Some(consul_addr.to_string()),
        ),
        (ENV_CLUSTER, Some(args.cluster.clone())),
        (ENV_LOG, Some(args.log_level.clone())),
        (ENV_LOG_FORMAT, Some(args.log_format.to_string())),
        (ENV_WORKERS, Some(args.workers_per_node().to_string())),
    ];
    if args.consul_addr.is_none() {
        // Its own dev agent speaks plain HTTP.
        env.push((grain_consul::tls::ENV_HTTP_SSL, None));
    }
    env.extend(args.tls.to_env());
    env.extend(args.export.to_env());
    if role == Role::Client {
        env.extend(args.client.to_env());
    }
    env
}

/// How `up` starts the node of `role`: configured through its environment only, since
/// a command line is visible to every user of the machine (and an export header may
/// carry a licence key). The rest of this process's environment is inherited
/// (`CONSUL_HTTP_TOKEN`, `OTEL_*`, `NEW_RELIC_LICENSE_KEY`, …).
fn child_command(role: Role, args: &UpArgs, consul_addr: &str) -> Result<Command, AppError> {
    let mut command = node_command(role)?;
    for (name, value) in child_env(role, args, consul_addr) {
        match value {
            Some(v) => command.env(name, v),
            None => command.env_remove(name),
        };
    }
    Ok(command)
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

async fn stop_child(name: &str, child: &mut Child, grace: Duration) {
    terminate(child);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) if !status.success() => tracing::debug!("{name} exited with {status}"),
        Ok(_) => {}
        Err(_) => {
            tracing::warn!("{name} did not stop within {grace:?}; killing it");
            let _ = child.kill().await;
        }
    }
}

fn code_of(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(crate::exit::FAILURE),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(crate::exit::FAILURE),
        _ => crate::exit::FAILURE,
    }
}

/// `fizzbuzz up`: starts a dev agent (unless `--consul-addr`), the `fizz` and `buzz`
/// nodes and the `client`, shows the client's output, stops everything at the end or
/// when `stop` resolves, and returns the client's exit status.
pub async fn up(args: &UpArgs, stop: impl Future<Output = ()>) -> Result<u8, AppError> {
    args.client.validate()?;
    // Check what the children would refuse, so a bad option is a usage error here.
    tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| AppError::Usage(format!("--log-level {:?}: {e}", args.log_level)))?;
    grain::NodeConfig {
        cluster_name: args.cluster.clone(),
        ..grain::NodeConfig::default()
    }
    .validate()
    .map_err(|e| AppError::Usage(format!("--cluster: {e}")))?;
    args.export.config(None)?;
    // The children listen on loopback and advertise 127.0.0.1.
    args.tls.load("127.0.0.1:0")?;
    if let Some(a) = &args.consul_addr {
        grain_consul::ConsulConfig {
            address: a.clone(),
            ..grain_consul::ConsulConfig::default()
        }
        .validate()
        .map_err(|e| AppError::Usage(format!("--consul-addr: {e}")))?;
    }
    let (agent, consul_addr) = match &args.consul_addr {
        Some(a) => (None, a.clone()),
        None => {
            let agent = DevAgent::start(DevAgentConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..DevAgentConfig::default()
            })
            .await
            .map_err(|e| AppError::Failed(format!("cannot start the dev agent: {e}")))?;
            let addr = agent.http_addr();
            (Some(agent), addr)
        }
    };
    match args.log_format {
        LogFormat::Human => eprintln!(
            "fizzbuzz up: cluster {} on Consul {consul_addr}",
            args.cluster
        ),
        LogFormat::Json => {
            tracing::info!(cluster = %args.cluster, consul = %consul_addr, "fizzbuzz up")
        }
    }
    let spawn = |role: Role, stdout: Stdio| -> Result<Child, AppError> {
        child_command(role, args, &consul_addr)?
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| AppError::Failed(format!("cannot start the {} node: {e}", role.name())))
    };
    let mut fizz = spawn(Role::Fizz, Stdio::null())?;
    let mut buzz = spawn(Role::Buzz, Stdio::null())?;
    let mut client = spawn(Role::Client, Stdio::inherit())?;
    tokio::pin!(stop);
    let grace = Duration::from_secs(10);
    let result = tokio::select! {
        status = client.wait() => match status {
            Ok(s) => Ok(code_of(s)),
            Err(e) => Err(AppError::Failed(format!("cannot wait for the client: {e}"))),
        },
        status = fizz.wait() => Err(AppError::Failed(format!(
            "the fizz node exited early ({}); see its log above",
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        ))),
        status = buzz.wait() => Err(AppError::Failed(format!(
            "the buzz node exited early ({}); see its log above",
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        ))),
        _ = &mut stop => {
            // Stop the client first and keep its verdict (`--forever` ends with 0).
            terminate(&client);
            match tokio::time::timeout(grace, client.wait()).await {
                Ok(Ok(s)) if s.code().is_some() => Ok(code_of(s)),
                _ => Err(AppError::Interrupted("stopping the nodes".into())),
            }
        }
    };
    stop_child("client", &mut client, grace).await;
    stop_child("fizz", &mut fizz, grace).await;
    stop_child("buzz", &mut buzz, grace).await;
    if let Some(a) = agent {
        a.stop().await;
    }
    result
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use clap::Parser;

    use super::*;
    use crate::client::ClientCommand;
    use crate::nodes::HostArgs;

    #[derive(Parser)]
    struct Up {
        #[command(flatten)]
        args: UpArgs,
    }

    #[derive(Parser)]
    struct Host {
        #[command(flatten)]
        args: HostArgs,
    }

    #[derive(Parser)]
    struct Client {
        #[command(flatten)]
        command: ClientCommand,
    }

    const SECRET: &str = "licence-key-0123456789abcdef";

    fn up_args() -> UpArgs {
        let header = format!("api-key={SECRET}");
        let argv = [
            "up",
            "--cluster",
            "c1",
            "--log-level",
            "debug",
            "--log-format",
            "json",
            "--workers",
            "3",
            "--otlp-endpoint",
            "http://127.0.0.1:9/v1/metrics",
            "--otlp-header",
            &header,
            "--otlp-header",
            "x-team=red,x-env=test",
            "--metrics-interval",
            "1500ms",
            "--new-relic-region",
            "eu",
            "--count",
            "7",
            "--concurrency",
            "3",
            "--identities",
            "4",
            "--format",
            "json",
            "--wait-timeout",
            "2s",
            "--call-timeout",
            "250ms",
            "--forever",
            "--rate",
            "12.5",
        ];
        Up::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{e}"))
            .args
    }

    /// Parses `P` as the child would, from the variables `up` sets: each must be read
    /// by one of the child's options.
    fn as_child<P: Parser>(env: &[(&str, Option<String>)]) -> P {
        let command = P::command();
        let mut argv = vec!["child".to_string()];
        for (name, value) in env {
            let Some(value) = value else { continue };
            let arg = command
                .get_arguments()
                .find(|a| a.get_env() == Some(OsStr::new(name)))
                .unwrap_or_else(|| panic!("no option of the child reads {name}"));
            let long = arg
                .get_long()
                .unwrap_or_else(|| panic!("{name}: no long flag"));
            if arg.get_action().takes_values() {
                argv.push(format!("--{long}={value}"));
            } else if value == "true" {
                argv.push(format!("--{long}"));
            }
        }
        P::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_child_is_configured_through_its_environment_only() {
        let args = up_args();
        for role in [Role::Fizz, Role::Buzz, Role::Client] {
            let command = child_command(role, &args, "http://127.0.0.1:8500")
                .unwrap_or_else(|e| panic!("{e}"));
            let command = command.as_std();
            let argv: Vec<&OsStr> = command.get_args().collect();
            // The role only when this executable runs itself as `fizzbuzz fizz|…`.
            assert!(
                argv.is_empty() || argv == [OsStr::new(role.name())],
                "{}: options on the command line: {argv:?}",
                role.name()
            );
            let env: Vec<(String, Option<String>)> = command
                .get_envs()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.map(|v| v.to_string_lossy().into_owned()),
                    )
                })
                .collect();
            let get = |name: &str| {
                env.iter()
                    .find(|(k, _)| k == name)
                    .and_then(|(_, v)| v.clone())
            };
            assert_eq!(
                get("CONSUL_HTTP_ADDR").as_deref(),
                Some("http://127.0.0.1:8500")
            );
            assert_eq!(get(ENV_CLUSTER).as_deref(), Some("c1"));
            assert!(
                get(crate::config::ENV_OTLP_HEADERS).is_some_and(|h| h.contains(SECRET)),
                "{}: the export header is not in the environment",
                role.name()
            );
            assert_eq!(
                get(crate::client::ENV_COUNT).is_some(),
                role == Role::Client,
                "{}: the client's options go to the client only",
                role.name()
            );
        }
    }

    #[test]
    fn the_children_read_back_every_setting_up_gives_them() {
        let args = up_args();
        let consul = "http://127.0.0.1:8500";
        let host: Host = as_child(&child_env(Role::Fizz, &args, consul));
        let client: Client = as_child(&child_env(Role::Client, &args, consul));
        for common in [&host.args.common, &client.command.common] {
            assert_eq!(common.consul_addr, consul);
            assert_eq!(common.cluster, args.cluster);
            assert_eq!(common.log_level, args.log_level);
            assert_eq!(common.log_format, args.log_format);
            assert_eq!(common.workers, Some(args.workers_per_node()));
            assert_eq!(common.telemetry.export.to_env(), args.export.to_env());
        }
        assert_eq!(client.command.run.to_env(), args.client.to_env());
        assert_eq!(
            format!("{:?}", client.command.run),
            format!("{:?}", args.client)
        );
        // Unset options are unset in the child, not inherited.
        let plain = Up::try_parse_from(["up"])
            .unwrap_or_else(|e| panic!("{e}"))
            .args;
        let env = child_env(Role::Client, &plain, consul);
        for name in [crate::client::ENV_RATE, crate::config::ENV_OTLP_HEADERS] {
            assert!(env.contains(&(name, None)), "{name} is not unset: {env:?}");
        }
    }
}
