//! A durable, segmented, checksummed on-disk log of records.
//!
//! Every record the publisher accepts is appended here first, so it survives
//! outages of the service and crashes of the process until it has been
//! delivered and acknowledged.
//!
//! # On disk
//!
//! The spool directory holds:
//!
//! - segment files named by the sequence number of their first record,
//!   zero-padded so they sort (`00000000000000001234.seg`). Each is a run of
//!   records: a 24-byte header (magic, seq, payload length, a CRC32 over seq,
//!   length and payload, and a CRC32 of the header itself) then the payload.
//!   The segment being written is allocated on disk ahead of its records
//!   and mapped (see `remaudit_mapped`), so an append is a copy into
//!   memory; its unwritten rest reads as zeros, which no record starts
//!   with. It is cut to its records when it is full or the spool is
//!   dropped.
//! - `spare`: zeros the size of a segment, written in the background
//!   (`spare.tmp`, then renamed), that the next segment is renamed from,
//!   so starting a segment writes nothing on the appending thread. Deleted
//!   at open.
//! - `ledger`: the highest acknowledged seq and a floor below which seqs are
//!   never handed out again, replaced atomically.
//! - `lock`: held (`flock`) while a [`Spool`] is open, so two processes
//!   cannot write the same directory.
//!
//! Other files are ignored. The directory, when the spool creates it, is
//! readable by its owner only (0700), and so is every file (0600).
//!
//! # Parts
//!
//! This file holds the [`Spool`] handle: its options, errors, state and
//! public operations. Each concern behind it has its own module:
//!
//! - `format`: the bytes of a record and of the ledger;
//! - `segment`: appending to segment files, rolling over, flushing and
//!   deleting them;
//! - `ledger`: recording acknowledgements durably;
//! - `recovery`: what [`Spool::open`] makes of the files a crash left;
//! - `dir`: the directory, its file names, modes and lock;
//! - `reader`: [`SpoolReader`], reading records on another thread.

mod dir;
mod format;
mod ledger;
mod reader;
mod recovery;
mod segment;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::PathBuf;

pub use ledger::AckWork;
pub use reader::SpoolReader;
pub use recovery::Recovery;
pub use segment::{SpareWork, SyncWork};

use format::{Ledger, MAX_SEQ};
use segment::Segment;

/// Default for [`SpoolSettings::max_bytes`]: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Default for [`SpoolSettings::segment_bytes`]: 8 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 << 20;
/// Default for [`SpoolSettings::max_record_bytes`]: 1 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;
/// Bytes each record takes on disk besides its payload.
pub const RECORD_OVERHEAD_BYTES: u64 = format::HEADER_LEN as u64;

/// Settings of a spool.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// Directory of the spool; created if missing.
    pub dir: PathBuf,
    /// Most bytes all segment files together may take.
    pub max_bytes: u64,
    /// A new segment file is started rather than grow one past this size.
    pub segment_bytes: u64,
    /// Larger payloads are refused.
    pub max_record_bytes: usize,
}

impl SpoolSettings {
    /// Options for a spool in `dir` with the default limits.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory does not exist and cannot be created.
    #[error(
        "cannot create spool directory {}: {source}; check --spool-dir / REMAUDIT_SPOOL_DIR and the permissions of its parent",
        dir.display()
    )]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Files cannot be created in the spool directory.
    #[error(
        "spool directory {} is not writable: {source}; check --spool-dir / REMAUDIT_SPOOL_DIR and the directory's owner and permissions",
        dir.display()
    )]
    NotWritable {
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Another open spool (in this or another process) holds the directory.
    #[error(
        "spool directory {} is in use by another process; stop it or give each process its own --spool-dir / REMAUDIT_SPOOL_DIR",
        dir.display()
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// The options cannot work.
    #[error("invalid spool settings: {0}; fix the spool options")]
    InvalidOptions(String),
    /// Appending would take the spool past `max_bytes`.
    #[error(
        "spool is full: {used} of {max} bytes used and the record needs {needed} more; wait for records to be delivered and acknowledged, or raise the spool size limit"
    )]
    Full {
        /// Bytes the record would take on disk.
        needed: u64,
        /// Bytes of segment files now.
        used: u64,
        /// The limit.
        max: u64,
    },
    /// The payload is larger than the spool accepts.
    #[error(
        "record of {len} bytes is larger than the spool accepts ({max} bytes); shrink the record or raise the record size limit"
    )]
    TooLarge {
        /// Payload bytes.
        len: usize,
        /// Largest payload accepted.
        max: usize,
    },
    /// Every sequence number has been handed out: only damaged or crafted
    /// spool files can get here.
    #[error(
        "spool {} has run out of sequence numbers; its files are damaged: move the directory aside and start with an empty one",
        dir.display()
    )]
    Exhausted {
        /// The directory.
        dir: PathBuf,
    },
    /// A file operation failed.
    #[error(
        "spool I/O failed while {action} {}: {source}; check free space, permissions and health of the disk holding the spool",
        path.display()
    )]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

impl SpoolError {
    /// Wraps an I/O error of `action` on `path`.
    fn io(action: &'static str, path: PathBuf) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// A durable, append-only log of records in a directory.
///
/// Not shared between threads by itself: wrap it in a mutex, and hand
/// [`SpoolReader`]s (from [`Spool::reader`]) to readers.
#[derive(Debug)]
pub struct Spool {
    options: SpoolSettings,
    /// Segment files, oldest first.
    segments: VecDeque<Segment>,
    /// The newest segment, mapped for appending, when it is being written.
    active: Option<segment::Active>,
    /// Whether the active segment has writes not yet synced.
    active_dirty: bool,
    /// Earlier segments with writes not yet synced.
    unsynced: Vec<(u64, File)>,
    /// Whether segment files were created or deleted since the last
    /// directory sync.
    dir_dirty: bool,
    next_seq: u64,
    /// Every seq up to this one is acknowledged.
    acked: u64,
    /// Seqs above `acked` known to hold no readable record (damaged or
    /// lost), as sorted, disjoint `start..end` ranges.
    holes: VecDeque<(u64, u64)>,
    disk_bytes: u64,
    /// The ledger as last written, or handed out by [`Spool::ack_work`] to
    /// be written.
    ledger: Ledger,
    /// The acknowledgement a ledger on disk is known to hold. Segment files
    /// go only up to it, so none goes before the ledger says it may.
    written_acked: u64,
    /// Whether `ledger` was handed out by [`Spool::ack_work`] and no failure
    /// of that write has been reported since.
    ledger_handed_out: bool,
    /// Whether a spare segment is handed out.
    spare: segment::Spare,
    /// Held for as long as the spool is open.
    lock: File,
}

impl Spool {
    /// Opens (creating) the spool, recovering from torn writes and
    /// corruption.
    ///
    /// # Errors
    /// When the options are invalid, the directory cannot be created or
    /// written, another spool has it open, or a file cannot be read.
    pub fn open(options: SpoolSettings) -> Result<(Spool, Recovery), SpoolError> {
        validate(&options)?;
        let dir = options.dir.clone();
        let lock = dir::prepare(&dir)?;
        dir::remove_spares(&dir)?;
        let ledger = ledger::read(&dir)?;
        let found = recovery::recover(&dir, ledger, options.max_record_bytes)?;

        let mut spool = Spool {
            options,
            segments: found.segments,
            active: None,
            active_dirty: false,
            unsynced: Vec::new(),
            dir_dirty: found.removed,
            next_seq: found.next_seq,
            acked: ledger.acked,
            holes: found.holes,
            disk_bytes: 0,
            ledger,
            written_acked: ledger.acked,
            ledger_handed_out: false,
            spare: segment::Spare::Idle,
            lock,
        };
        spool.disk_bytes = spool.segments.iter().map(|s| s.bytes).sum();
        // Record the floor before cutting anything off, so the cut seq stays
        // used even if we crash right after.
        spool.write_ledger()?;
        if let Some(cut) = &found.cut {
            recovery::cut_torn_tail(&dir, cut)?;
        }
        spool.delete_acked_segments();
        spool.sync_dir_if_dirty()?;

        let recovery = found.recovery;
        if recovery.corrupt_records > 0 || recovery.truncated_bytes > 0 {
            tracing::warn!(
                dir = %dir.display(),
                records = recovery.records,
                corrupt_records = recovery.corrupt_records,
                truncated_bytes = recovery.truncated_bytes,
                "spool recovered from damage"
            );
        } else {
            tracing::debug!(dir = %dir.display(), records = recovery.records, "spool opened");
        }
        Ok((spool, recovery))
    }

    /// Appends one record; returns its sequence number (strictly
    /// increasing, never reused, survives reopen).
    ///
    /// The record is in the kernel's page cache (copied into the active
    /// segment's mapping) before this returns, so killing the process
    /// loses nothing appended; only a flush ([`Spool::sync_work`])
    /// makes it survive a machine crash.
    ///
    /// # Errors
    /// [`SpoolError::TooLarge`] past the record size limit,
    /// [`SpoolError::Full`] when the spool would exceed `max_bytes`,
    /// [`SpoolError::Io`] when writing fails (nothing is appended then).
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, SpoolError> {
        let max = self.record_limit();
        if payload.len() > max {
            return Err(SpoolError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let needed = RECORD_OVERHEAD_BYTES + payload.len() as u64;
        self.room_for(needed, 0)?;
        let seq = self.next_seq;
        if seq > MAX_SEQ {
            return Err(SpoolError::Exhausted {
                dir: self.options.dir.clone(),
            });
        }
        self.write_record(seq, payload, needed)?;
        Ok(seq)
    }

    /// Takes what must be flushed to make everything appended so far durable
    /// (segment files written since the last flush, and the directory if
    /// segment files came or went), so the caller can flush it with
    /// [`SyncWork::run`] without holding the lock that guards the spool:
    /// appends go on meanwhile. Everything appended before this call is
    /// durable once `run` succeeds. On failure the records may not survive a
    /// power cut; the next call flushes only what was written since.
    ///
    /// # Errors
    /// When the active segment's handle cannot be duplicated.
    pub fn sync_work(&mut self) -> Result<SyncWork, SpoolError> {
        let mut files: Vec<(PathBuf, File)> = self
            .unsynced
            .drain(..)
            .map(|(base, file)| (dir::segment_path(&self.options.dir, base), file))
            .collect();
        if self.active_dirty
            && let Some(active) = &self.active
        {
            let base = self.segments.back().map_or(0, |s| s.base);
            let path = dir::segment_path(&self.options.dir, base);
            let clone = active
                .file
                .try_clone()
                .map_err(SpoolError::io("duplicating the handle of", path.clone()))?;
            files.push((path, clone));
            self.active_dirty = false;
        }
        let dir = std::mem::take(&mut self.dir_dirty).then(|| self.options.dir.clone());
        Ok(SyncWork { files, dir })
    }

    /// Marks every record with seq <= `seq` acknowledged in memory and returns
    /// the ledger write for [`AckWork::run`] to make without the lock that
    /// guards the spool. Run it before the next call. Segments are deleted
    /// only up to the acknowledgement of the last ledger written, so no file
    /// goes before the ledger says it may. A failed `run` only means those
    /// records are sent again after a restart; call
    /// [`Spool::ledger_unwritten`] so the next call writes again.
    pub fn ack_work(&mut self, seq: u64) -> AckWork {
        if self.ledger_handed_out {
            // The previous write ran, and no failure was reported.
            self.written_acked = self.written_acked.max(self.ledger.acked);
        }
        self.delete_acked_segments();
        self.advance_ack(seq);
        let ledger = Ledger {
            acked: self.acked,
            floor: self.next_seq,
        };
        let write = (ledger != self.ledger).then(|| {
            self.ledger = ledger;
            self.ledger_handed_out = true;
            ledger
        });
        AckWork {
            dir: self.options.dir.clone(),
            ledger: write,
        }
    }

    /// Forgets that the ledger was written, after an [`AckWork::run`] failed.
    pub fn ledger_unwritten(&mut self) {
        self.ledger = Ledger { acked: 0, floor: 0 };
        self.ledger_handed_out = false;
    }

    /// Sequence number of the oldest unacknowledged record (== `next_seq()`
    /// when none).
    #[must_use]
    pub fn first_unacked(&self) -> u64 {
        let mut first = self.acked + 1;
        for &(start, end) in &self.holes {
            if start > first {
                break;
            }
            first = first.max(end);
        }
        first.min(self.next_seq)
    }

    /// Sequence number the next append will get.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Unacknowledged records that can still be read.
    #[must_use]
    pub fn pending_records(&self) -> u64 {
        let first = self.first_unacked();
        let missing: u64 = self
            .holes
            .iter()
            .map(|&(start, end)| end.min(self.next_seq).saturating_sub(start.max(first)))
            .sum();
        (self.next_seq - first).saturating_sub(missing)
    }

    /// Bytes of segment files on disk.
    #[must_use]
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Bytes the segment being written has reserved on disk and not yet
    /// filled: its files take [`Spool::disk_bytes`] plus these.
    #[must_use]
    pub fn reserved_bytes(&self) -> u64 {
        match (&self.active, self.segments.back()) {
            (Some(active), Some(last)) => active.reserved_beyond(last.bytes),
            _ => 0,
        }
    }

    /// Number of segment files on disk.
    #[must_use]
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The options this spool was opened with.
    #[must_use]
    pub fn options(&self) -> &SpoolSettings {
        &self.options
    }

    /// A reader over this spool's directory, usable from another thread
    /// while appends continue.
    #[must_use]
    pub fn reader(&self) -> SpoolReader {
        SpoolReader::new(self.options.dir.clone(), self.options.max_record_bytes)
    }

    /// Largest payload [`Spool::append`] accepts.
    fn record_limit(&self) -> usize {
        let fits = self.options.max_bytes.saturating_sub(RECORD_OVERHEAD_BYTES);
        self.options
            .max_record_bytes
            .min(usize::try_from(fits).unwrap_or(usize::MAX))
    }
}

impl Drop for Spool {
    /// Hands back the active segment's unused reservation, so a stopped
    /// spool's files hold only records (recovery would cut the zeros at the
    /// next open otherwise).
    fn drop(&mut self) {
        self.retire_active();
    }
}

/// Refuses options that cannot work.
fn validate(options: &SpoolSettings) -> Result<(), SpoolError> {
    if options.segment_bytes == 0 {
        return Err(SpoolError::InvalidOptions(
            "segment_bytes must be above 0".into(),
        ));
    }
    if options.max_bytes <= RECORD_OVERHEAD_BYTES {
        return Err(SpoolError::InvalidOptions(format!(
            "max_bytes must be above {RECORD_OVERHEAD_BYTES} to hold any record"
        )));
    }
    if u32::try_from(options.max_record_bytes).is_err() {
        return Err(SpoolError::InvalidOptions(format!(
            "max_record_bytes must be at most {}",
            u32::MAX
        )));
    }
    Ok(())
}
