//! What `fillmesh status` shows, and read-only views for tests and the simulator.

use std::collections::BTreeMap;

use fillmesh_protocol::messages::Role;
use fillmesh_protocol::{NodeId, TitleId};

use super::catalog::Catalog;
use super::fleet::Fleet;
use super::registry::{Registry, Reporter, MAX_EXCLUDED};
use super::window::Windows;
use super::{ApplianceStatus, ByteClass, Config, Millis, Status, TitleStatus};

/// Where a count the tracker keeps up to date event by event differs from the same count
/// made again from scratch (`Tracker::debug_validate`): a bug in the core, whatever the
/// events were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Inconsistency {
    /// A node forgotten as gone is still flagged as a free source.
    #[error("gone node {0} is free")]
    GoneNodeFree(NodeId),
    /// A node's kept eligibility (a healthy, non-bad appliance, counted in the per-chunk
    /// counts) is not what its state as of `now` makes it.
    #[error("node {node} eligible {eligible} but should be {}", !eligible)]
    Eligibility {
        /// The node.
        node: NodeId,
        /// Its eligibility as kept.
        eligible: bool,
    },
    /// A node's free-source flag, or its place in the set of free sources, is not "eligible
    /// with an upload slot to spare".
    #[error("node {0} free flag wrong")]
    FreeFlag(NodeId),
    /// An in-flight assignment has no entry in the expiry queue, so it would never expire.
    #[error("no expiry for {node} {title} {chunk}")]
    NoExpiry {
        /// The appliance fetching.
        node: NodeId,
        /// The title, by its index in the catalog (publish order).
        title: u32,
        /// The chunk.
        chunk: u32,
    },
    /// A node's kept count of fetches in flight from the origin differs from its in-flight
    /// assignments'.
    #[error("node {node} origin in flight {kept} != {counted}")]
    OriginInflight {
        /// The appliance fetching.
        node: NodeId,
        /// The count as kept.
        kept: u32,
        /// The count made again from its assignments.
        counted: u32,
    },
    /// A title's per-chunk holder counts (by catalog index) differ from the eligible nodes'
    /// held maps.
    #[error("holder counts of title {0} differ")]
    HolderCounts(usize),
    /// A title's per-chunk in-flight counts (by catalog index) differ from the eligible nodes'
    /// in-flight assignments.
    #[error("in-flight counts of title {0} differ")]
    InflightCounts(usize),
    /// A node's kept load (in-flight assignments naming it first source) differs from the
    /// assignments.
    #[error("node {node} load {kept} != {counted}")]
    Load {
        /// The source.
        node: NodeId,
        /// Its load as kept.
        kept: u32,
        /// Its load counted again from every node's assignments.
        counted: u32,
    },
    /// The expiry queue holds entries that no in-flight assignment has.
    #[error("stray expiries")]
    StrayExpiries,
    /// The catalog's kept total of title bytes differs from the sum of its titles' lengths.
    #[error("catalog bytes {kept} != {counted}")]
    CatalogBytes {
        /// The total as kept.
        kept: u64,
        /// The titles' lengths summed again.
        counted: u64,
    },
    /// A node's corrupt reporters repeat one, name no node, exceed the quorum, or disagree
    /// with its bad mark (bad exactly when the quorum is reached).
    /// `reporters` is the list as the registry keeps it, for the reader.
    #[error("node {node}: corrupt reporters {reporters}, bad {bad}")]
    CorruptReporters {
        /// The node reported.
        node: NodeId,
        /// Its reporters (nodes by slot index, players by address), formatted.
        reporters: String,
        /// Whether it is marked bad.
        bad: bool,
    },
    /// A node's exclusions repeat one, name no node or are more than `MAX_EXCLUDED` (64).
    #[error("node {node}: excluded {excluded:?}")]
    Excluded {
        /// The node that excludes.
        node: NodeId,
        /// Its exclusions as kept, by slot index.
        excluded: Vec<u32>,
    },
    /// A node that reported another corrupt does not exclude it, though its exclusions have
    /// room.
    #[error("{reporter} reported {accused} corrupt but does not exclude it")]
    NotExcluded {
        /// The node that reported.
        reporter: NodeId,
        /// The node it reported.
        accused: NodeId,
    },
    /// A site or region holder list is kept empty instead of being removed.
    #[error("empty holder list kept for title {title} chunk {chunk}")]
    EmptyHolderList {
        /// The title, by its index in the catalog (publish order).
        title: u32,
        /// The chunk.
        chunk: u32,
    },
    /// A node is listed as a chunk's holder under a site or region that is not its own.
    #[error("{node} listed for chunk {chunk} under another place")]
    MisplacedHolder {
        /// The node listed.
        node: NodeId,
        /// The chunk.
        chunk: u32,
    },
    /// A title's holder lists, where it keeps them, do not list exactly the live nodes holding
    /// each chunk.
    /// Which lists: "holder", "site holder" or "region holder".
    #[error("{0} lists differ from the held maps")]
    HolderLists(&'static str),
    /// The free sources by site, or by region, do not add up to the free sources overall.
    #[error("free sets disagree")]
    FreeSets,
}

/// `HH:MM` of a minute of the day.
fn hm(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// Everything `fillmesh status` prints, as of `now`.
pub(super) fn status(
    config: &Config,
    registry: &Registry,
    catalog: &Catalog,
    fleet: &Fleet,
    windows: &Windows,
    now: Millis,
) -> Status {
    let mut appliances = Vec::new();
    for &idx in registry.ids.values() {
        let slot = &registry.slots[idx as usize];
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
                let m = &catalog.title(t).shape;
                map.iter().map(|c| m.chunk_len(c).unwrap_or(0)).sum::<u64>()
            })
            .sum();
        appliances.push(ApplianceStatus {
            peer_id: slot.id.to_string(),
            addr: reg.mesh_addr.to_string(),
            role: role.into(),
            site: reg.site.clone(),
            region: reg.region.clone(),
            healthy: registry.healthy_at(config, idx, now),
            bad: slot.bad,
            corrupt_reports: u32::try_from(slot.corrupt_reporters.len()).unwrap_or(u32::MAX),
            held_bytes,
            uploads_in_flight: slot.load,
            upload_slots: slot.upload_slots,
            player_sessions: live.heartbeat.map_or(0, |h| h.player_sessions),
            held_chunks: live
                .held
                .iter()
                .map(|(&t, map)| (catalog.title(t).id.to_string(), map.count()))
                .collect(),
            fill_window: windows
                .ranges(idx)
                .iter()
                .map(|r| format!("{}-{}", hm(r.start), hm(r.end)))
                .collect(),
            fill_window_open: windows.open(idx),
        });
    }
    let titles = catalog
        .titles()
        .iter()
        .map(|t| {
            let complete = t
                .complete
                .iter()
                .filter(|&&n| {
                    let slot = &registry.slots[n as usize];
                    slot.live.is_some() && slot.registration.as_ref().map(|r| r.role) == Some(Role::Appliance)
                })
                .count();
            let by_class: BTreeMap<String, u64> =
                ByteClass::ALL.iter().map(|&c| (c.key().to_owned(), t.bytes[c as usize])).collect();
            let origin = t.bytes[ByteClass::Origin as usize];
            TitleStatus {
                id: t.id.to_string(),
                name: t.name.clone(),
                size: t.shape.len(),
                chunks: t.shape.chunk_count(),
                files: u32::try_from(t.shape.file_count()).unwrap_or(u32::MAX),
                package: t.shape.is_package(),
                complete_appliances: u32::try_from(complete).unwrap_or(u32::MAX),
                origin_bytes: origin,
                peer_bytes: t.bytes.iter().sum::<u64>() - origin,
                bytes_by_class: by_class,
                last_wanted_ms: t.last_wanted,
                owner: fleet.owner(&t.id).map(|o| o.to_string()),
                urgent: t.urgent,
            }
        })
        .collect();
    Status { appliances, titles, trackers: fleet.statuses() }
}

/// Every in-flight assignment: (appliance, title, chunk, first source), sorted.
pub(super) fn inflight(registry: &Registry, catalog: &Catalog) -> Vec<(NodeId, TitleId, u32, NodeId)> {
    let mut out = Vec::new();
    for slot in &registry.slots {
        let Some(live) = &slot.live else { continue };
        for (&(t, c), f) in &live.inflight {
            out.push((slot.id.clone(), catalog.title(t).id, c, registry.slots[f.source as usize].id.clone()));
        }
    }
    out.sort();
    out
}

/// In-flight assignments naming `node` as first source, and its upload slots.
pub(super) fn load(registry: &Registry, node: &NodeId) -> Option<(u32, u32)> {
    let slot = &registry.slots[registry.index_of(node)? as usize];
    Some((slot.load, slot.upload_slots))
}

/// Recomputes every incrementally kept count from scratch and says where they differ.
pub(super) fn validate(
    config: &Config,
    registry: &Registry,
    catalog: &Catalog,
    now: Millis,
) -> Result<(), Inconsistency> {
    let (slots, free) = (&registry.slots, &registry.free);
    let mut holders: Vec<Vec<u32>> = catalog.titles().iter().map(|t| vec![0; t.holders.len()]).collect();
    let mut inflight = holders.clone();
    let mut load = vec![0u32; slots.len()];
    let mut expiries = 0;
    for (i, slot) in slots.iter().enumerate() {
        let i = i as u32;
        let Some(live) = &slot.live else {
            if free.flags[i as usize] {
                return Err(Inconsistency::GoneNodeFree(slot.id.clone()));
            }
            continue;
        };
        if live.eligible != registry.eligible_at(config, i, now) {
            return Err(Inconsistency::Eligibility { node: slot.id.clone(), eligible: live.eligible });
        }
        let is_free = live.eligible && slot.load < slot.upload_slots;
        if is_free != free.flags[i as usize] || is_free != free.all.contains(&i) {
            return Err(Inconsistency::FreeFlag(slot.id.clone()));
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
            if !registry.expiries.contains(&(f.expires, i, t, c)) {
                return Err(Inconsistency::NoExpiry { node: slot.id.clone(), title: t, chunk: c });
            }
        }
        if from_origin != live.origin_inflight {
            return Err(Inconsistency::OriginInflight {
                node: slot.id.clone(),
                kept: live.origin_inflight,
                counted: from_origin,
            });
        }
    }
    for (t, title) in catalog.titles().iter().enumerate() {
        if title.holders != holders[t] {
            return Err(Inconsistency::HolderCounts(t));
        }
        if title.inflight != inflight[t] {
            return Err(Inconsistency::InflightCounts(t));
        }
    }
    for (slot, &l) in slots.iter().zip(&load) {
        if slot.load != l {
            return Err(Inconsistency::Load { node: slot.id.clone(), kept: slot.load, counted: l });
        }
    }
    if expiries != registry.expiries.len() {
        return Err(Inconsistency::StrayExpiries);
    }
    let bytes = catalog.titles().iter().fold(0u64, |sum, t| sum.saturating_add(t.shape.len()));
    if bytes != catalog.bytes() {
        return Err(Inconsistency::CatalogBytes { kept: catalog.bytes(), counted: bytes });
    }
    validate_holder_lists(registry, catalog)?;
    validate_corrupt_reports(config, registry)?;
    let free_sites: usize = free.site.values().map(|s| s.len()).sum();
    let free_regions: usize = free.region.values().map(|s| s.len()).sum();
    if free_sites != free.all.len() || free_regions != free.all.len() {
        return Err(Inconsistency::FreeSets);
    }
    Ok(())
}

/// Reporter and exclusion lists are distinct, within their bounds and name real nodes; a
/// node is bad exactly when the quorum reported it; a reporter excludes what it reported
/// unless its list is full (the oldest were dropped).
fn validate_corrupt_reports(config: &Config, registry: &Registry) -> Result<(), Inconsistency> {
    let slots = &registry.slots;
    let quorum = config.quorum();
    let distinct_nodes = |list: &[u32]| {
        let mut sorted = list.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.len() == list.len() && sorted.last().is_none_or(|&i| (i as usize) < slots.len())
    };
    for (i, slot) in slots.iter().enumerate() {
        let (reporters, excluded) = (&slot.corrupt_reporters, &slot.excluded);
        let mut distinct = reporters.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let nodes: Vec<u32> = reporters
            .iter()
            .filter_map(|r| match r {
                Reporter::Node(n) => Some(*n),
                Reporter::Player(_) | Reporter::Token(_) => None,
            })
            .collect();
        if distinct.len() != reporters.len()
            || !distinct_nodes(&nodes)
            || reporters.len() > quorum
            || slot.bad != (reporters.len() == quorum)
        {
            return Err(Inconsistency::CorruptReporters {
                node: slot.id.clone(),
                reporters: format!("{reporters:?}"),
                bad: slot.bad,
            });
        }
        if !distinct_nodes(excluded) || excluded.len() > MAX_EXCLUDED {
            return Err(Inconsistency::Excluded { node: slot.id.clone(), excluded: excluded.clone() });
        }
        for &r in &nodes {
            let by = &slots[r as usize].excluded;
            if by.len() < MAX_EXCLUDED && !by.contains(&(i as u32)) {
                return Err(Inconsistency::NotExcluded {
                    reporter: slots[r as usize].id.clone(),
                    accused: slot.id.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Where a title's holder lists are kept, every live node holding a chunk is listed
/// exactly once for it overall, under its site and under its region, and nobody else is.
fn validate_holder_lists(registry: &Registry, catalog: &Catalog) -> Result<(), Inconsistency> {
    type Key = (u32, u32, u32);
    let (mut all, mut sites, mut regions): (Vec<Key>, Vec<Key>, Vec<Key>) = Default::default();
    for (i, slot) in registry.slots.iter().enumerate() {
        let Some(live) = &slot.live else { continue };
        for (&t, map) in &live.held {
            if catalog.title(t).lists.is_none() {
                continue;
            }
            for c in map.iter() {
                all.push((t, c, i as u32));
                sites.push((t, c, i as u32));
                regions.push((t, c, i as u32));
            }
        }
    }
    let (mut got_all, mut got_sites, mut got_regions): (Vec<Key>, Vec<Key>, Vec<Key>) = Default::default();
    for (t, title) in catalog.titles().iter().enumerate() {
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
                    return Err(Inconsistency::EmptyHolderList { title: t, chunk: c });
                }
                for &n in list {
                    let slot = &registry.slots[n as usize];
                    if place != if is_site { slot.site } else { slot.region } {
                        return Err(Inconsistency::MisplacedHolder { node: slot.id.clone(), chunk: c });
                    }
                    got.push((t, c, n));
                }
            }
        }
    }
    for (want, got, what) in
        [(all, got_all, "holder"), (sites, got_sites, "site holder"), (regions, got_regions, "region holder")]
    {
        let (mut want, mut got) = (want, got);
        want.sort_unstable();
        got.sort_unstable();
        if want != got {
            return Err(Inconsistency::HolderLists(what));
        }
    }
    Ok(())
}
