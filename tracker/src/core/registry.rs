//! Who is there: node slots, health and liveness over time, and the bookkeeping that keeps the
//! planner's counts (holders, in-flight fetches, free sources) in step with them. The
//! per-chunk counts live in the [`Catalog`], which the calls that move them take.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use fillmesh_protocol::messages::{Heartbeat, Registration, Role};
use fillmesh_protocol::{ChunkBitmap, IpPrefix, NodeId};

use super::catalog::Catalog;
use super::{hash, ByteClass, Config, CoreError, Millis};

/// Sources one reporter can have excluded at once; a further report drops its oldest
/// exclusion. Honest appliances rarely meet more than a few liars, and a lying reporter
/// can cost the tracker no more than this per node.
pub(crate) const MAX_EXCLUDED: usize = 64;

/// Who reported a corrupt chunk from a node: another node (by slot), a player known by the
/// address its report came from ([`Reporter::player`]), or a player known by its playback
/// token's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Reporter {
    Node(u32),
    Player(IpAddr),
    Token([u8; 16]),
}

impl Reporter {
    /// A player: by its token's id, or at `addr`: an IPv4 address as it is, an IPv6 address
    /// by its /64 (a host usually has a whole /64, so its addresses count as one reporter),
    /// an IPv4-mapped IPv6 address as the IPv4 address it maps.
    pub(crate) fn player(player: super::PlayerId) -> Self {
        let addr = match player {
            super::PlayerId::Token(id) => return Reporter::Token(id),
            super::PlayerId::Address(addr) => addr,
        };
        Reporter::Player(match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            },
            v4 => v4,
        })
    }
}

/// Everything known about one node id. A slot outlives the node's registration so that
/// badness, the byte accounting and uploads still in flight from it stay attached to it.
///
/// `repr(C)` keeps the fields the planner reads for every candidate source (the first few)
/// together at the start, in one cache line.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Slot {
    pub hash: u64,
    /// The upload rate the planner ranks sources by: the stated one, but at least the upload
    /// slots' worth (a node stating none still counts as its minimum slots).
    pub weight: u64,
    /// Interned (region, site) of `registration`.
    pub region: u32,
    pub site: u32,
    pub upload_slots: u32,
    /// In-flight assignments naming this node as first source.
    pub load: u32,
    pub bad: bool,
    pub live: Option<Live>,
    pub id: NodeId,
    /// The latest registration, kept after the node is gone to classify bytes it sent.
    pub registration: Option<Registration>,
    /// Chunks whose bytes are already in the accounting, per title.
    pub accounted: BTreeMap<u32, ChunkBitmap>,
    /// Distinct reporters (nodes and players) of a corrupt chunk from this one, at most the
    /// quorum: once that many agree the node is bad, and more reports change nothing.
    pub corrupt_reporters: Vec<Reporter>,
    /// Sources this node reported corrupt, oldest first, at most [`MAX_EXCLUDED`]: never
    /// planned for it again. Usually empty, so the planner's check costs nothing.
    pub excluded: Vec<u32>,
}

/// A registered, not yet gone node.
#[derive(Debug)]
pub(crate) struct Live {
    pub last_heartbeat: Millis,
    pub heartbeat: Option<Heartbeat>,
    pub lost: bool,
    /// Counted in the per-chunk holder and in-flight counts: a healthy, non-bad appliance.
    pub eligible: bool,
    pub held: BTreeMap<u32, ChunkBitmap>,
    /// (title, chunk) -> the fetch this node has in flight.
    pub inflight: BTreeMap<(u32, u32), Inflight>,
    pub origin_inflight: u32,
    /// Players steered to it (first on their list) since its last heartbeat.
    pub steered: u32,
    /// Titles its latest fills named: under way, so they count against its disk before it
    /// holds a chunk of them (see `Catalog::victims`).
    pub filling: std::collections::BTreeSet<u32>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Inflight {
    pub source: u32,
    pub expires: Millis,
    pub from_origin: bool,
}

impl Live {
    pub(crate) fn holds(&self, title: u32, chunk: u32) -> bool {
        self.held.get(&title).is_some_and(|m| m.contains(chunk))
    }
}

/// Every node the tracker has heard of, and the indexes over them that plans, steering and
/// timeouts read.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Every node ever named, by index; indices never change, so counts can refer to them.
    pub(super) slots: Vec<Slot>,
    /// The same by node id, in id order.
    pub(super) ids: BTreeMap<NodeId, u32>,
    /// The same, for lookups only (never iterated, so its order does not matter): a hash
    /// instead of a walk down a tree of node ids on every report and plan.
    pub(super) lookup: HashMap<NodeId, u32>,
    /// Interned (region) and (region, site) names.
    pub(super) regions: BTreeMap<String, u32>,
    sites: BTreeMap<(String, String), u32>,
    pub(super) origin: Option<u32>,
    /// (time, node): when a live node's health or liveness may next change.
    deadlines: BTreeSet<(Millis, u32)>,
    /// (expiry, appliance, title, chunk) of every in-flight assignment.
    pub(super) expiries: BTreeSet<(Millis, u32, u32, u32)>,
    /// Client prefixes of live nodes.
    pub(super) prefixes: BTreeMap<IpPrefix, BTreeSet<u32>>,
    pub(super) free: FreeSources,
    /// Moves whenever the set of eligible appliances or the origin changes: the fill
    /// layouts of an older epoch are stale.
    pub(super) layout_epoch: u64,
    /// Moves whenever the member list ([`Registry::members`]) may have changed: a node
    /// registered, was forgotten or turned bad (tools included, which no layout counts).
    pub(super) members_epoch: u64,
}

/// Eligible appliances with a spare upload slot, by site, by region and all: where the
/// planner finds sources.
#[derive(Debug, Default)]
pub(crate) struct FreeSources {
    /// Per slot: whether the node is in the sets (apart from the slots, so that the planner's
    /// scan over a chunk's holders reads a dense array).
    pub(super) flags: Vec<bool>,
    pub(super) site: BTreeMap<u32, BTreeSet<u32>>,
    pub(super) region: BTreeMap<u32, BTreeSet<u32>>,
    pub(super) all: BTreeSet<u32>,
}

impl FreeSources {
    /// Enters node `idx` of (`site`, `region`) in the sets, or takes it out.
    fn set(&mut self, idx: u32, site: u32, region: u32, free: bool) {
        self.flags[idx as usize] = free;
        let site_set = self.site.entry(site).or_default();
        let region_set = self.region.entry(region).or_default();
        if free {
            site_set.insert(idx);
            region_set.insert(idx);
            self.all.insert(idx);
        } else {
            site_set.remove(&idx);
            region_set.remove(&idx);
            self.all.remove(&idx);
        }
    }
}

/// Upload slots of a node: one per [`Config::slot_bps`] of upload, clamped to
/// [`Config::min_slots`] and [`Config::max_slots`] ([`Config::max_origin_slots`] for the
/// origin, which sends every chunk once and so should keep its whole upload busy), plus
/// [`Config::spare_slots`].
pub(super) fn slots_for(c: &Config, role: Role, upload_bps: u64) -> u32 {
    let n = upload_bps.checked_div(c.slot_bps).unwrap_or(u64::MAX);
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    let max = if role == Role::Origin { c.max_origin_slots } else { c.max_slots };
    n.clamp(c.min_slots, max.max(c.min_slots)).saturating_add(c.spare_slots)
}

impl Registry {
    /// The slot of `node`, if it was ever named.
    pub(super) fn index_of(&self, node: &NodeId) -> Option<u32> {
        self.lookup.get(node).copied()
    }

    /// The slot of `node` while it is registered and not gone.
    pub(super) fn live_index(&self, node: &NodeId) -> Result<u32, CoreError> {
        match self.lookup.get(node) {
            Some(&i) if self.slots[i as usize].live.is_some() => Ok(i),
            _ => Err(CoreError::UnknownNode(node.clone())),
        }
    }

    pub(super) fn intern(&mut self, seed: u64, node: &NodeId) -> u32 {
        if let Some(&i) = self.lookup.get(node) {
            return i;
        }
        let i = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(Slot {
            id: node.clone(),
            hash: hash::bytes(seed, node.as_str().as_bytes()),
            bad: false,
            registration: None,
            region: 0,
            site: 0,
            upload_slots: 0,
            weight: 1,
            load: 0,
            accounted: BTreeMap::new(),
            live: None,
            corrupt_reporters: Vec::new(),
            excluded: Vec::new(),
        });
        self.ids.insert(node.clone(), i);
        self.lookup.insert(node.clone(), i);
        self.free.flags.push(false);
        i
    }

    /// Healthy as of `now`: connected, reporting itself healthy, and heard from recently.
    pub(super) fn healthy_at(&self, config: &Config, idx: u32, now: Millis) -> bool {
        let Some(live) = &self.slots[idx as usize].live else { return false };
        !live.lost
            && live.heartbeat.is_none_or(|h| h.healthy)
            && now.saturating_sub(live.last_heartbeat) < config.unhealthy_after_ms
    }

    fn role(&self, idx: u32) -> Option<Role> {
        self.slots[idx as usize].registration.as_ref().map(|r| r.role)
    }

    /// A possible peer source and holder: a healthy, non-bad appliance.
    pub(super) fn eligible_at(&self, config: &Config, idx: u32, now: Millis) -> bool {
        let slot = &self.slots[idx as usize];
        !slot.bad && self.role(idx) == Some(Role::Appliance) && self.healthy_at(config, idx, now)
    }

    /// The origin, if it may serve as of `now`.
    pub(super) fn origin_ready(&self, config: &Config, now: Millis) -> Option<u32> {
        let o = self.origin?;
        let slot = &self.slots[o as usize];
        (!slot.bad && self.healthy_at(config, o, now) && slot.load < slot.upload_slots).then_some(o)
    }

    /// Every registered node the tracker vouches for (healthy or not, not gone, not bad), in
    /// id order.
    pub(super) fn members(&self) -> Vec<NodeId> {
        self.ids
            .iter()
            .filter(|(_, &i)| {
                let slot = &self.slots[i as usize];
                slot.live.is_some() && !slot.bad
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The registration of a live (not gone) node.
    pub(super) fn registration(&self, node: &NodeId) -> Option<&Registration> {
        let idx = *self.lookup.get(node)?;
        let slot = &self.slots[idx as usize];
        slot.live.as_ref().and(slot.registration.as_ref())
    }

    /// Distinct reporters of a corrupt chunk from `node` (up to the quorum), and whether it
    /// is bad.
    pub(super) fn corrupt_reports(&self, node: &NodeId) -> (usize, bool) {
        self.lookup.get(node).map_or((0, false), |&i| {
            let slot = &self.slots[i as usize];
            (slot.corrupt_reporters.len(), slot.bad)
        })
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

    pub(super) fn register(
        &mut self,
        config: &Config,
        catalog: &mut Catalog,
        now: Millis,
        idx: u32,
        registration: Registration,
    ) {
        self.members_epoch += 1;
        self.set_eligible(catalog, idx, false);
        self.unindex(config, idx);
        let region = self.intern_region(&registration.region);
        let site = self.intern_site(&registration.region, &registration.site);
        // Held chunks stay listed under the node's site and region: move them if it moved.
        self.move_holder(catalog, idx, Some((site, region)));
        let upload_slots = slots_for(config, registration.role, registration.upload_bps);
        if registration.role == Role::Origin && self.origin != Some(idx) {
            self.layout_epoch += 1;
        }
        match registration.role {
            Role::Origin => self.origin = Some(idx),
            _ if self.origin == Some(idx) => self.origin = None,
            _ => {}
        }
        let weight =
            registration.upload_bps.max(u64::from(upload_slots).saturating_mul(config.slot_bps)).max(1);
        let slot = &mut self.slots[idx as usize];
        slot.region = region;
        slot.site = site;
        slot.upload_slots = upload_slots;
        slot.weight = weight;
        slot.registration = Some(registration);
        let live = slot.live.get_or_insert_with(|| Live {
            last_heartbeat: now,
            heartbeat: None,
            lost: false,
            eligible: false,
            held: BTreeMap::new(),
            inflight: BTreeMap::new(),
            origin_inflight: 0,
            steered: 0,
            filling: Default::default(),
        });
        live.last_heartbeat = now;
        live.heartbeat = None;
        live.lost = false;
        self.index(config, idx);
        self.refresh(config, catalog, idx, now);
    }

    pub(super) fn heartbeat(
        &mut self,
        config: &Config,
        catalog: &mut Catalog,
        now: Millis,
        idx: u32,
        heartbeat: Heartbeat,
    ) {
        if let Some(live) = self.slots[idx as usize].live.as_mut() {
            live.heartbeat = Some(heartbeat);
            live.steered = 0;
        }
        self.alive(config, catalog, now, idx);
    }

    /// The node was heard from (a heartbeat, or a fill summary, which keeps the last
    /// heartbeat's figures): alive as of `now`.
    pub(super) fn alive(&mut self, config: &Config, catalog: &mut Catalog, now: Millis, idx: u32) {
        self.remove_deadlines(config, idx);
        if let Some(live) = self.slots[idx as usize].live.as_mut() {
            live.last_heartbeat = now;
            live.lost = false;
        }
        self.add_deadlines(config, idx);
        self.refresh(config, catalog, idx, now);
    }

    pub(super) fn lost(&mut self, config: &Config, catalog: &mut Catalog, now: Millis, idx: u32) {
        if let Some(live) = self.slots[idx as usize].live.as_mut() {
            live.lost = true;
        }
        self.refresh(config, catalog, idx, now);
    }

    /// `reporter` got a corrupt chunk from `source`: `reporter` is not sent to it again, and
    /// `source` is bad once [`Config::corrupt_quorum`] distinct reporters agree.
    pub(super) fn note_corrupt(
        &mut self,
        config: &Config,
        catalog: &mut Catalog,
        now: Millis,
        reporter: u32,
        source: u32,
    ) {
        let excluded = &mut self.slots[reporter as usize].excluded;
        if !excluded.contains(&source) {
            if excluded.len() >= MAX_EXCLUDED {
                excluded.remove(0);
            }
            excluded.push(source);
        }
        // A reporter that is bad itself is not believed about others (it still stops being
        // sent to the source it accuses).
        if !self.slots[reporter as usize].bad {
            self.count_corrupt(config, catalog, now, Reporter::Node(reporter), source);
        }
    }

    /// One more reporter of a corrupt chunk from `source`: counted once however often it
    /// reports, and `source` bad once the quorum of distinct reporters is reached.
    pub(super) fn count_corrupt(
        &mut self,
        config: &Config,
        catalog: &mut Catalog,
        now: Millis,
        reporter: Reporter,
        source: u32,
    ) {
        let quorum = config.quorum();
        let slot = &mut self.slots[source as usize];
        if slot.corrupt_reporters.len() < quorum && !slot.corrupt_reporters.contains(&reporter) {
            slot.corrupt_reporters.push(reporter);
        }
        if slot.corrupt_reporters.len() >= quorum && !slot.bad {
            slot.bad = true;
            self.members_epoch += 1;
            self.refresh(config, catalog, source, now);
        }
    }

    /// Whether `a` reported `source` corrupt (and so must not be sent to it).
    pub(super) fn excludes(&self, a: u32, source: u32) -> bool {
        self.slots[a as usize].excluded.contains(&source)
    }

    /// Expires assignments and applies the health and liveness transitions due by `now`.
    pub(super) fn advance(&mut self, config: &Config, catalog: &mut Catalog, now: Millis) {
        while let Some(&(at, node, title, chunk)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.drop_inflight(catalog, node, title, chunk);
        }
        while let Some(&(at, idx)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.refresh(config, catalog, idx, now);
        }
    }

    /// The earliest assignment expiry or node health or liveness deadline; `None` while
    /// nothing waits.
    pub(super) fn poll_timeout(&self) -> Option<Millis> {
        let expiry = self.expiries.first().map(|&(at, ..)| at);
        let deadline = self.deadlines.first().map(|&(at, _)| at);
        expiry.into_iter().chain(deadline).min()
    }

    /// Brings one node's derived state in line with `now`: forgets it when gone, and moves
    /// it in or out of the planner's counts when its eligibility changed.
    fn refresh(&mut self, config: &Config, catalog: &mut Catalog, idx: u32, now: Millis) {
        let Some(live) = &self.slots[idx as usize].live else { return };
        if now.saturating_sub(live.last_heartbeat) >= config.gone_after_ms {
            self.forget(config, catalog, idx);
            return;
        }
        let eligible = self.eligible_at(config, idx, now);
        self.set_eligible(catalog, idx, eligible);
        self.update_free(idx);
    }

    /// The node is gone: its held maps and the fetches it had in flight are dropped. Fetches
    /// others have in flight from it stay until they complete, fail or expire.
    fn forget(&mut self, config: &Config, catalog: &mut Catalog, idx: u32) {
        self.members_epoch += 1;
        self.set_eligible(catalog, idx, false);
        self.unindex(config, idx);
        let inflight: Vec<(u32, u32)> = self.slots[idx as usize]
            .live
            .as_ref()
            .map(|l| l.inflight.keys().copied().collect())
            .unwrap_or_default();
        for (t, c) in inflight {
            self.drop_inflight(catalog, idx, t, c);
        }
        catalog.forget_complete(idx);
        self.move_holder(catalog, idx, None);
        if self.origin == Some(idx) {
            self.origin = None;
        }
        self.slots[idx as usize].live = None;
        self.update_free(idx);
    }

    /// Moves a live node's entries in the holder lists to `to` (site, region), or takes them
    /// out with `None`.
    fn move_holder(&mut self, catalog: &mut Catalog, idx: u32, to: Option<(u32, u32)>) {
        let slot = &self.slots[idx as usize];
        let Some(live) = slot.live.as_ref() else { return };
        let from = (slot.site, slot.region);
        if to == Some(from) {
            return;
        }
        catalog.move_holder(idx, &live.held, from, to);
    }

    /// Adds or removes the node's held chunks and in-flight fetches from the per-chunk counts.
    fn set_eligible(&mut self, catalog: &mut Catalog, idx: u32, eligible: bool) {
        let Some(live) = self.slots[idx as usize].live.as_mut() else { return };
        if live.eligible == eligible {
            return;
        }
        live.eligible = eligible;
        self.layout_epoch += 1;
        catalog.count_node(live, eligible);
    }

    /// Keeps the free-source sets exact: eligible appliances with a spare upload slot.
    pub(super) fn update_free(&mut self, idx: u32) {
        let slot = &self.slots[idx as usize];
        let free = slot.live.as_ref().is_some_and(|l| l.eligible) && slot.load < slot.upload_slots;
        if free == self.free.flags[idx as usize] {
            return;
        }
        self.free.set(idx, slot.site, slot.region, free);
    }

    /// Records `fetch` of chunk `c` of title `t` in flight to node `idx`, until
    /// `fetch.expires`.
    pub(super) fn add_inflight(&mut self, catalog: &mut Catalog, idx: u32, t: u32, c: u32, fetch: Inflight) {
        let Some(live) = self.slots[idx as usize].live.as_mut() else { return };
        live.inflight.insert((t, c), fetch);
        if fetch.from_origin {
            live.origin_inflight += 1;
        }
        if live.eligible {
            catalog.count_inflight(t, c, true);
        }
        self.expiries.insert((fetch.expires, idx, t, c));
        self.slots[fetch.source as usize].load += 1;
        self.update_free(fetch.source);
    }

    pub(super) fn drop_inflight(&mut self, catalog: &mut Catalog, idx: u32, t: u32, c: u32) {
        let Some(live) = self.slots[idx as usize].live.as_mut() else { return };
        let Some(entry) = live.inflight.remove(&(t, c)) else { return };
        if entry.from_origin {
            live.origin_inflight -= 1;
        }
        if live.eligible {
            catalog.count_inflight(t, c, false);
        }
        self.expiries.remove(&(entry.expires, idx, t, c));
        let source = &mut self.slots[entry.source as usize];
        source.load = source.load.saturating_sub(1);
        self.update_free(entry.source);
    }

    /// Enters a live node's deadlines and client prefixes.
    fn index(&mut self, config: &Config, idx: u32) {
        self.add_deadlines(config, idx);
        if let Some(reg) = &self.slots[idx as usize].registration {
            for p in &reg.prefixes {
                self.prefixes.entry(*p).or_default().insert(idx);
            }
        }
    }

    fn unindex(&mut self, config: &Config, idx: u32) {
        self.remove_deadlines(config, idx);
        if self.slots[idx as usize].live.is_none() {
            return;
        }
        if let Some(reg) = &self.slots[idx as usize].registration {
            for p in &reg.prefixes {
                if let Some(set) = self.prefixes.get_mut(p) {
                    set.remove(&idx);
                    if set.is_empty() {
                        self.prefixes.remove(p);
                    }
                }
            }
        }
        if self.free.flags[idx as usize] {
            let slot = &self.slots[idx as usize];
            self.free.set(idx, slot.site, slot.region, false);
        }
    }

    fn deadline_times(&self, config: &Config, idx: u32) -> Option<[Millis; 2]> {
        let live = self.slots[idx as usize].live.as_ref()?;
        Some([
            live.last_heartbeat.saturating_add(config.unhealthy_after_ms),
            live.last_heartbeat.saturating_add(config.gone_after_ms),
        ])
    }

    fn add_deadlines(&mut self, config: &Config, idx: u32) {
        for at in self.deadline_times(config, idx).into_iter().flatten() {
            self.deadlines.insert((at, idx));
        }
    }

    fn remove_deadlines(&mut self, config: &Config, idx: u32) {
        for at in self.deadline_times(config, idx).into_iter().flatten() {
            self.deadlines.remove(&(at, idx));
        }
    }

    fn intern_region(&mut self, region: &str) -> u32 {
        let next = u32::try_from(self.regions.len()).unwrap_or(u32::MAX);
        *self.regions.entry(region.to_owned()).or_insert(next)
    }

    fn intern_site(&mut self, region: &str, site: &str) -> u32 {
        let next = u32::try_from(self.sites.len()).unwrap_or(u32::MAX);
        *self.sites.entry((region.to_owned(), site.to_owned())).or_insert(next)
    }
}
