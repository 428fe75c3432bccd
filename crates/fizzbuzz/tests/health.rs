//! The standard gRPC health service of a running node (`--health-bind`), asked with a
//! standard `grpc.health.v1` client: readiness follows the node's place in the
//! cluster, liveness only the process — a Consul outage leaves both serving, a drain
//! makes readiness `NOT_SERVING` before the node exits.

mod common;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const FIZZBUZZ: &str = env!("CARGO_BIN_EXE_fizzbuzz");
const FIZZ: &str = env!("CARGO_BIN_EXE_fizz");

fn command(program: &str) -> Command {
    let mut c = Command::new(program);
    c.kill_on_drop(true).stdin(Stdio::null());
    common::clean_env(&mut c);
    c.env_remove("CONSUL_HTTP_TOKEN");
    c
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A fizz node's command, joining the agent at `consul`, with its health service on a
/// free port (returned).
fn fizz_with_health(consul: &str) -> (Command, std::net::SocketAddr) {
    let health = free_port();
    let mut fizz = command(FIZZ);
    fizz.args([
        "--consul-addr",
        consul,
        "--health-bind",
        &health.to_string(),
    ]);
    (fizz, health)
}

type Client = HealthClient<tonic::transport::Channel>;

async fn connect(addr: std::net::SocketAddr) -> Client {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap_or_else(|e| panic!("{e}"));
        match endpoint.connect().await {
            Ok(channel) => return HealthClient::new(channel),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the health service at {addr} never answered: {e}"),
        }
    }
}

async fn status(client: &mut Client, service: &str) -> Result<ServingStatus, tonic::Code> {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    match client.check(request).await {
        Ok(r) => Ok(r.into_inner().status()),
        Err(s) => Err(s.code()),
    }
}

/// Waits (bounded) until `service` reports `want`.
async fn wait_for(client: &mut Client, service: &str, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = status(client, service).await;
    while last != Ok(want) {
        assert!(
            Instant::now() < deadline,
            "{service:?} stayed {last:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = status(client, service).await;
    }
}

/// Reads `node`'s stderr until a line contains `text` (bounded); the lines go on
/// being drained in the background so the node never blocks on a full pipe.
async fn wait_for_log(node: &mut Child, text: &str) {
    let stderr = node.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut lines = BufReader::new(stderr).lines();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(text) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "the node never logged {text:?}");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_cluster_and_liveness_only_the_process() {
    let (mut agent, consul) = common::start_agent(command(FIZZBUZZ)).await;
    let (mut fizz, health) = fizz_with_health(&consul);
    let mut fizz = fizz
        .env("FIZZBUZZ_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start fizz: {e}"));
    let mut client = connect(health).await;

    // Ready once Consul lists it as passing; alive all along.
    assert_eq!(
        status(&mut client, "liveness").await,
        Ok(ServingStatus::Serving)
    );
    wait_for(&mut client, "", ServingStatus::Serving).await;
    assert_eq!(
        status(&mut client, "no.such.Service").await,
        Err(tonic::Code::NotFound),
        "an unknown service is NOT_FOUND, as the health protocol says"
    );

    // Consul goes away: the node keeps its last topology, so it stays ready, and it
    // is certainly alive.
    let _ = agent.kill().await;
    wait_for_log(&mut fizz, "membership keep-alive failed").await;
    assert_eq!(
        status(&mut client, "liveness").await,
        Ok(ServingStatus::Serving)
    );
    assert_eq!(status(&mut client, "").await, Ok(ServingStatus::Serving));

    // Draining: readiness says NOT_SERVING before the process is gone.
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut watch = client
        .watch(request)
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"))
        .into_inner();
    let first = watch
        .message()
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"));
    assert_eq!(first.map(|m| m.status()), Some(ServingStatus::Serving));
    common::sigterm(&fizz);
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .unwrap_or_else(|_| panic!("no readiness change within 10 s of SIGTERM"));
    let next = next.unwrap_or_else(|e| panic!("the watch ended before saying NOT_SERVING: {e}"));
    assert_eq!(next.map(|m| m.status()), Some(ServingStatus::NotServing));
    let exited = tokio::time::timeout(Duration::from_secs(20), fizz.wait()).await;
    assert!(
        exited.is_ok_and(|s| s.is_ok_and(|s| s.success())),
        "fizz did not exit cleanly after SIGTERM"
    );
}

/// Runs `fizzbuzz health` with `args`: its exit code and what it printed.
async fn probe(args: &[&str]) -> (Option<i32>, String, String) {
    let out = command(FIZZBUZZ)
        .arg("health")
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run fizzbuzz health: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fizzbuzz_health_is_a_probe_that_exits_0_only_when_serving() {
    // Nothing listens: exit 1, naming the address.
    let nobody = free_port().to_string();
    let (code, _, err) = probe(&["--addr", &nobody, "--timeout", "1s"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&nobody), "{err}");

    // Something accepts connections but never answers (a frozen node): the probe still
    // gives up within its timeout.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let mute_addr = mute
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    let started = std::time::Instant::now();
    let asked = tokio::time::timeout(
        Duration::from_secs(20),
        probe(&["--addr", &mute_addr, "--timeout", "1s"]),
    )
    .await
    .unwrap_or_else(|_| panic!("the probe hung on a peer that never answers"));
    assert_eq!(asked.0, Some(1), "{}", asked.2);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(mute);

    let (_agent, consul) = common::start_agent(command(FIZZBUZZ)).await;
    let (mut fizz, health) = fizz_with_health(&consul);
    let mut fizz = fizz
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start fizz: {e}"));
    let addr = health.to_string();
    let mut client = connect(health).await;
    wait_for(&mut client, "", ServingStatus::Serving).await;

    assert_eq!(probe(&["--addr", &addr]).await.0, Some(0));
    let (code, out, _) = probe(&["--addr", &addr, "--service", "liveness"]).await;
    assert_eq!((code, out.as_str()), (Some(0), "SERVING"));
    let (code, _, err) = probe(&["--addr", &addr, "--service", "no.such.Service"]).await;
    assert_eq!(code, Some(1), "an unknown service is not serving: {err}");

    // A watch sees SERVING, then NOT_SERVING when the node drains, and ends with it.
    let mut watch = command(FIZZBUZZ)
        .args(["health", "--watch", "--addr", &addr])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run fizzbuzz health --watch: {e}"));
    let stdout = watch.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
    assert!(
        matches!(&first, Ok(Ok(Some(l))) if l == "SERVING"),
        "{first:?}"
    );
    common::sigterm(&fizz);
    let rest = tokio::time::timeout(Duration::from_secs(20), async {
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line);
        }
        seen
    })
    .await
    .unwrap_or_else(|_| panic!("the watch did not end after the node stopped"));
    assert!(rest.iter().any(|l| l == "NOT_SERVING"), "{rest:?}");
    let code = tokio::time::timeout(Duration::from_secs(10), watch.wait()).await;
    assert!(
        matches!(code, Ok(Ok(s)) if s.code() == Some(1)),
        "the watch's last status was not SERVING: {code:?}"
    );
    let _ = fizz.wait().await;
}
