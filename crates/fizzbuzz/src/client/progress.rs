//! A progress line on stderr, for long runs whose stdout is not a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use tokio::time::Instant;

use super::options::ClientArgs;

/// The progress line of one run (drawn only when it helps).
pub(super) struct Progress {
    total: u64,
    enabled: bool,
    last: Instant,
}

impl Progress {
    /// Drawn for a counted run of 1000 numbers or more, when stderr is a terminal and
    /// stdout is not.
    pub(super) fn new(args: &ClientArgs) -> Self {
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

    /// `done` numbers are through.
    pub(super) fn update(&mut self, done: u64) {
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

    /// Clears the line.
    pub(super) fn finish(&self) {
        if self.enabled {
            eprint!("\r{}\r", " ".repeat(60));
        }
    }
}
