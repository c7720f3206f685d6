//! Bit sets over a title's chunks, in 64-bit words so that the scheduler can combine several
//! sets (wanted, advertised, allowed) a word at a time: one set alone ([`Bits`]), or several
//! stored word by word ([`Sets`]).

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

    pub(crate) fn insert_range(&mut self, range: Range<u32>) {
        for i in range.start..range.end.min(self.len) {
            self.words[(i / 64) as usize] |= 1 << (i % 64);
        }
    }
}

/// Several bit sets over the same chunks, stored word by word: word `w` of every set sits
/// beside word `w` of the others, so the sets that a pick or a HAVE combines for one chunk
/// share a cache line or two instead of each being its own allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sets {
    len: u32,
    /// Sets, so also the words in each group.
    width: usize,
    words: Vec<u64>,
}

impl Sets {
    /// `width` (at least 1) empty sets of `len` bits.
    pub(crate) fn new(len: u32, width: usize) -> Self {
        Self { len, width, words: vec![0; (len as usize).div_ceil(64) * width] }
    }

    /// Adds an empty set; returns its index.
    pub(crate) fn add(&mut self) -> usize {
        let old = self.width;
        let mut words = Vec::with_capacity(self.word_count() * (old + 1));
        for group in self.words.chunks_exact(old) {
            words.extend_from_slice(group);
            words.push(0);
        }
        self.words = words;
        self.width = old + 1;
        old
    }

    /// Words in each set.
    pub(crate) fn word_count(&self) -> usize {
        (self.len as usize).div_ceil(64)
    }

    /// Word `w` of set `set`.
    pub(crate) fn word(&self, set: usize, w: usize) -> u64 {
        self.words[w * self.width + set]
    }

    pub(crate) fn contains(&self, set: usize, i: u32) -> bool {
        i < self.len && self.word(set, (i / 64) as usize) & (1 << (i % 64)) != 0
    }

    /// Sets bit `i` of set `set`; whether it was newly set (false when already set or out of
    /// range).
    pub(crate) fn insert(&mut self, set: usize, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let w = &mut self.words[(i / 64) as usize * self.width + set];
        let was = *w & (1 << (i % 64)) != 0;
        *w |= 1 << (i % 64);
        !was
    }

    /// Clears bit `i` of set `set`; whether it was set.
    pub(crate) fn remove(&mut self, set: usize, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let w = &mut self.words[(i / 64) as usize * self.width + set];
        let was = *w & (1 << (i % 64)) != 0;
        *w &= !(1 << (i % 64));
        was
    }

    /// Makes set `set` equal to `bits` (of the same length).
    pub(crate) fn assign(&mut self, set: usize, bits: &Bits) {
        for (w, &word) in bits.words().iter().enumerate() {
            self.words[w * self.width + set] = word;
        }
    }

    /// Clears every bit of set `set` that is set in set `other`.
    pub(crate) fn remove_all(&mut self, set: usize, other: usize) {
        for group in self.words.chunks_exact_mut(self.width) {
            group[set] &= !group[other];
        }
    }

    /// Clears word `w` of set `set`; returns what it held.
    pub(crate) fn take_word(&mut self, set: usize, w: usize) -> u64 {
        std::mem::take(&mut self.words[w * self.width + set])
    }

    pub(crate) fn count(&self, set: usize) -> u32 {
        (0..self.word_count()).map(|w| self.word(set, w).count_ones()).sum()
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
