//! `fizzbuzz bench`: the speed figures of the grain runtime, each beside the baseline it
//! is judged against, measured in the same run on the same machine — ratios are what
//! mean something on a shared, noisy machine.
//!
//! Baselines are plain tonic services in processes of their own on loopback
//! ([`baseline`]): unary echo and one bidirectional stream with correlation ids, at 1
//! and 256 calls in flight, and the FizzBuzz job done with plain unary services. The
//! grain figures run `fizzbuzz up` itself (this executable), as the README's command
//! does, and read the client's report.

pub mod baseline;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Instant;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::AppError;
use baseline::Service;

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
}

impl Sizes {
    fn full() -> Self {
        Sizes {
            serial_calls: 5_000,
            unary_calls: 200_000,
            stream_messages: 1_000_000,
            numbers: 200_000,
            serial_numbers: 10_000,
        }
    }

    fn quick() -> Self {
        Sizes {
            serial_calls: 100,
            unary_calls: 2_000,
            stream_messages: 5_000,
            numbers: 300,
            serial_numbers: 100,
        }
    }
}

/// Calls in flight of the concurrent baselines.
const INFLIGHT: usize = 256;

/// One measured figure: every run's value and its summary.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// A stable key (`grain_serial_p50_ms`, …).
    pub key: &'static str,
    /// What it is, for people.
    pub name: &'static str,
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
    fn new(key: &'static str, name: &'static str, unit: &'static str, runs: Vec<f64>) -> Self {
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |i: usize| sorted.get(i).copied().unwrap_or(0.0);
        Figure {
            key,
            name,
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
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| AppError::Failed("the baseline server has no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| AppError::Failed(format!("the {name} baseline server did not start")))?
        .map_err(|e| AppError::Failed(format!("the {name} baseline server: {e}")))?
        .unwrap_or_default();
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| AppError::Failed(format!("the {name} baseline server said {line:?}")))?;
    Ok((child, addr))
}

/// What the client's report of one `fizzbuzz up` said.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct UpReport {
    /// Numbers per second.
    rate: f64,
    /// SayFizz's median latency, ms.
    fizz_p50_ms: f64,
}

/// Reads the client's report (`… numbers answered in 1.20 s (8333/s) …` and
/// `  SayFizz  p50 0.15 ms …`).
fn parse_report(stderr: &str) -> Option<UpReport> {
    let mut report = UpReport::default();
    let mut rate = None;
    let mut p50 = None;
    for line in stderr.lines() {
        if line.contains("numbers answered in") {
            rate = line
                .split_once('(')
                .and_then(|(_, rest)| rest.split_once("/s)"))
                .and_then(|(n, _)| n.trim().parse::<f64>().ok());
        }
        if let Some(rest) = line.trim_start().strip_prefix("SayFizz") {
            p50 = rest
                .trim_start()
                .strip_prefix("p50")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok());
        }
    }
    report.rate = rate?;
    report.fizz_p50_ms = p50?;
    Some(report)
}

/// Runs `fizzbuzz up` with `args` (output discarded), as a newcomer would, and reads
/// its report.
async fn up(args: &[String]) -> Result<UpReport, AppError> {
    let out = this_program()?
        .arg("up")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| AppError::Failed(format!("cannot run fizzbuzz up: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: String = stderr
            .lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .join(" | ");
        return Err(AppError::Failed(format!(
            "fizzbuzz up {} failed ({}): {tail}",
            args.join(" "),
            out.status
        )));
    }
    parse_report(&stderr).ok_or_else(|| {
        AppError::Failed(format!(
            "fizzbuzz up {}: no client report in its output",
            args.join(" ")
        ))
    })
}

/// Runs `measure` `runs` times, telling on stderr what it does.
async fn repeat<F, Fut>(runs: u32, what: &str, mut measure: F) -> Result<Vec<f64>, AppError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<f64, AppError>>,
{
    let mut values = Vec::with_capacity(runs as usize);
    for run in 1..=runs {
        let start = Instant::now();
        let v = measure().await?;
        eprintln!(
            "bench: {what}: run {run}/{runs}: {v:.3} ({:.1} s)",
            start.elapsed().as_secs_f64()
        );
        values.push(v);
    }
    Ok(values)
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

    // Baselines: plain tonic, servers in processes of their own.
    let (echo, echo_addr) = start_server(Service::Echo).await?;
    let (fizz, fizz_addr) = start_server(Service::Fizz).await?;
    let (buzz, buzz_addr) = start_server(Service::Buzz).await?;
    let serial = sizes.serial_calls;
    figures.push(Figure::new(
        "unary_serial_p50_ms",
        "tonic unary echo, 1 in flight: p50",
        "ms",
        repeat(runs, "unary, 1 in flight", || {
            baseline::unary_serial(echo_addr, serial)
        })
        .await?,
    ));
    figures.push(Figure::new(
        "stream_serial_p50_ms",
        "tonic stream echo, 1 in flight: p50",
        "ms",
        repeat(runs, "stream, 1 in flight", || {
            baseline::stream_serial(echo_addr, serial)
        })
        .await?,
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
    drop((echo, fizz, buzz));

    // The grain runtime, through `fizzbuzz up` as the README runs it.
    let count = |n: u64| vec!["--count".to_string(), n.to_string()];
    let serial_args = [
        count(sizes.serial_numbers),
        vec!["--concurrency".into(), "1".into()],
    ]
    .concat();
    figures.push(Figure::new(
        "grain_serial_p50_ms",
        "grain call (SayFizz), fizzbuzz up --concurrency 1: p50",
        "ms",
        repeat(runs, "fizzbuzz up --concurrency 1", || async {
            up(&serial_args).await.map(|r| r.fizz_p50_ms)
        })
        .await?,
    ));
    let default_args = count(numbers);
    figures.push(Figure::new(
        "grain_default_numbers_per_s",
        "fizzbuzz up, default flags",
        "numbers/s",
        repeat(runs, "fizzbuzz up (default flags)", || async {
            up(&default_args).await.map(|r| r.rate)
        })
        .await?,
    ));
    let best_args = [
        count(numbers),
        ["--concurrency", "256", "--workers", "1"]
            .map(String::from)
            .to_vec(),
    ]
    .concat();
    figures.push(Figure::new(
        "grain_best_numbers_per_s",
        "fizzbuzz up --concurrency 256 --workers 1",
        "numbers/s",
        repeat(
            runs,
            "fizzbuzz up --concurrency 256 --workers 1",
            || async { up(&best_args).await.map(|r| r.rate) },
        )
        .await?,
    ));

    let ratios = ratios(&figures);
    Ok(Report {
        machine: Machine::read(),
        runs,
        figures,
        ratios,
    })
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
    s.push_str(&format!(
        "{:<74} {:>14}  {}\n",
        "figure", "median", "[min, max]"
    ));
    for f in &report.figures {
        s.push_str(&format!(
            "{:<74} {:>14}  [{}, {}]\n",
            format!("{} ({})", f.name, f.unit),
            number(f.median),
            number(f.min),
            number(f.max)
        ));
    }
    s.push_str(&format!(
        "\n{:<74} {:>14}  {}\n",
        "ratio", "value", "target"
    ));
    for r in &report.ratios {
        s.push_str(&format!(
            "{:<74} {:>13.2}x  {}\n",
            r.name, r.value, r.target
        ));
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
    fn the_client_report_is_read() {
        let stderr = "fizzbuzz client: 100 of 100 numbers answered in 0.02 s (4713/s), 0 failed\n  SayFizz  p50 0.15 ms  p90 0.20 ms  p99 0.30 ms  max 1.00 ms  (100 calls)\n  SayBuzz  p50 0.16 ms  p90 0.2 ms  p99 0.3 ms  max 1 ms  (100 calls)\n";
        assert_eq!(
            parse_report(stderr),
            Some(UpReport {
                rate: 4713.0,
                fizz_p50_ms: 0.15
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
