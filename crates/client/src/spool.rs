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
//!   Only the newest segment is ever appended to; a new one is started when
//!   the current one would grow past `segment_bytes`, and after every open.
//! - `ledger`: the highest acknowledged seq and a floor below which seqs are
//!   never handed out again, replaced atomically (write, fsync, rename, fsync
//!   the directory).
//! - `lock`: held (`flock`) while a [`Spool`] is open, so two processes
//!   cannot write the same directory.
//!
//! Other files are ignored. The directory, when the spool creates it, is
//! readable by its owner only (0700), and so is every file (0600).
//!
//! # Recovery
//!
//! [`Spool::open`] reads every segment that may hold unacknowledged records
//! and checks every checksum. Bytes after the last intact record of the
//! newest segment are a torn write and are cut off. A damaged record
//! elsewhere is skipped: a bad payload behind a good header skips exactly
//! that record; after a bad header the scan looks forward for the next
//! valid header, so later records of the same segment are still delivered.
//! Sequence numbers carry on above everything seen, so a seq is never given
//! to two different records.

mod format;
mod reader;

use std::collections::VecDeque;
use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use reader::SpoolReader;

use format::{Ledger, MAX_SEQ, Payload, Step};

/// Default for [`SpoolOptions::max_bytes`]: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Default for [`SpoolOptions::segment_bytes`]: 8 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 << 20;
/// Default for [`SpoolOptions::max_record_bytes`]: 1 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;
/// Bytes each record takes on disk besides its payload.
pub const RECORD_OVERHEAD_BYTES: u64 = format::HEADER_LEN as u64;

const LEDGER_FILE: &str = "ledger";
const LEDGER_TMP_FILE: &str = "ledger.tmp";
const LOCK_FILE: &str = "lock";
const SEGMENT_SUFFIX: &str = ".seg";
/// Mode of the spool directory when the spool creates it: audit records are
/// for the owner only.
const DIR_MODE: u32 = 0o700;
/// Mode of every file the spool creates.
const FILE_MODE: u32 = 0o600;

/// Settings of a spool.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Directory of the spool; created if missing.
    pub dir: PathBuf,
    /// Most bytes all segment files together may take.
    pub max_bytes: u64,
    /// A new segment file is started rather than grow one past this size.
    pub segment_bytes: u64,
    /// Larger payloads are refused.
    pub max_record_bytes: usize,
}

impl SpoolOptions {
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

/// What opening found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Unacknowledged records found intact.
    pub records: u64,
    /// Records skipped because their checksum or header was bad.
    pub corrupt_records: u64,
    /// Bytes cut off a torn tail (a partial last record).
    pub truncated_bytes: u64,
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

/// One segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    /// Seq of its first record, and its name.
    base: u64,
    /// Its size.
    bytes: u64,
}

/// A durable, append-only log of records in a directory.
///
/// Not shared between threads by itself: wrap it in a mutex, and hand
/// [`SpoolReader`]s (from [`Spool::reader`]) to readers.
#[derive(Debug)]
pub struct Spool {
    options: SpoolOptions,
    /// Segment files, oldest first.
    segments: VecDeque<Segment>,
    /// The newest segment, open for appending, when it is being written.
    active: Option<File>,
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
    /// Reused buffer for encoding a record.
    frame: Vec<u8>,
    /// Held for as long as the spool is open.
    _lock: File,
}

impl Spool {
    /// Opens (creating) the spool, recovering from torn writes and
    /// corruption.
    ///
    /// # Errors
    /// When the options are invalid, the directory cannot be created or
    /// written, another spool has it open, or a file cannot be read.
    pub fn open(options: SpoolOptions) -> Result<(Spool, Recovery), SpoolError> {
        validate(&options)?;
        let dir = options.dir.clone();
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)
            .map_err(|source| SpoolError::CreateDir {
                dir: dir.clone(),
                source,
            })?;
        let lock = lock_dir(&dir)?;
        check_writable(&dir)?;

        let ledger = read_ledger(&dir)?;
        let mut bases = list_segments(&dir).map_err(SpoolError::io("listing", dir.clone()))?;
        // Segments whose successor starts at or below the first
        // unacknowledged seq hold only acknowledged records.
        let keep_from = bases
            .windows(2)
            .take_while(|w| w[1] <= ledger.acked + 1)
            .count();
        for &base in &bases[..keep_from] {
            remove_segment(&dir, base)?;
        }
        bases.drain(..keep_from);

        let scan = scan_segments(&dir, &bases, ledger.acked, options.max_record_bytes)?;
        let mut next_seq = (ledger.acked + 1)
            .max(ledger.floor)
            .max(scan.highest.map_or(0, |h| h + 1))
            .max(bases.last().copied().unwrap_or(0));
        if let Some(cut) = &scan.cut {
            // The torn record had the seq after the last one of its segment;
            // it may have been read and delivered, so never reuse it.
            next_seq = next_seq.max(cut.torn_seq + 1);
        }
        let mut holes = scan.holes;
        if next_seq > scan.expect {
            holes.push_back((scan.expect, next_seq));
        }

        let mut spool = Spool {
            options,
            segments: scan.segments,
            active: None,
            active_dirty: false,
            unsynced: Vec::new(),
            dir_dirty: keep_from > 0,
            next_seq,
            acked: ledger.acked,
            holes,
            disk_bytes: 0,
            ledger,
            written_acked: ledger.acked,
            ledger_handed_out: false,
            frame: Vec::new(),
            _lock: lock,
        };
        spool.disk_bytes = spool.segments.iter().map(|s| s.bytes).sum();
        // Record the floor before cutting anything off, so the cut seq stays
        // used even if we crash right after.
        spool.write_ledger()?;
        if let Some(cut) = &scan.cut {
            let path = segment_path(&dir, cut.base);
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(SpoolError::io("opening segment", path.clone()))?;
            file.set_len(cut.keep)
                .and_then(|()| file.sync_all())
                .map_err(SpoolError::io("truncating torn tail of", path))?;
        }
        spool.delete_acked_segments();
        spool.sync_dir_if_dirty()?;

        let recovery = Recovery {
            records: scan.records,
            corrupt_records: scan.corrupt,
            truncated_bytes: scan.cut.map_or(0, |c| c.cut),
        };
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
    /// The record reaches the OS before this returns, so killing the
    /// process loses nothing appended; only a flush ([`Spool::sync_work`])
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
        if self.disk_bytes + needed > self.options.max_bytes {
            return Err(SpoolError::Full {
                needed,
                used: self.disk_bytes,
                max: self.options.max_bytes,
            });
        }
        let seq = self.next_seq;
        if seq > MAX_SEQ {
            return Err(SpoolError::Exhausted {
                dir: self.options.dir.clone(),
            });
        }
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
            .map(|(base, file)| (segment_path(&self.options.dir, base), file))
            .collect();
        if self.active_dirty
            && let Some(file) = &self.active
        {
            let base = self.segments.back().map_or(0, |s| s.base);
            let path = segment_path(&self.options.dir, base);
            let clone = file
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

    /// Moves the acknowledgement up to `seq` (never past what was handed
    /// out, never backwards) and drops the holes it passes; says whether it moved.
    fn advance_ack(&mut self, seq: u64) -> bool {
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

    /// Sequence number of the oldest unacknowledged record (== next_seq()
    /// when none).
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
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Unacknowledged records that can still be read.
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
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Number of segment files on disk.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The options this spool was opened with.
    pub fn options(&self) -> &SpoolOptions {
        &self.options
    }

    /// A reader over this spool's directory, usable from another thread
    /// while appends continue.
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

    /// Creates (or, if an empty one was left behind, reuses) the segment
    /// file whose first record will be `seq`, and makes it the active one.
    fn start_segment(&mut self, seq: u64) -> Result<(), SpoolError> {
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
    fn retire_active(&mut self) {
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
    fn delete_acked_segments(&mut self) {
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

    /// Replaces the ledger with the current ack and seq floor, durably,
    /// unless it already says that.
    fn write_ledger(&mut self) -> Result<(), SpoolError> {
        let ledger = Ledger {
            acked: self.acked,
            floor: self.next_seq,
        };
        if ledger == self.ledger {
            return Ok(());
        }
        replace_ledger_file(&self.options.dir, ledger)?;
        self.ledger = ledger;
        self.written_acked = ledger.acked;
        self.dir_dirty = true;
        self.sync_dir_if_dirty()
    }

    /// Fsyncs the directory if files were created, deleted or renamed in it
    /// since the last time.
    fn sync_dir_if_dirty(&mut self) -> Result<(), SpoolError> {
        if self.dir_dirty {
            let dir = &self.options.dir;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(SpoolError::io("syncing directory", dir.clone()))?;
            self.dir_dirty = false;
        }
        Ok(())
    }
}

/// A ledger write taken by [`Spool::ack_work`], to run without the spool's lock.
#[derive(Debug)]
pub struct AckWork {
    dir: PathBuf,
    ledger: Option<Ledger>,
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
        replace_ledger_file(&self.dir, ledger)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(SpoolError::io("syncing directory", self.dir.clone()))
    }
}

/// Flushes taken by [`Spool::sync_work`], to run without the spool's lock.
#[derive(Debug)]
pub struct SyncWork {
    files: Vec<(PathBuf, File)>,
    dir: Option<PathBuf>,
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
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(SpoolError::io("syncing directory", dir))?;
        }
        Ok(())
    }
}

/// Refuses options that cannot work.
fn validate(options: &SpoolOptions) -> Result<(), SpoolError> {
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

/// Takes the directory's lock file.
fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(|source| SpoolError::NotWritable {
            dir: dir.to_path_buf(),
            source,
        })?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(SpoolError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(SpoolError::io("locking", path)(e)),
    }
}

/// Checks that files can be created in the directory.
fn check_writable(dir: &Path) -> Result<(), SpoolError> {
    let probe = dir.join(LEDGER_TMP_FILE);
    create_fresh(&probe)
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|source| SpoolError::NotWritable {
            dir: dir.to_path_buf(),
            source,
        })
}

/// Creates `path` as a new, empty file readable by the owner only, after
/// removing whatever was there. Never follows a symlink planted at `path`:
/// the link itself is removed, and an exclusive create fails rather than
/// open something that appeared in between.
fn create_fresh(path: &Path) -> io::Result<File> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// The ledger, or nothing acknowledged if there is none yet.
fn read_ledger(dir: &Path) -> Result<Ledger, SpoolError> {
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

/// Path of the segment file whose first record is `base`.
fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}{SEGMENT_SUFFIX}"))
}

/// First seqs of the segment files in `dir`, ascending.
fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(digits) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        if digits.len() == 20
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Ok(base) = digits.parse()
            && base <= MAX_SEQ
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Writes `ledger` to a temp file, fsyncs it and renames it over the ledger
/// (the caller fsyncs the directory).
fn replace_ledger_file(dir: &Path, ledger: Ledger) -> Result<(), SpoolError> {
    let tmp = dir.join(LEDGER_TMP_FILE);
    let mut file = create_fresh(&tmp).map_err(SpoolError::io("creating", tmp.clone()))?;
    file.write_all(&format::encode_ledger(ledger))
        .and_then(|()| file.sync_all())
        .map_err(SpoolError::io("writing", tmp.clone()))?;
    drop(file);
    let path = dir.join(LEDGER_FILE);
    fs::rename(&tmp, &path).map_err(SpoolError::io("replacing", path))
}

/// Deletes a segment file; one already gone is fine.
fn remove_segment(dir: &Path, base: u64) -> Result<(), SpoolError> {
    let path = segment_path(dir, base);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(SpoolError::io("deleting segment", path)(e))
        }
        _ => Ok(()),
    }
}

/// A torn tail to cut off the newest segment.
#[derive(Debug, Clone, Copy)]
struct Cut {
    /// The segment.
    base: u64,
    /// Bytes to keep.
    keep: u64,
    /// Bytes cut off.
    cut: u64,
    /// Seq the torn record would have had.
    torn_seq: u64,
}

/// What reading the segments at open found.
#[derive(Debug, Default)]
struct Scan {
    segments: VecDeque<Segment>,
    /// Highest seq of any record with a valid header.
    highest: Option<u64>,
    /// Seqs above the ack with no readable record, up to the last readable
    /// record.
    holes: VecDeque<(u64, u64)>,
    /// The seq after the last readable record (or after the ack).
    expect: u64,
    records: u64,
    corrupt: u64,
    cut: Option<Cut>,
}

/// Reads the segments `bases` of `dir`, checking every unacknowledged
/// record.
fn scan_segments(
    dir: &Path,
    bases: &[u64],
    acked: u64,
    max_len: usize,
) -> Result<Scan, SpoolError> {
    let mut scan = Scan {
        expect: acked + 1,
        ..Scan::default()
    };
    let mut payload = Vec::new();
    for (i, &base) in bases.iter().enumerate() {
        let path = segment_path(dir, base);
        let read_err = || SpoolError::io("reading segment", path.clone());
        let file = File::open(&path).map_err(read_err())?;
        let len = file.metadata().map_err(read_err())?.len();
        let mut offset = 0;
        // Any record at `offset` has at least this seq.
        let mut pos = base;
        // End of the last intact record, and the seq after it.
        let mut good_end = 0;
        let mut good_pos = base;
        // Whether bytes that are no record were skipped since then.
        let mut garbage = false;
        // Damaged records seen since then.
        let mut damaged = 0;
        loop {
            let header = match format::read_header(&file, offset, max_len).map_err(read_err())? {
                Step::End => break,
                Step::Partial => {
                    garbage = true;
                    break;
                }
                Step::Header(header) if header.seq >= pos => header,
                Step::Header(_) | Step::BadHeader => {
                    garbage = true;
                    match format::resync(&file, offset + 1, max_len, pos).map_err(read_err())? {
                        Some((at, _)) => {
                            offset = at;
                            continue;
                        }
                        None => break,
                    }
                }
            };
            let end = offset + header.frame_len();
            if end > len {
                garbage = true;
                break;
            }
            scan.highest = scan.highest.max(Some(header.seq));
            if header.seq <= acked {
                offset = end;
                pos = header.seq + 1;
                good_end = end;
                good_pos = pos;
                continue;
            }
            // Records lost to garbage before this one.
            if garbage {
                damaged += header.seq.saturating_sub(pos.max(scan.expect));
                garbage = false;
            }
            let state =
                format::read_payload(&file, offset, &header, &mut payload).map_err(read_err())?;
            offset = end;
            pos = header.seq + 1;
            match state {
                Payload::Intact => {
                    if header.seq > scan.expect {
                        scan.holes.push_back((scan.expect, header.seq));
                    }
                    scan.expect = scan.expect.max(header.seq + 1);
                    scan.records += 1;
                    scan.corrupt += damaged;
                    damaged = 0;
                    good_end = end;
                    good_pos = pos;
                }
                Payload::Damaged => damaged += 1,
                Payload::Partial => {
                    garbage = true;
                    break;
                }
            }
        }
        let mut bytes = len;
        if i + 1 == bases.len() {
            if good_end < len {
                scan.cut = Some(Cut {
                    base,
                    keep: good_end,
                    cut: len - good_end,
                    torn_seq: good_pos,
                });
                bytes = good_end;
            }
        } else {
            scan.corrupt += damaged;
            if garbage {
                scan.corrupt += bases[i + 1].saturating_sub(pos.max(scan.expect));
            }
        }
        scan.segments.push_back(Segment { base, bytes });
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::{Arc, Mutex};

    const FRAME_OVERHEAD: usize = RECORD_OVERHEAD_BYTES as usize;

    fn options(dir: &Path, segment_bytes: u64, max_bytes: u64) -> SpoolOptions {
        SpoolOptions {
            segment_bytes,
            max_bytes,
            ..SpoolOptions::new(dir)
        }
    }

    /// A payload of `len` bytes that differs per `seed`.
    fn payload(seed: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (seed as usize * 31 + i * 7) as u8)
            .collect()
    }

    /// Acknowledges through `seq` as the publisher does: the ledger write
    /// taken and run, then a second round, which deletes the segments the
    /// first one's ledger lets go.
    fn ack(spool: &mut Spool, seq: u64) {
        for _ in 0..2 {
            spool.ack_work(seq).run().unwrap();
        }
    }

    /// Flushes as the publisher does.
    fn sync(spool: &mut Spool) {
        spool.sync_work().unwrap().run().unwrap();
    }

    fn open(options: &SpoolOptions) -> (Spool, Recovery) {
        Spool::open(options.clone()).expect("open spool")
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        list_segments(dir)
            .unwrap()
            .into_iter()
            .map(|b| segment_path(dir, b))
            .collect()
    }

    fn bytes_on_disk(dir: &Path) -> u64 {
        segment_files(dir)
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum()
    }

    /// Everything readable from `from` up to the spool's next seq.
    fn read_all(spool: &Spool, reader: &mut SpoolReader, from: u64) -> Vec<(u64, Vec<u8>)> {
        reader
            .read(from, spool.next_seq(), usize::MAX, usize::MAX)
            .unwrap()
    }

    fn seqs(records: &[(u64, Vec<u8>)]) -> Vec<u64> {
        records.iter().map(|r| r.0).collect()
    }

    /// Flips one byte of a file.
    fn flip_byte(path: &Path, at: u64) {
        let mut bytes = fs::read(path).unwrap();
        bytes[at as usize] ^= 0x55;
        fs::write(path, bytes).unwrap();
    }

    fn truncate(path: &Path, len: u64) {
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    #[test]
    fn round_trip_across_segments_in_batches_then_acks_delete_segments() {
        let dir = tempfile::tempdir().unwrap();
        // 40-byte payloads make 64-byte records: three per 200-byte segment.
        let opts = options(dir.path(), 200, 1 << 20);
        let frame = (FRAME_OVERHEAD + 40) as u64;
        let (mut spool, recovery) = open(&opts);
        assert_eq!(recovery, Recovery::default());
        for seq in 1..=20 {
            assert_eq!(spool.append(&payload(seq, 40)).unwrap(), seq);
        }
        assert_eq!(spool.segment_count(), 7);
        assert_eq!(segment_files(dir.path()).len(), 7);
        assert_eq!(spool.disk_bytes(), 20 * frame);
        assert_eq!(bytes_on_disk(dir.path()), 20 * frame);

        // Batches limited by record count.
        let mut reader = spool.reader();
        let mut from = 1;
        let mut sizes = Vec::new();
        let mut got = Vec::new();
        loop {
            let batch = reader.read(from, spool.next_seq(), 6, 1 << 20).unwrap();
            if batch.is_empty() {
                break;
            }
            sizes.push(batch.len());
            from = batch.last().unwrap().0 + 1;
            got.extend(batch);
        }
        assert_eq!(sizes, [6, 6, 6, 2]);
        let expected: Vec<_> = (1..=20).map(|s| (s, payload(s, 40))).collect();
        assert_eq!(got, expected);

        // Batches limited by payload bytes: two 40-byte payloads fit in 100.
        let batch = reader.read(1, spool.next_seq(), 10, 100).unwrap();
        assert_eq!(seqs(&batch), [1, 2]);
        let batch = reader.read(3, spool.next_seq(), 10, 100).unwrap();
        assert_eq!(seqs(&batch), [3, 4]);
        // The first record is returned even when it alone is over the limit.
        let batch = reader.read(5, spool.next_seq(), 10, 0).unwrap();
        assert_eq!(seqs(&batch), [5]);
        // Nothing at or past `until`.
        let batch = reader.read(2, 5, 10, 1 << 20).unwrap();
        assert_eq!(seqs(&batch), [2, 3, 4]);
        assert!(reader.read(5, 5, 10, 1 << 20).unwrap().is_empty());

        // Acking through 7 frees the first two segments (1-3, 4-6) only.
        ack(&mut spool, 7);
        assert_eq!(spool.first_unacked(), 8);
        assert_eq!(spool.pending_records(), 13);
        assert_eq!(segment_files(dir.path()).len(), 5);
        assert_eq!(spool.disk_bytes(), 14 * frame);
        assert_eq!(bytes_on_disk(dir.path()), 14 * frame);
        assert_eq!(
            seqs(&read_all(&spool, &mut reader, 8)),
            (8..=20).collect::<Vec<_>>()
        );

        // Acking everything frees every segment, the one being written too.
        ack(&mut spool, 20);
        assert_eq!(segment_files(dir.path()).len(), 0);
        assert_eq!(spool.disk_bytes(), 0);
        assert_eq!(spool.pending_records(), 0);
        assert_eq!(spool.first_unacked(), 21);
        assert_eq!(spool.append(&payload(21, 40)).unwrap(), 21);
        assert_eq!(segment_files(dir.path()), [segment_path(dir.path(), 21)]);
        assert_eq!(read_all(&spool, &mut reader, 21), [(21, payload(21, 40))]);
    }

    #[test]
    fn reopen_returns_unacked_records_and_continues_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), 200, 1 << 20);
        let (mut spool, _) = open(&opts);
        for seq in 1..=10 {
            spool.append(&payload(seq, 40)).unwrap();
        }
        ack(&mut spool, 4);
        drop(spool);

        let (mut spool, recovery) = open(&opts);
        assert_eq!(
            recovery,
            Recovery {
                records: 6,
                ..Recovery::default()
            }
        );
        assert_eq!(spool.first_unacked(), 5);
        assert_eq!(spool.next_seq(), 11);
        assert_eq!(spool.pending_records(), 6);
        let expected: Vec<_> = (5..=10).map(|s| (s, payload(s, 40))).collect();
        let first = spool.first_unacked();
        assert_eq!(read_all(&spool, &mut spool.reader(), first), expected);
        assert_eq!(spool.append(b"eleven").unwrap(), 11);

        // With everything acknowledged and every segment gone, seqs still
        // carry on from the ledger.
        ack(&mut spool, 11);
        assert_eq!(segment_files(dir.path()).len(), 0);
        drop(spool);
        let (mut spool, recovery) = open(&opts);
        assert_eq!(recovery, Recovery::default());
        assert_eq!(spool.next_seq(), 12);
        assert_eq!(spool.first_unacked(), 12);
        assert_eq!(spool.append(b"twelve").unwrap(), 12);
    }

    /// Cuts the last record of a one-segment spool of five to `keep` bytes
    /// and checks what reopening makes of it.
    fn check_torn_tail(keep: u64) {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), 1 << 20, 1 << 20);
        let frame = (FRAME_OVERHEAD + 30) as u64;
        let (mut spool, _) = open(&opts);
        for seq in 1..=5 {
            spool.append(&payload(seq, 30)).unwrap();
        }
        drop(spool);
        let [segment] = &segment_files(dir.path())[..] else {
            panic!("expected one segment");
        };
        truncate(segment, 4 * frame + keep);

        let (mut spool, recovery) = open(&opts);
        assert_eq!(
            recovery,
            Recovery {
                records: 4,
                corrupt_records: 0,
                truncated_bytes: keep,
            }
        );
        assert_eq!(fs::metadata(segment).unwrap().len(), 4 * frame);
        assert_eq!(spool.disk_bytes(), 4 * frame);
        assert_eq!(spool.pending_records(), 4);
        // The torn record's seq may have been delivered: it is not reused.
        assert_eq!(spool.next_seq(), 6);
        let mut reader = spool.reader();
        let expected: Vec<_> = (1..=4).map(|s| (s, payload(s, 30))).collect();
        assert_eq!(read_all(&spool, &mut reader, 1), expected);
        assert_eq!(spool.append(&payload(6, 30)).unwrap(), 6);
        let records = read_all(&spool, &mut reader, 1);
        assert_eq!(seqs(&records), [1, 2, 3, 4, 6]);
        assert_eq!(records[4].1, payload(6, 30));
        assert_eq!(reader.corrupt_records(), 0);
        drop(spool);

        let (spool, recovery) = open(&opts);
        assert_eq!(
            recovery,
            Recovery {
                records: 5,
                ..Recovery::default()
            }
        );
        assert_eq!(spool.next_seq(), 7);
    }

    #[test]
    fn torn_tail_inside_the_payload_is_cut_off() {
        check_torn_tail(RECORD_OVERHEAD_BYTES + 7);
    }

    #[test]
    fn torn_tail_inside_the_header_is_cut_off() {
        check_torn_tail(10);
    }

    /// Damages the third of five records in one segment with `damage(path,
    /// offset of the record)` and checks only that record is lost.
    fn check_one_damaged_record(damage: impl Fn(&Path, u64)) {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), 1 << 20, 1 << 20);
        let frame = (FRAME_OVERHEAD + 30) as u64;
        let (mut spool, _) = open(&opts);
        for seq in 1..=5 {
            spool.append(&payload(seq, 30)).unwrap();
        }
        drop(spool);
        damage(&segment_path(dir.path(), 1), 2 * frame);

        let (mut spool, recovery) = open(&opts);
        assert_eq!(
            recovery,
            Recovery {
                records: 4,
                corrupt_records: 1,
                truncated_bytes: 0,
            }
        );
        assert_eq!(spool.pending_records(), 4);
        let mut reader = spool.reader();
        let expected: Vec<_> = [1, 2, 4, 5].map(|s| (s, payload(s, 30))).into();
        assert_eq!(read_all(&spool, &mut reader, 1), expected);
        assert_eq!(reader.corrupt_records(), 1);
        assert_eq!(spool.append(b"six").unwrap(), 6);
        assert_eq!(seqs(&read_all(&spool, &mut reader, 5)), [5, 6]);
        assert_eq!(reader.corrupt_records(), 1);
    }

    #[test]
    fn damaged_payload_in_mid_segment_skips_only_that_record() {
        check_one_damaged_record(|path, at| flip_byte(path, at + RECORD_OVERHEAD_BYTES + 3));
    }

    #[test]
    fn damaged_header_seq_in_mid_segment_skips_only_that_record() {
        check_one_damaged_record(|path, at| flip_byte(path, at + 5));
    }

    #[test]
    fn damaged_header_magic_in_mid_segment_skips_only_that_record() {
        check_one_damaged_record(flip_byte);
    }

    #[test]
    fn damaged_header_at_the_end_of_an_older_segment_skips_only_that_record() {
        let dir = tempfile::tempdir().unwrap();
        // Three 64-byte records per segment.
        let opts = options(dir.path(), 200, 1 << 20);
        let (mut spool, _) = open(&opts);
        for seq in 1..=6 {
            spool.append(&payload(seq, 40)).unwrap();
        }
        drop(spool);
        flip_byte(&segment_path(dir.path(), 1), 2 * 64 + 6);

        let (spool, recovery) = open(&opts);
        assert_eq!(
            recovery,
            Recovery {
                records: 5,
                corrupt_records: 1,
                truncated_bytes: 0,
            }
        );
        let mut reader = spool.reader();
        assert_eq!(seqs(&read_all(&spool, &mut reader, 1)), [1, 2, 4, 5, 6]);
        assert_eq!(reader.corrupt_records(), 1);
    }

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
        let opts = SpoolOptions {
            max_record_bytes: 100,
            ..SpoolOptions::new(dir.path())
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
    fn directory_that_cannot_be_created_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        fs::write(&file, b"x").unwrap();
        let err = Spool::open(SpoolOptions::new(file.join("spool")))
            .err()
            .unwrap();
        assert!(matches!(err, SpoolError::CreateDir { .. }), "{err:?}");
        assert!(err.to_string().contains("REMAUDIT_SPOOL_DIR"), "{err}");
    }

    #[test]
    fn second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SpoolOptions::new(dir.path());
        let (spool, _) = open(&opts);
        let err = Spool::open(opts.clone()).err().unwrap();
        assert!(matches!(err, SpoolError::Locked { .. }), "{err:?}");
        drop(spool);
        open(&opts);
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_spool_is_readable_by_its_owner_only() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("a").join("spool");
        let (mut spool, _) = open(&options(&dir, 64, 1 << 20));
        for i in 0..4 {
            spool.append(&payload(i, 40)).unwrap();
        }
        ack(&mut spool, 1);
        assert_eq!(mode(&dir), 0o700, "the spool directory");
        assert_eq!(
            mode(&parent.path().join("a")),
            0o700,
            "a directory made for it"
        );
        let files: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(files.iter().any(|f| f.ends_with(LEDGER_FILE)));
        assert!(files.iter().any(|f| f.ends_with(LOCK_FILE)));
        assert!(!segment_files(&dir).is_empty());
        for file in files {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }

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
    fn seqs_at_the_top_of_the_range_are_damage_not_an_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), 1 << 20, 1 << 20);
        let (mut spool, _) = open(&opts);
        spool.append(b"one").unwrap();
        drop(spool);
        // A record with intact checksums and seq u64::MAX, then a good one.
        let segment = segment_files(dir.path()).pop().unwrap();
        let mut frame = Vec::new();
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        format::encode_record(u64::MAX, b"crafted", &mut frame);
        file.write_all(&frame).unwrap();
        format::encode_record(2, b"two", &mut frame);
        file.write_all(&frame).unwrap();
        drop(file);
        // A segment named for the top seq, and a ledger with the top floor.
        fs::write(
            dir.path().join(format!("{}{SEGMENT_SUFFIX}", u64::MAX)),
            &frame,
        )
        .unwrap();
        let (mut spool, recovery) = open(&opts);
        assert_eq!(recovery.records, 2, "the crafted record is skipped");
        assert_eq!(spool.next_seq(), 3);
        assert_eq!(spool.append(b"three").unwrap(), 3);
        let mut reader = spool.reader();
        let got = read_all(&spool, &mut reader, 1);
        assert_eq!(seqs(&got), vec![1, 2, 3]);
        drop(spool);

        fs::write(
            dir.path().join(LEDGER_FILE),
            format::encode_ledger(Ledger {
                acked: 0,
                floor: u64::MAX,
            }),
        )
        .unwrap();
        let (spool, recovery) = open(&opts);
        assert_eq!(
            recovery.records, 3,
            "a ledger out of range counts as damaged"
        );
        assert_eq!(spool.next_seq(), 4);
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
    fn unrelated_files_in_the_directory_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), b"keep").unwrap();
        fs::write(dir.path().join("12.seg"), b"not a segment").unwrap();
        let opts = options(dir.path(), 200, 1 << 20);
        let (mut spool, recovery) = open(&opts);
        assert_eq!(recovery, Recovery::default());
        spool.append(b"one").unwrap();
        ack(&mut spool, 1);
        drop(spool);
        let (spool, recovery) = open(&opts);
        assert_eq!(recovery, Recovery::default());
        assert_eq!(spool.next_seq(), 2);
        assert_eq!(fs::read(dir.path().join("notes.txt")).unwrap(), b"keep");
        assert_eq!(
            fs::read(dir.path().join("12.seg")).unwrap(),
            b"not a segment"
        );
    }

    #[test]
    fn ack_work_records_acks_outside_the_lock_and_deletes_segments_a_round_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = SpoolOptions::new(dir.path());
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

    #[test]
    fn sync_work_taken_under_the_lock_flushes_outside_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = SpoolOptions::new(dir.path());
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

    #[test]
    fn reader_on_another_thread_sees_every_record_while_appends_and_acks_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), 500, 1 << 20);
        let (spool, _) = open(&opts);
        let mut reader = spool.reader();
        let spool = Arc::new(Mutex::new(spool));
        const RECORDS: u64 = 400;

        let consumer = {
            let spool = Arc::clone(&spool);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut from = 1;
                while from <= RECORDS {
                    let until = spool.lock().unwrap().next_seq();
                    let batch = reader.read(from, until, 7, 1 << 20).unwrap();
                    let Some(&(last, _)) = batch.last() else {
                        std::thread::yield_now();
                        continue;
                    };
                    from = last + 1;
                    got.extend(batch);
                    // Acknowledge as delivered, deleting segments under the reader.
                    ack(&mut spool.lock().unwrap(), last);
                }
                (got, reader.corrupt_records())
            })
        };
        for seq in 1..=RECORDS {
            let len = (seq % 50) as usize;
            assert_eq!(
                spool.lock().unwrap().append(&payload(seq, len)).unwrap(),
                seq
            );
        }
        let (got, corrupt) = consumer.join().unwrap();
        let expected: Vec<_> = (1..=RECORDS)
            .map(|s| (s, payload(s, (s % 50) as usize)))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(corrupt, 0);
        let spool = spool.lock().unwrap();
        assert_eq!(spool.pending_records(), 0);
        assert_eq!(spool.disk_bytes(), 0);
        assert_eq!(segment_files(dir.path()).len(), 0);
    }

    /// One step of the model-based test.
    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<u8>),
        Read {
            max_records: usize,
            max_bytes: usize,
        },
        /// Ack through the pending record picked by the number, or an old
        /// seq, as the publisher does: the ledger write is taken, the
        /// segments are flushed, then the write runs. With `fail`, the write
        /// fails (a directory planted where the temporary ledger goes).
        Ack {
            pick: usize,
            fail: bool,
        },
        /// Flush as the publisher does.
        Sync,
        /// Drop (as in a crash: nothing synced) and open again.
        Reopen,
        /// Cut the last record short, as a torn write, then open again.
        TornReopen(usize),
        /// Start over with a new reader.
        NewReader,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Op::Append),
            3 => (1..8usize, 0..1200usize)
                .prop_map(|(max_records, max_bytes)| Op::Read { max_records, max_bytes }),
            2 => any::<usize>().prop_map(|pick| Op::Ack { pick, fail: false }),
            1 => any::<usize>().prop_map(|pick| Op::Ack { pick, fail: true }),
            1 => Just(Op::Sync),
            1 => Just(Op::Reopen),
            1 => any::<usize>().prop_map(Op::TornReopen),
            1 => Just(Op::NewReader),
        ]
    }

    /// The spool under test beside a plain model of what it should hold.
    struct Harness {
        dir: tempfile::TempDir,
        opts: SpoolOptions,
        spool: Option<Spool>,
        reader: SpoolReader,
        /// Records the ledger on disk does not acknowledge, oldest first:
        /// what a crash brings back.
        model: VecDeque<(u64, Vec<u8>)>,
        /// Every seq up to this one is acknowledged in memory; records of
        /// `model` up to it are pending no more until a crash.
        acked: u64,
        /// Seq the next append must get.
        next_seq: u64,
        /// Where the next batch read starts.
        cursor: u64,
        /// The last appended record, while it is still the last on disk.
        last_appended: Option<(u64, usize)>,
    }

    impl Harness {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let opts = SpoolOptions {
                max_record_bytes: 1024,
                ..options(dir.path(), 700, 1 << 20)
            };
            let (spool, recovery) = open(&opts);
            assert_eq!(recovery, Recovery::default());
            let reader = spool.reader();
            Self {
                dir,
                opts,
                spool: Some(spool),
                reader,
                model: VecDeque::new(),
                acked: 0,
                next_seq: 1,
                cursor: 1,
                last_appended: None,
            }
        }

        fn spool(&mut self) -> &mut Spool {
            self.spool.as_mut().unwrap()
        }

        /// Records not acknowledged, oldest first.
        fn pending(&self) -> impl Iterator<Item = &(u64, Vec<u8>)> {
            self.model.iter().filter(|r| r.0 > self.acked)
        }

        fn model_first_unacked(&self) -> u64 {
            self.pending().next().map_or(self.next_seq, |r| r.0)
        }

        fn reopen(&mut self, expected: Recovery) {
            self.spool = None;
            let (spool, recovery) = open(&self.opts);
            assert_eq!(recovery, expected);
            self.spool = Some(spool);
            // What the ledger did not acknowledge comes back.
            self.acked = self.model.front().map_or(self.next_seq, |r| r.0) - 1;
            // A restarted publisher reads from the oldest pending record.
            self.cursor = self.model_first_unacked();
        }

        fn apply(&mut self, op: Op) {
            match op {
                Op::Append(payload) => {
                    let seq = self.spool().append(&payload).unwrap();
                    assert_eq!(seq, self.next_seq);
                    self.next_seq += 1;
                    self.last_appended = Some((seq, payload.len()));
                    self.model.push_back((seq, payload));
                }
                Op::Read {
                    max_records,
                    max_bytes,
                } => {
                    let until = self.spool().next_seq();
                    let got = self
                        .reader
                        .read(self.cursor, until, max_records, max_bytes)
                        .unwrap();
                    let mut expected = Vec::new();
                    let mut bytes = 0;
                    for record in self.pending().filter(|r| r.0 >= self.cursor) {
                        if expected.len() == max_records
                            || (!expected.is_empty() && bytes + record.1.len() > max_bytes)
                        {
                            break;
                        }
                        bytes += record.1.len();
                        expected.push(record.clone());
                    }
                    assert_eq!(got, expected);
                    if let Some(last) = got.last() {
                        self.cursor = last.0 + 1;
                    }
                }
                Op::Ack { pick, fail } => {
                    let pending: Vec<u64> = self.pending().map(|r| r.0).collect();
                    let seq = if pending.is_empty() || pick % 5 == 0 {
                        // Old or (with nothing pending) everything: no change.
                        (pick as u64) % self.model_first_unacked()
                    } else {
                        pending[pick % pending.len()]
                    };
                    let tmp = self.dir.path().join(LEDGER_TMP_FILE);
                    let work = self.spool().ack_work(seq);
                    let sync = self.spool().sync_work().unwrap();
                    sync.run().unwrap();
                    let written = work.ledger;
                    if fail {
                        fs::create_dir(&tmp).unwrap();
                    }
                    let ran = work.run();
                    if fail {
                        fs::remove_dir(&tmp).unwrap();
                    }
                    match (ran, written) {
                        (Ok(()), Some(ledger)) => {
                            assert!(!fail || written.is_none(), "an injected failure fails");
                            // The ledger on disk now acknowledges these.
                            while self.model.front().is_some_and(|r| r.0 <= ledger.acked) {
                                self.model.pop_front();
                            }
                        }
                        (Ok(()), None) => {}
                        (Err(e), _) => {
                            assert!(fail, "{e}");
                            self.spool().ledger_unwritten();
                        }
                    }
                    self.acked = self.acked.max(seq.min(self.next_seq - 1));
                    self.cursor = self.cursor.max(self.model_first_unacked());
                }
                Op::Sync => sync(self.spool()),
                Op::Reopen => {
                    // Records acknowledged only in memory come back.
                    let records = self.model.len() as u64;
                    self.reopen(Recovery {
                        records,
                        ..Recovery::default()
                    });
                }
                Op::TornReopen(cut) => {
                    let Some((seq, len)) = self.last_appended else {
                        return;
                    };
                    if self.model.back().map(|r| r.0) != Some(seq) {
                        return;
                    }
                    self.spool = None;
                    let last = segment_files(self.dir.path()).pop().unwrap();
                    let file_len = fs::metadata(&last).unwrap().len();
                    let frame = (FRAME_OVERHEAD + len) as u64;
                    // Keep between one byte and all but one byte of it.
                    let keep = 1 + cut as u64 % (frame - 1);
                    truncate(&last, file_len - frame + keep);
                    self.model.pop_back();
                    self.last_appended = None;
                    let records = self.model.len() as u64;
                    self.reopen(Recovery {
                        records,
                        corrupt_records: 0,
                        truncated_bytes: keep,
                    });
                }
                Op::NewReader => self.reader = self.spool().reader(),
            }
        }

        /// Checks the spool agrees with the model.
        fn check(&mut self) {
            let first = self.model_first_unacked();
            let pending: Vec<(u64, Vec<u8>)> = self.pending().cloned().collect();
            let (next_seq, model_len) = (self.next_seq, pending.len() as u64);
            let spool = self.spool.as_ref().unwrap();
            assert_eq!(spool.next_seq(), next_seq);
            assert_eq!(spool.first_unacked(), first);
            assert_eq!(spool.pending_records(), model_len);
            assert_eq!(spool.disk_bytes(), bytes_on_disk(self.dir.path()));
            assert_eq!(spool.segment_count(), segment_files(self.dir.path()).len());
            let mut fresh = spool.reader();
            let all = read_all(spool, &mut fresh, first);
            assert_eq!(all, pending);
            assert!(
                spool.written_acked < self.model.front().map_or(self.next_seq, |r| r.0),
                "segments go only up to what a written ledger acknowledges"
            );
            assert_eq!(fresh.corrupt_records(), 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn spool_behaves_like_a_queue_through_crashes_torn_writes_and_failed_ledger_writes(
            ops in proptest::collection::vec(op(), 1..80)
        ) {
            let mut harness = Harness::new();
            for op in ops {
                harness.apply(op);
                harness.check();
            }
            prop_assert_eq!(harness.reader.corrupt_records(), 0);
        }
    }
}
