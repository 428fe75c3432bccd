//! What a run did: the counts and latencies, the closing report on stderr, and the
//! verdict that becomes the exit status.
//!
//! The report's lines, in order (the last two are stable, for tools and tests to parse;
//! each starts its line, with no indent):
//!
//! ```text
//! fizzbuzz client: <answered> of <issued> numbers answered in <s.ss> s (<n>/s), <failed> failed[, interrupted | , stopped: stdout was closed]
//!   SayFizz  p50 <ms> ms  p90 <ms> ms  p99 <ms> ms  max <ms> ms  (<n> calls)
//!   SayBuzz  p50 <ms> ms  p90 <ms> ms  p99 <ms> ms  max <ms> ms  (<n> calls)
//! retried: <total>[ (<reason> <n>, <reason> <n>, …)]
//! longest stall: <seconds, 3 decimals> s
//! ```
//!
//! - `retried:` counts the retries of this client's calls (a call sent again twice
//!   counts 2), from [`grain::Cluster::retries`]: the total, then each reason with a
//!   non-zero count, in grain's fixed order (`no_member`, `wrong_owner`,
//!   `shutting_down`, `not_delivered`, `maybe_ran`, `attempt_timeout`), e.g.
//!   `retried: 17 (not_delivered 5, maybe_ran 12)`; with none, `retried: 0`.
//! - `longest stall:` is the longest time in which no number was answered, from the
//!   first number sent until the last answered: the largest gap between consecutive
//!   answers (in the order they are printed), or from the start to the first answer;
//!   with no answer at all, the whole run. Always seconds, e.g. `longest stall: 0.004 s`.

use std::fmt::Write as _;
use std::time::Duration;

use grain::RetryCounts;

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
    /// The retries of the run's calls, by reason.
    pub retries: RetryCounts,
    /// The longest time no number was answered (see the module docs).
    pub longest_stall: Duration,
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
        s.push_str(&retry_line(self.retries.by_reason()));
        s.push('\n');
        s.push_str(&stall_line(self.longest_stall));
        s.push('\n');
        s
    }
}

/// `retried: <total>[ (<reason> <n>, …)]`, naming only the reasons with retries.
fn retry_line(by_reason: &[(&str, u64)]) -> String {
    let total: u64 = by_reason.iter().map(|(_, n)| n).sum();
    let mut line = format!("retried: {total}");
    let mut reasons = by_reason.iter().filter(|(_, n)| *n > 0);
    if let Some((reason, n)) = reasons.next() {
        // Writing to a String cannot fail.
        let _ = write!(line, " ({reason} {n}");
        for (reason, n) in reasons {
            let _ = write!(line, ", {reason} {n}");
        }
        line.push(')');
    }
    line
}

/// `longest stall: <seconds, 3 decimals> s`.
fn stall_line(stall: Duration) -> String {
    format!("longest stall: {:.3} s", stall.as_secs_f64())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_line_has_the_total_and_each_reason_with_retries() {
        let none = [("no_member", 0), ("maybe_ran", 0)];
        assert_eq!(retry_line(&none), "retried: 0");
        assert_eq!(retry_line(&[]), "retried: 0");
        let some = [
            ("no_member", 0),
            ("not_delivered", 5),
            ("maybe_ran", 12),
            ("attempt_timeout", 0),
        ];
        assert_eq!(
            retry_line(&some),
            "retried: 17 (not_delivered 5, maybe_ran 12)"
        );
        assert_eq!(
            retry_line(&[("wrong_owner", 1)]),
            "retried: 1 (wrong_owner 1)"
        );
    }

    #[test]
    fn the_stall_line_is_seconds_with_three_decimals() {
        assert_eq!(stall_line(Duration::ZERO), "longest stall: 0.000 s");
        assert_eq!(
            stall_line(Duration::from_micros(800)),
            "longest stall: 0.001 s"
        );
        assert_eq!(
            stall_line(Duration::from_millis(1234)),
            "longest stall: 1.234 s"
        );
    }

    #[test]
    fn the_report_keeps_its_first_lines_and_ends_with_retries_and_the_stall() {
        let summary = Summary {
            answered: 15,
            issued: 15,
            elapsed: Duration::from_millis(20),
            longest_stall: Duration::from_millis(3),
            ..Summary::default()
        };
        let report = summary.report();
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), 5, "{report}");
        assert!(
            lines[0].starts_with("fizzbuzz client: 15 of 15 numbers answered in 0.02 s"),
            "{report}"
        );
        assert!(lines[1].starts_with("  SayFizz  p50"), "{report}");
        assert!(lines[2].starts_with("  SayBuzz  p50"), "{report}");
        assert_eq!(lines[3], "retried: 0");
        assert_eq!(lines[4], "longest stall: 0.003 s");
    }
}
