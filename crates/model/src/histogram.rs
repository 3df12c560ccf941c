//! A mergeable duration histogram with a bounded relative error.
//!
//! Durations fall into logarithmic bins: bin `i` holds durations in
//! `(γ^(i-1), γ^i]` seconds, with `γ = (1 + α) / (1 - α)` and `α` =
//! [`RELATIVE_ERROR`]. Every duration of a bin is within `α` of the bin's
//! representative value `2γ^i / (γ + 1)`, so a quantile read off merged bins
//! is within `α` of the exact one (see [`Histogram::quantile`]). Durations
//! under [`MIN_SECONDS`] share one bin whose value is 0. Bins merge by adding
//! counts, which is what the rollups do.

use std::collections::BTreeMap;

/// The relative error of every quantile the histogram answers: 1 %.
pub const RELATIVE_ERROR: f64 = 0.01;

/// Durations below this many seconds (1 ms) share the zero bin.
pub const MIN_SECONDS: f64 = 0.001;

/// The bin of durations under [`MIN_SECONDS`].
pub const ZERO_BIN: i32 = -100_000;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR)
}

/// The bin of a duration given in microseconds (negative counts as zero).
#[must_use]
pub fn duration_bin(micros: i64) -> i32 {
    let seconds = crate::approx_f64(micros) / 1e6;
    if seconds < MIN_SECONDS {
        return ZERO_BIN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the log of a duration in seconds over ln(gamma) is a few thousand at most"
    )]
    let bin = (seconds.ln() / gamma().ln()).ceil() as i32;
    bin
}

/// The value, in seconds, that stands for every duration of `bin`.
#[must_use]
pub fn bin_value(bin: i32) -> f64 {
    if bin == ZERO_BIN {
        return 0.0;
    }
    let g = gamma();
    2.0 * g.powi(bin) / (g + 1.0)
}

/// Durations of a set of remediations: counts per bin, plus the exact count
/// and sum (so the average is exact).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    bins: BTreeMap<i32, u64>,
    count: u64,
    sum_micros: i128,
}

impl Histogram {
    /// An empty histogram.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one duration, in microseconds.
    pub fn record(&mut self, micros: i64) {
        self.add_bin(duration_bin(micros), 1, i128::from(micros));
    }

    /// Adds `count` durations of one bin whose durations sum to `sum_micros`.
    pub fn add_bin(&mut self, bin: i32, count: u64, sum_micros: i128) {
        if count == 0 {
            return;
        }
        *self.bins.entry(bin).or_default() += count;
        self.count += count;
        self.sum_micros += sum_micros;
    }

    /// Adds every duration of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (&bin, &n) in &other.bins {
            *self.bins.entry(bin).or_default() += n;
        }
        self.count += other.count;
        self.sum_micros += other.sum_micros;
    }

    /// How many durations.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The exact mean, in seconds; `None` when empty.
    #[must_use]
    pub fn mean_seconds(&self) -> Option<f64> {
        (self.count > 0)
            .then(|| crate::approx_f64(self.sum_micros) / crate::approx_f64(self.count) / 1e6)
    }

    /// The value of the duration at 0-based `rank` in ascending order.
    fn value_at(&self, rank: u64) -> f64 {
        let mut seen = 0;
        for (&bin, &n) in &self.bins {
            seen += n;
            if rank < seen {
                return bin_value(bin);
            }
        }
        self.bins.keys().next_back().map_or(0.0, |&b| bin_value(b))
    }

    /// The `q`-quantile (0 ≤ q ≤ 1), in seconds, interpolated between
    /// neighbouring ranks the way SQL's `PERCENTILE_CONT` does; `None` when
    /// empty. Each neighbour is within [`RELATIVE_ERROR`] of the true value,
    /// so the interpolation is too.
    #[must_use]
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "float to index or count: the value is clamped to a valid range first, and counts stay far below 2^53"
    )]
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let position = q.clamp(0.0, 1.0) * (self.count - 1) as f64;
        let lower = position.floor();
        let fraction = position - lower;
        let low = self.value_at(lower as u64);
        if fraction == 0.0 {
            return Some(low);
        }
        let high = self.value_at(lower as u64 + 1);
        Some(low + fraction * (high - low))
    }
}

/// `PERCENTILE_CONT(q)` of ascending `sorted` seconds; `None` when empty.
#[must_use]
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "float to index or count: the value is clamped to a valid range first, and counts stay far below 2^53"
)]
pub fn percentile_cont(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let position = q.clamp(0.0, 1.0) * last as f64;
    let lower = position.floor() as usize;
    let fraction = position - position.floor();
    let low = sorted[lower];
    Some(match sorted.get(lower + 1) {
        Some(&high) if fraction > 0.0 => low + fraction * (high - low),
        _ => low,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_duration_is_within_the_error_of_its_bin() {
        for micros in [
            1_000_i64,
            1_001,
            999_999,
            1_000_000,
            61_500_000,
            3_600_000_000,
            86_400_000_000 * 30,
        ] {
            let exact = crate::approx_f64(micros) / 1e6;
            let value = bin_value(duration_bin(micros));
            assert!(
                (value - exact).abs() <= RELATIVE_ERROR * exact + 1e-12,
                "{micros}: {value} vs {exact}"
            );
        }
        assert_eq!(duration_bin(0), ZERO_BIN);
        assert_eq!(duration_bin(999), ZERO_BIN);
        assert!(
            bin_value(ZERO_BIN).abs() < f64::MIN_POSITIVE,
            "the zero bin is zero"
        );
    }

    #[test]
    fn empty_histogram_has_no_quantiles() {
        let h = Histogram::new();
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.mean_seconds(), None);
        assert_eq!(percentile_cont(&[], 0.5), None);
    }

    proptest! {
        #[test]
        fn quantiles_are_within_the_stated_error_of_percentile_cont(
            durations in proptest::collection::vec(1_000i64..10_000_000_000, 1..300),
            q in 0.0f64..=1.0,
            split in 0usize..300,
        ) {
            // Built as two halves and merged, as the rollups are.
            let split = split.min(durations.len());
            let (mut a, mut b) = (Histogram::new(), Histogram::new());
            for &d in &durations[..split] { a.record(d); }
            for &d in &durations[split..] { b.record(d); }
            a.merge(&b);
            let mut sorted: Vec<f64> = durations.iter().map(|&d| crate::approx_f64(d) / 1e6).collect();
            sorted.sort_by(f64::total_cmp);
            let exact = percentile_cont(&sorted, q).unwrap();
            let estimate = a.quantile(q).unwrap();
            prop_assert!((estimate - exact).abs() <= RELATIVE_ERROR * exact * (1.0 + 1e-9),
                "q={q}: {estimate} vs {exact}");
            let mean = sorted.iter().sum::<f64>() / crate::approx_f64(sorted.len());
            prop_assert!((a.mean_seconds().unwrap() - mean).abs() <= 1e-6 * mean.max(1.0));
            prop_assert_eq!(a.count(), u64::try_from(durations.len()).expect("fits"));
        }
    }
}
