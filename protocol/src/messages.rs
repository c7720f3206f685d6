//! The wire messages of the mesh (appliance <-> appliance) and of the tracker API
//! (appliance or origin <-> tracker, and tracker <-> tracker in a fleet). One request per
//! bidirectional stream; chunk bytes follow their [`ChunkHeader`] raw, outside the frame,
//! bounded by the manifest's chunk length.
//!
//! Every variant is sent by some node (appliance, origin, tracker or `fillmesh fetch`) except
//! where its doc says otherwise. The wire has no compatibility promise yet: a variant's number
//! is its position, so removing one renumbers the ones after it.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::bitmap::ChunkBitmap;
use crate::bounded;
use crate::chunk::ChunkSize;
use crate::frame::Message;
use crate::manifest::Manifest;
use crate::peer::{IpPrefix, NodeId};
use crate::title::TitleId;

/// Bumped on any incompatible change; the ALPN carries the major version too.
pub const PROTOCOL_VERSION: u16 = 1;

/// Bytes a manifest may take on the wire: its chaining values plus a little framing.
const MANIFEST_BYTES: usize = Manifest::MAX_CHUNKS as usize * 32 + 64;

/// Longest free-text field (names, error messages, URLs).
pub const MAX_TEXT: usize = 256;
/// Longest site or region name.
pub const MAX_LABEL: usize = 64;
/// Most client prefixes one appliance may serve.
pub const MAX_PREFIXES: usize = 64;
/// Most sources the per-chunk planner offers for one chunk ([`Assignment`]).
pub const MAX_SOURCES: usize = 8;
/// Most assignments in one plan of the per-chunk planner.
pub const MAX_ASSIGNMENTS: usize = 1024;
/// Most appliances in one steering answer.
pub const MAX_TARGETS: usize = 32;
/// Most titles in one catalog answer.
pub const MAX_CATALOG: usize = 8192;
/// Most chunk fetches in one held report.
pub const MAX_FETCHED: usize = 1024;
/// Most nodes in one member list.
pub const MAX_MEMBERS: usize = 16384;
/// Most parents in one fill plan (the origin included).
pub const MAX_PARENTS: usize = 32;
/// Most chunk ranges in one fill plan's origin or import list (one per region at most).
pub const MAX_RANGES: usize = 64;
/// Most chunks in one HAVE message of a subscription.
pub const MAX_HAVES: usize = 1024;
/// Most fill plans in one answer: titles an appliance fills at once.
pub const MAX_FILLS: usize = 64;
/// Most runs of chunks in one fill summary (more: the whole bitmap goes in a `ReportHeld`).
pub const MAX_GAINED: usize = 1024;
/// Most titles one plan tells an appliance to drop: the planner evicts no more per call, so
/// that one plan's work stays bounded however full the disk.
pub const MAX_EVICT: usize = 16;
/// Most trackers in one fleet's answer.
pub const MAX_TRACKERS: usize = 64;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Appliance,
    Origin,
    Tracker,
    Tool,
}

/// The first exchange on a connection: each side says who it is and which version it speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    pub role: Role,
    #[serde(deserialize_with = "bounded::string::<_, MAX_LABEL>")]
    pub agent: String,
}

impl Hello {
    /// What this build says of itself in the role `role`.
    pub fn ours(role: Role) -> Self {
        Hello {
            version: PROTOCOL_VERSION,
            role,
            agent: concat!("fillmesh/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The chunk is not held (verified) here: ask someone else.
    NotHeld,
    UnknownTitle,
    BadRequest,
    /// Too many requests in flight: retry later.
    Busy,
    /// The peer is not trusted for this request.
    Unauthorized,
    VersionMismatch,
    Internal,
    /// The tracker does not know the sender (it restarted or forgot it): register again.
    NotRegistered,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
    pub message: String,
}

impl ErrorReply {
    /// An error answer whose message is cut (at a character boundary) to the [`MAX_TEXT`]
    /// bytes a receiver accepts, so that a long reason never makes the answer undecodable.
    pub fn new(code: ErrorCode, mut message: String) -> Self {
        let mut end = message.len().min(MAX_TEXT);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        ErrorReply { code, message }
    }
}

/// A request between mesh nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeshRequest {
    Hello(Hello),
    Manifest {
        title: TitleId,
    },
    Chunk {
        title: TitleId,
        index: u32,
    },
    /// Which chunks of this title do you hold? Answered `Held` (or `UnknownTitle`). No node
    /// sends it: a fill learns its parents' holdings from [`MeshRequest::Subscribe`], whose
    /// first answer is the same `Held`. Every node's mesh server answers it, and the fault
    /// tests (`tests/tests/faults.rs`) use it as a one-shot probe of an appliance's trust gate.
    Held {
        title: TitleId,
    },
    /// Subscribes to the holdings of `title` on this stream: the answer is the held bitmap
    /// (`Held`), then a `Have` as chunks are gained (an empty one now and then when idle, so
    /// the child can tell a quiet parent from a dead one), until either side ends the stream.
    /// A parent with too many children answers `Busy`.
    Subscribe {
        title: TitleId,
    },
}

impl Message for MeshRequest {
    const NAME: &'static str = "mesh request";
    const MAX_BODY: usize = 256;
}

/// Announces the raw bytes of one chunk that follow the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHeader {
    pub title: TitleId,
    pub index: u32,
    pub len: u32,
}

/// An answer between mesh nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeshResponse {
    Hello(Hello),
    Manifest {
        title: TitleId,
        manifest: Manifest,
    },
    Chunk(ChunkHeader),
    Held {
        title: TitleId,
        held: ChunkBitmap,
    },
    Error(ErrorReply),
    /// Chunks of `title` the parent has gained since its last message on the subscription.
    Have {
        title: TitleId,
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_HAVES>")]
        chunks: Vec<u32>,
    },
}

impl Message for MeshResponse {
    const NAME: &'static str = "mesh response";
    const MAX_BODY: usize = MANIFEST_BYTES + 128;
}

/// What an appliance (or the origin) tells the tracker about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub role: Role,
    /// Where other nodes reach its mesh endpoint.
    pub mesh_addr: SocketAddr,
    #[serde(deserialize_with = "bounded::string::<_, MAX_LABEL>")]
    pub site: String,
    #[serde(deserialize_with = "bounded::string::<_, MAX_LABEL>")]
    pub region: String,
    /// Client prefixes it serves, for steering.
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_PREFIXES>")]
    pub prefixes: Vec<IpPrefix>,
    pub upload_bps: u64,
    pub disk_bytes: u64,
    /// SHA-256 of the certificate's SPKI it presents to players, so they can pin it.
    pub cert_sha256: Option<[u8; 32]>,
}

/// Periodic liveness and load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub healthy: bool,
    pub uploads_in_flight: u32,
    pub upload_bps_used: u64,
    pub player_sessions: u32,
    pub disk_used: u64,
}

/// Where a fill source is, seen from the appliance that fills from it: what its bytes cost.
/// Ordered nearest (cheapest) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SourceClass {
    SameSite,
    SameRegion,
    CrossRegion,
    Origin,
}

impl SourceClass {
    pub const ALL: [SourceClass; 4] =
        [SourceClass::SameSite, SourceClass::SameRegion, SourceClass::CrossRegion, SourceClass::Origin];

    /// The key used in status JSON, metrics and reports.
    pub fn key(self) -> &'static str {
        match self {
            SourceClass::SameSite => "same_site",
            SourceClass::SameRegion => "same_region",
            SourceClass::CrossRegion => "cross_region",
            SourceClass::Origin => "origin",
        }
    }
}

/// Why a transfer from a source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureKind {
    /// The bytes did not match the manifest: the source lied or its disk is bad.
    Corrupt,
    Timeout,
    Refused,
    NotHeld,
}

/// One chunk an appliance fetched, and from whom: the tracker's account of where bytes came
/// from (same site, same region, cross-region, origin) rests on these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    pub chunk: u32,
    pub source: NodeId,
}

/// A request to the tracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrackerRequest {
    Hello(Hello),
    Register(Registration),
    Heartbeat(Heartbeat),
    /// Every chunk of `title` the sender holds verified (a whole bitmap, so a report that is
    /// lost or repeated does no harm), and the chunks fetched since the last report. Nodes
    /// send it when the tracker must learn a title's whole held map (on registering and
    /// publishing, when the title changes owner, when damage is found, after an eviction, at
    /// a fill's end, when a fill's gains are too scattered for one summary), always with
    /// `fetched` empty: what a fill fetched goes in [`TrackerRequest::FillSummary`]. Only the
    /// simulator's `per-chunk` strategy fills `fetched`, through the core, not the wire.
    ReportHeld {
        title: TitleId,
        held: ChunkBitmap,
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_FETCHED>")]
        fetched: Vec<Fetched>,
    },
    ReportFailure {
        title: TitleId,
        chunk: u32,
        source: NodeId,
        kind: FailureKind,
    },
    /// Steering between the trackers of a fleet: a tracker asked `GET /steer` for a title it
    /// does not own asks the title's owner with this (README, "Several trackers: one fleet in
    /// etcd", steering anywhere). Appliances and origins never send it; players steer over
    /// HTTP.
    Steer {
        title: TitleId,
        client_ip: IpAddr,
    },
    Catalog,
    /// The nodes the tracker vouches for: an appliance serves mesh requests from these.
    Members,
    Publish {
        title: TitleId,
        #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
        name: String,
        manifest: Manifest,
    },
    /// The titles this appliance is to fill, each with its plan (answered `Fills`). Asked
    /// when the tracker's epoch (in the answers to heartbeats and summaries) moves.
    Fills,
    /// What a fill gained since the last summary that was answered: chunks now held (runs)
    /// and bytes stored from each [`SourceClass`], in [`SourceClass::ALL`] order. Answered
    /// with the tracker's epoch.
    FillSummary {
        title: TitleId,
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_GAINED>")]
        gained: Vec<std::ops::Range<u32>>,
        bytes: [u64; 4],
    },
    /// The live trackers of the fleet (answered `Trackers`): a title's owner is the one of
    /// highest rendezvous weight among them ([`crate::ownership::owner`]).
    Trackers,
}

impl Message for TrackerRequest {
    const NAME: &'static str = "tracker request";
    const MAX_BODY: usize = MANIFEST_BYTES + MAX_TEXT + 128 + MAX_FETCHED * (5 + 1 + NodeId::MAX_LEN);
}

/// A node to fetch from, in an [`Assignment`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub node: NodeId,
    pub addr: SocketAddr,
    pub role: Role,
}

/// Fetch `chunk` of `title` from the first of `sources` that answers: the per-chunk
/// planner's answer (`fillmesh_tracker::core::Tracker::plan`, which the simulator's
/// `per-chunk` strategy drives). No longer on the wire: no node runs that planner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub title: TitleId,
    pub chunk: u32,
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_SOURCES>")]
    pub sources: Vec<Source>,
}

/// A node an appliance fills from, and where it is from that appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    pub node: NodeId,
    pub addr: SocketAddr,
    pub class: SourceClass,
}

/// An appliance's fill of one title, as its tracker arranged it: the parents it subscribes
/// to (nearest first, the origin last), the chunks it takes from the origin (each chunk is
/// given to one appliance fleet-wide) and those it brings into its region from parents in
/// other regions (each chunk to one appliance per region). Everything else comes from
/// parents in its own region. A plan stays valid until the tracker's layout changes
/// (membership, health, bad marks): `epoch` names the layout it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FillPlan {
    pub title: TitleId,
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_PARENTS>")]
    pub parents: Vec<Parent>,
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_RANGES>")]
    pub origin: Vec<std::ops::Range<u32>>,
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_RANGES>")]
    pub import: Vec<std::ops::Range<u32>>,
    pub epoch: u64,
}

/// An appliance a player may stream from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteerTarget {
    pub node: NodeId,
    #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
    pub url: String,
    pub cert_sha256: Option<[u8; 32]>,
    #[serde(deserialize_with = "bounded::string::<_, MAX_LABEL>")]
    pub site: String,
    #[serde(deserialize_with = "bounded::string::<_, MAX_LABEL>")]
    pub region: String,
}

/// A title the tracker knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub title: TitleId,
    #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
    pub name: String,
    pub len: u64,
    pub chunk_size: ChunkSize,
}

/// An answer from the tracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrackerResponse {
    Hello(Hello),
    Registered {
        heartbeat_interval_ms: u32,
    },
    Ack,
    Steer {
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_TARGETS>")]
        targets: Vec<SteerTarget>,
        /// Why the list is empty or short.
        #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
        reason: String,
    },
    Catalog {
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_CATALOG>")]
        titles: Vec<CatalogEntry>,
    },
    Members {
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_MEMBERS>")]
        nodes: Vec<NodeId>,
    },
    Error(ErrorReply),
    /// The fills of an appliance: a plan per title it is to fill (and does not hold whole),
    /// the titles to delete first to make room (the tracker no longer counts this appliance
    /// as holding them), and the epoch they come from.
    Fills {
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_FILLS>")]
        plans: Vec<FillPlan>,
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_EVICT>")]
        evict: Vec<TitleId>,
        epoch: u64,
    },
    /// The answer to a heartbeat or a summary: the tracker's epoch. When it moves (the fleet,
    /// the catalog or a layout changed), the appliance asks for its `Fills` again.
    Epoch(u64),
    /// The live trackers' PeerIds, sorted; empty from a tracker without a fleet (no etcd),
    /// which owns every title.
    Trackers {
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_TRACKERS>")]
        live: Vec<NodeId>,
    },
}

impl Message for TrackerResponse {
    const NAME: &'static str = "tracker response";
    // The largest legal catalog: MAX_CATALOG entries of a 32-byte id, a MAX_TEXT name and two
    // varints (checked by a test).
    const MAX_BODY: usize = MAX_CATALOG * (32 + 2 + MAX_TEXT + 10 + 5) + 64;
}
