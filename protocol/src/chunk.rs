//! Chunk sizes. A chunk size is a power of two and a multiple of BLAKE3's 1 KiB chunk, so
//! every full chunk of a title is one complete subtree of BLAKE3's own tree and can be
//! verified alone.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The size of the pieces a title is cut into.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct ChunkSize(u32);

/// Why a number is not a chunk size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkSizeError {
    /// The number is not a power of two (zero included).
    #[error("chunk size {0} is not a power of two")]
    NotPowerOfTwo(u64),
    /// A power of two below [`ChunkSize::MIN`].
    #[error("chunk size {0} is below the minimum of {min} bytes (BLAKE3's chunk)", min = ChunkSize::MIN.get())]
    TooSmall(u64),
    /// A power of two above [`ChunkSize::MAX`].
    #[error("chunk size {0} is above the maximum of {max} bytes", max = ChunkSize::MAX.get())]
    TooLarge(u64),
}

/// Chunks a title may have: 262,144, 8 MiB of chaining values, a 256 GiB title at the default
/// chunk size. It bounds every manifest and shape a node will parse or hold
/// ([`crate::Manifest::MAX_CHUNKS`] is the same number).
pub const MAX_CHUNKS: u64 = 1 << 18;

impl ChunkSize {
    /// BLAKE3's own chunk: the smallest piece with a chaining value of its own.
    pub const MIN: ChunkSize = ChunkSize(blake3::CHUNK_LEN as u32);
    /// 64 MiB: bounds the bytes a peer may send for one chunk and the memory to verify it.
    pub const MAX: ChunkSize = ChunkSize(64 << 20);
    /// 1 MiB: a verification costs about 0.2 ms and a 10 GiB title has 10,240 chunks.
    pub const DEFAULT: ChunkSize = ChunkSize(1 << 20);

    /// `bytes` as a chunk size: a power of two from [`ChunkSize::MIN`] to [`ChunkSize::MAX`].
    pub fn new(bytes: u64) -> Result<Self, ChunkSizeError> {
        if !bytes.is_power_of_two() {
            Err(ChunkSizeError::NotPowerOfTwo(bytes))
        } else if bytes < u64::from(Self::MIN.0) {
            Err(ChunkSizeError::TooSmall(bytes))
        } else if bytes > u64::from(Self::MAX.0) {
            Err(ChunkSizeError::TooLarge(bytes))
        } else {
            Ok(Self(bytes as u32))
        }
    }

    /// The size in bytes, as the wire and the manifest carry it.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The size in bytes, widened for offset arithmetic.
    pub const fn bytes(self) -> u64 {
        self.0 as u64
    }

    /// How many chunks a title of `len` bytes has (an empty title has none).
    pub const fn chunks_for(self, len: u64) -> u64 {
        len.div_ceil(self.0 as u64)
    }
}

impl Default for ChunkSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u32> for ChunkSize {
    type Error = ChunkSizeError;
    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::new(u64::from(value))
    }
}

impl From<ChunkSize> for u32 {
    fn from(value: ChunkSize) -> Self {
        value.0
    }
}

impl fmt::Debug for ChunkSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkSize({})", self.0)
    }
}

impl fmt::Display for ChunkSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_powers_of_two_between_the_bounds() {
        assert_eq!(ChunkSize::new(1024).map(ChunkSize::get), Ok(1024));
        assert_eq!(ChunkSize::new(1 << 26).map(ChunkSize::get), Ok(1 << 26));
        assert_eq!(ChunkSize::new(512), Err(ChunkSizeError::TooSmall(512)));
        assert_eq!(ChunkSize::new(0), Err(ChunkSizeError::NotPowerOfTwo(0)));
        assert_eq!(ChunkSize::new(3000), Err(ChunkSizeError::NotPowerOfTwo(3000)));
        assert_eq!(ChunkSize::new(1 << 27), Err(ChunkSizeError::TooLarge(1 << 27)));
    }

    #[test]
    fn chunk_counts() {
        let cs = ChunkSize::new(1024).unwrap();
        assert_eq!(cs.chunks_for(0), 0);
        assert_eq!(cs.chunks_for(1), 1);
        assert_eq!(cs.chunks_for(1024), 1);
        assert_eq!(cs.chunks_for(1025), 2);
    }
}
