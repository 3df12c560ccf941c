//! Reading records back out of a spool directory, independently of the
//! [`super::Spool`] that writes them.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::format::{self, Payload, Step};
use super::{SpoolError, list_segments, segment_path};

/// Reads records from a spool's directory, possibly on another thread than
/// the one appending.
///
/// It keeps the segment file it is in open, with an offset, so reading on
/// from where the last call stopped does not rescan anything. Segment files
/// the writer deletes meanwhile stay readable through the open handle and are
/// otherwise skipped.
#[derive(Debug)]
pub struct SpoolReader {
    dir: PathBuf,
    max_record_bytes: usize,
    cursor: Option<Cursor>,
    corrupt: u64,
    /// Damaged records below this sequence number have been counted already.
    counted_through: u64,
}

/// Where in which segment file the reader is.
#[derive(Debug)]
struct Cursor {
    /// First sequence number of the segment (its name).
    base: u64,
    file: File,
    /// Offset of the next record to look at.
    offset: u64,
    /// The record at `offset`, if any, has a sequence number of at least this.
    pos: u64,
    /// Whether a newer segment has been seen, so this one will not grow.
    finished: bool,
}

/// Why a pass over the current segment stopped at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// The segment ends cleanly.
    Clean,
    /// The segment ends with bytes that are not a whole valid record.
    Garbage,
}

impl SpoolReader {
    /// A reader over the segment files in `dir`.
    pub(crate) fn new(dir: PathBuf, max_record_bytes: usize) -> Self {
        Self {
            dir,
            max_record_bytes,
            cursor: None,
            corrupt: 0,
            counted_through: 0,
        }
    }

    /// Up to `max_records` records (and, past the first, at most `max_bytes`
    /// payload bytes in all) with seq >= `from` and < `until`, in seq order.
    ///
    /// `until` must not exceed the writer's `next_seq()` as observed after
    /// the appends to be read returned. Damaged records are skipped and
    /// counted (see [`Self::corrupt_records`]).
    ///
    /// # Errors
    /// [`SpoolError::Io`] when the directory or a segment file cannot be read.
    pub fn read(
        &mut self,
        from: u64,
        until: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let mut out = Vec::new();
        if max_records == 0 || from >= until {
            return Ok(out);
        }
        self.seek(from)?;
        let mut bytes = 0usize;
        let max_len = self.max_record_bytes;
        while let Some(cur) = self.cursor.as_mut() {
            let path = || segment_path(&self.dir, cur.base);
            let step = format::read_header(&cur.file, cur.offset, max_len)
                .map_err(SpoolError::io("reading segment", path()))?;
            let header = match step {
                Step::Header(header) if header.seq >= cur.pos => header,
                Step::Header(_) | Step::BadHeader => {
                    let found = format::resync(&cur.file, cur.offset + 1, max_len, cur.pos)
                        .map_err(SpoolError::io("reading segment", path()))?;
                    match found {
                        // A record not to be read yet: it may still be being
                        // written, so what lies before it is not judged yet.
                        Some((_, header)) if header.seq >= until => break,
                        Some((at, header)) => {
                            let lost = cur.pos;
                            cur.offset = at;
                            self.count_corrupt(lost, header.seq, from);
                            continue;
                        }
                        None if self.next_segment(until, from, Tail::Garbage)? => continue,
                        None => break,
                    }
                }
                Step::End if self.next_segment(until, from, Tail::Clean)? => continue,
                Step::Partial if self.next_segment(until, from, Tail::Garbage)? => continue,
                Step::End | Step::Partial => break,
            };
            if header.seq >= until {
                break;
            }
            let end = cur.offset + header.frame_len();
            if header.seq < from {
                cur.offset = end;
                cur.pos = header.seq + 1;
                continue;
            }
            if !out.is_empty() && bytes.saturating_add(header.len as usize) > max_bytes {
                break;
            }
            let mut payload = Vec::new();
            let state = format::read_payload(&cur.file, cur.offset, &header, &mut payload)
                .map_err(SpoolError::io("reading segment", path()))?;
            match state {
                Payload::Intact => {
                    cur.offset = end;
                    cur.pos = header.seq + 1;
                    bytes += payload.len();
                    out.push((header.seq, payload));
                    if out.len() >= max_records {
                        break;
                    }
                }
                Payload::Damaged => {
                    cur.offset = end;
                    cur.pos = header.seq + 1;
                    self.count_corrupt(header.seq, header.seq + 1, from);
                }
                Payload::Partial => {
                    if !self.next_segment(until, from, Tail::Garbage)? {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Corrupt records this reader has skipped so far.
    pub fn corrupt_records(&self) -> u64 {
        self.corrupt
    }

    /// Counts the records with seqs in `lo..hi` (and at least `from`) as
    /// skipped, unless counted before.
    fn count_corrupt(&mut self, lo: u64, hi: u64, from: u64) {
        let lo = lo.max(from).max(self.counted_through);
        if hi > lo {
            self.corrupt += hi - lo;
            tracing::warn!(
                dir = %self.dir.display(),
                first_seq = lo,
                records = hi - lo,
                "skipped damaged spool records"
            );
            self.counted_through = hi;
        }
    }

    /// Places the cursor so that the record with seq `from`, if it exists,
    /// is at or after it, without going back when reading on sequentially.
    fn seek(&mut self, from: u64) -> Result<(), SpoolError> {
        if let Some(cur) = self.cursor.as_mut() {
            if cur.pos == from {
                return Ok(());
            }
            if cur.pos > from && cur.base <= from {
                // `from` lies in this segment, behind the cursor: rewind.
                cur.offset = 0;
                cur.pos = cur.base;
                return Ok(());
            }
            if cur.pos < from {
                // Skip ahead to a later segment if `from` is in one.
                let current = cur.base;
                let bases = self.list()?;
                if let Some(&base) = bases.iter().rev().find(|&&b| b <= from)
                    && base > current
                    && let Some(cursor) = self.open_first(&bases, base)?
                {
                    self.cursor = Some(cursor);
                }
                return Ok(());
            }
        }
        let bases = self.list()?;
        let start = bases
            .iter()
            .rev()
            .find(|&&b| b <= from)
            .or(bases.first())
            .copied();
        self.cursor = match start {
            Some(base) => self.open_first(&bases, base)?,
            None => None,
        };
        Ok(())
    }

    /// Moves to the next segment once the current one is used up.
    ///
    /// Returns whether reading should go on (in the next segment, or in this
    /// one looked at again).
    fn next_segment(&mut self, until: u64, from: u64, tail: Tail) -> Result<bool, SpoolError> {
        let Some(cur) = self.cursor.as_mut() else {
            return Ok(false);
        };
        if cur.pos >= until {
            // Whatever comes next is not wanted yet; do not touch the disk.
            return Ok(false);
        }
        let base = cur.base;
        let bases = self.list()?;
        let Some(&next) = bases.iter().find(|&&b| b > base) else {
            return Ok(false);
        };
        let cur = self.cursor.as_mut().expect("cursor checked above");
        if !cur.finished {
            // The writer creates a new segment only after its last write to
            // this one, so look at this one again before leaving it.
            cur.finished = true;
            return Ok(true);
        }
        if tail == Tail::Garbage {
            let lost = cur.pos;
            self.count_corrupt(lost, next, from);
        }
        self.cursor = self.open_first(&bases, next)?;
        Ok(self.cursor.is_some())
    }

    /// Opens the first still existing segment from `bases` at or after
    /// `base`.
    fn open_first(&self, bases: &[u64], base: u64) -> Result<Option<Cursor>, SpoolError> {
        for &b in bases.iter().filter(|&&b| b >= base) {
            let path = segment_path(&self.dir, b);
            match File::open(&path) {
                Ok(file) => {
                    return Ok(Some(Cursor {
                        base: b,
                        file,
                        offset: 0,
                        pos: b,
                        finished: false,
                    }));
                }
                // Acknowledged and deleted since the listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SpoolError::io("opening segment", path)(e)),
            }
        }
        Ok(None)
    }

    /// The segment files of the directory, by first seq.
    fn list(&self) -> Result<Vec<u64>, SpoolError> {
        list_segments(&self.dir).map_err(SpoolError::io("listing", self.dir.clone()))
    }

    /// The directory this reader reads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
