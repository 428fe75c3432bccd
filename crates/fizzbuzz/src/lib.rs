//! # fizzbuzz — the FizzBuzz cluster
//!
//! Three kinds of node, each its own process, finding each other through Consul and
//! calling each other over gRPC:
//!
//! - `fizz` hosts the `FizzService` grain (`"Fizz"` when `n % 3 == 0`);
//! - `buzz` hosts the `BuzzService` grain (appends `"Buzz"` when `n % 5 == 0`);
//! - `client` hosts nothing: it waits for both kinds, then for `n` in `1..=count` calls
//!   `SayFizz(n)`, passes the answer to `SayBuzz(n, message)` and prints the result in
//!   order.
//!
//! `fizzbuzz up` runs the whole thing from one command (a dev agent plus the three
//! nodes as child processes); `fizzbuzz agent` runs the Consul-compatible dev agent.
//! Binaries are thin: everything here is a library function tests call.

/// Every binary of this crate allocates with mimalloc: a grain call allocates a few
/// small buffers on one thread and frees them on another, where glibc's allocator
/// spent a sixth of the cluster's CPU (a `perf` profile of `fizzbuzz up`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod bench;
pub mod certs;
pub mod cli;
pub mod client;
pub mod config;
pub mod consul_tls;
pub mod grains;
pub mod health;
pub mod launcher;
pub mod nodes;
pub mod process;
pub mod stats;

/// The generated contracts of `proto/fizzbuzz/v1/fizzbuzz.proto`.
pub mod proto {
    grain::include_grains!("fizzbuzz.v1");
}

/// Why a command failed, and its exit status.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A bad option or setting; the message names it. Exit status 64.
    #[error("{0}")]
    Usage(String),
    /// The work failed; the message says what and where. Exit status 1.
    #[error("{0}")]
    Failed(String),
    /// Interrupted by a signal before the work was done. Exit status 130.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

impl AppError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Usage(_) => exit::USAGE,
            AppError::Failed(_) => exit::FAILURE,
            AppError::Interrupted(_) => exit::INTERRUPTED,
        }
    }
}

/// A node that could not start: a bad setting is a usage error, a busy port is not.
pub(crate) fn start_error(e: grain::StartError) -> AppError {
    match e {
        grain::StartError::Config(_) => AppError::Usage(e.to_string()),
        other => AppError::Failed(other.to_string()),
    }
}

/// Exit statuses.
pub mod exit {
    /// Everything worked.
    pub const OK: u8 = 0;
    /// The work failed (numbers unanswered, a kind missing, a node died).
    pub const FAILURE: u8 = 1;
    /// A bad option or configuration (BSD `EX_USAGE`).
    pub const USAGE: u8 = 64;
    /// Stopped by SIGINT/SIGTERM before the work was done (128 + SIGINT).
    pub const INTERRUPTED: u8 = 130;
}

/// The canonical FizzBuzz line for `n`: `Fizz`, `Buzz`, `FizzBuzz` or the number.
pub fn reference_line(n: i64) -> String {
    match (n % 3 == 0, n % 5 == 0) {
        (true, true) => "FizzBuzz".into(),
        (true, false) => "Fizz".into(),
        (false, true) => "Buzz".into(),
        (false, false) => n.to_string(),
    }
}
