//! Conversion between the API server's timestamps (`jiff`, inside
//! k8s-openapi's `Time`) and the `chrono` times of the audit model.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// The same instant as a `chrono` time; `None` outside chrono's range.
pub(crate) fn to_chrono(time: &Time) -> Option<DateTime<Utc>> {
    let nanos = time.0.as_nanosecond();
    let seconds = i64::try_from(nanos.div_euclid(NANOS_PER_SECOND)).ok()?;
    let subsec = u32::try_from(nanos.rem_euclid(NANOS_PER_SECOND)).ok()?;
    DateTime::from_timestamp(seconds, subsec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn instants_survive_the_conversion() {
        for (seconds, nanos) in [(1_764_000_000_i64, 123_456_789_i32), (0, 0), (-1, 5)] {
            let t = Time(Timestamp::new(seconds, nanos).expect("in range"));
            let c = to_chrono(&t).expect("in range");
            assert_eq!(
                i128::from(c.timestamp_nanos_opt().expect("in range")),
                t.0.as_nanosecond()
            );
        }
    }
}
