//! Per-call options: deadline, per-attempt timeout, retries and backoff.
//!
//! Options are plain values: a caller passes its own [`CallOptions`] to a call, and the
//! cluster's defaults are never changed by it.

use std::collections::HashMap;
use std::time::Duration;

/// How a call is made. `Default` gives: 5 s deadline, no separate attempt timeout, up to
/// 5 attempts, backoff 10 ms doubling to at most 250 ms, jittered, not idempotent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallOptions {
    /// The overall deadline, across all attempts.
    pub timeout: Duration,
    /// The limit of one attempt; `None` means the remaining overall time.
    pub attempt_timeout: Option<Duration>,
    /// How many attempts at most (at least 1). A call is retried only when it provably
    /// did not run (see [`crate::CallError::provably_not_run`]).
    pub max_attempts: u32,
    /// The pause between attempts.
    pub backoff: Backoff,
    /// Headers that travel with this call (e.g. `traceparent`).
    pub headers: HashMap<String, String>,
    /// The method may run more than once without harm (protobuf's
    /// `idempotency_level = NO_SIDE_EFFECTS` or `IDEMPOTENT`; generated clients say so
    /// for such methods whatever this field holds). Such a call is also retried after
    /// an attempt that *may* have run: its link broke or the owner left after it was
    /// written, or the attempt timed out before the overall deadline.
    pub idempotent: bool,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            attempt_timeout: None,
            max_attempts: 5,
            backoff: Backoff::default(),
            headers: HashMap::new(),
            idempotent: false,
        }
    }
}

impl CallOptions {
    /// These options with an overall deadline of `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// These options with a per-attempt timeout.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// These options with at most `n` attempts (at least 1).
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// These options for a method that may run more than once without harm (see
    /// [`CallOptions::idempotent`]).
    pub fn with_idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// These options with one more header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Checks the options; the message names the wrong field.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout.is_zero() {
            return Err("call timeout must be greater than zero".into());
        }
        if self.attempt_timeout.is_some_and(|t| t.is_zero()) {
            return Err("call attempt_timeout must be greater than zero".into());
        }
        if self.max_attempts == 0 {
            return Err("call max_attempts must be at least 1".into());
        }
        self.backoff.validate()
    }
}

/// Exponential backoff with jitter: before retry `n` wait a random duration in
/// `[c/2, c]` where `c = min(max, initial * multiplier^(n-1))`, and at least 1 ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first ceiling.
    pub initial: Duration,
    /// The largest ceiling.
    pub max: Duration,
    /// How much the ceiling grows per attempt.
    pub multiplier: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(250),
            multiplier: 2,
        }
    }
}

impl Backoff {
    /// Checks the fields; the message names the wrong one.
    pub fn validate(&self) -> Result<(), String> {
        if self.initial.is_zero() {
            return Err("backoff initial must be greater than zero".into());
        }
        if self.max < self.initial {
            return Err("backoff max must be at least backoff initial".into());
        }
        if self.multiplier == 0 {
            return Err("backoff multiplier must be at least 1".into());
        }
        Ok(())
    }

    /// The ceiling before retry number `retry` (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = self
            .multiplier
            .checked_pow(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A jittered pause before retry number `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let micros = ceiling.as_micros().min(u64::MAX as u128) as u64;
        let jittered = rand::random_range(micros / 2..=micros);
        Duration::from_micros(jittered).max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_ceiling_grows_exponentially_up_to_max() {
        let b = Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(100),
            multiplier: 2,
        };
        let got: Vec<u128> = (1..=7).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(got, vec![5, 10, 20, 40, 80, 100, 100]);
        assert_eq!(b.ceiling(1000), Duration::from_millis(100));
    }

    #[test]
    fn backoff_delay_is_jittered_between_half_the_ceiling_and_the_ceiling() {
        let b = Backoff::default();
        let delays: Vec<Duration> = (0..200).map(|_| b.delay(3)).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_millis(1) && *d <= b.ceiling(3))
        );
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 10, "delays are not jittered: {distinct:?}");
    }

    #[test]
    fn per_call_options_leave_the_defaults_alone() {
        let defaults = CallOptions::default();
        let mine = defaults
            .clone()
            .with_timeout(Duration::from_millis(1))
            .with_max_attempts(9);
        assert_eq!(defaults, CallOptions::default());
        assert_ne!(mine, defaults);
    }

    #[test]
    fn validate_names_the_wrong_field() {
        let e = CallOptions::default()
            .with_timeout(Duration::ZERO)
            .validate();
        assert!(e.is_err_and(|m| m.contains("timeout")));
        let o = CallOptions {
            max_attempts: 0,
            ..CallOptions::default()
        };
        assert!(o.validate().is_err_and(|m| m.contains("max_attempts")));
    }
}
