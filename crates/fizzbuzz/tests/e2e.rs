//! End to end: the built binaries, as separate processes, on loopback.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{assert_reference, assert_success, reference, terminate};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

const FIZZBUZZ: &str = env!("CARGO_BIN_EXE_fizzbuzz");
const FIZZ: &str = env!("CARGO_BIN_EXE_fizz");
const BUZZ: &str = env!("CARGO_BIN_EXE_buzz");
const CLIENT: &str = env!("CARGO_BIN_EXE_client");

fn command(program: &str) -> Command {
    let mut c = Command::new(program);
    c.kill_on_drop(true)
        .stdin(Stdio::null())
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("CONSUL_HTTP_TOKEN")
        .env("FIZZBUZZ_LOG", "warn");
    c
}

fn node(program: &str, consul: &str) -> Child {
    command(program)
        .env("CONSUL_HTTP_ADDR", consul)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

fn client(consul: &str, args: &[&str]) -> Command {
    let mut c = command(CLIENT);
    c.env("CONSUL_HTTP_ADDR", consul).args(args);
    c
}

/// Starts `fizzbuzz agent`, `fizz` and `buzz`; returns the agent's address and the
/// processes, for [`stop_all`].
async fn start_agent_fizz_buzz() -> (String, Vec<(Child, &'static str)>) {
    let (agent, consul) = common::start_agent(command(FIZZBUZZ)).await;
    let fizz = node(FIZZ, &consul);
    let buzz = node(BUZZ, &consul);
    (
        consul,
        vec![(fizz, "fizz"), (buzz, "buzz"), (agent, "the agent")],
    )
}

/// Stops each process with SIGTERM and checks it exits 0.
async fn stop_all(children: Vec<(Child, &str)>) {
    for (child, what) in children {
        terminate(child, what).await;
    }
}

async fn output(mut c: Command, limit: Duration) -> std::process::Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap_or_else(|e| panic!("cannot start: {e}"));
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fizzbuzz_up_count_1000_prints_the_reference_sequence_and_exits_0() {
    let mut c = command(FIZZBUZZ);
    c.args(["up", "--count", "1000"]);
    let out = output(c, Duration::from_secs(120)).await;
    assert_success(&out);
    assert_reference(&out.stdout, 1000);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1000 of 1000 numbers answered"), "{stderr}");
    assert!(
        stderr.contains("SayFizz") && stderr.contains("p99"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fizzbuzz_up_count_100000_is_verified_line_by_line() {
    let mut c = command(FIZZBUZZ);
    c.args(["up", "--count", "100000", "--concurrency", "64"]);
    let out = output(c, Duration::from_secs(300)).await;
    assert_success(&out);
    assert_reference(&out.stdout, 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_goes_away_stops_the_run_quietly() {
    // `fizzbuzz up --count 1000000 | head -3`: the client stops writing, says why, and
    // everything exits 0 long before a million numbers.
    let mut c = command(FIZZBUZZ);
    c.args(["up", "--count", "1000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("cannot start: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut lines = BufReader::new(stdout).lines();
    let mut head = Vec::new();
    while head.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no output within 60 s"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("output ended after {head:?}"));
        head.push(line);
    }
    assert_eq!(head, ["1", "2", "Fizz"]);
    drop(lines);
    let mut log = String::new();
    let read = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut log);
    let (read, status) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(read, child.wait())
    })
    .await
    .unwrap_or_else(|_| panic!("still running 60 s after its reader went away"));
    read.unwrap_or_else(|e| panic!("{e}"));
    let status = status.unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "exit {status}: {log}");
    assert!(log.contains("stopped: stdout was closed"), "{log}");
    assert!(!log.contains("1000000 of 1000000"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_one_object_per_line() {
    let mut c = command(FIZZBUZZ);
    // One runtime worker per node (passed on to the children by `up`).
    c.args(["up", "--count", "15", "--format", "json", "--workers", "1"]);
    let out = output(c, Duration::from_secs(60)).await;
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 15);
    assert_eq!(lines[0], r#"{"number":1,"message":""}"#);
    assert_eq!(lines[2], r#"{"number":3,"message":"Fizz"}"#);
    assert_eq!(lines[14], r#"{"number":15,"message":"FizzBuzz"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_processes_and_the_dev_agent_print_the_reference_sequence() {
    let (consul, nodes) = start_agent_fizz_buzz().await;
    let out = output(
        client(&consul, &["--count", "1000"]),
        Duration::from_secs(120),
    )
    .await;
    assert_success(&out);
    assert_reference(&out.stdout, 1000);
    stop_all(nodes).await;
}

/// The value after `prefix` on the first stderr line that starts with it, up to
/// `suffix` (or a space, without one).
fn summary_field<'a>(stderr: &'a str, prefix: &str, suffix: &str) -> &'a str {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in: {stderr}"));
    let end = if suffix.is_empty() {
        line.find(' ').unwrap_or(line.len())
    } else {
        line.strip_suffix(suffix)
            .map(str::len)
            .unwrap_or_else(|| panic!("{prefix}{line:?} does not end with {suffix:?}"))
    };
    &line[..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_run_s_summary_shows_no_retries_and_a_stall_shorter_than_the_run() {
    let (consul, nodes) = start_agent_fizz_buzz().await;
    let started = Instant::now();
    let out = output(
        client(&consul, &["--count", "1000"]),
        Duration::from_secs(120),
    )
    .await;
    let wall = started.elapsed();
    assert_success(&out);
    assert_reference(&out.stdout, 1000);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let retried = summary_field(&stderr, "retried: ", "");
    assert_eq!(retried, "0", "{stderr}");
    let stall: f64 = summary_field(&stderr, "longest stall: ", " s")
        .parse()
        .unwrap_or_else(|e| panic!("longest stall is not a number ({e}): {stderr}"));
    assert!(
        stall >= 0.0 && stall < wall.as_secs_f64(),
        "stall {stall} s, wall {wall:?}: {stderr}"
    );
    // Within the client's own wall time of the calls (2 decimals in the summary).
    let calls: f64 = summary_field(
        &stderr,
        "fizzbuzz client: 1000 of 1000 numbers answered in ",
        "",
    )
    .parse()
    .unwrap_or_else(|e| panic!("no wall time ({e}): {stderr}"));
    assert!(stall <= calls + 0.005, "stall {stall} s, calls {calls} s");
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_started_before_fizz_and_buzz_waits_then_succeeds() {
    let (agent, consul) = common::start_agent(command(FIZZBUZZ)).await;
    let mut c = client(&consul, &["--count", "100", "--wait-timeout", "30s"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let early = c.spawn().unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fizz = node(FIZZ, &consul);
    let buzz = node(BUZZ, &consul);
    let out = tokio::time::timeout(Duration::from_secs(60), early.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the early client did not finish"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_success(&out);
    assert_reference(&out.stdout, 100);
    stop_all(vec![(fizz, "fizz"), (buzz, "buzz"), (agent, "the agent")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_no_buzz_anywhere_fails_after_its_wait_timeout_naming_the_kind() {
    let (agent, consul) = common::start_agent(command(FIZZBUZZ)).await;
    let fizz = node(FIZZ, &consul);
    let started = Instant::now();
    let out = output(
        client(&consul, &["--count", "10", "--wait-timeout", "2s"]),
        Duration::from_secs(30),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(1),
        "want exit 1, got {}",
        out.status
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: no member hosting BuzzService joined within 2s"),
        "{last}"
    );
    assert!(
        !last.contains("FizzService"),
        "FizzService is there: {last}"
    );
    assert!(out.stdout.is_empty(), "printed numbers without buzz");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "took {took:?}"
    );
    stop_all(vec![(fizz, "fizz"), (agent, "the agent")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_reader_stalls_neither_calls_nor_the_heartbeat_even_with_one_worker() {
    // `client --forever | less`, with the pager paused longer than the call timeout and
    // the membership TTL: the client's one worker must go on serving its links and
    // heartbeat while its output waits, so no call fails.
    let (consul, nodes) = start_agent_fizz_buzz().await;
    let mut paused = client(
        &consul,
        &["--forever", "--workers", "1", "--call-timeout", "1s"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap_or_else(|e| panic!("{e}"));
    let stdout = paused.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut stderr = paused.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let log = tokio::spawn(async move {
        let mut log = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut log).await;
        log
    });
    // Nobody reads for 6 s (the pipe fills within about a second), well past the 3 s
    // TTL: the client's heartbeat must have gone on, so Consul still lists it passing.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let consul_view = grain_consul::ConsulMembership::new(
        "fizzbuzz-cluster",
        grain_consul::ConsulConfig {
            address: consul.clone(),
            ..grain_consul::ConsulConfig::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let passing =
        grain::membership::MembershipProvider::members(&consul_view, None, Duration::from_secs(1))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let roles: Vec<&str> = passing
        .members
        .iter()
        .map(|m| m.id.as_str().split('-').next().unwrap_or(""))
        .collect();
    assert!(
        roles.contains(&"client"),
        "the paused client's TTL check expired: passing members are {roles:?}"
    );
    // …then the reader catches up for a second, and the run is stopped.
    let mut lines = BufReader::new(stdout).lines();
    let mut read = 0u64;
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        match tokio::time::timeout_at(until, lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                read += 1;
                assert_eq!(line, reference((read - 1) % 100 + 1), "line {read}");
            }
            Ok(_) => break,
            Err(_) => {}
        }
    }
    assert!(read > 1000, "only {read} lines after the reader came back");
    if let Some(pid) = paused.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGINT,
        );
    }
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let status = tokio::time::timeout(Duration::from_secs(15), paused.wait())
        .await
        .unwrap_or_else(|_| panic!("the client did not stop within 15 s of SIGINT"))
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = drain.await;
    let log = log.await.unwrap_or_default();
    assert!(status.success(), "exit {status}: {log}");
    assert!(log.contains(" 0 failed"), "{log}");
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_client_leaves_the_other_nodes_serving_a_new_client() {
    let (consul, nodes) = start_agent_fizz_buzz().await;
    let mut doomed = client(&consul, &["--count", "100", "--forever", "--rate", "500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = doomed.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    for n in 1..=50u64 {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the first client stalled at line {n}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        assert_eq!(line, reference(n));
    }
    doomed
        .kill()
        .await
        .unwrap_or_else(|e| panic!("cannot kill the client: {e}"));
    let out = output(
        client(&consul, &["--count", "200"]),
        Duration::from_secs(60),
    )
    .await;
    assert_success(&out);
    assert_reference(&out.stdout, 200);
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_option_is_a_usage_error_that_names_it() {
    let table: &[(&str, &[&str], &str)] = &[
        (CLIENT, &["--count", "many"], "--count"),
        (CLIENT, &["--count", "0"], "--count"),
        (CLIENT, &["--wait-timeout", "soon"], "--wait-timeout"),
        (CLIENT, &["--format", "xml"], "--format"),
        (FIZZ, &["--bind", "nowhere"], "--bind"),
        (FIZZ, &["--bind", "0.0.0.0:0"], "advertise"),
        (BUZZ, &["--consul-addr", "ftp://consul:8501"], "https://"),
        (
            BUZZ,
            &["--consul-ssl-verify", "maybe"],
            "CONSUL_HTTP_SSL_VERIFY",
        ),
        (
            BUZZ,
            &[
                "--consul-addr",
                "https://127.0.0.1:1",
                "--consul-ca-file",
                "/nonexistent/ca.pem",
            ],
            "CONSUL_CACERT",
        ),
        (
            FIZZBUZZ,
            &["agent", "--token-file", "/nonexistent/token"],
            "--token-file",
        ),
        (FIZZBUZZ, &["up", "--concurrency", "0"], "--concurrency"),
        (FIZZ, &["--workers", "0"], "--workers"),
        (FIZZBUZZ, &["up", "--workers", "many"], "--workers"),
        (FIZZBUZZ, &["up", "--metrics-interval", "50ms"], "interval"),
        (FIZZBUZZ, &["up", "--new-relic-region", "mars"], "region"),
        (FIZZBUZZ, &["agent", "--bind", "10.1.2.3:8500"], "--bind"),
    ];
    for (program, args, named) in table {
        let out = output(
            {
                let mut c = command(program);
                c.args(*args);
                c
            },
            Duration::from_secs(30),
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{program} {args:?}: {}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains(named),
            "{program} {args:?} should name {named}: {stderr}"
        );
    }
}

/// Processes whose parent is `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        // The command name may hold spaces; fields after the closing parenthesis are fixed.
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Running (not exited, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_of_fizzbuzz_up_stop_when_the_launcher_is_killed() {
    let mut up = command(FIZZBUZZ)
        .args(["up", "--count", "100000", "--rate", "200"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = up.id().unwrap_or_else(|| panic!("no pid"));
    let mut nodes = Vec::new();
    for _ in 0..100 {
        nodes = children_of(pid);
        if nodes.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        nodes.len(),
        3,
        "fizz, buzz and client should be running: {nodes:?}"
    );
    up.kill().await.unwrap_or_else(|e| panic!("{e}")); // SIGKILL: no cleanup in the launcher
    let killed = Instant::now();
    while nodes.iter().any(|p| alive(*p)) && killed.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left: Vec<_> = nodes.iter().filter(|p| alive(**p)).collect();
    assert!(
        left.is_empty(),
        "still running {:?} after the launcher was killed: {left:?}",
        killed.elapsed()
    );
}

/// The command line of `pid`, argument by argument, from /proc.
fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The environment of `pid`, `KEY=value` by `KEY=value`, from /proc.
fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_configures_its_nodes_through_their_environment_only() {
    // Every setting, secrets included, goes to the children in their environment: their
    // command lines (visible to every user of the machine) carry at most the role.
    const SECRET: &str = "not-on-any-command-line-0123456789";
    let header = format!("api-key={SECRET}");
    let mut up = command(FIZZBUZZ)
        .args([
            "up",
            "--count",
            "100000",
            "--rate",
            "200",
            "--concurrency",
            "4",
        ])
        .args(["--format", "json", "--workers", "1", "--call-timeout", "3s"])
        .args(["--otlp-endpoint", "http://127.0.0.1:9/v1/metrics"])
        .args(["--otlp-header", &header, "--metrics-interval", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = up.id().unwrap_or_else(|| panic!("no pid"));
    let launcher = cmdline(pid);
    // Found once all three have exec'd (a forked child shows its parent's command line).
    let mut nodes = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        nodes = children_of(pid)
            .into_iter()
            .map(|p| (p, cmdline(p)))
            .filter(|(_, c)| !c.is_empty() && *c != launcher)
            .collect();
        if nodes.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(nodes.len(), 3, "fizz, buzz and client: {nodes:?}");
    for (pid, args) in &nodes {
        let options = &args[1..];
        assert!(
            options.is_empty()
                || (options.len() == 1
                    && ["fizz", "buzz", "client"].contains(&options[0].as_str())),
            "a node was given options on its command line: {args:?}"
        );
        assert!(
            !args.iter().any(|a| a.contains(SECRET)),
            "the export header is on a command line: {args:?}"
        );
        let env = environ(*pid);
        assert!(
            env.iter()
                .any(|v| v.starts_with("FIZZBUZZ_") && v.contains(SECRET)),
            "the export header did not reach node {pid} through its environment"
        );
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::time::timeout(Duration::from_secs(30), up.wait()).await;
}

/// `fizzbuzz certs` into a fresh directory; returns it (kept while it lives).
async fn certs(hosts: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut c = command(FIZZBUZZ);
    c.arg("certs").arg("--dir").arg(dir.path());
    for h in hosts {
        c.args(["--host", h]);
    }
    let out = output(c, Duration::from_secs(30)).await;
    assert_success(&out);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fizzbuzz_up_over_mutual_tls_prints_the_reference_sequence() {
    let dir = certs(&["127.0.0.1"]).await;
    let file = |name: &str| dir.path().join(name).display().to_string();
    let mut c = command(FIZZBUZZ);
    c.args(["up", "--count", "1000", "--log-level", "info"])
        .args([
            "--tls-cert",
            &file("member.pem"),
            "--tls-key",
            &file("member-key.pem"),
        ])
        .args(["--tls-ca", &file("ca.pem")]);
    let out = output(c, Duration::from_secs(120)).await;
    assert_success(&out);
    assert_reference(&out.stdout, 1000);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("refused a connection"), "{stderr}");
    let started: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("node started"))
        .collect();
    assert_eq!(started.len(), 3, "{stderr}");
    assert!(
        started
            .iter()
            .all(|l| l.contains("tls=\"mutual\"") || l.contains("tls=mutual")),
        "{started:?}"
    );
}

/// As the Kubernetes manifests run it: one certificate naming `members.fizzbuzz`, not
/// the members' addresses, checked through `--tls-server-name` (FIZZBUZZ_TLS_SERVER_NAME
/// in the children).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fizzbuzz_up_over_mutual_tls_with_a_server_name_instead_of_addresses() {
    let dir = certs(&["members.fizzbuzz"]).await;
    let file = |name: &str| dir.path().join(name).display().to_string();
    let tls = |c: &mut Command| {
        c.args(["--tls-cert", &file("member.pem")])
            .args(["--tls-key", &file("member-key.pem")])
            .args(["--tls-ca", &file("ca.pem")]);
    };
    let mut c = command(FIZZBUZZ);
    c.args(["up", "--count", "300"]);
    tls(&mut c);
    c.args(["--tls-server-name", "members.fizzbuzz"]);
    let out = output(c, Duration::from_secs(120)).await;
    assert_success(&out);
    assert_reference(&out.stdout, 300);
    // Without the name, the certificate does not name 127.0.0.1: exit 64 naming it.
    let mut c = command(FIZZBUZZ);
    c.args(["up", "--count", "1"]);
    tls(&mut c);
    let out = output(c, Duration::from_secs(30)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("does not name") && stderr.contains("127.0.0.1"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_settings_exit_64_before_starting_naming_them() {
    let dir = certs(&["127.0.0.1"]).await;
    let other = certs(&["127.0.0.1"]).await;
    let file = |d: &tempfile::TempDir, name: &str| d.path().join(name).display().to_string();
    let (cert, key) = (file(&dir, "member.pem"), file(&dir, "member-key.pem"));
    let other_key = file(&other, "member-key.pem");
    let missing = file(&dir, "missing.pem");
    let table: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            FIZZ,
            vec!["--tls-cert", &cert, "--tls-key", &other_key],
            "does not match",
        ),
        (
            FIZZ,
            vec!["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &key],
            "holds no certificate",
        ),
        (
            FIZZ,
            vec!["--tls-cert", &missing, "--tls-key", &key],
            "--tls-cert",
        ),
        (
            BUZZ,
            vec![
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--advertise",
                "buzz.example:7000",
            ],
            "does not name",
        ),
        (
            FIZZBUZZ,
            vec![
                "up",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-ca",
                &missing,
            ],
            "--tls-ca",
        ),
        (CLIENT, vec!["--tls-cert", &cert], "--tls-key"),
        (
            FIZZBUZZ,
            vec![
                "certs",
                "--dir",
                dir.path().to_str().unwrap_or("."),
                "--host",
                "localhost",
            ],
            "--force",
        ),
        (
            FIZZBUZZ,
            vec!["certs", "--dir", &missing, "--host", "not a host"],
            "--host",
        ),
    ];
    for (program, args, named) in &table {
        let mut c = command(program);
        c.args(args);
        let out = output(c, Duration::from_secs(30)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{program} {args:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{program} {args:?} should name {named}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_through_an_https_agent_verified_with_consul_cacert_and_a_token_file() {
    let dir = certs(&["127.0.0.1"]).await;
    let file = |name: &str| dir.path().join(name).display().to_string();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "e2e-agent-token\n").unwrap_or_else(|e| panic!("{e}"));
    let mut c = command(FIZZBUZZ);
    c.env("GRAIN_DEV_AGENT_TOKEN_FILE", &token_file);
    let tls = [
        "--tls-cert",
        &file("member.pem"),
        "--tls-key",
        &file("member-key.pem"),
    ];
    let (agent, consul) = common::start_agent_with(c, &tls).await;
    assert!(consul.starts_with("https://127.0.0.1:"), "{consul}");
    let tls_node = |program: &str| {
        let mut c = command(program);
        c.env("CONSUL_HTTP_ADDR", &consul)
            .env("CONSUL_CACERT", file("ca.pem"))
            .env("CONSUL_HTTP_TOKEN_FILE", &token_file);
        c
    };
    let spawn = |mut c: Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let fizz = spawn(tls_node(FIZZ));
    let buzz = spawn(tls_node(BUZZ));
    let mut c = tls_node(CLIENT);
    c.args(["--count", "200"]);
    let out = output(c, Duration::from_secs(60)).await;
    assert_success(&out);
    assert_reference(&out.stdout, 200);

    // Without the CA, the agent's certificate is not trusted: a clear error, exit 1.
    let mut c = tls_node(CLIENT);
    c.env_remove("CONSUL_CACERT")
        .args(["--count", "1", "--wait-timeout", "2s"]);
    let out = output(c, Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    // Without the token, the agent refuses the node.
    let mut c = tls_node(CLIENT);
    c.env_remove("CONSUL_HTTP_TOKEN_FILE")
        .args(["--count", "1", "--wait-timeout", "2s"]);
    let out = output(c, Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("403") || stderr.contains("ACL"), "{stderr}");
    // A boolean Consul variable that is not one: exit 64 naming it.
    let mut c = tls_node(CLIENT);
    c.env("CONSUL_HTTP_SSL_VERIFY", "maybe")
        .args(["--count", "1"]);
    let out = output(c, Duration::from_secs(30)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("CONSUL_HTTP_SSL_VERIFY"), "{stderr}");
    stop_all(vec![(fizz, "fizz"), (buzz, "buzz"), (agent, "the agent")]).await;
}
