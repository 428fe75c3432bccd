//! What a run did: the counts and latencies, the closing report on stderr, and the
//! verdict that becomes the exit status.

use std::time::Duration;

use super::options::ClientArgs;
use crate::AppError;
use crate::stats::Histogram;

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
            let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
            s.push_str(&format!(
                "  {name}  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} calls)\n",
                ms(h.quantile(0.5)),
                ms(h.quantile(0.9)),
                ms(h.quantile(0.99)),
                ms(h.max()),
                h.count()
            ));
        }
        s
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
