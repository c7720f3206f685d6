//! The fill scheduler: which chunk each source is asked for next, and what each answer means.
//!
//! Sans-IO: no sockets, tasks, clocks or store here; the async driver ([`super::driver`]) feeds
//! it what happened, and the property tests below drive it with simulated sources. Both fills
//! use it: `fillmesh fetch` (every source the same rank, several requests each: a parallel
//! fill) and the tracker's assignments (the tracker's sources ranked in its order, one request
//! each: try them in order).
//!
//! Rules:
//! - A chunk is taken by one source at a time; it is given back (first in line) when a copy is
//!   corrupt or the connection is lost, and (last in line) when the source could not give it.
//! - A source is asked for a chunk at most `attempts` times; one that sent a corrupt chunk is
//!   bad for good, one whose connection is gone takes no more.
//! - Ranks: a source may take a chunk only when every better-ranked source that can still be
//!   used has spent its attempts on it.
//! - A store failure (disk full, quota, I/O) stops everything: no source could help.
//!
//! Swarming among parents (HAVE messages, rarest first) fits in the same shape: what a source
//! holds is one more test in [`Scheduler::eligible`], and rarity an order over `queue`.

use std::collections::{HashMap, VecDeque};

/// How one request for a chunk ended, as far as the scheduler cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and stored, this many bytes.
    Stored(u64),
    /// The source sent bytes that do not verify or broke the protocol: it is never asked again.
    Corrupt,
    /// The source does not hold the chunk.
    NotHeld,
    /// The source could not or would not answer (busy, a reset stream, out of range).
    Refused,
    /// No answer within the request's time.
    Timeout,
    /// The connection is gone or could not be made: the source takes no more.
    Lost(String),
    /// The store refused the chunk: everything stops.
    StoreFailed,
}

/// What a source should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Request this chunk.
    Chunk(u32),
    /// Nothing for it now; ask again once another request finished.
    Wait,
    /// Nothing for it ever: its work is over.
    Stop,
}

/// What one source did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub chunks: u64,
    pub bytes: u64,
    pub failures: u64,
    /// Chunks or manifests from it that failed verification.
    pub corrupt: u64,
    /// It lied: it is not asked again.
    pub bad: bool,
    /// Why it could not be used (any more), if so.
    pub error: Option<String>,
}

impl Tally {
    /// Neither caught lying nor lost.
    fn usable(&self) -> bool {
        !self.bad && self.error.is_none()
    }
}

#[derive(Debug)]
struct Source {
    rank: u32,
    cap: usize,
    /// Requests on the wire (a chunk received and waiting for its commit no longer counts).
    requests: usize,
    tally: Tally,
}

#[derive(Debug, Clone, Copy)]
struct Taken {
    source: usize,
    received: bool,
}

/// One fill's decisions. See the module's rules.
#[derive(Debug, Default)]
pub struct Scheduler {
    /// Chunks nobody holds a request for, in the order they are offered.
    queue: VecDeque<u32>,
    /// Chunks taken and not finished, and by whom.
    taken: HashMap<u32, Taken>,
    /// Attempts spent per (chunk, source), counted when an attempt fails.
    attempts: HashMap<(u32, usize), u32>,
    limit: u32,
    sources: Vec<Source>,
    stopped: bool,
    fetched: Vec<u32>,
}

impl Scheduler {
    /// A fill of `chunks` (offered in this order), each tried at most `attempts` times per
    /// source (at least once).
    pub fn new(chunks: impl IntoIterator<Item = u32>, attempts: u32) -> Self {
        Self { queue: chunks.into_iter().collect(), limit: attempts.max(1), ..Self::default() }
    }

    /// Adds a source of `rank` (lower is preferred) that may have `cap` requests in flight,
    /// with what is already known of it (a connection that failed, a false manifest: such a
    /// source is never asked). Returns its index.
    pub fn add_source(&mut self, rank: u32, cap: usize, tally: Tally) -> usize {
        self.sources.push(Source { rank, cap: cap.max(1), requests: 0, tally });
        self.sources.len() - 1
    }

    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    pub fn cap(&self, s: usize) -> usize {
        self.sources[s].cap
    }

    /// What source `s` should do next; a chunk returned is taken by it until [`Self::finish`].
    pub fn next(&mut self, s: usize) -> Next {
        let src = &self.sources[s];
        if self.stopped || !src.tally.usable() {
            return Next::Stop;
        }
        if src.requests < src.cap {
            if let Some(pos) = self.queue.iter().position(|&c| self.eligible(c, s)) {
                let chunk = self.queue.remove(pos).unwrap_or_default();
                self.taken.insert(chunk, Taken { source: s, received: false });
                self.sources[s].requests += 1;
                return Next::Chunk(chunk);
            }
        }
        // A chunk kept for a better source now may come to this one when that one fails, and
        // a chunk in flight may come back: wait while either could happen.
        if self.taken.is_empty() && !self.queue.iter().any(|&c| self.attempts_left(c, s)) {
            Next::Stop
        } else {
            Next::Wait
        }
    }

    /// Source `s` delivered `chunk` and it verified: its request is over (the source may take
    /// another) while the chunk waits for the store, which the network need not wait for.
    pub fn received(&mut self, s: usize, chunk: u32) {
        if let Some(t) = self.taken.get_mut(&chunk).filter(|t| t.source == s && !t.received) {
            t.received = true;
            self.sources[s].requests -= 1;
        }
    }

    /// How the attempt of source `s` at `chunk` ended. An outcome for a chunk that `s` has
    /// not taken is ignored.
    pub fn finish(&mut self, s: usize, chunk: u32, outcome: Outcome) {
        let Some(taken) = self.taken.remove(&chunk) else { return };
        if taken.source != s {
            self.taken.insert(chunk, taken);
            return;
        }
        if !taken.received {
            self.sources[s].requests -= 1;
        }
        let tally = &mut self.sources[s].tally;
        match outcome {
            Outcome::Stored(bytes) => {
                self.fetched.push(chunk);
                tally.chunks += 1;
                tally.bytes += bytes;
            }
            Outcome::Corrupt => {
                tally.corrupt += 1;
                tally.bad = true;
                self.queue.push_front(chunk);
            }
            Outcome::NotHeld | Outcome::Refused | Outcome::Timeout => {
                tally.failures += 1;
                *self.attempts.entry((chunk, s)).or_default() += 1;
                self.queue.push_back(chunk);
            }
            Outcome::Lost(why) => {
                tally.failures += 1;
                tally.error.get_or_insert(why);
                self.queue.push_front(chunk);
            }
            Outcome::StoreFailed => {
                self.queue.push_front(chunk);
                self.stopped = true;
            }
        }
    }

    /// Whether `s` may take `chunk` now: it has attempts left on it, and no better-ranked
    /// usable source has. (Equal ranks do not wait for one another.)
    fn eligible(&self, chunk: u32, s: usize) -> bool {
        let rank = self.sources[s].rank;
        self.attempts_left(chunk, s)
            && self.sources.iter().enumerate().all(|(t, other)| {
                other.rank >= rank || !other.tally.usable() || !self.attempts_left(chunk, t)
            })
    }

    fn attempts_left(&self, chunk: u32, s: usize) -> bool {
        self.attempts.get(&(chunk, s)).copied().unwrap_or(0) < self.limit
    }

    /// Every chunk is stored.
    pub fn is_done(&self) -> bool {
        self.queue.is_empty() && self.taken.is_empty()
    }

    /// A store failure stopped the fill.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Chunks not stored (yet), in ascending order.
    pub fn missing(&self) -> Vec<u32> {
        let mut missing: Vec<u32> = self.queue.iter().chain(self.taken.keys()).copied().collect();
        missing.sort_unstable();
        missing
    }

    /// Chunks stored, in the order they were.
    pub fn fetched(&self) -> &[u32] {
        &self.fetched
    }

    pub fn tally(&self, s: usize) -> &Tally {
        &self.sources[s].tally
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use proptest::prelude::*;

    use super::*;

    /// A simulated source: what it does with each request, decided by its script alone.
    #[derive(Debug, Clone)]
    struct Script {
        rank: u32,
        cap: usize,
        /// Bit `c` set: it holds chunk `c` (others it answers NotHeld).
        holds: u32,
        /// Every `fail_every`-th request to it fails (refused or timed out); 0: none does.
        fail_every: u32,
        /// A chunk it sends corrupt.
        corrupt: Option<u32>,
        /// Its connection drops at this request (counted from 1) and stays down.
        lose_at: Option<u32>,
        /// Steps every request takes: a slow source takes many.
        slowness: u32,
    }

    impl Script {
        fn honest(rank: u32, cap: usize) -> Self {
            Script { rank, cap, holds: u32::MAX, fail_every: 0, corrupt: None, lose_at: None, slowness: 1 }
        }

        /// Gives chunk `c` whenever asked.
        fn reliable_for(&self, c: u32) -> bool {
            self.holds & (1 << c) != 0
                && self.fail_every == 0
                && self.corrupt.is_none()
                && self.lose_at.is_none()
        }
    }

    /// What a run did, as the simulation saw it (not the scheduler's own account).
    #[derive(Debug, Default)]
    struct Run {
        stored: Vec<(u32, usize)>,
        store_failed: bool,
        missing: Vec<u32>,
        bad: Vec<bool>,
        tallies: Vec<Tally>,
    }

    /// Drives a scheduler over simulated sources in a deterministic loop of bounded steps,
    /// asserting the properties that hold at every decision. `store_fails`: the chunk whose
    /// commit the store refuses.
    fn simulate(chunks: u32, limit: u32, scripts: &[Script], store_fails: Option<u32>) -> Run {
        let mut sched =
            scheduler(0..chunks, limit, &scripts.iter().map(|s| (s.rank, s.cap)).collect::<Vec<_>>());
        let n = scripts.len();
        let (mut bad, mut lost, mut stop) = (vec![false; n], vec![false; n], vec![false; n]);
        let mut requests = vec![0u32; n];
        let mut asks: HashMap<(u32, usize), u32> = HashMap::new();
        // (done at step, source, chunk, outcome), then commits (done at step, source, chunk).
        let mut wire: Vec<(u64, usize, u32, Outcome)> = Vec::new();
        let mut commits: Vec<(u64, usize, u32)> = Vec::new();
        let mut run = Run::default();
        let bound = 8 * u64::from(chunks + 1) * (n as u64 + 1) * u64::from(limit + 1) * 8;
        for step in 0..=bound {
            assert!(step < bound, "no end after {bound} steps");
            for s in 0..n {
                // Bounded: each pass takes a chunk (at most cap) or leaves.
                loop {
                    match sched.next(s) {
                        Next::Chunk(c) => {
                            assert!(!stop[s], "source {s} asked again after Stop");
                            assert!(!bad[s], "source {s} asked for chunk {c} after sending a corrupt one");
                            assert!(!lost[s], "source {s} asked after its connection was lost");
                            assert!(!run.store_failed, "chunk {c} asked after the store failed");
                            assert!(!run.stored.iter().any(|&(d, _)| d == c), "chunk {c} asked again");
                            let a = asks.entry((c, s)).or_default();
                            *a += 1;
                            assert!(*a <= limit, "chunk {c} asked of source {s} {a} times");
                            for (t, other) in scripts.iter().enumerate() {
                                let usable = !bad[t] && !lost[t];
                                let spent = asks.get(&(c, t)).copied().unwrap_or(0) >= limit;
                                assert!(
                                    other.rank >= scripts[s].rank || !usable || spent,
                                    "chunk {c} went to source {s} while better source {t} had attempts left"
                                );
                            }
                            requests[s] += 1;
                            let script = &scripts[s];
                            let k = requests[s];
                            let outcome = if lost[s] || script.lose_at.is_some_and(|l| k >= l) {
                                Outcome::Lost(format!("source {s} dropped"))
                            } else if script.holds & (1 << c) == 0 {
                                Outcome::NotHeld
                            } else if script.corrupt == Some(c) {
                                Outcome::Corrupt
                            } else if script.fail_every > 0 && k.is_multiple_of(script.fail_every) {
                                if k.is_multiple_of(2) {
                                    Outcome::Timeout
                                } else {
                                    Outcome::Refused
                                }
                            } else {
                                Outcome::Stored(1000 + u64::from(c))
                            };
                            wire.push((step + u64::from(script.slowness), s, c, outcome));
                        }
                        Next::Wait => break,
                        Next::Stop => {
                            stop[s] = true;
                            break;
                        }
                    }
                }
            }
            if stop.iter().all(|&s| s) && wire.is_empty() && commits.is_empty() {
                break;
            }
            // Commits first: a chunk received this step reaches the store next step.
            for (_, s, c) in commits.extract_if(.., |&mut (at, ..)| at <= step).collect::<Vec<_>>() {
                if store_fails == Some(c) {
                    run.store_failed = true;
                    sched.finish(s, c, Outcome::StoreFailed);
                } else {
                    assert!(!run.stored.iter().any(|&(d, _)| d == c), "chunk {c} stored twice");
                    run.stored.push((c, s));
                    sched.finish(s, c, Outcome::Stored(1000 + u64::from(c)));
                }
            }
            for (_, s, c, outcome) in wire.extract_if(.., |&mut (at, ..)| at <= step).collect::<Vec<_>>() {
                match outcome {
                    Outcome::Stored(_) => {
                        sched.received(s, c);
                        commits.push((step + 1, s, c));
                    }
                    outcome => {
                        bad[s] |= outcome == Outcome::Corrupt;
                        lost[s] |= matches!(outcome, Outcome::Lost(_));
                        sched.finish(s, c, outcome);
                    }
                }
            }
        }
        run.missing = sched.missing();
        run.bad = bad;
        run.tallies = (0..n).map(|s| sched.tally(s).clone()).collect();
        let fetched: Vec<u32> = run.stored.iter().map(|&(c, _)| c).collect();
        assert_eq!(sched.fetched(), fetched.as_slice());
        run
    }

    fn script() -> impl Strategy<Value = Script> {
        (
            0u32..3,
            1usize..4,
            prop_oneof![Just(u32::MAX), any::<u32>()],
            prop_oneof![Just(0u32), 1u32..5],
            proptest::option::weighted(0.3, 0u32..16),
            proptest::option::weighted(0.2, 1u32..12),
            prop_oneof![Just(1u32), 1u32..30],
        )
            .prop_map(|(rank, cap, holds, fail_every, corrupt, lose_at, slowness)| Script {
                rank,
                cap,
                holds,
                fail_every,
                corrupt,
                lose_at,
                slowness,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the sources do, the loop ends with every source stopped (asserted in
        /// `simulate`, with the per-decision properties); a chunk some reliable source holds is
        /// stored exactly once unless the store failed; what is missing is reported; a source
        /// caught with a corrupt chunk is bad and stored nothing it was asked for afterwards.
        #[test]
        fn every_chunk_once_from_honest_sources(
            chunks in 1u32..16,
            limit in 1u32..4,
            scripts in proptest::collection::vec(script(), 1..6),
            store_fails in proptest::option::weighted(0.1, 0u32..16),
        ) {
            let run = simulate(chunks, limit, &scripts, store_fails);
            let stored: BTreeSet<u32> = run.stored.iter().map(|&(c, _)| c).collect();
            prop_assert_eq!(stored.len(), run.stored.len(), "a chunk stored twice");
            let all: BTreeSet<u32> = (0..chunks).collect();
            let missing: BTreeSet<u32> = run.missing.iter().copied().collect();
            prop_assert_eq!(&all - &stored, missing, "missing chunks misreported");
            if !run.store_failed {
                for c in 0..chunks {
                    if scripts.iter().any(|s| s.reliable_for(c)) {
                        prop_assert!(stored.contains(&c), "chunk {} not stored from a reliable source", c);
                    }
                }
            }
            for (s, t) in run.tallies.iter().enumerate() {
                prop_assert_eq!(t.bad, run.bad[s]);
                prop_assert_eq!(t.chunks, run.stored.iter().filter(|&&(_, by)| by == s).count() as u64);
                if t.bad {
                    prop_assert!(t.corrupt > 0);
                }
            }
        }
    }

    /// A scheduler of `chunks` with fresh sources of these (rank, cap).
    fn scheduler(
        chunks: impl IntoIterator<Item = u32>,
        attempts: u32,
        sources: &[(u32, usize)],
    ) -> Scheduler {
        let mut sched = Scheduler::new(chunks, attempts);
        for &(rank, cap) in sources {
            sched.add_source(rank, cap, Tally::default());
        }
        sched
    }

    #[test]
    fn equal_ranks_fetch_in_parallel() {
        let mut sched = scheduler(0..4, 2, &[(0, 2), (0, 2)]);
        assert_eq!(sched.next(0), Next::Chunk(0));
        assert_eq!(sched.next(1), Next::Chunk(1));
        assert_eq!(sched.next(0), Next::Chunk(2));
        assert_eq!(sched.next(0), Next::Wait, "at its cap");
        // A received chunk frees the request slot before it is stored.
        sched.received(0, 0);
        assert_eq!(sched.next(0), Next::Chunk(3));
    }

    #[test]
    fn ranked_sources_are_tried_in_order() {
        let mut sched = scheduler([7], 1, &[(0, 1), (1, 1), (2, 1)]);
        assert_eq!(sched.next(1), Next::Wait, "the first source has not tried yet");
        assert_eq!(sched.next(0), Next::Chunk(7));
        sched.finish(0, 7, Outcome::Timeout);
        assert_eq!(sched.next(2), Next::Wait);
        assert_eq!(sched.next(0), Next::Stop, "its attempts are spent");
        assert_eq!(sched.next(1), Next::Chunk(7));
        sched.finish(1, 7, Outcome::Lost("gone".into()));
        assert_eq!(sched.next(2), Next::Chunk(7));
        sched.received(2, 7);
        sched.finish(2, 7, Outcome::Stored(5));
        assert!(sched.is_done());
        assert_eq!(sched.tally(1).error.as_deref(), Some("gone"));
        assert_eq!((sched.tally(2).chunks, sched.tally(2).bytes), (1, 5));
    }

    #[test]
    fn a_corrupt_source_is_dropped_and_its_chunk_goes_first() {
        let mut sched = scheduler(0..3, 2, &[(0, 2), (0, 1)]);
        assert_eq!(sched.next(0), Next::Chunk(0));
        assert_eq!(sched.next(0), Next::Chunk(1));
        sched.finish(0, 0, Outcome::Corrupt);
        assert_eq!(sched.next(0), Next::Stop);
        assert_eq!(sched.next(1), Next::Chunk(0));
        // Its request already in flight may still land: the bytes verified.
        sched.finish(0, 1, Outcome::Stored(1));
        let t = sched.tally(0);
        assert!(t.bad && t.corrupt == 1 && t.chunks == 1);
    }

    #[test]
    fn a_store_failure_stops_everything() {
        let mut sched = scheduler(0..3, 2, &[(0, 2)]);
        assert_eq!(sched.next(0), Next::Chunk(0));
        sched.received(0, 0);
        sched.finish(0, 0, Outcome::StoreFailed);
        assert_eq!(sched.next(0), Next::Stop);
        assert!(sched.is_stopped() && !sched.is_done());
        assert_eq!(sched.missing(), vec![0, 1, 2]);
    }

    #[test]
    fn unobtainable_chunks_end_the_fill_and_are_reported() {
        let scripts = [
            Script { holds: 0b0101, ..Script::honest(0, 2) },
            Script { holds: 0b0011, fail_every: 1, ..Script::honest(1, 1) },
            Script { corrupt: Some(3), slowness: 9, ..Script::honest(0, 1) },
            Script { lose_at: Some(1), ..Script::honest(2, 3) },
        ];
        let run = simulate(6, 2, &scripts, None);
        let stored: BTreeSet<u32> = run.stored.iter().map(|&(c, _)| c).collect();
        assert!(stored.contains(&0) && stored.contains(&2), "the reliable source's chunks: {stored:?}");
        assert_eq!(run.missing, (0..6).filter(|c| !stored.contains(c)).collect::<Vec<_>>());
        assert!(run.tallies[3].error.is_some() && run.tallies[3].chunks == 0, "lost at its first request");
        let unusable = Script { holds: 0, ..Script::honest(0, 1) };
        let run = simulate(4, 3, &[unusable], None);
        assert_eq!(run.missing, vec![0, 1, 2, 3]);
        assert_eq!(run.tallies[0].failures, 12, "every chunk tried exactly three times");
    }

    #[test]
    fn a_source_known_unusable_is_never_asked() {
        let mut sched = Scheduler::new(0..2, 2);
        sched.add_source(0, 1, Tally { bad: true, corrupt: 1, ..Tally::default() });
        sched.add_source(0, 1, Tally { error: Some("unreachable".into()), ..Tally::default() });
        assert_eq!(sched.next(0), Next::Stop);
        assert_eq!(sched.next(1), Next::Stop);
        assert_eq!(sched.missing(), vec![0, 1]);
    }
}
