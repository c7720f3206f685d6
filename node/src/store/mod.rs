//! The chunk store: chunk bytes in one sparse plain file per title, the index (manifests,
//! names, per-title bitmaps of verified chunks) in sled.
//!
//! The order of a chunk write is the whole crash-safety argument: verify, positioned write,
//! `fdatasync`, then set the chunk's bit and flush the index. A crash at any point leaves
//! either a set bit over durable verified bytes, or a clear bit (the chunk is fetched again).
//! Writes are grouped: one `fdatasync` and one index flush cover every chunk written in a
//! batch, and no chunk's bit is set before the sync that covers it.
//!
//! Every read of a chunk from disk verifies it before a byte leaves the node, so damage (a
//! failing disk, a stray write, a file touched by hand, while the node runs or while it was
//! down) is never served: the chunk is dropped (its bit cleared in the index, flushed, before
//! it stops counting as held), counted, logged once, and the titles that lost a chunk are
//! handed to whoever reports to the tracker ([`Store::take_damaged`]), so that it is filled
//! again. The verified bytes of a chunk read to serve part of it are kept in memory for
//! [`RECENT_TTL`] (see `recent`), so repeated small reads of one chunk cost one read and one
//! hash.
//! [`Store::scrub_chunk`] verifies a held chunk from the disk itself, for the scrub.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

mod datafile;
mod outfile;
mod recent;
pub mod scrub;
mod writer;

use bytes::Bytes;
use datafile::DataFile;
pub use datafile::{chunk_buffer, read_bytes_at};
use fillmesh_net::sync::LockExt;
use fillmesh_protocol::{BitmapError, ChunkBitmap, Manifest, TitleId, VerifyError};
pub use outfile::OutFile;
pub use recent::{RECENT_BYTES, RECENT_TTL};
use serde::{Deserialize, Serialize};
pub use writer::{ChunkWriter, Commit};

/// Why a store operation failed. Every variant leaves the index as it was.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed for want of space: the filesystem is full (`ENOSPC`) or the
    /// user's disk quota is reached (`EDQUOT`).
    #[error("the disk is full while writing {what}")]
    DiskFull {
        /// What was being written or created: a path, or `chunk N of TITLE`.
        what: String,
    },
    /// Any other I/O error, on the store's own files or on an export's destination.
    #[error("I/O error on {what}")]
    Io {
        /// What the operation was on: a path, or `chunk N of TITLE`.
        what: String,
        /// What the system said.
        source: io::Error,
    },
    /// The sled index failed to open, read, write or flush; opening also fails so while
    /// another process has the store open.
    #[error("index error")]
    Index(#[from] sled::Error),
    /// An entry of the index does not decode (a title record, a bitmap of the wrong length
    /// for its manifest, a key that is not a title id), or one could not be made (a record
    /// that does not encode, a bitmap for a chunk count past the largest).
    #[error("the index is corrupt for {what}: {reason}")]
    CorruptIndex {
        /// The entry: a title id, `bitmap` or `title key`.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store has no record of the title: never added, or removed since.
    #[error("unknown title {0}")]
    UnknownTitle(TitleId),
    /// The chunk is not held (never filled, or dropped since), or is past the title's end.
    #[error("chunk {index} of {title} is not held")]
    NotHeld {
        /// The title asked for.
        title: TitleId,
        /// The chunk asked for.
        index: u32,
    },
    /// The chunk was held, but its bytes read from disk failed verification: the store has
    /// dropped it, unless it was stored afresh during the read (it is no longer held, and
    /// its title is queued for [`Store::take_damaged`]). An [`OutFile`] says so of a chunk
    /// that fails on its read back, and keeps it marked written.
    #[error("chunk {index} of {title} failed verification on disk and was dropped")]
    CorruptOnDisk {
        /// The title of the damaged chunk.
        title: TitleId,
        /// The damaged chunk.
        index: u32,
    },
    /// The manifest given for a title does not verify against the title's id; nothing is
    /// recorded.
    #[error("the manifest does not match title {title}")]
    BadManifest {
        /// The title the manifest was given for.
        title: TitleId,
        /// Why it does not verify.
        source: VerifyError,
    },
    /// The title is known already with another manifest; an [`OutFile`] also answers this
    /// when asked to adopt a second title.
    #[error("title {title} is already known with a different manifest")]
    ManifestConflict {
        /// The title being added.
        title: TitleId,
    },
    /// An export, or an [`OutFile`]'s persist, of a title not every chunk of which is held.
    #[error("title {0} is not complete")]
    Incomplete(TitleId),
    /// Storing a chunk would take the held bytes past the quota of [`Store::set_quota`]: no
    /// chunk of its batch is stored, and what is held stays held and served.
    #[error(
        "the disk quota of {quota} bytes is reached ({held} bytes held): chunk {index} of {title} not stored"
    )]
    QuotaExceeded {
        /// The title of the first chunk that did not fit.
        title: TitleId,
        /// The first chunk that did not fit.
        index: u32,
        /// The bytes held, with those of the chunks before it in its batch.
        held: u64,
        /// The quota, in bytes.
        quota: u64,
    },
    /// Another chunk of the same write batch failed, so this one was not stored either; the
    /// text is that chunk's error, with its causes (the first chunk of the batch carries the
    /// error itself).
    #[error("another chunk in the same write batch failed: {0}")]
    BatchFailed(String),
    /// The writer thread has stopped, so a chunk could not be handed to it or its outcome
    /// never came back; an [`OutFile`] also answers this when given chunks, or asked for one,
    /// before it adopted a title.
    #[error("the store's writer has stopped")]
    WriterGone,
}

impl StoreError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        let what = what.into();
        // ENOSPC and EDQUOT: say plainly that the disk is full.
        if matches!(source.raw_os_error(), Some(28) | Some(122)) {
            StoreError::DiskFull { what }
        } else {
            StoreError::Io { what, source }
        }
    }
}

/// A chunk that has been checked against its title's manifest. The only way to make one is
/// [`VerifiedChunk::verify`], so the store cannot be handed unverified bytes.
#[derive(Debug, Clone)]
pub struct VerifiedChunk {
    title: TitleId,
    index: u32,
    bytes: Bytes,
}

impl VerifiedChunk {
    /// Checks `bytes` as chunk `index` of `title` against `manifest` (the chunk's length and
    /// hash there). `manifest` must be `title`'s, verified against its id: this does not
    /// check that.
    pub fn verify(
        title: TitleId,
        manifest: &Manifest,
        index: u32,
        bytes: Bytes,
    ) -> Result<Self, VerifyError> {
        manifest.verify_chunk(index, &bytes)?;
        Ok(Self { title, index, bytes })
    }

    /// The chunk's index in its title.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The chunk's bytes, as verified.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

/// A verified chunk written where it belongs but neither durable nor held yet: what the
/// second half of a group commit syncs and marks ([`Store::commit_written`]). It keeps no
/// bytes: the chunk's buffer may be reused once it is written.
#[derive(Debug)]
pub struct Written {
    title: TitleId,
    index: u32,
    len: u64,
    /// False when nothing was written (already held, or its title removed): such a chunk
    /// is not newly stored.
    written: bool,
    /// The data file to sync before the chunk may count as held, if one must be.
    file: Option<Arc<DataFile>>,
}

impl Written {
    /// The bytes written (0 when nothing was).
    pub fn bytes(&self) -> u64 {
        if self.written {
            self.len
        } else {
            0
        }
    }
}

#[derive(Serialize, Deserialize)]
struct TitleRecord {
    name: String,
    manifest: Manifest,
}

/// A record as stores wrote it before packages: the manifest had no `files` field (postcard
/// writes fields in order with no tags, so such a record is the new one without its last
/// byte, and reads as the new form only up to a missing field).
#[derive(Serialize, Deserialize)]
struct LegacyTitleRecord {
    name: String,
    len: u64,
    chunk_size: fillmesh_protocol::ChunkSize,
    cvs: Vec<fillmesh_protocol::ChainingValue>,
}

impl TitleRecord {
    /// The record in `value`, in today's form or the one before packages.
    fn decode(value: &[u8]) -> Result<Self, String> {
        let new = match postcard::from_bytes::<TitleRecord>(value) {
            Ok(record) => return Ok(record),
            Err(e) => e,
        };
        let old: LegacyTitleRecord = postcard::from_bytes(value).map_err(|_| new.to_string())?;
        let manifest = Manifest::new(old.len, old.chunk_size, old.cvs).map_err(|e| e.to_string())?;
        Ok(TitleRecord { name: old.name, manifest })
    }
}

#[derive(Debug)]
struct TitleState {
    name: String,
    manifest: Arc<Manifest>,
    held: ChunkBitmap,
    /// Chunks of this title newly marked held so far in this process. A read that finds a
    /// chunk damaged drops it only if this has not moved since the read began: otherwise the
    /// chunk may have been dropped and refilled meanwhile, and the good copy must stay.
    generation: u64,
    file: Arc<DataFile>,
}

impl TitleState {
    fn new(name: String, manifest: Manifest, held: ChunkBitmap, file: DataFile) -> Self {
        Self { name, manifest: Arc::new(manifest), held, generation: 0, file: Arc::new(file) }
    }
}

/// A node's chunk store. Shared between tasks behind an `Arc`; its methods block (call them
/// from `spawn_blocking` in async code).
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    bitmaps: sled::Tree,
    titles: Mutex<HashMap<TitleId, TitleState>>,
    /// Bytes of held chunks the store may hold at most (`--disk-quota`).
    quota: std::sync::atomic::AtomicU64,
    /// Bytes of all held chunks, kept up to date with every bit set or cleared.
    held_total: std::sync::atomic::AtomicU64,
    /// Titles removed by this process and not added again: chunks of theirs still on their
    /// way to the writer are dropped quietly, while a chunk of a title never added is a bug
    /// and an error.
    removed: Mutex<std::collections::HashSet<TitleId>>,
    /// Verified bytes of chunks read moments ago.
    recent: Mutex<recent::Recent>,
    /// Chunks found damaged and dropped since the store was opened.
    damaged: std::sync::atomic::AtomicU64,
    /// Titles that lost a damaged chunk since [`Store::take_damaged`] was last called.
    damaged_titles: Mutex<std::collections::BTreeSet<TitleId>>,
    /// Woken when a title joins `damaged_titles`.
    damage: tokio::sync::Notify,
    /// Every chunk as it becomes held (its bit durable), for the HAVEs of subscriptions.
    gained: tokio::sync::broadcast::Sender<(TitleId, u32)>,
}

/// Chunks a subscriber of [`Store::watch_gained`] may fall behind by before it is told it
/// lagged (and sends its whole bitmap again): 4 GiB of 1 MiB chunks.
const GAINED_BACKLOG: usize = 4096;

/// What [`Store::scrub_chunk`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scrubbed {
    /// The chunk verified on disk; its length.
    Verified(u64),
    /// The chunk did not verify and was dropped.
    Dropped,
    /// Not held (never, or no longer): nothing to check.
    NotHeld,
}

/// Summary of one title in the store.
#[derive(Debug, Clone)]
pub struct TitleInfo {
    /// The title's id, the store's key for it.
    pub title: TitleId,
    /// The name it was added under: the upload's name on the origin, the tracker's catalog
    /// name for a fill; empty when none was known (a fetch, or a title the catalog lacked).
    pub name: String,
    /// Its manifest, verified against the id when the title was added.
    pub manifest: Arc<Manifest>,
    /// The chunks held when the summary was taken (a copy).
    pub held: ChunkBitmap,
}

impl TitleInfo {
    /// The bytes of the chunks in [`TitleInfo::held`].
    pub fn held_bytes(&self) -> u64 {
        held_bytes(&self.held, &self.manifest)
    }
}

/// Bytes of the chunks in `held`.
fn held_bytes(held: &ChunkBitmap, manifest: &Manifest) -> u64 {
    held.iter().filter_map(|i| manifest.chunk_len(i)).sum()
}

impl Store {
    /// Opens (or creates) the store in `dir`, reloading every title and the chunks whose bits
    /// were set. Fails clearly if another process has it open.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir.join("data")).map_err(|e| StoreError::io(dir.display().to_string(), e))?;
        // No background flusher: every change is flushed explicitly where durability matters,
        // and without the thread the lock is released the moment the store is dropped.
        let db = sled::Config::new().path(dir.join("index")).flush_every_ms(None).open()?;
        let records = db.open_tree("titles")?;
        let bitmaps = db.open_tree("held")?;
        let store = Self {
            dir: dir.to_path_buf(),
            db,
            records,
            bitmaps,
            titles: Mutex::new(HashMap::new()),
            quota: std::sync::atomic::AtomicU64::new(u64::MAX),
            held_total: std::sync::atomic::AtomicU64::new(0),
            removed: Mutex::new(std::collections::HashSet::new()),
            recent: Mutex::default(),
            damaged: std::sync::atomic::AtomicU64::new(0),
            damaged_titles: Mutex::default(),
            damage: tokio::sync::Notify::new(),
            gained: tokio::sync::broadcast::channel(GAINED_BACKLOG).0,
        };
        store.load()?;
        Ok(store)
    }

    fn load(&self) -> Result<(), StoreError> {
        let mut titles = self.lock();
        for entry in self.records.iter() {
            let (key, value) = entry?;
            let title = title_from_key(&key)?;
            let record = TitleRecord::decode(&value)
                .map_err(|reason| StoreError::CorruptIndex { what: title.to_string(), reason })?;
            let chunks = record.manifest.chunk_count();
            let held = match self.bitmaps.get(key)? {
                Some(bits) => ChunkBitmap::from_parts(chunks, bits.to_vec()).map_err(|e: BitmapError| {
                    StoreError::CorruptIndex { what: title.to_string(), reason: e.to_string() }
                })?,
                None => empty_bitmap(chunks)?,
            };
            let (file, held) = self.open_data(&title, &record.manifest, held)?;
            titles.insert(title, TitleState::new(record.name, record.manifest, held, file));
        }
        self.remove_orphans(&titles);
        self.recount(&titles);
        Ok(())
    }

    /// Opens a title's data file. If it vanished or has the wrong length (an operator removed
    /// or truncated it), no chunk of it can be trusted: its bits are cleared.
    fn open_data(
        &self,
        title: &TitleId,
        manifest: &Manifest,
        held: ChunkBitmap,
    ) -> Result<(DataFile, ChunkBitmap), StoreError> {
        let path = self.data_path(title);
        let what = || path.display().to_string();
        let existed = path.exists();
        let file =
            DataFile::open(&path, OpenOptions::new().read(true).write(true).create(true).truncate(false))
                .map_err(|e| StoreError::io(what(), e))?;
        let len = file.file_len().map_err(|e| StoreError::io(what(), e))?;
        if existed && len == manifest.data_len() {
            return Ok((file, held));
        }
        file.set_len(manifest.data_len()).map_err(|e| StoreError::io(what(), e))?;
        let held = empty_bitmap(manifest.chunk_count())?;
        if existed {
            tracing::warn!(%title, "data file had the wrong length; its chunks will be fetched again");
        }
        self.bitmaps.insert(title.as_bytes(), held.as_bytes())?;
        self.db.flush()?;
        Ok((file, held))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TitleId, TitleState>> {
        // A panic while holding the lock cannot leave the map half-updated (every update is a
        // single insert or bit flip), so a poisoned lock is still usable.
        self.titles.locked()
    }

    /// The directory the store was opened in (the node's data directory), which holds its
    /// `index` and `data` directories.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Flushes the index: every change is flushed where it is made already, so this only
    /// makes sure of it before the process exits (a drained node's last step).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Limits the bytes of held chunks; chunks past it are refused with
    /// [`StoreError::QuotaExceeded`] and what is held stays served.
    pub fn set_quota(&self, bytes: u64) {
        self.quota.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes of all held chunks.
    pub fn held_bytes(&self) -> u64 {
        self.held_total.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Recounts the held bytes from the bitmaps (after load and whole-title changes).
    fn recount(&self, titles: &HashMap<TitleId, TitleState>) {
        let total = titles.values().map(|s| held_bytes(&s.held, &s.manifest)).sum();
        self.held_total.store(total, std::sync::atomic::Ordering::Relaxed);
    }

    /// Where a title's bytes live.
    pub fn data_path(&self, title: &TitleId) -> PathBuf {
        self.dir.join("data").join(format!("{title}.data"))
    }

    /// Records a title to fill. The manifest must verify against the id. Adding a title that
    /// is already known with the same manifest is a no-op.
    pub fn add_title(&self, title: TitleId, name: &str, manifest: Manifest) -> Result<(), StoreError> {
        manifest.verify(&title).map_err(|source| StoreError::BadManifest { title, source })?;
        let mut titles = self.lock();
        if let Some(state) = titles.get(&title) {
            return if *state.manifest == manifest {
                Ok(())
            } else {
                Err(StoreError::ManifestConflict { title })
            };
        }
        let held = empty_bitmap(manifest.chunk_count())?;
        self.removed.locked().remove(&title);
        let path = self.data_path(&title);
        let file =
            DataFile::open(&path, OpenOptions::new().read(true).write(true).create(true).truncate(true))
                .map_err(|e| StoreError::io(path.display().to_string(), e))?;
        file.set_len(manifest.data_len()).map_err(|e| StoreError::io(path.display().to_string(), e))?;
        self.write_record(&title, name, &manifest, &held)?;
        titles.insert(title, TitleState::new(name.to_owned(), manifest, held, file));
        Ok(())
    }

    /// Forgets a title and frees its disk (eviction): its record and bitmap leave the index
    /// first, flushed, then its data file is removed, so no crash can leave chunks marked held
    /// whose bytes are gone. A crash between the two leaves a data file that no record names;
    /// [`Store::open`] removes those. Readers that still hold the file keep reading the old
    /// bytes until they let go; new reads get [`StoreError::UnknownTitle`]. Returns the bytes
    /// of held chunks freed (0 for a title the store does not know).
    pub fn remove_title(&self, title: &TitleId) -> Result<u64, StoreError> {
        let mut titles = self.lock();
        let Some(state) = titles.get(title) else { return Ok(0) };
        let freed = held_bytes(&state.held, &state.manifest);
        self.records.remove(title.as_bytes())?;
        self.bitmaps.remove(title.as_bytes())?;
        self.db.flush()?;
        titles.remove(title);
        self.held_total.fetch_sub(freed, std::sync::atomic::Ordering::Relaxed);
        self.removed.locked().insert(*title);
        drop(titles);
        self.recent().forget(title, None);
        let path = self.data_path(title);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                // The index no longer names it: the next open removes it.
                tracing::warn!(%title, path = %path.display(), "cannot remove an evicted title's data: {e}");
            }
            _ => {}
        }
        Ok(freed)
    }

    /// Removes data files that no title record names (left by a crash inside
    /// [`Store::remove_title`] or [`Store::add_title`]).
    fn remove_orphans(&self, titles: &HashMap<TitleId, TitleState>) {
        let Ok(entries) = fs::read_dir(self.dir.join("data")) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".data")) else { continue };
            let Ok(title) = id.parse::<TitleId>() else { continue };
            if !titles.contains_key(&title) {
                match fs::remove_file(entry.path()) {
                    Ok(()) => tracing::info!(%title, "removed a data file no title record names"),
                    Err(e) => tracing::warn!(%title, "cannot remove an orphaned data file: {e}"),
                }
            }
        }
    }

    fn write_record(
        &self,
        title: &TitleId,
        name: &str,
        manifest: &Manifest,
        held: &ChunkBitmap,
    ) -> Result<(), StoreError> {
        let record = TitleRecord { name: name.to_owned(), manifest: manifest.clone() };
        let value = postcard::to_allocvec(&record)
            .map_err(|e| StoreError::CorruptIndex { what: title.to_string(), reason: e.to_string() })?;
        // Bitmap first: a record is never visible without its (possibly empty) bitmap.
        self.bitmaps.insert(title.as_bytes(), held.as_bytes())?;
        self.records.insert(title.as_bytes(), value)?;
        self.db.flush()?;
        Ok(())
    }

    /// Adopts a whole title whose bytes are already in `file` (the origin's ingest): the file
    /// must hash to `title` under `manifest` (checked by the caller that built the manifest
    /// from the same bytes); it is synced, moved into place, and every chunk marked held.
    pub fn import_complete(
        &self,
        title: TitleId,
        name: &str,
        manifest: Manifest,
        file: &Path,
    ) -> Result<(), StoreError> {
        manifest.verify(&title).map_err(|source| StoreError::BadManifest { title, source })?;
        let mut titles = self.lock();
        if let Some(state) = titles.get(&title) {
            if *state.manifest != manifest {
                return Err(StoreError::ManifestConflict { title });
            }
            if state.held.is_full() {
                return Ok(());
            }
        }
        let path = self.data_path(&title);
        let what = || path.display().to_string();
        File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::io(file.display().to_string(), e))?;
        fs::rename(file, &path).map_err(|e| StoreError::io(what(), e))?;
        File::open(self.dir.join("data"))
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(what(), e))?;
        let data = DataFile::open(&path, OpenOptions::new().read(true).write(true))
            .map_err(|e| StoreError::io(what(), e))?;
        let held = ChunkBitmap::full(manifest.chunk_count())
            .map_err(|e| StoreError::CorruptIndex { what: title.to_string(), reason: e.to_string() })?;
        self.write_record(&title, name, &manifest, &held)?;
        titles.insert(title, TitleState::new(name.to_owned(), manifest, held, data));
        self.recount(&titles);
        Ok(())
    }

    /// The manifest of `title`, if the store knows the title, whether or not it holds any of
    /// its chunks.
    pub fn manifest(&self, title: &TitleId) -> Option<Arc<Manifest>> {
        self.lock().get(title).map(|s| s.manifest.clone())
    }

    /// A summary of `title`, if the store knows the title.
    pub fn info(&self, title: &TitleId) -> Option<TitleInfo> {
        self.lock().get(title).map(|s| TitleInfo {
            title: *title,
            name: s.name.clone(),
            manifest: s.manifest.clone(),
            held: s.held.clone(),
        })
    }

    /// A copy of the bitmap of `title`'s held chunks, if the store knows the title.
    pub fn held(&self, title: &TitleId) -> Option<ChunkBitmap> {
        self.lock().get(title).map(|s| s.held.clone())
    }

    /// Whether every chunk of `chunks` is held (false for an unknown title), without copying
    /// the bitmap.
    pub fn holds(&self, title: &TitleId, chunks: std::ops::Range<u32>) -> bool {
        self.lock().get(title).is_some_and(|s| chunks.into_iter().all(|i| s.held.contains(i)))
    }

    /// Every title, in id order.
    pub fn titles(&self) -> Vec<TitleInfo> {
        let mut ids: Vec<TitleId> = self.lock().keys().copied().collect();
        ids.sort();
        ids.iter().filter_map(|t| self.info(t)).collect()
    }

    /// Stores a verified chunk durably, then marks it held. Returns false if it was already
    /// held (nothing is written then).
    pub fn put_chunk(&self, chunk: &VerifiedChunk) -> Result<bool, StoreError> {
        Ok(self.put_batch(std::slice::from_ref(chunk))?.first().copied().unwrap_or(false))
    }

    /// Stores verified chunks durably with one sync per data file and one index flush for
    /// the whole batch, then marks them held. Returns, per chunk, whether it was newly stored.
    /// On an error no chunk of the batch is marked held.
    pub fn put_batch(&self, chunks: &[VerifiedChunk]) -> Result<Vec<bool>, StoreError> {
        let mut written = Vec::with_capacity(chunks.len());
        let mut pending = 0;
        for chunk in chunks {
            let w = self.write_chunk(chunk, pending)?;
            pending += w.bytes();
            written.push(w);
        }
        self.commit_written(&written)
    }

    /// The first half of a commit: writes `chunk`'s bytes into its data file, neither durable
    /// nor held yet ([`Store::commit_written`] makes them both), so that its buffer can go as
    /// soon as it is written. `pending` is what the same batch wrote before it, counted
    /// against the quota. A chunk already held (or whose title was removed while it waited)
    /// is not written.
    pub fn write_chunk(&self, chunk: &VerifiedChunk, pending: u64) -> Result<Written, StoreError> {
        let quota = self.quota.load(std::sync::atomic::Ordering::Relaxed);
        let len = chunk.bytes.len() as u64;
        if quota != u64::MAX {
            let held = self.held_bytes() + pending;
            if held + len > quota {
                return Err(StoreError::QuotaExceeded {
                    title: chunk.title,
                    index: chunk.index,
                    held,
                    quota,
                });
            }
        }
        let Some((file, chunk_size)) = self.file_if_missing(chunk)? else {
            return Ok(Written { title: chunk.title, index: chunk.index, len, written: false, file: None });
        };
        self.write_bytes(&file, chunk_size, chunk)?;
        Ok(Written { title: chunk.title, index: chunk.index, len, written: true, file: Some(file) })
    }

    /// The second half of a commit: one sync per data file, then the bits of every chunk
    /// written, with one index flush. Returns, per chunk, whether it was newly stored. On an
    /// error no chunk of the batch is marked held.
    pub fn commit_written(&self, written: &[Written]) -> Result<Vec<bool>, StoreError> {
        let mut files: Vec<(TitleId, &Arc<DataFile>)> = Vec::new();
        for w in written {
            if let Some(file) = &w.file {
                if !files.iter().any(|(t, _)| *t == w.title) {
                    files.push((w.title, file));
                }
            }
        }
        for (title, file) in &files {
            file.sync_data().map_err(|e| StoreError::io(format!("chunks of {title}"), e))?;
        }
        // Only now, with the bytes durable, may their bits be set.
        let fresh: Vec<(TitleId, u32)> =
            written.iter().filter(|w| w.written).map(|w| (w.title, w.index)).collect();
        let mut newly = self.mark_held(&fresh)?;
        // Each newly held chunk is reported once, even if the batch carried it twice.
        Ok(written
            .iter()
            .map(|w| {
                let pos = newly.iter().position(|n| *n == (w.title, w.index));
                w.written && pos.map(|p| newly.swap_remove(p)).is_some()
            })
            .collect())
    }

    /// The data file to write `chunk` into and the title's chunk size, or `None` when the
    /// chunk is already held or its title was removed while the chunk waited.
    fn file_if_missing(&self, chunk: &VerifiedChunk) -> Result<Option<(Arc<DataFile>, u64)>, StoreError> {
        let titles = self.lock();
        let Some(state) = self.unless_removed(&titles, &chunk.title)? else { return Ok(None) };
        let size = state.manifest.chunk_size().bytes();
        Ok((!state.held.contains(chunk.index)).then(|| (state.file.clone(), size)))
    }

    /// The state of `title`; `None` if this process removed it (its late chunks are dropped),
    /// and an error if it never had it.
    fn unless_removed<'t>(
        &self,
        titles: &'t HashMap<TitleId, TitleState>,
        title: &TitleId,
    ) -> Result<Option<&'t TitleState>, StoreError> {
        match titles.get(title) {
            Some(state) => Ok(Some(state)),
            None if self.removed.locked().contains(title) => Ok(None),
            None => Err(StoreError::UnknownTitle(*title)),
        }
    }

    fn write_bytes(&self, file: &DataFile, chunk_size: u64, chunk: &VerifiedChunk) -> Result<(), StoreError> {
        let offset = u64::from(chunk.index) * chunk_size;
        file.write_all_at(&chunk.bytes, offset)
            .map_err(|e| StoreError::io(format!("chunk {} of {}", chunk.index, chunk.title), e))
    }

    /// Sets the bits of chunks whose bytes are durable, with one index flush; returns the
    /// (title, chunk) pairs that were not held before.
    fn mark_held(&self, chunks: &[(TitleId, u32)]) -> Result<Vec<(TitleId, u32)>, StoreError> {
        if chunks.is_empty() {
            return Ok(Vec::new());
        }
        let mut titles = self.lock();
        let mut updated: HashMap<TitleId, ChunkBitmap> = HashMap::new();
        let mut newly = Vec::new();
        for &(title, index) in chunks {
            // Removed since its bytes were written (into a file no longer named): dropped.
            let Some(state) = self.unless_removed(&titles, &title)? else { continue };
            let held = updated.entry(title).or_insert_with(|| state.held.clone());
            if !held.contains(index) {
                held.insert(index);
                newly.push((title, index));
            }
        }
        for (title, held) in &updated {
            self.bitmaps.insert(title.as_bytes(), held.as_bytes())?;
        }
        self.db.flush()?;
        // Only now, with the bits durable, do the chunks count as held.
        for (title, held) in updated {
            if let Some(state) = titles.get_mut(&title) {
                state.held = held;
            }
        }
        for (title, index) in &newly {
            if let Some(state) = titles.get_mut(title) {
                state.generation += 1;
                let len = state.manifest.chunk_len(*index).unwrap_or(0);
                self.held_total.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
            }
            // No subscriber is not an error.
            let _ = self.gained.send((*title, *index));
        }
        Ok(newly)
    }

    /// Chunks as they become held from now on (title, index), for subscriptions' HAVEs.
    pub fn watch_gained(&self) -> tokio::sync::broadcast::Receiver<(TitleId, u32)> {
        self.gained.subscribe()
    }

    /// Reads a held chunk and verifies it before returning a byte of it (a chunk read and
    /// verified within [`RECENT_TTL`] comes from memory). A chunk that fails (damaged on disk
    /// while the node ran or was down, its file changed behind the store's back) is dropped
    /// ([`StoreError::CorruptOnDisk`]): it is then not held, as if never filled.
    pub fn read_chunk(&self, title: &TitleId, index: u32) -> Result<Bytes, StoreError> {
        self.read_verified(title, index, false)
    }

    /// [`Self::read_chunk`] for a chunk served in part (a range that starts or ends inside
    /// it), whose other parts are likely asked for next: its verified bytes are kept for
    /// [`RECENT_TTL`]. Why only these: keeping every chunk read cost the serve bench's
    /// players 0.82 of the unverified path's throughput against 0.96 keeping none (the
    /// kept buffers go cold and new ones are allocated for every read).
    pub fn read_chunk_part(&self, title: &TitleId, index: u32) -> Result<Bytes, StoreError> {
        self.read_verified(title, index, true)
    }

    fn read_verified(&self, title: &TitleId, index: u32, keep: bool) -> Result<Bytes, StoreError> {
        let found = {
            let mut recent = self.recent();
            let now = Instant::now();
            recent.get(title, index, now).or_else(|| recent.shared(title, index, now))
        };
        if let Some(bytes) = found {
            // Dropped or evicted since it was read: not held, whatever memory has.
            if self.lock().get(title).is_some_and(|s| s.held.contains(index)) {
                return Ok(bytes);
            }
        }
        let (bytes, generation, manifest) = self.read_held(title, index, false)?;
        if manifest.verify_chunk(index, &bytes).is_err() {
            self.drop_damaged(title, index, generation, "read")?;
            return Err(StoreError::CorruptOnDisk { title: *title, index });
        }
        // Why shared: 1,000 paced players on one appliance each held their own copy of the
        // chunks they were sent (2 GB resident with 1 MiB chunks), and many read and hashed the
        // same chunk within moments of one another.
        let mut recent = self.recent();
        let bytes = recent.share(*title, index, bytes, Instant::now());
        if keep {
            recent.insert(*title, index, bytes.clone(), Instant::now());
        }
        Ok(bytes)
    }

    /// Verifies a held chunk as it is on disk (around the page cache where the filesystem
    /// allows, and never from the recent chunks), dropping it if it fails, as a read would.
    pub fn scrub_chunk(&self, title: &TitleId, index: u32) -> Result<Scrubbed, StoreError> {
        let (bytes, generation, manifest) = match self.read_held(title, index, true) {
            Ok(read) => read,
            Err(StoreError::NotHeld { .. }) => return Ok(Scrubbed::NotHeld),
            Err(e) => return Err(e),
        };
        if manifest.verify_chunk(index, &bytes).is_ok() {
            return Ok(Scrubbed::Verified(bytes.len() as u64));
        }
        self.drop_damaged(title, index, generation, "scrub")?;
        Ok(Scrubbed::Dropped)
    }

    /// The bytes of a held chunk as they are in its data file, unverified, with the title's
    /// generation when the read began and its manifest.
    fn read_held(
        &self,
        title: &TitleId,
        index: u32,
        uncached: bool,
    ) -> Result<(Bytes, u64, Arc<Manifest>), StoreError> {
        let (file, manifest, generation) = {
            let titles = self.lock();
            let state = titles.get(title).ok_or(StoreError::UnknownTitle(*title))?;
            if !state.held.contains(index) {
                return Err(StoreError::NotHeld { title: *title, index });
            }
            (state.file.clone(), state.manifest.clone(), state.generation)
        };
        let len = manifest.chunk_len(index).ok_or(StoreError::NotHeld { title: *title, index })? as usize;
        let offset = manifest.chunk_offset(index);
        let what = || format!("chunk {index} of {title}");
        let bytes = if uncached {
            file.read_uncached_at(len, offset).map_err(|e| StoreError::io(what(), e))?
        } else {
            file.read_bytes_at(len, offset).map_err(|e| StoreError::io(what(), e))?
        };
        Ok((bytes, generation, manifest))
    }

    /// Drops a chunk that failed verification on disk: its bit is cleared in the index and
    /// flushed before it stops counting as held here; then it is counted, logged (once per
    /// chunk: a second reader of the same damage finds it already dropped), and its title
    /// queued for [`Store::take_damaged`]. Nothing is dropped if the chunk was refilled since
    /// the damaged read began (`generation` moved). Returns whether it was dropped.
    fn drop_damaged(
        &self,
        title: &TitleId,
        index: u32,
        generation: u64,
        by: &str,
    ) -> Result<bool, StoreError> {
        let mut titles = self.lock();
        let Some(state) = titles.get_mut(title) else { return Ok(false) };
        if !state.held.contains(index) || state.generation != generation {
            return Ok(false);
        }
        let mut held = state.held.clone();
        held.remove(index);
        self.bitmaps.insert(title.as_bytes(), held.as_bytes())?;
        self.db.flush()?;
        state.held = held;
        let len = state.manifest.chunk_len(index).unwrap_or(0);
        self.held_total.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
        drop(titles);
        self.recent().forget(title, Some(index));
        self.damaged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.damaged_titles.locked().insert(*title);
        self.damage.notify_one();
        tracing::error!(%title, index, found_by = by, "chunk failed verification on disk: dropped, to be filled again");
        Ok(true)
    }

    /// Chunks found damaged and dropped since the store was opened.
    pub fn damaged_chunks(&self) -> u64 {
        self.damaged.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The titles that lost a damaged chunk since the last call (each once), for the tracker
    /// to hear that they are no longer whole here.
    pub fn take_damaged(&self) -> Vec<TitleId> {
        std::mem::take(&mut *self.damaged_titles.locked()).into_iter().collect()
    }

    /// Resolves when a title has joined those [`Store::take_damaged`] returns (at once if one
    /// did since the last wait).
    pub async fn damage_found(&self) {
        self.damage.notified().await
    }

    fn recent(&self) -> MutexGuard<'_, recent::Recent> {
        self.recent.locked()
    }

    /// Writes a whole title into `sink` (standard output, a pipe), in order; `shown` names the
    /// sink in errors.
    pub fn export_to(
        &self,
        title: &TitleId,
        sink: &mut impl io::Write,
        shown: &str,
    ) -> Result<(), StoreError> {
        let held = self.held(title).ok_or(StoreError::UnknownTitle(*title))?;
        if !held.is_full() {
            return Err(StoreError::Incomplete(*title));
        }
        let mut data = File::open(self.data_path(title)).map_err(|e| StoreError::io(shown, e))?;
        io::copy(&mut data, sink).and_then(|_| sink.flush()).map_err(|e| StoreError::io(shown, e))?;
        Ok(())
    }

    /// Puts a complete title at `out`. A regular file (or a path not there yet) gets the
    /// store's own bytes where the filesystem can share them: a hard link to the data file,
    /// made beside `out` and renamed over it, so the title is on disk once; on another
    /// filesystem (or one without hard links) a copy is written beside `out`, synced and
    /// renamed. Either way nothing named `out` exists until the title is whole and synced.
    /// Anything else that exists (`/dev/null`, a pipe) is written into as it is, never
    /// replaced.
    pub fn export(&self, title: &TitleId, out: &Path) -> Result<Exported, StoreError> {
        let held = self.held(title).ok_or(StoreError::UnknownTitle(*title))?;
        if !held.is_full() {
            return Err(StoreError::Incomplete(*title));
        }
        let what = || out.display().to_string();
        if let Ok(meta) = fs::metadata(out) {
            if meta.is_dir() {
                return Err(StoreError::io(what(), io::Error::other("is a directory")));
            }
            if !meta.is_file() {
                let mut sink =
                    OpenOptions::new().write(true).open(out).map_err(|e| StoreError::io(what(), e))?;
                self.export_to(title, &mut sink, &what())?;
                return Ok(Exported::Streamed);
            }
        }
        let tmp = out.with_extension("fillmesh-part");
        // A leftover of an interrupted export; a link cannot be made over it.
        let _ = fs::remove_file(&tmp);
        let how = match fs::hard_link(self.data_path(title), &tmp) {
            // The data file was synced by the commits that marked its chunks held.
            Ok(()) => Exported::Linked,
            // EXDEV (another filesystem), EPERM or EOPNOTSUPP (no hard links there).
            Err(e) if matches!(e.raw_os_error(), Some(18) | Some(1) | Some(95)) => {
                fs::copy(self.data_path(title), &tmp).map_err(|e| StoreError::io(what(), e))?;
                File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| StoreError::io(what(), e))?;
                Exported::Copied
            }
            Err(e) => return Err(StoreError::io(what(), e)),
        };
        fs::rename(&tmp, out).map_err(|e| StoreError::io(what(), e))?;
        // The new name, durably.
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(what(), e))?;
        }
        Ok(how)
    }
}

/// How [`Store::export`] put a title at its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exported {
    /// A hard link to the store's data file: no byte written again.
    Linked,
    /// A copy (the destination is on another filesystem).
    Copied,
    /// Written into an existing pipe or device.
    Streamed,
}

fn empty_bitmap(chunks: u32) -> Result<ChunkBitmap, StoreError> {
    ChunkBitmap::new(chunks)
        .map_err(|e| StoreError::CorruptIndex { what: "bitmap".into(), reason: e.to_string() })
}

fn title_from_key(key: &[u8]) -> Result<TitleId, StoreError> {
    let bytes: [u8; 32] = key.try_into().map_err(|_| StoreError::CorruptIndex {
        what: "title key".into(),
        reason: format!("{} bytes, expected 32", key.len()),
    })?;
    Ok(TitleId::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fillmesh_protocol::ChunkSize;
    use proptest::prelude::*;
    use std::os::unix::fs::FileExt;
    use std::time::Duration;

    /// Opens the store, waiting out sled's background threads of a store just dropped in this
    /// process (they release the lock moments after the drop; a new process never waits).
    fn reopen(dir: &Path) -> Store {
        for _ in 0..200 {
            match Store::open(dir) {
                Err(StoreError::Index(e)) if e.to_string().contains("lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                other => return other.unwrap(),
            }
        }
        panic!("the store stayed locked for 2 s after it was dropped");
    }

    fn title_bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn setup(len: usize) -> (tempfile::TempDir, TitleId, Manifest, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let data = title_bytes(len, 7);
        let (id, m) = Manifest::from_bytes(&data, ChunkSize::new(4096).unwrap()).unwrap();
        (dir, id, m, data)
    }

    fn chunk(m: &Manifest, id: TitleId, data: &[u8], i: u32) -> VerifiedChunk {
        let start = m.chunk_offset(i) as usize;
        let end = start + m.chunk_len(i).unwrap() as usize;
        // Received chunks arrive in aligned buffers, so the direct write path is the one
        // exercised; the torn writes below go through the page cache, so both mix.
        let mut buf = chunk_buffer(end - start);
        buf.extend_from_slice(&data[start..end]);
        VerifiedChunk::verify(id, m, i, buf.freeze()).unwrap()
    }

    #[test]
    fn a_store_written_before_packages_opens_with_its_chunks() {
        let (dir, id, m, data) = setup(3 * 4096 + 100);
        {
            let store = reopen(dir.path());
            store.add_title(id, "old", m.clone()).unwrap();
            assert!(store.put_chunk(&chunk(&m, id, &data, 1)).unwrap());
            // Rewrite the record as a store of the previous version wrote it.
            let old = LegacyTitleRecord {
                name: "old".into(),
                len: m.len(),
                chunk_size: m.chunk_size(),
                cvs: m.chaining_values().to_vec(),
            };
            store.records.insert(id.as_bytes(), postcard::to_allocvec(&old).unwrap()).unwrap();
            store.db.flush().unwrap();
            assert!(postcard::from_bytes::<TitleRecord>(&postcard::to_allocvec(&old).unwrap()).is_err());
        }
        let store = reopen(dir.path());
        assert_eq!(*store.manifest(&id).unwrap(), m);
        assert_eq!(store.held(&id).unwrap().iter().collect::<Vec<_>>(), vec![1]);
        assert_eq!(&store.read_chunk(&id, 1).unwrap()[..], &data[4096..8192]);
    }

    #[test]
    fn chunks_survive_reopen_and_read_back_verified() {
        let (dir, id, m, data) = setup(3 * 4096 + 100);
        {
            let store = reopen(dir.path());
            store.add_title(id, "t", m.clone()).unwrap();
            assert!(store.put_chunk(&chunk(&m, id, &data, 3)).unwrap());
            assert!(!store.put_chunk(&chunk(&m, id, &data, 3)).unwrap());
            assert!(matches!(store.read_chunk(&id, 0), Err(StoreError::NotHeld { .. })));
        }
        let store = reopen(dir.path());
        assert_eq!(store.held(&id).unwrap().iter().collect::<Vec<_>>(), vec![3]);
        assert_eq!(&store.read_chunk(&id, 3).unwrap()[..], &data[3 * 4096..]);
        for i in 0..3 {
            store.put_chunk(&chunk(&m, id, &data, i)).unwrap();
        }
        let out = dir.path().join("out.bin");
        store.export(&id, &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), data);
    }

    #[test]
    fn chunks_that_arrive_within_the_linger_share_one_commit() {
        let (dir, id, m, data) = setup(6 * 4096);
        let store = Arc::new(reopen(dir.path()));
        store.add_title(id, "t", m.clone()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // Four puts sent together (each sends on its first poll), then two one at a time.
        let lingering = ChunkWriter::spawn(store.clone(), Duration::from_millis(500)).unwrap();
        let fresh = rt
            .block_on(futures_util::future::join_all((0..4).map(|i| lingering.put(chunk(&m, id, &data, i)))));
        assert!(fresh.into_iter().all(|r| r.unwrap()));
        assert_eq!(lingering.commits(), 1, "four chunks sent together should share one commit");
        let eager = ChunkWriter::spawn(store.clone(), Duration::ZERO).unwrap();
        for i in 4..6 {
            assert!(rt.block_on(eager.put(chunk(&m, id, &data, i))).unwrap());
        }
        assert_eq!(eager.commits(), 2);
        assert!(store.held(&id).unwrap().is_full());
    }

    #[test]
    fn a_removed_title_frees_its_disk_and_stays_gone_after_reopen() {
        let (dir, id, m, data) = setup(3 * 4096 + 100);
        let (other, om) = Manifest::from_bytes(&data[..4096], ChunkSize::new(4096).unwrap()).unwrap();
        {
            let store = reopen(dir.path());
            store.add_title(id, "t", m.clone()).unwrap();
            store.add_title(other, "o", om.clone()).unwrap();
            for i in 0..4 {
                store.put_chunk(&chunk(&m, id, &data, i)).unwrap();
            }
            store.put_chunk(&chunk(&om, other, &data, 0)).unwrap();
            assert_eq!(store.held_bytes(), data.len() as u64 + 4096);
            assert_eq!(store.remove_title(&id).unwrap(), data.len() as u64);
            assert_eq!(store.remove_title(&id).unwrap(), 0, "a second removal frees nothing");
            assert_eq!(store.held_bytes(), 4096);
            assert!(!store.data_path(&id).exists());
            assert!(matches!(store.read_chunk(&id, 0), Err(StoreError::UnknownTitle(_))));
            assert!(store.held(&id).is_none());
        }
        let store = reopen(dir.path());
        assert!(store.held(&id).is_none());
        assert_eq!(store.held_bytes(), 4096);
        assert_eq!(&store.read_chunk(&other, 0).unwrap()[..], &data[..4096]);
        // Filled again from scratch, it comes back whole.
        store.add_title(id, "t", m.clone()).unwrap();
        assert_eq!(store.held(&id).unwrap().count(), 0);
    }

    #[test]
    fn chunks_of_a_title_removed_while_they_waited_are_dropped_and_the_batch_commits() {
        let (dir, id, m, data) = setup(2 * 4096);
        let (other, om) = Manifest::from_bytes(&data[..4096], ChunkSize::new(4096).unwrap()).unwrap();
        let store = reopen(dir.path());
        store.add_title(id, "t", m.clone()).unwrap();
        store.add_title(other, "o", om.clone()).unwrap();
        let late = chunk(&m, id, &data, 0);
        store.remove_title(&id).unwrap();
        let fresh = store.put_batch(&[late.clone(), chunk(&om, other, &data, 0)]).unwrap();
        assert_eq!(fresh, vec![false, true]);
        assert!(store.held(&id).is_none(), "the removed title came back");
        assert!(!store.data_path(&id).exists());
        assert!(store.held(&other).unwrap().is_full());
        // A chunk of a title this store never had is still an error.
        let bytes = vec![1u8; 4096];
        let (never, nm) = Manifest::from_bytes(&bytes, ChunkSize::new(4096).unwrap()).unwrap();
        let stray = chunk(&nm, never, &bytes, 0);
        let r = store.put_batch(&[stray]);
        assert!(matches!(r, Err(StoreError::UnknownTitle(_))), "{r:?}");
        // Added again, the title takes chunks again.
        store.add_title(id, "t", m.clone()).unwrap();
        assert_eq!(store.put_batch(&[late]).unwrap(), vec![true]);
    }

    #[test]
    fn open_removes_data_files_no_record_names() {
        let (dir, id, m, data) = setup(2 * 4096);
        let orphan = TitleId::of(b"never recorded");
        {
            let store = reopen(dir.path());
            store.add_title(id, "t", m.clone()).unwrap();
            store.put_chunk(&chunk(&m, id, &data, 0)).unwrap();
            fs::write(store.data_path(&orphan), b"left by a crash").unwrap();
            fs::write(dir.path().join("data").join("notes.txt"), b"not ours to judge").unwrap();
        }
        let store = reopen(dir.path());
        assert!(!store.data_path(&orphan).exists());
        assert!(store.data_path(&id).exists());
        assert!(dir.path().join("data").join("notes.txt").exists(), "only <title id>.data files are removed");
        assert_eq!(store.held(&id).unwrap().count(), 1);
    }

    #[test]
    fn export_links_the_title_into_place_on_the_same_filesystem_and_copies_across() {
        use std::os::unix::fs::MetadataExt;
        let (dir, id, m, data) = setup(3 * 4096 + 100);
        let store = reopen(dir.path());
        store.add_title(id, "t", m.clone()).unwrap();
        let out = dir.path().join("out.bin");
        fs::write(&out, b"an older file").unwrap();
        for i in 0..3 {
            store.put_chunk(&chunk(&m, id, &data, i)).unwrap();
        }
        // Not whole yet: refused, and the existing file is left as it was.
        assert!(matches!(store.export(&id, &out), Err(StoreError::Incomplete(_))));
        assert_eq!(fs::read(&out).unwrap(), b"an older file");
        store.put_chunk(&chunk(&m, id, &data, 3)).unwrap();
        assert_eq!(store.export(&id, &out).unwrap(), Exported::Linked);
        assert_eq!(fs::read(&out).unwrap(), data);
        let (linked, held) = (fs::metadata(&out).unwrap(), fs::metadata(store.data_path(&id)).unwrap());
        assert_eq!((linked.dev(), linked.ino()), (held.dev(), held.ino()), "the title was written twice");
        assert!(!out.with_extension("fillmesh-part").exists());
        // Another filesystem (a tmpfs): a copy, renamed into place.
        let shm = Path::new("/dev/shm");
        if shm.is_dir() && fs::metadata(shm).unwrap().dev() != held.dev() {
            let other = tempfile::tempdir_in(shm).unwrap();
            let out = other.path().join("out.bin");
            assert_eq!(store.export(&id, &out).unwrap(), Exported::Copied);
            assert_eq!(fs::read(&out).unwrap(), data);
        } else {
            eprintln!("no tmpfs at /dev/shm on another device: the copy across filesystems is not checked");
        }
    }

    #[test]
    fn export_writes_into_a_pipe_or_device_and_never_replaces_it() {
        let (dir, id, m, data) = setup(3 * 4096 + 100);
        let store = reopen(dir.path());
        store.add_title(id, "t", m.clone()).unwrap();
        for i in 0..4 {
            store.put_chunk(&chunk(&m, id, &data, i)).unwrap();
        }
        let fifo = dir.path().join("pipe");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(fifo).unwrap())
        };
        store.export(&id, &fifo).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the pipe was replaced by a file");
        assert_eq!(reader.join().unwrap(), data);
        assert!(matches!(store.export(&id, dir.path()), Err(StoreError::Io { .. })));
    }

    #[test]
    fn a_bad_manifest_or_unverified_chunk_is_refused() {
        let (dir, id, m, data) = setup(2 * 4096);
        let store = reopen(dir.path());
        assert!(matches!(
            store.add_title(TitleId::of(b"other"), "t", m.clone()),
            Err(StoreError::BadManifest { .. })
        ));
        assert!(store.titles().is_empty());
        let mut bad = data[..4096].to_vec();
        bad[5] ^= 1;
        assert!(VerifiedChunk::verify(id, &m, 0, Bytes::from(bad)).is_err());
    }

    #[test]
    fn damage_while_down_is_caught_on_first_read_and_the_chunk_dropped() {
        let (dir, id, m, data) = setup(2 * 4096);
        let store = reopen(dir.path());
        store.add_title(id, "t", m.clone()).unwrap();
        store.put_chunk(&chunk(&m, id, &data, 1)).unwrap();
        drop(store);
        let f =
            OpenOptions::new().write(true).open(dir.path().join("data").join(format!("{id}.data"))).unwrap();
        f.write_all_at(&[0xAA], 4096 + 10).unwrap();
        let store = reopen(dir.path());
        assert!(store.held(&id).unwrap().contains(1));
        assert!(matches!(store.read_chunk(&id, 1), Err(StoreError::CorruptOnDisk { .. })));
        assert!(!store.held(&id).unwrap().contains(1));
        drop(store);
        assert!(!reopen(dir.path()).held(&id).unwrap().contains(1));
    }

    /// Overwrites `bytes` at `at` of the title's data file, as a failing disk or a stray
    /// write would (through the page cache, behind the store's back).
    fn damage(store: &Store, id: &TitleId, at: u64, bytes: &[u8]) {
        let f = OpenOptions::new().write(true).open(store.data_path(id)).unwrap();
        f.write_all_at(bytes, at).unwrap();
    }

    #[test]
    fn damage_while_running_is_never_served_and_the_chunk_is_dropped_durably_once() {
        let (dir, id, m, data) = setup(3 * 4096);
        let store = reopen(dir.path());
        store.add_title(id, "t", m.clone()).unwrap();
        for i in 0..3 {
            store.put_chunk(&chunk(&m, id, &data, i)).unwrap();
        }
        // Read in part once (verified, kept for a moment), then damaged on disk: a read within
        // the moment gets the verified bytes, never the damaged ones.
        assert_eq!(&store.read_chunk_part(&id, 1).unwrap()[..], &data[4096..8192]);
        damage(&store, &id, 4096 + 100, &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&store.read_chunk(&id, 1).unwrap()[..], &data[4096..8192]);
        // The scrub reads the disk itself: found, dropped, counted, queued for the tracker.
        assert_eq!(store.scrub_chunk(&id, 1).unwrap(), Scrubbed::Dropped);
        assert!(!store.held(&id).unwrap().contains(1));
        assert!(matches!(store.read_chunk(&id, 1), Err(StoreError::NotHeld { .. })));
        assert_eq!(store.scrub_chunk(&id, 1).unwrap(), Scrubbed::NotHeld);
        assert_eq!(store.damaged_chunks(), 1);
        assert_eq!(store.held_bytes(), 2 * 4096);
        assert_eq!(store.take_damaged(), vec![id]);
        assert!(store.take_damaged().is_empty(), "a title is handed over once per damage");
        // Damage in a chunk never read: the first read finds it. A second read of the same
        // damage is not counted again.
        damage(&store, &id, 2 * 4096, &[0; 4]);
        assert!(matches!(store.read_chunk(&id, 2), Err(StoreError::CorruptOnDisk { index: 2, .. })));
        assert!(matches!(store.read_chunk(&id, 2), Err(StoreError::NotHeld { .. })));
        assert_eq!(store.damaged_chunks(), 2);
        assert_eq!(store.scrub_chunk(&id, 0).unwrap(), Scrubbed::Verified(4096));
        // Dropped durably: still gone after a reopen; the good chunk is still held.
        drop(store);
        let store = reopen(dir.path());
        assert_eq!(store.held(&id).unwrap().iter().collect::<Vec<_>>(), vec![0]);
        // Filled again, it is served again.
        store.put_chunk(&chunk(&m, id, &data, 1)).unwrap();
        assert_eq!(&store.read_chunk(&id, 1).unwrap()[..], &data[4096..8192]);
    }

    #[test]
    fn a_chunk_read_whole_is_not_kept_and_its_damage_is_found_by_the_next_read() {
        let (dir, id, m, data) = setup(2 * 4096);
        let store = reopen(dir.path());
        store.add_title(id, "t", m.clone()).unwrap();
        store.put_chunk(&chunk(&m, id, &data, 0)).unwrap();
        assert_eq!(&store.read_chunk(&id, 0).unwrap()[..], &data[..4096]);
        damage(&store, &id, 100, &[0xde, 0xad]);
        assert!(matches!(store.read_chunk(&id, 0), Err(StoreError::CorruptOnDisk { index: 0, .. })));
        assert_eq!(store.damaged_chunks(), 1);
    }

    #[test]
    fn a_damaged_read_that_crosses_a_refill_does_not_drop_the_good_copy() {
        let (dir, id, m, data) = setup(2 * 4096);
        let store = reopen(dir.path());
        store.add_title(id, "t", m.clone()).unwrap();
        store.put_chunk(&chunk(&m, id, &data, 0)).unwrap();
        damage(&store, &id, 10, &[0xff; 4]);
        // Reader A reads the damaged bytes; reader B drops the chunk and it is filled again,
        // all before A gets to its verdict.
        let (_, seen, _) = store.read_held(&id, 0, false).unwrap();
        assert!(store.drop_damaged(&id, 0, seen, "read").unwrap());
        store.put_chunk(&chunk(&m, id, &data, 0)).unwrap();
        assert!(!store.drop_damaged(&id, 0, seen, "read").unwrap(), "the refilled chunk was dropped");
        assert!(store.held(&id).unwrap().contains(0));
        assert_eq!(&store.read_chunk(&id, 0).unwrap()[..], &data[..4096]);
        assert_eq!(store.damaged_chunks(), 1);
    }

    #[test]
    fn the_quota_refuses_chunks_past_it_and_keeps_what_is_held() {
        let (dir, id, m, data) = setup(3 * 4096);
        let store = reopen(dir.path());
        store.add_title(id, "t", m.clone()).unwrap();
        store.set_quota(2 * 4096);
        store.put_chunk(&chunk(&m, id, &data, 0)).unwrap();
        store.put_chunk(&chunk(&m, id, &data, 1)).unwrap();
        let err = store.put_chunk(&chunk(&m, id, &data, 2)).unwrap_err();
        assert!(matches!(err, StoreError::QuotaExceeded { index: 2, .. }), "{err}");
        assert!(err.to_string().contains("quota"));
        assert_eq!(store.held(&id).unwrap().iter().collect::<Vec<_>>(), vec![0, 1]);
        assert!(store.read_chunk(&id, 1).is_ok());
    }

    #[test]
    fn a_second_process_cannot_open_the_same_store() {
        let dir = tempfile::tempdir().unwrap();
        let _first = reopen(dir.path());
        // sled locks its files per process; within one process a second open is refused too.
        assert!(Store::open(dir.path()).is_err());
    }

    /// Where a simulated crash interrupts a chunk write.
    #[derive(Debug, Clone, Copy)]
    enum Crash {
        /// Only a prefix of the bytes reached the file (a torn write), garbage after it.
        Torn(usize),
        /// All bytes written, never synced, no bit.
        BeforeSync,
        /// Synced, no bit.
        BeforeBit,
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u32),
        /// Several chunks in one batch (duplicates included).
        Batch(Vec<u32>),
        Crash(u32, Crash),
        Reopen,
    }

    fn op(chunks: u32) -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..chunks).prop_map(Op::Put),
            2 => proptest::collection::vec(0..chunks, 1..5).prop_map(Op::Batch),
            3 => (0..chunks, prop_oneof![
                (0usize..4096).prop_map(Crash::Torn),
                Just(Crash::BeforeSync),
                Just(Crash::BeforeBit),
            ]).prop_map(|(i, c)| Op::Crash(i, c)),
            1 => Just(Op::Reopen),
        ]
    }

    /// What happens to a title's chunks while the node runs.
    #[derive(Debug, Clone)]
    enum Life {
        Put(u32),
        /// Bytes of chunk `.0` overwritten on disk at `.1` within it, XORed with `.2` (never 0).
        Damage(u32, usize, u8),
        Read(u32),
        Scrub(u32),
        Reopen,
    }

    fn life(chunks: u32) -> impl Strategy<Value = Life> {
        prop_oneof![
            3 => (0..chunks).prop_map(Life::Put),
            2 => (0..chunks, 0usize..4096, 1u8..=255).prop_map(|(i, at, x)| Life::Damage(i, at, x)),
            3 => (0..chunks).prop_map(Life::Read),
            2 => (0..chunks).prop_map(Life::Scrub),
            1 => Just(Life::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any interleaving of writes, interrupted writes and reopen (dropping the store
        /// without a sync or flush) never yields a held chunk that is not verified on disk,
        /// and never loses a chunk whose write completed.
        #[test]
        fn held_chunks_are_always_verified_on_disk(ops in proptest::collection::vec(op(6), 1..40)) {
            let (dir, id, m, data) = setup(5 * 4096 + 777);
            let mut store = reopen(dir.path());
            store.add_title(id, "t", m.clone()).unwrap();
            let mut completed = std::collections::BTreeSet::new();
            for op in ops {
                match op {
                    Op::Put(i) => {
                        store.put_chunk(&chunk(&m, id, &data, i)).unwrap();
                        completed.insert(i);
                    }
                    Op::Batch(is) => {
                        let batch: Vec<_> = is.iter().map(|&i| chunk(&m, id, &data, i)).collect();
                        let fresh = store.put_batch(&batch).unwrap();
                        // A chunk is reported newly stored at most once, and never if held before.
                        for &i in &is {
                            let reported = is.iter().zip(&fresh).filter(|(j, f)| **j == i && **f).count();
                            prop_assert!(reported <= usize::from(!completed.contains(&i)));
                        }
                        completed.extend(is);
                    }
                    Op::Crash(i, crash) => {
                        let c = chunk(&m, id, &data, i);
                        if let Some((file, size)) = store.file_if_missing(&c).unwrap() {
                            match crash {
                                Crash::Torn(keep) => {
                                    let mut torn = c.bytes().to_vec();
                                    let keep = keep.min(torn.len().saturating_sub(1));
                                    torn[keep..].iter_mut().for_each(|b| *b = !*b);
                                    file.write_all_at(&torn, m.chunk_offset(i)).unwrap();
                                }
                                Crash::BeforeSync => store.write_bytes(&file, size, &c).unwrap(),
                                Crash::BeforeBit => {
                                    store.write_bytes(&file, size, &c).unwrap();
                                    file.sync_data().unwrap();
                                }
                            }
                        }
                        // The process dies here: the store is dropped without a flush.
                        drop(store);
                        store = reopen(dir.path());
                    }
                    Op::Reopen => {
                        drop(store);
                        store = reopen(dir.path());
                    }
                }
                let held = store.held(&id).unwrap();
                let raw = fs::read(store.data_path(&id)).unwrap();
                for i in held.iter() {
                    let start = m.chunk_offset(i) as usize;
                    let end = start + m.chunk_len(i).unwrap() as usize;
                    prop_assert!(m.verify_chunk(i, &raw[start..end]).is_ok(), "chunk {} held but not verified on disk", i);
                }
                for &i in &completed {
                    prop_assert!(held.contains(i), "chunk {} was stored but is no longer held", i);
                }
                let counted: u64 = held.iter().map(|i| m.chunk_len(i).unwrap()).sum();
                prop_assert_eq!(store.held_bytes(), counted);
            }
        }

        /// Damage on disk at any moment, reads and scrubs in any order: no read ever returns a
        /// byte that is not the title's, a damaged chunk is dropped (durably: reopening does
        /// not bring it back) when a read from disk or the scrub meets it, and no other chunk
        /// that was stored is ever lost.
        #[test]
        fn damage_is_never_served_and_only_damaged_chunks_are_dropped(ops in proptest::collection::vec(life(5), 1..40)) {
            let (dir, id, m, data) = setup(4 * 4096 + 777);
            let mut store = reopen(dir.path());
            store.add_title(id, "t", m.clone()).unwrap();
            let mut held = std::collections::BTreeSet::new();
            // Chunks whose bytes on disk are not the title's.
            let mut damaged = std::collections::BTreeSet::new();
            let mut drops = 0u64;
            for op in ops {
                match op {
                    Life::Put(i) => {
                        let fresh = store.put_chunk(&chunk(&m, id, &data, i)).unwrap();
                        prop_assert_eq!(fresh, held.insert(i));
                        if fresh {
                            damaged.remove(&i);
                        }
                    }
                    Life::Damage(i, at, x) => {
                        let at = at.min(m.chunk_len(i).unwrap() as usize - 1);
                        let offset = m.chunk_offset(i) + at as u64;
                        let mut byte = [0u8];
                        std::fs::File::open(store.data_path(&id)).unwrap().read_exact_at(&mut byte, offset).unwrap();
                        damage(&store, &id, offset, &[byte[0] ^ x]);
                        damaged.insert(i);
                    }
                    Life::Read(i) => match store.read_chunk(&id, i) {
                        Ok(bytes) => {
                            let start = m.chunk_offset(i) as usize;
                            prop_assert!(bytes[..] == data[start..start + bytes.len()], "chunk {} served wrong bytes", i);
                            prop_assert!(held.contains(&i));
                        }
                        Err(StoreError::CorruptOnDisk { .. }) => {
                            prop_assert!(held.remove(&i) && damaged.contains(&i), "chunk {} dropped undamaged", i);
                            drops += 1;
                        }
                        Err(StoreError::NotHeld { .. }) => prop_assert!(!held.contains(&i)),
                        Err(e) => prop_assert!(false, "read of chunk {}: {}", i, e),
                    },
                    Life::Scrub(i) => {
                        let found = store.scrub_chunk(&id, i).unwrap();
                        let expected = match (held.contains(&i), damaged.contains(&i)) {
                            (false, _) => Scrubbed::NotHeld,
                            (true, true) => Scrubbed::Dropped,
                            (true, false) => Scrubbed::Verified(m.chunk_len(i).unwrap()),
                        };
                        prop_assert_eq!(found, expected);
                        if found == Scrubbed::Dropped {
                            held.remove(&i);
                            drops += 1;
                        }
                    }
                    Life::Reopen => {
                        drop(store);
                        store = reopen(dir.path());
                        drops = 0;
                    }
                }
                prop_assert_eq!(store.held(&id).unwrap().iter().collect::<std::collections::BTreeSet<_>>(), held.clone());
                prop_assert_eq!(store.damaged_chunks(), drops);
                let counted: u64 = held.iter().map(|&i| m.chunk_len(i).unwrap()).sum();
                prop_assert_eq!(store.held_bytes(), counted);
            }
        }
    }
}
