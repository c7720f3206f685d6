//! Several trackers, one fleet: which live tracker coordinates (owns) each title.
//!
//! The rule is [`fillmesh_protocol::ownership`] (rendezvous hashing over the live trackers'
//! ids, which appliances compute too); this module keeps the live set it is applied to.
//!
//! The set arrives from the server's etcd shell
//! ([`Tracker::set_fleet`](super::Tracker::set_fleet)); without it (one tracker, no etcd) the
//! tracker owns every title, as before.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use fillmesh_protocol::{NodeId, TitleId};
use serde::Serialize;

use fillmesh_protocol::ownership::owner;

/// A tracker of the fleet, as its record in etcd names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackerInfo {
    /// Its node id: what title ownership is hashed against.
    pub peer_id: NodeId,
    /// Its mesh (QUIC) address.
    pub addr: SocketAddr,
    /// Its viewers' HTTP address (`/steer`, `/watch`).
    pub http: SocketAddr,
    /// Its operators' HTTP address (`/status`, `/metrics`); `None` in the record of a tracker
    /// from before the two listeners.
    pub admin: Option<SocketAddr>,
}

/// One tracker in `fillmesh status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackerStatus {
    /// Its node id.
    pub peer_id: String,
    /// Its mesh (QUIC) address.
    pub addr: String,
    /// Its viewers' HTTP address.
    pub http: String,
    /// Its operators' HTTP address (`/status`: `fillmesh status` and the fleet page read the
    /// owners' figures there); `null` if its record names none.
    pub admin: Option<String>,
    /// Holds a lease now (last seen in etcd); a tracker once seen and gone stays listed.
    pub live: bool,
}

/// What the core knows of the fleet.
#[derive(Debug, Default)]
pub(crate) struct Fleet {
    /// This tracker's id; `None`: no fleet, this tracker owns everything.
    pub(crate) me: Option<NodeId>,
    /// Every tracker seen, and whether it is live now.
    pub(crate) trackers: BTreeMap<NodeId, (TrackerInfo, bool)>,
    /// Moves whenever the live set changes (a part of `Tracker::epoch`).
    pub(crate) epoch: u64,
}

impl Fleet {
    fn live(&self) -> impl Iterator<Item = &NodeId> {
        self.trackers.iter().filter(|(_, (_, live))| *live).map(|(id, _)| id)
    }
}

/// At most this many trackers are remembered (live or once seen).
pub const MAX_TRACKERS: usize = 64;

impl Fleet {
    /// This tracker's id and the live trackers (itself included when its lease is held).
    /// Trackers seen before and not in `live` are kept as not live (up to [`MAX_TRACKERS`]).
    /// Moves the epoch when the live set changes.
    pub(crate) fn set(&mut self, me: NodeId, live: Vec<TrackerInfo>) {
        let before: Vec<NodeId> = self.live().cloned().collect();
        self.me = Some(me);
        for (_, (_, up)) in self.trackers.iter_mut() {
            *up = false;
        }
        for info in live.into_iter().take(MAX_TRACKERS) {
            self.trackers.insert(info.peer_id.clone(), (info, true));
        }
        while self.trackers.len() > MAX_TRACKERS {
            let Some(gone) = self.trackers.iter().find(|(_, (_, up))| !*up).map(|(id, _)| id.clone()) else {
                break;
            };
            self.trackers.remove(&gone);
        }
        if self.live().ne(before.iter()) {
            self.epoch += 1;
        }
    }

    /// The live trackers' ids, sorted (empty without a fleet).
    pub(crate) fn live_trackers(&self) -> Vec<NodeId> {
        self.live().cloned().collect()
    }

    /// The live tracker that coordinates `title`: `None` without a fleet, or when no tracker
    /// is live (not even this one).
    pub(crate) fn owner(&self, title: &TitleId) -> Option<&NodeId> {
        owner(title, self.live())
    }

    /// Whether this tracker coordinates `title`: always without a fleet; with one, when it is
    /// the owner, or when no tracker is live at all (this one's lease lost too: it keeps
    /// coordinating on what it knows rather than nobody doing so).
    pub(crate) fn owns(&self, title: &TitleId) -> bool {
        match (&self.me, self.owner(title)) {
            (None, _) | (_, None) => true,
            (Some(me), Some(owner)) => me == owner,
        }
    }

    /// The tracker record of `peer`, if the fleet knows it.
    pub(crate) fn tracker_info(&self, peer: &NodeId) -> Option<&TrackerInfo> {
        self.trackers.get(peer).map(|(info, _)| info)
    }

    /// Every tracker seen, as `fillmesh status` lists them.
    pub(crate) fn statuses(&self) -> Vec<TrackerStatus> {
        self.trackers
            .values()
            .map(|(info, live)| TrackerStatus {
                peer_id: info.peer_id.to_string(),
                addr: info.addr.to_string(),
                http: info.http.to_string(),
                admin: info.admin.map(|a| a.to_string()),
                live: *live,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<NodeId> {
        (0..n)
            .map(|i| format!("T{}", char::from(b"ABCDEFGHJK"[i % 10])).repeat(1 + i / 10).parse().unwrap())
            .collect()
    }

    #[test]
    fn no_live_tracker_means_no_owner() {
        assert_eq!(owner(&TitleId::from_bytes([1; 32]), &Vec::new()), None);
    }

    #[test]
    fn titles_spread_over_the_trackers() {
        let trackers = ids(3);
        let mut counts = BTreeMap::new();
        for i in 0..300u32 {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&i.to_le_bytes());
            let o = owner(&TitleId::from_bytes(bytes), &trackers).unwrap();
            *counts.entry(o.clone()).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&c| c > 50), "{counts:?}");
    }
}
