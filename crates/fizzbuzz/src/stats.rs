//! Latency percentiles in bounded memory: a thin wrapper over `hdrhistogram` that
//! records durations in microseconds, from 1 µs to an hour, to 3 significant digits;
//! and the longest gap between events ([`LongestGap`]), for the longest stall.

use std::time::Duration;

use tokio::time::Instant;

/// The longest latency told apart from longer ones; longer samples count as this.
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// Counts durations; memory is fixed however many samples arrive.
#[derive(Clone, Default)]
pub struct Histogram {
    /// Made at the first sample (no samples, no memory).
    inner: Option<hdrhistogram::Histogram<u64>>,
}

impl Histogram {
    /// Adds one sample.
    pub fn record(&mut self, d: Duration) {
        if self.inner.is_none() {
            // The bounds are constants that hdrhistogram accepts (see the tests).
            self.inner = hdrhistogram::Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).ok();
        }
        if let Some(h) = &mut self.inner {
            h.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        }
    }

    /// How many samples.
    pub fn count(&self) -> u64 {
        self.inner.as_ref().map_or(0, |h| h.len())
    }

    /// The `q` quantile (0.0–1.0), within 0.1 %; `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let h = self.inner.as_ref().filter(|h| !h.is_empty())?;
        Some(Duration::from_micros(
            h.value_at_quantile(q.clamp(0.0, 1.0)),
        ))
    }

    /// The longest sample, within 0.1 %; `None` without samples.
    pub fn max(&self) -> Option<Duration> {
        let h = self.inner.as_ref().filter(|h| !h.is_empty())?;
        Some(Duration::from_micros(h.max()))
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("p50", &self.quantile(0.5))
            .field("max", &self.max())
            .finish()
    }
}

/// The longest time between consecutive events, and from a start to the first event:
/// one subtraction and one compare per event, no memory per event.
#[derive(Clone, Copy, Debug)]
pub struct LongestGap {
    /// The start, then the latest event.
    last: Instant,
    /// The longest gap so far.
    longest: Duration,
}

impl LongestGap {
    /// Starts measuring at `start` (no events yet).
    pub fn new(start: Instant) -> Self {
        Self {
            last: start,
            longest: Duration::ZERO,
        }
    }

    /// An event at `at`; an `at` before the latest event counts as a zero gap.
    pub fn event(&mut self, at: Instant) {
        let gap = at.saturating_duration_since(self.last);
        if gap > self.longest {
            self.longest = gap;
        }
        self.last = self.last.max(at);
    }

    /// The longest gap so far (zero before the first event).
    pub fn longest(&self) -> Duration {
        self.longest
    }

    /// The longest gap, counting the time from the latest event (or the start) to `end`
    /// as one too: for a run that ends without events, or stops after its last one.
    pub fn longest_until(&self, end: Instant) -> Duration {
        self.longest.max(end.saturating_duration_since(self.last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_two_percent() {
        let mut h = Histogram::default();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, want) in [(0.5, 5_000.0), (0.99, 9_900.0), (1.0, 10_000.0)] {
            let got = h.quantile(q).map_or(0.0, |d| d.as_secs_f64() * 1e6);
            assert!((got - want).abs() / want <= 0.021, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn the_bounds_are_accepted_and_long_samples_saturate() {
        let mut h = Histogram::default();
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(10 * 3600));
        assert_eq!(h.count(), 2);
        let max = h.max().map_or(0.0, |d| d.as_secs_f64());
        assert!((max - 3600.0).abs() / 3600.0 <= 0.001, "max {max} s");
        assert_eq!(Histogram::default().max(), None);
    }

    #[test]
    fn the_longest_gap_is_the_largest_between_events_or_from_the_start() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut g = LongestGap::new(t0);
        assert_eq!(g.longest(), Duration::ZERO);
        // From the start to the first event: 30 ms.
        g.event(at(30));
        assert_eq!(g.longest(), Duration::from_millis(30));
        // Gaps of 10, 250 and 5 ms: the 250 wins.
        for ms in [40, 290, 295] {
            g.event(at(ms));
        }
        assert_eq!(g.longest(), Duration::from_millis(250));
        // An event out of order is a zero gap and does not move the clock back.
        g.event(at(100));
        g.event(at(300));
        assert_eq!(g.longest(), Duration::from_millis(250));
        // The time after the last event counts only when asked for.
        assert_eq!(g.longest_until(at(400)), Duration::from_millis(250));
        assert_eq!(g.longest_until(at(600)), Duration::from_millis(300));
        // No events at all: the whole time is the gap.
        assert_eq!(
            LongestGap::new(t0).longest_until(at(70)),
            Duration::from_millis(70)
        );
    }
}
