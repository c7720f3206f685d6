//! Which chunk an appliance fetches next, and from whom.
//!
//! Rarest first (among a window of the chunks the appliance lacks, so that a plan's cost does
//! not grow with the title), so that every chunk gets a second copy early and the origin's
//! one copy of each is multiplied by the mesh; nearest source first, so that bytes stay in a
//! site or a region, and within that the source a new upload gets the most bandwidth from;
//! the origin only for chunks nobody has or is fetching, so it sends each about once.

use fillmesh_protocol::messages::{Assignment, Source, MAX_ASSIGNMENTS, MAX_EVICT, MAX_SOURCES};
use fillmesh_protocol::messages::{Registration, Role};

use super::{hash, Millis, Plan, Policy, Tracker};

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

impl Tracker {
    pub(super) fn do_plan(&mut self, now: Millis, a: u32, max: usize) -> Plan {
        for t in 0..self.titles.len() as u32 {
            self.keep_holder_lists(t);
        }
        let slot = &self.slots[a as usize];
        let Some(reg) = slot.registration.as_ref() else { return Plan::default() };
        let Some(live) = slot.live.as_ref() else { return Plan::default() };
        if reg.role != Role::Appliance {
            return Plan::default();
        }
        let watermark = self.watermark(reg);
        let room = self.config.max_inflight_per_appliance.saturating_sub(live.inflight.len());
        let mut budget = max.min(room).min(MAX_ASSIGNMENTS);
        let mut plan = Vec::new();
        let mut evict = Vec::new();
        let mut keys = std::mem::take(&mut self.scratch.keys);
        let mut order = std::mem::take(&mut self.scratch.order);
        let tight = self.title_order(watermark, &mut order);
        for &t in &order {
            if budget == 0 {
                break;
            }
            if self.titles[t as usize].manifest.len() > watermark {
                continue;
            }
            // Titles evicted by this plan are not filled again by it.
            if tight && evict.contains(&self.titles[t as usize].id) {
                continue;
            }
            let victims = if tight {
                match self.victims(now, a, t, watermark, evict.len()) {
                    Some(v) => v,
                    None => continue,
                }
            } else {
                Vec::new()
            };
            let planned = plan.len();
            // Rarest first within a window of the chunks `a` lacks, starting at a point of
            // its own (it moves with time): a plan costs about the window, not the title,
            // and different appliances look at different chunks. Only when the window
            // yields too little is the next, larger one looked at.
            let chunks = self.titles[t as usize].manifest.chunk_count();
            if chunks == 0 {
                continue;
            }
            let base = hash::mix(self.slots[a as usize].hash, self.titles[t as usize].hash);
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
                    self.evict_title(a, u);
                    evict.push(self.titles[u as usize].id);
                }
            }
        }
        self.scratch.keys = keys;
        self.scratch.order = order;
        Plan { assignments: plan, evict }
    }

    /// The bytes an appliance registered so may fill: `evict_watermark_pct` of its disk.
    pub(super) fn watermark(&self, reg: &Registration) -> u64 {
        u64::try_from(u128::from(reg.disk_bytes) * u128::from(self.config.evict_watermark_pct) / 100)
            .unwrap_or(u64::MAX)
    }

    /// Every title into `order`, in the order plans and fills look at them for an appliance
    /// that may fill `watermark` bytes; returns whether the catalog does not fit (tight).
    /// When the whole catalog fits (the usual case) titles are looked at in publish order and
    /// nothing is weighed. Otherwise the most recently wanted come first, so a title is never
    /// evicted by one planned later in the same call (victims are strictly older than the
    /// title they make room for).
    pub(super) fn title_order(&self, watermark: u64, order: &mut Vec<u32>) -> bool {
        order.clear();
        order.extend(0..self.titles.len() as u32);
        let tight = self.catalog_bytes > watermark;
        if tight {
            order.sort_unstable_by_key(|&t| (std::cmp::Reverse(self.titles[t as usize].last_wanted), t));
        }
        tight
    }

    /// The titles `a` must evict to fill title `t` under `watermark` (none when it fits), or
    /// `None` when `t` may not be filled. Every title `a` holds or fetches any chunk of counts
    /// at its whole length (the planner will finish it), so two titles filling at once cannot
    /// each see room the other takes. Victims are titles other than `t` wanted strictly less
    /// recently than `t` and not steered to within `Config::evict_min_idle_ms`, oldest first;
    /// when they cannot make room (within [`MAX_EVICT`] per
    /// plan, `evicted` being taken already), `t` is not filled and nothing is evicted.
    pub(super) fn victims(
        &self,
        now: Millis,
        a: u32,
        t: u32,
        watermark: u64,
        evicted: usize,
    ) -> Option<Vec<u32>> {
        let live = self.slots[a as usize].live.as_ref()?;
        let len = |u: u32| self.titles[u as usize].manifest.len();
        if self.titles[t as usize].complete.contains(&a) {
            return Some(Vec::new());
        }
        let mut touched: Vec<u32> =
            live.held.iter().filter(|&(&u, map)| u != t && map.count() > 0).map(|(&u, _)| u).collect();
        touched.extend(live.inflight.keys().map(|&(u, _)| u).filter(|&u| u != t));
        touched.extend(live.filling.iter().copied().filter(|&u| u != t));
        touched.sort_unstable();
        touched.dedup();
        let committed = touched.iter().fold(len(t), |sum, &u| sum.saturating_add(len(u)));
        let Some(need) = committed.checked_sub(watermark).filter(|&n| n > 0) else { return Some(Vec::new()) };
        let wanted = self.titles[t as usize].last_wanted;
        let idle = self.config.evict_min_idle_ms;
        touched.retain(|&u| {
            let title = &self.titles[u as usize];
            title.last_wanted < wanted && title.last_steered.is_none_or(|s| now.saturating_sub(s) >= idle)
        });
        touched.sort_unstable_by_key(|&u| (self.titles[u as usize].last_wanted, u));
        let (mut freed, mut victims) = (0u64, 0);
        while freed < need && victims < touched.len() {
            freed = freed.saturating_add(len(touched[victims]));
            victims += 1;
        }
        if freed < need || evicted + victims > MAX_EVICT {
            return None;
        }
        touched.truncate(victims);
        Some(touched)
    }

    /// Up to `want` chunks of title `t` that `a` neither holds nor fetches, looking at chunks
    /// `first + scanned`, `first + scanned + 1`, ... (modulo the chunk count) and advancing
    /// `scanned` past those looked at; keyed so that sorting puts them rarest first, with ties
    /// in an order of `a`'s own.
    fn candidates(&self, a: u32, t: u32, first: u32, scanned: &mut u32, want: usize, keys: &mut Vec<u128>) {
        keys.clear();
        let title = &self.titles[t as usize];
        let Some(live) = self.slots[a as usize].live.as_ref() else { return };
        let base = hash::mix(self.slots[a as usize].hash, title.hash);
        let chunks = title.manifest.chunk_count();
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
        !self.free_all.is_empty() || self.origin_for(a, now).is_some()
    }

    /// The origin, when it may take one more fetch for `a` (ignoring what the chunk is) and
    /// `a` has not reported it corrupt.
    fn origin_for(&self, a: u32, now: Millis) -> Option<u32> {
        let o = self.origin_ready(now)?;
        let live = self.slots[a as usize].live.as_ref()?;
        let capped = self.config.policy == Policy::Mesh
            && live.origin_inflight as usize >= self.config.max_origin_inflight_per_appliance;
        (!capped && !self.excludes(a, o)).then_some(o)
    }

    /// The origin as the one source of chunk `c` for `a`, if it may serve it.
    fn origin_source(&self, now: Millis, a: u32, t: u32, c: u32) -> Option<Vec<u32>> {
        let o = self.origin_for(a, now)?;
        self.slots[o as usize].live.as_ref().is_some_and(|l| l.holds(t, c)).then(|| vec![o])
    }

    /// How many of the sources `a` excluded are counted among the holders of chunk `c`.
    fn excluded_holders(&self, a: u32, t: u32, c: u32) -> u32 {
        let excluded = &self.slots[a as usize].excluded;
        let holds =
            |&&s: &&u32| self.slots[s as usize].live.as_ref().is_some_and(|l| l.eligible && l.holds(t, c));
        excluded.iter().filter(holds).count() as u32
    }

    fn assign(&mut self, now: Millis, a: u32, t: u32, c: u32) -> Option<Assignment> {
        let title = &self.titles[t as usize];
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
        let me = &self.slots[a as usize];
        let title = &self.titles[t as usize];
        let (site, region) = (me.site, me.region);
        let mut out = Vec::new();
        for tier in 0..3 {
            if out.len() >= ENOUGH {
                break;
            }
            class.clear();
            // Kept from the first plan of the title on (`do_plan`).
            let Some(lists) = &title.lists else { return out };
            let (list, free) = match tier {
                0 => (lists.sites.get(site, c), self.free_site.get(&site)),
                1 => (lists.regions.get(region, c), self.free_region.get(&region)),
                _ => (lists.all[c as usize].as_slice(), Some(&self.free_all)),
            };
            let free_len = free.map_or(0, |f| f.len());
            if list.is_empty() || free_len == 0 {
                continue;
            }
            // Nearer holders belong to an earlier tier; sources `a` reported corrupt to none.
            let this_tier = |s: u32| {
                let slot = &self.slots[s as usize];
                s != a
                    && !me.excluded.contains(&s)
                    && match tier {
                        0 => true,
                        1 => slot.site != site,
                        _ => slot.region != region,
                    }
            };
            let consider = |class: &mut Vec<(u64, u64, u32)>, s: u32| {
                let slot = &self.slots[s as usize];
                let rate = slot.weight / u64::from(slot.load + 1);
                let tie = hash::mix(hash::mix(slot.hash, me.hash), u64::from(c));
                class.push((u64::MAX - rate, tie, s));
            };
            match free {
                Some(free) if free_len < list.len() && free_len <= EXAMINE => {
                    for &s in free {
                        if this_tier(s) && self.slots[s as usize].live.as_ref().is_some_and(|l| l.holds(t, c))
                        {
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
                        if self.free[s as usize] && this_tier(s) {
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
