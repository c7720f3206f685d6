//! Where a player streams from: the appliance that announced the client's prefix (longest
//! prefix wins, as in BGP), then its site, then its region, then anyone holding the title.

use std::collections::BTreeMap;
use std::net::IpAddr;

use fillmesh_protocol::messages::{Role, MAX_TARGETS};
use fillmesh_protocol::{IpPrefix, TitleId};

use super::{Millis, Steering, Tracker};

impl Tracker {
    pub(super) fn do_steer(&self, now: Millis, title: &TitleId, client: IpAddr) -> Steering {
        let Some(&t) = self.title_index.get(title) else {
            return Steering { targets: Vec::new(), reason: "unknown title".into() };
        };
        // Every appliance announcing a prefix that contains the client, with its longest one.
        let mut matched: BTreeMap<u32, u8> = BTreeMap::new();
        let mut place: Option<(u8, u32)> = None;
        let max_len = if client.is_ipv4() { 32 } else { 128 };
        for len in (0..=max_len).rev() {
            let Ok(prefix) = IpPrefix::new(client, len) else { continue };
            let Some(nodes) = self.prefixes.get(&prefix) else { continue };
            for &n in nodes {
                let slot = &self.slots[n as usize];
                if slot.live.is_none() || slot.registration.as_ref().map(|r| r.role) != Some(Role::Appliance)
                {
                    continue;
                }
                matched.entry(n).or_insert(len);
                // The client's place: the longest prefix, ties to the smallest node id.
                let better = match place {
                    None => true,
                    Some((l, p)) => l == len && slot.id < self.slots[p as usize].id,
                };
                if better {
                    place = Some((len, n));
                }
            }
        }
        let (site, region) = match place {
            Some((_, p)) => (Some(self.slots[p as usize].site), Some(self.slots[p as usize].region)),
            None => (None, None),
        };
        let mut ranked: Vec<(u8, u8, u64, &str, u32)> = self.titles[t as usize]
            .complete
            .iter()
            .filter(|&&n| self.eligible_at(n, now))
            .map(|&n| {
                let slot = &self.slots[n as usize];
                let (group, depth) = match matched.get(&n) {
                    Some(&len) => (0, u8::MAX - len),
                    None if Some(slot.site) == site => (1, 0),
                    None if Some(slot.region) == region => (2, 0),
                    None => (3, 0),
                };
                let load = slot
                    .live
                    .as_ref()
                    .and_then(|l| l.heartbeat)
                    .map_or(0, |h| u64::from(h.player_sessions) + u64::from(h.uploads_in_flight));
                (group, depth, load, slot.id.as_str(), n)
            })
            .collect();
        if ranked.is_empty() {
            return Steering {
                targets: Vec::new(),
                reason: "no healthy appliance holds the whole title yet".into(),
            };
        }
        if ranked.len() > MAX_TARGETS {
            ranked.select_nth_unstable(MAX_TARGETS - 1);
            ranked.truncate(MAX_TARGETS);
        }
        ranked.sort_unstable();
        Steering {
            targets: ranked.into_iter().map(|(.., n)| self.slots[n as usize].id.clone()).collect(),
            reason: String::new(),
        }
    }
}
