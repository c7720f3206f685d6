//! What there is to hold: published titles, who holds which chunks, and where the bytes that
//! filled them came from.

use std::collections::BTreeSet;

use fillmesh_protocol::messages::{Fetched, Role};
use fillmesh_protocol::{ChunkBitmap, Manifest, TitleId};

use super::{hash, ByteClass, CoreError, Millis, Tracker};

#[derive(Debug)]
pub(crate) struct TitleState {
    pub id: TitleId,
    pub hash: u64,
    pub name: String,
    pub manifest: Manifest,
    /// Per chunk: eligible appliances (healthy, non-bad) holding it.
    pub holders: Vec<u32>,
    /// Per chunk: fetches of it in flight to eligible appliances.
    pub inflight: Vec<u32>,
    /// Who holds each chunk, for the per-chunk planner ([`Tracker::plan`]): built the first
    /// time it plans the title, kept up to date from then on. Fills by parents never need
    /// them. Why not always: at 2,000 appliances each reporting about 120 chunks a second,
    /// keeping them took 22% of the tracker's CPU (`cargo bench -p fillmesh-tests --bench
    /// load`), and they hold a word per (holder, chunk) three times over (about 800 MB at
    /// 10,000 appliances x 10,000 chunks).
    pub lists: Option<HolderLists>,
    /// Live nodes whose held map is full, whatever their health.
    pub complete: BTreeSet<u32>,
    /// Bytes fetched, indexed like [`ByteClass::ALL`].
    pub bytes: [u64; 4],
    /// Publish time, raised whenever a player is steered for it: a title is evicted only for
    /// one wanted more recently, so an evicted title does not push back the one that evicted
    /// it until a player asks for it again (and then at most once per
    /// `Config::evict_min_idle_ms`, see `last_steered`).
    pub last_wanted: Millis,
    /// When a player was last steered to it, if ever (see `Config::evict_min_idle_ms`).
    pub last_steered: Option<Millis>,
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

impl Tracker {
    /// Builds title `t`'s holder lists from the live nodes' held maps, unless kept already.
    pub(crate) fn keep_holder_lists(&mut self, t: u32) {
        if self.titles[t as usize].lists.is_some() {
            return;
        }
        let chunks = self.titles[t as usize].holders.len();
        self.titles[t as usize].lists = Some(HolderLists::new(chunks));
        for (idx, slot) in self.slots.iter().enumerate() {
            let Some(map) = slot.live.as_ref().and_then(|l| l.held.get(&t)) else { continue };
            for c in map.iter() {
                self.titles[t as usize].add_holder(idx as u32, slot.site, slot.region, c);
            }
        }
    }
}

impl Tracker {
    pub(super) fn do_publish(
        &mut self,
        now: Millis,
        title: TitleId,
        name: String,
        manifest: &Manifest,
    ) -> Result<(), CoreError> {
        if let Some(&t) = self.title_index.get(&title) {
            return if self.titles[t as usize].manifest == *manifest {
                Ok(())
            } else {
                Err(CoreError::ManifestConflict(title))
            };
        }
        let t = u32::try_from(self.titles.len()).unwrap_or(u32::MAX);
        let chunks = manifest.chunk_count() as usize;
        self.titles.push(TitleState {
            id: title,
            hash: hash::bytes(self.config.seed, title.as_bytes()),
            name,
            manifest: manifest.clone(),
            holders: vec![0; chunks],
            inflight: vec![0; chunks],
            lists: None,
            complete: BTreeSet::new(),
            bytes: [0; 4],
            last_wanted: now,
            last_steered: None,
        });
        self.title_index.insert(title, t);
        self.catalog_bytes = self.catalog_bytes.saturating_add(manifest.len());
        Ok(())
    }

    pub(super) fn do_report_held(
        &mut self,
        idx: u32,
        t: u32,
        held: ChunkBitmap,
        fetched: &[Fetched],
    ) -> Result<(), CoreError> {
        let chunks = self.titles[t as usize].manifest.chunk_count();
        if held.len() != chunks {
            return Err(CoreError::BadReport(format!(
                "a held map of {} chunks for a title of {chunks}",
                held.len()
            )));
        }
        if let Some(f) = fetched.iter().find(|f| f.chunk >= chunks) {
            return Err(CoreError::BadReport(format!("fetched chunk {} of a title of {chunks}", f.chunk)));
        }
        let (site, region) = (self.slots[idx as usize].site, self.slots[idx as usize].region);
        let Some(live) = self.slots[idx as usize].live.as_mut() else { return Ok(()) };
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
            self.drop_inflight(idx, t, c);
        }
        self.account(idx, t, fetched)?;
        Ok(())
    }

    /// A player asked for title `title`: it is wanted as of `now`.
    pub(super) fn note_wanted(&mut self, now: Millis, title: &TitleId) {
        if let Some(&t) = self.title_index.get(title) {
            let state = &mut self.titles[t as usize];
            state.last_wanted = state.last_wanted.max(now);
            state.last_steered = Some(state.last_steered.map_or(now, |s| s.max(now)));
        }
    }

    /// Forgets that live node `idx` holds or fetches any of title `t`, through the same path
    /// as a report of an empty map, so every count and list follows. The byte accounting
    /// keeps its chunks: bytes that refill it later are not counted twice.
    pub(super) fn evict_title(&mut self, idx: u32, t: u32) {
        let Some(live) = self.slots[idx as usize].live.as_ref() else { return };
        let inflight: Vec<u32> = live.inflight.range((t, 0)..=(t, u32::MAX)).map(|(&(_, c), _)| c).collect();
        for c in inflight {
            self.drop_inflight(idx, t, c);
        }
        if let Ok(empty) = ChunkBitmap::new(self.titles[t as usize].manifest.chunk_count()) {
            // Cannot fail: the map has the title's own length.
            let _ = self.do_report_held(idx, t, empty, &[]);
        }
        if let Some(live) = self.slots[idx as usize].live.as_mut() {
            live.held.remove(&t);
            live.filling.remove(&t);
        }
    }

    /// Adds the bytes of newly fetched, now held chunks to the title's classes. A source never
    /// registered (or the reporter itself) says nothing about distance and is not counted.
    fn account(&mut self, idx: u32, t: u32, fetched: &[Fetched]) -> Result<(), CoreError> {
        let chunks = self.titles[t as usize].manifest.chunk_count();
        for f in fetched {
            let held = self.slots[idx as usize].live.as_ref().is_some_and(|l| l.holds(t, f.chunk));
            let Some(&src) = self.lookup.get(&f.source) else { continue };
            if !held || src == idx {
                continue;
            }
            let Some(class) = self.byte_class(idx, src) else { continue };
            let accounted = match self.slots[idx as usize].accounted.entry(t) {
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
            let len = title.manifest.chunk_len(f.chunk).unwrap_or(0);
            title.bytes[class as usize] += len;
        }
        Ok(())
    }

    /// Where `source` sits relative to `node`, by their latest registrations.
    pub(super) fn byte_class(&self, node: u32, source: u32) -> Option<ByteClass> {
        let s = &self.slots[source as usize];
        let n = &self.slots[node as usize];
        let reg = s.registration.as_ref()?;
        n.registration.as_ref()?;
        Some(if reg.role == Role::Origin {
            ByteClass::Origin
        } else if s.site == n.site {
            ByteClass::SameSite
        } else if s.region == n.region {
            ByteClass::SameRegion
        } else {
            ByteClass::CrossRegion
        })
    }
}
