//! The scheduler driven by simulated parents: its rules checked after every step of random
//! runs, completion wherever the plan makes it possible, and parents that misbehave.

use proptest::prelude::*;

use super::*;

const CLASSES: [SourceClass; 3] = [SourceClass::SameSite, SourceClass::SameRegion, SourceClass::CrossRegion];

fn bitmap(len: u32, set: impl IntoIterator<Item = u32>) -> ChunkBitmap {
    let mut map = ChunkBitmap::new(len).unwrap();
    for c in set {
        map.insert(c);
    }
    map
}

/// A simulated parent: what it really holds, and whether it lies about it.
#[derive(Debug, Clone)]
struct Sim {
    class: SourceClass,
    depth: u32,
    holds: Vec<bool>,
    corrupt: bool,
}

fn sims(chunks: u32) -> impl Strategy<Value = Vec<Sim>> {
    let sim = (
        0..3usize,
        1..4u32,
        proptest::collection::vec(any::<bool>(), chunks as usize),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(class, depth, holds, corrupt)| Sim { class: CLASSES[class], depth, holds, corrupt });
    proptest::collection::vec(sim, 0..6)
}

/// The plan a tracker would make for `parents`: chunks no nearby parent holds come from the
/// other regions when one holds them there, else from the origin.
fn plan(chunks: u32, parents: &[Sim]) -> (Vec<Range<u32>>, Vec<Range<u32>>) {
    let (mut origin, mut import) = (Vec::new(), Vec::new());
    for c in 0..chunks {
        let near =
            parents.iter().any(|p| p.class < SourceClass::CrossRegion && p.holds[c as usize] && !p.corrupt);
        let far =
            parents.iter().any(|p| p.class == SourceClass::CrossRegion && p.holds[c as usize] && !p.corrupt);
        if !near && far {
            import.push(c..c + 1);
        } else if !near {
            origin.push(c..c + 1);
        }
    }
    (origin, import)
}

/// Checks what `next` just handed out against every rule it must keep.
fn check_pick(s: &Swarm, p: usize, c: u32) {
    assert!(!s.holds(c), "chunk {c} is held already");
    let parent = &s.parents[p];
    assert!(parent.dropped.is_none(), "a dropped parent was asked");
    assert!(s.sets.contains(PARENTS + p, c), "parent {p} does not advertise {c}");
    assert!(parent.requests <= parent.depth, "parent {p} over its depth");
    let w = (c / 64) as usize;
    assert!(
        s.allowed(p, w) & (1 << (c % 64)) != 0,
        "{:?} parent asked for {c} outside the plan",
        parent.class
    );
    // Nearest first: no nearer parent with room advertised it (the request just counted);
    // none at all, room or not, when it went to another region or the origin.
    let far = parent.class >= SourceClass::CrossRegion;
    for (q, other) in s.parents.iter().enumerate() {
        if q != p && other.class < parent.class && (far || other.spare()) && s.sets.contains(PARENTS + q, c) {
            assert!(
                s.allowed(q, w) & (1 << (c % 64)) == 0 || !s.attempts_left(c, q),
                "{c} went to a {:?} parent while a {:?} one advertised it",
                parent.class,
                other.class
            );
        }
    }
}

/// Availability is the count of live, non-origin parents advertising each chunk; the held
/// count is that of the held bits.
fn check_counts(s: &Swarm) {
    assert_eq!(s.held_count(), s.sets.count(HELD), "held chunks counted");
    for c in 0..s.chunks {
        let n = s
            .parents
            .iter()
            .enumerate()
            .filter(|(q, p)| {
                p.dropped.is_none() && p.class != SourceClass::Origin && s.sets.contains(PARENTS + q, c)
            })
            .count();
        assert_eq!(usize::from(s.availability(c)), n, "availability of {c}");
        assert_eq!(s.sets.contains(ADVERTISED, c), n > 0);
    }
}

/// Runs the fill to its end the way a driver does: after each change, every parent with room
/// is asked for work; answers come back in a shuffled order. Returns the steps taken.
fn drive(s: &mut Swarm, parents: &[Sim], ids: &[usize], order: &[u8], limit: usize) -> usize {
    let mut inflight: Vec<(usize, u32)> = Vec::new();
    let mut steps = 0;
    let mut k = 0;
    while steps < limit && !s.is_complete() {
        steps += 1;
        for (i, &p) in ids.iter().enumerate() {
            while let Next::Chunk(c) = s.next(p) {
                check_pick(s, p, c);
                inflight.push((i, c));
            }
        }
        if inflight.is_empty() {
            break;
        }
        let pick = usize::from(order[k % order.len()]) % inflight.len();
        k += 1;
        let (i, c) = inflight.swap_remove(pick);
        let sim = parents.get(i);
        let outcome = match sim {
            None => Outcome::Stored(1),
            Some(sim) if sim.corrupt => Outcome::Corrupt,
            Some(sim) if sim.holds[c as usize] => Outcome::Stored(1),
            Some(_) => Outcome::NotHeld,
        };
        s.finish(ids[i], c, outcome);
        check_counts(s);
    }
    steps
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Where the plan covers every chunk (nearby parents, importable from other regions, or
    /// the origin), the fill completes, keeps every rule at every step, takes from the origin
    /// only its origin chunks, and from other regions only its imports.
    #[test]
    fn a_fill_the_plan_covers_completes_and_keeps_every_rule(
        chunks in 1..200u32,
        parents in sims(200),
        held in proptest::collection::vec(any::<bool>(), 200),
        order in proptest::collection::vec(any::<u8>(), 1..64),
        seed in any::<u64>(),
        first in proptest::collection::vec(0..220u32, 0..20),
    ) {
        let parents: Vec<Sim> = parents.into_iter().map(|mut p| { p.holds.truncate(chunks as usize); p }).collect();
        let held = bitmap(chunks, (0..chunks).filter(|&c| held[c as usize]));
        let mut s = Swarm::new(Config::default(), &held, seed);
        let (origin, import) = plan(chunks, &parents);
        s.set_plan(&origin, &import);
        // A start-of-playback list (some past the end) changes the order, never the rules.
        s.set_first(&first);
        let mut ids = Vec::new();
        for sim in &parents {
            let p = s.add_parent(sim.class, sim.depth);
            let adv = bitmap(chunks, (0..chunks).filter(|&c| sim.holds[c as usize]));
            s.advertise(p, &adv).unwrap();
            ids.push(p);
        }
        let o = s.add_parent(SourceClass::Origin, 2);
        ids.push(o);
        check_counts(&s);
        let steps = drive(&mut s, &parents, &ids, &order, 20 * chunks as usize + 100);
        prop_assert!(s.is_complete(), "incomplete after {} steps: {}/{}", steps, s.held_count(), chunks);
        let by_class = s.bytes_by_class();
        let origin_chunks: u64 = origin.iter().map(|r| u64::from(r.end - r.start)).sum();
        prop_assert!(by_class[SourceClass::Origin as usize] <= origin_chunks);
        // A corrupt parent's chunk is re-planned nowhere (the simulated plan skipped liars),
        // so every import came from an honest parent in another region.
        let imports: u64 = import.iter().map(|r| u64::from(r.end - r.start)).sum();
        prop_assert!(by_class[SourceClass::CrossRegion as usize] <= imports);
        for (i, sim) in parents.iter().enumerate() {
            if sim.corrupt {
                prop_assert!(s.tally(ids[i]).chunks == 0);
            }
        }
    }

    /// With a stale plan, the origin is asked for what no parent advertises and the fill
    /// still completes, whatever the (empty) plan said.
    #[test]
    fn an_escalated_fill_completes_from_any_parent_and_the_origin(
        chunks in 1..200u32,
        parents in sims(200),
        order in proptest::collection::vec(any::<u8>(), 1..64),
        seed in any::<u64>(),
    ) {
        let parents: Vec<Sim> = parents.into_iter().map(|mut p| { p.holds.truncate(chunks as usize); p }).collect();
        let mut s = Swarm::new(Config::default(), &ChunkBitmap::new(chunks).unwrap(), seed);
        s.escalate(true);
        let mut ids = Vec::new();
        for sim in &parents {
            let p = s.add_parent(sim.class, sim.depth);
            s.advertise(p, &bitmap(chunks, (0..chunks).filter(|&c| sim.holds[c as usize]))).unwrap();
            ids.push(p);
        }
        ids.push(s.add_parent(SourceClass::Origin, 1));
        drive(&mut s, &parents, &ids, &order, 20 * chunks as usize + 100);
        prop_assert!(s.is_complete());
    }

    /// One parent alone: each pick is the rarest of the chunks it may be asked for.
    #[test]
    fn the_rarest_chunk_a_parent_advertises_is_asked_first(
        chunks in 1..120u32,
        others in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 120), 0..5),
        seed in any::<u64>(),
    ) {
        let mut s = Swarm::new(Config { window: 1024, ..Config::default() }, &ChunkBitmap::new(chunks).unwrap(), seed);
        let p = s.add_parent(SourceClass::SameSite, 1);
        s.advertise(p, &ChunkBitmap::full(chunks).unwrap()).unwrap();
        // Other parents with no room (depth 1, one request each) make some chunks common.
        for holds in &others {
            let q = s.add_parent(SourceClass::SameSite, 1);
            s.advertise(q, &bitmap(chunks, (0..chunks).filter(|&c| holds[c as usize]))).unwrap();
        }
        let taken_by_others: Vec<u32> = (1..s.parent_count()).filter_map(|q| match s.next(q) { Next::Chunk(c) => Some(c), _ => None }).collect();
        if let Next::Chunk(c) = s.next(p) {
            let rarest = (0..chunks)
                .filter(|c| !taken_by_others.contains(c))
                .map(|c| s.availability(c))
                .min()
                .unwrap();
            prop_assert_eq!(s.availability(c), rarest);
        }
    }
}

#[test]
fn a_parent_flooding_haves_is_dropped_and_its_chunks_stop_counting() {
    let mut s = Swarm::new(Config::default(), &ChunkBitmap::new(4).unwrap(), 1);
    let honest = s.add_parent(SourceClass::SameSite, 1);
    s.advertise(honest, &bitmap(4, [0])).unwrap();
    let p = s.add_parent(SourceClass::SameSite, 1);
    for _ in 0..4 {
        s.have(p, 1).unwrap();
    }
    assert_eq!(s.availability(1), 1);
    assert_eq!(s.have(p, 1), Err(Dropped::Flooded));
    assert_eq!(s.availability(1), 0);
    assert_eq!(s.availability(0), 1, "another parent's chunks still count");
    assert_eq!(s.next(p), Next::Stop);
    assert_eq!(s.next(honest), Next::Chunk(0));
}

#[test]
fn a_have_is_news_only_for_a_chunk_wanted_here_and_not_yet_advertised_and_every_have_counts_toward_a_flood() {
    let mut s = Swarm::new(Config::default(), &bitmap(4, [0]), 1);
    let p = s.add_parent(SourceClass::SameSite, 1);
    assert_eq!(s.have(p, 0), Ok(false), "chunk 0 is held here");
    assert_eq!(s.availability(0), 0, "a held chunk is not counted");
    assert_eq!(s.have(p, 1), Ok(true));
    assert_eq!(s.have(p, 1), Ok(false), "already advertised");
    assert_eq!(s.availability(1), 1);
    check_counts(&s);
    assert_eq!(s.have(p, 2), Ok(true));
    // Four HAVEs so far, for a title of four chunks: one more is a flood, held chunk or not.
    assert_eq!(s.have(p, 0), Err(Dropped::Flooded));
    assert_eq!((s.availability(1), s.availability(2)), (0, 0));
    // A bitmap counts only what is not held here.
    let q = s.add_parent(SourceClass::SameSite, 1);
    s.advertise(q, &ChunkBitmap::full(4).unwrap()).unwrap();
    assert_eq!((s.availability(0), s.availability(1), s.availability(3)), (0, 1, 1));
    check_counts(&s);
}

#[test]
fn a_have_past_the_end_or_a_bitmap_of_another_length_drops_the_parent() {
    let mut s = Swarm::new(Config::default(), &ChunkBitmap::new(8).unwrap(), 1);
    let p = s.add_parent(SourceClass::SameRegion, 1);
    s.advertise(p, &bitmap(8, [2, 3])).unwrap();
    assert_eq!(s.have(p, 8), Err(Dropped::OutOfRange(8)));
    assert_eq!((s.availability(2), s.next(p)), (0, Next::Stop));
    let q = s.add_parent(SourceClass::SameRegion, 1);
    let long = ChunkBitmap::full(4096).unwrap();
    assert_eq!(s.advertise(q, &long), Err(Dropped::BitmapLength { got: 4096, expected: 8 }));
    assert!((0..8).all(|c| s.availability(c) == 0));
}

#[test]
fn a_parent_that_advertises_what_it_does_not_serve_is_dropped_after_the_limit() {
    let config = Config { not_held_limit: 3, ..Config::default() };
    let mut s = Swarm::new(config, &ChunkBitmap::new(16).unwrap(), 7);
    let p = s.add_parent(SourceClass::SameSite, 1);
    s.advertise(p, &ChunkBitmap::full(16).unwrap()).unwrap();
    let mut dropped = None;
    for _ in 0..3 {
        let Next::Chunk(c) = s.next(p) else { panic!("no chunk asked") };
        dropped = s.finish(p, c, Outcome::NotHeld);
    }
    assert_eq!(dropped, Some(Dropped::Lied));
    assert_eq!(s.next(p), Next::Stop);
    assert!((0..16).all(|c| s.availability(c) == 0));
}

#[test]
fn a_corrupt_chunk_drops_its_parent_and_goes_to_another() {
    let mut s = Swarm::new(Config::default(), &ChunkBitmap::new(1).unwrap(), 3);
    let bad = s.add_parent(SourceClass::SameSite, 1);
    let good = s.add_parent(SourceClass::SameRegion, 1);
    s.advertise(bad, &bitmap(1, [0])).unwrap();
    s.advertise(good, &bitmap(1, [0])).unwrap();
    // The nearer parent has room: the farther one waits.
    assert_eq!(s.next(good), Next::Wait);
    assert_eq!(s.next(bad), Next::Chunk(0));
    assert_eq!(s.finish(bad, 0, Outcome::Corrupt), Some(Dropped::Corrupt));
    assert_eq!(s.next(good), Next::Chunk(0));
    s.finish(good, 0, Outcome::Stored(10));
    assert!(s.is_complete());
    assert_eq!(s.take_gained(), vec![0]);
    assert_eq!(s.bytes_by_class(), [0, 10, 0, 0]);
}

#[test]
fn other_regions_and_the_origin_are_asked_only_for_planned_chunks_until_escalation() {
    let mut s = Swarm::new(Config::default(), &ChunkBitmap::new(3).unwrap(), 5);
    let (origin, import) = ([Range { start: 2, end: 3 }], [Range { start: 1, end: 2 }]);
    s.set_plan(&origin, &import);
    let far = s.add_parent(SourceClass::CrossRegion, 4);
    s.advertise(far, &ChunkBitmap::full(3).unwrap()).unwrap();
    let origin = s.add_parent(SourceClass::Origin, 4);
    assert_eq!(s.next(far), Next::Chunk(1));
    assert_eq!(s.next(far), Next::Wait, "chunk 0 is not an import");
    assert_eq!(s.next(origin), Next::Chunk(2));
    assert_eq!(s.next(origin), Next::Wait);
    s.escalate(true);
    assert_eq!(s.next(far), Next::Chunk(0));
}

#[test]
fn another_region_and_the_origin_wait_for_a_busy_nearby_parent_that_advertises_the_chunk() {
    let mut s = Swarm::new(Config::default(), &ChunkBitmap::new(2).unwrap(), 9);
    let all = [Range { start: 0, end: 2 }];
    s.set_plan(&all, &all);
    let near = s.add_parent(SourceClass::SameRegion, 1);
    s.advertise(near, &ChunkBitmap::full(2).unwrap()).unwrap();
    let far = s.add_parent(SourceClass::CrossRegion, 4);
    s.advertise(far, &bitmap(2, [1])).unwrap();
    let origin = s.add_parent(SourceClass::Origin, 4);
    let Next::Chunk(first) = s.next(near) else { panic!("the nearby parent is asked first") };
    // The nearby parent is busy with one chunk and advertises the other.
    assert_eq!(s.next(far), Next::Wait);
    assert_eq!(s.next(origin), Next::Wait);
    // Gone: the other region brings what it advertises, the origin the rest.
    s.remove_parent(near);
    s.finish(near, first, Outcome::Lost);
    assert_eq!(s.next(origin), Next::Chunk(0));
    assert_eq!(s.next(far), Next::Chunk(1));
}

#[test]
fn sets_stored_word_by_word_keep_their_bits_when_a_set_is_added() {
    let mut s = bits::Sets::new(130, 2);
    for i in [0, 63, 64, 129] {
        assert!(s.insert(1, i));
    }
    assert!(!s.insert(1, 130), "past the end");
    let added = s.add();
    assert_eq!(added, 2);
    assert!(s.insert(added, 5));
    for i in [0, 63, 64, 129] {
        assert!(s.contains(1, i) && !s.contains(0, i) && !s.contains(added, i));
    }
    assert_eq!((s.count(0), s.count(1), s.count(added)), (0, 4, 1));
    assert!(s.remove(1, 64) && !s.contains(1, 64));
    assert_eq!(s.take_word(1, 0), (1 << 63) | 1);
    assert_eq!(s.count(1), 1);
}

/// One step on [`bits::Sets`]: the set (taken modulo the sets there are) and the bit.
#[derive(Debug, Clone)]
enum SetOp {
    Insert(usize, u32),
    Remove(usize, u32),
    Add,
    RemoveAll(usize, usize),
    TakeWord(usize, usize),
}

fn set_ops(len: u32) -> impl Strategy<Value = Vec<SetOp>> {
    let bit = 0..len + 2;
    let op = prop_oneof![
        4 => (any::<usize>(), bit.clone()).prop_map(|(s, i)| SetOp::Insert(s, i)),
        2 => (any::<usize>(), bit).prop_map(|(s, i)| SetOp::Remove(s, i)),
        1 => Just(SetOp::Add),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(s, o)| SetOp::RemoveAll(s, o)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(s, w)| SetOp::TakeWord(s, w)),
    ];
    proptest::collection::vec(op, 0..200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The sets stored word by word behave as that many independent sets (a model of one
    /// `BTreeSet` each), whatever is inserted, removed, added, cleared word by word or
    /// subtracted, and bits past the end are never set.
    #[test]
    fn sets_word_by_word_behave_as_independent_sets(len in 1..200u32, width in 1..4usize, ops in set_ops(200)) {
        let mut sets = bits::Sets::new(len, width);
        let mut model: Vec<std::collections::BTreeSet<u32>> = vec![Default::default(); width];
        for op in ops {
            let n = model.len();
            match op {
                SetOp::Insert(s, i) => {
                    let (s, news) = (s % n, i < len && !model[s % n].contains(&i));
                    prop_assert_eq!(sets.insert(s, i), news);
                    if i < len {
                        model[s].insert(i);
                    }
                }
                SetOp::Remove(s, i) => {
                    prop_assert_eq!(sets.remove(s % n, i), model[s % n].remove(&i));
                }
                SetOp::Add => {
                    prop_assert_eq!(sets.add(), n);
                    model.push(Default::default());
                }
                SetOp::RemoveAll(s, o) => {
                    let (s, o) = (s % n, o % n);
                    sets.remove_all(s, o);
                    let other = model[o].clone();
                    model[s].retain(|i| !other.contains(i));
                }
                SetOp::TakeWord(s, w) => {
                    let (s, w) = (s % n, w % sets.word_count());
                    let range = w as u32 * 64..(w as u32 * 64 + 64).min(len);
                    let expected = model[s].range(range.clone()).fold(0u64, |acc, i| acc | 1 << (i % 64));
                    prop_assert_eq!(sets.take_word(s, w), expected);
                    model[s].retain(|i| !range.contains(i));
                }
            }
            for (s, m) in model.iter().enumerate() {
                prop_assert_eq!(sets.count(s), m.len() as u32);
                for i in 0..len + 2 {
                    prop_assert_eq!(sets.contains(s, i), m.contains(&i), "set {} bit {}", s, i);
                }
            }
        }
    }
}

#[test]
fn the_start_of_playback_is_asked_for_first_in_order() {
    let chunks = 200;
    let held = ChunkBitmap::new(chunks).unwrap();
    let mut s = Swarm::new(Config { depth: 1, inflight: 16, ..Config::default() }, &held, 7);
    s.set_first(&[150, 3, 999, 77]);
    let a = s.add_parent(SourceClass::SameSite, 1);
    s.advertise(a, &bitmap(chunks, 0..chunks)).unwrap();
    let mut order = Vec::new();
    for _ in 0..3 {
        let Next::Chunk(c) = s.next(a) else { panic!("nothing to ask for") };
        order.push(c);
        s.received(a, c);
        s.finish(a, c, Outcome::Stored(1024));
    }
    assert_eq!(order, [150, 3, 77], "the first chunks in the order given, past the end ignored");
    // Then rarest first as before: anything not yet held.
    let Next::Chunk(c) = s.next(a) else { panic!("nothing to ask for") };
    assert!(![150, 3, 77].contains(&c));
}

#[test]
fn a_first_chunk_a_parent_lacks_waits_for_one_that_has_it() {
    let chunks = 64;
    let held = ChunkBitmap::new(chunks).unwrap();
    let mut s = Swarm::new(Config::default(), &held, 1);
    s.set_first(&[5]);
    let a = s.add_parent(SourceClass::SameSite, 1);
    s.advertise(a, &bitmap(chunks, [9])).unwrap();
    assert_eq!(s.next(a), Next::Chunk(9), "a parent without the first chunk is asked for what it has");
}

#[test]
fn small_chunks_get_more_requests_in_flight_for_the_same_bytes() {
    let c = Config::default();
    assert_eq!(c.for_chunks(1 << 20), c, "1 MiB chunks: as measured");
    assert_eq!(c.for_chunks(4 << 20), c, "larger chunks: never fewer");
    let small = c.for_chunks(210_000);
    assert_eq!((small.depth, small.inflight), (c.depth * 4, c.inflight * 4));
    let tiny = c.for_chunks(1024);
    assert_eq!((tiny.depth, tiny.inflight), (c.depth * 16, c.inflight * 16), "capped");
    assert_eq!(c.for_chunks(0), tiny);
}
