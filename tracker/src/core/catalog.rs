//! What there is to hold: published titles, who holds which chunks, where the bytes that
//! filled them came from, and which titles give way when an appliance's disk is full. A
//! node's own held maps live in the [`Registry`], which the calls that read them take.

use std::collections::{BTreeMap, BTreeSet};

use fillmesh_protocol::messages::{CatalogEntry, Fetched, MAX_EVICT};
use fillmesh_protocol::{ChunkBitmap, Shape, TitleId};

use super::registry::{Live, Registry};
use super::{hash, Config, CoreError, Millis};

/// The titles published, in publish order, with their per-chunk counts.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    titles: Vec<TitleState>,
    index: BTreeMap<TitleId, u32>,
    /// Bytes of every title published: an appliance whose watermark is at least this never
    /// needs the eviction check, which keeps the usual plan (one title, ample disk) as cheap as
    /// before.
    bytes: u64,
}

#[derive(Debug)]
pub(crate) struct TitleState {
    pub id: TitleId,
    pub hash: u64,
    pub name: String,
    /// Chunk size and file lengths: all the tracker keeps of a title (no hashes).
    pub shape: Shape,
    /// Per chunk: eligible appliances (healthy, non-bad) holding it.
    pub holders: Vec<u32>,
    /// Per chunk: fetches of it in flight to eligible appliances.
    pub inflight: Vec<u32>,
    /// Who holds each chunk, for the per-chunk planner (`Tracker::plan`): built the first
    /// time it plans the title, kept up to date from then on. Fills by parents never need
    /// them. Why not always: at 2,000 appliances each reporting about 120 chunks a second,
    /// keeping them took 22% of the tracker's CPU (`cargo bench -p fillmesh-tests --bench
    /// load`), and they hold a word per (holder, chunk) three times over (about 800 MB at
    /// 10,000 appliances x 10,000 chunks).
    pub lists: Option<HolderLists>,
    /// Live nodes whose held map is full, whatever their health.
    pub complete: BTreeSet<u32>,
    /// Bytes fetched, indexed like [`ByteClass::ALL`](super::ByteClass::ALL).
    pub bytes: [u64; 4],
    /// Publish time, raised whenever a player is steered for it: a title is evicted only for
    /// one wanted more recently, so an evicted title does not push back the one that evicted
    /// it until a player asks for it again (and then at most once per
    /// `Config::evict_min_idle_ms`, see `last_steered`).
    pub last_wanted: Millis,
    /// When a player was last steered to it, if ever (see `Config::evict_min_idle_ms`).
    pub last_steered: Option<Millis>,
    /// Published urgent (`fillmesh seed --urgent`): planned whatever the fill windows.
    pub urgent: bool,
}

/// Holder lists per (place, chunk): for each chunk, the places with a holder of it, sorted,
/// and their non-empty lists. A lookup is a binary search among the places holding that
/// chunk, kept apart from the lists so that it reads a line or two (no tree of every (place,
/// chunk) pair to walk, and nothing kept for empty pairs).
#[derive(Debug)]
pub(crate) struct PlaceLists {
    by_chunk: Vec<Places>,
}

#[derive(Debug, Clone, Default)]
struct Places {
    places: Vec<u32>,
    lists: Vec<Vec<u32>>,
}

impl PlaceLists {
    pub(crate) fn new(chunks: usize) -> Self {
        Self { by_chunk: vec![Places::default(); chunks] }
    }

    /// The holders of chunk `c` in `place` (empty when none).
    pub(crate) fn get(&self, place: u32, c: u32) -> &[u32] {
        let p = &self.by_chunk[c as usize];
        match p.places.binary_search(&place) {
            Ok(i) => &p.lists[i],
            Err(_) => &[],
        }
    }

    fn add(&mut self, place: u32, c: u32, idx: u32) {
        let p = &mut self.by_chunk[c as usize];
        match p.places.binary_search(&place) {
            Ok(i) => p.lists[i].push(idx),
            Err(i) => {
                p.places.insert(i, place);
                p.lists.insert(i, vec![idx]);
            }
        }
    }

    fn remove(&mut self, place: u32, c: u32, idx: u32) {
        let p = &mut self.by_chunk[c as usize];
        if let Ok(i) = p.places.binary_search(&place) {
            take(&mut p.lists[i], idx);
            if p.lists[i].is_empty() {
                p.places.remove(i);
                p.lists.remove(i);
            }
        }
    }

    /// Every (place, chunk, list), for validation.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, u32, &[u32])> {
        self.by_chunk.iter().enumerate().flat_map(|(c, p)| {
            p.places.iter().zip(&p.lists).map(move |(&place, l)| (place, c as u32, l.as_slice()))
        })
    }
}

fn take(list: &mut Vec<u32>, idx: u32) {
    if let Some(p) = list.iter().position(|&n| n == idx) {
        list.swap_remove(p);
    }
}

/// A title's holders per chunk, overall and by place.
#[derive(Debug)]
pub(crate) struct HolderLists {
    /// Per chunk: every live node whose held map has it, in no particular order. Lets the
    /// planner look at a chunk's holders instead of every free source.
    pub all: Vec<Vec<u32>>,
    /// The same per (site, chunk) and per (region, chunk), by the holder's site and region,
    /// so that finding a nearby holder costs the same however many hold the chunk elsewhere.
    pub sites: PlaceLists,
    pub regions: PlaceLists,
}

impl HolderLists {
    fn new(chunks: usize) -> Self {
        Self {
            all: vec![Vec::new(); chunks],
            sites: PlaceLists::new(chunks),
            regions: PlaceLists::new(chunks),
        }
    }
}

impl TitleState {
    /// Enters node `idx` of (`site`, `region`) in chunk `c`'s holder lists, if kept.
    pub(crate) fn add_holder(&mut self, idx: u32, site: u32, region: u32, c: u32) {
        if let Some(lists) = &mut self.lists {
            lists.all[c as usize].push(idx);
            lists.sites.add(site, c, idx);
            lists.regions.add(region, c, idx);
        }
    }

    /// Takes node `idx`, entered under (`site`, `region`), out of chunk `c`'s holder lists,
    /// if kept.
    pub(crate) fn remove_holder(&mut self, idx: u32, site: u32, region: u32, c: u32) {
        if let Some(lists) = &mut self.lists {
            take(&mut lists.all[c as usize], idx);
            lists.sites.remove(site, c, idx);
            lists.regions.remove(region, c, idx);
        }
    }
}

impl Catalog {
    /// Titles published.
    pub(super) fn len(&self) -> usize {
        self.titles.len()
    }

    /// Every title, in publish order (indexed by title index).
    pub(super) fn titles(&self) -> &[TitleState] {
        &self.titles
    }

    pub(super) fn title(&self, t: u32) -> &TitleState {
        &self.titles[t as usize]
    }

    /// The index of `title`, if published.
    pub(super) fn index(&self, title: &TitleId) -> Option<u32> {
        self.index.get(title).copied()
    }

    pub(super) fn title_idx(&self, title: &TitleId) -> Result<u32, CoreError> {
        self.index(title).ok_or(CoreError::UnknownTitle(*title))
    }

    /// Marks title `t` urgent; true when it was not.
    pub(super) fn set_urgent(&mut self, t: u32) -> bool {
        let title = &mut self.titles[t as usize];
        !std::mem::replace(&mut title.urgent, true)
    }

    /// Bytes of every title published.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) fn shape(&self, title: &TitleId) -> Option<&Shape> {
        self.index(title).map(|t| &self.titles[t as usize].shape)
    }

    /// The catalog in publish order.
    pub(super) fn entries(&self) -> Vec<CatalogEntry> {
        self.titles
            .iter()
            .map(|t| CatalogEntry {
                title: t.id,
                name: t.name.clone(),
                len: t.shape.len(),
                chunk_size: t.shape.chunk_size(),
            })
            .collect()
    }

    /// Builds title `t`'s holder lists from the live nodes' held maps, unless kept already.
    pub(super) fn keep_holder_lists(&mut self, registry: &Registry, t: u32) {
        if self.titles[t as usize].lists.is_some() {
            return;
        }
        let chunks = self.titles[t as usize].holders.len();
        self.titles[t as usize].lists = Some(HolderLists::new(chunks));
        for (idx, slot) in registry.slots.iter().enumerate() {
            let Some(map) = slot.live.as_ref().and_then(|l| l.held.get(&t)) else { continue };
            for c in map.iter() {
                self.titles[t as usize].add_holder(idx as u32, slot.site, slot.region, c);
            }
        }
    }

    /// Adds (`up`) or removes a live node's held chunks and in-flight fetches from the
    /// per-chunk counts, as it becomes eligible or stops being.
    pub(super) fn count_node(&mut self, live: &Live, up: bool) {
        for (&t, map) in &live.held {
            let counts = &mut self.titles[t as usize].holders;
            for c in map.iter() {
                bump(&mut counts[c as usize], up);
            }
        }
        for &(t, c) in live.inflight.keys() {
            bump(&mut self.titles[t as usize].inflight[c as usize], up);
        }
    }

    /// Counts one more (`up`) or one fewer fetch of chunk `c` of title `t` in flight to an
    /// eligible appliance.
    pub(super) fn count_inflight(&mut self, t: u32, c: u32, up: bool) {
        bump(&mut self.titles[t as usize].inflight[c as usize], up);
    }

    /// Moves node `idx`'s entries in the holder lists of what it holds (`held`) from the
    /// place `from` (site, region) to `to`, or takes them out with `None`.
    pub(super) fn move_holder(
        &mut self,
        idx: u32,
        held: &BTreeMap<u32, ChunkBitmap>,
        from: (u32, u32),
        to: Option<(u32, u32)>,
    ) {
        for (&t, map) in held {
            let title = &mut self.titles[t as usize];
            for c in map.iter() {
                title.remove_holder(idx, from.0, from.1, c);
                if let Some((site, region)) = to {
                    title.add_holder(idx, site, region, c);
                }
            }
        }
    }

    /// Node `idx` is gone: it is no complete holder of anything.
    pub(super) fn forget_complete(&mut self, idx: u32) {
        for t in &mut self.titles {
            t.complete.remove(&idx);
        }
    }

    pub(super) fn publish(
        &mut self,
        seed: u64,
        now: Millis,
        title: TitleId,
        name: String,
        shape: &Shape,
    ) -> Result<(), CoreError> {
        if let Some(&t) = self.index.get(&title) {
            return if self.titles[t as usize].shape == *shape {
                Ok(())
            } else {
                Err(CoreError::ShapeConflict(title))
            };
        }
        let t = u32::try_from(self.titles.len()).unwrap_or(u32::MAX);
        let chunks = shape.chunk_count() as usize;
        self.titles.push(TitleState {
            id: title,
            hash: hash::bytes(seed, title.as_bytes()),
            name,
            shape: shape.clone(),
            holders: vec![0; chunks],
            inflight: vec![0; chunks],
            lists: None,
            complete: BTreeSet::new(),
            bytes: [0; 4],
            last_wanted: now,
            last_steered: None,
            urgent: false,
        });
        self.index.insert(title, t);
        self.bytes = self.bytes.saturating_add(shape.len());
        Ok(())
    }

    /// Node `idx`'s whole held map of title `t` (replacing its previous one) and the sources
    /// of chunks it fetched: the counts and lists follow, fetches of what it now holds are
    /// over, and the bytes fetched are classed.
    pub(super) fn report_held(
        &mut self,
        registry: &mut Registry,
        idx: u32,
        t: u32,
        held: ChunkBitmap,
        fetched: &[Fetched],
    ) -> Result<(), CoreError> {
        let chunks = self.titles[t as usize].shape.chunk_count();
        if held.len() != chunks {
            return Err(CoreError::BadReport(format!(
                "a held map of {} chunks for a title of {chunks}",
                held.len()
            )));
        }
        if let Some(f) = fetched.iter().find(|f| f.chunk >= chunks) {
            return Err(CoreError::BadReport(format!("fetched chunk {} of a title of {chunks}", f.chunk)));
        }
        let slot = &mut registry.slots[idx as usize];
        let (site, region) = (slot.site, slot.region);
        let Some(live) = slot.live.as_mut() else { return Ok(()) };
        let title = &mut self.titles[t as usize];
        let empty;
        let old = match live.held.get(&t) {
            Some(m) => m,
            None => {
                empty = ChunkBitmap::new(chunks).map_err(|e| CoreError::BadReport(e.to_string()))?;
                &empty
            }
        };
        for (i, (a, b)) in old.as_bytes().iter().zip(held.as_bytes()).enumerate() {
            let mut diff = a ^ b;
            while diff != 0 {
                let bit = diff.trailing_zeros();
                diff &= diff - 1;
                let c = i * 8 + bit as usize;
                if b & (1 << bit) != 0 {
                    title.add_holder(idx, site, region, c as u32);
                    if live.eligible {
                        title.holders[c] += 1;
                    }
                } else {
                    title.remove_holder(idx, site, region, c as u32);
                    if live.eligible {
                        title.holders[c] -= 1;
                    }
                }
            }
        }
        if held.is_full() {
            title.complete.insert(idx);
        } else {
            title.complete.remove(&idx);
        }
        let done: Vec<u32> = live
            .inflight
            .range((t, 0)..=(t, u32::MAX))
            .map(|(&(_, c), _)| c)
            .filter(|&c| held.contains(c) || fetched.iter().any(|f| f.chunk == c))
            .collect();
        live.held.insert(t, held);
        for c in done {
            registry.drop_inflight(self, idx, t, c);
        }
        self.account(registry, idx, t, fetched)?;
        Ok(())
    }

    /// Adds bytes stored per class (indexed like [`ByteClass::ALL`](super::ByteClass::ALL)) to
    /// title `t`'s accounting.
    pub(super) fn add_bytes(&mut self, t: u32, bytes: [u64; 4]) {
        for (total, d) in self.titles[t as usize].bytes.iter_mut().zip(bytes) {
            *total = total.saturating_add(d);
        }
    }

    /// A player asked for title `title`: it is wanted as of `now`.
    pub(super) fn note_wanted(&mut self, now: Millis, title: &TitleId) {
        if let Some(&t) = self.index.get(title) {
            let state = &mut self.titles[t as usize];
            state.last_wanted = state.last_wanted.max(now);
            state.last_steered = Some(state.last_steered.map_or(now, |s| s.max(now)));
        }
    }

    /// Forgets that live node `idx` holds or fetches any of title `t`, through the same path
    /// as a report of an empty map, so every count and list follows. The byte accounting
    /// keeps its chunks: bytes that refill it later are not counted twice.
    pub(super) fn evict(&mut self, registry: &mut Registry, idx: u32, t: u32) {
        let Some(live) = registry.slots[idx as usize].live.as_ref() else { return };
        let inflight: Vec<u32> = live.inflight.range((t, 0)..=(t, u32::MAX)).map(|(&(_, c), _)| c).collect();
        for c in inflight {
            registry.drop_inflight(self, idx, t, c);
        }
        if let Ok(empty) = ChunkBitmap::new(self.titles[t as usize].shape.chunk_count()) {
            // Cannot fail: the map has the title's own length.
            let _ = self.report_held(registry, idx, t, empty, &[]);
        }
        if let Some(live) = registry.slots[idx as usize].live.as_mut() {
            live.held.remove(&t);
            live.filling.remove(&t);
        }
    }

    /// Adds the bytes of newly fetched, now held chunks to the title's classes. A source never
    /// registered (or the reporter itself) says nothing about distance and is not counted.
    fn account(
        &mut self,
        registry: &mut Registry,
        idx: u32,
        t: u32,
        fetched: &[Fetched],
    ) -> Result<(), CoreError> {
        let chunks = self.titles[t as usize].shape.chunk_count();
        for f in fetched {
            let held = registry.slots[idx as usize].live.as_ref().is_some_and(|l| l.holds(t, f.chunk));
            let Some(src) = registry.index_of(&f.source) else { continue };
            if !held || src == idx {
                continue;
            }
            let Some(class) = registry.byte_class(idx, src) else { continue };
            let accounted = match registry.slots[idx as usize].accounted.entry(t) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(ChunkBitmap::new(chunks).map_err(|e| CoreError::BadReport(e.to_string()))?)
                }
            };
            if accounted.contains(f.chunk) {
                continue;
            }
            accounted.insert(f.chunk);
            let title = &mut self.titles[t as usize];
            let len = title.shape.chunk_len(f.chunk).unwrap_or(0);
            title.bytes[class as usize] += len;
        }
        Ok(())
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
        let tight = self.bytes > watermark;
        if tight {
            order.sort_unstable_by_key(|&t| (std::cmp::Reverse(self.titles[t as usize].last_wanted), t));
        }
        tight
    }

    /// The titles an appliance (`live`, which does not hold title `t` whole) must evict to
    /// fill `t` under `watermark` (none when it fits), or `None` when `t` may not be filled.
    /// Every title it holds or fetches any chunk of counts at its whole length (the planner
    /// will finish it), so two titles filling at once cannot each see room the other takes.
    /// Victims are titles other than `t` wanted strictly less recently than `t` and not
    /// steered to within [`Config::evict_min_idle_ms`], oldest first; when they cannot make
    /// room (within [`MAX_EVICT`] per plan, `evicted` being taken already), `t` is not filled
    /// and nothing is evicted.
    pub(super) fn victims(
        &self,
        config: &Config,
        live: &Live,
        now: Millis,
        t: u32,
        watermark: u64,
        evicted: usize,
    ) -> Option<Vec<u32>> {
        let len = |u: u32| self.titles[u as usize].shape.len();
        let mut touched: Vec<u32> =
            live.held.iter().filter(|&(&u, map)| u != t && map.count() > 0).map(|(&u, _)| u).collect();
        touched.extend(live.inflight.keys().map(|&(u, _)| u).filter(|&u| u != t));
        touched.extend(live.filling.iter().copied().filter(|&u| u != t));
        touched.sort_unstable();
        touched.dedup();
        let committed = touched.iter().fold(len(t), |sum, &u| sum.saturating_add(len(u)));
        let Some(need) = committed.checked_sub(watermark).filter(|&n| n > 0) else { return Some(Vec::new()) };
        let wanted = self.titles[t as usize].last_wanted;
        let idle = config.evict_min_idle_ms;
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
}

fn bump(count: &mut u32, up: bool) {
    if up {
        *count += 1;
    } else {
        *count -= 1;
    }
}
