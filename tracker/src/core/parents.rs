//! Who fills from whom: per title, a layout of the fleet's eligible appliances that gives each
//! one its parents, the chunks it takes from the origin and those it brings into its region.
//! The tracker decides *who*; which chunk is the appliance's own decision
//! (`fillmesh-swarm`), from what its parents advertise to it directly.
//!
//! The layout, for a title of `n` chunks and regions of eligible appliances (all shares below
//! are in proportion to upload):
//! - **Origin**: the title is cut into one block per region, sized by the region's share of
//!   the fleet's upload, and each region's block into one slice per appliance there. An
//!   appliance takes its slice from the origin: every chunk is given to exactly one appliance
//!   fleet-wide, so the origin sends about one copy, and every region has fill masters.
//! - **Imports**: each other region's block is cut the same way among this region's
//!   appliances; an appliance brings its slice of each into the region, from the appliances
//!   of that region whose origin slices overlap it (its cross-region parents). So each chunk
//!   crosses into each region about once: the floor of `(R - 1) x` the title.
//! - **Within the region**: rings first (each appliance's predecessor in its site, and a link
//!   from the previous site), so that every appliance is someone's parent; then parents in
//!   the same site, then a few in other sites of the region, by a rendezvous hash of (child,
//!   parent) so that each appliance sees its own, and children per parent in proportion to
//!   its upload.
//!
//! A layout is computed once per (title, epoch) and kept: the epoch moves when an appliance
//! becomes eligible or stops being (registration, health, loss, a bad mark) or the origin
//! changes, not when chunks move, so a plan costs nothing per chunk.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use fillmesh_protocol::messages::{FillPlan, Parent, Role, SourceClass, MAX_FILLS, MAX_PARENTS, MAX_RANGES};

use super::catalog::Catalog;
use super::fleet::Fleet;
use super::planner::watermark;
use super::registry::{Registry, Slot};
use super::window::Windows;
use super::{hash, Config, Fills, Millis, Policy};

/// Parents in the appliance's own site, at most.
const SITE_PARENTS: usize = 6;
/// Parents in other sites of its region, at most (more when its site has too few).
const REGION_PARENTS: usize = 2;
/// Parents per other region for its imports, at most.
const CROSS_PARENTS: usize = 2;
/// Parents an appliance has in its own region.
const PARENTS: usize = SITE_PARENTS + REGION_PARENTS;
/// Children a parent may take beyond its share (see the caps in [`Layout::compute`]).
const CHILDREN_SLACK: u32 = 1;

/// Per title, the latest fill layout computed.
#[derive(Debug, Default)]
pub(crate) struct Layouts {
    by_title: HashMap<u32, Layout>,
}

#[derive(Debug, Default)]
pub(crate) struct Layout {
    epoch: u64,
    entries: HashMap<u32, Entry>,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    parents: Vec<(u32, SourceClass)>,
    origin: Vec<Range<u32>>,
    import: Vec<Range<u32>>,
}

/// The boundaries of `block` cut in proportion to `weights` (one slice per weight, slice
/// `i` from bound `i` to bound `i + 1`).
fn cut(block: &Range<u32>, weights: &[u64]) -> Vec<u32> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum::<u128>().max(1);
    let len = u128::from(block.end - block.start);
    let mut bounds = Vec::with_capacity(weights.len() + 1);
    let mut before = 0u128;
    bounds.push(block.start);
    for &w in weights {
        before += u128::from(w);
        bounds.push(block.start + (len * before / total) as u32);
    }
    bounds
}

/// A slice walked in ascending order, sorted a few items ahead of the walk: a walk that
/// stops early costs a selection over the rest and a sort of what it saw, not a full sort.
/// The layout ranks a region's every appliance for each child and mostly takes the first
/// few: with a full sort per child, the sorting was 1.5% of the 10,000-appliance scale
/// benchmark (regions of 2,500), about 2 s of tracker CPU per layout.
struct LazySorted<'a, T> {
    items: &'a mut [T],
    sorted: usize,
}

impl<'a, T: Ord + Copy> LazySorted<'a, T> {
    /// Items sorted per step of the walk past the sorted part.
    const STEP: usize = 32;

    fn new(items: &'a mut [T]) -> Self {
        Self { items, sorted: 0 }
    }

    /// The `i`-th smallest item.
    fn get(&mut self, i: usize) -> Option<T> {
        while i >= self.sorted && self.sorted < self.items.len() {
            let len = self.items.len();
            let end = (self.sorted + Self::STEP).min(len);
            if end < len {
                self.items[self.sorted..].select_nth_unstable(end - self.sorted - 1);
            }
            self.items[self.sorted..end].sort_unstable();
            self.sorted = end;
        }
        self.items.get(i).copied()
    }
}

/// [`Tracker::epoch`](super::Tracker::epoch): the layouts' epoch, the titles published, and
/// the changes of membership the registry and the fleet each count.
pub(super) fn epoch(registry: &Registry, catalog: &Catalog, fleet: &Fleet) -> u64 {
    registry.layout_epoch + catalog.len() as u64 + registry.members_epoch + fleet.epoch
}

impl Layouts {
    /// What appliance `a` fills now: a plan for each title it is to hold and does not hold
    /// whole (in publish order; the most recently wanted first when the catalog does not fit
    /// under its eviction watermark), and the titles it must delete first to make room for
    /// them (see [`Catalog::victims`]: only titles wanted less recently, never one just
    /// steered to). A title larger than the watermark, owned by another live tracker of the
    /// `fleet`, or with no parent to fill from yet, is left out. The origin and other roles
    /// fill nothing.
    #[allow(clippy::too_many_arguments)] // the parts of the tracker it reads, each by name
    pub(super) fn fills(
        &mut self,
        config: &Config,
        registry: &mut Registry,
        catalog: &mut Catalog,
        fleet: &Fleet,
        windows: &Windows,
        now: Millis,
        a: u32,
    ) -> Fills {
        let mut fills = Fills { epoch: epoch(registry, catalog, fleet), ..Fills::default() };
        let Some(reg) = registry.slots[a as usize].registration.as_ref() else { return fills };
        if reg.role != Role::Appliance {
            return fills;
        }
        let watermark = watermark(config, reg);
        let mut order = Vec::new();
        let tight = catalog.title_order(watermark, &mut order);
        // What it fills is what this answer names: titles planned earlier in the call count
        // against the disk for the later ones (victims), those of the previous answer no
        // longer do (the appliance stops filling a title its fills no longer name).
        if let Some(live) = registry.slots[a as usize].live.as_mut() {
            live.filling.clear();
        }
        for t in order {
            if fills.plans.len() == MAX_FILLS {
                break;
            }
            let title = catalog.title(t);
            // Another live tracker coordinates it: its fills come from there.
            if !fleet.owns(&title.id) {
                continue;
            }
            if title.complete.contains(&a) || title.shape.len() > watermark {
                continue;
            }
            if tight && fills.evict.contains(&title.id) {
                continue;
            }
            // Outside its fill window an appliance fills urgent titles only.
            if !title.urgent && !windows.open(a) {
                continue;
            }
            let victims = if tight {
                let Some(live) = registry.slots[a as usize].live.as_ref() else { continue };
                match catalog.victims(config, live, now, t, watermark, fills.evict.len()) {
                    Some(v) => v,
                    None => continue,
                }
            } else {
                Vec::new()
            };
            let plan = self.plan_of(config, registry, catalog, windows, a, t);
            // Only a title that can be filled evicts: one with nobody to fill from would free
            // room it does not take.
            if plan.parents.is_empty() {
                continue;
            }
            for u in victims {
                catalog.evict(registry, a, u);
                fills.evict.push(catalog.title(u).id);
            }
            if let Some(live) = registry.slots[a as usize].live.as_mut() {
                live.filling.insert(t);
            }
            fills.plans.push(plan);
        }
        fills
    }

    /// Appliance `a`'s plan for title `t` (the layout computed for the current epoch if it
    /// was not yet). Under [`Policy::OriginOnly`] the origin is its only parent, for every
    /// chunk. A title that is not urgent has no parent (not even the origin) for an
    /// appliance outside its fill window, and its layout names only appliances inside theirs.
    pub(super) fn plan_of(
        &mut self,
        config: &Config,
        registry: &Registry,
        catalog: &Catalog,
        windows: &Windows,
        a: u32,
        t: u32,
    ) -> FillPlan {
        let slots = &registry.slots;
        let title = catalog.title(t).id;
        if !catalog.title(t).urgent && !windows.open(a) {
            let epoch = registry.layout_epoch;
            return FillPlan { title, parents: Vec::new(), origin: Vec::new(), import: Vec::new(), epoch };
        }
        let excluded = &slots[a as usize].excluded;
        let origin_parent =
            registry.origin.filter(|&o| !slots[o as usize].bad && !excluded.contains(&o)).and_then(|o| {
                let reg = slots[o as usize].registration.as_ref()?;
                Some((
                    o,
                    Parent {
                        node: slots[o as usize].id.clone(),
                        addr: reg.mesh_addr,
                        class: SourceClass::Origin,
                    },
                ))
            });
        if config.policy == Policy::OriginOnly {
            let n = catalog.title(t).shape.chunk_count();
            return FillPlan {
                title,
                parents: origin_parent.into_iter().map(|(_, p)| p).collect(),
                origin: vec![Range { start: 0, end: n }],
                import: Vec::new(),
                epoch: registry.layout_epoch,
            };
        }
        if self.by_title.get(&t).is_none_or(|l| l.epoch != registry.layout_epoch) {
            let layout = Layout::compute(config, registry, catalog, windows, t);
            self.by_title.insert(t, layout);
        }
        let entry = self.by_title.get(&t).and_then(|l| l.entries.get(&a)).cloned().unwrap_or_default();
        let mut parents: Vec<Parent> = entry
            .parents
            .iter()
            .filter(|(p, _)| !excluded.contains(p))
            .filter_map(|&(p, class)| {
                let reg = slots[p as usize].registration.as_ref()?;
                Some(Parent { node: slots[p as usize].id.clone(), addr: reg.mesh_addr, class })
            })
            .take(MAX_PARENTS - 1)
            .collect();
        parents.extend(origin_parent.map(|(_, p)| p));
        // What a parent this appliance reported corrupt was to bring into the region (its
        // origin slice, its imports) may be held by nobody else: this appliance takes it from
        // the origin instead, and spreads it on. Bounded: one copy per reporter, and once a
        // quorum agrees the parent is bad, the layout leaves it out altogether.
        let mut origin = entry.origin;
        if let Some(layout) = self.by_title.get(&t) {
            for x in excluded {
                if let Some(e) = layout.entries.get(x) {
                    origin.extend(e.origin.iter().chain(&e.import).cloned());
                }
            }
        }
        origin.truncate(MAX_RANGES);
        let mut import = entry.import;
        import.truncate(MAX_RANGES);
        FillPlan { title, parents, origin, import, epoch: registry.layout_epoch }
    }
}

/// What the appliance in `slot` said it uploads, which its share of the layout follows (one
/// that said nothing counts as its minimum upload slots). Not the planner's `weight`: that
/// adds the spare slots, which doubled a 200 Mbit/s appliance's share against a 1 Gbit/s
/// one's (50 against 150 MB/s, for 25 against 125).
fn stated_upload(config: &Config, slot: &Slot) -> u64 {
    let stated = slot.registration.as_ref().map_or(0, |r| r.upload_bps);
    if stated > 0 {
        stated
    } else {
        u64::from(config.min_slots).saturating_mul(config.slot_bps).max(1)
    }
}

impl Layout {
    /// Title `t`'s layout over the registry's eligible appliances (those inside their fill
    /// windows, unless the title is urgent), as of its layout epoch (which windows opening or
    /// closing move).
    fn compute(config: &Config, registry: &Registry, catalog: &Catalog, windows: &Windows, t: u32) -> Self {
        let title_hash = catalog.title(t).hash;
        let urgent = catalog.title(t).urgent;
        let n = catalog.title(t).shape.chunk_count();
        // Regions in name order, not in the order this tracker first heard of them: every
        // tracker of a fleet lays a title out alike, so a title that changes owner keeps its
        // origin slices (no chunk taken from the origin twice).
        let mut rank = vec![0u32; registry.regions.len()];
        for (pos, &id) in registry.regions.values().enumerate() {
            if let Some(r) = rank.get_mut(id as usize) {
                *r = pos as u32;
            }
        }
        // Eligible appliances by region, each region in the title's own hash order.
        let mut members: Vec<(u32, u64, u32)> = (0..registry.slots.len() as u32)
            .filter(|&i| registry.slots[i as usize].live.as_ref().is_some_and(|l| l.eligible))
            .filter(|&i| urgent || windows.open(i))
            .map(|i| {
                let s = &registry.slots[i as usize];
                (rank.get(s.region as usize).copied().unwrap_or(u32::MAX), hash::mix(s.hash, title_hash), i)
            })
            .collect();
        members.sort_unstable();
        let mut regions: Vec<Vec<u32>> = Vec::new();
        let mut last = None;
        for &(r, _, i) in &members {
            if last != Some(r) {
                regions.push(Vec::new());
                last = Some(r);
            }
            if let Some(v) = regions.last_mut() {
                v.push(i);
            }
        }
        // Blocks, slices and imports in proportion to upload (`weight`): an appliance that
        // uploads more forwards more of what it takes first. (In the simulator's
        // heterogeneous fleet this changed little: 1.262x the bound against 1.264x.)
        let weights: Vec<Vec<u64>> = regions
            .iter()
            .map(|r| r.iter().map(|&a| stated_upload(config, &registry.slots[a as usize])).collect())
            .collect();
        let region_weights: Vec<u64> = weights.iter().map(|w| w.iter().sum()).collect();
        let block_bounds = cut(&(0..n), &region_weights);
        let blocks: Vec<Range<u32>> = block_bounds.windows(2).map(|w| w[0]..w[1]).collect();
        // Per region, the bounds of its origin slices within its own block.
        let origin_bounds: Vec<Vec<u32>> = (0..regions.len()).map(|k| cut(&blocks[k], &weights[k])).collect();
        let mut entries: HashMap<u32, Entry> = HashMap::with_capacity(members.len());
        let mut children: HashMap<u32, u32> = HashMap::new();
        for (k, region) in regions.iter().enumerate() {
            let m = region.len();
            let imports: Vec<Vec<u32>> = blocks.iter().map(|b| cut(b, &weights[k])).collect();
            for (i, &a) in region.iter().enumerate() {
                let own = &origin_bounds[k];
                let mut entry =
                    Entry { origin: vec![Range { start: own[i], end: own[i + 1] }], ..Entry::default() };
                entry.origin.retain(|r| !r.is_empty());
                for (k2, other) in regions.iter().enumerate() {
                    if k2 == k {
                        continue;
                    }
                    let import = imports[k2][i]..imports[k2][i + 1];
                    if import.is_empty() {
                        continue;
                    }
                    // The appliances there whose origin slices overlap this import (then the
                    // next one, should it be a single one).
                    let theirs = &origin_bounds[k2];
                    let m2 = other.len();
                    let first = theirs.partition_point(|&b| b <= import.start).saturating_sub(1).min(m2 - 1);
                    let through = theirs.partition_point(|&b| b < import.end).clamp(first + 1, m2);
                    for j in (first..through).chain([through % m2]).take(CROSS_PARENTS) {
                        let p = other[j % m2];
                        if !entry.parents.iter().any(|&(q, _)| q == p) {
                            entry.parents.push((p, SourceClass::CrossRegion));
                        }
                    }
                    entry.import.push(import);
                }
                entries.insert(a, entry);
            }
            // Parents within the region. Rings first: in each site, an appliance's first
            // parent is the one before it (in the title's hash order), and across the
            // region's sites, the one at the same place in the previous site. So every
            // appliance is someone's parent and every chunk that enters the region reaches
            // all of it (without the rings, an appliance that nobody ranked high enough had
            // no children, and the chunks only it took from the origin or imported never
            // spread: the simulator's 600-appliance fill stalled at 1,010 of 1,024 chunks).
            // Then more parents, same site first, by rendezvous rank within children caps.
            let mut sites: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            for &a in region {
                sites.entry(registry.slots[a as usize].site).or_default().push(a);
            }
            let sites: Vec<&Vec<u32>> = sites.values().collect();
            let mut near: HashMap<u32, Vec<(u32, SourceClass)>> = HashMap::with_capacity(m);
            for (j, members) in sites.iter().enumerate() {
                let prev = sites[(j + sites.len() - 1) % sites.len()];
                for (k, &a) in members.iter().enumerate() {
                    let mut list = Vec::new();
                    if members.len() > 1 {
                        list.push((members[(k + members.len() - 1) % members.len()], SourceClass::SameSite));
                    }
                    // One child per member of the previous site at most: enough to link the
                    // sites, and never a small site's member with a big site's children.
                    if sites.len() > 1 && k < prev.len() {
                        list.push((prev[k], SourceClass::SameRegion));
                    }
                    for &(p, _) in &list {
                        *children.entry(p).or_default() += 1;
                    }
                    near.insert(a, list);
                }
            }
            // Children per parent in proportion to its upload: the region's parent places
            // (as many as its appliances have parents here) are cut by upload share, so that
            // each parent's upload per child, and with it what every child receives from its
            // parents together, is about the region's mean. With caps of the share rounded
            // up plus one, the places the ranking fills first went to the slow appliances
            // (their caps were the most generous for their upload): in the simulator's
            // heterogeneous fleet, 200 Mbit/s appliances had 4 children (their share was
            // 2.3) and 1 Gbit/s ones 9.9 (of 11.6); what appliances received from their
            // parents together ranged 2.1x, and the fill took 1.257x the bound.
            let wanted = PARENTS.min(m.saturating_sub(1));
            let region_uploads: Vec<u64> =
                region.iter().map(|&b| stated_upload(config, &registry.slots[b as usize])).collect();
            let places = cut(&(0..(wanted * m) as u32), &region_uploads);
            let caps: HashMap<u32, u32> =
                region.iter().enumerate().map(|(i, &b)| (b, places[i + 1] - places[i])).collect();
            for &a in region {
                let sa = &registry.slots[a as usize];
                let mut list = near.remove(&a).unwrap_or_default();
                let mut ranked: Vec<(bool, u64, u32)> = region
                    .iter()
                    .filter(|&&b| b != a && !list.iter().any(|&(p, _)| p == b))
                    .map(|&b| {
                        let sb = &registry.slots[b as usize];
                        (sb.site != sa.site, hash::mix(sa.hash ^ title_hash, sb.hash), b)
                    })
                    .collect();
                let mut ranked = LazySorted::new(&mut ranked);
                let mut site = list.iter().filter(|(_, c)| *c == SourceClass::SameSite).count();
                let mut other = list.len() - site;
                // Within the caps first; a child still short (the rings may have put a parent
                // past its cap, and the last children find the places taken) may take one
                // parent past its cap by a little.
                for slack in [0, CHILDREN_SLACK] {
                    let mut i = 0;
                    while let Some((far, _, b)) = ranked.get(i) {
                        i += 1;
                        if site >= SITE_PARENTS && other >= REGION_PARENTS {
                            break;
                        }
                        let cap = caps.get(&b).copied().unwrap_or(1) + slack;
                        let used = children.entry(b).or_default();
                        // A site with too few parents takes its shortfall from the region.
                        let take = if far {
                            other < REGION_PARENTS + SITE_PARENTS.saturating_sub(site)
                        } else {
                            site < SITE_PARENTS
                        };
                        if *used >= cap || !take || list.iter().any(|&(p, _)| p == b) {
                            continue;
                        }
                        *used += 1;
                        if far {
                            other += 1;
                            list.push((b, SourceClass::SameRegion));
                        } else {
                            site += 1;
                            list.push((b, SourceClass::SameSite));
                        }
                    }
                }
                // Nearest first: the rings' parents and the ranked ones, same site first.
                list.sort_by_key(|&(_, class)| class);
                if let Some(entry) = entries.get_mut(&a) {
                    list.append(&mut entry.parents);
                    entry.parents = list;
                }
            }
        }
        Layout { epoch: registry.layout_epoch, entries }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use fillmesh_protocol::messages::{Registration, Role};
    use fillmesh_protocol::{ChunkSize, NodeId, Shape, TitleId};
    use proptest::prelude::*;

    use super::*;
    use crate::core::Tracker;

    fn reg(role: Role, region: u32, site: u32, upload_bps: u64, n: u16) -> Registration {
        Registration {
            role,
            mesh_addr: SocketAddr::from(([127, 0, 0, 1], n)),
            site: format!("s{site}"),
            region: format!("r{region}"),
            prefixes: vec![],
            upload_bps,
            disk_bytes: u64::MAX,
            cert_sha256: None,
        }
    }

    /// A fleet: (region, site, upload) per appliance, plus an origin; a title of `chunks`.
    fn fleet(nodes: &[(u32, u32, u64)], chunks: u32) -> (Tracker, Vec<NodeId>, NodeId, TitleId) {
        let mut t = Tracker::new(Config::default());
        // Node ids are base58: letters only, and no lowercase L.
        let name = |mut i: usize| {
            let mut s = String::from("n");
            loop {
                s.push(b"abcdefghijkmnopqrstuvwxyz"[i % 25] as char);
                i /= 25;
                if i == 0 {
                    return s;
                }
            }
        };
        let ids: Vec<NodeId> = (0..nodes.len()).map(|i| name(i).parse().unwrap()).collect();
        for (i, &(r, s, up)) in nodes.iter().enumerate() {
            t.register(0, ids[i].clone(), reg(Role::Appliance, r, s, up, i as u16 + 1));
        }
        let origin: NodeId = "origin".parse().unwrap();
        t.register(0, origin.clone(), reg(Role::Origin, 0, 0, 10_000_000_000, 9999));
        let title = TitleId::from_bytes([7; 32]);
        let cs = ChunkSize::new(1024).unwrap();
        let shape = Shape::file(u64::from(chunks) * 1024, cs).unwrap();
        t.publish(0, title, "t".into(), &shape).unwrap();
        (t, ids, origin, title)
    }

    fn nodes() -> impl Strategy<Value = Vec<(u32, u32, u64)>> {
        proptest::collection::vec((0..4u32, 0..3u32, 0..2_000_000_000u64), 1..60)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every chunk is taken from the origin by one appliance fleet-wide and brought into
        /// each other region by one appliance there; parents are ranked nearest first, in
        /// their stated class, never the appliance itself, and no parent has more children
        /// in its region than its slots allow.
        #[test]
        fn each_chunk_has_one_origin_taker_and_one_importer_per_other_region(
            nodes in nodes(),
            chunks in 1..300u32,
        ) {
            let (mut t, ids, origin, title) = fleet(&nodes, chunks);
            let plans: Vec<FillPlan> = ids.iter().map(|a| t.fill_plan(0, a, &title).unwrap()).collect();
            let regions: std::collections::BTreeSet<u32> = nodes.iter().map(|n| n.0).collect();
            for c in 0..chunks {
                let takers = plans.iter().filter(|p| p.origin.iter().any(|r| r.contains(&c))).count();
                prop_assert_eq!(takers, 1, "chunk {} has {} origin takers", c, takers);
                let home = nodes[plans.iter().position(|p| p.origin.iter().any(|r| r.contains(&c))).unwrap()].0;
                for &r in &regions {
                    let importers = plans
                        .iter()
                        .zip(&nodes)
                        .filter(|(p, n)| n.0 == r && p.import.iter().any(|x| x.contains(&c)))
                        .count();
                    prop_assert_eq!(importers, usize::from(r != home), "chunk {} into region {}", c, r);
                }
            }
            let index: BTreeMap<&NodeId, usize> = ids.iter().enumerate().map(|(i, a)| (a, i)).collect();
            let mut children: BTreeMap<usize, u32> = BTreeMap::new();
            for (i, plan) in plans.iter().enumerate() {
                prop_assert!(plan.parents.windows(2).all(|w| w[0].class <= w[1].class), "not nearest first");
                prop_assert_eq!(plan.parents.last().map(|p| &p.node), Some(&origin));
                for parent in &plan.parents[..plan.parents.len() - 1] {
                    let j = index[&parent.node];
                    prop_assert!(j != i, "its own parent");
                    let (ra, sa, _) = nodes[i];
                    let (rb, sb, _) = nodes[j];
                    let class = match (ra == rb, sa == sb) {
                        (true, true) => SourceClass::SameSite,
                        (true, false) => SourceClass::SameRegion,
                        _ => SourceClass::CrossRegion,
                    };
                    prop_assert_eq!(parent.class, class);
                    if class != SourceClass::CrossRegion {
                        *children.entry(j).or_default() += 1;
                    }
                }
            }
            // Children in proportion to upload within the region (the rings may add up to
            // two to a parent whose share is smaller).
            let weight = |j: usize| stated_upload(&t.config, &t.registry.slots[t.registry.lookup[&ids[j]] as usize]) as f64;
            for (j, n) in children {
                let region: Vec<usize> = (0..nodes.len()).filter(|&k| nodes[k].0 == nodes[j].0).collect();
                let mean = region.iter().map(|&k| weight(k)).sum::<f64>() / region.len() as f64;
                let cap = (PARENTS as f64 * weight(j) / mean).ceil() as u32 + CHILDREN_SLACK;
                prop_assert!(n <= cap.max(2), "{} children over a cap of {}", n, cap);
            }
        }
    }

    proptest! {
        /// Walked once in part and then again from the start, it gives the sorted order.
        #[test]
        fn a_lazily_sorted_walk_is_the_sorted_order(
            items in proptest::collection::vec(any::<u16>(), 0..200),
            first in 0..210usize,
        ) {
            let mut sorted = items.clone();
            sorted.sort_unstable();
            let mut items = items;
            let mut lazy = LazySorted::new(&mut items);
            for (i, want) in sorted.iter().enumerate().take(first) {
                prop_assert_eq!(lazy.get(i), Some(*want));
            }
            let all: Vec<u16> = (0..).map_while(|i| lazy.get(i)).collect();
            prop_assert_eq!(all, sorted);
        }
    }

    #[test]
    fn plans_hold_while_the_epoch_does_and_change_when_an_appliance_goes() {
        let nodes = [(0, 0, 0), (0, 0, 0), (1, 0, 0), (1, 1, 0)];
        let (mut t, ids, _, title) = fleet(&nodes, 100);
        let before = t.fill_plan(0, &ids[0], &title).unwrap();
        assert_eq!(t.fill_plan(10, &ids[0], &title).unwrap(), before);
        t.lost(20, &ids[1]);
        let after = t.fill_plan(20, &ids[0], &title).unwrap();
        assert!(after.epoch > before.epoch);
        assert!(after.parents.iter().all(|p| p.node != ids[1]), "a gone appliance is nobody's parent");
        // Its origin slice went to the others.
        let covered: u32 = [&ids[0], &ids[2], &ids[3]]
            .iter()
            .map(|a| t.fill_plan(20, a, &title).unwrap().origin.iter().map(|r| r.end - r.start).sum::<u32>())
            .sum();
        assert_eq!(covered, 100);
    }

    #[test]
    fn a_parent_an_appliance_reported_corrupt_is_left_out_of_its_plan() {
        let nodes = [(0, 0, 0), (0, 0, 0), (0, 0, 0)];
        let (mut t, ids, _, title) = fleet(&nodes, 10);
        assert!(t.fill_plan(0, &ids[0], &title).unwrap().parents.iter().any(|p| p.node == ids[1]));
        t.report_failure(0, &ids[0], title, 0, &ids[1], fillmesh_protocol::messages::FailureKind::Corrupt)
            .unwrap();
        let plan = t.fill_plan(0, &ids[0], &title).unwrap();
        assert!(plan.parents.iter().all(|p| p.node != ids[1]));
        assert!(plan.parents.iter().any(|p| p.node == ids[2]));
    }
}
