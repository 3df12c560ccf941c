//! The ledger: the one small file that says how far records are
//! acknowledged and below which sequence number none may be handed out
//! again.
//!
//! It is only ever replaced whole (temp file, fsync, rename, fsync of the
//! directory), so a crash leaves either the old or the new one. Writing it
//! is split from deciding what it says ([`Spool::ack_work`] then
//! [`AckWork::run`]), so the publisher can do the slow part without holding
//! the lock around the spool. Segment files are deleted only up to what a
//! written ledger acknowledges.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::dir::{self, LEDGER_FILE, LEDGER_TMP_FILE};
use super::format::{self, Ledger};
use super::{Spool, SpoolError};

/// A ledger write taken by [`Spool::ack_work`], to run without the spool's lock.
#[derive(Debug)]
pub struct AckWork {
    pub(super) dir: PathBuf,
    pub(super) ledger: Option<Ledger>,
}

impl AckWork {
    /// Whether the ledger already says this.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ledger.is_none()
    }

    /// Replaces the ledger durably: temp file, fsync, rename, fsync of the directory.
    ///
    /// # Errors
    /// When a step fails; the old ledger then stays in place.
    pub fn run(self) -> Result<(), SpoolError> {
        let Some(ledger) = self.ledger else {
            return Ok(());
        };
        replace(&self.dir, ledger)?;
        dir::sync(&self.dir)
    }
}

impl Spool {
    /// Moves the acknowledgement up to `seq` (never past what was handed
    /// out, never backwards) and drops the holes it passes; says whether it moved.
    pub(super) fn advance_ack(&mut self, seq: u64) -> bool {
        let seq = seq.min(self.next_seq - 1);
        if seq <= self.acked {
            return false;
        }
        self.acked = seq;
        while let Some(hole) = self.holes.front_mut() {
            if hole.1 <= seq + 1 {
                self.holes.pop_front();
            } else {
                hole.0 = hole.0.max(seq + 1);
                break;
            }
        }
        true
    }

    /// Replaces the ledger with the current ack and seq floor, durably,
    /// unless it already says that.
    pub(super) fn write_ledger(&mut self) -> Result<(), SpoolError> {
        let ledger = Ledger {
            acked: self.acked,
            floor: self.next_seq,
        };
        if ledger == self.ledger {
            return Ok(());
        }
        replace(&self.options.dir, ledger)?;
        self.ledger = ledger;
        self.written_acked = ledger.acked;
        self.dir_dirty = true;
        self.sync_dir_if_dirty()
    }
}

/// The ledger, or nothing acknowledged if there is none yet.
pub(super) fn read(dir: &Path) -> Result<Ledger, SpoolError> {
    let path = dir.join(LEDGER_FILE);
    match fs::read(&path) {
        Ok(bytes) => Ok(format::decode_ledger(&bytes).unwrap_or_else(|| {
            // Only written by atomic rename, so this takes outside damage.
            // Starting from zero redelivers what the segments still hold.
            tracing::warn!(path = %path.display(), "spool ledger is damaged; acknowledgements are lost and remaining records will be delivered again");
            Ledger::default()
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ledger::default()),
        Err(e) => Err(SpoolError::io("reading", path)(e)),
    }
}

/// Writes `ledger` to a temp file, fsyncs it and renames it over the ledger
/// (the caller fsyncs the directory).
fn replace(dir: &Path, ledger: Ledger) -> Result<(), SpoolError> {
    let tmp = dir.join(LEDGER_TMP_FILE);
    let mut file = dir::create_fresh(&tmp).map_err(SpoolError::io("creating", tmp.clone()))?;
    file.write_all(&format::encode_ledger(ledger))
        .and_then(|()| file.sync_all())
        .map_err(SpoolError::io("writing", tmp.clone()))?;
    drop(file);
    let path = dir.join(LEDGER_FILE);
    fs::rename(&tmp, &path).map_err(SpoolError::io("replacing", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::SpoolSettings;
    use crate::spool::format::MAX_SEQ;
    use crate::spool::tests::{ack, open, options};

    #[test]
    fn a_symlink_planted_at_the_temporary_ledger_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("precious");
        fs::write(&target, b"keep me").unwrap();
        let link = dir.path().join(LEDGER_TMP_FILE);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        // Opening probes the directory and writes the ledger.
        let (mut spool, _) = open(&options(dir.path(), 1 << 20, 1 << 20));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        spool.append(b"one").unwrap();
        ack(&mut spool, 1);
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
        assert!(
            !link.exists(),
            "the link itself was replaced and renamed away"
        );
        drop(spool);
        let (spool, recovery) = open(&options(dir.path(), 1 << 20, 1 << 20));
        assert_eq!(
            (spool.first_unacked(), recovery.records),
            (2, 0),
            "the ack held"
        );
    }

    #[test]
    fn a_spool_out_of_seqs_refuses_appends_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), 1 << 20, 1 << 20);
        fs::write(
            dir.path().join(LEDGER_FILE),
            format::encode_ledger(Ledger {
                acked: MAX_SEQ,
                floor: MAX_SEQ + 1,
            }),
        )
        .unwrap();
        let (mut spool, _) = open(&opts);
        let err = spool.append(b"one").unwrap_err();
        assert!(matches!(err, SpoolError::Exhausted { .. }), "{err}");
        assert!(
            err.to_string().contains("move the directory aside"),
            "{err}"
        );
    }

    #[test]
    fn ack_work_records_acks_outside_the_lock_and_deletes_segments_a_round_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = SpoolSettings::new(dir.path());
        options.segment_bytes = 64;
        let (mut spool, _) = Spool::open(options.clone()).expect("open");
        for i in 0..6_u8 {
            spool.append(&[i; 40]).expect("append");
        }
        let segments = spool.segment_count();
        let work = spool.ack_work(4);
        assert!(!work.is_empty());
        assert_eq!(spool.first_unacked(), 5);
        assert_eq!(
            spool.segment_count(),
            segments,
            "nothing deleted before the ledger is written"
        );
        spool.append(&[9; 40]).expect("appends go on meanwhile");
        work.run().expect("ledger written");
        // The ledger now also carries the higher seq floor of that append.
        let again = spool.ack_work(4);
        assert!(
            spool.segment_count() < segments,
            "acknowledged segments go on the next round"
        );
        again.run().expect("ledger written");
        assert!(
            spool.ack_work(4).is_empty(),
            "the ledger already says all this"
        );
        drop(spool);
        let (spool, recovery) = Spool::open(options).expect("reopen");
        assert_eq!(recovery.records, 3, "records 5, 6 and 7 are left");
        assert_eq!(spool.first_unacked(), 5);
    }
}
