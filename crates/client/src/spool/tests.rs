//! Tests of the whole spool, and the helpers the tests of each part share:
//! round trips through segments, acknowledgements and reopening, a reader
//! on another thread, and a model-based property test that runs the
//! production paths (append, read, ack, flush, crash, torn write) against a
//! plain queue.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::dir::{LEDGER_TMP_FILE, SPARE_FILE, SPARE_TMP_FILE, list_segments, segment_path};
use super::{Recovery, Spool, SpoolError, SpoolReader, SpoolSettings};

pub(super) const FRAME_OVERHEAD: usize = super::format::HEADER_LEN;

pub(super) fn options(dir: &Path, segment_bytes: u64, max_bytes: u64) -> SpoolSettings {
    SpoolSettings {
        max_bytes,
        segment_bytes,
        ..SpoolSettings::new(dir)
    }
}

/// A payload of `len` bytes that differs per `seed`.
pub(super) fn payload(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            seed.wrapping_mul(31)
                .wrapping_add(7 * i as u64)
                .to_le_bytes()[0]
        })
        .collect()
}

/// Acknowledges through `seq` as the publisher does: the ledger write
/// taken and run, then a second round, which deletes the segments the
/// first one's ledger lets go.
pub(super) fn ack(spool: &mut Spool, seq: u64) {
    for _ in 0..2 {
        spool.ack_work(seq).run().unwrap();
    }
}

/// Flushes as the publisher does.
pub(super) fn sync(spool: &mut Spool) {
    spool.sync_work().unwrap().run().unwrap();
}

pub(super) fn open(options: &SpoolSettings) -> (Spool, Recovery) {
    Spool::open(options.clone()).expect("open spool")
}

pub(super) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|b| segment_path(dir, b))
        .collect()
}

pub(super) fn bytes_on_disk(dir: &Path) -> u64 {
    segment_files(dir)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// Everything readable from `from` up to the spool's next seq.
pub(super) fn read_all(spool: &Spool, reader: &mut SpoolReader, from: u64) -> Vec<(u64, Vec<u8>)> {
    reader
        .read(from, spool.next_seq(), usize::MAX, usize::MAX)
        .unwrap()
}

pub(super) fn seqs(records: &[(u64, Vec<u8>)]) -> Vec<u64> {
    records.iter().map(|r| r.0).collect()
}

/// Flips one byte of a file.
pub(super) fn flip_byte(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[usize::try_from(at).expect("an offset in memory")] ^= 0x55;
    fs::write(path, bytes).unwrap();
}

pub(super) fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// A page of the newest segment lost to a power cut (it reads as zeros,
/// while later pages were written back): the records after it are still
/// read, by a reader draining the backlog as the sender does, and the ones
/// the page held are damage.
#[test]
fn zeros_where_records_are_due_are_damage_not_the_end_of_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), 1 << 20, 1 << 20);
    let frame = FRAME_OVERHEAD + 200;
    let (mut spool, _) = open(&opts);
    for seq in 1..=200 {
        spool.append(&payload(seq, 200)).unwrap();
    }
    drop(spool);
    let path = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    bytes[4096..8192].fill(0);
    fs::write(&path, bytes).unwrap();
    let intact: Vec<u64> = (1..=200_u64)
        .filter(|&seq| {
            let start = usize::try_from(seq - 1).unwrap() * frame;
            start + frame <= 4096 || start >= 8192
        })
        .collect();

    let (spool, recovery) = open(&opts);
    assert_eq!(recovery.records, intact.len() as u64);
    assert_eq!(recovery.corrupt_records, 200 - intact.len() as u64);
    let mut reader = spool.reader();
    let mut from = spool.first_unacked();
    let mut got = Vec::new();
    while let Some(last) = reader
        .read(from, spool.next_seq(), 50, 1 << 20)
        .unwrap()
        .into_iter()
        .inspect(|r| got.push(r.0))
        .last()
    {
        from = last.0 + 1;
    }
    assert_eq!(got, intact);
    assert!(reader.corrupt_records() > 0, "the lost records are counted");
}

/// The next segment is renamed from the spare written off the lock, so
/// starting it writes nothing; without a spare ready, it writes its own.
#[test]
fn a_segment_starts_from_the_spare_when_one_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let frame = (FRAME_OVERHEAD + 40) as u64;
    // Three records a segment; room for three segments.
    let opts = options(dir.path(), 3 * frame, 9 * frame);
    let spare = dir.path().join(SPARE_FILE);
    let (mut spool, _) = open(&opts);
    assert!(
        spool.spare_work().is_none(),
        "no segment is being written yet"
    );
    spool.append(&payload(1, 40)).unwrap();
    let work = spool.spare_work().expect("a spare is wanted");
    assert!(spool.spare_work().is_none(), "one spare at a time");
    // Not written yet: the next segment writes its own zeros.
    for seq in 2..=4 {
        spool.append(&payload(seq, 40)).unwrap();
    }
    assert_eq!(segment_files(dir.path()).len(), 2);
    work.run().unwrap();
    assert_eq!(fs::metadata(&spare).unwrap().len(), 3 * frame);
    assert!(!dir.path().join(SPARE_TMP_FILE).exists());
    // The third segment takes the spare: same size, renamed into place.
    for seq in 5..=7 {
        spool.append(&payload(seq, 40)).unwrap();
    }
    assert!(!spare.exists(), "the spare became the segment");
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 3);
    assert_eq!(fs::metadata(&files[2]).unwrap().len(), 3 * frame);
    assert_eq!(spool.reserved_bytes(), 2 * frame);
    let records = read_all(&spool, &mut spool.reader(), 1);
    assert_eq!(seqs(&records), (1..=7).collect::<Vec<_>>());
    assert_eq!(records[6].1, payload(7, 40));
    // No room for a spare beside three full segments' worth.
    assert!(spool.spare_work().is_none());
    ack(&mut spool, 3);
    spool.spare_work().expect("room again").run().unwrap();
    assert!(spare.exists());

    // A spool that opens deletes a spare left behind.
    drop(spool);
    fs::write(dir.path().join(SPARE_TMP_FILE), b"half").unwrap();
    let (spool, recovery) = open(&opts);
    assert_eq!(recovery.records, 4);
    assert!(!spare.exists() && !dir.path().join(SPARE_TMP_FILE).exists());
    drop(spool);
}

/// A failed spare is forgotten, and another handed out once the next
/// segment has started (not at every flush, which on a full disk would
/// write zeros again and again).
#[test]
fn a_failed_spare_is_handed_out_again_at_the_next_segment() {
    let dir = tempfile::tempdir().unwrap();
    let frame = (FRAME_OVERHEAD + 40) as u64;
    let opts = options(dir.path(), 4 * frame, 1 << 20);
    let (mut spool, _) = open(&opts);
    spool.append(&payload(1, 40)).unwrap();
    // A directory where the temporary file goes makes the write fail.
    fs::create_dir(dir.path().join(SPARE_TMP_FILE)).unwrap();
    let err = spool.spare_work().unwrap().run().unwrap_err();
    assert!(err.to_string().contains("spare"), "{err}");
    assert!(spool.spare_work().is_none(), "still handed out until told");
    spool.spare_failed();
    fs::remove_dir(dir.path().join(SPARE_TMP_FILE)).unwrap();
    assert!(
        spool.spare_work().is_none(),
        "not again in the same segment"
    );
    for seq in 2..=5 {
        spool.append(&payload(seq, 40)).unwrap();
    }
    assert_eq!(segment_files(dir.path()).len(), 2);
    spool.spare_work().expect("handed out again").run().unwrap();
    assert_eq!(
        fs::metadata(dir.path().join(SPARE_FILE)).unwrap().len(),
        4 * frame
    );
}

/// The files, segments and spare together, never pass the limit: not when
/// a segment starts while the spare is still being written, nor when a
/// record larger than a segment passes the spare by.
#[test]
fn a_spare_counts_against_the_limit_written_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let files =
        |dir: &Path| bytes_on_disk(dir) + fs::metadata(dir.join(SPARE_FILE)).map_or(0, |m| m.len());
    // 60-byte records, 100-byte segments, 300 bytes in all.
    let opts = options(dir.path(), 100, 300);
    let (mut spool, _) = open(&opts);
    spool.append(&payload(1, 36)).unwrap();
    let work = spool.spare_work().expect("room for a spare");
    // The next segments start while the spare is being written, until
    // the room it will take is all that is left.
    for seq in 2..=3 {
        spool.append(&payload(seq, 36)).unwrap();
    }
    let refused = spool.append(&payload(4, 36)).unwrap_err();
    assert!(matches!(refused, SpoolError::Full { .. }), "{refused:?}");
    work.run().unwrap();
    assert!(files(dir.path()) <= 300, "{} bytes", files(dir.path()));
    drop(spool);

    // A ready spare, then a record larger than a segment.
    let dir = tempfile::tempdir().unwrap();
    let opts = SpoolSettings {
        max_record_bytes: 1000,
        ..options(dir.path(), 100, 1000)
    };
    let (mut spool, _) = open(&opts);
    spool.append(&payload(1, 36)).unwrap();
    spool.spare_work().unwrap().run().unwrap();
    let big = spool.append(&payload(2, 476));
    let bigger = spool.append(&payload(3, 376));
    assert!(big.is_ok(), "{big:?}");
    assert!(matches!(bigger, Err(SpoolError::Full { .. })), "{bigger:?}");
    assert!(
        dir.path().join(SPARE_FILE).exists(),
        "the spare waits for a record that fits a segment"
    );
    assert!(
        files(dir.path()) <= 1000,
        "{} bytes after {big:?} and {bigger:?}",
        files(dir.path())
    );
}

/// A spare still being written holds the directory's lock: a spool opened
/// again on it meanwhile is refused, so the old spare cannot land beside
/// (or instead of) the new spool's.
#[test]
fn a_spare_being_written_keeps_the_directory_locked() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), 1000, 1 << 20);
    let (mut spool, _) = open(&opts);
    spool.append(&payload(1, 40)).unwrap();
    let work = spool.spare_work().expect("a spare is wanted");
    drop(spool);
    let err = Spool::open(opts.clone()).unwrap_err();
    assert!(matches!(err, SpoolError::Locked { .. }), "{err:?}");
    work.run().unwrap();
    let (_spool, recovery) = open(&opts);
    assert_eq!(recovery.records, 1);
    assert!(!dir.path().join(SPARE_FILE).exists(), "deleted at open");
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
    // The segment being written has reserved a whole segment's bytes.
    assert_eq!(spool.reserved_bytes(), 200 - 2 * frame);
    assert_eq!(
        bytes_on_disk(dir.path()),
        20 * frame + spool.reserved_bytes()
    );

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
    assert_eq!(
        bytes_on_disk(dir.path()),
        14 * frame + spool.reserved_bytes()
    );
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

#[test]
fn reader_on_another_thread_sees_every_record_while_appends_and_acks_go_on() {
    const RECORDS: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), 500, 1 << 20);
    let (spool, _) = open(&opts);
    let mut reader = spool.reader();
    let spool = Arc::new(Mutex::new(spool));

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
    /// Flush as the publisher does, and take a spare segment's writing
    /// when one is wanted (run later, by [`Op::SpareDone`]).
    Sync,
    /// The spare segment's writing, taken at a flush, runs now: records
    /// appended meanwhile may have started segments without it.
    SpareDone,
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
        1 => Just(Op::SpareDone),
        1 => Just(Op::Reopen),
        1 => any::<usize>().prop_map(Op::TornReopen),
        1 => Just(Op::NewReader),
    ]
}

/// The spool under test beside a plain model of what it should hold.
struct Harness {
    dir: tempfile::TempDir,
    opts: SpoolSettings,
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
    /// A spare segment's writing, taken and not yet run.
    spare: Option<super::SpareWork>,
    /// Whether the limit is tight enough that appends may be refused.
    tight: bool,
}

impl Harness {
    /// A spool of `segment_bytes` segments and `max_bytes` in all.
    fn new(segment_bytes: u64, max_bytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let opts = SpoolSettings {
            max_record_bytes: 1024,
            ..options(dir.path(), segment_bytes, max_bytes)
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
            spare: None,
            tight: max_bytes < 1 << 20,
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

    /// Ends the spool as `SIGKILL` would: what was copied into the active
    /// segment stays, and so does its reserved, unwritten tail of zeros
    /// (dropping the spool would hand that back). Returns the newest
    /// segment file, if any.
    fn kill(&mut self) -> Option<std::path::PathBuf> {
        // The spare's writer dies with the process, before it ran.
        self.spare = None;
        let last = segment_files(self.dir.path()).pop();
        let reserved = last.as_ref().map(|p| fs::metadata(p).unwrap().len());
        self.spool = None;
        if let (Some(path), Some(len)) = (&last, reserved) {
            truncate(path, len);
        }
        last
    }

    /// Opens the spool again after [`Self::kill`]; returns what recovery found.
    fn reopen(&mut self) -> Recovery {
        let (spool, recovery) = open(&self.opts);
        self.spool = Some(spool);
        // What the ledger did not acknowledge comes back.
        self.acked = self.model.front().map_or(self.next_seq, |r| r.0) - 1;
        // A restarted publisher reads from the oldest pending record.
        self.cursor = self.model_first_unacked();
        recovery
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Append(payload) => {
                let seq = match self.spool().append(&payload) {
                    Ok(seq) => seq,
                    Err(SpoolError::Full { .. } | SpoolError::TooLarge { .. }) if self.tight => {
                        return;
                    }
                    Err(e) => panic!("append: {e}"),
                };
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
            Op::Sync => {
                sync(self.spool());
                if self.spare.is_none() {
                    self.spare = self.spool().spare_work();
                }
            }
            Op::SpareDone => {
                if let Some(work) = self.spare.take() {
                    work.run().unwrap();
                }
            }
            Op::Reopen => {
                self.kill();
                // Records acknowledged only in memory come back, and the
                // reserved zeros are no damage.
                let records = self.model.len() as u64;
                let recovery = self.reopen();
                assert_eq!(
                    recovery,
                    Recovery {
                        records,
                        ..Recovery::default()
                    }
                );
            }
            Op::TornReopen(cut) => {
                let Some((seq, len)) = self.last_appended else {
                    return;
                };
                if self.model.back().map(|r| r.0) != Some(seq) {
                    return;
                }
                // A kill in the middle of copying the record: part of it is
                // there, zeros (the reservation) after it.
                // The cut must lose a byte that is not zero: a record whose
                // tail is zeros, cut inside them, is whole (the zeros of the
                // reservation are the bytes it would have had).
                let mut encoded = Vec::new();
                let payload = &self.model.back().expect("checked above").1;
                super::format::encode_record(seq, payload, &mut encoded);
                let Some(last_nonzero) = encoded.iter().rposition(|&b| b != 0) else {
                    return;
                };
                if last_nonzero == 0 {
                    return;
                }
                let written = self.spool().segments.back().unwrap().bytes;
                let last = self.kill().unwrap();
                let reserved = fs::metadata(&last).unwrap().len();
                let frame = (FRAME_OVERHEAD + len) as u64;
                // Keep between one byte and the last byte that is not zero,
                // which is lost.
                let keep = 1 + cut as u64 % last_nonzero as u64;
                truncate(&last, written - frame + keep);
                truncate(&last, reserved);
                self.model.pop_back();
                self.last_appended = None;
                let records = self.model.len() as u64;
                let recovery = self.reopen();
                assert_eq!(recovery.records, records);
                assert_eq!(recovery.corrupt_records, 0);
                // What is cut counts the torn record's bytes that are not
                // zero, never the zeros of the reservation.
                assert!(
                    (1..=keep).contains(&recovery.truncated_bytes),
                    "{} bytes cut of a record torn after {keep}",
                    recovery.truncated_bytes
                );
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
        let files = bytes_on_disk(self.dir.path());
        assert_eq!(spool.disk_bytes() + spool.reserved_bytes(), files);
        let spare = fs::metadata(self.dir.path().join(SPARE_FILE)).map_or(0, |m| m.len());
        assert!(
            files + spare <= self.opts.max_bytes,
            "{files} bytes of segments and {spare} of spare"
        );
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
        let mut harness = Harness::new(700, 1 << 20);
        for op in ops {
            harness.apply(op);
            harness.check();
        }
        prop_assert_eq!(harness.reader.corrupt_records(), 0);
    }

    /// Near the limit, with segments smaller than some records and the
    /// spare written while appends go on: the files never pass the limit.
    #[test]
    fn a_tight_spool_keeps_its_limit_with_spares_and_large_records(
        segment_bytes in 1..400u64,
        max_bytes in 200..1500u64,
        ops in proptest::collection::vec(op(), 1..80)
    ) {
        let mut harness = Harness::new(segment_bytes, max_bytes);
        for op in ops {
            harness.apply(op);
            harness.check();
        }
        prop_assert_eq!(harness.reader.corrupt_records(), 0);
    }
}
