//! Latency percentiles in bounded memory: a log-bucketed histogram (2 % resolution).

use std::time::Duration;

/// Counts durations in buckets that grow by 2 %, from 1 µs to about 3 hours; memory is
/// fixed however many samples arrive.
#[derive(Clone, Debug)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

const GROWTH: f64 = 1.02;
const BUCKETS: usize = 1200;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            count: 0,
        }
    }
}

impl Histogram {
    fn bucket(d: Duration) -> usize {
        let micros = d.as_secs_f64() * 1e6;
        if micros <= 1.0 {
            return 0;
        }
        ((micros.ln() / GROWTH.ln()) as usize + 1).min(BUCKETS - 1)
    }

    fn upper(bucket: usize) -> Duration {
        Duration::from_secs_f64(GROWTH.powi(bucket as i32) / 1e6)
    }

    /// Adds one sample.
    pub fn record(&mut self, d: Duration) {
        self.buckets[Self::bucket(d)] += 1;
        self.count += 1;
    }

    /// How many samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0.0–1.0), within 2 %; `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::upper(i));
            }
        }
        Some(Self::upper(BUCKETS - 1))
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
}
