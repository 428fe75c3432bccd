//! What a scenario checks and prints: the output against the canonical FizzBuzz, the
//! client's summary lines, and a list of failed checks reported all at once (so a failing
//! scenario still prints every figure).

use std::time::Duration;

/// The first line of `text` that differs from the canonical FizzBuzz for 1..=count, or
/// a missing or extra line; `None` when it is exactly the reference.
pub(crate) fn first_difference(text: &str, count: u64) -> Option<String> {
    let mut n = 0u64;
    for line in text.lines() {
        n += 1;
        if n > count {
            return Some(format!("line {n} is extra: {line:?} (want {count} lines)"));
        }
        let want = crate::common::reference(n);
        if line != want {
            return Some(format!("line {n} is {line:?}, want {want:?}"));
        }
    }
    (n < count).then(|| format!("only {n} lines, want {count}"))
}

/// The client's closing summary (stderr), as far as it has the lines.
#[derive(Debug, Default)]
pub(crate) struct ClientSummary {
    /// `fizzbuzz client: … numbers answered …, N failed`.
    pub(crate) headline: Option<String>,
    /// N in `…, N failed`.
    pub(crate) failed: Option<u64>,
    /// `longest stall: <seconds> s`.
    pub(crate) longest_stall: Option<Duration>,
    /// `retried: <n> (<reason> <n>, …)`: the total and the counts by reason.
    pub(crate) retried: Option<(u64, Vec<(String, u64)>)>,
    /// The `error: …` line, when the client failed.
    pub(crate) error: Option<String>,
}

impl ClientSummary {
    /// Parses the client's stderr.
    pub(crate) fn parse(stderr: &str) -> Self {
        let mut s = Self::default();
        for line in stderr.lines() {
            let line = line.trim();
            if line.starts_with("fizzbuzz client:") {
                s.headline = Some(line.to_string());
                s.failed = line
                    .strip_suffix(" failed")
                    .or_else(|| line.split(" failed,").next())
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|n| n.parse().ok());
            } else if let Some(rest) = line.strip_prefix("longest stall:") {
                // `longest stall: 0.250 s`, perhaps followed by more words.
                s.longest_stall = rest
                    .split_whitespace()
                    .next()
                    .map(|v| v.trim_end_matches('s'))
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .map(Duration::from_secs_f64);
            } else if let Some(rest) = line.strip_prefix("retried:") {
                s.retried = parse_retried(rest.trim());
            } else if line.starts_with("error:") {
                s.error = Some(line.to_string());
            }
        }
        s
    }

    /// Retries for `reason` (0 when the line lists none).
    pub(crate) fn retried_for(&self, reason: &str) -> Option<u64> {
        let (_, by) = self.retried.as_ref()?;
        Some(by.iter().find(|(r, _)| r == reason).map_or(0, |(_, n)| *n))
    }

    /// The figures, for the scenario's report.
    pub(crate) fn describe(&self) -> String {
        let stall = self
            .longest_stall
            .map_or("absent".into(), |d| format!("{:.3} s", d.as_secs_f64()));
        let retried = match &self.retried {
            None => "absent".into(),
            Some((n, by)) if by.is_empty() => n.to_string(),
            Some((n, by)) => {
                let by: Vec<String> = by.iter().map(|(r, n)| format!("{r} {n}")).collect();
                format!("{n} ({})", by.join(", "))
            }
        };
        format!(
            "client: {}\nclient: longest stall {stall}; retried {retried}{}",
            self.headline.as_deref().unwrap_or("(no summary line)"),
            self.error
                .as_deref()
                .map_or(String::new(), |e| format!("\nclient: {e}"))
        )
    }
}

/// `12 (wrong_owner 10, not_delivered 2)`, `0`, or `0 ()`.
fn parse_retried(text: &str) -> Option<(u64, Vec<(String, u64)>)> {
    let (total, rest) = match text.split_once('(') {
        Some((t, r)) => (t.trim(), r.trim_end().trim_end_matches(')')),
        None => (text.trim(), ""),
    };
    let total = total.parse().ok()?;
    let mut by = Vec::new();
    for item in rest.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (reason, n) = item.rsplit_once(' ')?;
        by.push((reason.trim().to_string(), n.trim().parse().ok()?));
    }
    Some((total, by))
}

/// The checks of one scenario: each failure is kept, and all are reported at the end.
#[derive(Debug)]
pub(crate) struct Checks {
    scenario: &'static str,
    failed: Vec<String>,
}

impl Checks {
    /// No check failed yet.
    pub(crate) fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            failed: Vec::new(),
        }
    }

    /// Records `message` as a failure unless `ok`.
    pub(crate) fn check(&mut self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            let m = message();
            println!("[{}] FAIL: {m}", self.scenario);
            self.failed.push(m);
        }
    }

    /// Prints a figure.
    pub(crate) fn figure(&self, text: &str) {
        for line in text.lines() {
            println!("[{}] {line}", self.scenario);
        }
    }

    /// True while no check failed.
    pub(crate) fn passed(&self) -> bool {
        self.failed.is_empty()
    }

    /// Panics with every failure, if any.
    pub(crate) fn finish(self) {
        if self.failed.is_empty() {
            println!("[{}] PASS", self.scenario);
            return;
        }
        panic!(
            "scenario {} failed {} check(s):\n- {}",
            self.scenario,
            self.failed.len(),
            self.failed.join("\n- ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_lines_parse() {
        let s = ClientSummary::parse(
            "fizzbuzz client: 10 of 12 numbers answered in 1.00 s (10/s), 2 failed\n\
             \x20 SayFizz  p50 0.10 ms\n\
             \x20 longest stall: 0.250 s (number 7)\n\
             \x20 retried: 7 (wrong_owner 5, not_delivered 2)\n\
             error: 2 of 12 numbers unanswered; first failure: x\n",
        );
        assert_eq!(s.failed, Some(2));
        assert_eq!(s.longest_stall, Some(Duration::from_millis(250)));
        assert_eq!(s.retried_for("wrong_owner"), Some(5));
        assert_eq!(s.retried_for("maybe_ran"), Some(0));
        assert!(s.error.is_some());
        let s = ClientSummary::parse(
            "fizzbuzz client: 1 of 1 numbers answered in 1.00 s (1/s), 0 failed, interrupted\nretried: 0\n",
        );
        assert_eq!(s.failed, Some(0));
        assert_eq!(s.retried, Some((0, vec![])));
        assert_eq!(s.longest_stall, None);
    }

    #[test]
    fn the_first_difference_is_named() {
        assert_eq!(first_difference("1\n2\nFizz\n", 3), None);
        assert!(first_difference("1\n2\n", 3).is_some_and(|d| d.contains("only 2")));
        assert!(first_difference("1\n3\nFizz\n", 3).is_some_and(|d| d.contains("line 2")));
        assert!(first_difference("1\n2\nFizz\n4\n", 3).is_some_and(|d| d.contains("extra")));
    }
}
