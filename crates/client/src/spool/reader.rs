//! Reading records back out of a spool directory, independently of the
//! [`super::Spool`] that writes them.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::SpoolError;
use super::dir::{list_segments, segment_path};
use super::format::{self, HEADER_LEN, Payload, Step};

/// Bytes read from a segment file at a time (more when one record is
/// bigger).
const READ_AHEAD: usize = 256 * 1024;

/// Reads records from a spool's directory, possibly on another thread than
/// the one appending.
///
/// It keeps the segment file it is in open, with an offset, so reading on
/// from where the last call stopped does not rescan anything, and reads it
/// in large stretches rather than record by record. Segment files the writer
/// deletes meanwhile stay readable through the open handle and are otherwise
/// skipped.
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
    /// Bytes of `file` read ahead of `offset`.
    ahead: ReadAhead,
}

/// A stretch of a segment file read in one go, so records are taken from
/// memory rather than read from the file one by one.
///
/// A header or payload that runs past the stretch is read from the file
/// again, starting at its record, so the end of a growing file and a record
/// still being written are always judged on what the file holds now.
#[derive(Debug, Default)]
struct ReadAhead {
    /// File offset of `buf[0]`.
    start: u64,
    /// The bytes; only `buf[..filled]` are the file's.
    buf: Vec<u8>,
    /// How many bytes of `buf` were read from the file.
    filled: usize,
}

impl ReadAhead {
    /// The file's bytes from `offset` on, as far as held: at least `want`
    /// of them unless the file ends sooner. Reads from the file (at least
    /// [`READ_AHEAD`] bytes) unless they are held already.
    fn at(&mut self, file: &File, offset: u64, want: usize) -> io::Result<&[u8]> {
        let skip = offset
            .checked_sub(self.start)
            .and_then(|skip| usize::try_from(skip).ok())
            .filter(|&skip| skip <= self.filled && self.filled - skip >= want);
        if let Some(skip) = skip {
            return Ok(&self.buf[skip..self.filled]);
        }
        let size = want.max(READ_AHEAD);
        if self.buf.len() < size {
            self.buf.resize(size, 0);
        }
        self.filled = 0;
        self.start = offset;
        self.filled = format::read_full_at(file, &mut self.buf[..size], offset)?;
        Ok(&self.buf[..self.filled])
    }

    /// Forgets the bytes held, so the next look reads the file.
    fn clear(&mut self) {
        self.filled = 0;
    }
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
        if let Some(cur) = self.cursor.as_mut() {
            // Each call sees the files as they are now, even one cut short
            // and written again since the last call.
            cur.ahead.clear();
        }
        let mut bytes = 0usize;
        let max_len = self.max_record_bytes;
        while let Some(cur) = self.cursor.as_mut() {
            // Names the file only on failure: formatting it per record costs.
            let failed =
                |e| SpoolError::io("reading segment", segment_path(&self.dir, cur.base))(e);
            let step = cur
                .ahead
                .at(&cur.file, cur.offset, HEADER_LEN)
                .map(|held| format::header_step(held, max_len))
                .map_err(failed)?;
            let header = match step {
                Step::Header(header) if header.seq >= cur.pos => header,
                // Zeros where a record would start: the reserved, unwritten
                // part of the segment being written, when nothing more is
                // due. Zeros where a record is still due are damage (a
                // page a power cut lost, say): the segment being written has
                // no gaps, and one that is done was cut to its records.
                Step::Unwritten if cur.pos >= until => break,
                Step::Header(_) | Step::BadHeader | Step::Unwritten => {
                    let found = format::resync(&cur.file, cur.offset + 1, max_len, cur.pos)
                        .map_err(failed)?;
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
            let frame = cur
                .ahead
                .at(&cur.file, cur.offset, HEADER_LEN + header.len as usize)
                .map_err(failed)?;
            let after_header = frame.get(HEADER_LEN..).unwrap_or_default();
            match format::payload_state(&header, after_header) {
                Payload::Intact => {
                    let payload = after_header[..header.len as usize].to_vec();
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
    #[must_use]
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
            // this one (and, for a mapped one, after cutting its reserved
            // zeros), so look at this one again, in the file rather than in
            // what was read ahead, before leaving it.
            cur.finished = true;
            cur.ahead.clear();
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
                        ahead: ReadAhead::default(),
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
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Spool, SpoolSettings};
    use std::fs::OpenOptions;
    use std::io::Write;

    /// A payload of `len` bytes that differs per `seq`.
    fn payload(seq: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| {
                seq.wrapping_mul(13)
                    .wrapping_add(7 * i as u64)
                    .to_le_bytes()[0]
            })
            .collect()
    }

    /// The bytes of record `seq` with `payload`.
    fn frame(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        format::encode_record(seq, payload, &mut out);
        out
    }

    /// Appends `bytes` to the segment file `base` of `dir`, creating it.
    fn append_raw(dir: &Path, base: u64, bytes: &[u8]) {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, base))
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    /// Reads `from..until` in batches of the given limits until nothing
    /// more comes.
    fn read_batches(
        reader: &mut SpoolReader,
        from: u64,
        until: u64,
        limits: &[(usize, usize)],
    ) -> Vec<(u64, Vec<u8>)> {
        let mut got = Vec::new();
        let mut from = from;
        for &(max_records, max_bytes) in limits.iter().cycle() {
            let batch = reader.read(from, until, max_records, max_bytes).unwrap();
            let Some(&(last, _)) = batch.last() else {
                break;
            };
            from = last + 1;
            got.extend(batch);
        }
        got
    }

    #[test]
    fn records_of_mixed_sizes_across_many_read_ahead_stretches_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let options = SpoolSettings {
            max_record_bytes: 3 * READ_AHEAD,
            ..SpoolSettings::new(dir.path())
        };
        let (mut spool, _) = Spool::open(options).unwrap();
        let sizes = [0, 1, 23, 24, 25, 700, 4093, 70_000];
        let mut expected = Vec::new();
        for seq in 1..=400 {
            let len = match seq {
                // Bigger than a stretch, and exactly one stretch with its header.
                100 => 2 * READ_AHEAD + 17,
                200 => READ_AHEAD - HEADER_LEN,
                _ => sizes[usize::try_from(seq).expect("a small seq") % sizes.len()],
            };
            let record = payload(seq, len);
            assert_eq!(spool.append(&record).unwrap(), seq);
            expected.push((seq, record));
        }
        assert_eq!(spool.segment_count(), 1);
        let until = spool.next_seq();

        let limits = [
            (1, usize::MAX),
            (3, 5_000),
            (7, 100_000),
            (2, 0),
            (5, 1 << 20),
        ];
        let mut reader = spool.reader();
        assert_eq!(read_batches(&mut reader, 1, until, &limits), expected);
        // Reading again from the middle, after the cursor went past it.
        let mut reader_again = spool.reader();
        assert_eq!(
            read_batches(&mut reader_again, 150, until, &limits[1..]),
            expected[149..]
        );
        assert_eq!(
            read_batches(&mut reader, 99, 202, &[(1, 0)]),
            expected[98..201]
        );
        assert_eq!(reader.corrupt_records(), 0);
        assert_eq!(reader_again.corrupt_records(), 0);
    }

    #[test]
    fn damaged_records_on_the_edges_of_read_ahead_stretches_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        // 1000-byte payloads make 1024-byte frames; the first record is 12
        // bytes longer, so frames start 12 bytes past each 1 KiB boundary
        // and the 257th header straddles the end of the first stretch.
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        let mut expected = Vec::new();
        for seq in 1..=600 {
            let record = payload(seq, if seq == 1 { 1012 } else { 1000 });
            starts.push(bytes.len());
            bytes.extend(frame(seq, &record));
            expected.push((seq, record));
        }
        let straddling = starts.iter().position(|&s| s + HEADER_LEN > READ_AHEAD);
        assert_eq!(straddling, Some(256));
        // A damaged header across the first stretch's end, and a damaged
        // payload in a record running across the second stretch's end.
        bytes[starts[256] + 6] ^= 0x55;
        let payload_across = starts
            .iter()
            .position(|&s| s + 1024 > starts[257] + READ_AHEAD)
            .unwrap();
        bytes[starts[payload_across] + 1000] ^= 0x55;
        expected.retain(|r| r.0 != 257 && r.0 != payload_across as u64 + 1);
        append_raw(dir.path(), 1, &bytes);

        for limits in [&[(usize::MAX, usize::MAX)][..], &[(1, 0), (9, 30_000)]] {
            let mut reader = SpoolReader::new(dir.path().to_owned(), 1 << 20);
            assert_eq!(read_batches(&mut reader, 1, 601, limits), expected);
            assert_eq!(reader.corrupt_records(), 2);
        }
    }

    #[test]
    fn a_partial_record_at_the_end_is_read_again_once_it_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let frames: Vec<_> = (1..=9).map(|seq| frame(seq, &payload(seq, 50))).collect();
        let mut reader = SpoolReader::new(dir.path().to_owned(), 1 << 20);
        // Records 1-3 and record 4 short of its payload's end.
        append_raw(dir.path(), 1, &frames[..3].concat());
        append_raw(dir.path(), 1, &frames[3][..HEADER_LEN + 10]);
        let got = reader.read(1, 5, 100, usize::MAX).unwrap();
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
        // Looking again finds the same, without judging the tail.
        assert_eq!(reader.read(4, 5, 100, usize::MAX).unwrap(), []);
        // The rest of 4, all of 5, and record 6 short of its header's end.
        append_raw(dir.path(), 1, &frames[3][HEADER_LEN + 10..]);
        append_raw(dir.path(), 1, &frames[4]);
        append_raw(dir.path(), 1, &frames[5][..HEADER_LEN - 5]);
        let got = reader.read(4, 7, 100, usize::MAX).unwrap();
        assert_eq!(got, [(4, payload(4, 50)), (5, payload(5, 50))]);
        // The rest of 6, and 7-9; a read ending mid-way, then the rest.
        append_raw(dir.path(), 1, &frames[5][HEADER_LEN - 5..]);
        append_raw(dir.path(), 1, &frames[6..].concat());
        let got = reader.read(6, 10, 2, usize::MAX).unwrap();
        assert_eq!(got, [(6, payload(6, 50)), (7, payload(7, 50))]);
        let got = reader.read(8, 10, 100, usize::MAX).unwrap();
        assert_eq!(got, [(8, payload(8, 50)), (9, payload(9, 50))]);
        assert_eq!(reader.corrupt_records(), 0);
    }

    #[test]
    fn a_tail_cut_off_and_written_again_between_reads_is_read_as_it_is_now() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = SpoolReader::new(dir.path().to_owned(), 1 << 20);
        append_raw(
            dir.path(),
            1,
            &[frame(1, b"one"), frame(2, b"two")].concat(),
        );
        assert_eq!(
            reader.read(1, 2, 100, usize::MAX).unwrap(),
            [(1, b"one".to_vec())]
        );
        // Record 2 (held, but not returned) is cut off and replaced.
        let path = segment_path(dir.path(), 1);
        let kept = frame(1, b"one").len() as u64;
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(kept)
            .unwrap();
        append_raw(dir.path(), 1, &frame(2, b"second"));
        assert_eq!(
            reader.read(2, 3, 100, usize::MAX).unwrap(),
            [(2, b"second".to_vec())]
        );
        assert_eq!(reader.corrupt_records(), 0);
    }
}
