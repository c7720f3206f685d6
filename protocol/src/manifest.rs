//! Manifests: what a node needs to verify a title chunk by chunk while trusting nothing but
//! the title id.
//!
//! A manifest is (length, chunk size, one chaining value per chunk). Merging the chaining
//! values up BLAKE3's tree gives the root, which must equal the title id; after that each
//! chunk is checked on its own by recomputing its chaining value. The length is bound to the
//! title id only through the last chunk (its chaining value depends on how long it is), so a
//! manifest whose length was altered within the last chunk still merges to the right root:
//! its last chunk can then never verify, and a node must not act on the exact length before it
//! holds the last chunk verified.
//!
//! A package's manifest ([`Manifest::package`]) is the same for each of its files, in listing
//! order, with the files' paths, ids and lengths: the chunk indices run on across files (file
//! `k`'s first chunk follows file `k - 1`'s last), each file's chaining values merge to its own
//! id, and the listing those ids make hashes to the package id. In a node's data file each
//! file starts at a chunk boundary, so chunk `i` is at `i * chunk_size` there as for one file.

use std::io::{self, Read};

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};
use serde::{Deserialize, Serialize};

use crate::chunk::ChunkSize;
use crate::package::{self, ListingError, PackageFile, MAX_FILES};
use crate::shape::Shape;
use crate::title::TitleId;

/// A chaining value: the 32-byte non-root hash of a chunk or subtree. For a title of exactly
/// one chunk there is no parent node, and its single "chaining value" is the root hash itself.
pub type ChainingValue = [u8; 32];

/// Why a manifest or a chunk does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A package's listing does not hash to the package id.
    #[error("the package's listing hashes to {computed}, not to the package id {expected}")]
    ListingMismatch {
        /// The package id the manifest was checked against.
        expected: TitleId,
        /// What its listing hashes to.
        computed: TitleId,
    },
    /// A file's chaining values do not merge to the id its listing line gives.
    #[error("the chunk hashes of {path:?} merge to {computed}, not to its id {expected} in the listing")]
    FileMismatch {
        /// The file.
        path: String,
        /// Its id in the listing.
        expected: TitleId,
        /// The root its chaining values merge to.
        computed: TitleId,
    },
    /// The chaining values do not merge to the title id: the manifest is not that title's.
    #[error("the manifest's chunk hashes merge to {computed}, not to the title id {expected}")]
    RootMismatch {
        /// The title id the manifest was checked against.
        expected: TitleId,
        /// The root its chaining values merge to.
        computed: TitleId,
    },
    /// The chunk index is past the title's last chunk.
    #[error("chunk {index} does not exist: the title has {chunks} chunks")]
    NoSuchChunk {
        /// The index asked for.
        index: u32,
        /// The title's chunk count.
        chunks: u32,
    },
    /// The data is not as long as the chunk: every chunk is the chunk size long but the last,
    /// which may be shorter.
    #[error("chunk {index} should be {expected} bytes long, got {actual}")]
    ChunkLength {
        /// The chunk.
        index: u32,
        /// The chunk's length in bytes by the manifest.
        expected: u64,
        /// Bytes given.
        actual: u64,
    },
    /// The data's chaining value is not the manifest's for that chunk: the bytes are not the
    /// title's.
    #[error("chunk {index} does not match its hash in the manifest")]
    ChunkHash {
        /// The chunk.
        index: u32,
    },
}

/// Why a manifest could not be built or accepted.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The number of chaining values is not the number of chunks the length and the chunk
    /// size make.
    #[error(
        "a title of {len} bytes has {expected} chunks of {chunk_size} bytes, but the manifest lists {actual}"
    )]
    ChunkCount {
        /// The title's length in bytes, as the manifest states it.
        len: u64,
        /// The manifest's chunk size.
        chunk_size: ChunkSize,
        /// Chunks a title of that length has.
        expected: u64,
        /// Chaining values listed.
        actual: usize,
    },
    /// The title would have more than [`Manifest::MAX_CHUNKS`] chunks at this chunk size.
    #[error("a title of {len} bytes would have {chunks} chunks of {chunk_size} bytes, more than the limit of {max}: use a larger chunk size", max = Manifest::MAX_CHUNKS)]
    TooManyChunks {
        /// The title's length in bytes; for a [`ManifestBuilder`], the bytes fed so far, the
        /// refused update's included.
        len: u64,
        /// The chunk size asked for.
        chunk_size: ChunkSize,
        /// Chunks that length takes.
        chunks: u64,
    },
    /// A package's file list breaks a rule of [`crate::package`].
    #[error("the package's files: {0}")]
    Listing(#[from] ListingError),
    /// A package's stated length is not the sum of its files'.
    #[error("a package states {stated} bytes but its files add up to {files}")]
    PackageLength {
        /// The length stated.
        stated: u64,
        /// The files' lengths added up.
        files: u64,
    },
    /// [`PackageBuilder`] was used out of order (a file started before the last finished,
    /// bytes with no file started, or a finish with a file open).
    #[error("package builder misuse: {0}")]
    Builder(&'static str),
    /// Reading the title failed ([`Manifest::from_reader`]).
    #[error("reading the title failed")]
    Io(#[from] io::Error),
}

/// A title's length, chunk size and chunk chaining values; for a package, also its files.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawManifest")]
pub struct Manifest {
    len: u64,
    chunk_size: ChunkSize,
    cvs: Vec<ChainingValue>,
    /// A package's files in listing order; `None` for a one-file title.
    files: Option<Vec<PackageFile>>,
    /// Each file's first chunk (derived from the files' lengths).
    #[serde(skip)]
    starts: Vec<u32>,
}

/// The unchecked wire form; every manifest that enters a node passes [`Manifest::new`].
#[derive(Deserialize)]
struct RawManifest {
    len: u64,
    chunk_size: ChunkSize,
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX_CHUNKS_USIZE>")]
    cvs: Vec<ChainingValue>,
    #[serde(deserialize_with = "bounded_files")]
    files: Option<Vec<PackageFile>>,
}

fn bounded_files<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<PackageFile>>, D::Error> {
    #[derive(Deserialize)]
    struct Files(#[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX_FILES>")] Vec<PackageFile>);
    Ok(Option::<Files>::deserialize(d)?.map(|f| f.0))
}

impl TryFrom<RawManifest> for Manifest {
    type Error = ManifestError;
    fn try_from(raw: RawManifest) -> Result<Self, Self::Error> {
        match raw.files {
            None => Manifest::new(raw.len, raw.chunk_size, raw.cvs),
            Some(files) => {
                let m = Manifest::package(raw.chunk_size, files, raw.cvs)?;
                if m.len != raw.len {
                    return Err(ManifestError::PackageLength { stated: raw.len, files: m.len });
                }
                Ok(m)
            }
        }
    }
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("len", &self.len)
            .field("chunk_size", &self.chunk_size)
            .field("chunks", &self.cvs.len())
            .field("files", &self.files.as_ref().map(Vec::len))
            .finish()
    }
}

impl Manifest {
    /// 262,144 chunks: 8 MiB of chaining values, a 256 GiB title at the default chunk size.
    /// It bounds every manifest a node will parse or hold.
    pub const MAX_CHUNKS: u64 = crate::chunk::MAX_CHUNKS;

    /// Accepts a manifest whose shape is consistent (the right number of chaining values for
    /// its length and chunk size). It says nothing about content: see [`Manifest::verify`].
    pub fn new(len: u64, chunk_size: ChunkSize, cvs: Vec<ChainingValue>) -> Result<Self, ManifestError> {
        let expected = chunk_size.chunks_for(len);
        if expected > Self::MAX_CHUNKS {
            return Err(ManifestError::TooManyChunks { len, chunk_size, chunks: expected });
        }
        if cvs.len() as u64 != expected {
            return Err(ManifestError::ChunkCount { len, chunk_size, expected, actual: cvs.len() });
        }
        Ok(Self { len, chunk_size, cvs, files: None, starts: Vec::new() })
    }

    /// Accepts a package's manifest whose shape is consistent: its files obey the rules of
    /// [`crate::package`] (in listing order), and there is one chaining value per chunk of
    /// each file, in that order. It says nothing about content: see [`Manifest::verify`].
    pub fn package(
        chunk_size: ChunkSize,
        files: Vec<PackageFile>,
        cvs: Vec<ChainingValue>,
    ) -> Result<Self, ManifestError> {
        package::check_files(files.iter().map(|f| f.path.as_str()))?;
        let mut starts = Vec::with_capacity(files.len());
        let (mut chunks, mut len) = (0u64, 0u64);
        for f in &files {
            // Bounded by MAX_CHUNKS below, checked before the next file's start is taken.
            starts.push(chunks as u32);
            chunks += chunk_size.chunks_for(f.len);
            len = len.saturating_add(f.len);
            if chunks > Self::MAX_CHUNKS {
                return Err(ManifestError::TooManyChunks { len, chunk_size, chunks });
            }
        }
        if cvs.len() as u64 != chunks {
            return Err(ManifestError::ChunkCount { len, chunk_size, expected: chunks, actual: cvs.len() });
        }
        Ok(Self { len, chunk_size, cvs, files: Some(files), starts })
    }

    /// Builds the manifest of everything `reader` yields, in constant memory (one read
    /// buffer and 32 bytes per chunk), returning it with the title id.
    pub fn from_reader<R: Read>(
        mut reader: R,
        chunk_size: ChunkSize,
    ) -> Result<(TitleId, Self), ManifestError> {
        let mut builder = ManifestBuilder::new(chunk_size);
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            builder.update(&buf[..n])?;
        }
        Ok(builder.finish())
    }

    /// Builds the manifest of an in-memory title.
    pub fn from_bytes(bytes: &[u8], chunk_size: ChunkSize) -> Result<(TitleId, Self), ManifestError> {
        let mut builder = ManifestBuilder::new(chunk_size);
        builder.update(bytes)?;
        Ok(builder.finish())
    }

    /// The title's length in bytes (a package's: its files' together). Only the last chunk
    /// binds it to the title id: see the module.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Bytes the title takes in a data file where chunk `i` sits at `i * chunk_size`: its
    /// length for one file; for a package, up to the end of its last chunk (each file starts
    /// at a chunk boundary, so the gaps are sparse).
    pub fn data_len(&self) -> u64 {
        match self.chunk_count().checked_sub(1) {
            None => 0,
            Some(last) => self.chunk_offset(last) + self.chunk_len(last).unwrap_or(0),
        }
    }

    /// Whether this is a package's manifest (a title of files named by their listing).
    pub fn is_package(&self) -> bool {
        self.files.is_some()
    }

    /// A package's files in listing order; `None` for a one-file title.
    pub fn files(&self) -> Option<&[PackageFile]> {
        self.files.as_deref()
    }

    /// The chunks of a package's file `k` (an index into [`Self::files`]); for a one-file
    /// title, `k == 0` is all its chunks.
    pub fn file_chunks(&self, k: usize) -> std::ops::Range<u32> {
        match &self.files {
            None => 0..self.chunk_count(),
            Some(files) => {
                let start = self.starts.get(k).copied().unwrap_or(self.chunk_count());
                let n = files.get(k).map_or(0, |f| self.chunk_size.chunks_for(f.len));
                // Bounded by MAX_CHUNKS in `package`.
                start..start + n as u32
            }
        }
    }

    /// A package's file by its path: its index in [`Self::files`] and the file.
    pub fn file(&self, path: &str) -> Option<(usize, &PackageFile)> {
        let files = self.files.as_deref()?;
        let k = files.binary_search_by(|f| f.path.as_bytes().cmp(path.as_bytes())).ok()?;
        Some((k, &files[k]))
    }

    /// A package's listing: what `b3sum` prints for its files, whose BLAKE3 is its id.
    pub fn listing(&self) -> Option<String> {
        let files = self.files.as_deref()?;
        Some(package::listing(files.iter().map(|f| (&f.id, f.path.as_str()))))
    }

    /// The chunks a player needs first, in order: for a package, those of its playlists,
    /// init segments and first segments ([`package::startup_files`]); nothing for one file.
    pub fn startup_chunks(&self) -> Vec<u32> {
        let Some(files) = self.files.as_deref() else {
            return Vec::new();
        };
        package::startup_files(files.iter().map(|f| (f.path.as_str(), f.len)))
            .into_iter()
            .flat_map(|k| self.file_chunks(k))
            .collect()
    }

    /// What the tracker needs to know of the title: chunk size and lengths, no hashes.
    pub fn shape(&self) -> Shape {
        let lens = match &self.files {
            None => vec![self.len],
            Some(files) => files.iter().map(|f| f.len).collect(),
        };
        // A manifest's shape is within every bound a shape checks.
        Shape::new(self.chunk_size, self.is_package(), lens).expect("a manifest's shape is valid")
    }

    /// The file chunk `index` belongs to and its index within that file.
    fn locate(&self, index: u32) -> (Option<&PackageFile>, u32) {
        match &self.files {
            None => (None, index),
            Some(files) => {
                let k = self.starts.partition_point(|&s| s <= index).saturating_sub(1);
                (files.get(k), index - self.starts.get(k).copied().unwrap_or(0))
            }
        }
    }

    /// Whether the title has no bytes (and so no chunks).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The length of every chunk but the last, which may be shorter.
    pub fn chunk_size(&self) -> ChunkSize {
        self.chunk_size
    }

    /// The title's chunk count, at most [`Manifest::MAX_CHUNKS`].
    pub fn chunk_count(&self) -> u32 {
        // Bounded by MAX_CHUNKS in `new`.
        self.cvs.len() as u32
    }

    /// One chaining value per chunk, in chunk order.
    pub fn chaining_values(&self) -> &[ChainingValue] {
        &self.cvs
    }

    /// Byte offset of chunk `index` in the title.
    pub fn chunk_offset(&self, index: u32) -> u64 {
        u64::from(index) * self.chunk_size.bytes()
    }

    /// Length of chunk `index`, or `None` past the end. Only the last chunk may be short.
    pub fn chunk_len(&self, index: u32) -> Option<u64> {
        if index >= self.chunk_count() {
            return None;
        }
        let (file, local) = self.locate(index);
        let len = file.map_or(self.len, |f| f.len);
        Some(self.chunk_size.bytes().min(len - u64::from(local) * self.chunk_size.bytes()))
    }

    /// The title id this manifest names: the root its chaining values merge to, or for a
    /// package the BLAKE3 of its listing.
    pub fn root(&self) -> TitleId {
        match self.listing() {
            Some(listing) => package::package_id(&listing),
            None => root_of(&self.cvs),
        }
    }

    /// Checks that this manifest describes the title `id` (for a package: that its listing
    /// hashes to `id` and that each file's chaining values merge to that file's id).
    pub fn verify(&self, id: &TitleId) -> Result<(), VerifyError> {
        let Some(files) = &self.files else {
            let computed = self.root();
            return if computed == *id {
                Ok(())
            } else {
                Err(VerifyError::RootMismatch { expected: *id, computed })
            };
        };
        let computed = self.root();
        if computed != *id {
            return Err(VerifyError::ListingMismatch { expected: *id, computed });
        }
        for (k, f) in files.iter().enumerate() {
            let r = self.file_chunks(k);
            let computed = root_of(&self.cvs[r.start as usize..r.end as usize]);
            if computed != f.id {
                return Err(VerifyError::FileMismatch { path: f.path.clone(), expected: f.id, computed });
            }
        }
        Ok(())
    }

    /// Checks that `data` is chunk `index` of this (verified) manifest's title.
    pub fn verify_chunk(&self, index: u32, data: &[u8]) -> Result<(), VerifyError> {
        let chunks = self.chunk_count();
        let expected = self.chunk_len(index).ok_or(VerifyError::NoSuchChunk { index, chunks })?;
        if data.len() as u64 != expected {
            return Err(VerifyError::ChunkLength { index, expected, actual: data.len() as u64 });
        }
        let (file, local) = self.locate(index);
        let only = match file {
            None => chunks == 1,
            Some(f) => self.chunk_size.chunks_for(f.len) == 1,
        };
        let mut hasher = chunk_hasher(u64::from(local) * self.chunk_size.bytes());
        hasher.update(data);
        let cv = finalize_chunk(&hasher, only);
        if cv == self.cvs[index as usize] {
            Ok(())
        } else {
            Err(VerifyError::ChunkHash { index })
        }
    }
}

const MAX_CHUNKS_USIZE: usize = Manifest::MAX_CHUNKS as usize;

/// Read buffer for [`Manifest::from_reader`]: large enough for BLAKE3's SIMD paths.
const READ_BUFFER: usize = 1 << 20;

/// Streams bytes into a manifest. Each chunk's hasher is finalised only when the next chunk
/// starts (or at the end), because a title of a single chunk needs the root finalisation
/// instead of the non-root one.
#[derive(Debug)]
pub struct ManifestBuilder {
    chunk_size: ChunkSize,
    len: u64,
    cvs: Vec<ChainingValue>,
    current: blake3::Hasher,
    current_len: u64,
}

impl ManifestBuilder {
    /// A builder for a title cut into chunks of `chunk_size`, fed nothing yet.
    pub fn new(chunk_size: ChunkSize) -> Self {
        Self { chunk_size, len: 0, cvs: Vec::new(), current: blake3::Hasher::new(), current_len: 0 }
    }

    /// Feeds the next bytes of the title.
    pub fn update(&mut self, mut bytes: &[u8]) -> Result<(), ManifestError> {
        let cs = self.chunk_size.bytes();
        let total = self.len + bytes.len() as u64;
        let chunks = self.chunk_size.chunks_for(total);
        if chunks > Manifest::MAX_CHUNKS {
            return Err(ManifestError::TooManyChunks { len: total, chunk_size: self.chunk_size, chunks });
        }
        while !bytes.is_empty() {
            if self.current_len == cs {
                self.cvs.push(self.current.finalize_non_root());
                self.current = chunk_hasher(self.len);
                self.current_len = 0;
            }
            let take = (cs - self.current_len).min(bytes.len() as u64) as usize;
            self.current.update(&bytes[..take]);
            self.current_len += take as u64;
            self.len += take as u64;
            bytes = &bytes[take..];
        }
        Ok(())
    }

    /// The manifest of every byte fed, and the title id (its root).
    pub fn finish(mut self) -> (TitleId, Manifest) {
        if self.len > 0 {
            let cv = finalize_chunk(&self.current, self.cvs.is_empty());
            self.cvs.push(cv);
        }
        let manifest = Manifest {
            len: self.len,
            chunk_size: self.chunk_size,
            cvs: self.cvs,
            files: None,
            starts: Vec::new(),
        };
        (manifest.root(), manifest)
    }
}

/// Streams a package's files, in listing order, into its manifest: [`Self::start_file`],
/// [`Self::update`] with the file's bytes, [`Self::finish_file`], and so on; then
/// [`Self::finish`]. Constant memory but for 32 bytes per chunk and one entry per file.
#[derive(Debug)]
pub struct PackageBuilder {
    chunk_size: ChunkSize,
    files: Vec<PackageFile>,
    cvs: Vec<ChainingValue>,
    current: Option<(String, ManifestBuilder)>,
}

impl PackageBuilder {
    /// A builder for a package cut into chunks of `chunk_size`, with no file yet.
    pub fn new(chunk_size: ChunkSize) -> Self {
        Self { chunk_size, files: Vec::new(), cvs: Vec::new(), current: None }
    }

    /// Starts the next file. Its path must be allowed and come after the last one's in byte
    /// order, and the package must have room for another file.
    pub fn start_file(&mut self, path: &str) -> Result<(), ManifestError> {
        if self.current.is_some() {
            return Err(ManifestError::Builder("a file started before the last one finished"));
        }
        if self.files.len() >= MAX_FILES {
            return Err(ListingError::TooManyFiles(self.files.len() + 1).into());
        }
        package::check_path(path).map_err(|why| ListingError::Path { path: path.to_owned(), why })?;
        if self.files.last().is_some_and(|f| f.path.as_bytes() >= path.as_bytes()) {
            return Err(ListingError::Order(path.to_owned()).into());
        }
        self.current = Some((path.to_owned(), ManifestBuilder::new(self.chunk_size)));
        Ok(())
    }

    /// Where the next byte of the current file goes in a data file (each file starts at a
    /// chunk boundary).
    pub fn data_offset(&self) -> u64 {
        let fed = self.current.as_ref().map_or(0, |(_, b)| b.len);
        self.cvs.len() as u64 * self.chunk_size.bytes() + fed
    }

    /// Feeds the current file's next bytes.
    pub fn update(&mut self, bytes: &[u8]) -> Result<(), ManifestError> {
        let done = self.cvs.len() as u64;
        let Some((_, builder)) = self.current.as_mut() else {
            return Err(ManifestError::Builder("bytes with no file started"));
        };
        let len = builder.len + bytes.len() as u64;
        let chunks = done + self.chunk_size.chunks_for(len);
        if chunks > Manifest::MAX_CHUNKS {
            return Err(ManifestError::TooManyChunks { len, chunk_size: self.chunk_size, chunks });
        }
        builder.update(bytes)
    }

    /// Ends the current file: its id (what `b3sum` prints for it) and length.
    pub fn finish_file(&mut self) -> Result<(TitleId, u64), ManifestError> {
        let Some((path, builder)) = self.current.take() else {
            return Err(ManifestError::Builder("no file to finish"));
        };
        let (id, m) = builder.finish();
        self.cvs.extend_from_slice(&m.cvs);
        self.files.push(PackageFile { path, id, len: m.len });
        Ok((id, m.len))
    }

    /// The package's manifest and id (the BLAKE3 of its listing).
    pub fn finish(self) -> Result<(TitleId, Manifest), ManifestError> {
        if self.current.is_some() {
            return Err(ManifestError::Builder("finished with a file still open"));
        }
        let m = Manifest::package(self.chunk_size, self.files, self.cvs)?;
        Ok((m.root(), m))
    }
}

/// The root that `cvs`, one file's chaining values in order, merge to: the file's id.
fn root_of(cvs: &[ChainingValue]) -> TitleId {
    match cvs {
        [] => TitleId::of(b""),
        [only] => TitleId::from_bytes(*only),
        cvs => {
            let (left, right) = cvs.split_at(left_subtree_chunks(cvs.len()));
            merge_subtrees_root(&subtree_cv(left), &subtree_cv(right), Mode::Hash).into()
        }
    }
}

fn chunk_hasher(offset: u64) -> blake3::Hasher {
    let mut hasher = blake3::Hasher::new();
    if offset > 0 {
        hasher.set_input_offset(offset);
    }
    hasher
}

fn finalize_chunk(hasher: &blake3::Hasher, only_chunk: bool) -> ChainingValue {
    if only_chunk {
        *hasher.finalize().as_bytes()
    } else {
        hasher.finalize_non_root()
    }
}

/// In a subtree of `n >= 2` chunks whose chunks are all full but the last, BLAKE3 puts the
/// largest power of two strictly below `n` in the left subtree.
fn left_subtree_chunks(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

fn subtree_cv(cvs: &[ChainingValue]) -> ChainingValue {
    if let [only] = cvs {
        return *only;
    }
    let (left, right) = cvs.split_at(left_subtree_chunks(cvs.len()));
    merge_subtrees_non_root(&subtree_cv(left), &subtree_cv(right), Mode::Hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_subtree_is_the_largest_power_of_two_below() {
        assert_eq!(left_subtree_chunks(2), 1);
        assert_eq!(left_subtree_chunks(3), 2);
        assert_eq!(left_subtree_chunks(4), 2);
        assert_eq!(left_subtree_chunks(5), 4);
        assert_eq!(left_subtree_chunks(8), 4);
        assert_eq!(left_subtree_chunks(9), 8);
    }

    #[test]
    fn empty_title_has_no_chunks_and_the_empty_hash() {
        let (id, m) = Manifest::from_bytes(b"", ChunkSize::DEFAULT).unwrap();
        assert_eq!(id, TitleId::of(b""));
        assert_eq!(m.chunk_count(), 0);
        assert!(m.verify(&id).is_ok());
        assert_eq!(m.verify_chunk(0, b""), Err(VerifyError::NoSuchChunk { index: 0, chunks: 0 }));
    }

    #[test]
    fn inconsistent_shapes_are_refused() {
        let cs = ChunkSize::new(1024).unwrap();
        assert!(matches!(Manifest::new(2048, cs, vec![[0; 32]]), Err(ManifestError::ChunkCount { .. })));
        assert!(matches!(
            Manifest::new(Manifest::MAX_CHUNKS * 1024 + 1, cs, vec![]),
            Err(ManifestError::TooManyChunks { .. })
        ));
    }

    #[test]
    fn builder_refuses_titles_past_the_chunk_limit() {
        let mut b = ManifestBuilder::new(ChunkSize::new(1024).unwrap());
        let big = vec![0u8; 1 << 20];
        for _ in 0..256 {
            b.update(&big).unwrap();
        }
        assert!(matches!(b.update(&[0]), Err(ManifestError::TooManyChunks { .. })));
    }
}
