//! How records and the ledger are laid out on disk, and the low-level
//! reading that both recovery (in [`super::Spool::open`]) and
//! [`super::SpoolReader`] use.
//!
//! A record is a 24-byte header followed by its payload. Header fields are
//! little-endian:
//!
//! | bytes  | field                                               |
//! |--------|-----------------------------------------------------|
//! | 0..4   | magic `FE 52 41 53`                                 |
//! | 4..12  | sequence number (u64)                               |
//! | 12..16 | payload length (u32)                                |
//! | 16..20 | CRC32 of the sequence, length and payload bytes     |
//! | 20..24 | CRC32 of header bytes 0..20                         |
//!
//! The second checksum lets a reader trust a header (and so skip exactly one
//! record whose payload is damaged) without reading the payload, and lets
//! resynchronisation after a damaged header find the next real record
//! quickly. The first magic byte, 0xFE, never occurs in UTF-8 text, so JSON
//! payloads cannot contain something that looks like the start of a header.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Marks the start of every record header.
pub(crate) const MAGIC: [u8; 4] = [0xFE, b'R', b'A', b'S'];

/// Bytes of a record header.
pub(crate) const HEADER_LEN: usize = 24;

/// Marks the start of the ledger file.
const LEDGER_MAGIC: [u8; 4] = [0xFE, b'L', b'G', b'1'];

/// Bytes of the ledger file.
pub(crate) const LEDGER_LEN: usize = 24;

/// Highest sequence number a record may have. Seqs count up from 1 by one
/// per record, so this is never reached in practice (2^63 records); a header
/// or ledger above it is damage, and refusing it keeps `seq + 1` in range.
pub(crate) const MAX_SEQ: u64 = u64::MAX >> 1;

/// How much resynchronisation reads at a time while looking for a header.
const SCAN_CHUNK: usize = 64 * 1024;

/// A record header whose own checksum verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The record's sequence number.
    pub seq: u64,
    /// Payload length in bytes.
    pub len: u32,
    /// Checksum of sequence number, length and payload.
    pub crc: u32,
}

impl Header {
    /// Bytes of the whole record: header and payload.
    pub(crate) fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// Checksum over a record's sequence number, length and payload.
pub(crate) fn payload_crc(seq: u64, len: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&len.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The header of record `seq` with `payload`. The caller has checked that
/// the payload length fits in a u32.
pub(crate) fn encode_header(seq: u64, payload: &[u8]) -> [u8; HEADER_LEN] {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = [0; HEADER_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4..12].copy_from_slice(&seq.to_le_bytes());
    out[12..16].copy_from_slice(&len.to_le_bytes());
    out[16..20].copy_from_slice(&payload_crc(seq, len, payload).to_le_bytes());
    let header_crc = crc32fast::hash(&out[..20]);
    out[20..].copy_from_slice(&header_crc.to_le_bytes());
    out
}

/// Writes the whole record (header then payload) into `out`, replacing its
/// contents. The caller has checked that the payload length fits in a u32.
#[cfg(test)]
pub(crate) fn encode_record(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&encode_header(seq, payload));
    out.extend_from_slice(payload);
}

/// The header in `bytes`, if the magic and header checksum match, the
/// length is within `max_len` and the seq within [`MAX_SEQ`].
pub(crate) fn decode_header(bytes: &[u8; HEADER_LEN], max_len: usize) -> Option<Header> {
    if bytes[..4] != MAGIC {
        return None;
    }
    let header_crc = u32::from_le_bytes(field(bytes, 20));
    if crc32fast::hash(&bytes[..20]) != header_crc {
        return None;
    }
    let header = Header {
        seq: u64::from_le_bytes(field(bytes, 4)),
        len: u32::from_le_bytes(field(bytes, 12)),
        crc: u32::from_le_bytes(field(bytes, 16)),
    };
    (header.len as usize <= max_len && header.seq <= MAX_SEQ).then_some(header)
}

/// `N` bytes of `bytes` starting at `at`.
fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// What lies at an offset of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing: the offset is at (or past) the end of the file.
    End,
    /// Fewer bytes than a header.
    Partial,
    /// A full header's worth of bytes that are not a valid header.
    BadHeader,
    /// A zero byte where a record would start (a header starts with
    /// [`MAGIC`], never with zero): the reserved, not yet written part of
    /// a mapped segment, or damage.
    Unwritten,
    /// A valid header (its payload may still be incomplete or damaged).
    Header(Header),
}

/// Looks at the header at `offset`.
pub(crate) fn read_header(file: &File, offset: u64, max_len: usize) -> io::Result<Step> {
    let mut bytes = [0; HEADER_LEN];
    let n = read_full_at(file, &mut bytes, offset)?;
    Ok(header_step(&bytes[..n], max_len))
}

/// What `bytes`, read from an offset of a segment file up to at most the
/// file's end, show at that offset.
pub(crate) fn header_step(bytes: &[u8], max_len: usize) -> Step {
    match bytes.first_chunk::<HEADER_LEN>() {
        _ if bytes.is_empty() => Step::End,
        _ if bytes[0] == 0 => Step::Unwritten,
        Some(header) => decode_header(header, max_len).map_or(Step::BadHeader, Step::Header),
        None => Step::Partial,
    }
}

/// The state of a record's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Payload {
    /// Complete and its checksum verified.
    Intact,
    /// Complete but its checksum does not match.
    Damaged,
    /// The file ends before the payload does.
    Partial,
}

/// Reads the payload of the record whose header is at `offset` into `out`.
pub(crate) fn read_payload(
    file: &File,
    offset: u64,
    header: &Header,
    out: &mut Vec<u8>,
) -> io::Result<Payload> {
    out.clear();
    out.resize(header.len as usize, 0);
    let n = read_full_at(file, out, offset + HEADER_LEN as u64)?;
    out.truncate(n);
    let state = payload_state(header, out);
    if state == Payload::Partial {
        out.clear();
    }
    Ok(state)
}

/// The state of the payload of `header`'s record, given `bytes`: what was
/// read from the file right after the header, up to at most the file's end.
pub(crate) fn payload_state(header: &Header, bytes: &[u8]) -> Payload {
    match bytes.get(..header.len as usize) {
        None => Payload::Partial,
        Some(payload) if payload_crc(header.seq, header.len, payload) == header.crc => {
            Payload::Intact
        }
        Some(_) => Payload::Damaged,
    }
}

/// Finds the first offset at or after `start` holding a valid header with a
/// sequence number of at least `min_seq`, reading forward to the end of the
/// file.
pub(crate) fn resync(
    file: &File,
    start: u64,
    max_len: usize,
    min_seq: u64,
) -> io::Result<Option<(u64, Header)>> {
    let mut chunk = vec![0; SCAN_CHUNK];
    let mut pos = start;
    loop {
        let n = read_full_at(file, &mut chunk, pos)?;
        if n == 0 {
            return Ok(None);
        }
        for i in (0..n).filter(|&i| chunk[i] == MAGIC[0]) {
            let at = pos + i as u64;
            let mut bytes = [0; HEADER_LEN];
            if i + HEADER_LEN <= n {
                bytes.copy_from_slice(&chunk[i..i + HEADER_LEN]);
            } else if read_full_at(file, &mut bytes, at)? < HEADER_LEN {
                continue;
            }
            if let Some(header) = decode_header(&bytes, max_len)
                && header.seq >= min_seq
            {
                return Ok(Some((at, header)));
            }
        }
        if n < chunk.len() {
            return Ok(None);
        }
        pos += n as u64;
    }
}

/// The end of the last byte of `file` in `from..len` that is not zero, or
/// `from` when they all are: where a mapped segment's reserved, unwritten
/// zeros begin.
pub(crate) fn nonzero_end(file: &File, from: u64, len: u64) -> io::Result<u64> {
    let mut chunk = vec![0; SCAN_CHUNK];
    let mut end = len;
    while end > from {
        let n = usize::try_from(end - from).map_or(SCAN_CHUNK, |left| left.min(SCAN_CHUNK));
        let start = end - n as u64;
        let got = read_full_at(file, &mut chunk[..n], start)?;
        if let Some(last) = chunk[..got].iter().rposition(|&b| b != 0) {
            return Ok(start + last as u64 + 1);
        }
        end = start;
    }
    Ok(from)
}

/// Reads into `buf` from `offset` until it is full or the file ends;
/// returns how many bytes were read.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// What the ledger records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ledger {
    /// Every record with a sequence number up to this one is acknowledged.
    pub acked: u64,
    /// No sequence number below this one may be handed out again.
    pub floor: u64,
}

/// The bytes of the ledger file.
pub(crate) fn encode_ledger(ledger: Ledger) -> [u8; LEDGER_LEN] {
    let mut out = [0; LEDGER_LEN];
    out[..4].copy_from_slice(&LEDGER_MAGIC);
    out[4..12].copy_from_slice(&ledger.acked.to_le_bytes());
    out[12..20].copy_from_slice(&ledger.floor.to_le_bytes());
    let crc = crc32fast::hash(&out[..20]);
    out[20..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The ledger in `bytes`, if they are a whole, undamaged ledger with seqs
/// within [`MAX_SEQ`].
pub(crate) fn decode_ledger(bytes: &[u8]) -> Option<Ledger> {
    if bytes.len() != LEDGER_LEN || bytes[..4] != LEDGER_MAGIC {
        return None;
    }
    if crc32fast::hash(&bytes[..20]) != u32::from_le_bytes(field(bytes, 20)) {
        return None;
    }
    let ledger = Ledger {
        acked: u64::from_le_bytes(field(bytes, 4)),
        floor: u64::from_le_bytes(field(bytes, 12)),
    };
    (ledger.acked <= MAX_SEQ && ledger.floor <= MAX_SEQ + 1).then_some(ledger)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn header_round_trips_and_rejects_any_flipped_bit() {
        let mut frame = Vec::new();
        encode_record(42, b"hello", &mut frame);
        assert_eq!(frame.len(), HEADER_LEN + 5);
        let header: [u8; HEADER_LEN] = field(&frame, 0);
        let decoded = decode_header(&header, 1024).expect("valid header");
        assert_eq!((decoded.seq, decoded.len), (42, 5));
        assert_eq!(decoded.crc, payload_crc(42, 5, b"hello"));
        for byte in 0..HEADER_LEN {
            for bit in 0..8 {
                let mut damaged = header;
                damaged[byte] ^= 1 << bit;
                assert_eq!(decode_header(&damaged, 1024), None, "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn header_with_length_over_the_limit_is_rejected() {
        let mut frame = Vec::new();
        encode_record(1, &[7; 100], &mut frame);
        let header: [u8; HEADER_LEN] = field(&frame, 0);
        assert!(decode_header(&header, 100).is_some());
        assert_eq!(decode_header(&header, 99), None);
    }

    #[test]
    fn resync_finds_the_next_valid_header_past_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let mut file = File::create(&path).unwrap();
        let mut frame = Vec::new();
        // Garbage including a lone magic and a header with an old seq.
        file.write_all(&[0xFE, b'R', b'A', b'S', 1, 2, 3]).unwrap();
        encode_record(3, b"old", &mut frame);
        file.write_all(&frame).unwrap();
        let good_at = 7 + frame.len() as u64;
        encode_record(9, b"new", &mut frame);
        file.write_all(&frame).unwrap();
        drop(file);
        let file = File::open(&path).unwrap();
        let (at, header) = resync(&file, 0, 1024, 5).unwrap().expect("found");
        assert_eq!((at, header.seq), (good_at, 9));
        assert_eq!(resync(&file, good_at + 1, 1024, 0).unwrap(), None);
    }

    #[test]
    fn seqs_past_the_maximum_are_damage_even_with_valid_checksums() {
        let mut frame = Vec::new();
        for (seq, valid) in [(MAX_SEQ, true), (MAX_SEQ + 1, false), (u64::MAX, false)] {
            encode_record(seq, b"x", &mut frame);
            let header: [u8; HEADER_LEN] = field(&frame, 0);
            assert_eq!(decode_header(&header, 1024).is_some(), valid, "{seq}");
        }
        for (acked, floor, valid) in [
            (MAX_SEQ, MAX_SEQ + 1, true),
            (u64::MAX, 1, false),
            (1, u64::MAX, false),
        ] {
            let bytes = encode_ledger(Ledger { acked, floor });
            assert_eq!(decode_ledger(&bytes).is_some(), valid, "{acked} {floor}");
        }
    }

    #[test]
    fn ledger_round_trips_and_rejects_damage() {
        let ledger = Ledger {
            acked: 17,
            floor: 30,
        };
        let bytes = encode_ledger(ledger);
        assert_eq!(decode_ledger(&bytes), Some(ledger));
        let mut damaged = bytes;
        damaged[5] ^= 1;
        assert_eq!(decode_ledger(&damaged), None);
        assert_eq!(decode_ledger(&bytes[..20]), None);
    }
}
