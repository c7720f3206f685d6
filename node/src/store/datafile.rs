//! A title's data file, written around the page cache where it can be.
//!
//! Measured on the fill benchmark: with ordinary positioned writes the kernel's copy into
//! freshly allocated page-cache pages was 59% of the fetching process's CPU time (on a VM
//! whose host hands memory back and forth, every new page cache page costs a fault on the
//! host too), and the fill ran at 0.6-0.74 of a raw QUIC transfer. Chunks are therefore
//! written with `O_DIRECT` from buffers aligned for it ([`chunk_buffer`]): the disk reads
//! them straight from our memory. Whatever cannot go that way (a filesystem that refuses
//! `O_DIRECT`, an unaligned buffer, the short last chunk of a title) goes through an ordinary
//! descriptor of the same file. Both share one inode, so one `fdatasync` covers both, and
//! the kernel drops cached pages of a range written directly, so reads see the new bytes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};

/// Alignment of buffer address, file offset and length for a direct write. 4 KiB satisfies
/// every logical block size Linux block devices use (512 B and 4 KiB).
pub(super) const DIRECT_ALIGN: usize = 4096;

/// An empty buffer with room for `len` bytes whose first byte is `DIRECT_ALIGN`-aligned,
/// so a chunk received into it can be written directly. Appending up to `len` bytes never
/// moves it.
pub fn chunk_buffer(len: usize) -> BytesMut {
    let mut whole = BytesMut::with_capacity(len + DIRECT_ALIGN);
    let skip = whole.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
    whole.resize(skip, 0);
    whole.split_off(skip)
}

/// Reads exactly `len` bytes at `offset` of `file` into a fresh buffer that becomes the
/// returned `Bytes` as it is: not zeroed first, not copied again. Every chunk served is read
/// this way. Measured on the serve bench: zeroing each 1 MiB buffer before `pread` overwrote
/// it was 3.5% of the serving process's CPU time, two thirds of it on the verified path,
/// whose buffers stay alive in the recent chunks and are cold when reused.
pub fn read_bytes_at(file: &File, len: usize, offset: u64) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(len);
    // Bounded: each pass reads at least one byte or ends the loop.
    while buf.len() < len {
        // `spare_capacity` lets the kernel write the unfilled part and then counts what it
        // wrote, so no byte is readable before it was read from the file.
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // A capacity larger than asked may have let the last read take bytes past `len`.
    buf.truncate(len);
    Ok(Bytes::from(buf))
}

/// The open data file of one title.
#[derive(Debug)]
pub(super) struct DataFile {
    buffered: File,
    /// `None` when the filesystem refuses `O_DIRECT` (or stopped accepting it).
    direct: Option<File>,
    direct_writes: AtomicU64,
}

impl DataFile {
    /// Opens `path` for reading and writing with the given options (create/truncate are
    /// the caller's), plus a second, direct descriptor when the filesystem allows one.
    pub(super) fn open(path: &Path, options: &OpenOptions) -> io::Result<Self> {
        Ok(Self::with_buffered(options.open(path)?, path))
    }

    /// Wraps an open descriptor, adding a direct one opened through `path` (which may be a
    /// `/proc/self/fd` link to an unnamed file) when the filesystem allows it.
    pub(super) fn with_buffered(buffered: File, path: &Path) -> Self {
        let direct = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .inspect_err(|e| {
                tracing::debug!(path = %path.display(), error = %e, "no direct I/O; writes go through the page cache")
            })
            .ok();
        Self { buffered, direct, direct_writes: AtomicU64::new(0) }
    }

    /// Writes `bytes` at `offset`; directly when address, offset and length allow it. Not
    /// durable until [`DataFile::sync_data`].
    pub(super) fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let aligned = bytes.as_ptr().align_offset(DIRECT_ALIGN) == 0
            && bytes.len().is_multiple_of(DIRECT_ALIGN)
            && offset.is_multiple_of(DIRECT_ALIGN as u64);
        if let (true, Some(direct)) = (aligned, &self.direct) {
            match direct.write_all_at(bytes, offset) {
                Ok(()) => {
                    self.direct_writes.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                // EINVAL: this file or device wants a stricter alignment after all; the
                // buffered descriptor writes the same bytes. Any other error is real.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::debug!(error = %e, "direct write refused; using the page cache");
                }
                Err(e) => return Err(e),
            }
        }
        self.buffered.write_all_at(bytes, offset)
    }

    pub(super) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.buffered.read_exact_at(buf, offset)
    }

    /// Reads `len` bytes at `offset` through the page cache (see [`read_bytes_at`]).
    pub(super) fn read_bytes_at(&self, len: usize, offset: u64) -> io::Result<Bytes> {
        read_bytes_at(&self.buffered, len, offset)
    }

    /// Reads `len` bytes at `offset` from the disk itself where it can: directly (around the
    /// page cache, which then neither answers for the disk nor fills with bytes read once),
    /// through the page cache when the offset is not aligned or direct reads are refused.
    /// (A direct read first writes back dirty cached pages of its range, so it sees every
    /// write made so far.) The scrub reads this way.
    pub(super) fn read_uncached_at(&self, len: usize, offset: u64) -> io::Result<Bytes> {
        if let (true, Some(direct)) = (offset.is_multiple_of(DIRECT_ALIGN as u64), &self.direct) {
            let padded = len.next_multiple_of(DIRECT_ALIGN);
            let mut buf = chunk_buffer(padded);
            buf.resize(padded, 0);
            let mut got = 0;
            // Bounded: each pass reads at least one byte or ends the loop.
            while got < len {
                match direct.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // EINVAL: stricter alignment wanted after all (or a short read left an
                    // unaligned remainder); the page cache reads the same bytes.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        got = usize::MAX;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if got != usize::MAX {
                if got < len {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                buf.truncate(len);
                return Ok(buf.freeze());
            }
        }
        read_bytes_at(&self.buffered, len, offset)
    }

    /// Makes every write so far durable, direct or not (both descriptors share the inode).
    pub(super) fn sync_data(&self) -> io::Result<()> {
        self.buffered.sync_data()
    }

    pub(super) fn set_len(&self, len: u64) -> io::Result<()> {
        self.buffered.set_len(len)
    }

    /// The file's length in bytes.
    pub(super) fn file_len(&self) -> io::Result<u64> {
        Ok(self.buffered.metadata()?.len())
    }

    /// Whether writes can bypass the page cache here.
    #[cfg(test)]
    pub(crate) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// How many writes went around the page cache.
    #[cfg(test)]
    pub(crate) fn direct_writes(&self) -> u64 {
        self.direct_writes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rw() -> OpenOptions {
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(true).truncate(false);
        o
    }

    #[test]
    fn chunk_buffers_are_aligned_and_do_not_move_when_filled() {
        for len in [1usize, 4095, 4096, 65_536, 1 << 20, (1 << 20) + 17] {
            let mut buf = chunk_buffer(len);
            let start = buf.as_ptr();
            assert_eq!(start.align_offset(DIRECT_ALIGN), 0, "len {len}");
            assert!(buf.capacity() >= len);
            let piece = vec![7u8; 1000];
            while buf.len() < len {
                let n = piece.len().min(len - buf.len());
                buf.extend_from_slice(&piece[..n]);
            }
            assert_eq!(buf.as_ptr(), start, "len {len}: the buffer moved while filling");
            assert_eq!(buf.freeze().as_ptr(), start);
        }
    }

    #[test]
    fn aligned_writes_go_direct_and_the_rest_buffered_and_all_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.data");
        let file = DataFile::open(&path, &rw()).unwrap();
        let len = 3 * 65_536 + 1000;
        file.set_len(len).unwrap();
        let mut want = vec![0u8; len as usize];
        // Two aligned chunks, one unaligned tail, one aligned chunk written from an
        // unaligned address.
        for (i, (offset, n)) in
            [(0usize, 65_536usize), (65_536, 65_536), (196_608, 1000)].into_iter().enumerate()
        {
            let mut buf = chunk_buffer(n);
            buf.resize(n, i as u8 + 1);
            file.write_all_at(&buf, offset as u64).unwrap();
            want[offset..offset + n].fill(i as u8 + 1);
        }
        let odd = vec![9u8; 65_536 + 1];
        file.write_all_at(&odd[1..], 131_072).unwrap();
        want[131_072..196_608].fill(9);
        file.sync_data().unwrap();
        let got = file.read_bytes_at(len as usize, 0).unwrap();
        assert!(got[..] == want[..], "bytes read back differ from those written");
        // Around the page cache too: aligned, the short tail, and an unaligned offset.
        for (offset, n) in [(0usize, 65_536usize), (196_608, 1000), (100, 5000)] {
            let read = file.read_uncached_at(n, offset as u64).unwrap();
            assert!(read[..] == want[offset..offset + n], "uncached read at {offset}");
        }
        assert!(file.read_uncached_at(2000, 196_608).is_err(), "a read past the end must fail");
        assert!(file.read_bytes_at(2000, 196_608).is_err(), "a read past the end must fail");
        if file.is_direct() {
            assert_eq!(file.direct_writes(), 2, "only the two aligned chunks may go direct");
        } else {
            eprintln!("this filesystem refuses O_DIRECT: checked the buffered path only");
            assert_eq!(file.direct_writes(), 0);
        }
    }
}
