//! Opening a spool after a clean stop or a crash: which segment files still
//! matter, which records in them are intact, and where the writer carries
//! on.
//!
//! Every segment that may hold unacknowledged records is read and every
//! checksum checked. Bytes after the last intact record of the newest
//! segment are a torn write and are cut off; zeros at its end are the
//! reservation of a mapped segment the process never wrote, cut too but
//! not counted as damage. A damaged record elsewhere is
//! skipped: a bad payload behind a good header skips exactly that record;
//! after a bad header the scan looks forward for the next valid header, so
//! later records of the same segment are still delivered. Sequence numbers
//! carry on above everything seen, so a seq is never given to two different
//! records.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::path::Path;

use super::SpoolError;
use super::dir::{list_segments, remove_segment, segment_path};
use super::format::{self, Ledger, Payload, Step};
use super::segment::Segment;

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

/// Where the spool starts from after [`recover`].
#[derive(Debug)]
pub(super) struct Found {
    /// Segment files left, oldest first, their torn tail already not counted.
    pub(super) segments: VecDeque<Segment>,
    /// Seq the next append gets.
    pub(super) next_seq: u64,
    /// Seqs above the ack with no readable record, as sorted, disjoint
    /// `start..end` ranges.
    pub(super) holes: VecDeque<(u64, u64)>,
    /// Whether segment files were deleted, so the directory needs a sync.
    pub(super) removed: bool,
    /// A torn tail to cut off with [`cut_torn_tail`] once the ledger records
    /// the new seq floor.
    pub(super) cut: Option<Cut>,
    /// What was found, for the caller.
    pub(super) recovery: Recovery,
}

/// Reads the segment files of `dir` against the `ledger`: deletes those
/// that hold only acknowledged records, checks the rest, and works out
/// where sequence numbers carry on. Nothing is cut off yet.
pub(super) fn recover(
    dir: &Path,
    ledger: Ledger,
    max_record_bytes: usize,
) -> Result<Found, SpoolError> {
    let mut bases = list_segments(dir).map_err(SpoolError::io("listing", dir.to_path_buf()))?;
    // Segments whose successor starts at or below the first
    // unacknowledged seq hold only acknowledged records.
    let keep_from = bases
        .windows(2)
        .take_while(|w| w[1] <= ledger.acked + 1)
        .count();
    for &base in &bases[..keep_from] {
        remove_segment(dir, base)?;
    }
    bases.drain(..keep_from);

    let scan = scan_segments(dir, &bases, ledger.acked, max_record_bytes)?;
    let mut next_seq = (ledger.acked + 1)
        .max(ledger.floor)
        .max(scan.highest.map_or(0, |h| h + 1))
        .max(bases.last().copied().unwrap_or(0));
    if let Some(torn_seq) = scan.cut.and_then(|c| c.torn_seq) {
        // The torn record had the seq after the last one of its segment;
        // it may have been read and delivered, so never reuse it.
        next_seq = next_seq.max(torn_seq + 1);
    }
    let mut holes = scan.holes;
    if next_seq > scan.expect {
        holes.push_back((scan.expect, next_seq));
    }
    Ok(Found {
        recovery: Recovery {
            records: scan.records,
            corrupt_records: scan.corrupt,
            truncated_bytes: scan.cut.map_or(0, |c| c.dropped),
        },
        segments: scan.segments,
        next_seq,
        holes,
        removed: keep_from > 0,
        cut: scan.cut,
    })
}

/// Cuts the torn tail off its segment, durably.
pub(super) fn cut_torn_tail(dir: &Path, cut: &Cut) -> Result<(), SpoolError> {
    let path = segment_path(dir, cut.base);
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(SpoolError::io("opening segment", path.clone()))?;
    file.set_len(cut.keep)
        .and_then(|()| file.sync_all())
        .map_err(SpoolError::io("truncating torn tail of", path))
}

/// A torn tail to cut off the newest segment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cut {
    /// The segment.
    base: u64,
    /// Bytes to keep.
    keep: u64,
    /// Bytes of a torn record cut off (not counting a mapped segment's
    /// unwritten zeros, which are cut too).
    dropped: u64,
    /// Seq the torn record would have had, when there was one.
    torn_seq: Option<u64>,
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
                Step::Header(_) | Step::BadHeader | Step::Unwritten => {
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
                // Zeros a mapped segment reserved and never wrote are cut
                // too, but they are no damage and hide no record.
                let dropped =
                    format::nonzero_end(&file, good_end, len).map_err(read_err())? - good_end;
                scan.cut = Some(Cut {
                    base,
                    keep: good_end,
                    dropped,
                    torn_seq: (dropped > 0).then_some(good_pos),
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
    use std::fs::{self, OpenOptions};
    use std::io::Write;

    use super::*;
    use crate::spool::RECORD_OVERHEAD_BYTES;
    use crate::spool::dir::{LEDGER_FILE, SEGMENT_SUFFIX};
    use crate::spool::tests::{
        FRAME_OVERHEAD, flip_byte, open, options, payload, read_all, segment_files, seqs, truncate,
    };

    /// Cuts the last record of a one-segment spool of five to `keep` bytes
    /// and checks what reopening makes of it: `counted` of them reported
    /// cut (up to the last byte that is not zero).
    fn check_torn_tail(keep: u64, counted: u64) {
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
                truncated_bytes: counted,
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
        let keep = RECORD_OVERHEAD_BYTES + 7;
        check_torn_tail(keep, keep);
    }

    #[test]
    fn torn_tail_inside_the_header_is_cut_off() {
        // Magic and the first byte of seq 5; the seq's other bytes are
        // zeros, which tell nothing from a mapped segment's reservation.
        check_torn_tail(10, 5);
    }

    #[test]
    fn reserved_zeros_a_kill_leaves_are_cut_as_no_damage() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), 1 << 20, 1 << 20);
        let frame = (FRAME_OVERHEAD + 30) as u64;
        let (mut spool, _) = open(&opts);
        for seq in 1..=3 {
            spool.append(&payload(seq, 30)).unwrap();
        }
        let [segment] = &segment_files(dir.path())[..] else {
            panic!("expected one segment");
        };
        // The segment being written has reserved its whole size.
        assert_eq!(fs::metadata(segment).unwrap().len(), 1 << 20);
        // A kill leaves the file as it is; dropping the spool would cut it,
        // so put the reservation back after the drop.
        drop(spool);
        assert_eq!(fs::metadata(segment).unwrap().len(), 3 * frame);
        truncate(segment, 1 << 20);

        let (mut spool, recovery) = open(&opts);
        assert_eq!(
            recovery,
            Recovery {
                records: 3,
                corrupt_records: 0,
                truncated_bytes: 0,
            }
        );
        assert_eq!(fs::metadata(segment).unwrap().len(), 3 * frame);
        // No record was torn, so no seq is skipped.
        assert_eq!(spool.next_seq(), 4);
        assert_eq!(spool.append(&payload(4, 30)).unwrap(), 4);
        let records = read_all(&spool, &mut spool.reader(), 1);
        assert_eq!(seqs(&records), [1, 2, 3, 4]);
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
}
