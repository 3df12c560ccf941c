//! Phase ranking: which of two records of one remediation describes it better.
//!
//! A remediation moves `pending -> processing -> analyzing -> executing` and
//! ends in `completed`, `failed` or `timeout`. Records may arrive in any order
//! (retries, spool replays, several senders), so the summary row keeps the
//! record that ranks highest and never moves backwards.

use chrono::{DateTime, Utc};

/// Phases after which a remediation never changes again.
pub const TERMINAL_PHASES: [&str; 3] = ["completed", "failed", "timeout"];

/// The rank of every phase this build knows: the one statement of the phase
/// order. [`Phase::rank`], [`supersedes`] and the stores' SQL
/// ([`supersedes_sql`], [`rank_sql`]) are all computed from it.
pub const PHASE_RANKS: [(&str, PhaseRank); 7] = [
    ("pending", PhaseRank(0)),
    ("processing", PhaseRank(1)),
    ("analyzing", PhaseRank(2)),
    ("executing", PhaseRank(3)),
    ("completed", PhaseRank::TERMINAL),
    ("failed", PhaseRank::TERMINAL),
    ("timeout", PhaseRank::TERMINAL),
];

/// The rank of a phase this build does not know: that of `executing`, the
/// latest known in-progress phase. A newer orchestrator's extra phases then
/// show up as the current state when they are the latest record, but never
/// hide a terminal one.
pub const UNKNOWN_PHASE_RANK: PhaseRank = PhaseRank(3);

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

    /// The name of this phase.
    #[must_use]
    pub fn name(self) -> &'a str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Analyzing => "analyzing",
            Self::Executing => "executing",
            Self::Terminal(name) | Self::Unknown(name) => name,
        }
    }

    /// Whether the remediation can no longer change after this phase.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Terminal(_))
    }

    /// The rank of this phase, from [`PHASE_RANKS`]; higher ranks supersede
    /// lower ones, and unknown phases rank [`UNKNOWN_PHASE_RANK`].
    #[must_use]
    pub fn rank(self) -> PhaseRank {
        let name = self.name();
        PHASE_RANKS
            .iter()
            .find(|(known, _)| *known == name)
            .map_or(UNKNOWN_PHASE_RANK, |&(_, rank)| rank)
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
/// The rule, which [`supersedes_sql`] writes out for the stores: a terminal
/// current record is final; otherwise a higher rank wins, and on equal rank
/// the later event wins (ties keep the current record, so replays change
/// nothing).
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

/// [`supersedes`] as an SQL condition over two rows that have `phase_rank`
/// and `event_time` columns: true when the row `candidate` (for example
/// `EXCLUDED`) replaces the row `current` (for example the upsert's target).
/// The same text serves PostgreSQL and SQLite; both compare stored event
/// times as instants (SQLite keeps them as fixed-width text).
#[must_use]
pub fn supersedes_sql(current: &str, candidate: &str) -> String {
    let terminal = PhaseRank::TERMINAL.0;
    format!(
        "({current}.phase_rank < {terminal} AND ({candidate}.phase_rank > {current}.phase_rank \
         OR ({candidate}.phase_rank = {current}.phase_rank AND {candidate}.event_time > {current}.event_time)))"
    )
}

/// [`Phase::rank`] as an SQL expression over the phase name held by
/// `column`: a `CASE` over [`PHASE_RANKS`], unknown names ranking
/// [`UNKNOWN_PHASE_RANK`]. Phase names are fixed lower-case words, so they
/// are written into the text as they are.
#[must_use]
pub fn rank_sql(column: &str) -> String {
    use std::fmt::Write as _;
    let mut arms = String::new();
    for (name, rank) in PHASE_RANKS {
        // Writing into a `String` cannot fail.
        let _ = write!(arms, " WHEN '{name}' THEN {}", rank.0);
    }
    format!("CASE {column}{arms} ELSE {} END", UNKNOWN_PHASE_RANK.0)
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
    fn the_table_agrees_with_the_classification() {
        for (name, rank) in PHASE_RANKS {
            let phase = Phase::parse(name);
            assert_eq!(phase.rank(), rank, "{name}");
            assert_eq!(phase.name(), name);
            assert_eq!(phase.is_terminal(), rank.is_terminal(), "{name}");
            assert_eq!(
                TERMINAL_PHASES.contains(&name),
                rank.is_terminal(),
                "{name}"
            );
        }
        assert_eq!(Phase::parse("verifying").rank(), UNKNOWN_PHASE_RANK);
    }

    #[test]
    fn the_sql_texts_are_the_rule_written_out() {
        assert_eq!(
            supersedes_sql("ra", "EXCLUDED"),
            "(ra.phase_rank < 9 AND (EXCLUDED.phase_rank > ra.phase_rank \
             OR (EXCLUDED.phase_rank = ra.phase_rank AND EXCLUDED.event_time > ra.event_time)))"
        );
        assert_eq!(
            rank_sql("p"),
            "CASE p WHEN 'pending' THEN 0 WHEN 'processing' THEN 1 WHEN 'analyzing' THEN 2 \
             WHEN 'executing' THEN 3 WHEN 'completed' THEN 9 WHEN 'failed' THEN 9 \
             WHEN 'timeout' THEN 9 ELSE 3 END"
        );
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
