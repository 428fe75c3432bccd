//! The figures of one fizz node holding many activations: the memory an idle
//! activation costs, how fast activations are made, and how long the node takes to
//! leave gracefully with all of them. The bench runs a dev agent, a fizz node and a buzz
//! node of its own (this executable: `fizzbuzz agent`, `fizzbuzz fizz`, `fizzbuzz
//! buzz`), and `fizzbuzz client` runs against them.
//!
//! The client calls number `n` on the identity `grain{(n - 1) % K + 1}` (`--identities
//! K`), each number on both kinds: with `K` = `--count` = `N`, the numbers call
//! `grain1` … `grainN`, so a client run over `N` identities after one over `M < N`
//! activates exactly `N - M` new grains on the fizz node (and as many on the buzz node).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::{UpReport, listening_addr, run_reporting, this_program};
use crate::AppError;
use crate::client::{ENV_COUNT, ENV_IDENTITIES, ENV_WAIT_TIMEOUT};
use crate::config::{ENV_BIND, ENV_LOG, Role};
use crate::process::ENV_PARENT_PID;

/// How many activations each step makes.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub(super) struct NodeSizes {
    /// Identities of the warm-up run (before the first memory reading).
    pub(super) warm: u64,
    /// New activations between the two memory readings (also the activation rate's).
    pub(super) measured: u64,
    /// Activations the fizz node holds when it is told to stop.
    pub(super) held: u64,
}

/// What one run of the node figures measured.
#[derive(Clone, Copy, Debug)]
pub(super) struct NodeFigures {
    /// The fizz node's resident memory growth over the new activations, bytes each.
    pub(super) bytes_per_activation: f64,
    /// Numbers per second of the client run whose numbers each activate a new grain
    /// on each node (but for the warm-up's few): activations per second on each node.
    pub(super) activations_per_s: f64,
    /// Seconds from SIGTERM to the exit of the fizz node holding `held` activations.
    pub(super) shutdown_s: f64,
}

/// How long any one client run may take, and a node's start or stop.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the fizz node may take to exit after SIGTERM before the figure fails.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// A dev agent and the fizz and buzz nodes, killed when dropped.
struct Nodes {
    /// The agent's HTTP address, as `CONSUL_HTTP_ADDR` takes it.
    consul: String,
    /// The fizz node.
    fizz: Child,
    /// Kept to be killed on drop.
    _buzz: Child,
    /// Kept to be killed on drop (after the nodes: fields drop in order).
    _agent: Child,
}

/// `fizzbuzz agent` on a free loopback port.
async fn start_agent() -> Result<(Child, SocketAddr), AppError> {
    let mut child = this_program()?
        .args(["agent", "--bind", "127.0.0.1:0"])
        .env(ENV_PARENT_PID, std::process::id().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| AppError::Failed(format!("cannot start the dev agent: {e}")))?;
    let addr = listening_addr(&mut child, "the dev agent").await?;
    Ok((child, addr))
}

/// A command of this executable talking to the agent at `consul`, logging warnings
/// only, and stopping by itself should the bench die without killing it.
fn member(role: Role, consul: &str) -> Result<Command, AppError> {
    let mut command = this_program()?;
    command
        .arg(role.name())
        .env(grain_consul::config::ENV_HTTP_ADDR, consul)
        .env(ENV_BIND, "127.0.0.1:0")
        .env(ENV_LOG, "warn")
        .env(ENV_PARENT_PID, std::process::id().to_string());
    Ok(command)
}

impl Nodes {
    async fn start() -> Result<Self, AppError> {
        let (agent, addr) = start_agent().await?;
        let consul = format!("http://{addr}");
        let host = |role: Role| -> Result<Child, AppError> {
            member(role, &consul)?
                // Longer than the whole run: nothing is passivated while measured.
                .args(["--idle-timeout", "1h"])
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| {
                    AppError::Failed(format!("cannot start the {} node: {e}", role.name()))
                })
        };
        let fizz = host(Role::Fizz)?;
        let buzz = host(Role::Buzz)?;
        Ok(Nodes {
            consul,
            fizz,
            _buzz: buzz,
            _agent: agent,
        })
    }

    /// `fizzbuzz client` over `identities` identities, one number each, with the
    /// client's other flags at their defaults.
    async fn client(&self, identities: u64) -> Result<UpReport, AppError> {
        let mut command = member(Role::Client, &self.consul)?;
        command
            .env(ENV_COUNT, identities.to_string())
            .env(ENV_IDENTITIES, identities.to_string())
            .env(ENV_WAIT_TIMEOUT, "30s");
        let what = format!("fizzbuzz client --count {identities} --identities {identities}");
        run_reporting(command, &what, CLIENT_TIMEOUT).await
    }

    fn fizz_pid(&self) -> Result<u32, AppError> {
        self.fizz
            .id()
            .ok_or_else(|| AppError::Failed("the fizz node has already exited".into()))
    }

    /// Sends SIGTERM to the fizz node and waits for it to exit: the seconds it took.
    async fn stop_fizz(&mut self) -> Result<f64, AppError> {
        let pid = self.fizz_pid()?;
        let pid = i32::try_from(pid)
            .map_err(|_| AppError::Failed(format!("the fizz node's pid {pid} is out of range")))?;
        let start = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .map_err(|e| AppError::Failed(format!("cannot send SIGTERM to the fizz node: {e}")))?;
        let status = tokio::time::timeout(SHUTDOWN_TIMEOUT, self.fizz.wait())
            .await
            .map_err(|_| {
                AppError::Failed(format!(
                    "the fizz node did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM"
                ))
            })?
            .map_err(|e| AppError::Failed(format!("cannot wait for the fizz node: {e}")))?;
        let took = start.elapsed().as_secs_f64();
        if !status.success() {
            return Err(AppError::Failed(format!(
                "the fizz node exited with {status} after SIGTERM (in {took:.2} s)"
            )));
        }
        Ok(took)
    }
}

/// The resident memory of process `pid`, bytes (`VmRSS` in `/proc/<pid>/status`).
fn rss_bytes(pid: u32) -> Result<u64, AppError> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|e| AppError::Failed(format!("cannot read {path}: {e}")))?;
    parse_vm_rss(&status).ok_or_else(|| AppError::Failed(format!("{path}: no VmRSS line")))
}

/// `VmRSS:   1234 kB` in a `/proc/<pid>/status` text, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    kb.checked_mul(1024)
}

/// One run on fresh nodes: warm up over `warm` identities, read the fizz node's memory,
/// activate `measured` new grains (timed), read it again, top up to `held` activations,
/// then stop the fizz node (timed).
pub(super) async fn measure(sizes: NodeSizes) -> Result<NodeFigures, AppError> {
    let mut nodes = Nodes::start().await?;
    // The warm-up client also waits for both nodes to have joined.
    nodes.client(sizes.warm).await?;
    let pid = nodes.fizz_pid()?;
    let before = rss_bytes(pid)?;
    let total = sizes.warm + sizes.measured;
    let run = nodes.client(total).await?;
    let after = rss_bytes(pid)?;
    let bytes_per_activation = (after as f64 - before as f64) / sizes.measured.max(1) as f64;
    eprintln!(
        "bench: fizz node VmRSS {:.1} MiB -> {:.1} MiB over {} new activations ({} to {} held)",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        sizes.measured,
        sizes.warm,
        total
    );
    if sizes.held > total {
        nodes.client(sizes.held).await?;
    }
    let held_rss = rss_bytes(pid)?;
    let shutdown_s = nodes.stop_fizz().await?;
    eprintln!(
        "bench: fizz node holding {} activations ({:.1} MiB) stopped in {shutdown_s:.2} s",
        sizes.held.max(total),
        held_rss as f64 / 1048576.0
    );
    Ok(NodeFigures {
        bytes_per_activation,
        activations_per_s: run.rate,
        shutdown_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tfizzbuzz\nVmPeak:\t  200 kB\nVmRSS:\t   1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
    }
}
