//! A progress bar on stderr (`indicatif`), with the rate and the time left, for long
//! runs whose stdout is not a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::options::ClientArgs;

/// How the bar reads: `[#####>....] 1234/100000  5678/s  ETA 17s`.
const TEMPLATE: &str = "[{bar:30}] {pos}/{len}  {rate}  ETA {eta}";

/// The progress bar of one run; hidden unless it helps.
pub(super) struct Progress(ProgressBar);

impl Progress {
    /// Drawn for a counted run of 1000 numbers or more, when stderr is a terminal and
    /// stdout is not.
    pub(super) fn new(args: &ClientArgs) -> Self {
        let enabled = !args.forever
            && args.count >= 1000
            && !std::io::stdout().is_terminal()
            && std::io::stderr().is_terminal();
        if !enabled {
            return Self(ProgressBar::hidden());
        }
        let bar =
            ProgressBar::with_draw_target(Some(args.count), ProgressDrawTarget::stderr_with_hz(5));
        match ProgressStyle::with_template(TEMPLATE) {
            Ok(style) => bar.set_style(
                style
                    .progress_chars("#>.")
                    // Numbers per second, whole (indicatif's `per_sec` shows 4 decimals).
                    .with_key(
                        "rate",
                        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = write!(w, "{:.0}/s", state.per_sec());
                        },
                    ),
            ),
            Err(e) => tracing::debug!("progress bar template: {e}"),
        }
        Self(bar)
    }

    /// `done` numbers are through.
    pub(super) fn update(&self, done: u64) {
        self.0.set_position(done);
    }

    /// Clears the bar.
    pub(super) fn finish(&self) {
        self.0.finish_and_clear();
    }
}
