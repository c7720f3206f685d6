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

use std::io::{self, Read};

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};
use serde::{Deserialize, Serialize};

use crate::chunk::ChunkSize;
use crate::title::TitleId;

/// A chaining value: the 32-byte non-root hash of a chunk or subtree. For a title of exactly
/// one chunk there is no parent node, and its single "chaining value" is the root hash itself.
pub type ChainingValue = [u8; 32];

/// Why a manifest or a chunk does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
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
    /// Reading the title failed ([`Manifest::from_reader`]).
    #[error("reading the title failed")]
    Io(#[from] io::Error),
}

/// A title's length, chunk size and chunk chaining values.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawManifest")]
pub struct Manifest {
    len: u64,
    chunk_size: ChunkSize,
    cvs: Vec<ChainingValue>,
}

/// The unchecked wire form; every manifest that enters a node passes [`Manifest::new`].
#[derive(Deserialize)]
struct RawManifest {
    len: u64,
    chunk_size: ChunkSize,
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX_CHUNKS_USIZE>")]
    cvs: Vec<ChainingValue>,
}

impl TryFrom<RawManifest> for Manifest {
    type Error = ManifestError;
    fn try_from(raw: RawManifest) -> Result<Self, Self::Error> {
        Manifest::new(raw.len, raw.chunk_size, raw.cvs)
    }
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("len", &self.len)
            .field("chunk_size", &self.chunk_size)
            .field("chunks", &self.cvs.len())
            .finish()
    }
}

impl Manifest {
    /// 262,144 chunks: 8 MiB of chaining values, a 256 GiB title at the default chunk size.
    /// It bounds every manifest a node will parse or hold.
    pub const MAX_CHUNKS: u64 = 1 << 18;

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
        Ok(Self { len, chunk_size, cvs })
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

    /// The title's length in bytes. Only the last chunk binds it to the title id: see the
    /// module.
    pub fn len(&self) -> u64 {
        self.len
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
        Some(self.chunk_size.bytes().min(self.len - self.chunk_offset(index)))
    }

    /// The root the chaining values merge to.
    pub fn root(&self) -> TitleId {
        match self.cvs.as_slice() {
            [] => TitleId::of(b""),
            [only] => TitleId::from_bytes(*only),
            cvs => {
                let (left, right) = cvs.split_at(left_subtree_chunks(cvs.len()));
                merge_subtrees_root(&subtree_cv(left), &subtree_cv(right), Mode::Hash).into()
            }
        }
    }

    /// Checks that this manifest describes the title `id`.
    pub fn verify(&self, id: &TitleId) -> Result<(), VerifyError> {
        let computed = self.root();
        if computed == *id {
            Ok(())
        } else {
            Err(VerifyError::RootMismatch { expected: *id, computed })
        }
    }

    /// Checks that `data` is chunk `index` of this (verified) manifest's title.
    pub fn verify_chunk(&self, index: u32, data: &[u8]) -> Result<(), VerifyError> {
        let chunks = self.chunk_count();
        let expected = self.chunk_len(index).ok_or(VerifyError::NoSuchChunk { index, chunks })?;
        if data.len() as u64 != expected {
            return Err(VerifyError::ChunkLength { index, expected, actual: data.len() as u64 });
        }
        let mut hasher = chunk_hasher(self.chunk_offset(index));
        hasher.update(data);
        let cv = finalize_chunk(&hasher, chunks == 1);
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
        let manifest = Manifest { len: self.len, chunk_size: self.chunk_size, cvs: self.cvs };
        (manifest.root(), manifest)
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
