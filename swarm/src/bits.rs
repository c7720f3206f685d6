//! A fixed-length bit set over a title's chunks, in 64-bit words so that the scheduler can
//! combine several sets (wanted, advertised, allowed) a word at a time.

use std::ops::Range;

use fillmesh_protocol::ChunkBitmap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bits {
    len: u32,
    words: Vec<u64>,
}

impl Bits {
    pub(crate) fn new(len: u32) -> Self {
        Self { len, words: vec![0; (len as usize).div_ceil(64)] }
    }

    pub(crate) fn full(len: u32) -> Self {
        let mut bits = Self::new(len);
        bits.insert_range(0..len);
        bits
    }

    pub(crate) fn from_bitmap(map: &ChunkBitmap) -> Self {
        let mut bits = Self::new(map.len());
        for (i, byte) in map.as_bytes().iter().enumerate() {
            bits.words[i / 8] |= u64::from(*byte) << (8 * (i % 8));
        }
        bits
    }

    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    pub(crate) fn contains(&self, i: u32) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Sets `i`; whether it was newly set (false when already set or out of range).
    pub(crate) fn insert(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let w = &mut self.words[(i / 64) as usize];
        let was = *w & (1 << (i % 64)) != 0;
        *w |= 1 << (i % 64);
        !was
    }

    /// Clears `i`; whether it was set.
    pub(crate) fn remove(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let w = &mut self.words[(i / 64) as usize];
        let was = *w & (1 << (i % 64)) != 0;
        *w &= !(1 << (i % 64));
        was
    }

    pub(crate) fn insert_range(&mut self, range: Range<u32>) {
        for i in range.start..range.end.min(self.len) {
            self.words[(i / 64) as usize] |= 1 << (i % 64);
        }
    }

    /// Clears every bit set in `other` (a set over the same chunks).
    pub(crate) fn remove_all(&mut self, other: &Bits) {
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w &= !o;
        }
    }

    pub(crate) fn count(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    /// The set chunks, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| ones(word).map(move |b| w as u32 * 64 + b))
    }
}

/// The set bits of a word, lowest first.
pub(crate) fn ones(mut word: u64) -> impl Iterator<Item = u32> {
    std::iter::from_fn(move || {
        if word == 0 {
            return None;
        }
        let b = word.trailing_zeros();
        word &= word - 1;
        Some(b)
    })
}
