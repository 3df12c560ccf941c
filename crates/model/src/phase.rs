//! Phase ranking: which of two records of one remediation describes it better.
//!
//! A remediation moves `pending -> processing -> analyzing -> executing` and
//! ends in `completed`, `failed` or `timeout`. Records may arrive in any order
//! (retries, spool replays, several senders), so the summary row keeps the
//! record that ranks highest and never moves backwards.

use chrono::{DateTime, Utc};

/// Phases after which a remediation never changes again.
pub const TERMINAL_PHASES: [&str; 3] = ["completed", "failed", "timeout"];

/// A phase as the orchestrator names it, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase<'a> {
    /// `pending`: created, nothing started.
    Pending,
    /// `processing`: signal processing runs.
    Processing,
    /// `analyzing`: AI analysis runs.
    Analyzing,
    /// `executing`: the workflow runs.
    Executing,
    /// `completed`, `failed` or `timeout`.
    Terminal(&'a str),
    /// A phase this build does not know; it counts as in progress.
    Unknown(&'a str),
}

impl<'a> Phase<'a> {
    /// Classifies a phase name.
    #[must_use]
    pub fn parse(name: &'a str) -> Self {
        match name {
            "pending" => Self::Pending,
            "processing" => Self::Processing,
            "analyzing" => Self::Analyzing,
            "executing" => Self::Executing,
            "completed" | "failed" | "timeout" => Self::Terminal(name),
            other => Self::Unknown(other),
        }
    }

    /// Whether the remediation can no longer change after this phase.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Terminal(_))
    }

    /// The rank of this phase; higher ranks supersede lower ones.
    ///
    /// Unknown phases rank with `executing`, the latest known in-progress
    /// phase: a newer orchestrator's extra phases then show up as the current
    /// state when they are the latest record, but never hide a terminal one.
    #[must_use]
    pub fn rank(self) -> PhaseRank {
        PhaseRank(match self {
            Self::Pending => 0,
            Self::Processing => 1,
            Self::Analyzing => 2,
            Self::Executing | Self::Unknown(_) => 3,
            Self::Terminal(_) => PhaseRank::TERMINAL.0,
        })
    }
}

/// The ordering key of a phase, stored beside the summary row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhaseRank(pub i16);

impl PhaseRank {
    /// The rank of every terminal phase.
    pub const TERMINAL: Self = Self(9);

    /// Whether this rank belongs to a terminal phase.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        self == Self::TERMINAL
    }
}

/// Whether a candidate record `(rank, event_time)` replaces the current one.
///
/// The rule, mirrored in the stores' SQL: a terminal current record is final;
/// otherwise a higher rank wins, and on equal rank the later event wins (ties
/// keep the current record, so replays change nothing).
#[must_use]
pub fn supersedes(
    current: (PhaseRank, DateTime<Utc>),
    candidate: (PhaseRank, DateTime<Utc>),
) -> bool {
    if current.0.is_terminal() {
        return false;
    }
    candidate.0 > current.0 || (candidate.0 == current.0 && candidate.1 > current.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PHASES: [&str; 8] = [
        "pending",
        "processing",
        "analyzing",
        "executing",
        "completed",
        "failed",
        "timeout",
        "verifying",
    ];

    fn record() -> impl Strategy<Value = (PhaseRank, DateTime<Utc>)> {
        (0..PHASES.len(), 0i64..1_000_000).prop_map(|(p, secs)| {
            (
                Phase::parse(PHASES[p]).rank(),
                DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("in range"),
            )
        })
    }

    /// Folds records in order with `supersedes`, as the summary upsert does.
    fn fold(records: &[(PhaseRank, DateTime<Utc>)]) -> (PhaseRank, DateTime<Utc>) {
        let mut current = records[0];
        for &candidate in &records[1..] {
            if supersedes(current, candidate) {
                current = candidate;
            }
        }
        current
    }

    #[test]
    fn known_phases_rank_in_lifecycle_order() {
        let ranks: Vec<_> = PHASES[..5].iter().map(|p| Phase::parse(p).rank()).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
        assert_eq!(Phase::parse("failed").rank(), PhaseRank::TERMINAL);
        assert_eq!(Phase::parse("timeout").rank(), PhaseRank::TERMINAL);
        assert!(Phase::parse("completed").is_terminal());
        assert!(!Phase::parse("verifying").is_terminal());
    }

    #[test]
    fn unknown_phase_ranks_as_in_progress() {
        let unknown = Phase::parse("verifying").rank();
        assert!(unknown > Phase::parse("pending").rank());
        assert!(unknown < PhaseRank::TERMINAL);
    }

    proptest! {
        #[test]
        fn summary_never_goes_backwards(records in prop::collection::vec(record(), 1..20)) {
            let mut current = records[0];
            for &candidate in &records[1..] {
                let next = if supersedes(current, candidate) { candidate } else { current };
                prop_assert!(next.0 >= current.0, "rank went from {:?} to {:?}", current.0, next.0);
                if current.0.is_terminal() {
                    prop_assert_eq!(next, current, "a terminal record was replaced");
                }
                current = next;
            }
        }

        #[test]
        fn order_does_not_matter_without_competing_terminals(
            records in prop::collection::vec(record(), 1..12),
            seed in any::<u64>(),
        ) {
            // With at most one terminal record, the winner is the same whatever the arrival order.
            let mut records = records;
            let mut seen_terminal = false;
            records.retain(|r| !(r.0.is_terminal() && std::mem::replace(&mut seen_terminal, true)));
            let mut shuffled = records.clone();
            let n = shuffled.len();
            let mut state = seed;
            for i in (1..n).rev() {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                shuffled.swap(i, usize::try_from(state >> 33).unwrap_or(0) % (i + 1));
            }
            let a = fold(&records);
            let b = fold(&shuffled);
            prop_assert_eq!(a.0, b.0);
            if !a.0.is_terminal() {
                prop_assert_eq!(a.1, b.1);
            }
        }

        #[test]
        fn a_replay_changes_nothing(r in record()) {
            prop_assert!(!supersedes(r, r));
        }
    }
}
