//! Segment files: where records are appended, how the writer rolls over to
//! a new file, flushes and deletes files whose records are all
//! acknowledged.
//!
//! A segment is named by the sequence number of its first record and holds
//! a run of records encoded by [`super::format`]. Only the newest segment is
//! appended to; a new one is started when the current one would grow past
//! `segment_bytes`, and after every open.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use super::dir::{self, FILE_MODE, remove_segment, segment_path};
use super::format;
use super::{Spool, SpoolError};

/// One segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    /// Seq of its first record, and its name.
    pub(super) base: u64,
    /// Its size.
    pub(super) bytes: u64,
}

impl Spool {
    /// Writes record `seq` (taking `needed` bytes on disk) to the active
    /// segment, starting a new segment first when the active one is full or
    /// there is none, and moves the next seq on.
    ///
    /// On a failed write the segment is cut back to where it was; when even
    /// that fails, the partial record is left where later appends cannot
    /// meet it and its seq is never used again.
    pub(super) fn write_record(
        &mut self,
        seq: u64,
        payload: &[u8],
        needed: u64,
    ) -> Result<(), SpoolError> {
        if self.active.is_some()
            && let Some(last) = self.segments.back()
            && last.bytes > 0
            && last.bytes + needed > self.options.segment_bytes
        {
            self.retire_active();
        }
        if self.active.is_none() {
            self.start_segment(seq)?;
        }
        let Some(segment) = self.segments.back_mut() else {
            unreachable!("start_segment added the active segment");
        };
        let Some(file) = self.active.as_mut() else {
            unreachable!("start_segment opened the active segment");
        };
        format::encode_record(seq, payload, &mut self.frame);
        if let Err(source) = file.write_all(&self.frame) {
            let path = segment_path(&self.options.dir, segment.base);
            if file.set_len(segment.bytes).is_err() {
                // Part of the record may be left behind; keep it out of the
                // way of later appends and never reuse its seq.
                let size = file.metadata().map_or(segment.bytes + needed, |m| m.len());
                self.disk_bytes += size.saturating_sub(segment.bytes);
                segment.bytes = size;
                self.retire_active();
                self.next_seq += 1;
                self.holes.push_back((seq, seq + 1));
            }
            return Err(SpoolError::Io {
                action: "appending to",
                path,
                source,
            });
        }
        segment.bytes += needed;
        self.disk_bytes += needed;
        self.active_dirty = true;
        self.next_seq += 1;
        Ok(())
    }

    /// Creates (or, if an empty one was left behind, reuses) the segment
    /// file whose first record will be `seq`, and makes it the active one.
    pub(super) fn start_segment(&mut self, seq: u64) -> Result<(), SpoolError> {
        let path = segment_path(&self.options.dir, seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(SpoolError::io("creating segment", path.clone()))?;
        match self.segments.back() {
            Some(last) if last.base == seq => {}
            _ => {
                let bytes = file
                    .metadata()
                    .map_err(SpoolError::io("reading size of", path))?
                    .len();
                self.segments.push_back(Segment { base: seq, bytes });
                self.disk_bytes += bytes;
            }
        }
        self.active = Some(file);
        self.active_dirty = false;
        self.dir_dirty = true;
        Ok(())
    }

    /// Stops appending to the active segment, remembering to sync it.
    pub(super) fn retire_active(&mut self) {
        if let Some(file) = self.active.take()
            && self.active_dirty
        {
            let base = self.segments.back().map_or(0, |s| s.base);
            self.unsynced.push((base, file));
        }
        self.active_dirty = false;
    }

    /// Deletes the oldest segment files while they hold no record that is
    /// unacknowledged, or acknowledged but not yet so in a written ledger. A
    /// failed deletion is logged and retried later.
    pub(super) fn delete_acked_segments(&mut self) {
        let first = self.first_unacked().min(self.written_acked + 1);
        while let Some(oldest) = self.segments.front().copied() {
            let end = self.segments.get(1).map_or(self.next_seq, |s| s.base);
            if end > first {
                break;
            }
            if self.segments.len() == 1 {
                // The newest segment: stop appending to it first. The next
                // append starts a new one.
                self.active = None;
                self.active_dirty = false;
            }
            if let Err(e) = remove_segment(&self.options.dir, oldest.base) {
                tracing::warn!(error = %e, "cannot delete acknowledged spool segment; will retry");
                break;
            }
            self.unsynced.retain(|(base, _)| *base != oldest.base);
            self.segments.pop_front();
            self.disk_bytes -= oldest.bytes;
            self.dir_dirty = true;
        }
    }
}

/// Flushes taken by [`Spool::sync_work`], to run without the spool's lock.
#[derive(Debug)]
pub struct SyncWork {
    pub(super) files: Vec<(PathBuf, File)>,
    pub(super) dir: Option<PathBuf>,
}

impl SyncWork {
    /// Whether there is nothing to flush.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none()
    }

    /// Flushes the segments' data, then the directory when files came or went.
    ///
    /// # Errors
    /// When a flush fails; the records may then not survive a power cut.
    pub fn run(self) -> Result<(), SpoolError> {
        for (path, file) in self.files {
            file.sync_data().map_err(SpoolError::io("syncing", path))?;
        }
        if let Some(dir) = self.dir {
            dir::sync(&dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::SpoolSettings;
    use crate::spool::tests::{ack, bytes_on_disk, open, options, payload, read_all, seqs, sync};

    #[test]
    fn full_spool_refuses_appends_until_acks_free_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        // 36-byte payloads make 60-byte records: two per segment, five in all.
        let opts = options(dir.path(), 120, 300);
        let (mut spool, _) = open(&opts);
        for seq in 1..=5 {
            assert_eq!(spool.append(&payload(seq, 36)).unwrap(), seq);
        }
        assert_eq!(spool.disk_bytes(), 300);
        let err = spool.append(&payload(6, 36)).unwrap_err();
        assert!(
            matches!(
                err,
                SpoolError::Full {
                    needed: 60,
                    used: 300,
                    max: 300
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("acknowledged"), "{err}");
        // The refused record took no seq.
        assert_eq!(spool.next_seq(), 6);

        ack(&mut spool, 2);
        assert_eq!(spool.disk_bytes(), 180);
        assert_eq!(bytes_on_disk(dir.path()), 180);
        assert_eq!(spool.append(&payload(6, 36)).unwrap(), 6);
        assert_eq!(spool.append(&payload(7, 36)).unwrap(), 7);
        assert!(matches!(
            spool.append(&payload(8, 36)),
            Err(SpoolError::Full { .. })
        ));
        assert_eq!(spool.disk_bytes(), 300);
        assert_eq!(bytes_on_disk(dir.path()), 300);
        let records = read_all(&spool, &mut spool.reader(), 1);
        assert_eq!(seqs(&records), [3, 4, 5, 6, 7]);
    }

    #[test]
    fn too_large_payload_is_refused_and_empty_payload_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SpoolSettings {
            max_record_bytes: 100,
            ..SpoolSettings::new(dir.path())
        };
        let (mut spool, _) = open(&opts);
        let err = spool.append(&[1; 101]).unwrap_err();
        assert!(
            matches!(err, SpoolError::TooLarge { len: 101, max: 100 }),
            "{err:?}"
        );
        assert_eq!(spool.next_seq(), 1);
        assert_eq!(spool.append(&[2; 100]).unwrap(), 1);
        assert_eq!(spool.append(&[]).unwrap(), 2);
        let records = read_all(&spool, &mut spool.reader(), 1);
        assert_eq!(records, [(1, vec![2; 100]), (2, Vec::new())]);
        drop(spool);
        let (_, recovery) = open(&opts);
        assert_eq!(recovery.records, 2);
    }

    #[test]
    fn sync_work_taken_under_the_lock_flushes_outside_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = SpoolSettings::new(dir.path());
        options.segment_bytes = 64;
        let (mut spool, _) = Spool::open(options).expect("open");
        for i in 0..5_u8 {
            spool.append(&[i; 40]).expect("append");
        }
        let work = spool.sync_work().expect("work");
        assert!(!work.is_empty());
        assert!(spool.unsynced.is_empty() && !spool.active_dirty && !spool.dir_dirty);
        // Appends go on while the taken work runs.
        spool.append(&[9; 40]).expect("append");
        work.run().expect("flushed");
        assert!(spool.active_dirty, "the later append still needs a flush");
        assert!(spool.sync_work().expect("work").run().is_ok());
        assert!(spool.sync_work().expect("work").is_empty());
    }

    #[test]
    fn sync_succeeds_after_rolls_and_with_nothing_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), 200, 1 << 20);
        let (mut spool, _) = open(&opts);
        for seq in 1..=10 {
            spool.append(&payload(seq, 40)).unwrap();
        }
        sync(&mut spool);
        assert!(spool.unsynced.is_empty());
        assert!(!spool.active_dirty && !spool.dir_dirty);
        sync(&mut spool);
    }
}
