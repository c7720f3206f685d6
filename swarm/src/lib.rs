//! An appliance's fill of one title among the parents its tracker assigned: which chunk to ask
//! which parent for next, and what each answer means. Sans-IO: no sockets, tasks or clocks;
//! the node's fill driver and the simulator feed it what happened and do what it says, so the
//! simulator's figures are those of this code.
//!
//! The tracker decides *who*: a ranked list of parents (same site, same region, other
//! regions, the origin) and two sets of chunks, those this appliance takes from the origin
//! (each chunk is given to one appliance fleet-wide) and those it may bring into its region
//! from parents in other regions (each chunk to one appliance per region). This decides
//! *which chunk*, from what the parents advertise (a held bitmap, then a HAVE per chunk):
//!
//! - **Rarest first** among the chunks a parent advertises that are wanted here, so every
//!   chunk gets copies early (counted over this appliance's parents: its view of the swarm).
//! - **Nearest first**: a parent is not given a chunk that a nearer parent advertises and has
//!   room for; the driver asks every parent with room after each change, so the nearer one
//!   takes it. A parent in another region, or the origin, is not given one that a nearer
//!   parent advertises (and may be asked for) even when that one is busy: it waits its turn.
//! - **Far only where planned**: a parent in another region is asked only for the chunks this
//!   appliance imports, the origin only for its origin chunks, until the plan is stale
//!   ([`Swarm::escalate`], when the tracker has been unreachable too long): then any parent
//!   may be asked for anything, and the origin for what no parent advertises.
//! - **Pipelined**: each parent has up to its depth of requests in flight.
//! - **Bad parents go at once**: a corrupt chunk, a HAVE out of range, more HAVEs than the
//!   title has chunks, a bitmap of the wrong length, or too many `NotHeld` answers for chunks
//!   it advertised drop the parent; what it advertised stops counting. The driver closes its
//!   subscription (and reports a corrupt parent to the tracker at once).
//! - A chunk is taken by one parent at a time; it is given back when the request fails.
//! - **Playback first** ([`Swarm::set_first`]): for a package, the chunks a player needs to
//!   start (playlists, init segments, the first segments of each rendition, lowest bitrate
//!   first) are asked for in that order before any rarest-first pick, under the same rules of
//!   who may be asked.

#![warn(missing_docs)]

mod bits;

use std::collections::HashMap;
use std::ops::Range;

use bits::{ones, Bits, Sets};
use fillmesh_protocol::messages::SourceClass;
use fillmesh_protocol::ChunkBitmap;

/// Tunables; [`Config::default`] is what the node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Candidate chunks weighed per pick: the rarest of these is taken. A pick costs about
    /// this many chunks plus one word per 64 chunks scanned.
    pub window: u32,
    /// A parent is asked for one chunk at most this many times when it refuses or times out.
    pub attempts: u8,
    /// `NotHeld` answers for chunks a parent advertised after which it is dropped as lying.
    pub not_held_limit: u32,
    /// Requests in flight over all parents together: what the appliance's download keeps
    /// busy. Once reached, every parent waits (and a pick costs nothing).
    pub inflight: u32,
    /// Requests in flight per parent, for [`Swarm::add_parent`]. Why 1: an appliance has
    /// several parents, so its download stays busy across them (up to `inflight`), and in
    /// the simulator 2 per parent made the fill slower: 1,000 x 1 GiB went from 1.061x to
    /// 1.144x the bound, the heterogeneous scenario from 1.137x to 1.292x. `fillmesh fetch`,
    /// with few sources, asks for more (`--per-source`, 4).
    pub depth: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self { window: 64, attempts: 2, not_held_limit: 8, inflight: 16, depth: 1 }
    }
}

impl Config {
    /// The chunk size the depths above were measured at.
    pub const MEASURED_CHUNK: u64 = 1 << 20;

    /// The most this scales the depths by.
    pub const MAX_SCALE: u64 = 16;

    /// This configuration for a title whose chunks are `avg_chunk` bytes on average: below
    /// [`Self::MEASURED_CHUNK`], the per-parent depth and the in-flight cap are scaled up so
    /// about as many bytes are in flight as with 1 MiB chunks (at most [`Self::MAX_SCALE`]x).
    /// Why: a request costs a round trip and a commit whatever its size, so a package of 5,000
    /// segments of 210 KB at one request per parent moved a fifth of the bytes per round trip.
    pub fn for_chunks(self, avg_chunk: u64) -> Self {
        let scale = (Self::MEASURED_CHUNK / avg_chunk.max(1)).clamp(1, Self::MAX_SCALE) as u32;
        Self {
            depth: self.depth.saturating_mul(scale),
            inflight: self.inflight.saturating_mul(scale),
            ..self
        }
    }
}

/// How one request to a parent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and stored, this many bytes.
    Stored(u64),
    /// The bytes did not verify, or the parent broke the protocol.
    Corrupt,
    /// The parent does not hold the chunk (after advertising it).
    NotHeld,
    /// Busy, refused or reset.
    Refused,
    /// No answer in time.
    Timeout,
    /// The connection is gone.
    Lost,
    /// The store refused the chunk (disk full, I/O): the fill stops.
    StoreFailed,
}

/// What a parent should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Request this chunk.
    Chunk(u32),
    /// Nothing now; ask again after the next change.
    Wait,
    /// Nothing ever: the fill is done or stopped, or the parent was dropped.
    Stop,
}

/// Why a parent was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// A request to it ended [`Outcome::Corrupt`].
    #[error("sent a chunk that failed verification")]
    Corrupt,
    /// It answered [`Outcome::NotHeld`] [`Config::not_held_limit`] times for chunks it
    /// advertised.
    #[error("advertised chunks it did not serve")]
    Lied,
    /// It sent a HAVE for a chunk index past the title's end; carries the index.
    #[error("sent a HAVE for chunk {0}, past the title's end")]
    OutOfRange(u32),
    /// It sent more HAVEs over its subscription than the title has chunks.
    #[error("sent more HAVEs than the title has chunks")]
    Flooded,
    /// Its held bitmap is not as long as the title.
    #[error("sent a held bitmap of {got} chunks for a title of {expected}")]
    BitmapLength {
        /// Chunks its bitmap covers.
        got: u32,
        /// Chunks the title has.
        expected: u32,
    },
    /// It sent keepalives (empty HAVEs) faster than the driver allows; the driver sees it
    /// and says so with [`Swarm::reject`].
    #[error("sent {sent} keepalives in {secs} s")]
    Keepalives {
        /// Keepalives received on the subscription so far.
        sent: u64,
        /// Whole seconds since the subscription's first answer.
        secs: u64,
    },
    /// Its connection or subscription ended, or it answered busy ([`Swarm::remove_parent`],
    /// or a request to it ended [`Outcome::Lost`]).
    #[error("its connection or subscription ended")]
    Gone,
}

/// What one parent did, for the driver's logs and reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Chunks it delivered that verified and were stored.
    pub chunks: u64,
    /// The bytes of those chunks.
    pub bytes: u64,
    /// Requests to it that ended [`Outcome::NotHeld`], [`Outcome::Refused`],
    /// [`Outcome::Timeout`] or [`Outcome::Lost`] (a corrupt chunk drops it instead).
    pub failures: u64,
}

#[derive(Debug)]
struct Parent {
    class: SourceClass,
    depth: u32,
    /// Requests on the wire (one received and waiting for its commit no longer counts).
    requests: u32,
    haves: u64,
    not_held: u32,
    dropped: Option<Dropped>,
    tally: Tally,
}

impl Parent {
    fn spare(&self) -> bool {
        self.dropped.is_none() && self.requests < self.depth
    }
}

#[derive(Debug, Clone, Copy)]
struct Taken {
    parent: usize,
    received: bool,
}

/// One title's fill on one appliance. See the crate's rules.
#[derive(Debug)]
pub struct Swarm {
    config: Config,
    chunks: u32,
    /// The chunk sets, word by word: held, taken, advertised by some parent, the plan's
    /// origin and import sets, then what each parent advertises (for the origin:
    /// everything). Why together: a HAVE and a pick read several of them for one chunk, and
    /// apart each was a cache miss of its own: in the simulator's scale bench (3,000
    /// appliances) the held set's word was 37% of `Swarm::have`, the parent's advertised
    /// word 17% of `Swarm::next`.
    sets: Sets,
    /// Chunks held (asked for on every pick: a count of the bits would cost a word per
    /// 64 chunks each time).
    held_count: u32,
    /// The chunks taken and by whom: a list, as it holds about as many entries as there are
    /// requests in flight. Why: hashing a chunk for each request and each answer was 0.7%
    /// of the simulator's scale bench (3,000 appliances).
    taken: Vec<(u32, Taken)>,
    /// Parents (not dropped) advertising each chunk; the origin does not count.
    avail: Vec<u16>,
    escalated: bool,
    parents: Vec<Parent>,
    /// Requests on the wire over all parents.
    requests: u32,
    attempts: HashMap<(u32, usize), u8>,
    stopped: bool,
    rng: u64,
    gained: Vec<u32>,
    bytes: [u64; 4],
    /// Chunks to pick before the rarest, in order ([`Self::set_first`]).
    first: Vec<u32>,
    /// Every chunk of `first` before this index is held.
    first_done: usize,
}

impl Swarm {
    /// A fill of a title of `held.len()` chunks of which `held` are already here; `seed`
    /// makes this appliance's picks its own (different appliances start their scans
    /// elsewhere).
    pub fn new(config: Config, held: &ChunkBitmap, seed: u64) -> Self {
        let chunks = held.len();
        let mut sets = Sets::new(chunks, PARENTS);
        sets.assign(HELD, &Bits::from_bitmap(held));
        Self {
            config,
            chunks,
            held_count: sets.count(HELD),
            sets,
            taken: Vec::new(),
            avail: vec![0; chunks as usize],
            escalated: false,
            parents: Vec::new(),
            requests: 0,
            attempts: HashMap::new(),
            stopped: false,
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            gained: Vec::new(),
            bytes: [0; 4],
            first: Vec::new(),
            first_done: 0,
        }
    }

    /// Chunks to ask for before any other, in this order (a package's start of playback);
    /// indices past the title's end are ignored. Each pick weighs at most [`Config::window`]
    /// of them that are not held yet.
    pub fn set_first(&mut self, chunks: &[u32]) {
        self.first = chunks.iter().copied().filter(|&c| c < self.chunks).collect();
        self.first_done = 0;
    }

    /// The chunks this appliance takes from the origin and those it may bring in from other
    /// regions, as its latest plan says (replacing the previous plan's).
    pub fn set_plan(&mut self, origin: &[Range<u32>], import: &[Range<u32>]) {
        for (set, ranges) in [(ORIGIN, origin), (IMPORT, import)] {
            let mut bits = Bits::new(self.chunks);
            for r in ranges {
                bits.insert_range(r.clone());
            }
            self.sets.assign(set, &bits);
        }
    }

    /// The plan is stale (the tracker has been unreachable too long): any parent may be asked
    /// for any chunk, and the origin for those no parent advertises. The driver caps the
    /// origin's rate meanwhile.
    pub fn escalate(&mut self, escalated: bool) {
        self.escalated = escalated;
    }

    /// Adds a parent with `depth` requests in flight at most (the node and the simulator
    /// give [`Config::depth`]). The origin advertises every chunk from the start; other
    /// parents advertise nothing until [`Self::advertise`].
    pub fn add_parent(&mut self, class: SourceClass, depth: u32) -> usize {
        let set = self.sets.add();
        debug_assert_eq!(set, PARENTS + self.parents.len());
        if class == SourceClass::Origin {
            self.sets.assign(set, &Bits::full(self.chunks));
        }
        self.parents.push(Parent {
            class,
            depth: depth.max(1),
            requests: 0,
            haves: 0,
            not_held: 0,
            dropped: None,
            tally: Tally::default(),
        });
        self.parents.len() - 1
    }

    /// A parent's held bitmap (the first message of its subscription; a later one replaces
    /// what it advertised). A bitmap of the wrong length drops the parent.
    pub fn advertise(&mut self, p: usize, held: &ChunkBitmap) -> Result<(), Dropped> {
        if self.parents[p].dropped.is_some() || self.parents[p].class == SourceClass::Origin {
            return Ok(());
        }
        if held.len() != self.chunks {
            return Err(self.drop_parent(p, Dropped::BitmapLength { got: held.len(), expected: self.chunks }));
        }
        self.unadvertise(p);
        // Only chunks still wanted here are recorded and counted: a held chunk is never asked
        // for again, so its availability is never weighed.
        let set = PARENTS + p;
        self.sets.assign(set, &Bits::from_bitmap(held));
        self.sets.remove_all(set, HELD);
        for w in 0..self.sets.word_count() {
            for b in ones(self.sets.word(set, w)) {
                self.count_up(w as u32 * 64 + b);
            }
        }
        Ok(())
    }

    /// A parent gained chunk `c`; whether that is news here (a chunk not held here that the
    /// parent had not advertised), after which the parent may have work. Out of range, or
    /// more HAVEs than the title has chunks over the subscription's life, drops the parent.
    /// A HAVE for a chunk held here changes nothing but the count of HAVEs.
    pub fn have(&mut self, p: usize, c: u32) -> Result<bool, Dropped> {
        let parent = &mut self.parents[p];
        if parent.dropped.is_some() || parent.class == SourceClass::Origin {
            return Ok(false);
        }
        if c >= self.chunks {
            return Err(self.drop_parent(p, Dropped::OutOfRange(c)));
        }
        parent.haves += 1;
        if parent.haves > u64::from(self.chunks) {
            return Err(self.drop_parent(p, Dropped::Flooded));
        }
        if self.sets.contains(HELD, c) {
            return Ok(false);
        }
        let news = self.sets.insert(PARENTS + p, c);
        if news {
            self.count_up(c);
        }
        Ok(news)
    }

    /// The driver saw parent `p` break a rule of the subscription that is not the swarm's to
    /// see (keepalives too often): it is dropped for `why`, as if the swarm had caught it.
    pub fn reject(&mut self, p: usize, why: Dropped) -> Dropped {
        match self.parents[p].dropped {
            Some(already) => already,
            None => self.drop_parent(p, why),
        }
    }

    /// The parent's subscription or connection ended (or it said it is busy): it is asked
    /// for nothing more. Its requests in flight still end with [`Self::finish`].
    pub fn remove_parent(&mut self, p: usize) {
        if self.parents[p].dropped.is_none() {
            self.drop_parent(p, Dropped::Gone);
        }
    }

    /// What parent `p` should do next; a chunk returned is taken by it until [`Self::finish`].
    pub fn next(&mut self, p: usize) -> Next {
        if self.stopped || self.parents[p].dropped.is_some() || self.is_complete() {
            return Next::Stop;
        }
        if !self.parents[p].spare() || self.requests >= self.config.inflight {
            return Next::Wait;
        }
        match self.pick(p) {
            Some(c) => {
                self.taken.push((c, Taken { parent: p, received: false }));
                self.sets.insert(TAKEN, c);
                self.parents[p].requests += 1;
                self.requests += 1;
                Next::Chunk(c)
            }
            None => Next::Wait,
        }
    }

    /// Parent `p` delivered `c` and it verified: its request slot is free while the chunk
    /// waits for the store.
    pub fn received(&mut self, p: usize, c: u32) {
        if let Some((_, t)) = self.taken.iter_mut().find(|(k, t)| *k == c && t.parent == p && !t.received) {
            t.received = true;
            self.parents[p].requests -= 1;
            self.requests -= 1;
        }
    }

    /// How parent `p`'s request for `c` ended. Returns why the parent was dropped, if this
    /// outcome dropped it. An outcome for a chunk `p` has not taken is ignored.
    pub fn finish(&mut self, p: usize, c: u32, outcome: Outcome) -> Option<Dropped> {
        let k = self.taken.iter().position(|&(k, _)| k == c)?;
        let taken = self.taken[k].1;
        if taken.parent != p {
            return None;
        }
        self.taken.swap_remove(k);
        self.sets.remove(TAKEN, c);
        if !taken.received {
            self.parents[p].requests -= 1;
            self.requests -= 1;
        }
        match outcome {
            Outcome::Stored(bytes) => {
                if self.sets.insert(HELD, c) {
                    self.held_count += 1;
                    self.gained.push(c);
                }
                let parent = &mut self.parents[p];
                parent.tally.chunks += 1;
                parent.tally.bytes += bytes;
                self.bytes[parent.class as usize] += bytes;
                None
            }
            Outcome::Corrupt => Some(self.drop_parent(p, Dropped::Corrupt)),
            Outcome::NotHeld => {
                let parent = &mut self.parents[p];
                parent.tally.failures += 1;
                parent.not_held += 1;
                if parent.not_held >= self.config.not_held_limit {
                    return Some(self.drop_parent(p, Dropped::Lied));
                }
                if parent.class != SourceClass::Origin && self.sets.remove(PARENTS + p, c) {
                    self.count_down(c);
                }
                None
            }
            Outcome::Refused | Outcome::Timeout => {
                self.parents[p].tally.failures += 1;
                *self.attempts.entry((c, p)).or_default() += 1;
                None
            }
            Outcome::Lost => {
                self.parents[p].tally.failures += 1;
                (self.parents[p].dropped.is_none()).then(|| self.drop_parent(p, Dropped::Gone))
            }
            Outcome::StoreFailed => {
                self.stopped = true;
                None
            }
        }
    }

    /// Every chunk is held.
    pub fn is_complete(&self) -> bool {
        self.held_count == self.chunks
    }

    /// Whether chunk `c` is held here (it was, or a request for it ended stored).
    pub fn holds(&self, c: u32) -> bool {
        self.sets.contains(HELD, c)
    }

    /// Chunks held here, out of the title's.
    pub fn held_count(&self) -> u32 {
        self.held_count
    }

    /// The store failed: nothing more is asked of anyone.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Chunks stored since the last call, in the order they were stored (for the held delta
    /// of the next report, and for the HAVEs this appliance sends its own children).
    pub fn take_gained(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.gained)
    }

    /// Bytes stored so far from each class of parent, by [`SourceClass`] order.
    pub fn bytes_by_class(&self) -> [u64; 4] {
        self.bytes
    }

    /// What parent `p` has done so far.
    pub fn tally(&self, p: usize) -> &Tally {
        &self.parents[p].tally
    }

    /// Why parent `p` was dropped; `None` while it may still be asked.
    pub fn dropped(&self, p: usize) -> Option<Dropped> {
        self.parents[p].dropped
    }

    /// Where parent `p` is from this appliance, as [`Swarm::add_parent`] was told.
    pub fn class(&self, p: usize) -> SourceClass {
        self.parents[p].class
    }

    /// Parents added so far, dropped ones included: parent indices run from 0 to this.
    pub fn parent_count(&self) -> usize {
        self.parents.len()
    }

    /// Parents (not the origin, not dropped) that advertise `c`.
    pub fn availability(&self, c: u32) -> u16 {
        self.avail.get(c as usize).copied().unwrap_or(0)
    }

    fn drop_parent(&mut self, p: usize, why: Dropped) -> Dropped {
        self.unadvertise(p);
        self.parents[p].dropped = Some(why);
        why
    }

    fn unadvertise(&mut self, p: usize) {
        if self.parents[p].class == SourceClass::Origin {
            return;
        }
        for w in 0..self.sets.word_count() {
            for b in ones(self.sets.take_word(PARENTS + p, w)) {
                self.count_down(w as u32 * 64 + b);
            }
        }
    }

    fn count_up(&mut self, c: u32) {
        let a = &mut self.avail[c as usize];
        *a = a.saturating_add(1);
        // Set already unless this is the first parent to advertise it: one memory access
        // fewer on the simulator's hottest path (a HAVE to every child of every holder).
        if *a == 1 {
            self.sets.insert(ADVERTISED, c);
        }
    }

    fn count_down(&mut self, c: u32) {
        let a = &mut self.avail[c as usize];
        *a = a.saturating_sub(1);
        if *a == 0 {
            self.sets.remove(ADVERTISED, c);
        }
    }

    /// The chunks of word `w` parent `p` may be asked for under the plan.
    fn allowed(&self, p: usize, w: usize) -> u64 {
        match self.parents[p].class {
            SourceClass::SameSite | SourceClass::SameRegion => u64::MAX,
            SourceClass::CrossRegion if self.escalated => u64::MAX,
            SourceClass::CrossRegion => self.sets.word(IMPORT, w),
            SourceClass::Origin if self.escalated => {
                self.sets.word(ORIGIN, w) | !self.sets.word(ADVERTISED, w)
            }
            SourceClass::Origin => self.sets.word(ORIGIN, w),
        }
    }

    fn attempts_left(&self, c: u32, p: usize) -> bool {
        self.attempts.get(&(c, p)).is_none_or(|&n| n < self.config.attempts)
    }

    /// Whether `c` is left to a parent nearer than `p`: one that advertises it, may be asked
    /// for it and has room; or, when `p` is in another region or the origin, one that
    /// advertises it and may be asked for it, room or not. Far bytes are the dear ones, and a
    /// nearby parent is busy most of the time: in the simulator's `events.toml`, where
    /// failures move every appliance's origin range 2 s in, asking the origin whenever the
    /// nearby parents were busy took 166 chunks of 512 from it a second time (1.32 titles).
    fn left_to_nearer(&self, c: u32, p: usize) -> bool {
        let class = self.parents[p].class;
        let wait = class >= SourceClass::CrossRegion;
        let w = (c / 64) as usize;
        let bit = 1u64 << (c % 64);
        self.parents.iter().enumerate().any(|(q, parent)| {
            parent.class < class
                && (wait || parent.spare())
                && parent.dropped.is_none()
                && self.sets.word(PARENTS + q, w) & bit != 0
                && self.allowed(q, w) & bit != 0
                && self.attempts_left(c, q)
        })
    }

    /// The rarest chunk among the first [`Config::window`] that `p` may be asked for, in a
    /// scan starting at a random word.
    fn pick(&mut self, p: usize) -> Option<u32> {
        if let Some(c) = self.pick_first(p) {
            return Some(c);
        }
        let words = self.sets.word_count();
        if words == 0 {
            return None;
        }
        self.rng = splitmix(self.rng);
        let start = (self.rng % words as u64) as usize;
        let mut best: Option<(u16, u32)> = None;
        let mut weighed = 0;
        for k in 0..words {
            let w = (start + k) % words;
            let candidates = !self.sets.word(HELD, w)
                & !self.sets.word(TAKEN, w)
                & self.sets.word(PARENTS + p, w)
                & self.allowed(p, w);
            for b in ones(candidates) {
                let c = w as u32 * 64 + b;
                if !self.attempts_left(c, p) || self.left_to_nearer(c, p) {
                    continue;
                }
                let a = self.avail[c as usize];
                if best.is_none_or(|(best_a, _)| a < best_a) {
                    best = Some((a, c));
                }
                weighed += 1;
                // Nothing is rarer than a chunk only this parent has (or, for the origin,
                // that no parent has).
                let floor = u16::from(self.parents[p].class != SourceClass::Origin);
                if weighed >= self.config.window || a <= floor {
                    return best.map(|(_, c)| c);
                }
            }
        }
        best.map(|(_, c)| c)
    }
}

impl Swarm {
    /// The first chunk of [`Self::set_first`]'s list, among the next [`Config::window`] not
    /// held, that `p` may be asked for now.
    fn pick_first(&mut self, p: usize) -> Option<u32> {
        while self.first.get(self.first_done).is_some_and(|&c| self.holds(c)) {
            self.first_done += 1;
        }
        let window = self.config.window as usize;
        self.first[self.first_done..].iter().copied().take(window).find(|&c| {
            let w = (c / 64) as usize;
            let bit = 1u64 << (c % 64);
            let candidate = !self.sets.word(HELD, w)
                & !self.sets.word(TAKEN, w)
                & self.sets.word(PARENTS + p, w)
                & self.allowed(p, w);
            candidate & bit != 0 && self.attempts_left(c, p) && !self.left_to_nearer(c, p)
        })
    }
}

/// The sets of [`Swarm::sets`]: chunks held here, taken by a request, advertised by some
/// parent (not the origin), the plan's origin and import sets; parent `p`'s advertised chunks
/// are set `PARENTS + p`.
const HELD: usize = 0;
const TAKEN: usize = 1;
const ADVERTISED: usize = 2;
const ORIGIN: usize = 3;
const IMPORT: usize = 4;
const PARENTS: usize = 5;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
