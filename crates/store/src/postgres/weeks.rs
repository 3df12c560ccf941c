//! Weekly partitions made on the write path: a record for a week that has
//! no partition yet makes it before the record is stored, so that history
//! loaded late (a backfill, an import, a client's spool drained after days)
//! lands in its weeks, where reads prune it and retention retires it whole,
//! rather than in the default partition.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike as _, NaiveDate, TimeDelta, Utc};
use sqlx::postgres::PgPool;

use super::retention::try_ensure_partitions;
use crate::StoreError;

/// How far ahead of now a record's week is made. Records further ahead are
/// refused by validation long before (clock skew); this bounds what a
/// careless clock could make.
const AHEAD: TimeDelta = TimeDelta::weeks(6);

/// After a failed attempt (the tables stayed locked), how long writes go on
/// without trying again; their rows wait in the default partition, and the
/// next attempt or retention's upkeep moves them into their week.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The weeks this process knows have partitions, and its one maker.
#[derive(Debug, Default)]
pub(super) struct WeekCover {
    known: Mutex<HashSet<NaiveDate>>,
    /// Held while weeks are made, so that concurrent writes of one new week
    /// make it once; the instant of the last failed attempt.
    making: tokio::sync::Mutex<Option<Instant>>,
}

/// The Monday (UTC) of the week `at` falls in.
pub(super) fn monday(at: DateTime<Utc>) -> NaiveDate {
    let day = at.date_naive();
    day - TimeDelta::days(i64::from(day.weekday().num_days_from_monday()))
}

/// Whether a write makes the week starting `week`: not already due for
/// retention under `age` (a due week's rows leave at the next run anyway,
/// so making it would only make a table to drop), and not beyond [`AHEAD`].
/// This also bounds how many tables one batch can make, whatever its times.
pub(super) fn makes(week: NaiveDate, now: DateTime<Utc>, age: TimeDelta) -> bool {
    let Some(start) = week.and_hms_opt(0, 0, 0).map(|t| t.and_utc()) else {
        return false;
    };
    week >= oldest_kept(now, age) && start <= now + AHEAD
}

/// The Monday of the oldest week not yet due under `age` at `now`: a week
/// is due once its end plus the age has passed, so the weeks kept start
/// after `now - age - one week`.
pub(super) fn oldest_kept(now: DateTime<Utc>, age: TimeDelta) -> NaiveDate {
    monday(now - age - TimeDelta::weeks(1)) + TimeDelta::weeks(1)
}

impl WeekCover {
    fn missing(&self, wanted: &BTreeSet<NaiveDate>) -> BTreeSet<NaiveDate> {
        let known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        wanted
            .iter()
            .filter(|week| !known.contains(week))
            .copied()
            .collect()
    }

    /// Makes the weeks of `starts` that this process has not seen made.
    /// Never fails the write: when the weeks cannot be made now, it says so
    /// and the rows land in the default partition.
    pub(super) async fn cover(
        &self,
        pool: &PgPool,
        age: TimeDelta,
        starts: impl Iterator<Item = DateTime<Utc>>,
    ) {
        let now = Utc::now();
        let wanted: BTreeSet<NaiveDate> = starts
            .map(monday)
            .filter(|&week| makes(week, now, age))
            .collect();
        if self.missing(&wanted).is_empty() {
            return;
        }
        let mut making = self.making.lock().await;
        // Another write may have made them while this one waited.
        let missing = self.missing(&wanted);
        let (Some(&first), Some(&last)) = (missing.first(), missing.last()) else {
            return;
        };
        if making.is_some_and(|failed| failed.elapsed() < RETRY_AFTER) {
            return;
        }
        let at = |week: NaiveDate| week.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        let (Some(from), Some(to)) = (at(first), at(last + TimeDelta::weeks(1))) else {
            return;
        };
        match try_ensure_partitions(pool, from, to).await {
            Ok(created) => {
                *making = None;
                let mut known = self
                    .known
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut week = first;
                while week <= last {
                    known.insert(week);
                    week += TimeDelta::weeks(1);
                }
                if created > 0 {
                    tracing::info!(%first, %last, tables = created, "made weekly partitions for records of weeks that had none");
                }
            }
            Err(e) => {
                *making = Some(Instant::now());
                let busy = matches!(&e, StoreError::Database(sqlx::Error::Database(d)) if d.code().as_deref() == Some("55P03"));
                tracing::warn!(
                    %first,
                    %last,
                    error = %e,
                    busy,
                    "could not make the weekly partitions of new records; they wait in the default partition until retention's upkeep moves them"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn a_week_starts_on_its_monday_in_utc() {
        let monday_ = NaiveDate::from_ymd_opt(2026, 11, 30).expect("date");
        assert_eq!(monday(at("2026-11-30T00:00:00Z")), monday_);
        assert_eq!(monday(at("2026-12-06T23:59:59Z")), monday_);
        assert_eq!(
            monday(at("2026-12-07T00:00:00Z")),
            monday_ + TimeDelta::weeks(1)
        );
    }

    #[test]
    fn only_weeks_not_yet_due_and_not_far_ahead_are_made() {
        let now = at("2026-12-03T12:00:00Z");
        let age = TimeDelta::days(90);
        let this_week = monday(now);
        assert!(makes(this_week, now, age));
        // Due once its end plus the age has passed: the oldest week kept
        // starts after now - age - one week.
        let oldest_kept = monday(now - age - TimeDelta::weeks(1)) + TimeDelta::weeks(1);
        assert_eq!(
            oldest_kept,
            NaiveDate::from_ymd_opt(2026, 8, 31).expect("date")
        );
        assert!(makes(oldest_kept, now, age));
        assert!(!makes(oldest_kept - TimeDelta::weeks(1), now, age));
        assert!(makes(this_week + TimeDelta::weeks(5), now, age));
        assert!(!makes(this_week + TimeDelta::weeks(7), now, age));
        assert!(!makes(NaiveDate::MAX, now, age));
        assert!(!makes(NaiveDate::MIN, now, age));
    }
}
