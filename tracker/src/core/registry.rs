//! Who is there: node slots, health and liveness over time, and the bookkeeping that keeps the
//! planner's counts (holders, in-flight fetches, free sources) in step with them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use fillmesh_protocol::messages::{Heartbeat, Registration, Role};
use fillmesh_protocol::{ChunkBitmap, NodeId};

use super::{hash, Millis, Tracker};

/// Sources one reporter can have excluded at once; a further report drops its oldest
/// exclusion. Honest appliances rarely meet more than a few liars, and a lying reporter
/// can cost the tracker no more than this per node.
pub(crate) const MAX_EXCLUDED: usize = 64;

/// Who reported a corrupt chunk from a node: another node (by slot), or a player, known by
/// the address its report came from ([`Reporter::player`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Reporter {
    Node(u32),
    Player(IpAddr),
}

impl Reporter {
    /// A player at `addr`: an IPv4 address as it is, an IPv6 address by its /64 (a host
    /// usually has a whole /64, so its addresses count as one reporter), an IPv4-mapped
    /// IPv6 address as the IPv4 address it maps.
    pub(crate) fn player(addr: IpAddr) -> Self {
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
    /// holds a chunk of them (see `Tracker::victims`).
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

impl Tracker {
    pub(super) fn intern(&mut self, node: &NodeId) -> u32 {
        if let Some(&i) = self.lookup.get(node) {
            return i;
        }
        let i = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(Slot {
            id: node.clone(),
            hash: hash::bytes(self.config.seed, node.as_str().as_bytes()),
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
        self.free.push(false);
        i
    }

    /// Upload slots of a node: one per [`Config::slot_bps`] of upload, clamped to
    /// [`Config::min_slots`] and [`Config::max_slots`] ([`Config::max_origin_slots`] for the
    /// origin, which sends every chunk once and so should keep its whole upload busy), plus
    /// [`Config::spare_slots`].
    pub(super) fn slots_for(&self, role: Role, upload_bps: u64) -> u32 {
        let c = &self.config;
        let n = upload_bps.checked_div(c.slot_bps).unwrap_or(u64::MAX);
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let max = if role == Role::Origin { c.max_origin_slots } else { c.max_slots };
        n.clamp(c.min_slots, max.max(c.min_slots)).saturating_add(c.spare_slots)
    }

    /// Healthy as of `now`: connected, reporting itself healthy, and heard from recently.
    pub(super) fn healthy_at(&self, idx: u32, now: Millis) -> bool {
        let Some(live) = &self.slots[idx as usize].live else { return false };
        !live.lost
            && live.heartbeat.is_none_or(|h| h.healthy)
            && now.saturating_sub(live.last_heartbeat) < self.config.unhealthy_after_ms
    }

    fn role(&self, idx: u32) -> Option<Role> {
        self.slots[idx as usize].registration.as_ref().map(|r| r.role)
    }

    /// A possible peer source and holder: a healthy, non-bad appliance.
    pub(super) fn eligible_at(&self, idx: u32, now: Millis) -> bool {
        let slot = &self.slots[idx as usize];
        !slot.bad && self.role(idx) == Some(Role::Appliance) && self.healthy_at(idx, now)
    }

    /// The origin, if it may serve as of `now`.
    pub(super) fn origin_ready(&self, now: Millis) -> Option<u32> {
        let o = self.origin?;
        let slot = &self.slots[o as usize];
        (!slot.bad && self.healthy_at(o, now) && slot.load < slot.upload_slots).then_some(o)
    }

    pub(super) fn do_register(&mut self, now: Millis, idx: u32, registration: Registration) {
        self.members_epoch += 1;
        self.set_eligible(idx, false);
        self.unindex(idx);
        let region = self.intern_region(&registration.region);
        let site = self.intern_site(&registration.region, &registration.site);
        // Held chunks stay listed under the node's site and region: move them if it moved.
        self.move_holder(idx, Some((site, region)));
        let upload_slots = self.slots_for(registration.role, registration.upload_bps);
        if registration.role == Role::Origin && self.origin != Some(idx) {
            self.layout_epoch += 1;
        }
        match registration.role {
            Role::Origin => self.origin = Some(idx),
            _ if self.origin == Some(idx) => self.origin = None,
            _ => {}
        }
        let weight =
            registration.upload_bps.max(u64::from(upload_slots).saturating_mul(self.config.slot_bps)).max(1);
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
        self.index(idx);
        self.refresh(idx, now);
    }

    pub(super) fn do_heartbeat(&mut self, now: Millis, idx: u32, heartbeat: Heartbeat) {
        if let Some(live) = self.slots[idx as usize].live.as_mut() {
            live.heartbeat = Some(heartbeat);
            live.steered = 0;
        }
        self.do_alive(now, idx);
    }

    /// The node was heard from (a heartbeat, or a fill summary, which keeps the last
    /// heartbeat's figures): alive as of `now`.
    pub(super) fn do_alive(&mut self, now: Millis, idx: u32) {
        self.remove_deadlines(idx);
        if let Some(live) = self.slots[idx as usize].live.as_mut() {
            live.last_heartbeat = now;
            live.lost = false;
        }
        self.add_deadlines(idx);
        self.refresh(idx, now);
    }

    pub(super) fn do_lost(&mut self, now: Millis, idx: u32) {
        if let Some(live) = self.slots[idx as usize].live.as_mut() {
            live.lost = true;
        }
        self.refresh(idx, now);
    }

    /// `reporter` got a corrupt chunk from `source`: `reporter` is not sent to it again, and
    /// `source` is bad once [`Config::corrupt_quorum`](super::Config::corrupt_quorum) distinct
    /// reporters agree.
    pub(super) fn note_corrupt(&mut self, now: Millis, reporter: u32, source: u32) {
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
            self.count_corrupt(now, Reporter::Node(reporter), source);
        }
    }

    /// One more reporter of a corrupt chunk from `source`: counted once however often it
    /// reports, and `source` bad once the quorum of distinct reporters is reached.
    pub(super) fn count_corrupt(&mut self, now: Millis, reporter: Reporter, source: u32) {
        let quorum = self.config.quorum();
        let slot = &mut self.slots[source as usize];
        if slot.corrupt_reporters.len() < quorum && !slot.corrupt_reporters.contains(&reporter) {
            slot.corrupt_reporters.push(reporter);
        }
        if slot.corrupt_reporters.len() >= quorum && !slot.bad {
            slot.bad = true;
            self.members_epoch += 1;
            self.refresh(source, now);
        }
    }

    /// Whether `a` reported `source` corrupt (and so must not be sent to it).
    pub(super) fn excludes(&self, a: u32, source: u32) -> bool {
        self.slots[a as usize].excluded.contains(&source)
    }

    /// Expires assignments and applies the health and liveness transitions due by `now`.
    pub(super) fn advance(&mut self, now: Millis) {
        while let Some(&(at, node, title, chunk)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.drop_inflight(node, title, chunk);
        }
        while let Some(&(at, idx)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.refresh(idx, now);
        }
    }

    /// When [`Tracker::tick`] next has work: the earliest assignment expiry or node health
    /// or liveness deadline, as quinn-proto's `poll_timeout`. `None` while nothing waits. A
    /// shell sleeps until then; any other call may bring it earlier, so ask again after one.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let expiry = self.expiries.first().map(|&(at, ..)| at);
        let deadline = self.deadlines.first().map(|&(at, _)| at);
        expiry.into_iter().chain(deadline).min()
    }

    /// Brings one node's derived state in line with `now`: forgets it when gone, and moves
    /// it in or out of the planner's counts when its eligibility changed.
    fn refresh(&mut self, idx: u32, now: Millis) {
        let Some(live) = &self.slots[idx as usize].live else { return };
        if now.saturating_sub(live.last_heartbeat) >= self.config.gone_after_ms {
            self.forget(idx);
            return;
        }
        let eligible = self.eligible_at(idx, now);
        self.set_eligible(idx, eligible);
        self.update_free(idx);
    }

    /// The node is gone: its held maps and the fetches it had in flight are dropped. Fetches
    /// others have in flight from it stay until they complete, fail or expire.
    fn forget(&mut self, idx: u32) {
        self.members_epoch += 1;
        self.set_eligible(idx, false);
        self.unindex(idx);
        let inflight: Vec<(u32, u32)> = self.slots[idx as usize]
            .live
            .as_ref()
            .map(|l| l.inflight.keys().copied().collect())
            .unwrap_or_default();
        for (t, c) in inflight {
            self.drop_inflight(idx, t, c);
        }
        for t in &mut self.titles {
            t.complete.remove(&idx);
        }
        self.move_holder(idx, None);
        if self.origin == Some(idx) {
            self.origin = None;
        }
        self.slots[idx as usize].live = None;
        self.update_free(idx);
    }

    /// Moves a live node's entries in the holder lists to `to` (site, region), or takes them
    /// out with `None`.
    fn move_holder(&mut self, idx: u32, to: Option<(u32, u32)>) {
        let slot = &self.slots[idx as usize];
        let Some(live) = slot.live.as_ref() else { return };
        let from = (slot.site, slot.region);
        if to == Some(from) {
            return;
        }
        for (&t, map) in &live.held {
            let title = &mut self.titles[t as usize];
            for c in map.iter() {
                title.remove_holder(idx, from.0, from.1, c);
                if let Some((site, region)) = to {
                    title.add_holder(idx, site, region, c);
                }
            }
        }
    }

    /// Adds or removes the node's held chunks and in-flight fetches from the per-chunk counts.
    fn set_eligible(&mut self, idx: u32, eligible: bool) {
        let Some(live) = self.slots[idx as usize].live.as_mut() else { return };
        if live.eligible == eligible {
            return;
        }
        live.eligible = eligible;
        self.layout_epoch += 1;
        for (&t, map) in &live.held {
            let counts = &mut self.titles[t as usize].holders;
            for c in map.iter() {
                bump(&mut counts[c as usize], eligible);
            }
        }
        for &(t, c) in live.inflight.keys() {
            bump(&mut self.titles[t as usize].inflight[c as usize], eligible);
        }
    }

    /// Keeps the free-source sets exact: eligible appliances with a spare upload slot.
    pub(super) fn update_free(&mut self, idx: u32) {
        let slot = &self.slots[idx as usize];
        let free = slot.live.as_ref().is_some_and(|l| l.eligible) && slot.load < slot.upload_slots;
        if free == self.free[idx as usize] {
            return;
        }
        let (region, site) = (slot.region, slot.site);
        self.free[idx as usize] = free;
        let site_set = self.free_site.entry(site).or_default();
        let region_set = self.free_region.entry(region).or_default();
        if free {
            site_set.insert(idx);
            region_set.insert(idx);
            self.free_all.insert(idx);
        } else {
            site_set.remove(&idx);
            region_set.remove(&idx);
            self.free_all.remove(&idx);
        }
    }

    pub(super) fn add_inflight(
        &mut self,
        idx: u32,
        t: u32,
        c: u32,
        source: u32,
        now: Millis,
        from_origin: bool,
    ) {
        let expires = now.saturating_add(self.config.assignment_ttl_ms);
        let Some(live) = self.slots[idx as usize].live.as_mut() else { return };
        live.inflight.insert((t, c), Inflight { source, expires, from_origin });
        if from_origin {
            live.origin_inflight += 1;
        }
        if live.eligible {
            self.titles[t as usize].inflight[c as usize] += 1;
        }
        self.expiries.insert((expires, idx, t, c));
        self.slots[source as usize].load += 1;
        self.update_free(source);
    }

    pub(super) fn drop_inflight(&mut self, idx: u32, t: u32, c: u32) {
        let Some(live) = self.slots[idx as usize].live.as_mut() else { return };
        let Some(entry) = live.inflight.remove(&(t, c)) else { return };
        if entry.from_origin {
            live.origin_inflight -= 1;
        }
        if live.eligible {
            self.titles[t as usize].inflight[c as usize] -= 1;
        }
        self.expiries.remove(&(entry.expires, idx, t, c));
        let source = &mut self.slots[entry.source as usize];
        source.load = source.load.saturating_sub(1);
        self.update_free(entry.source);
    }

    /// Enters a live node's deadlines and client prefixes.
    fn index(&mut self, idx: u32) {
        self.add_deadlines(idx);
        if let Some(reg) = &self.slots[idx as usize].registration {
            for p in &reg.prefixes {
                self.prefixes.entry(*p).or_default().insert(idx);
            }
        }
    }

    fn unindex(&mut self, idx: u32) {
        self.remove_deadlines(idx);
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
        if self.free[idx as usize] {
            self.free[idx as usize] = false;
            let slot = &self.slots[idx as usize];
            let (region, site) = (slot.region, slot.site);
            self.free_site.entry(site).or_default().remove(&idx);
            self.free_region.entry(region).or_default().remove(&idx);
            self.free_all.remove(&idx);
        }
    }

    fn deadline_times(&self, idx: u32) -> Option<[Millis; 2]> {
        let live = self.slots[idx as usize].live.as_ref()?;
        let c = &self.config;
        Some([
            live.last_heartbeat.saturating_add(c.unhealthy_after_ms),
            live.last_heartbeat.saturating_add(c.gone_after_ms),
        ])
    }

    fn add_deadlines(&mut self, idx: u32) {
        for at in self.deadline_times(idx).into_iter().flatten() {
            self.deadlines.insert((at, idx));
        }
    }

    fn remove_deadlines(&mut self, idx: u32) {
        for at in self.deadline_times(idx).into_iter().flatten() {
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

fn bump(count: &mut u32, up: bool) {
    if up {
        *count += 1;
    } else {
        *count -= 1;
    }
}
