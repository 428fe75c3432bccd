//! What the end-to-end tests share: the reference output and how to check a run.
#![allow(dead_code, unreachable_pub, missing_docs)]

/// The canonical line for `n`.
pub fn reference(n: u64) -> String {
    fizzbuzz::reference_line(n as i64)
}

/// Asserts `stdout` is exactly the reference FizzBuzz for 1..=count, line by line.
pub fn assert_reference(stdout: &[u8], count: u64) {
    let text = String::from_utf8_lossy(stdout);
    let mut lines = 0;
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(line, reference(n), "line {n} is wrong");
        lines += 1;
    }
    assert_eq!(lines, count, "want {count} lines");
}

/// Asserts the process exited 0, showing its stderr otherwise.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "exit {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes what a developer's shell may have set that would change how a node exports
/// or logs (`OTEL_*`, `NEW_RELIC_*`, `FIZZBUZZ_*`, the Consul address): a test sets
/// what it means to.
pub fn clean_env(command: &mut tokio::process::Command) {
    for (k, _) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if ["OTEL_", "NEW_RELIC_", "FIZZBUZZ_"]
            .iter()
            .any(|p| name.starts_with(p))
            || name == "CONSUL_HTTP_ADDR"
        {
            command.env_remove(&k);
        }
    }
}

/// Starts the dev agent from `fizzbuzz` (a prepared command for the `fizzbuzz`
/// binary) on a free loopback port; returns it and the address it says it listens on
/// (its first line, `listening on <address>`, read within 10 s).
pub async fn start_agent(fizzbuzz: tokio::process::Command) -> (tokio::process::Child, String) {
    start_agent_with(fizzbuzz, &[]).await
}

/// [`start_agent`] with more options for `fizzbuzz agent`.
pub async fn start_agent_with(
    mut fizzbuzz: tokio::process::Command,
    options: &[&str],
) -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut agent = fizzbuzz
        .args(["agent", "--bind", "127.0.0.1:0"])
        .args(options)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the agent: {e}"));
    let stdout = agent.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("the agent said nothing within 10 s"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    (agent, addr)
}

/// Sends SIGTERM to `child` (if it still runs).
pub fn sigterm(child: &tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// SIGTERM, then waits (bounded) for `child` to exit, and checks it exited 0.
pub async fn terminate(mut child: tokio::process::Child, what: &str) {
    sigterm(&child);
    let status = tokio::time::timeout(std::time::Duration::from_secs(15), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} did not stop within 15 s of SIGTERM"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        status.success(),
        "{what} exited with {status} after SIGTERM"
    );
}
