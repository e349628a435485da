//! Summaries of latency samples: percentiles by nearest rank, and medians
//! of per-round figures (the machines are noisy, so every comparison is
//! reported as the median of rounds that alternate its sides).

use std::time::Duration;

/// A set of latency samples, sorted, in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    sorted: Vec<u64>,
}

impl Samples {
    /// Samples from durations.
    pub fn from_durations(durations: impl IntoIterator<Item = Duration>) -> Self {
        Self::from_micros(
            durations
                .into_iter()
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }

    /// Samples from microsecond values.
    pub fn from_micros(micros: impl IntoIterator<Item = u64>) -> Self {
        let mut sorted: Vec<u64> = micros.into_iter().collect();
        sorted.sort_unstable();
        Self { sorted }
    }

    /// Adds more samples.
    pub fn extend(&mut self, other: &Samples) {
        self.sorted.extend_from_slice(&other.sorted);
        self.sorted.sort_unstable();
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The sorted values in microseconds.
    pub fn micros(&self) -> &[u64] {
        &self.sorted
    }

    /// The `p`-th percentile (0..=100) by nearest rank, in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let n = self.sorted.len();
        // Nearest rank: ceil(p/100 * n), 1-based.
        let rank = ((p / 100.0) * n as f64).ceil().clamp(1.0, n as f64) as usize;
        self.sorted[rank - 1] as f64 / 1000.0
    }

    /// Median in milliseconds.
    pub fn p50_ms(&self) -> f64 {
        self.percentile_ms(50.0)
    }

    /// 99th percentile in milliseconds.
    pub fn p99_ms(&self) -> f64 {
        self.percentile_ms(99.0)
    }

    /// Mean in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        self.sorted.iter().map(|&v| v as f64).sum::<f64>() / self.sorted.len() as f64 / 1000.0
    }
}

/// The median of some figures (NaN for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let s = Samples::from_micros((1..=100).map(|v| v * 1000));
        assert_eq!(s.p50_ms(), 50.0);
        assert_eq!(s.p99_ms(), 99.0);
        assert_eq!(s.percentile_ms(100.0), 100.0);
        assert_eq!(s.percentile_ms(0.0), 1.0);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
