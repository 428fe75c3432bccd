//! The `client` node: waits for both kinds, then drives FizzBuzz through them and prints
//! the results in order.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use grain::{CallError, CallOptions, Cluster, Node};
use serde::Serialize;
use tokio::time::Instant;

use crate::config::{CommonArgs, NodeSetup, Role, parse_duration};
use crate::proto::{
    BuzzRequest, BuzzServiceClient, BuzzServiceKind, FizzRequest, FizzServiceClient,
    FizzServiceKind,
};
use crate::stats::Histogram;
use crate::{AppError, start_error};

/// How results are printed on stdout.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One line per number: `1`, `2`, `Fizz`, …
    Text,
    /// One JSON object per line: `{"number":1,"message":""}`.
    Json,
}

/// What the client does.
#[derive(clap::Args, Clone, Debug)]
pub struct ClientArgs {
    /// How many numbers, 1 to N.
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// How many numbers in flight at once (results are still printed in order).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// The grain identity to call.
    #[arg(long, default_value = "grain1")]
    pub identity: String,
    /// Spread the numbers over this many identities (grain1 … grainN) instead of one.
    #[arg(long)]
    pub identities: Option<u32>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// How long to wait for members hosting FizzService and BuzzService.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub wait_timeout: Duration,
    /// The deadline of one call (retries included).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub call_timeout: Duration,
    /// Keep going (1..=count, again and again) until stopped: live data for dashboards.
    #[arg(long)]
    pub forever: bool,
    /// At most this many numbers per second (default: as fast as possible).
    #[arg(long)]
    pub rate: Option<f64>,
}

impl Default for ClientArgs {
    fn default() -> Self {
        Self {
            count: 100,
            concurrency: 32,
            identity: "grain1".into(),
            identities: None,
            format: Format::Text,
            wait_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(5),
            forever: false,
            rate: None,
        }
    }
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

impl ClientArgs {
    /// Checks the options; the message names the wrong one.
    pub fn validate(&self) -> Result<(), AppError> {
        let bad = |m: &str| Err(AppError::Usage(m.to_string()));
        if self.count == 0 || self.count > i64::MAX as u64 {
            return bad("--count must be between 1 and 9223372036854775807");
        }
        if self.concurrency == 0 || self.concurrency > 100_000 {
            return bad("--concurrency must be between 1 and 100000");
        }
        if self.identity.is_empty() {
            return bad("--identity must not be empty");
        }
        if self.identities == Some(0) {
            return bad("--identities must be at least 1");
        }
        if self.wait_timeout.is_zero() {
            return bad("--wait-timeout must be greater than zero");
        }
        if self.call_timeout.is_zero() {
            return bad("--call-timeout must be greater than zero");
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && (0.001..=1_000_000.0).contains(&r))
        {
            return bad("--rate must be between 0.001 and 1000000 numbers per second");
        }
        Ok(())
    }

    /// These options as command-line arguments (for `fizzbuzz up` to pass on).
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "--count".to_string(),
            self.count.to_string(),
            "--concurrency".into(),
            self.concurrency.to_string(),
            "--identity".into(),
            self.identity.clone(),
            "--format".into(),
            match self.format {
                Format::Text => "text".into(),
                Format::Json => "json".into(),
            },
            "--wait-timeout".into(),
            millis(self.wait_timeout),
            "--call-timeout".into(),
            millis(self.call_timeout),
        ];
        if let Some(n) = self.identities {
            a.extend(["--identities".into(), n.to_string()]);
        }
        if self.forever {
            a.push("--forever".into());
        }
        if let Some(r) = self.rate {
            a.extend(["--rate".into(), r.to_string()]);
        }
        a
    }
}

/// Options of the `client` command.
#[derive(clap::Args, Clone, Debug)]
pub struct ClientCommand {
    /// Options every node takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do.
    #[command(flatten)]
    pub run: ClientArgs,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Numbers answered (and printed).
    pub answered: u64,
    /// Numbers that failed.
    pub failed: u64,
    /// Numbers asked for (`count`, or what was issued in `--forever` mode).
    pub issued: u64,
    /// Wall time of the calls.
    pub elapsed: Duration,
    /// `SayFizz` latencies.
    pub fizz: Histogram,
    /// `SayBuzz` latencies.
    pub buzz: Histogram,
    /// The first failure, for the one-line reason.
    pub first_failure: Option<String>,
    /// Stopped by a signal.
    pub interrupted: bool,
    /// Stopped because stdout's reader went away (`| head`): not a failure.
    pub output_closed: bool,
}

impl Summary {
    /// The closing lines for stderr.
    pub fn report(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut s = format!(
            "fizzbuzz client: {} of {} numbers answered in {:.2} s ({:.0}/s), {} failed{}\n",
            self.answered,
            self.issued,
            secs,
            self.answered as f64 / secs,
            self.failed,
            if self.interrupted {
                ", interrupted"
            } else if self.output_closed {
                ", stopped: stdout was closed"
            } else {
                ""
            }
        );
        for (name, h) in [("SayFizz", &self.fizz), ("SayBuzz", &self.buzz)] {
            let ms = |q: f64| h.quantile(q).map_or(0.0, |d| d.as_secs_f64() * 1e3);
            s.push_str(&format!(
                "  {name}  p50 {:.2} ms  p99 {:.2} ms  ({} calls)\n",
                ms(0.5),
                ms(0.99),
                h.count()
            ));
        }
        s
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    number: i64,
    message: &'a str,
}

struct Outcome {
    number: i64,
    fizz: Option<Duration>,
    buzz: Option<Duration>,
    result: Result<String, String>,
}

async fn one_number(
    cluster: Cluster,
    identity: Arc<str>,
    number: i64,
    options: Arc<CallOptions>,
) -> Outcome {
    let started = Instant::now();
    let fizz = FizzServiceClient::new(&cluster, identity.clone())
        .say_fizz_with(
            FizzRequest {
                number,
                message: String::new(),
            },
            &options,
        )
        .await;
    let fizz_took = started.elapsed();
    let fizz = match fizz {
        Ok(f) => f,
        Err(e) => return failed(number, None, "SayFizz", &identity, e),
    };
    let started = Instant::now();
    let buzz = BuzzServiceClient::new(&cluster, identity.clone())
        .say_buzz_with(
            BuzzRequest {
                number,
                message: fizz.message,
            },
            &options,
        )
        .await;
    let buzz_took = started.elapsed();
    match buzz {
        Ok(b) => Outcome {
            number,
            fizz: Some(fizz_took),
            buzz: Some(buzz_took),
            result: Ok(b.message),
        },
        Err(e) => failed(number, Some(fizz_took), "SayBuzz", &identity, e),
    }
}

fn failed(
    number: i64,
    fizz: Option<Duration>,
    method: &str,
    identity: &str,
    e: CallError,
) -> Outcome {
    Outcome {
        number,
        fizz,
        buzz: None,
        result: Err(format!(
            "number {number}: {method} on {identity} failed: {e}"
        )),
    }
}

/// A progress line on stderr, for long runs whose stdout is not a terminal.
struct Progress {
    total: u64,
    enabled: bool,
    last: Instant,
}

impl Progress {
    fn new(args: &ClientArgs) -> Self {
        let enabled = !args.forever
            && args.count >= 1000
            && !std::io::stdout().is_terminal()
            && std::io::stderr().is_terminal();
        Self {
            total: args.count,
            enabled,
            last: Instant::now(),
        }
    }

    fn update(&mut self, done: u64) {
        if !self.enabled || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        let width = 30;
        let filled = (done * width / self.total.max(1)) as usize;
        eprint!(
            "\r[{}{}] {done}/{}",
            "#".repeat(filled),
            ".".repeat(width as usize - filled.min(width as usize)),
            self.total
        );
    }

    fn finish(&self) {
        if self.enabled {
            eprint!("\r{}\r", " ".repeat(60));
        }
    }
}

/// Drives FizzBuzz through `cluster` (which must see both kinds) and writes each answer
/// to `out` in order, until done or `stop` resolves.
pub async fn run_numbers(
    cluster: &Cluster,
    args: &ClientArgs,
    out: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> Result<Summary, AppError> {
    args.validate()?;
    let options = Arc::new(CallOptions::default().with_timeout(args.call_timeout));
    let count = args.count as i64;
    let numbers: Box<dyn Iterator<Item = i64> + Send> = if args.forever {
        Box::new((1..=count).cycle())
    } else {
        Box::new(1..=count)
    };
    let ticker = args.rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let paced = futures::stream::unfold((numbers, ticker), |(mut it, mut ticker)| async move {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        it.next().map(|n| (n, (it, ticker)))
    });
    let identity: Arc<str> = Arc::from(args.identity.as_str());
    let spread = args.identities;
    // Boxed as a `Send` stream: naming the type here lets the compiler prove the
    // caller's future `Send` (it cannot see through these closures on its own).
    let results: futures::stream::BoxStream<'_, Outcome> = paced
        .map(|n| {
            let id = match spread {
                Some(k) => Arc::from(format!("grain{}", (n - 1) % i64::from(k) + 1)),
                None => identity.clone(),
            };
            one_number(cluster.clone(), id, n, options.clone())
        })
        .buffered(args.concurrency)
        .boxed();
    let mut results = results;
    tokio::pin!(stop);

    let mut summary = Summary::default();
    let mut progress = Progress::new(args);
    let started = Instant::now();
    let mut last_flush = Instant::now();
    let mut pending: Vec<u8> = Vec::with_capacity(CHUNK + 256);
    loop {
        let outcome = tokio::select! {
            biased;
            _ = &mut stop => {
                summary.interrupted = true;
                break;
            }
            o = results.next() => match o {
                Some(o) => o,
                None => break,
            },
        };
        summary.issued += 1;
        if let Some(d) = outcome.fizz {
            summary.fizz.record(d);
        }
        if let Some(d) = outcome.buzz {
            summary.buzz.record(d);
        }
        match outcome.result {
            Ok(message) => {
                summary.answered += 1;
                let line = match args.format {
                    Format::Text if message.is_empty() => writeln!(pending, "{}", outcome.number),
                    Format::Text => writeln!(pending, "{message}"),
                    Format::Json => {
                        let line = JsonLine {
                            number: outcome.number,
                            message: &message,
                        };
                        match serde_json::to_string(&line) {
                            Ok(j) => writeln!(pending, "{j}"),
                            Err(e) => {
                                return Err(AppError::Failed(format!("cannot encode JSON: {e}")));
                            }
                        }
                    }
                };
                if let Err(e) = line {
                    return Err(AppError::Failed(format!("cannot format a line: {e}")));
                }
                // Written in chunks, at least every 100 ms so a reader (`tail -f`, a
                // test, a terminal) sees progress.
                if pending.len() >= CHUNK || last_flush.elapsed() >= Duration::from_millis(100) {
                    last_flush = Instant::now();
                    if let Err(e) = write_out(out, &pending) {
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            // The reader went away (`| head`): stop quietly, like other
                            // Unix filters, and say so in the summary.
                            summary.output_closed = true;
                            break;
                        }
                        return Err(AppError::Failed(format!("cannot write to stdout: {e}")));
                    }
                    pending.clear();
                }
            }
            Err(reason) => {
                summary.failed += 1;
                if summary.failed <= 10 || summary.failed % 1000 == 0 {
                    tracing::warn!(failed = summary.failed, "{reason}");
                }
                summary.first_failure.get_or_insert(reason);
            }
        }
        progress.update(summary.issued);
    }
    progress.finish();
    if !args.forever && !summary.interrupted && !summary.output_closed {
        summary.issued = args.count;
    }
    summary.elapsed = started.elapsed();
    if !summary.output_closed {
        match write_out(out, &pending) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => summary.output_closed = true,
            Err(e) => return Err(AppError::Failed(format!("cannot write to stdout: {e}"))),
            Ok(()) => {}
        }
    }
    Ok(summary)
}

/// How many bytes of output are gathered before they are written.
const CHUNK: usize = 64 << 10;

/// Writes and flushes `bytes`. On a multi-threaded runtime the (blocking) write runs
/// with `block_in_place`, so a slow or paused reader (`| less`) stalls only this task:
/// links, timers and the membership heartbeat go on, even with one worker.
fn write_out(out: &mut (dyn Write + Send), bytes: &[u8]) -> std::io::Result<()> {
    let mut write = || {
        out.write_all(bytes)?;
        out.flush()
    };
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(write),
        _ => write(),
    }
}

/// Turns a finished run into the command's result: every number answered is success;
/// anything else is a one-line reason.
pub fn verdict(args: &ClientArgs, summary: &Summary) -> Result<(), AppError> {
    if summary.failed > 0 {
        let unanswered = summary.issued.saturating_sub(summary.answered);
        return Err(AppError::Failed(format!(
            "{unanswered} of {} numbers unanswered; first failure: {}",
            summary.issued,
            summary.first_failure.as_deref().unwrap_or("unknown")
        )));
    }
    if summary.interrupted && !args.forever {
        return Err(AppError::Interrupted(format!(
            "{} of {} numbers answered",
            summary.answered, args.count
        )));
    }
    Ok(())
}

/// The whole `client` command: join, wait for both kinds, run, leave.
pub async fn run_client(
    command: &ClientCommand,
    setup: &NodeSetup,
    out: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> Result<Summary, AppError> {
    command.run.validate()?;
    let config = command.common.node_config(Role::Client, setup)?;
    let membership = command.common.membership(Role::Client)?;
    let consul = membership.address().to_string();
    let node = Node::start(config, vec![], Arc::new(membership))
        .await
        .map_err(start_error)?;
    let cluster = node.cluster();
    tokio::pin!(stop);
    let kinds = [FizzServiceKind::NAME, BuzzServiceKind::NAME];
    tracing::info!(member = %node.member().id, %consul, "client waiting for {} and {}", kinds[0], kinds[1]);
    let waited = tokio::select! {
        w = cluster.wait_for_kinds(&kinds, command.run.wait_timeout) => w,
        _ = &mut stop => {
            node.shutdown().await;
            return Err(AppError::Interrupted("while waiting for the fizz and buzz nodes".into()));
        }
    };
    if let Err(missing) = waited {
        node.shutdown().await;
        return Err(AppError::Failed(format!(
            "no member hosting {} joined within {:?} (cluster {}, Consul {consul})",
            missing.missing.join(" or "),
            command.run.wait_timeout,
            command.common.cluster
        )));
    }
    let summary = run_numbers(&cluster, &command.run, out, stop).await;
    node.shutdown().await;
    summary
}
