//! Timestamps of a published record, written as the same RFC 3339 text
//! chrono's serde support writes, in one piece.
//!
//! chrono hands its text to the serializer through `fmt`, a few characters
//! at a time, and `serde_json` escapes each piece as it comes. On the
//! publisher's hot path that was half of a record's serialisation: about
//! 480 of 960 ns for the two timestamps of a typical record
//! (docs/benchmarks.md, section 7). Here the text is built in a buffer and
//! handed over whole. Timestamps this does not cover (years outside
//! 0–9999, leap seconds) go to chrono, so the text is always chrono's.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

/// The longest text written here: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const LONGEST: usize = 30;

/// A timestamp that serialises as chrono's does, faster.
struct Rfc3339<'a>(&'a DateTime<Utc>);

impl Serialize for Rfc3339<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = [0u8; LONGEST];
        match write(self.0, &mut text) {
            Some(len) => serializer.serialize_str(
                std::str::from_utf8(&text[..len]).map_err(serde::ser::Error::custom)?,
            ),
            None => self.0.serialize(serializer),
        }
    }
}

/// `serialize_with` for a `DateTime<Utc>` field.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde's signature
pub(crate) fn serialize<S: Serializer>(
    at: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    Rfc3339(at).serialize(serializer)
}

/// `serialize_with` for an `Option<DateTime<Utc>>` field.
#[allow(clippy::ref_option)] // serde's signature
pub(crate) fn serialize_option<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_some(&Rfc3339(at)),
        None => serializer.serialize_none(),
    }
}

/// Writes `value` as decimal digits filling `out`, with leading zeros.
fn digits(out: &mut [u8], mut value: u32) {
    for byte in out.iter_mut().rev() {
        // A digit: value % 10 < 10.
        *byte = b'0' + u8::try_from(value % 10).unwrap_or(0);
        value /= 10;
    }
}

/// Writes `at` into `text` as chrono's serde support writes it (seconds'
/// fractions in 0, 3, 6 or 9 digits, as few as hold them exactly, and `Z`)
/// and returns its length; `None` for a year outside 0–9999 or a leap
/// second, which are left to chrono.
fn write(at: &DateTime<Utc>, text: &mut [u8; LONGEST]) -> Option<usize> {
    let naive = at.naive_utc();
    let (date, time) = (naive.date(), naive.time());
    let year = u32::try_from(date.year()).ok().filter(|&y| y <= 9999)?;
    let nano = time.nanosecond();
    if nano >= 1_000_000_000 {
        return None;
    }
    digits(&mut text[0..4], year);
    text[4] = b'-';
    digits(&mut text[5..7], date.month());
    text[7] = b'-';
    digits(&mut text[8..10], date.day());
    text[10] = b'T';
    digits(&mut text[11..13], time.hour());
    text[13] = b':';
    digits(&mut text[14..16], time.minute());
    text[16] = b':';
    digits(&mut text[17..19], time.second());
    let (fraction, width) = if nano == 0 {
        (0, 0)
    } else if nano % 1_000_000 == 0 {
        (nano / 1_000_000, 3)
    } else if nano % 1_000 == 0 {
        (nano / 1_000, 6)
    } else {
        (nano, 9)
    };
    let mut len = 19;
    if width > 0 {
        text[len] = b'.';
        digits(&mut text[len + 1..=len + width], fraction);
        len += 1 + width;
    }
    text[len] = b'Z';
    Some(len + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn both(at: &DateTime<Utc>) -> (String, String) {
        (
            serde_json::to_string(&Rfc3339(at)).expect("fast"),
            serde_json::to_string(at).expect("chrono"),
        )
    }

    #[test]
    fn the_text_is_chronos_at_every_fraction_width_and_at_the_edges() {
        let base = Utc
            .with_ymd_and_hms(2026, 12, 4, 13, 5, 9)
            .single()
            .expect("time");
        for nanos in [
            0,
            1,
            120,
            1_000,
            7_000_000,
            7_100_000,
            100_000_000,
            123_456_000,
            123_456_700,
            123_456_789,
            999_999_999,
        ] {
            let at = base + chrono::Duration::nanoseconds(nanos);
            let (fast, chrono) = both(&at);
            assert_eq!(fast, chrono, "{nanos} ns past the second");
        }
        let (fast, _) = both(&(base + chrono::Duration::nanoseconds(7_100_000)));
        assert_eq!(fast, "\"2026-12-04T13:05:09.007100Z\"");
        let mut text = [0; LONGEST];
        for (at, written_here) in [
            (Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).single(), true),
            (
                Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single(),
                true,
            ),
            (Utc.with_ymd_and_hms(-1, 6, 1, 0, 0, 0).single(), false),
            (Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).single(), false),
            (Some(DateTime::<Utc>::MIN_UTC), false),
            (Some(DateTime::<Utc>::MAX_UTC), false),
        ] {
            let at = at.expect("a valid time");
            assert_eq!(write(&at, &mut text).is_some(), written_here, "{at:?}");
            let (fast, chrono) = both(&at);
            assert_eq!(fast, chrono);
        }
    }

    #[test]
    fn a_leap_second_is_left_to_chrono() {
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .expect("leap second")
            .and_utc();
        let mut text = [0; LONGEST];
        assert_eq!(write(&leap, &mut text), None);
        let (fast, chrono) = both(&leap);
        assert_eq!(fast, chrono);
        assert_eq!(fast, "\"2016-12-31T23:59:60.500Z\"");
    }

    #[test]
    fn an_option_serialises_as_chronos_does() {
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single();
        let mut fast = Vec::new();
        serialize_option(&at, &mut serde_json::Serializer::new(&mut fast)).expect("some");
        assert_eq!(fast, serde_json::to_vec(&at).expect("chrono"));
        let mut out = Vec::new();
        serialize_option(&None, &mut serde_json::Serializer::new(&mut out)).expect("none");
        assert_eq!(out, b"null");
    }

    proptest! {
        #[test]
        fn any_timestamp_serialises_as_chronos_does(
            // Mostly years 0 to 9999, which this writes itself; the rest
            // of chrono's range goes to chrono.
            secs in prop_oneof![
                4 => -62_167_219_200i64..=253_402_300_799,
                1 => DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(),
            ],
            nanos in prop_oneof![
                Just(0u32),
                (0u32..1000).prop_map(|ms| ms * 1_000_000),
                (0u32..1_000_000).prop_map(|us| us * 1_000),
                (0u32..10_000_000).prop_map(|hundreds| hundreds * 100),
                0u32..1_000_000_000,
            ],
        ) {
            let at = DateTime::from_timestamp(secs, nanos).expect("in range");
            let (fast, chrono) = both(&at);
            prop_assert_eq!(fast, chrono);
        }
    }
}
