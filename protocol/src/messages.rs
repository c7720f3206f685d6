//! The wire messages of the mesh (appliance <-> appliance) and of the tracker API
//! (appliance or origin <-> tracker, and tracker <-> tracker in a fleet). One request per
//! bidirectional stream; chunk bytes follow their [`ChunkHeader`] raw, outside the frame,
//! bounded by the manifest's chunk length.
//!
//! Every variant is sent by some node (appliance, origin, tracker or `fillmesh fetch`) except
//! where its doc says otherwise. A variant's number is its position, so removing or inserting
//! one renumbers the ones after it. Version 1 is pinned by golden frames, one per variant
//! (`protocol/tests/golden.rs`, `tests/golden/v1.frames`): a change to the wire fails them
//! unless it bumps [`PROTOCOL_VERSION`], and a build of version N keeps a decoder for N-1 so
//! that it accepts peers and trackers one version behind (the rule; version 1 is the first).
//! New variants go at the end of their enum, which keeps every earlier frame.

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

/// The oldest version this build accepts from peers and trackers: one behind its own (the
/// N-1 rule), and never below 1, the first. A rolling upgrade of a fleet one version at a time
/// then never has two nodes that cannot talk.
pub const OLDEST_ACCEPTED_VERSION: u16 = if PROTOCOL_VERSION > 1 { PROTOCOL_VERSION - 1 } else { 1 };

/// Whether this build talks with a peer or tracker whose [`Hello`] names `version`: its own
/// and the one before (see [`OLDEST_ACCEPTED_VERSION`]); a newer one is refused with
/// [`ErrorCode::VersionMismatch`] (the newer side accepts this one instead).
pub fn accepts_version(version: u16) -> bool {
    (OLDEST_ACCEPTED_VERSION..=PROTOCOL_VERSION).contains(&version)
}

/// Bytes a manifest may take on the wire: its chaining values, a package's files (each path,
/// no longer than its listing line, plus a 32-byte id and a length), and a little framing.
const MANIFEST_BYTES: usize = Manifest::MAX_CHUNKS as usize * 32
    + crate::package::MAX_LISTING_BYTES
    + crate::package::MAX_FILES * 16
    + 64;

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
    /// Fills titles from the parents its tracker assigns and serves them to other
    /// appliances and to players.
    Appliance,
    /// Publishes titles and holds each whole: the fill source of last resort.
    Origin,
    /// Coordinates registrations, fill plans and steering (says so in its [`Hello`]).
    Tracker,
    /// A one-shot tool. No node says it today: `fillmesh fetch` says `Appliance`.
    Tool,
}

/// The first exchange on a connection: each side says who it is and which version it speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The [`PROTOCOL_VERSION`] the sender speaks; a receiver that does not accept it (see
    /// [`accepts_version`]) answers [`ErrorCode::VersionMismatch`].
    pub version: u16,
    /// What the sender is.
    pub role: Role,
    /// The sender's build, `fillmesh/` and its version, for logs; at most [`MAX_LABEL`]
    /// bytes, and nothing acts on it.
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
    /// The title is not known here (no manifest for it).
    UnknownTitle,
    /// The request could not be decoded, or its content was refused (a report of a chunk
    /// past the title's end, a manifest that does not hash to its title): the message says
    /// which.
    BadRequest,
    /// Too many requests in flight: retry later.
    Busy,
    /// The peer is not trusted for this request.
    Unauthorized,
    /// The sender's [`Hello`] named a protocol version the receiver does not speak.
    VersionMismatch,
    /// The receiver failed on its own side (a chunk it could not read from its disk, a
    /// catalog it could not persist): not the request's fault.
    Internal,
    /// The tracker does not know the sender (it restarted or forgot it): register again.
    NotRegistered,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong, for the receiver to act on.
    pub code: ErrorCode,
    /// The detail, for people and logs: at most [`MAX_TEXT`] bytes, and nothing acts on it.
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
    /// The sender's version and role: answered with the receiver's own `Hello`, or
    /// `VersionMismatch`.
    Hello(Hello),
    /// The manifest of `title`: answered `Manifest` (which the asker verifies against the
    /// title id) or `UnknownTitle`.
    Manifest {
        /// The title asked about.
        title: TitleId,
    },
    /// The bytes of one chunk: answered with a `Chunk` header and the raw bytes after it, or
    /// `NotHeld` (not held here verified, or found damaged on disk), `UnknownTitle` or
    /// `Busy`.
    Chunk {
        /// The title asked about.
        title: TitleId,
        /// The chunk's index, from 0.
        index: u32,
    },
    /// Which chunks of this title do you hold? Answered `Held` (or `UnknownTitle`). No node
    /// sends it: a fill learns its parents' holdings from [`MeshRequest::Subscribe`], whose
    /// first answer is the same `Held`. Every node's mesh server answers it, and the fault
    /// tests (`tests/tests/faults.rs`) use it as a one-shot probe of an appliance's trust gate.
    Held {
        /// The title asked about.
        title: TitleId,
    },
    /// Subscribes to the holdings of `title` on this stream: the answer is the held bitmap
    /// (`Held`), then a `Have` as chunks are gained (an empty one now and then when idle, so
    /// the child can tell a quiet parent from a dead one), until either side ends the stream.
    /// A parent with too many children answers `Busy`.
    Subscribe {
        /// The title whose holdings are wanted.
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
    /// The title the chunk belongs to; the receiver refuses a header for another one.
    pub title: TitleId,
    /// The chunk's index; the receiver refuses a header for another one.
    pub index: u32,
    /// The raw bytes that follow. The receiver reads as many as its own verified manifest
    /// says the chunk has, and refuses a header that says otherwise.
    pub len: u32,
}

/// An answer between mesh nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeshResponse {
    /// The receiver's own `Hello`: it speaks the sender's version.
    Hello(Hello),
    /// The manifest asked for, which says nothing until it is verified against `title`.
    Manifest {
        /// The title asked about.
        title: TitleId,
        /// Its manifest, as the answering node holds it.
        manifest: Manifest,
    },
    /// The chunk asked for: its header, then its raw bytes on the same stream.
    Chunk(ChunkHeader),
    /// The chunks of `title` held here verified: the answer to `Held`, and the first message
    /// of a subscription (sent again on it when the subscriber fell behind).
    Held {
        /// The title asked about.
        title: TitleId,
        /// One bit per chunk of the title.
        held: ChunkBitmap,
    },
    /// The request failed; the code says why.
    Error(ErrorReply),
    /// Chunks of `title` the parent has gained since its last message on the subscription.
    Have {
        /// The subscription's title.
        title: TitleId,
        /// The chunks gained, at most [`MAX_HAVES`]; empty in a keepalive.
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
    /// [`Role::Appliance`] or [`Role::Origin`]: an origin registration makes the sender the
    /// fleet's origin.
    pub role: Role,
    /// Where other nodes reach its mesh endpoint.
    pub mesh_addr: SocketAddr,
    /// The site it is in, at most [`MAX_LABEL`] bytes: appliances of one site are each
    /// other's nearest parents ([`SourceClass::SameSite`]).
    #[serde(deserialize_with = "bounded::string::<_, MAX_LABEL>")]
    pub site: String,
    /// The region it is in, at most [`MAX_LABEL`] bytes: a parent in another region is
    /// [`SourceClass::CrossRegion`], asked only for the chunks a plan imports.
    #[serde(deserialize_with = "bounded::string::<_, MAX_LABEL>")]
    pub region: String,
    /// Client prefixes it serves, for steering.
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_PREFIXES>")]
    pub prefixes: Vec<IpPrefix>,
    /// The upload it states, in bytes per second: its upload slots and its share of fill
    /// layouts follow it. 0 counts as the tracker's minimum number of slots.
    pub upload_bps: u64,
    /// Bytes of disk it may fill with titles: the tracker plans fills up to a watermark of
    /// it and evicts titles beyond.
    pub disk_bytes: u64,
    /// SHA-256 of the certificate's SPKI it presents to players, so they can pin it.
    pub cert_sha256: Option<[u8; 32]>,
}

/// Periodic liveness and load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Whether the node counts itself fit to serve (nodes send `true`); the tracker steers
    /// to and plans with healthy nodes only.
    pub healthy: bool,
    /// Chunk requests it is serving now; with `player_sessions`, the load steering ranks
    /// appliances by.
    pub uploads_in_flight: u32,
    /// Upload in use, in bytes per second. Nodes send 0, and the tracker does not read it.
    pub upload_bps_used: u64,
    /// Player connections it serves now.
    pub player_sessions: u32,
    /// Bytes of titles it holds. The tracker does not read it.
    pub disk_used: u64,
}

/// Where a fill source is, seen from the appliance that fills from it: what its bytes cost.
/// Ordered nearest (cheapest) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SourceClass {
    /// An appliance of the same site.
    SameSite,
    /// An appliance of the same region, at another site.
    SameRegion,
    /// An appliance of another region: asked only for the chunks a plan imports, until the
    /// plan is stale.
    CrossRegion,
    /// The origin: asked only for the chunks a plan gives it, until the plan is stale.
    Origin,
}

impl SourceClass {
    /// Every class, nearest first: the order of per-class byte counts such as
    /// [`TrackerRequest::FillSummary`]'s `bytes`.
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
    /// The source did not answer in time.
    Timeout,
    /// The source refused the request (busy, say) or reset it.
    Refused,
    /// The source answered [`ErrorCode::NotHeld`] for the chunk.
    NotHeld,
}

/// One chunk an appliance fetched, and from whom: the tracker's account of where bytes came
/// from (same site, same region, cross-region, origin) rests on these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    /// The chunk's index.
    pub chunk: u32,
    /// The node it came from.
    pub source: NodeId,
}

/// A request to the tracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrackerRequest {
    /// The sender's version and role: answered with the tracker's `Hello`, or
    /// `VersionMismatch`.
    Hello(Hello),
    /// Registers the sender (again, after a restart of either side) as it describes itself:
    /// answered `Registered`.
    Register(Registration),
    /// Liveness and load: answered with the tracker's `Epoch`, or `NotRegistered` when the
    /// tracker does not know the sender.
    Heartbeat(Heartbeat),
    /// Every chunk of `title` the sender holds verified (a whole bitmap, so a report that is
    /// lost or repeated does no harm), and the chunks fetched since the last report. Nodes
    /// send it when the tracker must learn a title's whole held map (on registering and
    /// publishing, when the title changes owner, when damage is found, after an eviction, at
    /// a fill's end, when a fill's gains are too scattered for one summary), always with
    /// `fetched` empty: what a fill fetched goes in [`TrackerRequest::FillSummary`]. Only the
    /// simulator's `per-chunk` strategy fills `fetched`, through the core, not the wire.
    ReportHeld {
        /// The title reported on.
        title: TitleId,
        /// Every chunk of it the sender holds verified.
        held: ChunkBitmap,
        /// Chunks fetched since the last report and from whom, at most [`MAX_FETCHED`].
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_FETCHED>")]
        fetched: Vec<Fetched>,
    },
    /// A transfer of `chunk` of `title` from `source` failed as `kind`: answered `Ack`, or
    /// `BadRequest` when refused (an unknown title, a chunk past its end, a corrupt chunk
    /// from a node that never registered). The tracker forgets the transfer, and a `Corrupt`
    /// report counts the sender towards marking `source` bad. Nodes send only `Corrupt`.
    ReportFailure {
        /// The title of the failed transfer.
        title: TitleId,
        /// The chunk's index.
        chunk: u32,
        /// The node the transfer was from.
        source: NodeId,
        /// How it failed.
        kind: FailureKind,
    },
    /// Steering between the trackers of a fleet: a tracker asked `GET /steer` for a title it
    /// does not own asks the title's owner with this (README, "Several trackers: one fleet in
    /// etcd", steering anywhere). Appliances and origins never send it; players steer over
    /// HTTP.
    Steer {
        /// The title the player asked to be steered for.
        title: TitleId,
        /// The player's address as the asking tracker has it: the one given, else the one seen.
        client_ip: IpAddr,
    },
    /// Every title the tracker knows: answered `Catalog`.
    Catalog,
    /// The nodes the tracker vouches for: an appliance serves mesh requests from these.
    Members,
    /// Adds a title to the catalog (the origin, for each title it ingests): answered
    /// `Ack`, `BadRequest` when the manifest does not hash to `title`, or `Internal` when the
    /// catalog could not be persisted.
    Publish {
        /// The title id, which the manifest must merge to.
        title: TitleId,
        /// A name for people (the catalog, the status page), at most [`MAX_TEXT`] bytes.
        #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
        name: String,
        /// The title's manifest.
        manifest: Manifest,
    },
    /// The titles this appliance is to fill, each with its plan (answered `Fills`). Asked
    /// when the tracker's epoch (in the answers to heartbeats and summaries) moves.
    Fills,
    /// What a fill gained since the last summary that was answered: chunks now held (runs)
    /// and bytes stored from each [`SourceClass`], in [`SourceClass::ALL`] order. Answered
    /// with the tracker's epoch.
    FillSummary {
        /// The title being filled.
        title: TitleId,
        /// The chunks gained, as runs ([`crate::bitmap::runs`]), at most [`MAX_GAINED`].
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_GAINED>")]
        gained: Vec<std::ops::Range<u32>>,
        /// Bytes stored from each class of parent, in [`SourceClass::ALL`] order.
        bytes: [u64; 4],
    },
    /// The live trackers of the fleet (answered `Trackers`): a title's owner is the one of
    /// highest rendezvous weight among them ([`crate::ownership::owner`]).
    Trackers,
    /// The public keys players' tokens are checked with, and whether tokens are required
    /// (answered `PlaybackKeys`). An appliance asks when it registers and whenever the
    /// tracker's epoch moves (a change of keys moves it).
    PlaybackKeys,
}

impl Message for TrackerRequest {
    const NAME: &'static str = "tracker request";
    const MAX_BODY: usize = MANIFEST_BYTES + MAX_TEXT + 128 + MAX_FETCHED * (5 + 1 + NodeId::MAX_LEN);
}

/// A node to fetch from, in an [`Assignment`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The source's id.
    pub node: NodeId,
    /// Its mesh endpoint, from its registration.
    pub addr: SocketAddr,
    /// What it is: an appliance, or the origin.
    pub role: Role,
}

/// Fetch `chunk` of `title` from the first of `sources` that answers: the per-chunk
/// planner's answer (`fillmesh_tracker::core::Tracker::plan`, which the simulator's
/// `per-chunk` strategy drives). No longer on the wire: no node runs that planner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The title to fetch from.
    pub title: TitleId,
    /// The chunk's index.
    pub chunk: u32,
    /// Where to fetch it, in the order to try them; at most [`MAX_SOURCES`].
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_SOURCES>")]
    pub sources: Vec<Source>,
}

/// A node an appliance fills from, and where it is from that appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    /// The parent's id: the PeerId its certificate must prove when dialled.
    pub node: NodeId,
    /// Its mesh endpoint, from its registration.
    pub addr: SocketAddr,
    /// Where it is from the filling appliance, which decides what it may be asked for.
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
    /// The title to fill.
    pub title: TitleId,
    /// The parents to subscribe to, nearest first, the origin last; at most [`MAX_PARENTS`].
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_PARENTS>")]
    pub parents: Vec<Parent>,
    /// The chunks this appliance takes from the origin, as ranges; at most [`MAX_RANGES`].
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_RANGES>")]
    pub origin: Vec<std::ops::Range<u32>>,
    /// The chunks it may take from parents in other regions, as ranges; at most
    /// [`MAX_RANGES`].
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_RANGES>")]
    pub import: Vec<std::ops::Range<u32>>,
    /// The tracker's layout epoch the plan comes from.
    pub epoch: u64,
}

/// An appliance a player may stream from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteerTarget {
    /// The appliance.
    pub node: NodeId,
    /// `https://ADDR/titles/ID` for a one-file title; for a package its base URL,
    /// `https://ADDR/titles/ID/` (as the steering document's `SteerEntry::url` says).
    /// At most [`MAX_TEXT`] bytes.
    #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
    pub url: String,
    /// SHA-256 of the SubjectPublicKeyInfo of the certificate it presents to players, from
    /// its registration; `None` when it gave none.
    pub cert_sha256: Option<[u8; 32]>,
    /// The site it registered in.
    #[serde(deserialize_with = "bounded::string::<_, MAX_LABEL>")]
    pub site: String,
    /// The region it registered in.
    #[serde(deserialize_with = "bounded::string::<_, MAX_LABEL>")]
    pub region: String,
}

/// A title the tracker knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The title's id.
    pub title: TitleId,
    /// The name it was published under, at most [`MAX_TEXT`] bytes.
    #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
    pub name: String,
    /// The title's length in bytes.
    pub len: u64,
    /// The title's chunk size.
    pub chunk_size: ChunkSize,
}

/// An answer from the tracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrackerResponse {
    /// The tracker's own `Hello`: it speaks the sender's version.
    Hello(Hello),
    /// The sender is registered.
    Registered {
        /// Milliseconds between the heartbeats the tracker expects; nodes keep it within
        /// 100 ms to 60 s.
        heartbeat_interval_ms: u32,
    },
    /// The report or the publication was taken.
    Ack,
    /// Where a player should stream a title from (the answer to a tracker's `Steer`).
    Steer {
        /// Appliances to stream from, best first; at most [`MAX_TARGETS`].
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_TARGETS>")]
        targets: Vec<SteerTarget>,
        /// Why the list is empty or short.
        #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
        reason: String,
    },
    /// The titles the tracker knows.
    Catalog {
        /// One entry per title, at most [`MAX_CATALOG`].
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_CATALOG>")]
        titles: Vec<CatalogEntry>,
    },
    /// The nodes the tracker vouches for.
    Members {
        /// Every registered node not gone and not marked bad, healthy or not; at most
        /// [`MAX_MEMBERS`].
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_MEMBERS>")]
        nodes: Vec<NodeId>,
    },
    /// The request failed; the code says why.
    Error(ErrorReply),
    /// The fills of an appliance: a plan per title it is to fill (and does not hold whole),
    /// the titles to delete first to make room (the tracker no longer counts this appliance
    /// as holding them), and the epoch they come from.
    Fills {
        /// One plan per title to fill, at most [`MAX_FILLS`].
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_FILLS>")]
        plans: Vec<FillPlan>,
        /// Titles to delete before filling, at most [`MAX_EVICT`].
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_EVICT>")]
        evict: Vec<TitleId>,
        /// The tracker's epoch the plans come from.
        epoch: u64,
    },
    /// The answer to a heartbeat or a summary: the tracker's epoch. When it moves (the fleet,
    /// the catalog or a layout changed), the appliance asks for its `Fills` again.
    Epoch(u64),
    /// The live trackers' PeerIds, sorted; empty from a tracker without a fleet (no etcd),
    /// which owns every title.
    Trackers {
        /// The live trackers, at most [`MAX_TRACKERS`].
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_TRACKERS>")]
        live: Vec<NodeId>,
    },
    /// The answer to `PlaybackKeys`.
    PlaybackKeys {
        /// Whether appliances serve players only with a valid token (false: an open fleet).
        required: bool,
        /// The public keys tokens are accepted from, at most [`crate::token::MAX_KEYS`]:
        /// never a signing key.
        #[serde(deserialize_with = "bounded::vec::<_, _, { crate::token::MAX_KEYS }>")]
        keys: Vec<crate::token::PublicKey>,
    },
}

impl Message for TrackerResponse {
    const NAME: &'static str = "tracker response";
    // The largest legal catalog: MAX_CATALOG entries of a 32-byte id, a MAX_TEXT name and two
    // varints (checked by a test).
    const MAX_BODY: usize = MAX_CATALOG * (32 + 2 + MAX_TEXT + 10 + 5) + 64;
}
