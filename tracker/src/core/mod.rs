//! The tracker's sans-IO core: registry, catalog, held maps, fill planner and steering.
//!
//! Nothing here reads a clock, a socket, a file or a global RNG: time arrives as `now`, and
//! every tie is broken by a hash of [`Config::seed`], so the same events give byte-identical
//! decisions. That is what lets the simulator and property tests drive the very code the
//! server runs.

mod catalog;
pub mod fleet;
mod parents;
mod planner;
mod registry;
mod status;
mod steering;
mod window;

use std::collections::BTreeMap;
use std::net::IpAddr;

// The only randomness the core has: the protocol crate's keyed mix, shared with the fleet's
// ownership rule, which appliances compute too.
use fillmesh_protocol::hash;
use fillmesh_protocol::messages::{
    Assignment, CatalogEntry, DayRange, FailureKind, Fetched, FillPlan, Heartbeat, Registration, Role,
};
use fillmesh_protocol::{ChunkBitmap, NodeId, Shape, TitleId};
use serde::{Deserialize, Serialize};

use catalog::Catalog;
pub use fleet::{TrackerInfo, TrackerStatus};
use registry::Registry;
pub use status::Inconsistency;

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
    /// How often nodes are to heartbeat, told them in the answer to their registration. The
    /// core itself only measures silence, against `unhealthy_after_ms` and `gone_after_ms`.
    pub heartbeat_interval_ms: u64,
    /// No heartbeat for this long: not a source, not steered to.
    pub unhealthy_after_ms: u64,
    /// No heartbeat for this long: forgotten, with its in-flight work and held maps.
    pub gone_after_ms: u64,
    /// An in-flight assignment not completed by then expires.
    pub assignment_ttl_ms: u64,
    /// Per-chunk assignments an appliance may have in flight at once: [`Tracker::plan`] hands
    /// out at most this many less those it has.
    pub max_inflight_per_appliance: usize,
    /// Spreads origin chunks over many appliances (and so regions).
    pub max_origin_inflight_per_appliance: usize,
    /// Upload bytes/s per upload slot.
    pub slot_bps: u64,
    /// Fewest upload slots a node gets before `spare_slots`, whatever upload it states.
    pub min_slots: u32,
    /// Most upload slots an appliance gets before `spare_slots` (below `min_slots` counts as
    /// `min_slots`).
    pub max_slots: u32,
    /// The origin's cap instead of `max_slots`.
    pub max_origin_slots: u32,
    /// Slots every node gets on top of its upload's share. An assignment holds its slot from
    /// plan to report, so through the request's round trip while no bytes flow: without
    /// spare slots a source serving distant receivers idles part of the time (measured with
    /// the simulator: see sims/README.md).
    pub spare_slots: u32,
    /// Distinct reporters of corrupt chunks from a source that mark it bad for everyone. One
    /// reporter alone only stops being sent to it, so a lying or broken appliance cannot
    /// exclude an honest one (or the origin) from the mesh; 1 trusts the first report (0
    /// counts as 1).
    pub corrupt_quorum: usize,
    /// Percent of an appliance's `disk_bytes` the planner fills up to. Titles it would
    /// exceed it for are filled only by evicting titles less recently wanted, so the disk
    /// keeps some headroom for the store's own files and for fetches still landing.
    pub evict_watermark_pct: u8,
    /// A title a player was steered to within this long is never evicted. Without it, two
    /// titles wanted in turn on an appliance with room for one would be swapped (each one
    /// refilled in full) at every other steer; with it, at most once per this interval.
    /// Titles never steered to can be evicted at once (a fresh publish is not demand).
    pub evict_min_idle_ms: Millis,
    /// How appliances fill: [`Policy::OriginOnly`] gives each the whole title from the origin.
    pub policy: Policy,
    /// Seed of the hashes that break every tie: the same seed and the same events give the
    /// same decisions.
    pub seed: u64,
}

impl Config {
    /// The distinct reporters that make a node bad: [`Config::corrupt_quorum`], where 0
    /// counts as 1.
    pub fn quorum(&self) -> usize {
        self.corrupt_quorum.max(1)
    }
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
            max_origin_slots: 256,
            spare_slots: 2,
            corrupt_quorum: 2,
            evict_watermark_pct: 90,
            evict_min_idle_ms: 600_000,
            policy: Policy::Mesh,
            seed: 0,
        }
    }
}

/// Why the tracker refused a call.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum CoreError {
    /// The node calling (or reporting) is not registered, or was forgotten as gone.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// The title was never published to this tracker.
    #[error("unknown title {0}")]
    UnknownTitle(TitleId),
    /// A publish named a title already published with another shape (chunk size, package
    /// flag or file lengths).
    #[error("title {0} is already published with a different shape (chunk size or file lengths)")]
    ShapeConflict(TitleId),
    /// A report that does not fit the title or the fleet: a held map of the wrong length, a
    /// chunk or run past the title's end, or a corrupt chunk blamed on a node never
    /// registered (by a player: on anything but a registered appliance).
    #[error("bad report: {0}")]
    BadReport(String),
}

/// Where a client or a transfer sits relative to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) enum ByteClass {
    SameSite,
    SameRegion,
    CrossRegion,
    Origin,
}

impl ByteClass {
    pub(crate) const ALL: [ByteClass; 4] =
        [ByteClass::SameSite, ByteClass::SameRegion, ByteClass::CrossRegion, ByteClass::Origin];

    /// The key used in status JSON and metrics.
    pub(crate) fn key(self) -> &'static str {
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
    /// At most `MAX_TARGETS` nodes, best first: healthy appliances holding some of the title
    /// (near whole holders, near partial ones, far whole ones, far partial ones), then the
    /// origin if it is healthy; empty for an unknown title.
    pub targets: Vec<NodeId>,
    /// Why the list is empty or does not start with an appliance near the client holding the
    /// whole title; empty when it does.
    pub reason: String,
    /// The first target is not a near appliance holding the whole title (a content miss).
    pub content_miss: bool,
}

/// Everything `fillmesh status` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// Every registered, not yet gone appliance and origin, in node id order.
    pub appliances: Vec<ApplianceStatus>,
    /// Every published title, in publish order.
    pub titles: Vec<TitleStatus>,
    /// The fleet's trackers (empty for a tracker without etcd).
    pub trackers: Vec<TrackerStatus>,
}

/// One node in `fillmesh status`: an appliance or the origin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplianceStatus {
    /// Its node id.
    pub peer_id: String,
    /// The mesh (QUIC) address it registered.
    pub addr: String,
    /// "appliance" or "origin".
    pub role: String,
    /// The site it registered in.
    pub site: String,
    /// The region it registered in.
    pub region: String,
    /// Heard from within `unhealthy_after_ms`, connected, and its last heartbeat said healthy.
    pub healthy: bool,
    /// Reported corrupt by a quorum: never a source or steered to again by this tracker.
    pub bad: bool,
    /// Distinct nodes that reported a corrupt chunk from it (counted up to the quorum).
    pub corrupt_reports: u32,
    /// Bytes of the chunks it holds, over every title.
    pub held_bytes: u64,
    /// In-flight per-chunk assignments naming it as first source.
    pub uploads_in_flight: u32,
    /// Per-chunk assignments it may serve at once, from its stated upload (see
    /// [`Config::slot_bps`]).
    pub upload_slots: u32,
    /// Player connections it reported in its last heartbeat.
    pub player_sessions: u32,
    /// Chunks held, per title id (titles it holds none of are left out).
    pub held_chunks: BTreeMap<String, u32>,
    /// The fill window it stated, `HH:MM-HH:MM` ranges in UTC (none: always).
    pub fill_window: Vec<String>,
    /// Whether it takes fill of titles that are not urgent now (by its window and the
    /// tracker's wall clock).
    pub fill_window_open: bool,
}

/// One title in `fillmesh status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TitleStatus {
    /// Its title id.
    pub id: String,
    /// The name it was published under.
    pub name: String,
    /// Its size in bytes (a package's files' together).
    pub size: u64,
    /// Its chunk count.
    pub chunks: u32,
    /// Its files: 1 for a one-file title.
    pub files: u32,
    /// Whether it is a package (served by path under `/titles/<id>/`).
    pub package: bool,
    /// Appliances (role Appliance) holding every chunk.
    pub complete_appliances: u32,
    /// Bytes appliances reported storing from the origin.
    pub origin_bytes: u64,
    /// Bytes appliances reported storing from other appliances, of every class.
    pub peer_bytes: u64,
    /// Keys "same_site", "same_region", "cross_region", "origin".
    pub bytes_by_class: BTreeMap<String, u64>,
    /// When a player last asked for it (its publish time if none has): what eviction ranks by.
    pub last_wanted_ms: Millis,
    /// The PeerId of the tracker that coordinates it (`None` for a tracker without etcd).
    pub owner: Option<String>,
    /// Published urgent: planned to every appliance whatever its fill window.
    pub urgent: bool,
}

/// One plan for an appliance: chunks to fetch, and titles to delete first to make room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Chunks to fetch and their sources: at most the `max` asked for and the appliance's
    /// in-flight allowance, each in flight until `assignment_ttl_ms` from the plan.
    pub assignments: Vec<Assignment>,
    /// At most [`MAX_EVICT`](fillmesh_protocol::messages::MAX_EVICT); the tracker already counts the appliance as not holding them.
    pub evict: Vec<TitleId>,
}

/// What an appliance fills (see [`Tracker::fills`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Fills {
    /// A plan per title it is to fill and does not hold whole, at most
    /// [`MAX_FILLS`](fillmesh_protocol::messages::MAX_FILLS).
    pub plans: Vec<fillmesh_protocol::messages::FillPlan>,
    /// Titles to delete first; the tracker already counts the appliance as not holding them.
    pub evict: Vec<TitleId>,
    /// [`Tracker::epoch`] when they were made.
    pub epoch: u64,
}

/// Who a player is, for counting its reports: its playback token's id (a fleet with tokens),
/// or the address its report came from (an open fleet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlayerId {
    /// The random id of the token the player was steered with.
    Token([u8; 16]),
    /// The address the report came from.
    Address(IpAddr),
}

impl From<IpAddr> for PlayerId {
    fn from(addr: IpAddr) -> Self {
        PlayerId::Address(addr)
    }
}

/// One input of the tracker, for replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A call of [`Tracker::register`].
    Register {
        /// The node (re-)registering.
        node: NodeId,
        /// What it registers as.
        registration: Registration,
    },
    /// A call of [`Tracker::heartbeat`].
    Heartbeat {
        /// The node heard from.
        node: NodeId,
        /// Its state as it reports it.
        heartbeat: Heartbeat,
    },
    /// A call of [`Tracker::lost`].
    Lost {
        /// The node whose connection dropped.
        node: NodeId,
    },
    /// A call of [`Tracker::tick`].
    Tick,
    /// A call of [`Tracker::publish`].
    Publish {
        /// The title's id.
        title: TitleId,
        /// The name it is published under.
        name: String,
        /// Its shape (chunk size and file lengths), from a manifest checked against `title`.
        shape: Shape,
    },
    /// A call of [`Tracker::report_held`].
    ReportHeld {
        /// The node reporting.
        node: NodeId,
        /// The title reported on.
        title: TitleId,
        /// Every chunk of the title the node holds; one bit per chunk.
        held: ChunkBitmap,
        /// The source of each chunk fetched since its last report.
        fetched: Vec<Fetched>,
    },
    /// A call of [`Tracker::report_failure`].
    ReportFailure {
        /// The node whose fetch failed.
        reporter: NodeId,
        /// The title fetched.
        title: TitleId,
        /// The chunk fetched; below the title's chunk count.
        chunk: u32,
        /// The node it was fetched from.
        source: NodeId,
        /// How it failed.
        kind: FailureKind,
    },
    /// A call of [`Tracker::report_player_corrupt`].
    PlayerCorrupt {
        /// The player: its token's id, or the address its report came from.
        player: PlayerId,
        /// The title played.
        title: TitleId,
        /// The chunk that failed verification; below the title's chunk count.
        chunk: u32,
        /// The appliance that served it.
        source: NodeId,
    },
    /// A call of [`Tracker::plan`].
    Plan {
        /// The appliance asking for work.
        node: NodeId,
        /// Most assignments it wants.
        max: usize,
    },
    /// A call of [`Tracker::steer`].
    Steer {
        /// The title the player wants.
        title: TitleId,
        /// The player's address.
        client: IpAddr,
    },
    /// A call of [`Tracker::fills`].
    Fills {
        /// The appliance asking what to fill.
        node: NodeId,
    },
    /// A call of [`Tracker::report_fill`].
    ReportFill {
        /// The appliance summarising its fill.
        node: NodeId,
        /// The title it fills.
        title: TitleId,
        /// Chunks gained since its last answered summary, as runs; within the title.
        gained: Vec<std::ops::Range<u32>>,
        /// Bytes stored meanwhile per source class (same site, same region, cross-region,
        /// origin).
        bytes: [u64; 4],
    },
    /// A call of [`Tracker::set_fill_window`].
    FillWindow {
        /// The appliance stating its window.
        node: NodeId,
        /// Its ranges in UTC; none: always open.
        ranges: Vec<DayRange>,
    },
    /// A call of [`Tracker::wall_clock`].
    WallClock {
        /// The minute of the day in UTC.
        minute: u16,
    },
    /// A call of [`Tracker::mark_urgent`].
    Urgent {
        /// The title marked urgent.
        title: TitleId,
    },
}

/// One output of the tracker, for replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Decision {
    /// The event was taken and has no answer beyond success.
    Done,
    /// The call was refused: the [`CoreError`]'s message.
    Error(String),
    /// The answer to [`Event::Plan`].
    Plan(Plan),
    /// The answer to [`Event::Steer`].
    Steer(Steering),
    /// The answer to [`Event::Fills`].
    Fills(Fills),
}

/// The tracker's whole state, in parts that each call takes what it needs of: the registry
/// (who is there, `registry.rs`), the catalog (what there is to hold, and the per-chunk
/// counts, `catalog.rs`), the fill layouts (`parents.rs`), the fleet of trackers (`fleet.rs`)
/// and the planner's buffers (`planner.rs`); steering and status read them. Counts the
/// planner ranks by (holders and in-flight fetches per chunk, each source's in-flight uploads,
/// the sets of sources with a free slot, each chunk's holders overall, per site and per
/// region) are kept up to date on every event, so a plan costs about a window of the
/// appliance's missing chunks plus a bounded number of sources per assignment, not the size
/// of the title or of the swarm.
#[derive(Debug)]
pub struct Tracker {
    config: Config,
    registry: Registry,
    catalog: Catalog,
    /// The planner's reusable buffers (no state between calls).
    scratch: planner::PlanScratch,
    layouts: parents::Layouts,
    /// The trackers of the fleet, for title ownership.
    fleet: fleet::Fleet,
    /// The appliances' fill windows, and which are closed now.
    windows: window::Windows,
}

impl Tracker {
    /// A tracker with no nodes, titles or fleet, run by `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            registry: Registry::default(),
            catalog: Catalog::default(),
            scratch: planner::PlanScratch::default(),
            layouts: parents::Layouts::default(),
            fleet: fleet::Fleet::default(),
            windows: window::Windows::default(),
        }
    }

    /// The timings and limits it was made with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// (Re-)registration: updates the registration, marks the node healthy with a heartbeat at
    /// `now`, and keeps the held maps it already reported. A `Role::Origin` registration makes
    /// this node the origin; an earlier origin stays registered but is no longer offered.
    pub fn register(&mut self, now: Millis, node: NodeId, registration: Registration) {
        self.advance(now);
        let idx = self.registry.intern(self.config.seed, &node);
        self.registry.register(&self.config, &mut self.catalog, now, idx, registration);
    }

    /// Node `node` was heard from at `now`: alive and connected again, healthy unless
    /// `heartbeat` says otherwise; its player sessions and uploads rank it for steering, and
    /// the players steered to it since its last heartbeat are no longer counted apart.
    /// [`CoreError::UnknownNode`] unless it is registered and not gone.
    pub fn heartbeat(&mut self, now: Millis, node: &NodeId, heartbeat: Heartbeat) -> Result<(), CoreError> {
        self.advance(now);
        let idx = self.registry.live_index(node)?;
        self.registry.heartbeat(&self.config, &mut self.catalog, now, idx, heartbeat);
        Ok(())
    }

    /// The node's connection dropped: unhealthy at once; its in-flight assignments stay until
    /// they expire or it is gone, since it may still finish them over a new connection.
    pub fn lost(&mut self, now: Millis, node: &NodeId) {
        self.advance(now);
        if let Ok(idx) = self.registry.live_index(node) {
            self.registry.lost(&self.config, &mut self.catalog, now, idx);
        }
    }

    /// Advances time: expires assignments, applies health transitions and forgets gone nodes.
    /// Every other mutating call does this first too, so calling it is only needed when no
    /// other event arrives.
    pub fn tick(&mut self, now: Millis) {
        self.advance(now);
    }

    /// When [`Tracker::tick`] next has work: the earliest assignment expiry or node health
    /// or liveness deadline, as quinn-proto's `poll_timeout`. `None` while nothing waits. A
    /// shell sleeps until then; any other call may bring it earlier, so ask again after one.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.registry.poll_timeout()
    }

    /// Adds a title (idempotent for the same shape). The core keeps only the title's shape,
    /// never its hashes, and trusts that `shape` is `title`'s: the server checks the manifest
    /// it is given with `manifest.verify(&title)` and publishes `manifest.shape()`; the
    /// simulator publishes synthetic shapes.
    pub fn publish(
        &mut self,
        now: Millis,
        title: TitleId,
        name: String,
        shape: &Shape,
    ) -> Result<(), CoreError> {
        self.advance(now);
        self.catalog.publish(self.config.seed, now, title, name, shape)
    }

    /// A node's whole held bitmap for a title (replacing the previous one), and the source of
    /// each chunk fetched since its last report. Each (node, title, chunk) is counted in the
    /// byte accounting at most once, so a repeated report does no harm.
    pub fn report_held(
        &mut self,
        now: Millis,
        node: &NodeId,
        title: TitleId,
        held: ChunkBitmap,
        fetched: &[Fetched],
    ) -> Result<(), CoreError> {
        self.advance(now);
        let idx = self.registry.live_index(node)?;
        let t = self.catalog.title_idx(&title)?;
        self.catalog.report_held(&mut self.registry, idx, t, held, fetched)
    }

    /// A swarm appliance's summary of its fill of `title`: the chunks it gained since its
    /// last summary that was answered (runs; added to what it holds) and the bytes it stored
    /// from each [`SourceClass`](fillmesh_protocol::messages::SourceClass) meanwhile (added
    /// to the title's accounting). A run past the title's end is refused and changes nothing.
    /// A summary also says the node is alive, as a heartbeat does: a filling appliance sends
    /// a summary a second and a heartbeat only now and then.
    pub fn report_fill(
        &mut self,
        now: Millis,
        node: &NodeId,
        title: TitleId,
        gained: &[std::ops::Range<u32>],
        bytes: [u64; 4],
    ) -> Result<(), CoreError> {
        self.advance(now);
        let idx = self.registry.live_index(node)?;
        let t = self.catalog.title_idx(&title)?;
        let chunks = self.catalog.title(t).shape.chunk_count();
        let mut held = match self.registry.slots[idx as usize].live.as_ref().and_then(|l| l.held.get(&t)) {
            Some(h) => h.clone(),
            None => ChunkBitmap::new(chunks).map_err(|e| CoreError::BadReport(e.to_string()))?,
        };
        held.insert_runs(gained).map_err(|e| CoreError::BadReport(e.to_string()))?;
        self.catalog.report_held(&mut self.registry, idx, t, held, &[])?;
        self.catalog.add_bytes(t, bytes);
        self.registry.alive(&self.config, &mut self.catalog, now, idx);
        Ok(())
    }

    /// A transfer from `source` failed for `reporter`: the assignment is cleared. A corrupt
    /// chunk excludes `source` from `reporter`'s plans at once, and once reports come from
    /// [`Config::corrupt_quorum`] distinct reporters, marks `source` bad for the life of this
    /// tracker (re-registering does not clear it; a restart does): it is never offered as a
    /// source or steered to again. A single liar thus loses only its own sources.
    pub fn report_failure(
        &mut self,
        now: Millis,
        reporter: &NodeId,
        title: TitleId,
        chunk: u32,
        source: &NodeId,
        kind: FailureKind,
    ) -> Result<(), CoreError> {
        self.advance(now);
        let idx = self.registry.live_index(reporter)?;
        let t = self.catalog.title_idx(&title)?;
        let chunks = self.catalog.title(t).shape.chunk_count();
        if chunk >= chunks {
            return Err(CoreError::BadReport(format!("chunk {chunk} of a title of {chunks} chunks")));
        }
        self.registry.drop_inflight(&mut self.catalog, idx, t, chunk);
        if kind == FailureKind::Corrupt {
            // Only a node that registered can have served the chunk. An unknown id is refused,
            // not remembered: a trusted reporter could otherwise grow the node table without
            // bound.
            let Some(source) = self.registry.index_of(source) else {
                return Err(CoreError::BadReport(format!("corrupt chunk from unknown node {source}")));
            };
            self.registry.note_corrupt(&self.config, &mut self.catalog, now, idx, source);
        }
        Ok(())
    }

    /// A player `player` received chunk `chunk` of `title` from the appliance `source` and it
    /// failed verification. It counts toward `source`'s quorum as one more distinct reporter,
    /// exactly as a corrupt-chunk report between appliances does; players are told apart by
    /// their playback token's id where the fleet hands out tokens (one token is one reporter,
    /// from whatever address), else by the address their report came from (an IPv6 address
    /// by its /64), so one player reporting again and again counts once. The title must be
    /// published, the chunk within it, and `source` a registered appliance (players are never
    /// steered to the origin): anything else is refused and changes nothing.
    pub fn report_player_corrupt(
        &mut self,
        now: Millis,
        player: impl Into<PlayerId>,
        title: TitleId,
        chunk: u32,
        source: &NodeId,
    ) -> Result<(), CoreError> {
        self.advance(now);
        let t = self.catalog.title_idx(&title)?;
        let chunks = self.catalog.title(t).shape.chunk_count();
        if chunk >= chunks {
            return Err(CoreError::BadReport(format!("chunk {chunk} of a title of {chunks} chunks")));
        }
        let idx = match self.registry.index_of(source) {
            Some(i)
                if self.registry.slots[i as usize]
                    .registration
                    .as_ref()
                    .is_some_and(|r| r.role == Role::Appliance) =>
            {
                i
            }
            _ => return Err(CoreError::BadReport(format!("{source} is no appliance this tracker knows"))),
        };
        let reporter = registry::Reporter::player(player.into());
        self.registry.count_corrupt(&self.config, &mut self.catalog, now, reporter, idx);
        Ok(())
    }

    /// How many distinct reporters (nodes and players) reported a corrupt chunk from `node`
    /// (counted up to the quorum), and whether it is bad.
    pub fn corrupt_reports(&self, node: &NodeId) -> (usize, bool) {
        self.registry.corrupt_reports(node)
    }

    /// The next batch of work for `node`: at most `max` assignments, and no more than its
    /// in-flight allowance. Each is recorded in flight until `now + assignment_ttl_ms`. Titles
    /// evicted to make room for them are forgotten as held by `node` at once, so neither plans
    /// nor steering use it for them while it deletes them.
    pub fn plan(&mut self, now: Millis, node: &NodeId, max: usize) -> Result<Plan, CoreError> {
        self.advance(now);
        let idx = self.registry.live_index(node)?;
        let mut planner = planner::Planner {
            config: &self.config,
            registry: &mut self.registry,
            catalog: &mut self.catalog,
            scratch: &mut self.scratch,
        };
        Ok(planner.plan(now, idx, max))
    }

    /// The fill plan of appliance `node` for `title` as of `now`. The same epoch gives the
    /// same plan; an appliance asks again when its parents fail it or the epoch moves.
    pub fn fill_plan(&mut self, now: Millis, node: &NodeId, title: &TitleId) -> Result<FillPlan, CoreError> {
        self.advance(now);
        let a = self.registry.live_index(node)?;
        let t = self.catalog.title_idx(title)?;
        Ok(self.layouts.plan_of(&self.config, &self.registry, &self.catalog, &self.windows, a, t))
    }

    /// What appliance `node` fills now: a plan for each title it is to hold and does not hold
    /// whole, and the titles it must delete first to make room for them, as of
    /// [`Tracker::epoch`]. Titles another live tracker of the fleet owns are left out.
    pub fn fills(&mut self, now: Millis, node: &NodeId) -> Result<Fills, CoreError> {
        self.advance(now);
        let a = self.registry.live_index(node)?;
        Ok(self.layouts.fills(
            &self.config,
            &mut self.registry,
            &mut self.catalog,
            &self.fleet,
            &self.windows,
            now,
            a,
        ))
    }

    /// Appliance `node`'s fill window is `ranges` (minutes of the day in UTC; none: always
    /// open) from now on: outside it, it is planned no fill of a title that is not urgent and
    /// is nobody's parent for one. Moves the epoch when that changes whether it is open.
    /// Refused, changing nothing, for an unknown node, more than
    /// [`MAX_WINDOW_RANGES`](fillmesh_protocol::messages::MAX_WINDOW_RANGES) ranges, or a
    /// range out of the day or empty.
    pub fn set_fill_window(
        &mut self,
        now: Millis,
        node: &NodeId,
        ranges: Vec<DayRange>,
    ) -> Result<(), CoreError> {
        self.advance(now);
        let idx = self.registry.live_index(node)?;
        if self.windows.set(idx, ranges)? {
            self.registry.layout_epoch += 1;
        }
        Ok(())
    }

    /// The fill window `node` stated (none: always open).
    pub fn fill_window(&self, node: &NodeId) -> &[DayRange] {
        self.registry.index_of(node).map_or(&[], |idx| self.windows.ranges(idx))
    }

    /// Whether `node` takes fill of titles that are not urgent now (by its window and the
    /// last [`Tracker::wall_clock`]).
    pub fn fill_window_open(&self, node: &NodeId) -> bool {
        self.registry.index_of(node).is_none_or(|idx| self.windows.open(idx))
    }

    /// The minute of the day in UTC is `minute`: the shell tells it as the wall clock turns
    /// (the core reads no clock), and every window opens or closes by it. Moves the epoch when
    /// a window opened or closed, so that appliances ask for their fills again.
    pub fn wall_clock(&mut self, now: Millis, minute: u16) {
        self.advance(now);
        if self.windows.clock(minute) {
            self.registry.layout_epoch += 1;
        }
    }

    /// Marks a published title urgent: planned to every appliance whatever its fill window
    /// (and from any parent). [`CoreError::UnknownTitle`] unless it is published; marking it
    /// again changes nothing.
    pub fn mark_urgent(&mut self, now: Millis, title: &TitleId) -> Result<(), CoreError> {
        self.advance(now);
        let t = self.catalog.title_idx(title)?;
        if self.catalog.set_urgent(t) {
            self.registry.layout_epoch += 1;
        }
        Ok(())
    }

    /// Whether `title` was marked urgent.
    pub fn is_urgent(&self, title: &TitleId) -> bool {
        self.catalog.title_idx(title).is_ok_and(|t| self.catalog.title(t).urgent)
    }

    /// Moves whenever an appliance's fills or the member list may have changed: a layout's
    /// epoch (the fleet's eligible appliances, the origin), the catalog (a title published)
    /// or the members (nodes ask for the list again when it moves).
    pub fn epoch(&self) -> u64 {
        parents::epoch(&self.registry, &self.catalog, &self.fleet)
    }

    /// The epoch of the layouts: moves whenever plans may change.
    pub fn plan_epoch(&self) -> u64 {
        self.registry.layout_epoch
    }

    /// Where a player should stream `title` from. Asking marks the title wanted at `now`,
    /// which protects it from eviction by titles published or wanted earlier; steering is a
    /// replay [`Event`] for that reason.
    pub fn steer(&mut self, now: Millis, title: &TitleId, client: IpAddr) -> Steering {
        self.catalog.note_wanted(now, title);
        steering::steer(&self.config, &mut self.registry, &self.catalog, now, title, client)
    }

    /// Every registered node the tracker vouches for (healthy or not, not gone, not bad).
    pub fn members(&self) -> Vec<NodeId> {
        self.registry.members()
    }

    /// The catalog in publish order.
    pub fn catalog(&self) -> Vec<CatalogEntry> {
        self.catalog.entries()
    }

    /// The shape `title` was published with, if it was.
    pub fn shape(&self, title: &TitleId) -> Option<&Shape> {
        self.catalog.shape(title)
    }

    /// The registration of a live (not gone) node.
    pub fn registration(&self, node: &NodeId) -> Option<&Registration> {
        self.registry.registration(node)
    }

    /// Everything `fillmesh status` prints, health judged as of `now`.
    pub fn status(&self, now: Millis) -> Status {
        status::status(&self.config, &self.registry, &self.catalog, &self.fleet, &self.windows, now)
    }

    /// The fleet as the shell knows it: this tracker's id and the live trackers (itself
    /// included when its lease is held). Trackers seen before and not in `live` are kept as
    /// not live (up to [`fleet::MAX_TRACKERS`]). Moves the epoch when the live set changes, so
    /// that appliances ask for their fills (and the tracker list) again.
    pub fn set_fleet(&mut self, me: NodeId, live: Vec<TrackerInfo>) {
        self.fleet.set(me, live);
    }

    /// The live trackers' ids, sorted (empty without a fleet).
    pub fn live_trackers(&self) -> Vec<NodeId> {
        self.fleet.live_trackers()
    }

    /// The live tracker that coordinates `title`: `None` without a fleet, or when no tracker
    /// is live (not even this one).
    pub fn owner(&self, title: &TitleId) -> Option<&NodeId> {
        self.fleet.owner(title)
    }

    /// Whether this tracker coordinates `title`: always without a fleet; with one, when it is
    /// the owner, or when no tracker is live at all (this one's lease lost too: it keeps
    /// coordinating on what it knows rather than nobody doing so).
    pub fn owns(&self, title: &TitleId) -> bool {
        self.fleet.owns(title)
    }

    /// The tracker record of `peer`, if the fleet knows it.
    pub fn tracker_info(&self, peer: &NodeId) -> Option<&TrackerInfo> {
        self.fleet.tracker_info(peer)
    }

    /// Every in-flight assignment: (appliance, title, chunk, first source), sorted.
    #[doc(hidden)]
    pub fn debug_inflight(&self) -> Vec<(NodeId, TitleId, u32, NodeId)> {
        status::inflight(&self.registry, &self.catalog)
    }

    /// In-flight assignments naming `node` as first source, and its upload slots.
    #[doc(hidden)]
    pub fn debug_load(&self, node: &NodeId) -> Option<(u32, u32)> {
        status::load(&self.registry, node)
    }

    /// Recomputes every incrementally kept count from scratch and says where they differ.
    #[doc(hidden)]
    pub fn debug_validate(&self, now: Millis) -> Result<(), Inconsistency> {
        status::validate(&self.config, &self.registry, &self.catalog, now)
    }

    /// Replay entry point: one event in, one decision out.
    pub fn handle(&mut self, now: Millis, event: &Event) -> Decision {
        fn done(r: Result<(), CoreError>) -> Decision {
            match r {
                Ok(()) => Decision::Done,
                Err(e) => Decision::Error(e.to_string()),
            }
        }
        match event {
            Event::Register { node, registration } => {
                self.register(now, node.clone(), registration.clone());
                Decision::Done
            }
            Event::Heartbeat { node, heartbeat } => done(self.heartbeat(now, node, *heartbeat)),
            Event::Lost { node } => {
                self.lost(now, node);
                Decision::Done
            }
            Event::Tick => {
                self.tick(now);
                Decision::Done
            }
            Event::Publish { title, name, shape } => done(self.publish(now, *title, name.clone(), shape)),
            Event::ReportHeld { node, title, held, fetched } => {
                done(self.report_held(now, node, *title, held.clone(), fetched))
            }
            Event::ReportFailure { reporter, title, chunk, source, kind } => {
                done(self.report_failure(now, reporter, *title, *chunk, source, *kind))
            }
            Event::PlayerCorrupt { player, title, chunk, source } => {
                done(self.report_player_corrupt(now, *player, *title, *chunk, source))
            }
            Event::Plan { node, max } => match self.plan(now, node, *max) {
                Ok(plan) => Decision::Plan(plan),
                Err(e) => Decision::Error(e.to_string()),
            },
            Event::Steer { title, client } => Decision::Steer(self.steer(now, title, *client)),
            Event::Fills { node } => match self.fills(now, node) {
                Ok(fills) => Decision::Fills(fills),
                Err(e) => Decision::Error(e.to_string()),
            },
            Event::ReportFill { node, title, gained, bytes } => {
                done(self.report_fill(now, node, *title, gained, *bytes))
            }
            Event::FillWindow { node, ranges } => done(self.set_fill_window(now, node, ranges.clone())),
            Event::WallClock { minute } => {
                self.wall_clock(now, *minute);
                Decision::Done
            }
            Event::Urgent { title } => done(self.mark_urgent(now, title)),
        }
    }

    /// Expires assignments and applies the health and liveness transitions due by `now`.
    fn advance(&mut self, now: Millis) {
        self.registry.advance(&self.config, &mut self.catalog, now);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use fillmesh_protocol::messages::Role;
    use fillmesh_protocol::ChunkSize;

    use super::registry::{slots_for, MAX_EXCLUDED};
    use super::*;

    fn id(s: &str) -> NodeId {
        s.parse().unwrap()
    }

    fn reg(role: Role, upload_bps: u64) -> Registration {
        Registration {
            role,
            mesh_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            site: "s".into(),
            region: "r".into(),
            prefixes: vec!["10.0.0.0/8".parse().unwrap()],
            upload_bps,
            disk_bytes: u64::MAX,
            cert_sha256: None,
        }
    }

    fn shape(chunks: u32) -> Shape {
        Shape::file(u64::from(chunks) * 1024, ChunkSize::new(1024).unwrap()).unwrap()
    }

    #[test]
    fn upload_slots_are_clamped_plus_spares() {
        let t = Tracker::new(Config::default());
        assert_eq!(slots_for(t.config(), Role::Appliance, 0), 2 + 2);
        assert_eq!(slots_for(t.config(), Role::Appliance, 50_000_000), 4 + 2);
        assert_eq!(slots_for(t.config(), Role::Appliance, u64::MAX), 16 + 2);
        // The origin is not held to an appliance's cap.
        assert_eq!(slots_for(t.config(), Role::Origin, 1_250_000_000), 100 + 2);
        assert_eq!(slots_for(t.config(), Role::Origin, u64::MAX), 256 + 2);
    }

    /// A title still filling: the near partial holders (most held first) come after the whole
    /// holders nearby, then a whole holder in another region, then the origin; the answer says
    /// so, and it is a content miss only while no near appliance holds it whole.
    #[test]
    fn steering_lists_partial_holders_then_far_whole_holders_then_the_origin() {
        let mut t = Tracker::new(Config::default());
        let title = TitleId::from_bytes([1; 32]);
        let far = Registration { region: "elsewhere".into(), prefixes: vec![], ..reg(Role::Appliance, 0) };
        t.register(0, id("Q"), reg(Role::Origin, u64::MAX));
        for n in ["A", "B", "C"] {
            t.register(0, id(n), reg(Role::Appliance, 0));
        }
        t.register(0, id("F"), far);
        t.publish(0, title, "x".into(), &shape(8)).unwrap();
        t.report_held(0, &id("Q"), title, ChunkBitmap::full(8).unwrap(), &[]).unwrap();
        let client = "10.1.2.3".parse().unwrap();
        let steering = t.steer(0, &title, client);
        assert_eq!(steering.targets, vec![id("Q")], "only the origin holds it");
        assert!(steering.content_miss && !steering.reason.is_empty());
        let mut some = ChunkBitmap::new(8).unwrap();
        for i in 0..3 {
            some.insert(i);
        }
        t.report_held(0, &id("A"), title, some.clone(), &[]).unwrap();
        some.insert(3);
        t.report_held(0, &id("B"), title, some, &[]).unwrap();
        t.report_held(0, &id("F"), title, ChunkBitmap::full(8).unwrap(), &[]).unwrap();
        let steering = t.steer(0, &title, client);
        assert_eq!(steering.targets, vec![id("B"), id("A"), id("F"), id("Q")]);
        assert!(steering.content_miss);
        t.report_held(0, &id("C"), title, ChunkBitmap::full(8).unwrap(), &[]).unwrap();
        let steering = t.steer(0, &title, client);
        assert_eq!(steering.targets, vec![id("C"), id("B"), id("A"), id("F"), id("Q")]);
        assert!(!steering.content_miss && steering.reason.is_empty());
        t.debug_validate(0).unwrap();
    }

    /// Two equal appliances: new players alternate between them (each steer counts until the
    /// next heartbeat), and a heartbeat's player sessions rank the busier one last.
    #[test]
    fn steering_spreads_new_players_over_equal_appliances_by_load() {
        let mut t = Tracker::new(Config::default());
        let title = TitleId::from_bytes([1; 32]);
        for n in ["A", "B"] {
            t.register(0, id(n), reg(Role::Appliance, 0));
        }
        t.publish(0, title, "x".into(), &shape(2)).unwrap();
        for n in ["A", "B"] {
            t.report_held(0, &id(n), title, ChunkBitmap::full(2).unwrap(), &[]).unwrap();
        }
        let client = "10.1.2.3".parse().unwrap();
        let firsts: Vec<NodeId> = (0..4).map(|_| t.steer(0, &title, client).targets[0].clone()).collect();
        assert_eq!(firsts, vec![id("A"), id("B"), id("A"), id("B")]);
        let sessions = |n| Heartbeat {
            healthy: true,
            uploads_in_flight: 0,
            upload_bps_used: 0,
            player_sessions: n,
            disk_used: 0,
        };
        t.heartbeat(100, &id("A"), sessions(5)).unwrap();
        t.heartbeat(100, &id("B"), sessions(1)).unwrap();
        let firsts: Vec<NodeId> = (0..5).map(|_| t.steer(100, &title, client).targets[0].clone()).collect();
        assert_eq!(firsts, vec![id("B"); 4].into_iter().chain([id("A")]).collect::<Vec<_>>());
        t.debug_validate(100).unwrap();
    }

    #[test]
    fn publishing_is_idempotent_and_conflicts_are_refused() {
        let mut t = Tracker::new(Config::default());
        let title = TitleId::from_bytes([1; 32]);
        t.publish(0, title, "a".into(), &shape(3)).unwrap();
        t.publish(0, title, "b".into(), &shape(3)).unwrap();
        assert_eq!(t.publish(0, title, "a".into(), &shape(4)), Err(CoreError::ShapeConflict(title)));
        assert_eq!(t.catalog().len(), 1);
        assert_eq!(t.catalog()[0].name, "a");
    }

    #[test]
    fn silence_makes_a_node_unhealthy_then_gone_with_its_held_maps() {
        let mut t = Tracker::new(Config::default());
        let (a, title) = (id("A"), TitleId::from_bytes([1; 32]));
        t.register(0, a.clone(), reg(Role::Appliance, 0));
        t.publish(0, title, "x".into(), &shape(2)).unwrap();
        t.report_held(0, &a, title, ChunkBitmap::full(2).unwrap(), &[]).unwrap();
        let client = "10.1.2.3".parse().unwrap();
        assert_eq!(t.steer(0, &title, client).targets, vec![a.clone()]);
        t.tick(3_500);
        assert!(t.steer(3_500, &title, client).targets.is_empty());
        assert_eq!(t.members(), vec![a.clone()]);
        t.tick(15_000);
        assert!(t.members().is_empty());
        assert_eq!(
            t.heartbeat(
                15_000,
                &a,
                Heartbeat {
                    healthy: true,
                    uploads_in_flight: 0,
                    upload_bps_used: 0,
                    player_sessions: 0,
                    disk_used: 0
                }
            ),
            Err(CoreError::UnknownNode(a.clone()))
        );
        t.register(16_000, a.clone(), reg(Role::Appliance, 0));
        assert_eq!(
            t.steer(16_000, &title, client).reason,
            "no healthy appliance holds the title yet and the origin is not reachable"
        );
        t.debug_validate(16_000).unwrap();
    }

    #[test]
    fn no_deadline_while_nothing_waits() {
        let mut t = Tracker::new(Config::default());
        assert_eq!(t.poll_timeout(), None);
        t.publish(0, TitleId::from_bytes([1; 32]), "x".into(), &shape(2)).unwrap();
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn the_next_deadline_is_when_a_node_turns_unhealthy_then_gone() {
        let mut t = Tracker::new(Config::default());
        let a = id("A");
        let healthy = |t: &Tracker, now| t.status(now).appliances[0].healthy;
        t.register(1_000, a.clone(), reg(Role::Appliance, 0));
        assert_eq!(t.poll_timeout(), Some(1_000 + 3_500));
        // Registering again (a heartbeat at that time) moves it later.
        t.register(2_000, a.clone(), reg(Role::Appliance, 0));
        assert_eq!(t.poll_timeout(), Some(2_000 + 3_500));
        t.tick(5_499);
        assert!(healthy(&t, 5_499));
        assert_eq!(t.poll_timeout(), Some(5_500));
        // Ticking at exactly the deadline applies it; the next one is when the node is gone.
        t.tick(5_500);
        assert!(!healthy(&t, 5_500));
        assert_eq!(t.poll_timeout(), Some(2_000 + 15_000));
        t.tick(17_000);
        assert!(t.members().is_empty());
        assert_eq!(t.poll_timeout(), None);
        t.debug_validate(17_000).unwrap();
    }

    #[test]
    fn the_next_deadline_can_be_an_assignment_expiring() {
        let config = Config { assignment_ttl_ms: 1_000, ..Config::default() };
        let (mut t, [a, ..], _) = b_holds_the_title(config);
        assert_eq!(t.poll_timeout(), Some(3_500), "the nodes' health, nothing in flight");
        assert_eq!(t.plan(0, &a, 8).unwrap().assignments.len(), 2);
        assert_eq!(t.poll_timeout(), Some(1_000));
        assert!(t.plan(999, &a, 8).unwrap().assignments.is_empty(), "both chunks are in flight");
        t.tick(1_000);
        assert_eq!(t.poll_timeout(), Some(3_500));
        assert_eq!(t.plan(1_000, &a, 8).unwrap().assignments.len(), 2, "expired, planned again");
        t.debug_validate(1_000).unwrap();
    }

    /// Appliances A, B, C and D in one site; B holds the whole title of two chunks.
    fn b_holds_the_title(config: Config) -> (Tracker, [NodeId; 4], TitleId) {
        let mut t = Tracker::new(config);
        let nodes = [id("A"), id("B"), id("C"), id("D")];
        for n in &nodes {
            t.register(0, n.clone(), reg(Role::Appliance, 0));
        }
        let title = TitleId::from_bytes([1; 32]);
        t.publish(0, title, "x".into(), &shape(2)).unwrap();
        t.report_held(0, &nodes[1], title, ChunkBitmap::full(2).unwrap(), &[]).unwrap();
        (t, nodes, title)
    }

    fn names(plan: &[Assignment], node: &NodeId) -> bool {
        plan.iter().any(|p| p.sources.iter().any(|s| &s.node == node))
    }

    fn corrupt_reports(t: &Tracker, node: &str) -> (u32, bool) {
        let s = t.status(0).appliances.into_iter().find(|s| s.peer_id == node).unwrap();
        (s.corrupt_reports, s.bad)
    }

    /// `bad`, the only holder of `title`, is no member, no source for `other` and no steering
    /// target, even after it registers again.
    fn never_offered_again(t: &mut Tracker, bad: &NodeId, other: &NodeId, title: TitleId) {
        assert!(!t.members().contains(bad));
        let unused = |t: &mut Tracker, now| {
            assert!(
                t.plan(now, other, 8).unwrap().assignments.is_empty(),
                "{other} was sent to a bad source"
            );
            assert!(t.steer(now, &title, "10.0.0.1".parse().unwrap()).targets.is_empty());
        };
        unused(t, 0);
        t.register(1, bad.clone(), reg(Role::Appliance, 0));
        unused(t, 1);
        t.debug_validate(1).unwrap();
    }

    #[test]
    fn one_corrupt_report_excludes_the_source_for_the_reporter_only() {
        let (mut t, [a, b, c, _], title) = b_holds_the_title(Config::default());
        let plan = t.plan(0, &a, 8).unwrap().assignments;
        assert!(plan.len() == 2 && plan.iter().all(|p| p.sources[0].node == b));
        t.report_failure(0, &a, title, plan[0].chunk, &b, FailureKind::Corrupt).unwrap();
        assert_eq!(corrupt_reports(&t, "B"), (1, false));
        assert!(t.members().contains(&b));
        assert_eq!(t.steer(0, &title, "10.0.0.1".parse().unwrap()).targets, vec![b.clone()]);
        // A, with one chunk still in flight from B, is not sent to B for the other.
        assert!(t.plan(0, &a, 8).unwrap().assignments.is_empty());
        assert!(names(&t.plan(0, &c, 8).unwrap().assignments, &b), "C is still sent to B");
        // Nor once its in-flight chunk is done, nor after B re-registers.
        t.report_failure(0, &a, title, plan[1].chunk, &b, FailureKind::Timeout).unwrap();
        t.register(1, b.clone(), reg(Role::Appliance, 0));
        assert!(t.plan(1, &a, 8).unwrap().assignments.is_empty());
        t.debug_validate(1).unwrap();
    }

    #[test]
    fn a_second_distinct_reporter_marks_the_source_bad() {
        let (mut t, [a, b, c, d], title) = b_holds_the_title(Config::default());
        for reporter in [&a, &c] {
            let plan = t.plan(0, reporter, 8).unwrap().assignments;
            assert!(names(&plan, &b));
            t.report_failure(0, reporter, title, plan[0].chunk, &b, FailureKind::Corrupt).unwrap();
        }
        assert_eq!(corrupt_reports(&t, "B"), (2, true));
        never_offered_again(&mut t, &b, &d, title);
    }

    #[test]
    fn players_count_toward_the_quorum_once_per_address_beside_appliances() {
        let (mut t, [a, b, _, d], title) = b_holds_the_title(Config::default());
        let player = |s: &str| s.parse::<IpAddr>().unwrap();
        // One player, however often and from whichever address of its /64, is one reporter.
        for addr in ["2001:db8::1", "2001:db8::2", "2001:db8::1"] {
            t.report_player_corrupt(0, player(addr), title, 1, &b).unwrap();
        }
        assert_eq!(corrupt_reports(&t, "B"), (1, false));
        // An appliance's report is a second, distinct reporter: the quorum.
        let plan = t.plan(0, &a, 8).unwrap().assignments;
        t.report_failure(0, &a, title, plan[0].chunk, &b, FailureKind::Corrupt).unwrap();
        assert_eq!(corrupt_reports(&t, "B"), (2, true));
        never_offered_again(&mut t, &b, &d, title);
    }

    /// With tokens, a token is one reporter whatever address it reports from, and two tokens
    /// from one address are two.
    #[test]
    fn players_count_by_token_when_they_have_one() {
        let (mut t, [_, b, _, d], title) = b_holds_the_title(Config::default());
        for _ in 0..3 {
            t.report_player_corrupt(0, PlayerId::Token([1; 16]), title, 0, &b).unwrap();
        }
        assert_eq!(corrupt_reports(&t, "B"), (1, false));
        t.report_player_corrupt(0, PlayerId::Token([2; 16]), title, 0, &b).unwrap();
        assert_eq!(corrupt_reports(&t, "B"), (2, true));
        never_offered_again(&mut t, &b, &d, title);
    }

    #[test]
    fn two_players_at_distinct_addresses_mark_an_appliance_bad() {
        let (mut t, [_, b, _, d], title) = b_holds_the_title(Config::default());
        t.report_player_corrupt(0, "192.0.2.7".parse::<IpAddr>().unwrap(), title, 0, &b).unwrap();
        // The same IPv4 address mapped into IPv6 is the same player.
        t.report_player_corrupt(0, "::ffff:192.0.2.7".parse::<IpAddr>().unwrap(), title, 0, &b).unwrap();
        assert_eq!(corrupt_reports(&t, "B"), (1, false));
        t.report_player_corrupt(0, "192.0.2.8".parse::<IpAddr>().unwrap(), title, 0, &b).unwrap();
        assert_eq!(corrupt_reports(&t, "B"), (2, true));
        never_offered_again(&mut t, &b, &d, title);
    }

    #[test]
    fn a_player_report_that_does_not_hold_together_is_refused_and_changes_nothing() {
        let (mut t, [_, b, ..], title) = b_holds_the_title(Config::default());
        let origin = id("Src");
        t.register(0, origin.clone(), reg(Role::Origin, 0));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let unknown_title = TitleId::from_bytes([9; 32]);
        assert_eq!(
            t.report_player_corrupt(0, ip, unknown_title, 0, &b),
            Err(CoreError::UnknownTitle(unknown_title))
        );
        for (chunk, source) in [(2, &b), (0, &id("Stranger9")), (0, &origin)] {
            let refused = t.report_player_corrupt(0, ip, title, chunk, source);
            assert!(matches!(refused, Err(CoreError::BadReport(_))), "{chunk} {source}: {refused:?}");
        }
        assert!(t.status(0).appliances.iter().all(|a| a.corrupt_reports == 0 && !a.bad));
        assert_eq!(t.debug_validate(0), Ok(()));
    }

    #[test]
    fn the_same_reporter_twice_does_not_reach_the_quorum() {
        let (mut t, [a, b, c, _], title) = b_holds_the_title(Config::default());
        let plan = t.plan(0, &a, 8).unwrap().assignments;
        for p in plan.iter().chain(&plan) {
            t.report_failure(0, &a, title, p.chunk, &b, FailureKind::Corrupt).unwrap();
        }
        assert_eq!(corrupt_reports(&t, "B"), (1, false));
        assert!(names(&t.plan(0, &c, 8).unwrap().assignments, &b));
        t.debug_validate(0).unwrap();
    }

    #[test]
    fn a_corrupt_report_naming_an_unknown_node_is_refused_and_remembers_nothing() {
        let (mut t, [a, _, _, _], title) = b_holds_the_title(Config::default());
        let plan = t.plan(0, &a, 8).unwrap().assignments;
        let nodes = t.status(0).appliances.len();
        for n in 0..100 {
            // Base58 names: never registered.
            let (x, y) = (b"ABCDEFGHJK"[n / 10], b"MNPQRSTUVW"[n % 10]);
            let stranger = id(&format!("S{}{}", char::from(x), char::from(y)));
            let refused = t.report_failure(0, &a, title, plan[0].chunk, &stranger, FailureKind::Corrupt);
            assert!(matches!(refused, Err(CoreError::BadReport(_))), "{refused:?}");
        }
        assert_eq!(t.status(0).appliances.len(), nodes, "the node table grew");
        t.debug_validate(0).unwrap();
    }

    #[test]
    fn a_bad_reporter_is_not_believed_about_others() {
        let (mut t, [a, b, c, d], title) = b_holds_the_title(Config::default());
        // C and D make A bad (its chunks of a second title lied to them).
        let second = TitleId::from_bytes([2; 32]);
        t.publish(0, second, "y".into(), &shape(2)).unwrap();
        t.report_held(0, &a, second, ChunkBitmap::full(2).unwrap(), &[]).unwrap();
        for reporter in [&c, &d] {
            t.report_failure(0, reporter, second, 0, &a, FailureKind::Corrupt).unwrap();
        }
        assert_eq!(corrupt_reports(&t, "A"), (2, true));
        // A then accuses B: A is no longer sent to B, but B's count does not move, so one
        // honest report more does not make it bad.
        let plan = t.plan(0, &a, 8).unwrap().assignments;
        assert!(names(&plan, &b));
        t.report_failure(0, &a, title, plan[0].chunk, &b, FailureKind::Corrupt).unwrap();
        assert_eq!(corrupt_reports(&t, "B"), (0, false));
        t.report_failure(0, &c, title, 0, &b, FailureKind::Corrupt).unwrap();
        assert_eq!(corrupt_reports(&t, "B"), (1, false));
        t.debug_validate(0).unwrap();
    }

    #[test]
    fn with_a_quorum_of_one_the_first_corrupt_report_marks_the_source_bad() {
        let (mut t, [a, b, c, _], title) =
            b_holds_the_title(Config { corrupt_quorum: 1, ..Config::default() });
        let plan = t.plan(0, &a, 8).unwrap().assignments;
        t.report_failure(0, &a, title, plan[0].chunk, &b, FailureKind::Corrupt).unwrap();
        assert_eq!(corrupt_reports(&t, "B"), (1, true));
        never_offered_again(&mut t, &b, &c, title);
    }

    #[test]
    fn a_chunk_only_excluded_sources_hold_comes_from_the_origin() {
        let (mut t, [a, b, c, _], title) = b_holds_the_title(Config::default());
        let o = id("Q");
        t.register(0, o.clone(), reg(Role::Origin, u64::MAX));
        t.report_held(0, &o, title, ChunkBitmap::full(2).unwrap(), &[]).unwrap();
        let plan = t.plan(0, &a, 8).unwrap().assignments;
        assert!(plan.iter().all(|p| p.sources.len() == 1 && p.sources[0].node == b));
        for p in &plan {
            t.report_failure(0, &a, title, p.chunk, &b, FailureKind::Corrupt).unwrap();
        }
        let plan = t.plan(0, &a, 8).unwrap().assignments;
        assert_eq!(plan.len(), 2);
        assert!(plan.iter().all(|p| p.sources.len() == 1 && p.sources[0].node == o));
        // C, which excludes nobody, is still sent to B, not to the origin.
        let of_c = t.plan(0, &c, 8).unwrap().assignments;
        assert!(of_c.len() == 2 && of_c.iter().all(|p| p.sources[0].node == b));
        // Once A reports the origin corrupt too (and C's fetches are over), nobody is left.
        for p in &of_c {
            t.report_failure(0, &c, title, p.chunk, &b, FailureKind::Timeout).unwrap();
        }
        t.report_failure(0, &a, title, plan[0].chunk, &o, FailureKind::Corrupt).unwrap();
        t.report_failure(0, &a, title, plan[1].chunk, &o, FailureKind::Timeout).unwrap();
        assert!(t.plan(0, &a, 8).unwrap().assignments.is_empty());
        t.debug_validate(0).unwrap();
    }

    #[test]
    fn a_reporter_excludes_at_most_its_latest_sources() {
        let (mut t, [a, ..], title) = b_holds_the_title(Config::default());
        // Node ids are base58: no '0'.
        let sources: Vec<NodeId> =
            (0..=MAX_EXCLUDED).map(|i| id(&format!("S{}", i.to_string().replace('0', "z")))).collect();
        for s in &sources {
            t.register(0, s.clone(), reg(Role::Appliance, 0));
            t.report_failure(0, &a, title, 0, s, FailureKind::Corrupt).unwrap();
        }
        let r = &t.registry;
        let excluded = &r.slots[r.lookup[&a] as usize].excluded;
        assert_eq!(excluded.len(), MAX_EXCLUDED);
        assert!(!excluded.contains(&r.lookup[&sources[0]]));
        assert!(excluded.contains(&r.lookup[&sources[MAX_EXCLUDED]]));
        // The oldest one, no longer excluded, is named to A again; the next oldest is not.
        for s in &sources[..2] {
            t.report_held(0, s, title, ChunkBitmap::full(2).unwrap(), &[]).unwrap();
        }
        let plan = t.plan(0, &a, 8).unwrap().assignments;
        assert!(names(&plan, &sources[0]) && !names(&plan, &sources[1]), "{plan:?}");
        t.debug_validate(0).unwrap();
    }

    #[test]
    fn the_origin_is_offered_only_for_chunks_nobody_has() {
        let mut t = Tracker::new(Config::default());
        let (o, a, b, title) = (id("Q"), id("A"), id("B"), TitleId::from_bytes([1; 32]));
        t.register(0, o.clone(), reg(Role::Origin, u64::MAX));
        t.register(0, a.clone(), reg(Role::Appliance, 0));
        t.register(0, b.clone(), reg(Role::Appliance, 0));
        t.publish(0, title, "x".into(), &shape(4)).unwrap();
        // Until the origin says it holds the title, nobody can serve it.
        assert!(t.plan(0, &a, 8).unwrap().assignments.is_empty());
        t.report_held(0, &o, title, ChunkBitmap::full(4).unwrap(), &[]).unwrap();
        let first = t.plan(0, &a, 8).unwrap().assignments;
        assert_eq!(first.len(), 2, "at most two origin fetches per appliance");
        assert!(first.iter().all(|p| p.sources.len() == 1 && p.sources[0].role == Role::Origin));
        let second = t.plan(0, &b, 8).unwrap().assignments;
        assert_eq!(second.len(), 2);
        assert!(
            second.iter().all(|p| first.iter().all(|f| f.chunk != p.chunk)),
            "the origin sends each chunk once"
        );
    }
    /// Origin Q and appliances A (a disk of 20 chunks, so room under the watermark for one
    /// title of 16) and D (no limit); A holds title `old`, published at 0; `new`, published
    /// at 10, is held by the origin, as is `old`.
    fn a_full_disk(a_disk_chunks: u64) -> (Tracker, [NodeId; 3], TitleId, TitleId) {
        a_full_disk_with(Config::default(), a_disk_chunks)
    }

    fn a_full_disk_with(config: Config, a_disk_chunks: u64) -> (Tracker, [NodeId; 3], TitleId, TitleId) {
        let mut t = Tracker::new(config);
        let nodes = [id("Q"), id("A"), id("D")];
        t.register(0, nodes[0].clone(), reg(Role::Origin, u64::MAX));
        t.register(
            0,
            nodes[1].clone(),
            Registration { disk_bytes: a_disk_chunks * 1024, ..reg(Role::Appliance, 0) },
        );
        t.register(0, nodes[2].clone(), reg(Role::Appliance, 0));
        let (old, new) = (TitleId::from_bytes([1; 32]), TitleId::from_bytes([2; 32]));
        t.publish(0, old, "old".into(), &shape(16)).unwrap();
        t.report_held(0, &nodes[1], old, ChunkBitmap::full(16).unwrap(), &[]).unwrap();
        t.publish(10, new, "new".into(), &shape(16)).unwrap();
        for title in [old, new] {
            t.report_held(10, &nodes[0], title, ChunkBitmap::full(16).unwrap(), &[]).unwrap();
        }
        (t, nodes, old, new)
    }

    #[test]
    fn a_newer_title_evicts_an_older_one_from_a_full_disk() {
        let (mut t, [_, a, d], old, new) = a_full_disk(20);
        let client = "10.0.0.1".parse().unwrap();
        let plan = t.plan(10, &a, 8).unwrap();
        assert_eq!(plan.evict, vec![old]);
        assert!(!plan.assignments.is_empty() && plan.assignments.iter().all(|p| p.title == new), "{plan:?}");
        // A is no source of the old title and no steering target for it any more: only the
        // origin is left.
        assert_eq!(t.steer(10, &old, client).targets, vec![id("Q")]);
        let of_d = t.plan(10, &d, 8).unwrap();
        assert!(!of_d.assignments.is_empty() && !names(&of_d.assignments, &a), "{of_d:?}");
        assert_eq!(t.status(10).appliances.iter().find(|s| s.peer_id == "A").unwrap().held_bytes, 0);
        t.debug_validate(10).unwrap();
    }

    #[test]
    fn a_title_wanted_after_the_newer_one_was_published_is_not_evicted_for_it() {
        let (mut t, [_, a, _], old, _) = a_full_disk(20);
        t.steer(20, &old, "10.0.0.1".parse().unwrap());
        assert_eq!(t.status(20).titles[0].last_wanted_ms, 20);
        let plan = t.plan(20, &a, 8).unwrap();
        assert_eq!(plan, Plan::default(), "the newer title is not planned either");
        assert_eq!(t.steer(20, &old, "10.0.0.1".parse().unwrap()).targets, vec![a.clone(), id("Q")]);
        t.debug_validate(20).unwrap();
    }

    #[test]
    fn an_evicted_title_is_not_filled_again_while_the_newer_one_is_on_disk() {
        let (mut t, [_, a, _], old, new) = a_full_disk(20);
        let first = t.plan(10, &a, 8).unwrap();
        assert_eq!(first.evict, vec![old]);
        // Part of the new title, then all of it: the old one is never planned again.
        let mut held = ChunkBitmap::new(16).unwrap();
        for p in &first.assignments {
            held.insert(p.chunk);
        }
        for now in 11..30 {
            let plan = t.plan(now, &a, 8).unwrap();
            assert!(plan.evict.is_empty() && plan.assignments.iter().all(|p| p.title == new), "{plan:?}");
            for p in &plan.assignments {
                held.insert(p.chunk);
            }
            t.report_held(now, &a, new, held.clone(), &[]).unwrap();
        }
        assert!(held.is_full(), "{held:?} {:?}", t.debug_inflight());
        assert_eq!(t.plan(30, &a, 8).unwrap(), Plan::default());
        t.debug_validate(30).unwrap();
    }

    #[test]
    fn with_room_under_the_watermark_nothing_is_evicted() {
        // 40 chunks: two titles of 16 stay under 90% of it; with a third the catalog does not,
        // so the room is weighed (and the third does not fit beside them).
        let (mut t, [q, a, _], old, new) = a_full_disk(40);
        let big = TitleId::from_bytes([3; 32]);
        t.publish(10, big, "big".into(), &shape(24)).unwrap();
        t.report_held(10, &q, big, ChunkBitmap::full(24).unwrap(), &[]).unwrap();
        let plan = t.plan(10, &a, 8).unwrap();
        assert!(plan.evict.is_empty());
        assert!(!plan.assignments.is_empty() && plan.assignments.iter().all(|p| p.title == new));
        assert_eq!(t.steer(10, &old, "10.0.0.1".parse().unwrap()).targets, vec![a.clone(), q.clone()]);
        t.debug_validate(10).unwrap();
    }

    #[test]
    fn titles_wanted_in_turn_are_swapped_at_most_once_per_idle_interval() {
        // A short interval, so that every node stays alive without heartbeats.
        let config = Config { evict_min_idle_ms: 1_000, ..Config::default() };
        let (mut t, [_, a, _], old, new) = a_full_disk_with(config, 20);
        let client = "10.0.0.1".parse().unwrap();
        let idle = t.config().evict_min_idle_ms;
        // `old` was never steered to: `new` displaces it.
        assert_eq!(t.plan(10, &a, 8).unwrap().evict, vec![old]);
        t.report_held(11, &a, new, ChunkBitmap::full(16).unwrap(), &[]).unwrap();
        // A player wants `old` (steered elsewhere): it is wanted more recently than `new`,
        // which no player was steered to, so `old` displaces it once.
        t.steer(20, &old, client);
        assert_eq!(t.plan(21, &a, 8).unwrap().evict, vec![new]);
        t.report_held(22, &a, old, ChunkBitmap::full(16).unwrap(), &[]).unwrap();
        // Now `new` is wanted: but `old` was steered to within the idle interval, so it stays.
        t.steer(30, &new, client);
        assert_eq!(t.plan(31, &a, 8).unwrap(), Plan::default());
        assert_eq!(t.plan(20 + idle - 1, &a, 8).unwrap(), Plan::default());
        // Once `old` has been idle that long, the more recently wanted `new` displaces it.
        assert_eq!(t.plan(20 + idle, &a, 8).unwrap().evict, vec![old]);
        t.debug_validate(20 + idle).unwrap();
    }
}
