//! Segment files: where records are appended (a copy into the mapped
//! region of the newest file), how the writer rolls over to a new file,
//! flushes and deletes files whose records are all acknowledged.
//!
//! A segment is named by the sequence number of its first record and holds
//! a run of records encoded by [`super::format`]. Only the newest segment is
//! appended to; a new one is started when the current one would grow past
//! `segment_bytes`, and after every open.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use remaudit_mapped::MappedRegion;

use super::dir::{self, FILE_MODE, SPARE_FILE, SPARE_TMP_FILE, remove_segment, segment_path};
use super::format;
use super::{Spool, SpoolError};

/// One segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    /// Seq of its first record, and its name.
    pub(super) base: u64,
    /// Its size: the bytes its records take (the active segment's file is
    /// longer by its reserved, unwritten region).
    pub(super) bytes: u64,
}

/// Where the spare segment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spare {
    /// None is handed out.
    Idle,
    /// Handed out by [`Spool::spare_work`] and not yet used: on disk, or
    /// being written.
    HandedOut,
    /// The last one failed; none is handed out until a segment starts.
    Failed,
}

/// The segment being appended to: its file, reserved on disk ahead of the
/// records and mapped, so an append is a copy into memory.
#[derive(Debug)]
pub(super) struct Active {
    /// The file, kept open for flushing.
    pub(super) file: File,
    /// The file's reserved bytes, mapped.
    region: MappedRegion,
}

impl Active {
    /// Bytes of the region beyond the first `written`.
    pub(super) fn reserved_beyond(&self, written: u64) -> u64 {
        (self.region.len() as u64).saturating_sub(written)
    }
}

impl Spool {
    /// Writes record `seq` (taking `needed` bytes on disk) to the active
    /// segment, starting a new segment first when the active one has no
    /// room left or there is none, and moves the next seq on.
    ///
    /// The write is a copy into the active segment's mapped region: the
    /// kernel's page cache, so the record survives the process being killed
    /// as soon as this returns.
    pub(super) fn write_record(
        &mut self,
        seq: u64,
        payload: &[u8],
        needed: u64,
    ) -> Result<(), SpoolError> {
        if let (Some(active), Some(last)) = (&self.active, self.segments.back())
            && last.bytes + needed > active.region.len() as u64
        {
            // A segment that cannot be cut keeps its reservation, which then
            // counts: start_segment checks the limit again.
            self.retire_active();
        }
        if self.active.is_none() {
            self.start_segment(seq, needed)?;
        }
        let (Some(segment), Some(active)) = (self.segments.back_mut(), self.active.as_mut()) else {
            unreachable!("start_segment added and opened the active segment");
        };
        let header = format::encode_header(seq, payload);
        let written = usize::try_from(segment.bytes)
            .map_err(io::Error::other)
            .and_then(|offset| {
                active
                    .region
                    .write_at(offset, &[&header, payload])
                    .map_err(io::Error::other)
            });
        if let Err(source) = written {
            // The room was checked above, so this is a bug; nothing was
            // written and the seq stays unused.
            return Err(SpoolError::Io {
                action: "appending to",
                path: segment_path(&self.options.dir, segment.base),
                source,
            });
        }
        segment.bytes += needed;
        self.disk_bytes += needed;
        self.active_dirty = true;
        self.next_seq += 1;
        Ok(())
    }

    /// Creates (or, if one was left behind, reuses) the segment file whose
    /// first record will be `seq`, reserves and maps its region, and makes
    /// it the active one.
    ///
    /// A ready spare segment is renamed into place, so nothing is written
    /// here. Otherwise the region is written with zeros now: it takes
    /// `segment_bytes` (at least `needed`, the first record's size), but no
    /// more than the spool's limit leaves beside a spare handed out, so the
    /// files never take more than `max_bytes` together.
    ///
    /// # Errors
    /// [`SpoolError::Full`] when even `needed` does not fit beside a spare
    /// handed out; [`SpoolError::Io`] when the file cannot be made.
    pub(super) fn start_segment(&mut self, seq: u64, needed: u64) -> Result<(), SpoolError> {
        let path = segment_path(&self.options.dir, seq);
        let reused = matches!(self.segments.back(), Some(last) if last.base == seq);
        let spare = if !reused && needed <= self.options.segment_bytes {
            self.take_spare(&path)
        } else {
            None
        };
        let (file, kept, size) = if let Some(file) = spare {
            // Zeros only: no record bytes yet, the whole file reserved.
            self.segments.push_back(Segment {
                base: seq,
                bytes: 0,
            });
            (file, 0, self.options.segment_bytes)
        } else {
            // A spare handed out may be on disk, or soon: leave it room.
            let spare_room = if self.spare == Spare::HandedOut {
                self.options.segment_bytes
            } else {
                0
            };
            self.room_for(needed, spare_room)?;
            let left = self.options.max_bytes - self.disk_bytes - spare_room;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(FILE_MODE)
                .open(&path)
                .map_err(SpoolError::io("creating segment", path.clone()))?;
            let kept = if reused {
                self.segments.back().map_or(0, |last| last.bytes)
            } else {
                let bytes = file
                    .metadata()
                    .map_err(SpoolError::io("reading size of", path.clone()))?
                    .len();
                self.segments.push_back(Segment { base: seq, bytes });
                self.disk_bytes += bytes;
                bytes
            };
            (
                file,
                kept,
                kept + self.options.segment_bytes.min(left).max(needed),
            )
        };
        let region = match MappedRegion::reserve(&file, size) {
            Ok(region) => region,
            Err(source) => {
                // A full disk may have let part of the zeros through; hand
                // them back so the file holds only what is counted.
                if let Err(e) = file.set_len(kept) {
                    tracing::warn!(error = %e, segment = %path.display(), "cannot cut a failed reservation");
                }
                return Err(SpoolError::Io {
                    action: "reserving disk space for segment",
                    path,
                    source,
                });
            }
        };
        self.active = Some(Active { file, region });
        self.active_dirty = false;
        self.dir_dirty = true;
        if self.spare == Spare::Failed {
            // One more try a segment, not one a flush.
            self.spare = Spare::Idle;
        }
        Ok(())
    }

    /// Opens the spare segment and renames it to `path`, when one was
    /// handed out and is ready: exactly `segment_bytes` long. Opening first
    /// means a file renamed into place is always one this spool holds open.
    /// A spare still being written is not there yet, and stays handed out;
    /// one of another size (never expected) is deleted.
    fn take_spare(&mut self, path: &Path) -> Option<File> {
        if self.spare != Spare::HandedOut {
            return None;
        }
        let spare = self.options.dir.join(SPARE_FILE);
        let file = match OpenOptions::new().read(true).write(true).open(&spare) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(error = %e, spare = %spare.display(), "cannot open the spare spool segment");
                self.spare = Spare::Failed;
                return None;
            }
        };
        let taken = match file.metadata() {
            Ok(m) if m.len() == self.options.segment_bytes => fs::rename(&spare, path),
            Ok(m) => Err(io::Error::other(format!(
                "it holds {} bytes, not the segment size of {}",
                m.len(),
                self.options.segment_bytes
            ))),
            Err(e) => Err(e),
        };
        match taken {
            Ok(()) => {
                self.spare = Spare::Idle;
                Some(file)
            }
            Err(e) => {
                tracing::warn!(error = %e, spare = %spare.display(), "cannot use the spare spool segment; deleting it");
                let _ = fs::remove_file(&spare);
                self.spare = Spare::Failed;
                None
            }
        }
    }

    /// Hands out the writing of a spare segment, for [`SpareWork::run`] to
    /// do without the lock that guards the spool, when a segment is being
    /// written, no spare is handed out yet, and the limit leaves room for
    /// one beside the segment's reservation.
    pub fn spare_work(&mut self) -> Option<SpareWork> {
        let bytes = self.options.segment_bytes;
        let room = self.room_for(bytes, self.reserved_bytes()).is_ok();
        if self.spare != Spare::Idle || self.active.is_none() || !room {
            return None;
        }
        // Without a handle on the lock the spare could outlive the spool.
        let lock = self.lock.try_clone().ok()?;
        self.spare = Spare::HandedOut;
        Some(SpareWork {
            dir: self.options.dir.clone(),
            bytes,
            _lock: lock,
        })
    }

    /// Forgets the spare handed out, after its [`SpareWork::run`] failed.
    /// Another is handed out once the next segment has started, so a full
    /// disk is not written to again at every flush.
    pub fn spare_failed(&mut self) {
        self.spare = Spare::Failed;
    }

    /// Whether `needed` more bytes fit under the limit beside `besides`
    /// (bytes that count without being records: a spare's).
    ///
    /// # Errors
    /// [`SpoolError::Full`] when they do not.
    pub(super) fn room_for(&self, needed: u64, besides: u64) -> Result<(), SpoolError> {
        let used = self.disk_bytes + besides;
        if used + needed > self.options.max_bytes {
            return Err(SpoolError::Full {
                needed,
                used,
                max: self.options.max_bytes,
            });
        }
        Ok(())
    }

    /// Stops appending to the active segment: unmaps it, cuts its file to
    /// the records it holds and remembers to sync it.
    pub(super) fn retire_active(&mut self) {
        if let Some(Active { file, region }) = self.active.take() {
            let reserved = region.len() as u64;
            if let Some(last) = self.segments.back_mut()
                && let Err(e) = region.finish(&file, last.bytes)
            {
                // The file keeps its zeros, which recovery and the reader
                // pass over; count them, since they take the disk.
                tracing::warn!(
                    error = %e,
                    segment = %segment_path(&self.options.dir, last.base).display(),
                    "cannot hand back the unused reservation of a spool segment"
                );
                self.disk_bytes += reserved.saturating_sub(last.bytes);
                last.bytes = last.bytes.max(reserved);
            }
            if self.active_dirty {
                let base = self.segments.back().map_or(0, |s| s.base);
                self.unsynced.push((base, file));
            }
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
                // The newest segment: stop appending to it first (unmapping
                // it and cutting its reservation, so that a failed deletion
                // leaves no uncounted bytes). The next append starts a new
                // one.
                self.retire_active();
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
    /// `fdatasync` of a mapped segment's file writes back the pages copied
    /// through the mapping too: Linux keeps one page cache for both.
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

/// The writing of a spare segment, taken by [`Spool::spare_work`], to run
/// without the spool's lock.
#[derive(Debug)]
pub struct SpareWork {
    dir: PathBuf,
    bytes: u64,
    /// The spool directory's lock, shared: a spool opened again on the
    /// directory waits out (refuses, as locked) a spare still being written
    /// for the one before it.
    _lock: File,
}

impl SpareWork {
    /// Writes the spare: zeros into `spare.tmp`, renamed to `spare` once
    /// whole, where the next segment to start finds it.
    ///
    /// # Errors
    /// When the file cannot be written or renamed; call
    /// [`Spool::spare_failed`] then. Segments start without a spare
    /// meanwhile, writing their zeros themselves.
    pub fn run(self) -> Result<(), SpoolError> {
        let tmp = self.dir.join(SPARE_TMP_FILE);
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .and_then(|file| remaudit_mapped::write_zeros(&file, self.bytes))
            .and_then(|()| fs::rename(&tmp, self.dir.join(SPARE_FILE)));
        written.map_err(|source| {
            let _ = fs::remove_file(&tmp);
            SpoolError::Io {
                action: "writing spare segment",
                path: tmp,
                source,
            }
        })
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
