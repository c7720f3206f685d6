//! Which chunk an appliance fetches next, and from whom.
//!
//! Rarest first (among a window of the chunks the appliance lacks, so that a plan's cost does
//! not grow with the title), so that every chunk gets a second copy early and the origin's
//! one copy of each is multiplied by the mesh; nearest source first, so that bytes stay in a
//! site or a region, and within that the source a new upload gets the most bandwidth from;
//! the origin only for chunks nobody has or is fetching, so it sends each about once.

use fillmesh_protocol::messages::{Assignment, Source, MAX_ASSIGNMENTS, MAX_SOURCES};
use fillmesh_protocol::messages::{Registration, Role};

use super::catalog::Catalog;
use super::registry::{Inflight, Registry};
use super::{hash, Config, Millis, Plan, Policy};

/// Candidates (missing chunks) ranked in the first window; each further window, looked at
/// only when the earlier ones did not fill the plan, is four times larger.
const FIRST_BATCH: usize = 64;
/// Sources looked at per tier when a chunk's holders and the free sources both outnumber it.
const EXAMINE: usize = 64;
/// Sources named per assignment: the first and fallbacks should it fail (the protocol allows
/// up to [`MAX_SOURCES`]).
const SOURCES: usize = 4;
/// Free sources a tier is ranked from at most (its best [`SOURCES`] are named).
const RANKED: usize = MAX_SOURCES;
/// A farther tier is looked at only while fewer sources than this were found nearer.
const ENOUGH: usize = 2;

/// Buffers a plan reuses, so that planning allocates little.
#[derive(Debug, Default)]
pub(crate) struct PlanScratch {
    keys: Vec<u128>,
    class: Vec<(u64, u64, u32)>,
    order: Vec<u32>,
}

/// The bytes an appliance registered so may fill: `evict_watermark_pct` of its disk.
pub(super) fn watermark(config: &Config, reg: &Registration) -> u64 {
    u64::try_from(u128::from(reg.disk_bytes) * u128::from(config.evict_watermark_pct) / 100)
        .unwrap_or(u64::MAX)
}

/// What one plan works on: the configuration, the registry and the catalog it reads, whose
/// in-flight counts its assignments and evictions move, and its buffers.
#[derive(Debug)]
pub(super) struct Planner<'a> {
    pub(super) config: &'a Config,
    pub(super) registry: &'a mut Registry,
    pub(super) catalog: &'a mut Catalog,
    pub(super) scratch: &'a mut PlanScratch,
}

impl Planner<'_> {
    /// The next batch of work for appliance `a`: at most `max` assignments, within its
    /// in-flight allowance, and the titles it deletes first to make room for them.
    pub(super) fn plan(&mut self, now: Millis, a: u32, max: usize) -> Plan {
        for t in 0..self.catalog.len() as u32 {
            self.catalog.keep_holder_lists(self.registry, t);
        }
        let slot = &self.registry.slots[a as usize];
        let Some(reg) = slot.registration.as_ref() else { return Plan::default() };
        let Some(live) = slot.live.as_ref() else { return Plan::default() };
        if reg.role != Role::Appliance {
            return Plan::default();
        }
        let watermark = watermark(self.config, reg);
        let room = self.config.max_inflight_per_appliance.saturating_sub(live.inflight.len());
        let mut budget = max.min(room).min(MAX_ASSIGNMENTS);
        let mut plan = Vec::new();
        let mut evict = Vec::new();
        let mut keys = std::mem::take(&mut self.scratch.keys);
        let mut order = std::mem::take(&mut self.scratch.order);
        let tight = self.catalog.title_order(watermark, &mut order);
        for &t in &order {
            if budget == 0 {
                break;
            }
            let title = self.catalog.title(t);
            if title.shape.len() > watermark {
                continue;
            }
            // Titles evicted by this plan are not filled again by it.
            if tight && evict.contains(&title.id) {
                continue;
            }
            let victims = if tight {
                let Some(live) = self.registry.slots[a as usize].live.as_ref() else { continue };
                if title.complete.contains(&a) {
                    Vec::new()
                } else {
                    match self.catalog.victims(self.config, live, now, t, watermark, evict.len()) {
                        Some(v) => v,
                        None => continue,
                    }
                }
            } else {
                Vec::new()
            };
            let planned = plan.len();
            // Rarest first within a window of the chunks `a` lacks, starting at a point of
            // its own (it moves with time): a plan costs about the window, not the title,
            // and different appliances look at different chunks. Only when the window
            // yields too little is the next, larger one looked at.
            let chunks = title.shape.chunk_count();
            if chunks == 0 {
                continue;
            }
            let base = hash::mix(self.registry.slots[a as usize].hash, title.hash);
            let first = (hash::mix(base, now) % u64::from(chunks)) as u32;
            let mut scanned = 0;
            let mut window = FIRST_BATCH;
            while scanned < chunks && budget > 0 {
                self.candidates(a, t, first, &mut scanned, window, &mut keys);
                // Usually the first few candidates get sources: order those, then the rest
                // only if needed.
                let k = (2 * budget).min(keys.len());
                if k > 0 && k < keys.len() {
                    keys.select_nth_unstable(k - 1);
                }
                keys[..k].sort_unstable();
                let mut sorted = k;
                for i in 0..keys.len() {
                    if i == sorted {
                        keys[i..].sort_unstable();
                        sorted = keys.len();
                    }
                    let key = keys[i];
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
                window *= 4;
            }
            // Only a title that got work evicts: one nobody can serve yet would otherwise
            // free room it does not take, and the victims would be filled again meanwhile.
            if plan.len() > planned {
                for u in victims {
                    self.catalog.evict(self.registry, a, u);
                    evict.push(self.catalog.title(u).id);
                }
            }
        }
        self.scratch.keys = keys;
        self.scratch.order = order;
        Plan { assignments: plan, evict }
    }

    /// Up to `want` chunks of title `t` that `a` neither holds nor fetches, looking at chunks
    /// `first + scanned`, `first + scanned + 1`, ... (modulo the chunk count) and advancing
    /// `scanned` past those looked at; keyed so that sorting puts them rarest first, with ties
    /// in an order of `a`'s own.
    fn candidates(&self, a: u32, t: u32, first: u32, scanned: &mut u32, want: usize, keys: &mut Vec<u128>) {
        keys.clear();
        let title = self.catalog.title(t);
        let Some(live) = self.registry.slots[a as usize].live.as_ref() else { return };
        let base = hash::mix(self.registry.slots[a as usize].hash, title.hash);
        let chunks = title.shape.chunk_count();
        let held = live.held.get(&t).map(|m| m.as_bytes());
        while *scanned < chunks && keys.len() < want {
            let c = (first + *scanned) % chunks;
            if let Some(bytes) = held {
                let byte = bytes[(c / 8) as usize];
                if c.is_multiple_of(8) && byte == 0xff && chunks - *scanned >= 8 && chunks - c >= 8 {
                    // Eight held chunks at once.
                    *scanned += 8;
                    continue;
                }
                *scanned += 1;
                if byte & (1 << (c % 8)) != 0 {
                    continue;
                }
            } else {
                *scanned += 1;
            }
            if live.inflight.contains_key(&(t, c)) {
                continue;
            }
            let score = u128::from(title.holders[c as usize]) + u128::from(title.inflight[c as usize]);
            let tie = u128::from(hash::mix(base, u64::from(c)));
            keys.push(score << 96 | tie << 32 | u128::from(c));
        }
    }

    /// False once no source at all could serve `a` anything more, to stop scanning early.
    fn could_assign_any(&self, a: u32, now: Millis) -> bool {
        !self.registry.free.all.is_empty() || self.origin_for(a, now).is_some()
    }

    /// The origin, when it may take one more fetch for `a` (ignoring what the chunk is) and
    /// `a` has not reported it corrupt.
    fn origin_for(&self, a: u32, now: Millis) -> Option<u32> {
        let o = self.registry.origin_ready(self.config, now)?;
        let live = self.registry.slots[a as usize].live.as_ref()?;
        let capped = self.config.policy == Policy::Mesh
            && live.origin_inflight as usize >= self.config.max_origin_inflight_per_appliance;
        (!capped && !self.registry.excludes(a, o)).then_some(o)
    }

    /// The origin as the one source of chunk `c` for `a`, if it may serve it.
    fn origin_source(&self, now: Millis, a: u32, t: u32, c: u32) -> Option<Vec<u32>> {
        let o = self.origin_for(a, now)?;
        self.registry.slots[o as usize].live.as_ref().is_some_and(|l| l.holds(t, c)).then(|| vec![o])
    }

    /// How many of the sources `a` excluded are counted among the holders of chunk `c`.
    fn excluded_holders(&self, a: u32, t: u32, c: u32) -> u32 {
        let slots = &self.registry.slots;
        let excluded = &slots[a as usize].excluded;
        let holds = |&&s: &&u32| slots[s as usize].live.as_ref().is_some_and(|l| l.eligible && l.holds(t, c));
        excluded.iter().filter(holds).count() as u32
    }

    fn assign(&mut self, now: Millis, a: u32, t: u32, c: u32) -> Option<Assignment> {
        let title = self.catalog.title(t);
        let (holders, inflight) = (title.holders[c as usize], title.inflight[c as usize]);
        let sources = if self.config.policy == Policy::OriginOnly || (holders == 0 && inflight == 0) {
            self.origin_source(now, a, t, c)?
        } else if holders > 0 {
            let mut class = std::mem::take(&mut self.scratch.class);
            let sources = self.peer_sources(a, t, c, &mut class);
            self.scratch.class = class;
            // When every holder is one `a` reported corrupt (and nobody fetches the chunk,
            // so no other copy is coming), only the origin can serve `a`: without it `a`
            // would wait until the quorum marks them bad, perhaps forever.
            if sources.is_empty() && inflight == 0 && self.excluded_holders(a, t, c) == holders {
                self.origin_source(now, a, t, c)?
            } else {
                sources
            }
        } else {
            return None;
        };
        let first = *sources.first()?;
        let from_origin = Some(first) == self.registry.origin;
        let slots = &self.registry.slots;
        let assignment = Assignment {
            title: self.catalog.title(t).id,
            chunk: c,
            sources: sources
                .iter()
                .filter_map(|&s| {
                    let reg = slots[s as usize].registration.as_ref()?;
                    Some(Source { node: slots[s as usize].id.clone(), addr: reg.mesh_addr, role: reg.role })
                })
                .collect(),
        };
        let expires = now.saturating_add(self.config.assignment_ttl_ms);
        let fetch = Inflight { source: first, expires, from_origin };
        self.registry.add_inflight(self.catalog, a, t, c, fetch);
        Some(assignment)
    }

    /// Up to [`SOURCES`] free eligible holders of chunk `c`: same site, then same region
    /// (while fewer than [`ENOUGH`] were found), then anywhere (likewise); within each, the
    /// ones a new upload would get the most bandwidth from (upload rate over uploads in
    /// flight plus one) first, then a per-chunk hash.
    ///
    /// A tier's free sources are looked at when they are fewer than its holders of `c` and
    /// at most [`EXAMINE`]; otherwise up to [`EXAMINE`] of its holders, from a hashed
    /// starting point. Either way the looking stops at [`RANKED`] free holders, so an
    /// assignment costs at most a few [`EXAMINE`]s, however many appliances hold the chunk.
    fn peer_sources(&self, a: u32, t: u32, c: u32, class: &mut Vec<(u64, u64, u32)>) -> Vec<u32> {
        let (slots, free_sources) = (&self.registry.slots, &self.registry.free);
        let me = &slots[a as usize];
        let title = self.catalog.title(t);
        let (site, region) = (me.site, me.region);
        let mut out = Vec::new();
        for tier in 0..3 {
            if out.len() >= ENOUGH {
                break;
            }
            class.clear();
            // Kept from the first plan of the title on (`plan`).
            let Some(lists) = &title.lists else { return out };
            let (list, free) = match tier {
                0 => (lists.sites.get(site, c), free_sources.site.get(&site)),
                1 => (lists.regions.get(region, c), free_sources.region.get(&region)),
                _ => (lists.all[c as usize].as_slice(), Some(&free_sources.all)),
            };
            let free_len = free.map_or(0, |f| f.len());
            if list.is_empty() || free_len == 0 {
                continue;
            }
            // Nearer holders belong to an earlier tier; sources `a` reported corrupt to none.
            let this_tier = |s: u32| {
                let slot = &slots[s as usize];
                s != a
                    && !me.excluded.contains(&s)
                    && match tier {
                        0 => true,
                        1 => slot.site != site,
                        _ => slot.region != region,
                    }
            };
            let consider = |class: &mut Vec<(u64, u64, u32)>, s: u32| {
                let slot = &slots[s as usize];
                let rate = slot.weight / u64::from(slot.load + 1);
                let tie = hash::mix(hash::mix(slot.hash, me.hash), u64::from(c));
                class.push((u64::MAX - rate, tie, s));
            };
            match free {
                Some(free) if free_len < list.len() && free_len <= EXAMINE => {
                    for &s in free {
                        if this_tier(s) && slots[s as usize].live.as_ref().is_some_and(|l| l.holds(t, c)) {
                            consider(class, s);
                            if class.len() >= RANKED {
                                break;
                            }
                        }
                    }
                }
                _ => {
                    let h = hash::mix(hash::mix(me.hash, title.hash), u64::from(c));
                    let start = (h % list.len() as u64) as usize;
                    let (tail, head) = list.split_at(start);
                    for &s in head.iter().chain(tail).take(EXAMINE) {
                        if free_sources.flags[s as usize] && this_tier(s) {
                            consider(class, s);
                            if class.len() >= RANKED {
                                break;
                            }
                        }
                    }
                }
            }
            best_first(class, SOURCES - out.len());
            out.extend(class.iter().map(|&(_, _, s)| s).take(SOURCES - out.len()));
        }
        out
    }
}

/// Puts the `k` smallest keys first, in order (the rest in any order): what sorting the
/// whole slice and taking `k` gives, in linear time. Keys are distinct (they end in a node).
fn best_first(class: &mut [(u64, u64, u32)], k: usize) {
    if k == 0 {
        return;
    }
    if class.len() > k {
        class.select_nth_unstable(k - 1);
    }
    let n = class.len().min(k);
    class[..n].sort_unstable();
}
