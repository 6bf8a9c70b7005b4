//! Latency percentiles and throughput from recorded samples.

use std::time::Duration;

/// Summary of one measured run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Successful requests.
    pub ok: usize,
    /// Failed requests.
    pub errors: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Sorted latencies of successful requests.
    pub latencies: Vec<Duration>,
}

impl Summary {
    /// Builds a summary; sorts the latencies.
    pub fn new(mut latencies: Vec<Duration>, errors: usize, elapsed: Duration) -> Self {
        latencies.sort_unstable();
        Summary {
            ok: latencies.len(),
            errors,
            elapsed,
            latencies,
        }
    }

    /// The q-quantile (0..=1) latency, nearest-rank.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank =
            ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1]
    }

    /// The slowest successful request.
    pub fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or(Duration::ZERO)
    }

    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.ok as f64 / s } else { 0.0 }
    }
}

/// Formats a duration in microseconds.
pub fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let s = Summary::new(
            (1..=100).map(Duration::from_micros).collect(),
            0,
            Duration::from_secs(1),
        );
        assert_eq!(s.quantile(0.5), Duration::from_micros(50));
        assert_eq!(s.quantile(0.99), Duration::from_micros(99));
        assert_eq!(s.quantile(1.0), Duration::from_micros(100));
        assert_eq!(s.throughput(), 100.0);
        assert_eq!(Summary::default().quantile(0.5), Duration::ZERO);
    }
}
