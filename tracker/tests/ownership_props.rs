//! Title ownership over several trackers (rendezvous hashing): every title has exactly one
//! owner among the live trackers, every tracker agrees on it, and a tracker leaving moves
//! only its own titles.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::{node, registration, shape, title};
use fillmesh_protocol::messages::Role;
use fillmesh_protocol::ChunkBitmap;

use fillmesh_protocol::ownership::owner;
use fillmesh_protocol::{NodeId, TitleId};
use fillmesh_tracker::core::fleet::TrackerInfo;
use fillmesh_tracker::core::{Config, Tracker};
use proptest::prelude::*;

/// Base58 ids: "T" and a distinct suffix per index.
fn tracker_id(i: u8) -> NodeId {
    const DIGITS: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let a = DIGITS[usize::from(i) % DIGITS.len()];
    let b = DIGITS[usize::from(i) / DIGITS.len()];
    format!("T{}{}", char::from(b), char::from(a)).parse().unwrap()
}

fn info(id: &NodeId, i: u16) -> TrackerInfo {
    TrackerInfo {
        peer_id: id.clone(),
        addr: SocketAddr::from(([127, 0, 0, 1], 4400 + i)),
        http: SocketAddr::from(([127, 0, 0, 1], 8000 + i)),
        admin: None,
    }
}

fn scenario() -> impl Strategy<Value = (Vec<u8>, Vec<[u8; 32]>, usize)> {
    (
        proptest::collection::btree_set(any::<u8>(), 1..12).prop_map(|s| s.into_iter().collect::<Vec<_>>()),
        proptest::collection::vec(any::<[u8; 32]>(), 1..64),
        any::<usize>(),
    )
}

proptest! {
    #[test]
    fn every_title_has_exactly_one_owner_and_a_leaving_tracker_moves_only_its_titles(
        (trackers, titles, leaver) in scenario()
    ) {
        let live: Vec<NodeId> = trackers.iter().map(|&i| tracker_id(i)).collect();
        // Each tracker's core, told the same live set (in its own order), owns what the pure
        // function says and nothing else: exactly one core owns each title.
        let mut cores: Vec<Tracker> = Vec::new();
        for (k, me) in live.iter().enumerate() {
            let mut core = Tracker::new(Config::default());
            let mut set: Vec<TrackerInfo> =
                live.iter().enumerate().map(|(i, id)| info(id, i as u16)).collect();
            set.rotate_left(k);
            core.set_fleet(me.clone(), set);
            cores.push(core);
        }
        let gone = &live[leaver % live.len()];
        let rest: Vec<NodeId> = live.iter().filter(|id| *id != gone).cloned().collect();
        for bytes in &titles {
            let title = TitleId::from_bytes(*bytes);
            let o = owner(&title, &live).unwrap();
            prop_assert!(live.contains(o));
            let owning: Vec<&NodeId> =
                live.iter().zip(&cores).filter(|(_, c)| c.owns(&title)).map(|(id, _)| id).collect();
            prop_assert_eq!(owning, vec![o]);
            for core in &cores {
                prop_assert_eq!(core.owner(&title), Some(o));
            }
            // The order the set is given in does not matter.
            let reversed: Vec<NodeId> = live.iter().rev().cloned().collect();
            prop_assert_eq!(owner(&title, &reversed), Some(o));
            // Removing a tracker moves only the titles it owned.
            match owner(&title, &rest) {
                None => prop_assert!(rest.is_empty()),
                Some(after) if o != gone => prop_assert_eq!(after, o),
                Some(after) => prop_assert!(after != gone),
            }
        }
    }
}

#[test]
fn a_tracker_without_a_fleet_owns_everything() {
    let core = Tracker::new(Config::default());
    let title = TitleId::from_bytes([3; 32]);
    assert!(core.owns(&title));
    assert_eq!(core.owner(&title), None);
}

#[test]
fn a_tracker_that_comes_back_takes_its_titles_back_and_the_epoch_moves_each_time() {
    let live: Vec<NodeId> = (0..3).map(tracker_id).collect();
    let all: Vec<TrackerInfo> = live.iter().enumerate().map(|(i, id)| info(id, i as u16)).collect();
    let mut core = Tracker::new(Config::default());
    core.set_fleet(live[0].clone(), all.clone());
    let titles: Vec<TitleId> = (0..32u8).map(|i| TitleId::from_bytes([i; 32])).collect();
    let before: Vec<Option<NodeId>> = titles.iter().map(|t| core.owner(t).cloned()).collect();
    let epoch = core.epoch();
    core.set_fleet(live[0].clone(), all[..2].to_vec());
    assert!(core.epoch() > epoch);
    assert!(titles.iter().all(|t| core.owner(t) != Some(&live[2])));
    let status = core.status(0);
    assert_eq!(status.trackers.len(), 3, "a tracker seen once stays listed");
    assert_eq!(status.trackers.iter().filter(|t| t.live).count(), 2);
    let epoch = core.epoch();
    core.set_fleet(live[0].clone(), all.clone());
    assert!(core.epoch() > epoch);
    let after: Vec<Option<NodeId>> = titles.iter().map(|t| core.owner(t).cloned()).collect();
    assert_eq!(before, after);
    // The same set again changes nothing.
    let epoch = core.epoch();
    core.set_fleet(live[0].clone(), all);
    assert_eq!(core.epoch(), epoch);
}

proptest! {
    /// A title that changes owner keeps its layout: two trackers that heard of the same
    /// fleet in different orders (one restarted, reading its registry back) give every
    /// appliance the same plan (origin slice, imports, parents), so no chunk is taken from the
    /// origin twice.
    #[test]
    fn trackers_that_met_the_fleet_in_another_order_lay_a_title_out_alike(
        regions in proptest::collection::vec(0usize..4, 2..12),
        order in any::<u64>(),
        chunks in 1u32..200,
    ) {
        let appliances: Vec<(usize, usize)> = regions.iter().enumerate().map(|(i, &r)| (i, r)).collect();
        let mut shuffled = appliances.clone();
        // A deterministic shuffle from `order`.
        let mut x = order | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let t = title(0);
        let mut trackers = Vec::new();
        for fleet in [&appliances, &shuffled] {
            let mut core = Tracker::new(Config::default());
            core.register(0, node(100), registration(Role::Origin, 100, 9, 0, 1_000_000_000, u64::MAX));
            for &(i, r) in fleet.iter() {
                core.register(0, node(i), registration(Role::Appliance, i, r, i, 100_000_000, u64::MAX));
            }
            core.publish(0, t, "x".into(), &shape(chunks, 0)).unwrap();
            core.report_held(0, &node(100), t, ChunkBitmap::full(chunks).unwrap(), &[]).unwrap();
            trackers.push(core);
        }
        for &(i, _) in &appliances {
            let a = trackers[0].fill_plan(0, &node(i), &t).unwrap();
            let b = trackers[1].fill_plan(0, &node(i), &t).unwrap();
            prop_assert_eq!(&a.origin, &b.origin);
            prop_assert_eq!(&a.import, &b.import);
            // The same parents (ties in distance may come in another order).
            let set = |p: &[fillmesh_protocol::messages::Parent]| {
                let mut v: Vec<String> = p.iter().map(|p| format!("{} {:?}", p.node, p.class)).collect();
                v.sort();
                v
            };
            prop_assert_eq!(set(&a.parents), set(&b.parents));
        }
    }
}
