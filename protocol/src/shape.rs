//! A title's shape: what the tracker needs to plan and account its fill (chunk size, how many
//! chunks, how long each is, whether it is a package) without any of its hashes. Why apart
//! from the manifest: a manifest carries 32 bytes per chunk, so a title of 100,000 chunks has a
//! 3 MB manifest, more than one etcd value may hold (1 MiB); its shape is a few bytes per file.
//! The tracker checks a published manifest against the id, then keeps and shares only the
//! shape; appliances and players get manifests over the mesh and verify them themselves.

use serde::{Deserialize, Serialize};

use crate::chunk::ChunkSize;
use crate::chunk::MAX_CHUNKS;
use crate::package::MAX_FILES;

/// Why a shape is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// A one-file title has exactly one length; a package between 1 and [`MAX_FILES`].
    #[error("a {kind} cannot have {files} file lengths")]
    Files {
        /// "one-file title" or "package".
        kind: &'static str,
        /// Lengths given.
        files: usize,
    },
    /// More chunks than [`MAX_CHUNKS`].
    #[error("{chunks} chunks, more than the limit of {MAX_CHUNKS}")]
    TooManyChunks {
        /// Chunks the lengths make (as far as they were counted).
        chunks: u64,
    },
}

/// Chunk size and file lengths of a title (one length for a one-file title).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawShape")]
pub struct Shape {
    chunk_size: ChunkSize,
    package: bool,
    lens: Vec<u64>,
    #[serde(skip)]
    starts: Vec<u32>,
    #[serde(skip)]
    chunks: u32,
    #[serde(skip)]
    len: u64,
}

#[derive(Deserialize)]
struct RawShape {
    chunk_size: ChunkSize,
    package: bool,
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX_FILES>")]
    lens: Vec<u64>,
}

impl TryFrom<RawShape> for Shape {
    type Error = ShapeError;
    fn try_from(raw: RawShape) -> Result<Self, ShapeError> {
        Shape::new(raw.chunk_size, raw.package, raw.lens)
    }
}

impl Shape {
    /// A shape of `lens` (a one-file title's single length, or a package's files' in listing
    /// order) at `chunk_size`, within the bounds a manifest has.
    pub fn new(chunk_size: ChunkSize, package: bool, lens: Vec<u64>) -> Result<Self, ShapeError> {
        let ok = if package { (1..=MAX_FILES).contains(&lens.len()) } else { lens.len() == 1 };
        if !ok {
            let kind = if package { "package" } else { "one-file title" };
            return Err(ShapeError::Files { kind, files: lens.len() });
        }
        let mut starts = Vec::with_capacity(lens.len());
        let (mut chunks, mut len) = (0u64, 0u64);
        for &l in &lens {
            // Bounded by MAX_CHUNKS, checked before the next start is taken.
            starts.push(chunks as u32);
            chunks += chunk_size.chunks_for(l);
            len = len.saturating_add(l);
            if chunks > MAX_CHUNKS {
                return Err(ShapeError::TooManyChunks { chunks });
            }
        }
        Ok(Self { chunk_size, package, lens, starts, chunks: chunks as u32, len })
    }

    /// The shape of a one-file title of `len` bytes.
    pub fn file(len: u64, chunk_size: ChunkSize) -> Result<Self, ShapeError> {
        Self::new(chunk_size, false, vec![len])
    }

    /// The chunk size.
    pub fn chunk_size(&self) -> ChunkSize {
        self.chunk_size
    }

    /// Whether the title is a package (served by path under `/titles/<id>/`).
    pub fn is_package(&self) -> bool {
        self.package
    }

    /// The title's bytes (a package's files' together).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the title has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Files: 1 for a one-file title.
    pub fn file_count(&self) -> usize {
        self.lens.len()
    }

    /// The title's chunk count.
    pub fn chunk_count(&self) -> u32 {
        self.chunks
    }

    /// Length of chunk `index`, or `None` past the end.
    pub fn chunk_len(&self, index: u32) -> Option<u64> {
        if index >= self.chunks {
            return None;
        }
        let k = self.starts.partition_point(|&s| s <= index).saturating_sub(1);
        let local = u64::from(index - self.starts[k]);
        Some(self.chunk_size.bytes().min(self.lens[k] - local * self.chunk_size.bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lengths_run_across_files() {
        let cs = ChunkSize::new(1024).unwrap();
        let s = Shape::new(cs, true, vec![1500, 0, 1024, 10]).unwrap();
        assert_eq!(s.chunk_count(), 4);
        assert_eq!(s.len(), 2534);
        let lens: Vec<_> = (0..5).map(|i| s.chunk_len(i)).collect();
        assert_eq!(lens, [Some(1024), Some(476), Some(1024), Some(10), None]);
    }

    #[test]
    fn bad_shapes_are_refused() {
        let cs = ChunkSize::new(1024).unwrap();
        assert!(matches!(Shape::new(cs, false, vec![1, 2]), Err(ShapeError::Files { .. })));
        assert!(matches!(Shape::new(cs, true, vec![]), Err(ShapeError::Files { .. })));
        assert!(matches!(Shape::file(MAX_CHUNKS * 1024 + 1, cs), Err(ShapeError::TooManyChunks { .. })));
    }
}
