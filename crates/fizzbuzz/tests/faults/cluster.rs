//! The processes of one fault scenario: the dev agent, fizz and buzz nodes (with
//! `--probe`) and the client, each logging to its own file in the scenario's directory,
//! on loopback with ephemeral ports. Every wait is for an event (a line in a log, a
//! file's size, a process's exit, Consul listing a member) and bounded; every child is
//! killed when its handle is dropped, so a failing or timed-out scenario leaves nothing
//! running.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use grain::membership::MembershipProvider;
use grain_consul::{ConsulConfig, ConsulMembership};
use nix::sys::signal::Signal;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const FIZZBUZZ: &str = env!("CARGO_BIN_EXE_fizzbuzz");
const FIZZ: &str = env!("CARGO_BIN_EXE_fizz");
const BUZZ: &str = env!("CARGO_BIN_EXE_buzz");
const CLIENT: &str = env!("CARGO_BIN_EXE_client");

/// The cluster name every process of a scenario uses.
pub(crate) const CLUSTER: &str = "fizzbuzz-cluster";

/// How often a wait looks again (a file, Consul's list).
const POLL: Duration = Duration::from_millis(20);

/// A child process, its log and, for a node, its member id.
pub(crate) struct Proc {
    /// What it is, for messages: `fizz-1`, `the agent`, …
    pub(crate) name: String,
    /// The process (killed on drop).
    pub(crate) child: Child,
    /// Its stderr.
    pub(crate) log: PathBuf,
    /// Its member id, for a node (from its "node serving" line).
    pub(crate) member: String,
}

impl Proc {
    /// Its process id (a still-running child has one).
    pub(crate) fn pid(&self) -> nix::unistd::Pid {
        let pid = self
            .child
            .id()
            .unwrap_or_else(|| panic!("{} has exited", self.name));
        nix::unistd::Pid::from_raw(pid as i32)
    }

    /// Sends `signal`.
    pub(crate) fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(self.pid(), signal)
            .unwrap_or_else(|e| panic!("cannot send {signal} to {}: {e}", self.name));
    }

    /// Waits for it to exit, at most `limit`.
    pub(crate) async fn wait(&mut self, limit: Duration) -> ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {limit:?}", self.name))
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// True while it runs.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its stderr so far.
    pub(crate) fn log_text(&self) -> String {
        read(&self.log)
    }
}

/// A file's text (empty if it cannot be read yet).
pub(crate) fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// A file's size (0 if it does not exist yet).
pub(crate) fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// A fresh directory for one scenario's files, under the system's temporary directory.
pub(crate) fn scenario_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fizzbuzz-faults-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn file(path: &Path) -> std::fs::File {
    std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn command(program: &str) -> Command {
    command_in(program, None)
}

/// `program`, run inside network namespace `netns` when given (`ip netns exec` execs
/// it, so the child is the program itself).
fn command_in(program: &str, netns: Option<&str>) -> Command {
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    };
    c.kill_on_drop(true)
        .stdin(Stdio::null())
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .env_remove("NEW_RELIC_LICENSE_KEY")
        .env("FIZZBUZZ_CLUSTER", CLUSTER)
        // Joins and leaves are logged at info: scenario (d) counts them.
        .env("FIZZBUZZ_LOG", "info");
    c
}

/// Waits until `found` says yes about the text of `path`, at most `limit`; `what` names
/// the event for the message. `alive` is checked too: a process that exits first fails.
async fn wait_for_text<T>(
    path: &Path,
    limit: Duration,
    what: &str,
    mut alive: impl FnMut() -> bool,
    found: impl Fn(&str) -> Option<T>,
) -> T {
    let until = Instant::now() + limit;
    loop {
        let text = read(path);
        if let Some(t) = found(&text) {
            return t;
        }
        assert!(
            alive(),
            "{what}: the process exited first; its log:\n{text}"
        );
        assert!(
            Instant::now() < until,
            "{what}: not within {limit:?}; log:\n{text}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Starts `fizzbuzz agent --bind <bind>` (port 0: a free one) with `args`; returns it
/// and its `http://` address, once it printed `listening on …`.
pub(crate) async fn start_agent(dir: &Path, bind: &str, args: &[&str], n: usize) -> (Proc, String) {
    let out = dir.join(format!("agent-{n}.out"));
    let log = dir.join(format!("agent-{n}.err"));
    let mut child = command(FIZZBUZZ)
        .args(["agent", "--bind", bind])
        .args(args)
        .stdout(file(&out))
        .stderr(file(&log))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the agent: {e}"));
    let addr = wait_for_text(
        &out,
        Duration::from_secs(10),
        "the agent's `listening on` line",
        || matches!(child.try_wait(), Ok(None)),
        |text| {
            text.lines()
                .find_map(|l| l.strip_prefix("listening on "))
                .map(str::to_string)
        },
    )
    .await;
    let proc = Proc {
        name: format!("agent-{n}"),
        child,
        log,
        member: String::new(),
    };
    (proc, addr)
}

/// The member id in a node's "<role> node serving member=<id> …" log line.
fn serving_member(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.contains(" node serving"))?;
    let field = line.split_whitespace().find(|w| w.starts_with("member="))?;
    Some(field.trim_start_matches("member=").to_string())
}

/// Starts a `fizz` or `buzz` node with `--probe` against `consul`; returns once it
/// serves (it registers in the background: see [`wait_listed`]).
pub(crate) async fn start_node(dir: &Path, role: &str, name: &str, consul: &str) -> Proc {
    start_node_with(dir, role, name, consul, &["--probe"]).await
}

/// Starts a `fizz` or `buzz` node with `args` against `consul`; returns once it serves.
pub(crate) async fn start_node_with(
    dir: &Path,
    role: &str,
    name: &str,
    consul: &str,
    args: &[&str],
) -> Proc {
    start_node_in(dir, role, name, consul, args, None).await
}

/// Starts a `fizz` or `buzz` node with `args` against `consul`, inside network
/// namespace `netns` when given; returns once it serves.
pub(crate) async fn start_node_in(
    dir: &Path,
    role: &str,
    name: &str,
    consul: &str,
    args: &[&str],
    netns: Option<&str>,
) -> Proc {
    let program = match role {
        "fizz" => FIZZ,
        "buzz" => BUZZ,
        other => panic!("no node role {other}"),
    };
    let log = dir.join(format!("{name}.err"));
    let mut child = command_in(program, netns)
        .args(args)
        .env("CONSUL_HTTP_ADDR", consul)
        .stdout(Stdio::null())
        .stderr(file(&log))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let member = wait_for_text(
        &log,
        Duration::from_secs(20),
        &format!("{name}'s `node serving` line"),
        || matches!(child.try_wait(), Ok(None)),
        serving_member,
    )
    .await;
    Proc {
        name: name.to_string(),
        child,
        log,
        member,
    }
}

/// Starts the client with `args` against `consul`, stdout to `<dir>/client.out`.
pub(crate) fn start_client(dir: &Path, consul: &str, args: &[&str]) -> (Proc, PathBuf) {
    let out = dir.join("client.out");
    let log = dir.join("client.err");
    let child = command(CLIENT)
        .args(args)
        .env("CONSUL_HTTP_ADDR", consul)
        .stdout(file(&out))
        .stderr(file(&log))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the client: {e}"));
    let proc = Proc {
        name: "the client".into(),
        child,
        log,
        member: String::new(),
    };
    (proc, out)
}

/// A view of Consul's passing members, as any member sees it.
pub(crate) fn consul_view(consul: &str) -> ConsulMembership {
    ConsulMembership::new(
        CLUSTER,
        ConsulConfig {
            address: consul.to_string(),
            ..ConsulConfig::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until Consul lists every member of `ids` as passing, at most `limit`.
pub(crate) async fn wait_listed(consul: &str, ids: &[&str], limit: Duration) {
    let view = consul_view(consul);
    let until = Instant::now() + limit;
    loop {
        let listed: Vec<String> = match view.members(None, Duration::from_secs(1)).await {
            Ok(s) => s.members.iter().map(|m| m.id.to_string()).collect(),
            Err(_) => Vec::new(),
        };
        if ids.iter().all(|id| listed.iter().any(|l| l == id)) {
            return;
        }
        assert!(
            Instant::now() < until,
            "Consul does not list {ids:?} as passing within {limit:?}: it lists {listed:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The size in bytes of the first `lines` lines of the canonical text output.
pub(crate) fn reference_bytes(lines: u64) -> u64 {
    (1..=lines)
        .map(|n| crate::common::reference(n).len() as u64 + 1)
        .sum()
}

/// Waits until the client's output holds `lines` lines, at most `limit`; `Err` says
/// why not (the client exited first, or the time ran out).
pub(crate) async fn wait_output(
    client: &mut Proc,
    out: &Path,
    lines: u64,
    limit: Duration,
) -> Result<(), String> {
    let want = reference_bytes(lines);
    let until = Instant::now() + limit;
    while size(out) < want {
        if !client.running() {
            return Err(format!("the client exited before printing {lines} lines"));
        }
        if Instant::now() >= until {
            return Err(format!(
                "the client printed fewer than {lines} lines within {limit:?}"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Watches the client's output grow: the longest time it did not grow, from its first
/// byte on (the client writes at least every 100 ms while answers come in, so this is a
/// stall as a reader sees it, to about 0.1 s). Stops when dropped.
pub(crate) struct GrowthWatch {
    longest_us: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl GrowthWatch {
    /// Starts watching `out`.
    pub(crate) fn start(out: PathBuf) -> Self {
        let longest_us = Arc::new(AtomicU64::new(0));
        let longest = longest_us.clone();
        let task = tokio::spawn(async move {
            let mut last = 0;
            let mut since = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let now = size(&out);
                if now != last {
                    if last > 0 {
                        let quiet = since.elapsed().as_micros() as u64;
                        longest.fetch_max(quiet, Ordering::Relaxed);
                    }
                    last = now;
                    since = Instant::now();
                }
            }
        });
        Self { longest_us, task }
    }

    /// The longest time without growth so far.
    pub(crate) fn longest(&self) -> Duration {
        Duration::from_micros(self.longest_us.load(Ordering::Relaxed))
    }
}

impl Drop for GrowthWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lines of `text` from byte `from` on that contain `needle` and none of `except`.
pub(crate) fn count_after(text: &str, from: usize, needle: &str, except: &[&str]) -> usize {
    text.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains(needle) && !except.iter().any(|e| l.contains(e)))
        .count()
}
