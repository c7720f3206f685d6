//! Which chunks of a title a node holds: one bit per chunk, compact enough to send whole.

use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;

/// A fixed-length set of chunk indices.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawBitmap")]
pub struct ChunkBitmap {
    len: u32,
    bits: Vec<u8>,
}

#[derive(Deserialize)]
struct RawBitmap {
    len: u32,
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX_BITMAP_BYTES>")]
    bits: Vec<u8>,
}

const MAX_BITMAP_BYTES: usize = (Manifest::MAX_CHUNKS / 8) as usize;

/// Why bytes from the wire are not a bitmap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitmapError {
    /// The bytes are not one bit per chunk, rounded up to whole bytes.
    #[error("a bitmap of {len} chunks needs {expected} bytes, got {actual}")]
    Length {
        /// Chunks the bitmap claims to cover.
        len: u32,
        /// Bytes that many chunks take: `len / 8`, rounded up.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// A bit past the last chunk is set in the last byte; carries the chunk count.
    #[error("a bitmap of {0} chunks has bits set past its end")]
    TrailingBits(u32),
    /// More chunks than [`Manifest::MAX_CHUNKS`]; carries the chunk count claimed.
    #[error("a bitmap of {0} chunks exceeds the limit of {max} chunks", max = Manifest::MAX_CHUNKS)]
    TooLong(u32),
    /// A run given to [`ChunkBitmap::insert_runs`] ends past the last chunk.
    #[error("a run of chunks ends at {end}, past the title's {len} chunks")]
    RunPastEnd {
        /// The run's end (exclusive).
        end: u32,
        /// The bitmap's chunk count.
        len: u32,
    },
}

impl TryFrom<RawBitmap> for ChunkBitmap {
    type Error = BitmapError;
    fn try_from(raw: RawBitmap) -> Result<Self, Self::Error> {
        Self::from_parts(raw.len, raw.bits)
    }
}

impl std::fmt::Debug for ChunkBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkBitmap({}/{})", self.count(), self.len)
    }
}

impl ChunkBitmap {
    /// An empty set over `len` chunks (`len` at most [`Manifest::MAX_CHUNKS`]).
    pub fn new(len: u32) -> Result<Self, BitmapError> {
        Self::from_parts(len, vec![0; (len as usize).div_ceil(8)])
    }

    /// A set over `len` chunks with every chunk present.
    pub fn full(len: u32) -> Result<Self, BitmapError> {
        let mut map = Self::new(len)?;
        for i in 0..len {
            map.insert(i);
        }
        Ok(map)
    }

    /// Checks bytes from a peer or from disk: exact length, nothing set past the end.
    pub fn from_parts(len: u32, bits: Vec<u8>) -> Result<Self, BitmapError> {
        if u64::from(len) > Manifest::MAX_CHUNKS {
            return Err(BitmapError::TooLong(len));
        }
        let expected = (len as usize).div_ceil(8);
        if bits.len() != expected {
            return Err(BitmapError::Length { len, expected, actual: bits.len() });
        }
        let tail = len % 8;
        if tail != 0 && bits[expected - 1] >> tail != 0 {
            return Err(BitmapError::TrailingBits(len));
        }
        Ok(Self { len, bits })
    }

    /// The chunks the set ranges over (the title's chunk count), present or not.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the set ranges over no chunks (a title of no bytes); whether any chunk is
    /// present is [`ChunkBitmap::count`]'s to say.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bits, chunk `i` at bit `i % 8` of byte `i / 8`: what [`ChunkBitmap::from_parts`]
    /// takes back.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Whether chunk `index` is present; false past the end.
    pub fn contains(&self, index: u32) -> bool {
        index < self.len && self.bits[(index / 8) as usize] & (1 << (index % 8)) != 0
    }

    /// Adds `index`; returns false (and changes nothing) when it is out of range.
    pub fn insert(&mut self, index: u32) -> bool {
        if index >= self.len {
            return false;
        }
        self.bits[(index / 8) as usize] |= 1 << (index % 8);
        true
    }

    /// Removes `index`; past the end, changes nothing.
    pub fn remove(&mut self, index: u32) {
        if index < self.len {
            self.bits[(index / 8) as usize] &= !(1 << (index % 8));
        }
    }

    /// How many chunks are present.
    pub fn count(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }

    /// Whether every chunk is present (so also when the set ranges over none).
    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    /// Present indices in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.contains(i))
    }

    /// Adds every index of `runs`; refuses (changing nothing) if any run ends past the end.
    pub fn insert_runs(&mut self, runs: &[std::ops::Range<u32>]) -> Result<(), BitmapError> {
        if let Some(r) = runs.iter().find(|r| r.end > self.len) {
            return Err(BitmapError::RunPastEnd { end: r.end, len: self.len });
        }
        for r in runs {
            for i in r.clone() {
                self.insert(i);
            }
        }
        Ok(())
    }
}

/// Chunk indices as the fewest runs that cover exactly them, in increasing order (the held
/// deltas of fill summaries).
pub fn runs(chunks: &[u32]) -> Vec<std::ops::Range<u32>> {
    let mut sorted = chunks.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<std::ops::Range<u32>> = Vec::new();
    for c in sorted {
        match out.last_mut() {
            Some(r) if r.end == c => r.end = c.saturating_add(1),
            _ => out.push(c..c.saturating_add(1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_count() {
        let mut m = ChunkBitmap::new(10).unwrap();
        assert!(m.insert(0));
        assert!(m.insert(9));
        assert!(!m.insert(10));
        assert!(m.contains(9) && !m.contains(8) && !m.contains(10));
        assert_eq!(m.count(), 2);
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![0, 9]);
        m.remove(9);
        assert_eq!(m.count(), 1);
        assert!(ChunkBitmap::full(10).unwrap().is_full());
    }

    #[test]
    fn malformed_parts_are_refused() {
        assert_eq!(
            ChunkBitmap::from_parts(10, vec![0]),
            Err(BitmapError::Length { len: 10, expected: 2, actual: 1 })
        );
        assert_eq!(ChunkBitmap::from_parts(10, vec![0, 0b100]), Err(BitmapError::TrailingBits(10)));
        assert_eq!(ChunkBitmap::from_parts(u32::MAX, vec![]), Err(BitmapError::TooLong(u32::MAX)));
    }
}
