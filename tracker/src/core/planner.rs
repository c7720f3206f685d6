//! Which chunk an appliance fetches next, and from whom.
//!
//! Rarest first, so that every chunk gets a second copy early and the origin's one copy of
//! each is multiplied by the mesh; nearest source first, so that bytes stay in a site or a
//! region; the origin only for chunks nobody has or is fetching, so it sends each about once.

use fillmesh_protocol::messages::Role;
use fillmesh_protocol::messages::{Assignment, Source, MAX_ASSIGNMENTS, MAX_SOURCES};

use super::{hash, Millis, Policy, Tracker};

/// Candidates ranked per round; more rounds happen only when many candidates have no source.
const FIRST_BATCH: usize = 64;

impl Tracker {
    pub(super) fn do_plan(&mut self, now: Millis, a: u32, max: usize) -> Vec<Assignment> {
        let slot = &self.slots[a as usize];
        let Some(reg) = slot.registration.as_ref() else { return Vec::new() };
        let Some(live) = slot.live.as_ref() else { return Vec::new() };
        if reg.role != Role::Appliance {
            return Vec::new();
        }
        let disk = reg.disk_bytes;
        let room = self.config.max_inflight_per_appliance.saturating_sub(live.inflight.len());
        let mut budget = max.min(room).min(MAX_ASSIGNMENTS);
        let mut plan = Vec::new();
        let mut keys: Vec<u128> = Vec::new();
        for t in 0..self.titles.len() as u32 {
            if budget == 0 {
                break;
            }
            if self.titles[t as usize].manifest.len() > disk {
                continue;
            }
            self.candidates(a, t, &mut keys);
            let mut start = 0;
            let mut batch = FIRST_BATCH;
            while start < keys.len() && budget > 0 {
                let end = (start + batch).min(keys.len());
                let rest = &mut keys[start..];
                if end - start < rest.len() {
                    rest.select_nth_unstable(end - start - 1);
                }
                rest[..end - start].sort_unstable();
                for &key in &keys[start..end] {
                    if budget == 0 {
                        break;
                    }
                    if !self.could_assign_any(a, now) {
                        budget = 0;
                        break;
                    }
                    let chunk = key as u32;
                    if let Some(assignment) = self.assign(now, a, t, chunk) {
                        plan.push(assignment);
                        budget -= 1;
                    }
                }
                start = end;
                batch *= 4;
            }
        }
        plan
    }

    /// The chunks of title `t` that `a` neither holds nor fetches, keyed so that sorting puts
    /// them rarest first, with ties in an order of `a`'s own.
    fn candidates(&self, a: u32, t: u32, keys: &mut Vec<u128>) {
        keys.clear();
        let title = &self.titles[t as usize];
        let Some(live) = self.slots[a as usize].live.as_ref() else { return };
        let base = hash::mix(self.slots[a as usize].hash, title.hash);
        let chunks = title.manifest.chunk_count();
        let held = live.held.get(&t);
        let mut push = |c: u32| {
            if live.inflight.contains_key(&(t, c)) {
                return;
            }
            let score = u128::from(title.holders[c as usize]) + u128::from(title.inflight[c as usize]);
            let tie = u128::from(hash::mix(base, u64::from(c)));
            keys.push(score << 96 | tie << 32 | u128::from(c));
        };
        match held {
            None => (0..chunks).for_each(&mut push),
            Some(map) => {
                for (i, &byte) in map.as_bytes().iter().enumerate() {
                    let mut missing = !byte;
                    while missing != 0 {
                        let bit = missing.trailing_zeros();
                        missing &= missing - 1;
                        let c = i as u32 * 8 + bit;
                        if c < chunks {
                            push(c);
                        }
                    }
                }
            }
        }
    }

    /// False once no source at all could serve `a` anything more, to stop scanning early.
    fn could_assign_any(&self, a: u32, now: Millis) -> bool {
        !self.free_all.is_empty() || self.origin_for(a, now).is_some()
    }

    /// The origin, when it may take one more fetch for `a` (ignoring what the chunk is).
    fn origin_for(&self, a: u32, now: Millis) -> Option<u32> {
        let o = self.origin_ready(now)?;
        let live = self.slots[a as usize].live.as_ref()?;
        let capped = self.config.policy == Policy::Mesh
            && live.origin_inflight as usize >= self.config.max_origin_inflight_per_appliance;
        (!capped).then_some(o)
    }

    fn assign(&mut self, now: Millis, a: u32, t: u32, c: u32) -> Option<Assignment> {
        let title = &self.titles[t as usize];
        let (holders, inflight) = (title.holders[c as usize], title.inflight[c as usize]);
        let sources = if self.config.policy == Policy::OriginOnly || (holders == 0 && inflight == 0) {
            let o = self.origin_for(a, now)?;
            if !self.slots[o as usize].live.as_ref().is_some_and(|l| l.holds(t, c)) {
                return None;
            }
            vec![o]
        } else if holders > 0 {
            self.peer_sources(a, t, c, holders)
        } else {
            return None;
        };
        let first = *sources.first()?;
        let from_origin = Some(first) == self.origin;
        let assignment = Assignment {
            title: self.titles[t as usize].id,
            chunk: c,
            sources: sources
                .iter()
                .filter_map(|&s| {
                    let reg = self.slots[s as usize].registration.as_ref()?;
                    Some(Source {
                        node: self.slots[s as usize].id.clone(),
                        addr: reg.mesh_addr,
                        role: reg.role,
                    })
                })
                .collect(),
        };
        self.add_inflight(a, t, c, first, now, from_origin);
        Some(assignment)
    }

    /// Up to [`MAX_SOURCES`] free eligible holders of chunk `c`: same site, then same region,
    /// then anywhere; within each, more spare slots first, then a per-chunk hash.
    fn peer_sources(&self, a: u32, t: u32, c: u32, holders: u32) -> Vec<u32> {
        let me = &self.slots[a as usize];
        let (site, region) = (me.site, me.region);
        let mut out = Vec::new();
        let mut found = 0u32;
        let mut class: Vec<(u32, u64, u32)> = Vec::new();
        // Every free holder of `c` in each tier is ranked, so walking the chunk's holder
        // list instead of the free sets, when it is the shorter, gives the same sources.
        let list = &self.titles[t as usize].holder_lists[c as usize];
        if list.len() < self.free_all.len() {
            let mut tiers: [Vec<(u32, u64, u32)>; 3] = Default::default();
            for &s in list {
                let slot = &self.slots[s as usize];
                if s == a || !slot.free {
                    continue;
                }
                let tier = if slot.site == site {
                    0
                } else if slot.region == region {
                    1
                } else {
                    2
                };
                let spare = slot.upload_slots - slot.load;
                let tie = hash::mix(hash::mix(slot.hash, me.hash), u64::from(c));
                tiers[tier].push((u32::MAX - spare, tie, s));
            }
            for class in &mut tiers {
                if out.len() >= MAX_SOURCES {
                    break;
                }
                best_first(class, MAX_SOURCES - out.len());
                out.extend(class.iter().map(|&(_, _, s)| s).take(MAX_SOURCES - out.len()));
            }
            return out;
        }
        for tier in 0..3 {
            if out.len() >= MAX_SOURCES || found >= holders {
                break;
            }
            class.clear();
            let set = match tier {
                0 => self.free_site.get(&site),
                1 => self.free_region.get(&region),
                _ => Some(&self.free_all),
            };
            for &s in set.into_iter().flatten() {
                let slot = &self.slots[s as usize];
                let nearer = match tier {
                    0 => false,
                    1 => slot.site == site,
                    _ => slot.region == region,
                };
                if s == a || nearer {
                    continue;
                }
                if !slot.live.as_ref().is_some_and(|l| l.holds(t, c)) {
                    continue;
                }
                found += 1;
                let spare = slot.upload_slots - slot.load;
                let tie = hash::mix(hash::mix(slot.hash, me.hash), u64::from(c));
                class.push((u32::MAX - spare, tie, s));
                if found >= holders {
                    break;
                }
            }
            best_first(&mut class, MAX_SOURCES - out.len());
            out.extend(class.iter().map(|&(_, _, s)| s).take(MAX_SOURCES - out.len()));
        }
        out
    }
}

/// Puts the `k` smallest keys first, in order (the rest in any order): what sorting the
/// whole slice and taking `k` gives, in linear time. Keys are distinct (they end in a node).
fn best_first(class: &mut [(u32, u64, u32)], k: usize) {
    if k == 0 {
        return;
    }
    if class.len() > k {
        class.select_nth_unstable(k - 1);
    }
    let n = class.len().min(k);
    class[..n].sort_unstable();
}
