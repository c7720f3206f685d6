//! Where a player streams from. Places first: the appliance that announced the client's
//! prefix (longest prefix wins, as in BGP), then its site, then its region, then anyone. Then
//! what they hold: the appliances near the client (its region or nearer) that hold the whole
//! title, then the near ones that hold part of it (most first: a player asks them for what they
//! have and moves on for the rest), then whole holders farther away, then far partial holders,
//! and last the origin, so that a player is never left without a source while a title fills.
//! Within each, the least loaded first: the player sessions an appliance reported in its last
//! heartbeat, its uploads in flight, and the players steered to it since.

use std::collections::BTreeMap;
use std::net::IpAddr;

use fillmesh_protocol::messages::{Role, MAX_TARGETS};
use fillmesh_protocol::{IpPrefix, TitleId};

use super::catalog::Catalog;
use super::registry::Registry;
use super::{Config, Millis, Steering};

/// Where a player at `client` should stream `title` from, as of `now`. The appliance first on
/// the list counts one more player until its next heartbeat.
pub(super) fn steer(
    config: &Config,
    registry: &mut Registry,
    catalog: &Catalog,
    now: Millis,
    title: &TitleId,
    client: IpAddr,
) -> Steering {
    let Some(t) = catalog.index(title) else {
        return Steering { targets: Vec::new(), reason: "unknown title".into(), content_miss: false };
    };
    // Every appliance announcing a prefix that contains the client, with its longest one.
    let mut matched: BTreeMap<u32, u8> = BTreeMap::new();
    let mut place: Option<(u8, u32)> = None;
    let max_len = if client.is_ipv4() { 32 } else { 128 };
    for len in (0..=max_len).rev() {
        let Ok(prefix) = IpPrefix::new(client, len) else { continue };
        let Some(nodes) = registry.prefixes.get(&prefix) else { continue };
        for &n in nodes {
            let slot = &registry.slots[n as usize];
            if slot.live.is_none() || slot.registration.as_ref().map(|r| r.role) != Some(Role::Appliance) {
                continue;
            }
            matched.entry(n).or_insert(len);
            // The client's place: the longest prefix, ties to the smallest node id.
            let better = match place {
                None => true,
                Some((l, p)) => l == len && slot.id < registry.slots[p as usize].id,
            };
            if better {
                place = Some((len, n));
            }
        }
    }
    let (site, region) = match place {
        Some((_, p)) => (Some(registry.slots[p as usize].site), Some(registry.slots[p as usize].region)),
        None => (None, None),
    };
    let chunks = catalog.title(t).shape.chunk_count();
    // (tier, group, depth, chunks missing, load, id, node), sorted ascending.
    let mut ranked: Vec<(u8, u8, u8, u32, u64, &str, u32)> = (0..registry.slots.len() as u32)
        .filter(|&n| registry.eligible_at(config, n, now))
        .filter_map(|n| {
            let slot = &registry.slots[n as usize];
            let live = slot.live.as_ref()?;
            let held = live.held.get(&t).map_or(0, |h| h.count());
            if held == 0 {
                return None;
            }
            let (group, depth) = match matched.get(&n) {
                Some(&len) => (0, u8::MAX - len),
                None if Some(slot.site) == site => (1, 0),
                None if Some(slot.region) == region => (2, 0),
                None => (3, 0),
            };
            let whole = held >= chunks;
            let near = group < 3;
            let tier = match (whole, near) {
                (true, true) => 0,
                (false, true) => 1,
                (true, false) => 2,
                (false, false) => 3,
            };
            let load =
                live.heartbeat.map_or(0, |h| u64::from(h.player_sessions) + u64::from(h.uploads_in_flight))
                    + u64::from(live.steered);
            Some((tier, group, depth, chunks - held.min(chunks), load, slot.id.as_str(), n))
        })
        .collect();
    // The origin holds every title it published: the last resort, always on the list.
    let origin = registry.origin.filter(|&o| {
        let slot = &registry.slots[o as usize];
        !slot.bad && registry.healthy_at(config, o, now)
    });
    let room = MAX_TARGETS - usize::from(origin.is_some());
    if ranked.len() > room {
        ranked.select_nth_unstable(room - 1);
        ranked.truncate(room);
    }
    ranked.sort_unstable();
    let whole_near = ranked.first().is_some_and(|r| r.0 == 0);
    let reason = match (ranked.first().map(|r| r.0), origin) {
        (Some(0), _) => String::new(),
        (None, None) => "no healthy appliance holds the title yet and the origin is not reachable".into(),
        (None, Some(_)) => "no healthy appliance holds any of the title yet: the origin serves it".into(),
        (Some(_), _) => "no healthy appliance near the client holds the whole title yet: partial holders \
                         answer 503 for what they lack, and the list goes on to whole holders and the origin"
            .into(),
    };
    let mut targets: Vec<u32> = ranked.into_iter().map(|r| r.6).collect();
    targets.extend(origin);
    // Counted until the appliance's next heartbeat, which reports its sessions itself: new
    // players spread over equal appliances at once rather than one heartbeat later.
    if let Some(first) = targets.first() {
        if let Some(live) = registry.slots[*first as usize].live.as_mut() {
            live.steered = live.steered.saturating_add(1);
        }
    }
    Steering {
        targets: targets.into_iter().map(|n| registry.slots[n as usize].id.clone()).collect(),
        reason,
        content_miss: !whole_near,
    }
}
