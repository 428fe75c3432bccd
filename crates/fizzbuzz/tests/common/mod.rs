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

/// The address the dev agent `agent` (started with its stdout piped) says it listens
/// on: its first line, `listening on <address>`, read within 10 s.
pub async fn agent_address(agent: &mut tokio::process::Child) -> String {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let stdout = agent.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("the agent said nothing within 10 s"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string()
}
