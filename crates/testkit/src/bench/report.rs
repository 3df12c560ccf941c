//! Figures and how they are printed: nearest-rank percentiles, thousands,
//! MiB, the smoke run's notice and the line of a timed step.

use std::time::Duration;

use super::smoke;

/// The `p` quantile (0 to 1) of sorted values, by the nearest rank;
/// `None` when there are none.
#[must_use]
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "float to index or count: the value is clamped to a valid range first, and counts stay far below 2^53"
    )]
    let index = ((last as f64) * p.clamp(0.0, 1.0)).round() as usize;
    sorted.get(index.min(last)).copied()
}

/// Milliseconds of the `p` quantile of sorted durations (NaN when empty).
#[must_use]
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    percentile(sorted, p).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// Nanoseconds of the `p` quantile of sorted durations (0 when empty).
#[must_use]
pub fn percentile_ns(sorted: &[Duration], p: f64) -> u128 {
    percentile(sorted, p).map_or(0, |d| d.as_nanos())
}

/// The `p` quantile of sorted numbers (NaN when empty).
#[must_use]
pub fn percentile_f64(sorted: &[f64], p: f64) -> f64 {
    percentile(sorted, p).unwrap_or(f64::NAN)
}

/// The numbers in ascending order (NaN last), ready for [`percentile_f64`].
#[must_use]
pub fn sorted_f64(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// `n` with thousands separators.
#[must_use]
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Bytes as MiB.
#[must_use]
pub fn mib(bytes: i64) -> f64 {
    remaudit_model::approx_f64(bytes) / (1024.0 * 1024.0)
}

/// What a benchmark's title line ends with: a notice in a smoke run, whose
/// figures mean nothing.
#[must_use]
pub fn smoke_note() -> &'static str {
    if smoke() {
        " (smoke run: correctness only)"
    } else {
        ""
    }
}

/// Prints the smoke run's notice for a load of `days` days of `per_day`
/// remediations (nothing outside a smoke run).
pub fn print_smoke_load(days: impl std::fmt::Display, per_day: impl std::fmt::Display) {
    if smoke() {
        println!(
            "smoke run: {days} days x {per_day} remediations, correctness only (no figure here means anything)"
        );
    }
}

/// Prints one timed step of a load: its name, seconds and a note
/// (which starts with its own separator, or is empty).
pub fn print_step(name: &str, seconds: f64, note: &str) {
    println!("  {name:<28} {seconds:>8.1} s{note}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_the_nearest_rank() {
        let v = [1, 2, 3, 4, 5];
        assert_eq!(percentile(&v, 0.5), Some(3));
        assert_eq!(percentile(&v, 0.95), Some(5));
        assert_eq!(percentile(&v, 0.3), Some(2));
        let ten: Vec<u32> = (1..=10).collect();
        assert_eq!(percentile(&ten, 0.5), Some(6), "index 4.5 rounds up");
        assert_eq!(percentile(&ten, 0.99), Some(10));
    }

    #[test]
    fn percentile_of_nothing_is_none() {
        assert_eq!(percentile::<i32>(&[], 0.5), None);
        assert_eq!(percentile::<i32>(&[], 0.0), None);
        assert_eq!(percentile::<i32>(&[], 1.0), None);
        assert!(percentile_f64(&[], 0.5).is_nan());
        assert!(percentile_ms(&[], 0.5).is_nan());
        assert_eq!(percentile_ns(&[], 0.5), 0);
    }

    #[test]
    fn percentile_of_one_value_is_that_value() {
        for p in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(percentile(&[7], p), Some(7), "p = {p}");
        }
    }

    #[test]
    fn p0_is_the_smallest_and_p100_the_largest() {
        let v = [1, 2, 3, 4, 5];
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&v, 1.0), Some(5));
        assert_eq!(percentile(&v, -0.5), Some(1), "below 0 counts as 0");
        assert_eq!(percentile(&v, 1.5), Some(5), "above 1 counts as 1");
        assert_eq!(percentile(&v, f64::NAN), Some(1), "NaN counts as 0");
    }

    #[test]
    fn percentiles_of_durations_and_numbers() {
        let d = [Duration::from_millis(1), Duration::from_millis(3)];
        assert!((percentile_ms(&d, 1.0) - 3.0).abs() < 1e-9);
        assert_eq!(percentile_ns(&d, 0.0), 1_000_000);
        let sorted = sorted_f64(vec![3.0, f64::NAN, 1.0, 2.0]);
        assert_eq!(&sorted[..3], &[1.0, 2.0, 3.0]);
        assert!((percentile_f64(&sorted[..3], 0.5) - 2.0).abs() < f64::EPSILON);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
    }
}
