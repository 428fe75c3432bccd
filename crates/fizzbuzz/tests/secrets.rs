//! No secret in sight: the cluster runs with a Consul ACL token, a New Relic license
//! key and an OTLP `api-key` set — each used for real (the dev agent refuses requests
//! without the token; the receiver sees the keys as headers) — and none of them shows
//! in any process's command line, any log line (debug level, every process), any
//! exported log record, span or metric, or any error, including the errors of a wrong
//! token and of a backend that refuses the key.

mod common;
mod receiver;

use std::process::Stdio;
use std::time::Duration;

use common::{assert_reference, clean_env, terminate};
use receiver::{Captured, Receiver};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const FIZZBUZZ: &str = env!("CARGO_BIN_EXE_fizzbuzz");
const CLIENT: &str = env!("CARGO_BIN_EXE_client");
const CONSUL_TOKEN: &str = "consul-acl-token-7f3a9c1e5d";
const LICENSE_KEY: &str = "nr-license-key-5b2d8e0f4a6c";
const API_KEY: &str = "otlp-api-key-91c4e7a2d3b8";
const WRONG_TOKEN: &str = "wrong-consul-token-0c6e2a";
const SECRETS: [&str; 4] = [CONSUL_TOKEN, LICENSE_KEY, API_KEY, WRONG_TOKEN];

/// The secrets `text` contains.
fn leaked(text: &[u8]) -> Vec<&'static str> {
    SECRETS
        .into_iter()
        .filter(|s| text.windows(s.len()).any(|w| w == s.as_bytes()))
        .collect()
}

fn command(program: &str) -> Command {
    let mut c = Command::new(program);
    c.kill_on_drop(true).stdin(Stdio::null());
    clean_env(&mut c);
    c.env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_TOKEN_FILE")
        .env("FIZZBUZZ_LOG", "debug");
    c
}

/// The dev agent, requiring [`CONSUL_TOKEN`] (given through its environment), and
/// the address it listens on; its log is collected by the task returned.
async fn agent() -> (Child, String, tokio::task::JoinHandle<Vec<u8>>) {
    let mut c = command(FIZZBUZZ);
    c.args(["agent", "--bind", "127.0.0.1:0"])
        .env("GRAIN_DEV_AGENT_TOKEN", CONSUL_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut agent = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the agent: {e}"));
    let stdout = agent.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut stderr = agent.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
    let first = first
        .unwrap_or_else(|_| panic!("the agent said nothing within 10 s"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    let log = tokio::spawn(async move {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all).await;
        while let Ok(Some(line)) = lines.next_line().await {
            all.extend_from_slice(line.as_bytes());
        }
        all
    });
    (agent, addr, log)
}

/// The parent of process `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces, so read after its last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every process descending from `root`, with its command line.
fn descendants(root: u32) -> Vec<(u32, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut found = Vec::new();
    for pid in pids {
        let mut at = pid;
        for _ in 0..16 {
            match parent_of(at) {
                Some(p) if p == root => {
                    if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
                        found.push((pid, cmdline));
                    }
                    break;
                }
                Some(p) if p > 1 => at = p,
                _ => break,
            }
        }
    }
    found
}

fn assert_clean(what: &str, text: &[u8]) {
    let found = leaked(text);
    assert!(
        found.is_empty(),
        "{what} shows {found:?}:\n{}",
        String::from_utf8_lossy(text)
    );
}

/// Every export arrived with the key meant for its signal, and none holds a secret.
fn check_exports(captured: &[Captured]) {
    for c in captured {
        let want = if c.path == "/v1/traces" {
            API_KEY
        } else {
            LICENSE_KEY
        };
        assert_eq!(
            c.api_key.as_deref(),
            Some(want),
            "the api-key of {}",
            c.path
        );
        assert!(c.error.is_none(), "undecodable export: {:?}", c.error);
        assert!(!c.body.is_empty(), "an empty export to {}", c.path);
        assert_clean(&format!("an export to {}", c.path), &c.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_shows_in_a_command_line_a_log_an_export_or_an_error() {
    let receiver = Receiver::start().await;
    let (agent, consul, agent_log) = agent().await;
    let secrets = |c: &mut Command| {
        c.env("CONSUL_HTTP_ADDR", &consul)
            .env("CONSUL_HTTP_TOKEN", CONSUL_TOKEN)
            .env("NEW_RELIC_LICENSE_KEY", LICENSE_KEY)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.base())
            .env(
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                format!("api-key={API_KEY}"),
            )
            .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    };

    // The cluster, paced to run for about two seconds, its processes' command lines
    // read while they run.
    let mut up = command(FIZZBUZZ);
    up.args([
        "up",
        "--consul-addr",
        &consul,
        "--count",
        "2000",
        "--rate",
        "1000",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    secrets(&mut up);
    let up = up
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start up: {e}"));
    let root = up.id().unwrap_or_else(|| panic!("up has no pid"));
    let output = tokio::spawn(up.wait_with_output());
    let mut seen: Vec<(u32, Vec<u8>)> = Vec::new();
    while !output.is_finished() {
        for (pid, cmdline) in descendants(root) {
            if !seen.iter().any(|(p, _)| *p == pid) {
                seen.push((pid, cmdline));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(120), output).await;
    let out = out
        .unwrap_or_else(|_| panic!("up did not finish"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "up exited {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_reference(&out.stdout, 2000);
    let names: Vec<String> = seen
        .iter()
        .map(|(_, c)| String::from_utf8_lossy(c).replace('\0', " "))
        .collect();
    for role in ["fizz", "buzz", "client"] {
        assert!(
            names.iter().any(|n| n.contains(role)),
            "the {role} node was never seen running: {names:?}"
        );
    }
    for (_, cmdline) in &seen {
        assert_clean("a child's command line", cmdline);
    }
    assert_clean("up's output", &out.stdout);
    assert_clean("the log of up and its nodes", &out.stderr);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DEBUG")
            || String::from_utf8_lossy(&out.stderr).contains("debug"),
        "no debug log to look through"
    );

    let captured = receiver
        .wait_for(Duration::from_secs(10), |c| {
            ["/v1/metrics", "/v1/traces", "/v1/logs"]
                .iter()
                .all(|p| c.iter().any(|x| x.path == *p))
        })
        .await;
    for signal in ["/v1/metrics", "/v1/traces", "/v1/logs"] {
        assert!(
            captured.iter().any(|c| c.path == signal),
            "nothing exported to {signal}"
        );
    }
    check_exports(&captured);

    // A wrong token: the agent refuses the node, whose error says so without the token.
    let mut wrong = command(CLIENT);
    wrong
        .args(["--count", "1", "--wait-timeout", "2s"])
        .env("CONSUL_HTTP_ADDR", &consul)
        .env("CONSUL_HTTP_TOKEN", WRONG_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::time::timeout(Duration::from_secs(60), wrong.output()).await;
    let out = out
        .unwrap_or_else(|_| panic!("the client did not finish"))
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("403") || stderr.contains("ACL"), "{stderr}");
    assert_clean("the error of a wrong token", &out.stderr);

    // A backend that refuses the keys: the failures are logged, without them.
    receiver.respond_with(Some((403, None)));
    let before = receiver.captured().len();
    let mut refused = command(FIZZBUZZ);
    refused
        .args([
            "up",
            "--consul-addr",
            &consul,
            "--count",
            "300",
            "--rate",
            "500",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    secrets(&mut refused);
    let out = tokio::time::timeout(Duration::from_secs(120), refused.output()).await;
    let out = out
        .unwrap_or_else(|_| panic!("up did not finish"))
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("403"),
        "the refusals were not logged: {stderr}"
    );
    assert_clean("the log of refused exports", &out.stderr);
    let captured = receiver.captured();
    assert!(captured.len() > before, "nothing was exported");
    check_exports(&captured);

    terminate(agent, "the agent").await;
    let log = tokio::time::timeout(Duration::from_secs(10), agent_log).await;
    let log = log
        .unwrap_or_else(|_| panic!("the agent's log did not end"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!log.is_empty(), "the agent logged nothing at debug level");
    assert_clean("the dev agent's log", &log);
}
