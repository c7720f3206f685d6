//! Chunks read from disk and verified moments ago, kept in memory for a short, fixed time.
//!
//! Every chunk served is verified on its read from disk; a player that asks for a chunk in
//! several small ranges, or many players at the same point of a title, would otherwise make
//! the node read and hash the same chunk again for each request. What this keeps are the
//! verified bytes themselves, so a hit can only ever return bytes that verified: damage done
//! on disk after the read stays unseen for at most [`RECENT_TTL`] (the next read after that
//! finds it), and is never served.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fillmesh_protocol::TitleId;

/// How long verified bytes are served from memory before the chunk is read and verified again.
pub const RECENT_TTL: Duration = Duration::from_secs(2);
/// Bytes kept at most; the oldest go first.
pub const RECENT_BYTES: usize = 32 << 20;
/// Chunks larger than this are never kept, so the cache always holds several.
const LARGEST: usize = RECENT_BYTES / 8;

#[derive(Debug)]
struct Entry {
    title: TitleId,
    index: u32,
    at: Instant,
    bytes: Bytes,
}

/// The recent chunks, oldest first. A handful of entries: looked up by a linear scan.
#[derive(Debug, Default)]
pub(super) struct Recent {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Chunks read and verified within [`RECENT_TTL`] whose bytes some request still holds
    /// (being sent): a reader of the same chunk shares them instead of reading, hashing and
    /// holding a copy of its own. Weak: what no request holds any more is freed at once.
    in_use: HashMap<(TitleId, u32), (Weak<Bytes>, Instant)>,
    /// `in_use`'s size at which its dead entries are next swept.
    sweep_at: usize,
}

/// Bytes shared by every request that reads the chunk while they are in use.
struct Shared(Arc<Bytes>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The fewest entries `in_use` is swept at.
const SWEEP_FLOOR: usize = 256;

impl Recent {
    /// The verified bytes of a chunk read at most [`RECENT_TTL`] before `now`.
    pub(super) fn get(&mut self, title: &TitleId, index: u32, now: Instant) -> Option<Bytes> {
        while self.entries.front().is_some_and(|e| now.saturating_duration_since(e.at) >= RECENT_TTL) {
            self.pop();
        }
        self.entries.iter().find(|e| e.index == index && e.title == *title).map(|e| e.bytes.clone())
    }

    /// Keeps `bytes`, just verified, of a chunk read at `now`.
    pub(super) fn insert(&mut self, title: TitleId, index: u32, bytes: Bytes, now: Instant) {
        if bytes.len() > LARGEST || self.entries.iter().any(|e| e.index == index && e.title == title) {
            return;
        }
        self.bytes += bytes.len();
        self.entries.push_back(Entry { title, index, at: now, bytes });
        while self.bytes > RECENT_BYTES {
            self.pop();
        }
    }

    /// The verified bytes of a chunk read at most [`RECENT_TTL`] before `now` that a request
    /// still holds.
    pub(super) fn shared(&mut self, title: &TitleId, index: u32, now: Instant) -> Option<Bytes> {
        let (weak, at) = self.in_use.get(&(*title, index))?;
        if now.saturating_duration_since(*at) >= RECENT_TTL {
            return None;
        }
        Some(Bytes::from_owner(Shared(weak.upgrade()?)))
    }

    /// Shares `bytes`, just verified, of a chunk read at `now` with the readers that come
    /// while it is in use; returns the bytes to serve (the same, shared).
    pub(super) fn share(&mut self, title: TitleId, index: u32, bytes: Bytes, now: Instant) -> Bytes {
        let shared = Arc::new(bytes);
        self.in_use.insert((title, index), (Arc::downgrade(&shared), now));
        if self.in_use.len() >= self.sweep_at.max(SWEEP_FLOOR) {
            self.in_use.retain(|_, (weak, at)| {
                weak.strong_count() > 0 && now.saturating_duration_since(*at) < RECENT_TTL
            });
            self.sweep_at = 2 * self.in_use.len();
        }
        Bytes::from_owner(Shared(shared))
    }

    /// Forgets one chunk (`Some(index)`) or a whole title (`None`).
    pub(super) fn forget(&mut self, title: &TitleId, index: Option<u32>) {
        self.in_use.retain(|(t, i), _| t != title || index.is_some_and(|x| x != *i));
        let before = self.entries.len();
        self.entries.retain(|e| e.title != *title || index.is_some_and(|i| i != e.index));
        if self.entries.len() != before {
            self.bytes = self.entries.iter().map(|e| e.bytes.len()).sum();
        }
    }

    fn pop(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.bytes.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl_and_the_budget_drops_the_oldest() {
        let (a, b) = (TitleId::of(b"a"), TitleId::of(b"b"));
        let t0 = Instant::now();
        let mut r = Recent::default();
        r.insert(a, 0, Bytes::from_static(b"zero"), t0);
        assert_eq!(r.get(&a, 0, t0 + RECENT_TTL / 2).as_deref(), Some(&b"zero"[..]));
        assert!(r.get(&b, 0, t0).is_none() && r.get(&a, 1, t0).is_none());
        assert!(r.get(&a, 0, t0 + RECENT_TTL).is_none(), "kept past its time");
        assert_eq!(r.bytes, 0);
        let big = Bytes::from(vec![0u8; LARGEST]);
        for i in 0..9 {
            r.insert(a, i, big.clone(), t0);
        }
        assert!(r.bytes <= RECENT_BYTES);
        assert!(r.get(&a, 0, t0).is_none(), "the oldest stays past the budget");
        assert!(r.get(&a, 8, t0).is_some());
        r.insert(a, 20, Bytes::from(vec![0u8; LARGEST + 1]), t0);
        assert!(r.get(&a, 20, t0).is_none(), "a chunk larger than an eighth of the budget is kept");
        r.insert(b, 3, Bytes::from_static(b"b3"), t0);
        r.forget(&a, Some(8));
        assert!(r.get(&a, 8, t0).is_none() && r.get(&a, 7, t0).is_some());
        r.forget(&a, None);
        assert!(r.get(&a, 7, t0).is_none() && r.get(&b, 3, t0).is_some());
        assert_eq!(r.bytes, 2);
    }

    #[test]
    fn chunks_in_use_are_shared_until_dropped_or_too_old_or_forgotten() {
        let (a, b) = (TitleId::of(b"a"), TitleId::of(b"b"));
        let t0 = Instant::now();
        let mut r = Recent::default();
        let first = r.share(a, 0, Bytes::from(vec![7u8; 1000]), t0);
        let second = r.shared(&a, 0, t0 + RECENT_TTL / 2).expect("shared while held");
        assert_eq!(first, second);
        assert_eq!(first.as_ptr(), second.as_ptr(), "the same bytes, not a copy");
        assert!(r.shared(&a, 1, t0).is_none() && r.shared(&b, 0, t0).is_none());
        assert!(r.shared(&a, 0, t0 + RECENT_TTL).is_none(), "shared past its time");
        // A slice of it keeps it alive; once every holder is gone it is not shared.
        let piece = second.slice(10..20);
        drop((first, second));
        assert!(r.shared(&a, 0, t0).is_some());
        drop(piece);
        assert!(r.shared(&a, 0, t0).is_none(), "freed when no request holds it");
        let held = r.share(a, 2, Bytes::from_static(b"two"), t0);
        r.forget(&a, Some(2));
        assert!(r.shared(&a, 2, t0).is_none(), "a forgotten chunk (dropped, evicted) is not shared");
        drop(held);
        // Dead entries are swept: the map stays near what is in use.
        let kept: Vec<Bytes> = (0..10).map(|i| r.share(b, i, Bytes::from_static(b"k"), t0)).collect();
        for i in 10..(4 * SWEEP_FLOOR as u32) {
            drop(r.share(b, i, Bytes::from_static(b"x"), t0));
        }
        assert!(r.in_use.len() <= SWEEP_FLOOR + kept.len(), "{}", r.in_use.len());
        assert!((0..10).all(|i| r.shared(&b, i, t0).is_some()));
    }
}
