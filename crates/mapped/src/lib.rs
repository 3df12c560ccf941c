//! A region of a file, reserved on disk and mapped into this process's
//! memory: the publisher's spool appends a record by copying it into such a
//! region, with no system call.
//!
//! Bytes copied into the region are in the kernel's page cache the moment
//! the copy ends, so they survive the process being killed (`SIGKILL`, a
//! panic that aborts, the OOM killer) just as bytes handed to `write` do;
//! only a flush (`fdatasync` of the file, which on Linux also writes back
//! pages dirtied through a mapping) makes them survive a power cut.
//!
//! # Why this crate holds unsafe code
//! The workspace forbids `unsafe`. Mapping a file cannot be done without it,
//! so that one call lives here, alone, where it can be read in full.
//! [`MappedRegion::reserve`] is safe to call because of two rules this crate
//! and its one user keep:
//!
//! - **Nobody else changes the file while it is mapped.** The spool's
//!   directory is its owner's only (mode 0700, files 0600) and locked with
//!   `flock` while a spool is open, so no cooperating process writes or
//!   truncates a segment. In this process, the only way to shorten the file
//!   is [`MappedRegion::finish`], which unmaps first. A process of the same
//!   user that truncates the file anyway makes the next copy fault
//!   (`SIGBUS`); no safe file API can prevent that, and it is the accepted
//!   risk of a private spool directory.
//! - **The disk behind the region is written before it is mapped.** A copy
//!   into a sparse file can find the disk full when the page is first
//!   written, and the kernel answers that with `SIGBUS`. `reserve` writes
//!   zeros over every byte past the file's end first, so a full disk is an
//!   error from `reserve`, never a signal. That holds where a written block
//!   is rewritten in place: ext4 and XFS, the file systems of Kubernetes
//!   nodes and volumes as a rule. A copy-on-write file system (btrfs, ZFS)
//!   writes a changed block elsewhere, so there a full disk can still end
//!   the process with `SIGBUS`: keep the spool off those.
//!
//! # Why zeros rather than `fallocate`
//! `fallocate` reserves blocks as *unwritten* extents. The first copy into
//! each page of those then takes a page fault that converts the extent in
//! the file system's journal: on ext4 here a copy's p90 was 4.4 µs and its
//! p99 5.8 µs, against 0.2 µs and 0.4 µs for blocks written with zeros
//! (700-byte copies, 100,000 of them). Writing 8 MiB of zeros takes about
//! 14 ms, which is why the spool prepares its next segment in the
//! background.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use memmap2::{MmapMut, MmapOptions};

/// The first bytes of a file, reserved on disk and mapped for reading and
/// writing.
#[derive(Debug)]
pub struct MappedRegion {
    map: MmapMut,
}

/// Why a write did not fit in the region; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{len} bytes at offset {offset} do not fit in a mapped region of {size} bytes")]
pub struct OutOfRegion {
    /// Where the write would have started.
    pub offset: usize,
    /// Bytes it would have written.
    pub len: usize,
    /// Bytes of the region.
    pub size: usize,
}

impl MappedRegion {
    /// Reserves the first `len` bytes of `file` on disk, writing zeros from
    /// its end to `len` when it is shorter, and maps them. `file` must be
    /// open for reading and writing, and the bytes it already holds must be
    /// written ones, not holes (every file the spool makes is written).
    ///
    /// # Errors
    /// When the disk is full, `len` is zero or does not fit in memory, or
    /// the file cannot be mapped.
    pub fn reserve(file: &File, len: u64) -> io::Result<Self> {
        let size = usize::try_from(len)
            .ok()
            .filter(|&size| size > 0)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot map a region of {len} bytes"),
                )
            })?;
        write_zeros(file, len)?;
        // SAFETY: `file` is open for reading and writing and now holds at
        // least `len` bytes, all written on disk, so every page of the
        // mapping is backed and a first write to it cannot fail for want of
        // space. No other party changes or shortens the file while the
        // mapping lives (the crate's documentation gives the argument), so
        // the memory behind the `&mut [u8]` the mapping hands out is this
        // process's alone.
        #[allow(unsafe_code)]
        let map = unsafe { MmapOptions::new().len(size).map_mut(file)? };
        Ok(Self { map })
    }

    /// Bytes of the region.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the region has no bytes (never true of a region `reserve`
    /// made).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The region's bytes.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Copies `parts`, one after another, into the region from `offset`.
    ///
    /// # Errors
    /// [`OutOfRegion`] when they do not all fit; nothing is written then.
    pub fn write_at(&mut self, offset: usize, parts: &[&[u8]]) -> Result<(), OutOfRegion> {
        let len = parts.iter().map(|p| p.len()).sum::<usize>();
        let size = self.map.len();
        let Some(out) = offset
            .checked_add(len)
            .and_then(|end| self.map.get_mut(offset..end))
        else {
            return Err(OutOfRegion { offset, len, size });
        };
        let mut at = 0;
        for part in parts {
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        Ok(())
    }

    /// Unmaps the region, then cuts `file` (the file it maps) to `keep`
    /// bytes, handing back the unused reservation. Unmapping first is what
    /// makes the cut safe: no mapping of this process reaches past the new
    /// end.
    ///
    /// # Errors
    /// When the file cannot be cut; it keeps its old length then.
    pub fn finish(self, file: &File, keep: u64) -> io::Result<()> {
        drop(self.map);
        file.set_len(keep)
    }
}

/// Bytes of one write of zeros, and the boundaries writes end on.
const ZEROS_CHUNK: usize = 2 * 1024 * 1024;

/// The zeros written: in the binary's zero-filled data, so they cost no
/// allocation, and reading them maps the kernel's shared zero page.
static ZEROS: [u8; ZEROS_CHUNK] = [0; ZEROS_CHUNK];

/// Writes zeros from the end of `file` up to `len` bytes, so every block
/// of them is allocated and written.
///
/// The zeros go in writes of up to 2 MiB that end on 2 MiB boundaries of
/// the file. The kernel then keeps them in the page cache as large folios
/// (ext4 does since Linux 6.16), and a write through a mapping faults once
/// a folio rather than once every 64 KiB: for 100,000 appends of 700 bytes
/// into segments zeroed in 64 KiB writes, about 1,070 page faults and an
/// append p99 of 1.7 µs, against about 35 faults and 0.07 µs with 2 MiB
/// writes (docs/benchmarks.md, section 7). A kernel without large folios
/// gets the same bytes in fewer, larger writes.
///
/// # Errors
/// When the file cannot be written (a full disk, say).
pub fn write_zeros(file: &File, len: u64) -> io::Result<()> {
    let chunk = ZEROS_CHUNK as u64;
    let mut at = file.metadata()?.len();
    while at < len {
        let end = (at / chunk + 1).saturating_mul(chunk).min(len);
        // At most one chunk: `end` is past `at` by no more than `chunk`.
        let n = usize::try_from(end - at).map_err(io::Error::other)?;
        file.write_all_at(&ZEROS[..n], at)?;
        at = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Read;

    fn open(path: &std::path::Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .expect("open")
    }

    #[test]
    fn writes_through_the_region_are_read_back_by_the_file_and_kept_on_finish() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("segment");
        let file = open(&path);
        let mut region = MappedRegion::reserve(&file, 4096).expect("reserve");
        assert_eq!(region.len(), 4096);
        assert_eq!(file.metadata().expect("metadata").len(), 4096);
        region.write_at(0, &[b"head", b"er"]).expect("fits");
        region.write_at(6, &[b"payload"]).expect("fits");
        // Another handle sees the bytes at once: they are in the page cache.
        let mut seen = vec![0; 13];
        File::open(&path)
            .expect("open")
            .read_exact(&mut seen)
            .expect("read");
        assert_eq!(seen, b"headerpayload");
        assert_eq!(&region.bytes()[13..20], &[0; 7], "the rest reads as zeros");
        region.finish(&file, 13).expect("finish");
        assert_eq!(std::fs::read(&path).expect("read"), b"headerpayload");
    }

    #[test]
    fn a_write_past_the_end_is_refused_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = open(&dir.path().join("segment"));
        let mut region = MappedRegion::reserve(&file, 16).expect("reserve");
        let err = region.write_at(10, &[b"abc", b"defg"]).unwrap_err();
        assert_eq!(
            err,
            OutOfRegion {
                offset: 10,
                len: 7,
                size: 16
            }
        );
        assert_eq!(region.bytes(), &[0; 16], "nothing was written");
        assert!(region.write_at(usize::MAX, &[b"x"]).is_err());
        region
            .write_at(9, &[b"abc", b"defg"])
            .expect("fits exactly");
    }

    #[test]
    fn a_region_keeps_what_the_file_held_and_an_empty_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("segment");
        std::fs::write(&path, b"kept").expect("write");
        let file = open(&path);
        let region = MappedRegion::reserve(&file, 8).expect("reserve");
        assert_eq!(region.bytes(), b"kept\0\0\0\0");
        let err = MappedRegion::reserve(&file, 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn zeros_fill_from_the_end_and_keep_what_the_file_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("segment");
        std::fs::write(&path, b"kept").expect("write");
        let file = open(&path);
        // From an unaligned end, across two 2 MiB boundaries, to an
        // unaligned length.
        write_zeros(&file, 4_200_003).expect("zeros");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes.len(), 4_200_003);
        assert_eq!(&bytes[..4], b"kept");
        assert!(bytes[4..].iter().all(|&b| b == 0));
        write_zeros(&file, 100).expect("a shorter length writes nothing");
        assert_eq!(file.metadata().expect("metadata").len(), 4_200_003);
    }
}
