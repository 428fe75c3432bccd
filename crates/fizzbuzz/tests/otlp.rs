//! Metrics leave every node over OTLP/HTTP: checked at an in-process receiver that
//! decodes them with the official generated types, through a real third-party collector
//! (rotel), and with the endpoint failing in every way New Relic can. Traces and logs go
//! to the same endpoint (`/v1/traces`, `/v1/logs`): these tests tolerate them, and the
//! rotel run checks its traces arrive whole too (tests/traces.rs checks them in depth).

mod common;
mod receiver;

use std::process::Stdio;
use std::time::Duration;

use common::{assert_reference, assert_success, clean_env};
use receiver::tree::{check_numbers, whole_number_traces};
use receiver::{Captured, Point, Receiver, points, spans};
use tokio::process::Command;

const FIZZBUZZ: &str = env!("CARGO_BIN_EXE_fizzbuzz");
const KEY: &str = "test-license-key-0123456789abcdef";
const SAY_FIZZ: &str = "fizzbuzz.v1.FizzService/SayFizz";
const SAY_BUZZ: &str = "fizzbuzz.v1.BuzzService/SayBuzz";
const REQUEST: &str = "protocluster_virtualactor_requestasync_duration";
const LIVE: &str = "protocluster_virtualactors";
/// The paths an OTLP/HTTP exporter posts to.
const SIGNALS: [&str; 3] = ["/v1/metrics", "/v1/traces", "/v1/logs"];

fn metrics_requests(captured: &[Captured]) -> usize {
    captured.iter().filter(|c| c.path == "/v1/metrics").count()
}

async fn up(count: u32, env: &[(&str, &str)]) -> std::process::Output {
    up_with(count, &[], env).await
}

async fn up_with(count: u32, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(FIZZBUZZ);
    c.args(["up", "--count", &count.to_string()])
        .args(args)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clean_env(&mut c);
    c.env("FIZZBUZZ_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start fizzbuzz up: {e}"));
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("fizzbuzz up did not finish within 120 s"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Calls counted by the request-duration histogram on the client, for `method`.
fn client_calls(points: &[Point], method: &str, delta: bool) -> f64 {
    let of_method = points.iter().filter(|p| {
        p.metric == REQUEST
            && p.resource.get("service.name").map(String::as_str) == Some("client")
            && p.attributes.get("method").map(String::as_str) == Some(method)
    });
    if delta {
        of_method.map(|p| p.value).sum()
    } else {
        // Cumulative: each export repeats the totals of each series; take the last of
        // each series and add the series up.
        let mut last: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
        for p in of_method {
            let mut key: Vec<_> = p
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            key.sort();
            last.insert(key.join(","), p.value);
        }
        last.values().sum()
    }
}

/// The values the live-activation counter of `kind` took on the node `service`.
fn live_values(points: &[Point], service: &str, kind: &str) -> Vec<f64> {
    points
        .iter()
        .filter(|p| {
            p.metric == LIVE
                && p.resource.get("service.name").map(String::as_str) == Some(service)
                && p.attributes.get("kind").map(String::as_str) == Some(kind)
        })
        .map(|p| p.value)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_relic_run_arrives_as_new_relic_wants_it() {
    let receiver = Receiver::start().await;
    let base = receiver.base();
    // Paced to last about half a second, exported every 100 ms: the live activations
    // are seen while they live (shutdown passivates them).
    let out = up_with(
        1000,
        &["--rate", "2000"],
        &[
            ("NEW_RELIC_LICENSE_KEY", KEY),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &base),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            // Each node logs a line at info when it starts: log records to export.
            ("FIZZBUZZ_LOG", "info"),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {}: {stderr}", out.status);
    assert_reference(&out.stdout, 1000);
    for line in stderr.lines() {
        assert!(
            !line.contains(KEY),
            "the license key leaked into the log: {line}"
        );
    }

    let captured = receiver.captured();
    assert!(
        metrics_requests(&captured) >= 3,
        "only {} metrics exports arrived",
        metrics_requests(&captured)
    );
    for signal in ["/v1/traces", "/v1/logs"] {
        assert!(
            captured.iter().any(|c| c.path == signal),
            "no export to {signal}: the preset covers every signal"
        );
    }
    // What New Relic asks of every export, whatever its signal.
    for c in &captured {
        assert!(SIGNALS.contains(&c.path.as_str()), "export to {}", c.path);
        assert_eq!(c.content_type, "application/x-protobuf");
        assert_eq!(c.content_encoding, "gzip");
        assert_eq!(c.api_key.as_deref(), Some(KEY));
        assert!(c.error.is_none(), "undecodable export: {:?}", c.error);
        assert!(
            c.wire_bytes < 1_000_000 && c.decoded_bytes < 1_000_000,
            "{} bytes",
            c.decoded_bytes
        );
    }
    let points = points(&captured);
    let mut services: Vec<String> = points
        .iter()
        .filter_map(|p| p.resource.get("service.name").cloned())
        .collect();
    services.sort();
    services.dedup();
    assert_eq!(services, vec!["buzz", "client", "fizz"]);
    for p in &points {
        let r = &p.resource;
        let name = r.get("service.name").cloned().unwrap_or_default();
        assert!(
            r.get("service.instance.id")
                .is_some_and(|id| id.starts_with(&format!("{name}-"))),
            "{r:?}"
        );
        assert_eq!(
            r.get("service.version").map(String::as_str),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert!(r.get("host.name").is_some_and(|h| !h.is_empty()), "{r:?}");
        assert_eq!(
            r.get("grain.cluster.name").map(String::as_str),
            Some("fizzbuzz-cluster")
        );
        // The member's address is on the Resource, once, as host:port with a port.
        assert!(
            r.get("grain.member.address")
                .and_then(|a| a.rsplit_once(':'))
                .is_some_and(|(_, port)| port.parse::<u16>().is_ok_and(|p| p > 0)),
            "{r:?}"
        );
        if p.metric.starts_with("proto") || p.metric.starts_with("grain_") {
            assert!(
                !p.attributes.contains_key("member") && !p.attributes.contains_key("address"),
                "the member is on a data point, not only on the Resource: {p:?}"
            );
            assert!(
                !p.attributes.values().any(|v| v == "grain1"),
                "a grain identity in {p:?}"
            );
        }
        let monotonic = p.kind == "histogram" || (p.kind == "sum" && p.metric.ends_with("_count"));
        if monotonic {
            assert_eq!(p.temporality, 1, "{} is not delta", p.metric);
        }
    }
    assert_eq!(client_calls(&points, SAY_FIZZ, true), 1000.0);
    assert_eq!(client_calls(&points, SAY_BUZZ, true), 1000.0);
    for (service, kind) in [("fizz", "FizzService"), ("buzz", "BuzzService")] {
        let values = live_values(&points, service, kind);
        assert!(
            values.contains(&1.0),
            "{service} never showed one {kind} activation: {values:?}"
        );
        assert!(
            values.iter().all(|v| *v <= 1.0),
            "{service} showed more than one: {values:?}"
        );
    }
    for name in [
        "process.cpu.time",
        "process.memory.usage",
        "protocluster_members_count",
    ] {
        assert!(points.iter().any(|p| p.metric == name), "{name} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_failures_never_hurt_the_cluster_and_are_explained() {
    // A port with nothing listening: connections are refused.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"));
    /// What the endpoint answers (`None`: nothing listens), and what the log must say.
    type Case = (Option<(u16, Option<&'static str>)>, &'static str);
    let table: &[Case] = &[
        (Some((401, None)), "401: the backend wants credentials"),
        (Some((403, None)), "403: the license key was rejected"),
        (Some((404, None)), "404: nothing answers at this path"),
        (Some((413, None)), "413: the payload is too large"),
        (
            Some((429, Some("1"))),
            "429: the backend is rate-limiting us",
        ),
        (Some((500, None)), "500: the backend failed"),
        (None, "cannot reach the endpoint"),
    ];
    for (status, says) in table {
        let receiver = Receiver::start().await;
        let base = match status {
            Some(s) => {
                receiver.respond_with(Some(*s));
                receiver.base()
            }
            None => format!("http://{refused}"),
        };
        let out = up(
            200,
            &[
                ("NEW_RELIC_LICENSE_KEY", KEY),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &base),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ],
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{says}: exit {}: {stderr}",
            out.status
        );
        assert_reference(&out.stdout, 200);
        // Once per kind of failure and exporter: three processes, each exporting
        // metrics, traces and logs.
        let explained = stderr.lines().filter(|l| l.contains(says)).count();
        assert!(
            (1..=9).contains(&explained),
            "{says}: explained {explained} times:\n{stderr}"
        );
        for line in stderr.lines() {
            assert!(
                !line.contains(KEY),
                "the license key leaked into the log: {line}"
            );
        }
        if status.is_some() {
            assert!(
                !receiver.captured().is_empty(),
                "{says}: nothing reached the receiver"
            );
        }
    }
}

/// Through rotel, a real OTLP collector: `ROTEL_AGENT=/path/to/rotel-agent cargo test
/// -p fizzbuzz --test otlp -- --ignored` (`.ci/run` installs rotel from PyPI and runs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs rotel: set ROTEL_AGENT to the rotel-agent binary and run with --ignored"]
async fn a_run_through_rotel_arrives_intact() {
    let agent = std::env::var("ROTEL_AGENT").unwrap_or_else(|_| panic!("ROTEL_AGENT is not set"));
    let receiver = Receiver::start().await;
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let (http, grpc) = (free(), free());
    let dir = std::env::temp_dir().join(format!("rotel-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut rotel = Command::new(&agent)
        .args([
            "start",
            "--otlp-http-endpoint",
            &http.to_string(),
            "--otlp-grpc-endpoint",
            &grpc.to_string(),
        ])
        .args(["--exporter", "otlp", "--otlp-exporter-protocol", "http"])
        .args(["--otlp-exporter-endpoint", &receiver.base()])
        .arg("--pid-file")
        .arg(dir.join("rotel.pid"))
        .arg("--log-file")
        .arg(dir.join("rotel.log"))
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start rotel at {agent}: {e}"));
    let mut up_at = None;
    for _ in 0..100 {
        if std::net::TcpStream::connect(http).is_ok() {
            up_at = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up_at.is_some(), "rotel did not listen on {http}");

    let out = up_with(
        1000,
        &["--rate", "2000"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{http}")),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    assert_success(&out);
    assert_reference(&out.stdout, 1000);

    // rotel batches (200 ms by default): wait for the last exports to come through.
    let calls = |c: &[Captured]| {
        let p = points(c);
        (
            client_calls(&p, SAY_FIZZ, false),
            client_calls(&p, SAY_BUZZ, false),
        )
    };
    let traced = |c: &[Captured]| whole_number_traces(&spans(c)).map(|t| t.len());
    let captured = receiver
        .wait_for(Duration::from_secs(20), |c| {
            calls(c) == (1000.0, 1000.0) && traced(c) == Ok(1000)
        })
        .await;
    let _ = rotel.kill().await;
    assert_eq!(
        calls(&captured),
        (1000.0, 1000.0),
        "calls counted behind rotel (SayFizz, SayBuzz)"
    );
    let p = points(&captured);
    for (service, kind) in [("fizz", "FizzService"), ("buzz", "BuzzService")] {
        assert!(
            live_values(&p, service, kind).contains(&1.0),
            "{service}: no live activation seen"
        );
    }
    let spans = spans(&captured);
    let traces = whole_number_traces(&spans)
        .unwrap_or_else(|e| panic!("behind rotel, a trace is not whole: {e}"));
    check_numbers(&traces, 1..=1000).unwrap_or_else(|e| panic!("behind rotel: {e}"));
    assert!(
        captured.iter().all(|c| c.error.is_none()),
        "rotel forwarded something undecodable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_headers_win_over_the_environment() {
    let receiver = Receiver::start().await;
    let mut fizz = Command::new(env!("CARGO_BIN_EXE_fizz"));
    clean_env(&mut fizz);
    let mut fizz = fizz
        .args([
            "--consul-addr",
            "127.0.0.1:1",
            "--metrics-interval",
            "200ms",
        ])
        .arg("--otlp-endpoint")
        .arg(format!("{}/v1/metrics", receiver.base()))
        .args(["--otlp-header", "x-team=from-flag"])
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-team=from-env,x-other=env-only",
        )
        .env("FIZZBUZZ_LOG", "error")
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let started = std::time::Instant::now();
    while receiver.captured().is_empty() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = fizz.kill().await;
    let captured = receiver.captured();
    assert!(!captured.is_empty(), "no export arrived");
    for c in &captured {
        assert_eq!(
            c.headers.get("x-team").map(String::as_str),
            Some("from-flag")
        );
        assert_eq!(
            c.headers.get("x-other").map(String::as_str),
            Some("env-only")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_passes_its_export_flags_to_every_node() {
    let receiver = Receiver::start().await;
    let endpoint = format!("{}/v1/metrics", receiver.base());
    let out = up_with(
        300,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-header",
            "x-team=up-flag",
            "--metrics-interval",
            "200ms",
        ],
        &[],
    )
    .await;
    assert_success(&out);
    assert_reference(&out.stdout, 300);
    let captured = receiver.captured();
    assert!(!captured.is_empty(), "no export arrived");
    assert!(metrics_requests(&captured) > 0, "no metrics export arrived");
    for c in &captured {
        assert!(SIGNALS.contains(&c.path.as_str()), "export to {}", c.path);
        assert_eq!(c.headers.get("x-team").map(String::as_str), Some("up-flag"));
    }
    let mut services: Vec<String> = points(&captured)
        .into_iter()
        .filter_map(|p| p.resource.get("service.name").cloned())
        .collect();
    services.sort();
    services.dedup();
    assert_eq!(services, ["buzz", "client", "fizz"]);
}
