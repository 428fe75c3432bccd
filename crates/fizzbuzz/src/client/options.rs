//! The client's options (`client`, and `fizzbuzz up` which passes them on) and their
//! checks.

use std::time::Duration;

use crate::AppError;
use crate::config::{CommonArgs, parse_duration};

/// How results are printed on stdout.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One line per number: `1`, `2`, `Fizz`, …
    Text,
    /// One JSON object per line: `{"number":1,"message":""}`.
    Json,
}

/// `FIZZBUZZ_COUNT`: how many numbers (`--count`).
pub const ENV_COUNT: &str = "FIZZBUZZ_COUNT";
/// Numbers in flight when `--concurrency` is not given.
pub(crate) const DEFAULT_CONCURRENCY: usize = 256;

/// `FIZZBUZZ_CONCURRENCY`: numbers in flight at once (`--concurrency`).
pub const ENV_CONCURRENCY: &str = "FIZZBUZZ_CONCURRENCY";
/// `FIZZBUZZ_IDENTITY`: the grain identity called (`--identity`).
pub const ENV_IDENTITY: &str = "FIZZBUZZ_IDENTITY";
/// `FIZZBUZZ_IDENTITIES`: spread over this many identities (`--identities`).
pub const ENV_IDENTITIES: &str = "FIZZBUZZ_IDENTITIES";
/// `FIZZBUZZ_FORMAT`: `text` or `json` (`--format`).
pub const ENV_FORMAT: &str = "FIZZBUZZ_FORMAT";
/// `FIZZBUZZ_WAIT_TIMEOUT`: how long to wait for both kinds (`--wait-timeout`).
pub const ENV_WAIT_TIMEOUT: &str = "FIZZBUZZ_WAIT_TIMEOUT";
/// `FIZZBUZZ_CALL_TIMEOUT`: the deadline of one call (`--call-timeout`).
pub const ENV_CALL_TIMEOUT: &str = "FIZZBUZZ_CALL_TIMEOUT";
/// `FIZZBUZZ_FOREVER`: `true` to repeat until stopped (`--forever`).
pub const ENV_FOREVER: &str = "FIZZBUZZ_FOREVER";
/// `FIZZBUZZ_RATE`: at most this many numbers per second (`--rate`).
pub const ENV_RATE: &str = "FIZZBUZZ_RATE";

/// What the client does.
#[derive(clap::Args, Clone, Debug)]
pub struct ClientArgs {
    /// How many numbers, 1 to N.
    #[arg(long, env = ENV_COUNT, default_value_t = 100)]
    pub count: u64,
    /// How many numbers in flight at once (results are still printed in order). The
    /// default, 256, keeps the links' batches full (the fastest setting `fizzbuzz
    /// bench` found); 1 measures one call's latency.
    #[arg(long, env = ENV_CONCURRENCY, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// The grain identity to call.
    #[arg(long, env = ENV_IDENTITY, default_value = "grain1")]
    pub identity: String,
    /// Spread the numbers over this many identities (grain1 … grainN) instead of one.
    #[arg(long, env = ENV_IDENTITIES)]
    pub identities: Option<u32>,
    /// Output format on stdout.
    #[arg(long, env = ENV_FORMAT, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// How long to wait for members hosting FizzService and BuzzService.
    #[arg(long, env = ENV_WAIT_TIMEOUT, default_value = "30s", value_parser = parse_duration)]
    pub wait_timeout: Duration,
    /// The deadline of one call (retries included).
    #[arg(long, env = ENV_CALL_TIMEOUT, default_value = "5s", value_parser = parse_duration)]
    pub call_timeout: Duration,
    /// Keep going (1..=count, again and again) until stopped: live data for dashboards.
    #[arg(long, env = ENV_FOREVER)]
    pub forever: bool,
    /// At most this many numbers per second (default: as fast as possible).
    #[arg(long, env = ENV_RATE)]
    pub rate: Option<f64>,
}

impl Default for ClientArgs {
    fn default() -> Self {
        Self {
            count: 100,
            concurrency: DEFAULT_CONCURRENCY,
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

    /// These options as the environment variables their flags read (for `fizzbuzz up`
    /// to pass on); `None`: the variable is to be unset.
    pub fn to_env(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            (ENV_COUNT, Some(self.count.to_string())),
            (ENV_CONCURRENCY, Some(self.concurrency.to_string())),
            (ENV_IDENTITY, Some(self.identity.clone())),
            (ENV_IDENTITIES, self.identities.map(|n| n.to_string())),
            (
                ENV_FORMAT,
                Some(
                    match self.format {
                        Format::Text => "text",
                        Format::Json => "json",
                    }
                    .into(),
                ),
            ),
            (ENV_WAIT_TIMEOUT, Some(millis(self.wait_timeout))),
            (ENV_CALL_TIMEOUT, Some(millis(self.call_timeout))),
            (ENV_FOREVER, Some(self.forever.to_string())),
            (ENV_RATE, self.rate.map(|r| r.to_string())),
        ]
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
