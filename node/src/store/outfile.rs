//! One title written straight into the file a fetch was asked for, with no index beside it:
//! for a fetch whose store would only have been a means to its output (no `--data`).
//!
//! Verified chunks land at their offsets in an unnamed file (`O_TMPFILE`) in the destination's
//! directory; once every chunk is in, the file is synced once and given the destination's
//! name (linked beside it, then renamed over it). The title's bytes are written once and
//! synced once, nothing named like the destination exists before the whole title does, and a
//! fetch killed halfway leaves nothing behind: an unnamed file goes with its last descriptor.
//! Where a filesystem has no unnamed files, a hidden named one (`.fillmesh-*.partial`) is
//! used instead and removed on every way out but a kill.
//!
//! The same file in the temporary directory is what a fetch to standard output or a pipe
//! writes into while its in-order prefix is streamed out ([`OutFile::read_chunk`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use fillmesh_net::sync::LockExt;
use fillmesh_protocol::{ChunkBitmap, Manifest, TitleId};

use super::datafile::DataFile;
use super::writer::Commit;
use super::{empty_bitmap, StoreError, VerifiedChunk, Written};

/// A title's bytes on their way to one file.
#[derive(Debug)]
pub struct OutFile {
    dir: PathBuf,
    file: DataFile,
    /// `None` for an unnamed file (reached through `/proc/self/fd`), else the hidden name
    /// it has until it is persisted (removed when dropped).
    named: Mutex<Option<tempfile::TempPath>>,
    fd_path: PathBuf,
    title: Mutex<Option<Adopted>>,
}

#[derive(Debug)]
struct Adopted {
    title: TitleId,
    manifest: Arc<Manifest>,
    held: ChunkBitmap,
}

impl OutFile {
    /// An empty file in `dir`, unnamed where the filesystem allows it.
    pub fn create_in(dir: &Path) -> Result<Self, StoreError> {
        let what = || format!("creating a file in {}", dir.display());
        let unnamed =
            OpenOptions::new().read(true).write(true).mode(0o644).custom_flags(libc::O_TMPFILE).open(dir);
        let (file, named) = match unnamed {
            Ok(file) => (file, None),
            // EOPNOTSUPP, EISDIR or EINVAL: this filesystem (or kernel) has no unnamed files.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)) => {
                let temp = tempfile::Builder::new()
                    .prefix(".fillmesh-")
                    .suffix(".partial")
                    .tempfile_in(dir)
                    .map_err(|e| StoreError::io(what(), e))?;
                let (file, path) = temp.into_parts();
                (file, Some(path))
            }
            Err(e) => return Err(StoreError::io(what(), e)),
        };
        let fd_path = match &named {
            Some(path) => path.to_path_buf(),
            None => PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            file: DataFile::with_buffered(file, &fd_path),
            named: Mutex::new(named),
            fd_path,
            title: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Adopted>> {
        // Every update is one assignment or one bit set: a poisoned lock is still consistent.
        self.title.locked()
    }

    /// Takes the title's verified manifest and sizes the file for it. Once only.
    pub fn adopt(&self, title: TitleId, manifest: &Manifest) -> Result<(), StoreError> {
        let mut adopted = self.lock();
        if let Some(a) = adopted.as_ref() {
            return match a.title == title && *a.manifest == *manifest {
                true => Ok(()),
                false => Err(StoreError::ManifestConflict { title }),
            };
        }
        self.file
            .set_len(manifest.data_len())
            .map_err(|e| StoreError::io(format!("sizing a file in {} for {title}", self.dir.display()), e))?;
        let held = empty_bitmap(manifest.chunk_count())?;
        *adopted = Some(Adopted { title, manifest: Arc::new(manifest.clone()), held });
        Ok(())
    }

    /// The manifest and the chunks written so far, once `title`'s manifest is adopted.
    pub fn adopted(&self, title: &TitleId) -> Option<(Arc<Manifest>, ChunkBitmap)> {
        self.lock().as_ref().filter(|a| a.title == *title).map(|a| (a.manifest.clone(), a.held.clone()))
    }

    /// Reads a written chunk back, verified again (it came back from a disk).
    pub fn read_chunk(&self, index: u32) -> Result<Bytes, StoreError> {
        let (title, manifest) = {
            let adopted = self.lock();
            let a = adopted.as_ref().ok_or(StoreError::WriterGone)?;
            if !a.held.contains(index) {
                return Err(StoreError::NotHeld { title: a.title, index });
            }
            (a.title, a.manifest.clone())
        };
        let len = manifest.chunk_len(index).ok_or(StoreError::NotHeld { title, index })?;
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, manifest.chunk_offset(index))
            .map_err(|e| StoreError::io(format!("chunk {index} of {title}"), e))?;
        if manifest.verify_chunk(index, &buf).is_err() {
            return Err(StoreError::CorruptOnDisk { title, index });
        }
        Ok(Bytes::from(buf))
    }

    /// Syncs the whole title and names it `out` (in the directory it was created in),
    /// replacing what `out` was. Refused unless every chunk is in.
    pub fn persist(&self, out: &Path) -> Result<(), StoreError> {
        let what = || out.display().to_string();
        let title = match self.lock().as_ref() {
            Some(a) if a.held.is_full() => a.title,
            Some(a) => return Err(StoreError::Incomplete(a.title)),
            None => return Err(StoreError::io(what(), io::Error::other("no title was fetched into it"))),
        };
        self.file.sync_data().map_err(|e| StoreError::io(what(), e))?;
        let named = self.named.locked().take();
        match named {
            Some(path) => path.persist(out).map_err(|e| StoreError::io(what(), e.error))?,
            None => {
                // An unnamed file gets a name by linking its /proc/self/fd entry; a link
                // cannot replace a file, so it is made beside `out` and renamed over it.
                let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let beside = self.dir.join(format!(".{name}.{}.fillmesh-part", std::process::id()));
                let _ = std::fs::remove_file(&beside);
                link_following(&self.fd_path, &beside).map_err(|e| StoreError::io(what(), e))?;
                if let Err(e) = std::fs::rename(&beside, out) {
                    let _ = std::fs::remove_file(&beside);
                    return Err(StoreError::io(what(), e));
                }
            }
        }
        // The new name, durably.
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(what(), e))?;
        tracing::debug!(%title, out = %out.display(), "title named into place");
        Ok(())
    }
}

/// `linkat(AT_FDCWD, from, AT_FDCWD, to, AT_SYMLINK_FOLLOW)`: the documented way to give an
/// `O_TMPFILE` file a name through its `/proc/self/fd` entry.
fn link_following(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{linkat, AtFlags, CWD};
    linkat(CWD, from, CWD, to, AtFlags::SYMLINK_FOLLOW).map_err(io::Error::from)
}

impl Commit for OutFile {
    /// A positioned write, no sync: nothing is durable or named before [`OutFile::persist`],
    /// which syncs once.
    fn write(&self, chunk: &VerifiedChunk, _pending: u64) -> Result<Written, StoreError> {
        let (manifest, held) = {
            let adopted = self.lock();
            let a = adopted.as_ref().ok_or(StoreError::WriterGone)?;
            (a.manifest.clone(), a.title == chunk.title && a.held.contains(chunk.index))
        };
        let len = chunk.bytes.len() as u64;
        if !held {
            self.file
                .write_all_at(&chunk.bytes, manifest.chunk_offset(chunk.index))
                .map_err(|e| StoreError::io(format!("chunk {} of {}", chunk.index, chunk.title), e))?;
        }
        Ok(Written { title: chunk.title, index: chunk.index, len, written: !held, file: None })
    }

    /// Marks the chunks written as held: per chunk, whether it was not before.
    fn commit(&self, written: &[Written]) -> Result<Vec<bool>, StoreError> {
        let mut adopted = self.lock();
        let a = adopted.as_mut().ok_or(StoreError::WriterGone)?;
        Ok(written
            .iter()
            .map(|w| {
                let fresh = w.written && w.title == a.title && !a.held.contains(w.index);
                if fresh {
                    a.held.insert(w.index);
                }
                fresh
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use fillmesh_protocol::ChunkSize;

    fn title_of(bytes: &[u8], chunk: u64) -> (TitleId, Manifest) {
        Manifest::from_bytes(bytes, ChunkSize::new(chunk).unwrap()).unwrap()
    }

    fn chunks(bytes: &[u8], title: TitleId, manifest: &Manifest) -> Vec<VerifiedChunk> {
        (0..manifest.chunk_count())
            .map(|i| {
                let (o, l) = (manifest.chunk_offset(i) as usize, manifest.chunk_len(i).unwrap() as usize);
                VerifiedChunk::verify(title, manifest, i, Bytes::copy_from_slice(&bytes[o..o + l])).unwrap()
            })
            .collect()
    }

    /// Both halves of a commit, as the writer thread does them.
    fn put(file: &OutFile, chunks: &[VerifiedChunk]) -> Vec<bool> {
        let written: Vec<Written> = chunks.iter().map(|c| file.write(c, 0).unwrap()).collect();
        file.commit(&written).unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_title_is_named_into_place_only_whole_and_replaces_what_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..(3 * 65_536 + 777u32)).map(|i| (i % 251) as u8).collect();
        let (title, manifest) = title_of(&bytes, 65_536);
        let out = dir.path().join("title.bin");
        std::fs::write(&out, b"what was there").unwrap();
        let file = OutFile::create_in(dir.path()).unwrap();
        file.adopt(title, &manifest).unwrap();
        let all = chunks(&bytes, title, &manifest);
        // In reverse order, and one twice: the second time it is not fresh.
        assert_eq!(put(&file, &all[2..]), vec![true, true]);
        assert_eq!(put(&file, &all[3..]), vec![false]);
        assert_eq!(&file.read_chunk(3).unwrap()[..], &bytes[3 * 65_536..]);
        assert!(matches!(file.read_chunk(0), Err(StoreError::NotHeld { .. })));
        // While incomplete, the old file is untouched and nothing else is named.
        assert_eq!(std::fs::read(&out).unwrap(), b"what was there");
        assert_eq!(entries(dir.path()), vec!["title.bin".to_string()], "an unnamed file has no name");
        put(&file, &all[..2]);
        file.persist(&out).unwrap();
        assert!(std::fs::read(&out).unwrap() == bytes);
        assert_eq!(entries(dir.path()), vec!["title.bin".to_string()]);
    }

    #[test]
    fn an_incomplete_or_dropped_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = vec![5u8; 70_000];
        let (title, manifest) = title_of(&bytes, 65_536);
        let out = dir.path().join("out");
        let file = OutFile::create_in(dir.path()).unwrap();
        file.adopt(title, &manifest).unwrap();
        put(&file, &chunks(&bytes, title, &manifest)[..1]);
        assert!(matches!(file.persist(&out), Err(StoreError::Incomplete(_))));
        assert!(!out.exists());
        assert!(entries(dir.path()).is_empty(), "left behind: {:?}", entries(dir.path()));
    }

    #[test]
    fn another_manifest_for_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (title, manifest) = title_of(&[1u8; 10_000], 4096);
        let (_, other) = title_of(&[2u8; 10_000], 4096);
        let file = OutFile::create_in(dir.path()).unwrap();
        file.adopt(title, &manifest).unwrap();
        file.adopt(title, &manifest).unwrap();
        assert!(matches!(file.adopt(title, &other), Err(StoreError::ManifestConflict { .. })));
    }

    #[test]
    fn a_missing_directory_is_an_error_that_names_it() {
        let err = OutFile::create_in(Path::new("/nonexistent/fillmesh")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/fillmesh"), "{err}");
    }
}
