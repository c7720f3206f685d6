//! What `fillmesh status` shows, and read-only views for tests and the simulator.

use std::collections::BTreeMap;

use fillmesh_protocol::messages::Role;
use fillmesh_protocol::{NodeId, TitleId};

use super::registry::{Reporter, MAX_EXCLUDED};
use super::{ApplianceStatus, ByteClass, Millis, Status, TitleStatus, Tracker};

impl Tracker {
    pub(super) fn do_status(&self, now: Millis) -> Status {
        let mut appliances = Vec::new();
        for &idx in self.ids.values() {
            let slot = &self.slots[idx as usize];
            let (Some(live), Some(reg)) = (&slot.live, &slot.registration) else { continue };
            let role = match reg.role {
                Role::Appliance => "appliance",
                Role::Origin => "origin",
                _ => continue,
            };
            let held_bytes = live
                .held
                .iter()
                .map(|(&t, map)| {
                    let m = &self.titles[t as usize].manifest;
                    map.iter().map(|c| m.chunk_len(c).unwrap_or(0)).sum::<u64>()
                })
                .sum();
            appliances.push(ApplianceStatus {
                peer_id: slot.id.to_string(),
                addr: reg.mesh_addr.to_string(),
                role: role.into(),
                site: reg.site.clone(),
                region: reg.region.clone(),
                healthy: self.healthy_at(idx, now),
                bad: slot.bad,
                corrupt_reports: u32::try_from(slot.corrupt_reporters.len()).unwrap_or(u32::MAX),
                held_bytes,
                uploads_in_flight: slot.load,
                upload_slots: slot.upload_slots,
                player_sessions: live.heartbeat.map_or(0, |h| h.player_sessions),
                held_chunks: live
                    .held
                    .iter()
                    .map(|(&t, map)| (self.titles[t as usize].id.to_string(), map.count()))
                    .collect(),
            });
        }
        let titles = self
            .titles
            .iter()
            .map(|t| {
                let complete = t
                    .complete
                    .iter()
                    .filter(|&&n| {
                        let slot = &self.slots[n as usize];
                        slot.live.is_some()
                            && slot.registration.as_ref().map(|r| r.role) == Some(Role::Appliance)
                    })
                    .count();
                let by_class: BTreeMap<String, u64> =
                    ByteClass::ALL.iter().map(|&c| (c.key().to_owned(), t.bytes[c as usize])).collect();
                let origin = t.bytes[ByteClass::Origin as usize];
                TitleStatus {
                    id: t.id.to_string(),
                    name: t.name.clone(),
                    size: t.manifest.len(),
                    chunks: t.manifest.chunk_count(),
                    complete_appliances: u32::try_from(complete).unwrap_or(u32::MAX),
                    origin_bytes: origin,
                    peer_bytes: t.bytes.iter().sum::<u64>() - origin,
                    bytes_by_class: by_class,
                    last_wanted_ms: t.last_wanted,
                    owner: self.owner(&t.id).map(|o| o.to_string()),
                }
            })
            .collect();
        Status { appliances, titles, trackers: self.tracker_statuses() }
    }

    /// Every in-flight assignment: (appliance, title, chunk, first source), sorted.
    #[doc(hidden)]
    pub fn debug_inflight(&self) -> Vec<(NodeId, TitleId, u32, NodeId)> {
        let mut out = Vec::new();
        for slot in &self.slots {
            let Some(live) = &slot.live else { continue };
            for (&(t, c), f) in &live.inflight {
                out.push((
                    slot.id.clone(),
                    self.titles[t as usize].id,
                    c,
                    self.slots[f.source as usize].id.clone(),
                ));
            }
        }
        out.sort();
        out
    }

    /// In-flight assignments naming `node` as first source, and its upload slots.
    #[doc(hidden)]
    pub fn debug_load(&self, node: &NodeId) -> Option<(u32, u32)> {
        let slot = &self.slots[*self.lookup.get(node)? as usize];
        Some((slot.load, slot.upload_slots))
    }

    /// Recomputes every incrementally kept count from scratch and says where they differ.
    #[doc(hidden)]
    pub fn debug_validate(&self, now: Millis) -> Result<(), String> {
        let mut holders: Vec<Vec<u32>> = self.titles.iter().map(|t| vec![0; t.holders.len()]).collect();
        let mut inflight = holders.clone();
        let mut load = vec![0u32; self.slots.len()];
        let mut expiries = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            let i = i as u32;
            let Some(live) = &slot.live else {
                if self.free[i as usize] {
                    return Err(format!("gone node {} is free", slot.id));
                }
                continue;
            };
            if live.eligible != self.eligible_at(i, now) {
                return Err(format!(
                    "node {} eligible {} but should be {}",
                    slot.id, live.eligible, !live.eligible
                ));
            }
            let free = live.eligible && slot.load < slot.upload_slots;
            if free != self.free[i as usize] || free != self.free_all.contains(&i) {
                return Err(format!("node {} free flag wrong", slot.id));
            }
            if live.eligible {
                for (&t, map) in &live.held {
                    for c in map.iter() {
                        holders[t as usize][c as usize] += 1;
                    }
                }
            }
            let mut from_origin = 0;
            for (&(t, c), f) in &live.inflight {
                if live.eligible {
                    inflight[t as usize][c as usize] += 1;
                }
                load[f.source as usize] += 1;
                from_origin += u32::from(f.from_origin);
                expiries += 1;
                if !self.expiries.contains(&(f.expires, i, t, c)) {
                    return Err(format!("no expiry for {} {t} {c}", slot.id));
                }
            }
            if from_origin != live.origin_inflight {
                return Err(format!(
                    "node {} origin in flight {} != {from_origin}",
                    slot.id, live.origin_inflight
                ));
            }
        }
        for (t, title) in self.titles.iter().enumerate() {
            if title.holders != holders[t] {
                return Err(format!("holder counts of title {t} differ"));
            }
            if title.inflight != inflight[t] {
                return Err(format!("in-flight counts of title {t} differ"));
            }
        }
        for (slot, &l) in self.slots.iter().zip(&load) {
            if slot.load != l {
                return Err(format!("node {} load {} != {l}", slot.id, slot.load));
            }
        }
        if expiries != self.expiries.len() {
            return Err("stray expiries".into());
        }
        let catalog = self.titles.iter().fold(0u64, |sum, t| sum.saturating_add(t.manifest.len()));
        if catalog != self.catalog_bytes {
            return Err(format!("catalog bytes {} != {catalog}", self.catalog_bytes));
        }
        self.validate_holder_lists()?;
        self.validate_corrupt_reports()?;
        let free_sites: usize = self.free_site.values().map(|s| s.len()).sum();
        let free_regions: usize = self.free_region.values().map(|s| s.len()).sum();
        if free_sites != self.free_all.len() || free_regions != self.free_all.len() {
            return Err("free sets disagree".into());
        }
        Ok(())
    }

    /// Reporter and exclusion lists are distinct, within their bounds and name real nodes; a
    /// node is bad exactly when the quorum reported it; a reporter excludes what it reported
    /// unless its list is full (the oldest were dropped).
    fn validate_corrupt_reports(&self) -> Result<(), String> {
        let quorum = self.config.quorum();
        let distinct_nodes = |list: &[u32]| {
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            sorted.len() == list.len() && sorted.last().is_none_or(|&i| (i as usize) < self.slots.len())
        };
        for (i, slot) in self.slots.iter().enumerate() {
            let (reporters, excluded) = (&slot.corrupt_reporters, &slot.excluded);
            let mut distinct = reporters.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let nodes: Vec<u32> = reporters
                .iter()
                .filter_map(|r| match r {
                    Reporter::Node(n) => Some(*n),
                    Reporter::Player(_) => None,
                })
                .collect();
            if distinct.len() != reporters.len()
                || !distinct_nodes(&nodes)
                || reporters.len() > quorum
                || slot.bad != (reporters.len() == quorum)
            {
                return Err(format!("node {}: corrupt reporters {reporters:?}, bad {}", slot.id, slot.bad));
            }
            if !distinct_nodes(excluded) || excluded.len() > MAX_EXCLUDED {
                return Err(format!("node {}: excluded {excluded:?}", slot.id));
            }
            for &r in &nodes {
                let by = &self.slots[r as usize].excluded;
                if by.len() < MAX_EXCLUDED && !by.contains(&(i as u32)) {
                    return Err(format!(
                        "{} reported {} corrupt but does not exclude it",
                        self.slots[r as usize].id, slot.id
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where a title's holder lists are kept, every live node holding a chunk is listed
    /// exactly once for it overall, under its site and under its region, and nobody else is.
    fn validate_holder_lists(&self) -> Result<(), String> {
        type Key = (u32, u32, u32);
        let (mut all, mut sites, mut regions): (Vec<Key>, Vec<Key>, Vec<Key>) = Default::default();
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(live) = &slot.live else { continue };
            for (&t, map) in &live.held {
                if self.titles[t as usize].lists.is_none() {
                    continue;
                }
                for c in map.iter() {
                    all.push((t, c, i as u32));
                    sites.push((t, c, i as u32));
                    regions.push((t, c, i as u32));
                }
            }
        }
        let (mut got_all, mut got_sites, mut got_regions): (Vec<Key>, Vec<Key>, Vec<Key>) =
            Default::default();
        for (t, title) in self.titles.iter().enumerate() {
            let t = t as u32;
            let Some(kept) = &title.lists else { continue };
            for (c, list) in kept.all.iter().enumerate() {
                got_all.extend(list.iter().map(|&n| (t, c as u32, n)));
            }
            for (lists, got, is_site) in
                [(&kept.sites, &mut got_sites, true), (&kept.regions, &mut got_regions, false)]
            {
                for (place, c, list) in lists.iter() {
                    if list.is_empty() {
                        return Err(format!("empty holder list kept for title {t} chunk {c}"));
                    }
                    for &n in list {
                        let slot = &self.slots[n as usize];
                        if place != if is_site { slot.site } else { slot.region } {
                            return Err(format!("{} listed for chunk {c} under another place", slot.id));
                        }
                        got.push((t, c, n));
                    }
                }
            }
        }
        for (want, got, what) in [
            (all, got_all, "holder"),
            (sites, got_sites, "site holder"),
            (regions, got_regions, "region holder"),
        ] {
            let (mut want, mut got) = (want, got);
            want.sort_unstable();
            got.sort_unstable();
            if want != got {
                return Err(format!("{what} lists differ from the held maps"));
            }
        }
        Ok(())
    }
}
