//! The tracker's sans-IO core: registry, catalog, held maps, fill planner and steering.
//!
//! Nothing here reads a clock, a socket, a file or a global RNG: time arrives as `now`, and
//! every tie is broken by a hash of [`Config::seed`], so the same events give byte-identical
//! decisions. That is what lets the simulator and property tests drive the very code the
//! server runs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use fillmesh_protocol::messages::{Assignment, CatalogEntry, FailureKind, Fetched, Heartbeat, Registration};
use fillmesh_protocol::{ChunkBitmap, Manifest, NodeId, TitleId};
use serde::{Deserialize, Serialize};

/// Milliseconds on whatever monotonic clock the caller uses.
pub type Millis = u64;

/// How appliances fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    /// Peers first, the origin only for chunks no appliance has yet.
    Mesh,
    /// Every appliance pulls every chunk from the origin (for contrast runs).
    OriginOnly,
}

/// Timings and limits of the tracker.
#[derive(Debug, Clone)]
pub struct Config {
    pub heartbeat_interval_ms: u64,
    /// No heartbeat for this long: not a source, not steered to.
    pub unhealthy_after_ms: u64,
    /// No heartbeat for this long: forgotten, with its in-flight work and held maps.
    pub gone_after_ms: u64,
    /// An in-flight assignment not completed by then expires.
    pub assignment_ttl_ms: u64,
    pub max_inflight_per_appliance: usize,
    /// Spreads origin chunks over many appliances (and so regions).
    pub max_origin_inflight_per_appliance: usize,
    /// Upload bytes/s per upload slot.
    pub slot_bps: u64,
    pub min_slots: u32,
    pub max_slots: u32,
    pub policy: Policy,
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 1000,
            unhealthy_after_ms: 3_500,
            gone_after_ms: 15_000,
            assignment_ttl_ms: 30_000,
            max_inflight_per_appliance: 8,
            max_origin_inflight_per_appliance: 2,
            slot_bps: 12_500_000,
            min_slots: 2,
            max_slots: 16,
            policy: Policy::Mesh,
            seed: 0,
        }
    }
}

/// Why the tracker refused a call.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum CoreError {
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    #[error("unknown title {0}")]
    UnknownTitle(TitleId),
    #[error("title {0} is already published with a different manifest")]
    ManifestConflict(TitleId),
    #[error("bad report: {0}")]
    BadReport(String),
}

/// Where a client or a transfer sits relative to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ByteClass {
    SameSite,
    SameRegion,
    CrossRegion,
    Origin,
}

impl ByteClass {
    pub const ALL: [ByteClass; 4] =
        [ByteClass::SameSite, ByteClass::SameRegion, ByteClass::CrossRegion, ByteClass::Origin];

    /// The key used in status JSON and metrics.
    pub fn key(self) -> &'static str {
        match self {
            ByteClass::SameSite => "same_site",
            ByteClass::SameRegion => "same_region",
            ByteClass::CrossRegion => "cross_region",
            ByteClass::Origin => "origin",
        }
    }
}

/// Where a player should stream from, best first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Steering {
    pub targets: Vec<NodeId>,
    /// Why the list is empty; empty when it is not.
    pub reason: String,
}

/// Everything `fillmesh status` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub appliances: Vec<ApplianceStatus>,
    pub titles: Vec<TitleStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplianceStatus {
    pub peer_id: String,
    pub addr: String,
    /// "appliance" or "origin".
    pub role: String,
    pub site: String,
    pub region: String,
    pub healthy: bool,
    pub bad: bool,
    pub held_bytes: u64,
    pub uploads_in_flight: u32,
    pub upload_slots: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TitleStatus {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub chunks: u32,
    /// Appliances (role Appliance) holding every chunk.
    pub complete_appliances: u32,
    pub origin_bytes: u64,
    pub peer_bytes: u64,
    /// Keys "same_site", "same_region", "cross_region", "origin".
    pub bytes_by_class: BTreeMap<String, u64>,
}

/// One input of the tracker, for replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Register { node: NodeId, registration: Registration },
    Heartbeat { node: NodeId, heartbeat: Heartbeat },
    Lost { node: NodeId },
    Tick,
    Publish { title: TitleId, name: String, manifest: Manifest },
    ReportHeld { node: NodeId, title: TitleId, held: ChunkBitmap, fetched: Vec<Fetched> },
    ReportFailure { reporter: NodeId, title: TitleId, chunk: u32, source: NodeId, kind: FailureKind },
    Plan { node: NodeId, max: usize },
    Steer { title: TitleId, client: IpAddr },
}

/// One output of the tracker, for replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Decision {
    Done,
    Error(String),
    Plan(Vec<Assignment>),
    Steer(Steering),
}

/// The tracker's whole state.
#[derive(Debug)]
pub struct Tracker {
    config: Config,
    registrations: BTreeMap<NodeId, Registration>,
    manifests: BTreeMap<TitleId, Manifest>,
}

impl Tracker {
    pub fn new(config: Config) -> Self {
        Self { config, registrations: BTreeMap::new(), manifests: BTreeMap::new() }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn register(&mut self, _now: Millis, node: NodeId, registration: Registration) {
        self.registrations.insert(node, registration);
    }

    pub fn heartbeat(&mut self, _now: Millis, node: &NodeId, _heartbeat: Heartbeat) -> Result<(), CoreError> {
        self.known(node)
    }

    pub fn lost(&mut self, _now: Millis, _node: &NodeId) {}

    pub fn tick(&mut self, _now: Millis) {}

    pub fn publish(
        &mut self,
        _now: Millis,
        title: TitleId,
        _name: String,
        manifest: &Manifest,
    ) -> Result<(), CoreError> {
        self.manifests.insert(title, manifest.clone());
        Ok(())
    }

    pub fn report_held(
        &mut self,
        _now: Millis,
        node: &NodeId,
        _title: TitleId,
        _held: ChunkBitmap,
        _fetched: &[Fetched],
    ) -> Result<(), CoreError> {
        self.known(node)
    }

    pub fn report_failure(
        &mut self,
        _now: Millis,
        reporter: &NodeId,
        _title: TitleId,
        _chunk: u32,
        _source: &NodeId,
        _kind: FailureKind,
    ) -> Result<(), CoreError> {
        self.known(reporter)
    }

    pub fn plan(&mut self, _now: Millis, node: &NodeId, _max: usize) -> Result<Vec<Assignment>, CoreError> {
        self.known(node)?;
        Ok(Vec::new())
    }

    pub fn steer(&self, _now: Millis, _title: &TitleId, _client: IpAddr) -> Steering {
        Steering { targets: Vec::new(), reason: "not implemented yet".into() }
    }

    pub fn members(&self) -> Vec<NodeId> {
        self.registrations.keys().cloned().collect()
    }

    pub fn catalog(&self) -> Vec<CatalogEntry> {
        Vec::new()
    }

    pub fn manifest(&self, title: &TitleId) -> Option<&Manifest> {
        self.manifests.get(title)
    }

    pub fn registration(&self, node: &NodeId) -> Option<&Registration> {
        self.registrations.get(node)
    }

    pub fn status(&self, _now: Millis) -> Status {
        Status { appliances: Vec::new(), titles: Vec::new() }
    }

    pub fn handle(&mut self, now: Millis, event: &Event) -> Decision {
        let _ = (now, event);
        Decision::Done
    }

    fn known(&self, node: &NodeId) -> Result<(), CoreError> {
        if self.registrations.contains_key(node) {
            Ok(())
        } else {
            Err(CoreError::UnknownNode(node.clone()))
        }
    }
}
