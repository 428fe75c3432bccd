//! Latency percentiles in bounded memory: a thin wrapper over `hdrhistogram` that
//! records durations in microseconds, from 1 µs to an hour, to 3 significant digits.

use std::time::Duration;

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
}
