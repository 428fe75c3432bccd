//! `fizzbuzz bench`: the speed figures of the grain runtime, each beside the baseline it
//! is judged against, measured in the same run on the same machine — ratios are what
//! mean something on a shared, noisy machine.
//!
//! Baselines are plain tonic services in processes of their own on loopback
//! ([`baseline`]): unary echo and one bidirectional stream with correlation ids, at 1
//! and 256 calls in flight, and the FizzBuzz job done with plain unary services. The
//! grain figures run `fizzbuzz up` itself (this executable), as the README's command
//! does, and read the client's report: with default flags, with metrics exported every
//! second to an OTLP/HTTP sink in this process ([`sink`]), and traced at 1 %. A dev
//! agent, a fizz node and a buzz node of the bench's own carry the figures of many
//! activations ([`cluster`]): memory per idle activation, activations per second, and
//! the shutdown of a node holding 300,000. `--plot` draws the latency and throughput
//! curves as SVG ([`plot`]).

pub mod baseline;
mod cluster;
pub mod plot;
mod sink;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::AppError;
use baseline::{Percentiles, Service};
use plot::{Curves, LatencySeries, ThroughputSeries};

/// The generated code of `proto/bench/v1/bench.proto` (plain tonic, no grains).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    tonic::include_proto!("bench.v1");
}

/// Options of `fizzbuzz bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Runs of each figure; the table shows the median, the minimum and the maximum.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub runs: u32,
    /// Print the figures as JSON (for machines) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Tiny counts, one run: checks that every figure can be measured (the figures
    /// themselves mean nothing).
    #[arg(long)]
    pub quick: bool,
    /// Also draw the latency percentiles and the throughput against calls in flight
    /// of tonic unary, one tonic stream and the grain runtime, as SVG, to this file.
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
}

/// Options of the hidden `fizzbuzz bench-server` (a baseline service process).
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// The service to host.
    #[arg(long, value_enum)]
    pub service: Service,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: SocketAddr,
}

/// How much work each figure does.
#[derive(Clone, Copy, Debug, Serialize)]
struct Sizes {
    /// Calls of the serial (one in flight) latency figures.
    serial_calls: u64,
    /// Calls of the unary throughput figure.
    unary_calls: u64,
    /// Messages of the stream throughput figure.
    stream_messages: u64,
    /// Numbers of the FizzBuzz throughput figures.
    numbers: u64,
    /// Numbers of the serial grain figure (`--concurrency 1`).
    serial_numbers: u64,
    /// Numbers of the telemetry figures (with a `--quick` run's count, no span might
    /// be sampled at 1 %).
    telemetry_numbers: u64,
    /// The activations of the node figures.
    node: cluster::NodeSizes,
    /// Unary calls of each throughput point below 256 in flight ([`CURVE_INFLIGHT`]).
    curve_unary: [u64; 4],
    /// Stream messages of each throughput point below 256 in flight.
    curve_stream: [u64; 4],
    /// Numbers of each grain throughput point above 1 in flight.
    curve_numbers: [u64; 4],
}

impl Sizes {
    fn full() -> Self {
        Sizes {
            serial_calls: 5_000,
            unary_calls: 200_000,
            stream_messages: 1_000_000,
            numbers: 200_000,
            serial_numbers: 10_000,
            telemetry_numbers: 200_000,
            node: cluster::NodeSizes {
                warm: 1_000,
                measured: 200_000,
                held: 300_000,
            },
            curve_unary: [5_000, 20_000, 50_000, 100_000],
            curve_stream: [5_000, 20_000, 100_000, 200_000],
            curve_numbers: [10_000, 30_000, 60_000, 100_000],
        }
    }

    fn quick() -> Self {
        Sizes {
            serial_calls: 100,
            unary_calls: 2_000,
            stream_messages: 5_000,
            numbers: 300,
            serial_numbers: 100,
            telemetry_numbers: 2_000,
            node: cluster::NodeSizes {
                warm: 100,
                measured: 3_000,
                held: 4_000,
            },
            curve_unary: [200; 4],
            curve_stream: [500; 4],
            curve_numbers: [100; 4],
        }
    }
}

/// Calls in flight of the throughput curves (`--plot`).
const CURVE_INFLIGHT: [usize; 5] = [1, 4, 16, 64, 256];

/// Calls in flight of the concurrent baselines.
const INFLIGHT: usize = 256;

/// One measured figure: every run's value and its summary.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// A stable key (`grain_serial_p50_ms`, …).
    pub key: &'static str,
    /// What it is, for people.
    pub name: String,
    /// The unit of the values.
    pub unit: &'static str,
    /// Each run's value.
    pub runs: Vec<f64>,
    /// The median of the runs.
    pub median: f64,
    /// The smallest run.
    pub min: f64,
    /// The largest run.
    pub max: f64,
}

impl Figure {
    fn new(key: &'static str, name: impl Into<String>, unit: &'static str, runs: Vec<f64>) -> Self {
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |i: usize| sorted.get(i).copied().unwrap_or(0.0);
        Figure {
            key,
            name: name.into(),
            unit,
            median: at(sorted.len() / 2),
            min: at(0),
            max: at(sorted.len().saturating_sub(1)),
            runs,
        }
    }
}

/// A figure divided by its baseline, with the target it is held to.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    /// What is compared.
    pub name: String,
    /// The median of the figure over the median of the baseline.
    pub value: f64,
    /// The target for it.
    pub target: &'static str,
}

/// A figure held to a target of its own (not a ratio).
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is held to the target.
    pub name: String,
    /// The figure's median.
    pub value: f64,
    /// The unit of the value.
    pub unit: &'static str,
    /// The target for it.
    pub target: &'static str,
}

/// The machine the figures were measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Logical cores available to the process.
    pub cores: usize,
    /// The CPU model, from /proc/cpuinfo when there is one.
    pub cpu: String,
    /// Operating system and architecture.
    pub os: String,
    /// The kernel release.
    pub kernel: String,
    /// This program's version.
    pub fizzbuzz: &'static str,
    /// The compiler that built it.
    pub rustc: &'static str,
    /// Whether this was a debug build (figures of a debug build mean little).
    pub debug_build: bool,
}

impl Machine {
    fn read() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_else(|_| "unknown".into()),
            fizzbuzz: env!("CARGO_PKG_VERSION"),
            rustc: env!("FIZZBUZZ_RUSTC_VERSION"),
            debug_build: cfg!(debug_assertions),
        }
    }
}

/// Everything one `fizzbuzz bench` measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Where.
    pub machine: Machine,
    /// How many runs of each figure.
    pub runs: u32,
    /// The figures.
    pub figures: Vec<Figure>,
    /// The figures against their baselines.
    pub ratios: Vec<Ratio>,
    /// The figures with targets of their own.
    pub targets: Vec<Target>,
    /// What `--plot` draws (measured whether or not it is drawn).
    pub curves: Curves,
}

/// A command running this executable with the environment a newcomer's shell has:
/// no `FIZZBUZZ_*`, `OTEL_*`, `NEW_RELIC_*` or `CONSUL_HTTP_*` setting, so that
/// "default flags" are the defaults and nothing is exported anywhere.
fn this_program() -> Result<Command, AppError> {
    let exe = std::env::current_exe()
        .map_err(|e| AppError::Failed(format!("cannot find this executable: {e}")))?;
    let mut command = Command::new(exe);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if ["FIZZBUZZ_", "OTEL_", "NEW_RELIC_", "CONSUL_HTTP_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            command.env_remove(&key);
        }
    }
    command.stdin(Stdio::null()).kill_on_drop(true);
    Ok(command)
}

/// Starts `fizzbuzz bench-server --service …` (killed when the handle is dropped) and
/// reads the address it listens on.
async fn start_server(service: Service) -> Result<(Child, SocketAddr), AppError> {
    let name = match service {
        Service::Echo => "echo",
        Service::Fizz => "fizz",
        Service::Buzz => "buzz",
    };
    let mut child = this_program()?
        .args(["bench-server", "--service", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| AppError::Failed(format!("cannot start the {name} baseline server: {e}")))?;
    let addr = listening_addr(&mut child, &format!("the {name} baseline server")).await?;
    Ok((child, addr))
}

/// Reads the `listening on ADDR` line a child prints on its (piped) stdout first;
/// `what` names the child in errors.
async fn listening_addr(child: &mut Child, what: &str) -> Result<SocketAddr, AppError> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| AppError::Failed(format!("{what} has no stdout")))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| AppError::Failed(format!("{what} did not start within 30 s")))?
        .map_err(|e| AppError::Failed(format!("{what}: {e}")))?
        .unwrap_or_default();
    // The baseline servers print `host:port`, the dev agent `http://host:port`.
    line.strip_prefix("listening on ")
        .map(|a| a.trim())
        .map(|a| a.strip_prefix("http://").unwrap_or(a))
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| AppError::Failed(format!("{what} said {line:?}")))
}

/// What the client's report of one `fizzbuzz up` (or `fizzbuzz client`) said.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct UpReport {
    /// Numbers per second.
    rate: f64,
    /// SayFizz's latency percentiles, ms.
    fizz: Percentiles,
}

/// Reads the client's report (`… numbers answered in 1.20 s (8333/s) …` and
/// `  SayFizz  p50 0.15 ms  p90 0.20 ms  p99 0.30 ms  max 1.00 ms  (…)`).
fn parse_report(stderr: &str) -> Option<UpReport> {
    let mut rate = None;
    let mut fizz = None;
    for line in stderr.lines() {
        if line.contains("numbers answered in") {
            rate = line
                .split_once('(')
                .and_then(|(_, rest)| rest.split_once("/s)"))
                .and_then(|(n, _)| n.trim().parse::<f64>().ok());
        }
        if let Some(rest) = line.trim_start().strip_prefix("SayFizz") {
            fizz = parse_percentiles(rest);
        }
    }
    Some(UpReport {
        rate: rate?,
        fizz: fizz?,
    })
}

/// `p50 0.15 ms  p90 0.20 ms  p99 0.30 ms  max 1.00 ms …`: each value after its name.
fn parse_percentiles(line: &str) -> Option<Percentiles> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some(Percentiles {
        p50: value("p50")?,
        p90: value("p90")?,
        p99: value("p99")?,
        max: value("max")?,
    })
}

/// Runs `command` (a client, or `fizzbuzz up`) to its end, within `timeout` (it is
/// killed past it), and reads the client's report from its stderr; `what` names it in
/// errors.
async fn run_reporting(
    mut command: Command,
    what: &str,
    timeout: Duration,
) -> Result<UpReport, AppError> {
    let out = tokio::time::timeout(
        timeout,
        command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| AppError::Failed(format!("{what} did not finish within {timeout:?}")))?
    .map_err(|e| AppError::Failed(format!("cannot run {what}: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(AppError::Failed(format!(
            "{what} failed ({}): {}",
            out.status,
            tail.join(" | ")
        )));
    }
    parse_report(&stderr)
        .ok_or_else(|| AppError::Failed(format!("{what}: no client report in its output")))
}

/// The longest one `fizzbuzz up` of the bench may take.
const UP_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `fizzbuzz up` with `args` and the extra environment `env` (output discarded),
/// as a newcomer would, and reads its report.
async fn up_with(args: &[String], env: &[(&str, &str)]) -> Result<UpReport, AppError> {
    let mut command = this_program()?;
    command.arg("up").args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let what = format!("fizzbuzz up {}", args.join(" "));
    run_reporting(command, &what, UP_TIMEOUT).await
}

/// Runs `fizzbuzz up` with `args` (output discarded), as a newcomer would, and reads
/// its report.
async fn up(args: &[String]) -> Result<UpReport, AppError> {
    up_with(args, &[]).await
}

/// Runs `measure` `runs` times, telling on stderr what it does.
async fn repeat<F, Fut>(runs: u32, what: &str, measure: F) -> Result<Vec<f64>, AppError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<f64, AppError>>,
{
    repeat_with(runs, what, |v| *v, measure).await
}

/// Runs `measure` `runs` times, telling on stderr what it does (`shown` of each
/// result), and returns every result.
async fn repeat_with<T, F, Fut>(
    runs: u32,
    what: &str,
    shown: impl Fn(&T) -> f64,
    mut measure: F,
) -> Result<Vec<T>, AppError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AppError>>,
{
    let mut values = Vec::with_capacity(runs as usize);
    for run in 1..=runs {
        let start = Instant::now();
        let v = measure().await?;
        eprintln!(
            "bench: {what}: run {run}/{runs}: {:.3} ({:.1} s)",
            shown(&v),
            start.elapsed().as_secs_f64()
        );
        values.push(v);
    }
    Ok(values)
}

/// Names of the three series of the picture.
const UNARY: &str = "tonic unary";
const STREAM: &str = "tonic stream (one)";
const GRAIN: &str = "grain call";

/// The median of `values` (0 without any).
fn median_of(values: &[f64]) -> f64 {
    Figure::new("", "", "", values.to_vec()).median
}

/// Measures every figure and its baseline.
pub async fn measure(args: &BenchArgs) -> Result<Report, AppError> {
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let runs = if args.quick { 1 } else { args.runs };
    let concurrency = crate::client::ClientArgs::default().concurrency;
    let mut figures = Vec::new();
    let mut unary_curve = Vec::new();
    let mut stream_curve = Vec::new();

    // Baselines: plain tonic, servers in processes of their own.
    let (echo, echo_addr) = start_server(Service::Echo).await?;
    let (fizz, fizz_addr) = start_server(Service::Fizz).await?;
    let (buzz, buzz_addr) = start_server(Service::Buzz).await?;
    let serial = sizes.serial_calls;
    let p50 = |p: &Percentiles| p.p50;
    let unary_serial = repeat_with(runs, "unary, 1 in flight", p50, || {
        baseline::unary_serial(echo_addr, serial)
    })
    .await?;
    figures.push(Figure::new(
        "unary_serial_p50_ms",
        "tonic unary echo, 1 in flight: p50",
        "ms",
        unary_serial.iter().map(p50).collect(),
    ));
    let stream_serial = repeat_with(runs, "stream, 1 in flight", p50, || {
        baseline::stream_serial(echo_addr, serial)
    })
    .await?;
    figures.push(Figure::new(
        "stream_serial_p50_ms",
        "tonic stream echo, 1 in flight: p50",
        "ms",
        stream_serial.iter().map(p50).collect(),
    ));
    let calls = sizes.unary_calls;
    figures.push(Figure::new(
        "unary_256_calls_per_s",
        "tonic unary echo, 256 in flight",
        "calls/s",
        repeat(runs, "unary, 256 in flight", || {
            baseline::unary_concurrent(echo_addr, calls, INFLIGHT)
        })
        .await?,
    ));
    let messages = sizes.stream_messages;
    figures.push(Figure::new(
        "stream_256_msgs_per_s",
        "tonic stream echo, 256 in flight (correlation ids)",
        "msg/s",
        repeat(runs, "stream, 256 in flight", || {
            baseline::stream_concurrent(echo_addr, messages, INFLIGHT)
        })
        .await?,
    ));
    let numbers = sizes.numbers;
    figures.push(Figure::new(
        "plain_fizzbuzz_numbers_per_s",
        "FizzBuzz over plain tonic unary services",
        "numbers/s",
        repeat(runs, "plain tonic FizzBuzz", || {
            baseline::plain_fizzbuzz(fizz_addr, buzz_addr, numbers, concurrency)
        })
        .await?,
    ));
    // The curves below 256 in flight: one run a point (256 is the figures above).
    for (i, n) in CURVE_INFLIGHT.iter().copied().enumerate() {
        let (Some(&calls), Some(&messages)) = (sizes.curve_unary.get(i), sizes.curve_stream.get(i))
        else {
            continue;
        };
        let v = baseline::unary_concurrent(echo_addr, calls, n).await?;
        eprintln!("bench: curve: unary, {n} in flight: {v:.0} calls/s");
        unary_curve.push((n, v));
        let v = baseline::stream_concurrent(echo_addr, messages, n).await?;
        eprintln!("bench: curve: stream, {n} in flight: {v:.0} msg/s");
        stream_curve.push((n, v));
    }
    drop((echo, fizz, buzz));

    // The grain runtime, through `fizzbuzz up` as the README runs it.
    let count = |n: u64| vec!["--count".to_string(), n.to_string()];
    let serial_args = [
        count(sizes.serial_numbers),
        vec!["--concurrency".into(), "1".into()],
    ]
    .concat();
    let serial_reports = repeat_with(
        runs,
        "fizzbuzz up --concurrency 1",
        |r: &UpReport| r.fizz.p50,
        || up(&serial_args),
    )
    .await?;
    let grain_serial: Vec<Percentiles> = serial_reports.iter().map(|r| r.fizz).collect();
    let grain_serial_rates: Vec<f64> = serial_reports.iter().map(|r| r.rate).collect();
    figures.push(Figure::new(
        "grain_serial_p50_ms",
        "grain call (SayFizz), fizzbuzz up --concurrency 1: p50",
        "ms",
        grain_serial.iter().map(p50).collect(),
    ));
    let default_args = count(numbers);
    // The best flags: one run of each setting of a small grid, then `runs` of the
    // fastest, so "defaults within 10 % of the best" is checked, not assumed.
    let grid: &[(&str, &str)] = if args.quick {
        &[("64", "1"), ("256", "2")]
    } else {
        &[
            ("64", "1"),
            ("256", "1"),
            ("1024", "1"),
            ("64", "2"),
            ("256", "2"),
            ("1024", "2"),
        ]
    };
    let flags = |(c, w): (&str, &str)| {
        ["--concurrency", c, "--workers", w]
            .map(String::from)
            .to_vec()
    };
    let mut best: Option<((&str, &str), f64)> = None;
    for &setting in grid {
        let rate = up(&[count(numbers), flags(setting)].concat()).await?.rate;
        eprintln!(
            "bench: best flags: --concurrency {} --workers {}: {rate:.0} numbers/s",
            setting.0, setting.1
        );
        if best.is_none_or(|(_, b)| rate > b) {
            best = Some((setting, rate));
        }
    }
    let Some((setting, _)) = best else {
        return Err(AppError::Failed(
            "no setting of the flags was measured".into(),
        ));
    };
    let best_args = [count(numbers), flags(setting)].concat();
    let best_name = format!(
        "fizzbuzz up, best flags found (--concurrency {} --workers {})",
        setting.0, setting.1
    );
    // The figures compared with each other run in rounds, so that a machine getting
    // busier or quieter moves them all; and each round starts one figure later
    // (default, best, metrics, traced, TLS; then best, metrics, …), so that no figure
    // always runs first in its round or always right after the same other one: on a
    // shared machine the position in a round alone moved a figure by 20 %.
    let telemetry = Telemetry::start(sizes.telemetry_numbers).await?;
    let certs = BenchCerts::make()?;
    let tls_args = [default_args.clone(), certs.args()].concat();
    let mut rates: [Vec<f64>; ROUND_FIGURES] = Default::default();
    for round in 0..runs as usize {
        let started = Instant::now();
        for which in rotated(round) {
            let rate = match which {
                0 => up(&default_args).await?.rate,
                1 => up(&best_args).await?.rate,
                2 => telemetry.exported().await?,
                3 => telemetry.traced().await?,
                _ => up(&tls_args).await?.rate,
            };
            rates[which].push(rate);
        }
        let last = |which: usize| rates[which].last().copied().unwrap_or_default();
        eprintln!(
            "bench: round {}/{runs}: default {:.0}, best {:.0}, metrics exported {:.0}, traced {:.0}, mutual TLS {:.0} numbers/s ({:.1} s)",
            round + 1,
            last(0),
            last(1),
            last(2),
            last(3),
            last(4),
            started.elapsed().as_secs_f64()
        );
    }
    let [default, best, exported, traced, tls] = rates;
    drop(certs);
    figures.push(Figure::new(
        "grain_default_numbers_per_s",
        "fizzbuzz up, default flags",
        "numbers/s",
        default,
    ));
    figures.push(Figure::new(
        "grain_best_numbers_per_s",
        best_name,
        "numbers/s",
        best,
    ));
    figures.push(Figure::new(
        "grain_metrics_numbers_per_s",
        "fizzbuzz up, metrics exported every 1 s (OTLP/HTTP)",
        "numbers/s",
        exported,
    ));
    figures.push(Figure::new(
        "grain_traced_numbers_per_s",
        "fizzbuzz up, metrics + traces sampled at 1 % (OTLP/HTTP)",
        "numbers/s",
        traced,
    ));
    figures.push(Figure::new(
        "grain_tls_numbers_per_s",
        "fizzbuzz up, mutual TLS between members (default flags otherwise)",
        "numbers/s",
        tls,
    ));

    // Two grain calls a number; 1 in flight is the serial figure's runs.
    let mut grain_curve = vec![(1, 2.0 * median_of(&grain_serial_rates))];
    for (n, numbers) in CURVE_INFLIGHT
        .iter()
        .copied()
        .skip(1)
        .zip(sizes.curve_numbers)
    {
        let args = [count(numbers), vec!["--concurrency".into(), n.to_string()]].concat();
        let r = up(&args).await?;
        eprintln!(
            "bench: curve: fizzbuzz up --concurrency {n}: {:.0} grain calls/s",
            2.0 * r.rate
        );
        grain_curve.push((n, 2.0 * r.rate));
    }

    figures.extend(node_figures(runs, sizes.node).await?);

    let median = |key: &str| {
        figures
            .iter()
            .find(|f| f.key == key)
            .map_or(0.0, |f| f.median)
    };
    unary_curve.push((INFLIGHT, median("unary_256_calls_per_s")));
    stream_curve.push((INFLIGHT, median("stream_256_msgs_per_s")));
    let curves = Curves {
        latency: vec![
            LatencySeries {
                name: UNARY,
                ms: Percentiles::median(&unary_serial),
            },
            LatencySeries {
                name: STREAM,
                ms: Percentiles::median(&stream_serial),
            },
            LatencySeries {
                name: GRAIN,
                ms: Percentiles::median(&grain_serial),
            },
        ],
        inflight: CURVE_INFLIGHT.to_vec(),
        throughput: vec![
            ThroughputSeries {
                name: UNARY,
                points: unary_curve,
            },
            ThroughputSeries {
                name: STREAM,
                points: stream_curve,
            },
            ThroughputSeries {
                name: GRAIN,
                points: grain_curve,
            },
        ],
    };
    let ratios = ratios(&figures);
    let targets = targets(&figures, sizes.node);
    Ok(Report {
        machine: Machine::read(),
        runs,
        figures,
        ratios,
        targets,
        curves,
    })
}

/// A CA and a member certificate for 127.0.0.1 (`fizzbuzz certs`), for the TLS
/// figure, in a directory of their own that is removed when this is dropped.
struct BenchCerts {
    dir: std::path::PathBuf,
}

impl BenchCerts {
    fn make() -> Result<Self, AppError> {
        let dir = std::env::temp_dir().join(format!("fizzbuzz-bench-tls-{}", std::process::id()));
        crate::certs::certs(&crate::certs::CertsArgs {
            dir: dir.clone(),
            hosts: vec!["127.0.0.1".into()],
            days: 1,
            force: true,
        })?;
        Ok(Self { dir })
    }

    /// `--tls-cert … --tls-key … --tls-ca …`: mutual TLS.
    fn args(&self) -> Vec<String> {
        let file = |name: &str| self.dir.join(name).display().to_string();
        vec![
            "--tls-cert".into(),
            file("member.pem"),
            "--tls-key".into(),
            file("member-key.pem"),
            "--tls-ca".into(),
            file("ca.pem"),
        ]
    }
}

impl Drop for BenchCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `fizzbuzz up` exporting to an OTLP/HTTP sink in this process: metrics every second,
/// or metrics and traces sampled at 1 %.
struct Telemetry {
    sink: sink::Sink,
    args: Vec<String>,
    numbers: u64,
}

impl Telemetry {
    async fn start(numbers: u64) -> Result<Self, AppError> {
        let sink = sink::Sink::start().await?;
        let args = [
            "--count".to_string(),
            numbers.to_string(),
            "--otlp-endpoint".into(),
            sink.endpoint(),
            "--metrics-interval".into(),
            "1s".into(),
        ]
        .to_vec();
        Ok(Telemetry {
            sink,
            args,
            numbers,
        })
    }

    /// Numbers/s with metrics exported every second (and neither traces nor logs).
    async fn exported(&self) -> Result<f64, AppError> {
        use grain_telemetry::env::{LOGS_EXPORTER, TRACES_EXPORTER};
        let env = [(TRACES_EXPORTER, "none"), (LOGS_EXPORTER, "none")];
        let before = self.sink.totals();
        let r = up_with(&self.args, &env).await?;
        let got = self.sink.totals() - before;
        if got.metrics.requests == 0 || got.metrics.bytes == 0 {
            return Err(AppError::Failed(
                "fizzbuzz up --otlp-endpoint: the OTLP sink received no metrics".into(),
            ));
        }
        if got.traces.requests > 0 || got.logs.requests > 0 {
            return Err(AppError::Failed(format!(
                "fizzbuzz up with {TRACES_EXPORTER}=none and {LOGS_EXPORTER}=none still exported {got:?}"
            )));
        }
        eprintln!(
            "bench: the sink received {} metrics exports ({} bytes)",
            got.metrics.requests, got.metrics.bytes
        );
        Ok(r.rate)
    }

    /// Numbers/s with metrics exported and traces sampled at 1 % (no logs).
    async fn traced(&self) -> Result<f64, AppError> {
        use grain_telemetry::env::{LOGS_EXPORTER, TRACES_SAMPLER, TRACES_SAMPLER_ARG};
        let env = [
            (LOGS_EXPORTER, "none"),
            (TRACES_SAMPLER, "parentbased_traceidratio"),
            (TRACES_SAMPLER_ARG, "0.01"),
        ];
        let before = self.sink.totals();
        let r = up_with(&self.args, &env).await?;
        let got = self.sink.totals() - before;
        if got.traces.requests == 0 || got.traces.bytes == 0 {
            return Err(AppError::Failed(format!(
                "fizzbuzz up traced at 1 % of {} numbers: the OTLP sink received no spans",
                self.numbers
            )));
        }
        if got.metrics.requests == 0 {
            return Err(AppError::Failed(
                "fizzbuzz up traced at 1 %: the OTLP sink received no metrics".into(),
            ));
        }
        eprintln!(
            "bench: the sink received {} span exports ({} bytes) and {} metrics exports",
            got.traces.requests, got.traces.bytes, got.metrics.requests
        );
        Ok(r.rate)
    }
}

/// The figures measured in each round: default flags, best flags, metrics exported,
/// traced, mutual TLS.
const ROUND_FIGURES: usize = 5;

/// The order of the figures in round `round` (from 0): each round starts one later.
fn rotated(round: usize) -> impl Iterator<Item = usize> {
    (0..ROUND_FIGURES).map(move |k| (k + round) % ROUND_FIGURES)
}

/// The figures of many activations on one fizz node, each run on fresh nodes.
async fn node_figures(runs: u32, sizes: cluster::NodeSizes) -> Result<Vec<Figure>, AppError> {
    let (mut memory, mut rate, mut shutdown) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let start = Instant::now();
        let f = cluster::measure(sizes).await?;
        eprintln!(
            "bench: nodes: run {run}/{runs}: {:.0} B/activation, {:.0} activations/s, shutdown {:.2} s ({:.1} s)",
            f.bytes_per_activation,
            f.activations_per_s,
            f.shutdown_s,
            start.elapsed().as_secs_f64()
        );
        memory.push(f.bytes_per_activation);
        rate.push(f.activations_per_s);
        shutdown.push(f.shutdown_s);
    }
    Ok(vec![
        Figure::new(
            "node_bytes_per_idle_activation",
            format!(
                "fizz node VmRSS growth per idle activation ({} new)",
                sizes.measured
            ),
            "bytes",
            memory,
        ),
        Figure::new(
            "node_activations_per_s",
            format!(
                "activations/s on each node (client over {} new identities)",
                sizes.measured
            ),
            "activations/s",
            rate,
        ),
        Figure::new(
            "node_shutdown_s",
            format!(
                "fizz node holding {} activations: SIGTERM to exit",
                sizes.held
            ),
            "s",
            shutdown,
        ),
    ])
}

/// The figures against their baselines, with the targets of the speed issue.
fn ratios(figures: &[Figure]) -> Vec<Ratio> {
    let median = |key: &str| {
        figures
            .iter()
            .find(|f| f.key == key)
            .map_or(f64::NAN, |f| f.median)
    };
    let ratio = |name: &str, a: f64, b: f64, target: &'static str| Ratio {
        name: name.into(),
        value: if b > 0.0 { a / b } else { f64::NAN },
        target,
    };
    let grain_serial = median("grain_serial_p50_ms");
    let default = median("grain_default_numbers_per_s");
    vec![
        ratio(
            "serial grain call p50 / tonic unary p50",
            grain_serial,
            median("unary_serial_p50_ms"),
            "<= 0.6",
        ),
        ratio(
            "serial grain call p50 / one stream p50",
            grain_serial,
            median("stream_serial_p50_ms"),
            "<= 1.2",
        ),
        ratio(
            "fizzbuzz up (default flags) / plain tonic FizzBuzz",
            default,
            median("plain_fizzbuzz_numbers_per_s"),
            ">= 10",
        ),
        // Two grain calls a number.
        ratio(
            "grain calls/s (default flags) / one stream at 256 in flight",
            2.0 * default,
            median("stream_256_msgs_per_s"),
            ">= 0.3",
        ),
        ratio(
            "default flags / best flags found",
            default,
            median("grain_best_numbers_per_s"),
            ">= 0.9",
        ),
        ratio(
            "metrics exported every 1 s / not exported (default flags)",
            median("grain_metrics_numbers_per_s"),
            default,
            ">= 0.95 (at least >= 0.9)",
        ),
        ratio(
            "traced at 1 % (+ metrics) / not exported (default flags)",
            median("grain_traced_numbers_per_s"),
            default,
            ">= 0.95",
        ),
        ratio(
            "mutual TLS between members / plaintext (default flags)",
            median("grain_tls_numbers_per_s"),
            default,
            "reported",
        ),
    ]
}

/// The figures held to targets of their own.
fn targets(figures: &[Figure], sizes: cluster::NodeSizes) -> Vec<Target> {
    let get = |key: &str| figures.iter().find(|f| f.key == key);
    let target = |key: &str, name: String, target: &'static str| Target {
        name,
        value: get(key).map_or(f64::NAN, |f| f.median),
        unit: get(key).map_or("", |f| f.unit),
        target,
    };
    vec![
        target(
            "node_bytes_per_idle_activation",
            "memory per idle activation".into(),
            "<= 2048 (at least <= 4096)",
        ),
        target(
            "node_activations_per_s",
            "activations per second on each node".into(),
            ">= 50000",
        ),
        target(
            "node_shutdown_s",
            format!("shutdown of a node holding {} activations", sizes.held),
            "<= 2 (at least <= 5)",
        ),
    ]
}

/// The report as a table anyone can compare with their own run.
pub fn table(report: &Report) -> String {
    let m = &report.machine;
    let mut s = format!(
        "fizzbuzz bench: {} cores ({}), {}, kernel {}, fizzbuzz {}, {}{}\n{} run(s) of each figure: median [min, max]\n\n",
        m.cores,
        m.cpu,
        m.os,
        m.kernel,
        m.fizzbuzz,
        m.rustc,
        if m.debug_build { ", DEBUG BUILD" } else { "" },
        report.runs
    );
    // The name column: as wide as the longest name.
    let w = report
        .figures
        .iter()
        .map(|f| f.name.len() + f.unit.len() + 3)
        .chain(report.ratios.iter().map(|r| r.name.len()))
        .chain(
            report
                .targets
                .iter()
                .map(|t| t.name.len() + t.unit.len() + 3),
        )
        .fold(60, usize::max);
    s.push_str(&format!(
        "{:<w$} {:>14}  {}\n",
        "figure", "median", "[min, max]"
    ));
    for f in &report.figures {
        s.push_str(&format!(
            "{:<w$} {:>14}  [{}, {}]\n",
            format!("{} ({})", f.name, f.unit),
            number(f.median),
            number(f.min),
            number(f.max)
        ));
    }
    s.push_str(&format!(
        "\n{:<w$} {:>14}  {}\n",
        "ratio", "value", "target"
    ));
    for r in &report.ratios {
        s.push_str(&format!(
            "{:<w$} {:>13.2}x  {}\n",
            r.name, r.value, r.target
        ));
    }
    s.push_str(&format!(
        "\n{:<w$} {:>14}  {}\n",
        "figure with a target", "value", "target"
    ));
    for t in &report.targets {
        s.push_str(&format!(
            "{:<w$} {:>14}  {}\n",
            format!("{} ({})", t.name, t.unit),
            number(t.value),
            t.target
        ));
    }
    s.push_str(&curves_table(&report.curves));
    s
}

/// The curves of the picture as two small tables (see [`Curves`] for which points
/// are one run).
fn curves_table(curves: &Curves) -> String {
    let mut s = format!(
        "\n{:<30} {:>10} {:>10} {:>10} {:>10}\n",
        "latency, 1 in flight (ms)", "p50", "p90", "p99", "max"
    );
    for l in &curves.latency {
        let p = l.ms;
        s.push_str(&format!(
            "{:<30} {:>10.3} {:>10.3} {:>10.3} {:>10.3}\n",
            l.name, p.p50, p.p90, p.p99, p.max
        ));
    }
    s.push_str(&format!("\n{:<30}", "calls/s by calls in flight"));
    for n in &curves.inflight {
        s.push_str(&format!(" {n:>10}"));
    }
    s.push('\n');
    for t in &curves.throughput {
        s.push_str(&format!("{:<30}", t.name));
        for n in &curves.inflight {
            match t.points.iter().find(|(m, _)| m == n) {
                Some((_, v)) => s.push_str(&format!(" {v:>10.0}")),
                None => s.push_str(&format!(" {:>10}", "-")),
            }
        }
        s.push('\n');
    }
    s
}

/// A figure with sensible precision: milliseconds to three decimals, rates whole.
fn number(v: f64) -> String {
    if v.abs() < 100.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.0}")
    }
}

/// `fizzbuzz bench`: measures and prints the table (or JSON).
pub async fn bench(args: &BenchArgs) -> Result<u8, AppError> {
    let report = measure(args).await?;
    if let Some(path) = &args.plot {
        plot::write_svg(&report.curves, path)?;
        eprintln!("bench: wrote {}", path.display());
    }
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| AppError::Failed(format!("cannot write the report: {e}")))?;
        println!("{json}");
    } else {
        print!("{}", table(&report));
    }
    Ok(crate::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_figure_takes_each_place_in_a_round_once_in_five_rounds() {
        let mut places = [[0u32; ROUND_FIGURES]; ROUND_FIGURES];
        for round in 0..ROUND_FIGURES {
            let order: Vec<usize> = rotated(round).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..ROUND_FIGURES).collect::<Vec<_>>(), "{order:?}");
            for (place, figure) in order.into_iter().enumerate() {
                places[figure][place] += 1;
            }
        }
        assert!(places.iter().flatten().all(|&n| n == 1), "{places:?}");
    }

    #[test]
    fn the_client_report_is_read() {
        let stderr = "fizzbuzz client: 100 of 100 numbers answered in 0.02 s (4713/s), 0 failed\n  SayFizz  p50 0.15 ms  p90 0.20 ms  p99 0.30 ms  max 1.00 ms  (100 calls)\n  SayBuzz  p50 0.16 ms  p90 0.2 ms  p99 0.3 ms  max 1 ms  (100 calls)\n";
        assert_eq!(
            parse_report(stderr),
            Some(UpReport {
                rate: 4713.0,
                fizz: Percentiles {
                    p50: 0.15,
                    p90: 0.2,
                    p99: 0.3,
                    max: 1.0
                }
            })
        );
        assert_eq!(parse_report("no report here"), None);
    }

    #[test]
    fn a_figure_summarises_its_runs() {
        let f = Figure::new("k", "n", "u", vec![3.0, 1.0, 2.0]);
        assert_eq!((f.median, f.min, f.max), (2.0, 1.0, 3.0));
    }
}
