//! Integer to `f64` conversion for statistics (rates, means, percentiles,
//! durations in seconds), where losing precision above 2^53 does not matter.

/// An integer that statistics turn into an approximate `f64`.
pub trait ApproxF64: Copy {
    /// The nearest `f64`: exact below 2^53, rounded above.
    fn approx_f64(self) -> f64;
}

macro_rules! approx_f64 {
    ($($t:ty),*) => {$(
        impl ApproxF64 for $t {
            #[allow(
                clippy::cast_precision_loss,
                reason = "statistics only: exact below 2^53, and a rounded rate or mean above that is fine"
            )]
            fn approx_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}

approx_f64!(i64, u64, i128, usize);

/// The nearest `f64` to `n`: exact below 2^53, rounded above (see [`ApproxF64`]).
#[must_use]
pub fn approx_f64(n: impl ApproxF64) -> f64 {
    n.approx_f64()
}
