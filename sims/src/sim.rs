//! The discrete-event engine and the fill strategies.
//!
//! Time is integer nanoseconds; the event queue is a heap ordered by (time, sequence number),
//! so simultaneous events run in the order they were scheduled. All randomness comes from the
//! scenario's seed, every map is ordered, and each processed event is encoded into a BLAKE3
//! trace hash: the same scenario and seed give the same hash, byte for byte.
//!
//! Events at one instant are handled as a batch and the network is re-solved once after it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use fillmesh_protocol::bitmap::runs;
use fillmesh_protocol::messages::SourceClass;
use fillmesh_protocol::messages::{Assignment, FailureKind, Fetched, Registration, Role};
use fillmesh_protocol::{ChunkBitmap, IpPrefix, NodeId, Shape, TitleId};
use fillmesh_swarm::{Config as SwarmConfig, Next as SwarmNext, Outcome as SwarmOutcome, Swarm};
use fillmesh_tracker::core::{Config, Tracker};
use serde::Serialize;

use crate::bounds::Fleet;
use crate::net::{FlowId, Net, ResId};
use crate::queue::CompletionQueue;
use crate::rng::Rng;
use crate::scenario::Scenario;

/// Nanoseconds per second: the engine's clock counts integer nanoseconds.
pub const NS: u64 = 1_000_000_000;
/// Fillmesh: how often an appliance sends the tracker its summary while it fills.
const REPORT_EVERY: u64 = NS;

/// How appliances fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Every appliance pulls the whole title from the origin.
    Origin,
    /// One fill master per region pulls from the origin; the others pull from their master.
    Tiered,
    /// The retired per-chunk planner (`Tracker::plan`, driven through its public API): the
    /// tracker assigns every chunk a source and hears of every chunk fetched. The node no
    /// longer runs it; it is kept as the contrast to [`Strategy::Fillmesh`] (at 1,000
    /// appliances, 21x the cross-region floor and 4.1 tracker messages per chunk).
    PerChunk,
    /// The fill the node ships: the tracker's fill layouts (parents, origin and import ranges
    /// per appliance) and each appliance's own [`Swarm`] among its parents, the tracker out of
    /// the chunk path.
    Fillmesh,
}

/// A strategy name `fillmesh sim` does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    /// A name a strategy had before it was renamed.
    #[error("`{old}` is now called `{new}`")]
    Renamed {
        /// The old name, as given.
        old: &'static str,
        /// The strategy's name now.
        new: &'static str,
    },
    /// A name no strategy has or had.
    #[error("unknown strategy `{0}`: one of origin, tiered, per-chunk, fillmesh")]
    Unknown(String),
}

impl Strategy {
    /// In the order they run (`--strategy all`), the shipped fill last.
    pub const ALL: [Strategy; 4] =
        [Strategy::Origin, Strategy::Tiered, Strategy::PerChunk, Strategy::Fillmesh];

    /// Names strategies had before: the shipped fill was `swarm` until it became the only fill
    /// the node runs and took the project's name from the per-chunk planner.
    const RENAMED: [(&'static str, Strategy); 1] = [("swarm", Strategy::Fillmesh)];

    /// The strategy's name in `--strategy`, the reports and the plot's legend.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Origin => "origin",
            Strategy::Tiered => "tiered",
            Strategy::PerChunk => "per-chunk",
            Strategy::Fillmesh => "fillmesh",
        }
    }

    /// The strategy called `name`; an old name is refused with the one it has now.
    pub fn from_name(name: &str) -> Result<Strategy, StrategyError> {
        if let Some(s) = Self::ALL.into_iter().find(|s| s.name() == name) {
            return Ok(s);
        }
        match Self::RENAMED.iter().find(|(old, _)| *old == name) {
            Some(&(old, s)) => Err(StrategyError::Renamed { old, new: s.name() }),
            None => Err(StrategyError::Unknown(name.to_owned())),
        }
    }
}

/// Where a transfer's bytes came from, relative to the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    SameSite = 0,
    SameRegion = 1,
    CrossRegion = 2,
    Origin = 3,
}

/// The source classes' names in the reports, indexed like `Outcome::bytes_by_class`.
pub const CLASS_KEYS: [&str; 4] = ["same_site", "same_region", "cross_region", "origin"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Publish,
    /// A transfer's request has crossed the latency: its flow starts.
    Start(u32, u32),
    /// A transfer's flow is done (kept in the completion queue, with its generation for the
    /// trace).
    Done(u32, u32),
    Fail(u32),
    Recover(u32),
    Crowd(u32),
    Retry(u32),
    /// A fillmesh appliance's periodic summary to the tracker.
    Report(u32),
}

impl Ev {
    fn encode(self, out: &mut Vec<u8>) {
        let (k, a, b) = match self {
            Ev::Publish => (0u8, 0, 0),
            Ev::Start(t, g) => (1, t, g),
            Ev::Done(t, g) => (2, t, g),
            Ev::Fail(n) => (3, n, 0),
            Ev::Recover(n) => (4, n, 0),
            Ev::Crowd(c) => (5, c, 0),
            Ev::Retry(n) => (6, n, 0),
            Ev::Report(n) => (7, n, 0),
        };
        out.push(k);
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
    }
}

#[derive(Debug)]
struct Node {
    site: u32,
    region: u32,
    up: ResId,
    down: ResId,
    upload_bps: f64,
    alive: bool,
    /// Concurrent uploads this node serves (origin and tiered sources).
    slots: u32,
    busy: u32,
    /// Transfers waiting for a slot (origin and tiered).
    queue: VecDeque<(u32, u32)>,
    // As a receiver (appliances only).
    held: ChunkBitmap,
    held_count: u32,
    requested: ChunkBitmap,
    cursor: u32,
    inflight: u32,
    complete_at: Option<u64>,
    retry_pending: bool,
    hungry: bool,
    /// Fetches cut off by this node's own failure, reported to the tracker on recovery.
    lost: Vec<(u32, u32)>,
    players: u32,
    /// Fillmesh: this appliance's fill, its parents (by the fill's parent index) and the
    /// children subscribed to it (child, the parent index it has in the child's fill).
    swarm: Option<Swarm>,
    parents: Vec<u32>,
    children: Vec<(u32, u32)>,
    plan_epoch: u64,
    reported_complete: bool,
    /// Bytes stored by source class over its life, and as much of it as its summaries have
    /// told the tracker (each summary carries the difference).
    stored: [u64; 4],
    reported: [u64; 4],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fill,
    Player { bytes_per_s_bits: u64, started: u64 },
}

#[derive(Debug)]
struct Transfer {
    dst: u32,
    src: u32,
    chunk: u32,
    bytes: u64,
    flow: Option<FlowId>,
    gen: u32,
    live: bool,
    kind: Kind,
    /// The player's own cap, for player sessions.
    player_res: Option<ResId>,
    /// Fillmesh: the source's parent index in the receiver's fill.
    slot: u32,
}

/// What one strategy's run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The strategy run.
    pub strategy: Strategy,
    /// Seconds from publishing to each appliance's last chunk, for those that completed.
    pub completion_s: Vec<f64>,
    /// Appliances that came to hold the whole title: `completion_s.len()`.
    pub completed: usize,
    /// Appliances in the fleet, the origin not counted.
    pub appliances: usize,
    /// Bytes of completed chunk transfers by class (same site, same region, cross, origin).
    pub bytes_by_class: [u64; 4],
    /// Bytes delivered by transfers cut off by failures.
    pub wasted_bytes: u64,
    /// Events handled (stale ones, of a transfer slot reused since, not counted).
    pub events: u64,
    /// BLAKE3 of every handled event (time, sequence number, kind, and a started transfer's
    /// source, receiver and chunk), hex.
    pub trace_hash: String,
    /// Simulated seconds until the last event.
    pub sim_end_s: f64,
    /// Plans asked of the tracker: `Tracker::plan` calls (per-chunk) or fill plans
    /// (fillmesh); 0 for origin and tiered.
    pub plan_calls: u64,
    /// Players the flash crowds brought.
    pub players: usize,
    /// Players steered to an appliance; the rest streamed from the origin.
    pub players_from_appliances: usize,
    /// Players whose session ran at full bitrate (finished within 1% of its duration).
    pub players_smooth: usize,
    /// The tracker's own byte accounting (per-chunk and fillmesh), keyed like `bytes_by_class`.
    pub tracker_bytes_by_class: Option<[u64; 4]>,
    /// Largest set of resources re-solved at once ([`Net::max_local`]).
    pub max_local_solve: usize,
    /// Re-solves that fell back to a global one ([`Net::global_solves`]).
    pub global_solves: u64,
    /// Completed transfers whose flow had more than a byte left, or overdelivered (must be 0).
    pub conservation_errors: u64,
    /// Samples of the fleet's state, when asked for (`Options::sample_every_s`).
    pub samples: Vec<Sample>,
    /// Messages to or from the tracker (each request and each answer counts).
    pub tracker_messages: u64,
    /// Fill transfers (chunks) completed.
    pub chunks_transferred: u64,
    /// Fillmesh: summaries sent to the tracker.
    pub summaries: u64,
    /// Fillmesh: chunk runs the summaries carried, in all.
    pub summary_runs: u64,
    /// Fillmesh: failure reports, each for a parent lost while a fetch from it was in flight.
    pub failure_reports: u64,
    /// Fillmesh: answers to a summary that carried a new layout epoch.
    pub epoch_notices: u64,
}

/// Options that do not change what is simulated.
#[derive(Debug, Default)]
pub struct Options {
    /// Check the capacity invariant after every re-solve.
    pub check_capacity: bool,
    /// Compare each local re-solve with a global one (slow: small topologies only).
    pub check_global: bool,
    /// Validate the tracker's internal counts at the end (per-chunk and fillmesh).
    pub validate_tracker: bool,
    /// Record a [`Sample`] of the fleet's state this often (simulated seconds).
    pub sample_every_s: Option<f64>,
}

/// The fleet at one instant: where upload capacity goes unused.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds from publishing (0 for samples taken before it).
    pub t_s: f64,
    /// Appliances' upload in use, as a fraction of their total upload capacity.
    pub upload_used: f64,
    /// The origin's upload in use, as a fraction.
    pub origin_used: f64,
    /// Appliances holding at least one chunk but uploading nothing.
    pub idle_holders: usize,
    /// Appliances holding nothing yet.
    pub empty: usize,
    /// Fill transfers whose bytes flow, and those still waiting out their request latency.
    pub flowing: usize,
    /// Fill transfers whose flow has not started yet: in their request latency, or queued for
    /// a slot at the origin or a tiered master.
    pub requested: usize,
    /// Incomplete appliances with fewer fetches in flight than they may have.
    pub short: usize,
    /// Appliances complete so far.
    pub completed: usize,
}

/// A progress callback: (simulated seconds, appliances complete, appliances).
pub type Progress<'a> = &'a mut dyn FnMut(f64, usize, usize);

const B58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// The tracker-facing name of node `i` (0 is the origin).
pub fn node_id(i: u32) -> NodeId {
    let mut s = String::from("Sim");
    let mut n = i as usize;
    loop {
        s.push(B58[n % 58] as char);
        n /= 58;
        if n == 0 {
            break;
        }
    }
    // Only base58 characters: always a valid node id.
    s.parse().unwrap_or_else(|_| unreachable!("base58 node id"))
}

fn node_index(id: &NodeId) -> Option<u32> {
    let digits = id.as_str().strip_prefix("Sim")?;
    let mut n: u64 = 0;
    for (k, c) in digits.bytes().enumerate() {
        let d = B58.iter().position(|&b| b == c)? as u64;
        n += d * 58u64.checked_pow(k as u32)?;
    }
    u32::try_from(n).ok()
}

struct Sim<'a> {
    sc: &'a Scenario,
    strategy: Strategy,
    opts: &'a Options,
    now: u64,
    seq: u64,
    heap: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    /// Transfers' completions (the Done events), apart: their times move on every re-solve.
    done_q: CompletionQueue,
    net: Net,
    nodes: Vec<Node>,
    transfers: Vec<Transfer>,
    free_transfers: Vec<u32>,
    chunks: u32,
    /// The title's chunk size and file lengths, as the tracker gets them: a package's files
    /// each end in a chunk of their own, so its chunks are not all the chunk size.
    shape: Shape,
    /// Per region: the fill master (tiered) and children waiting for it.
    masters: Vec<u32>,
    waiting: Vec<Vec<u32>>,
    /// Uplink resources per site and per region, each direction, when configured.
    site_out: Option<Vec<ResId>>,
    site_in: Option<Vec<ResId>>,
    region_out: Option<Vec<ResId>>,
    region_in: Option<Vec<ResId>>,
    tracker: Option<Tracker>,
    /// Per-chunk appliances whose last plan came up short, oldest first.
    hungry: VecDeque<u32>,
    title: TitleId,
    ids: Vec<NodeId>,
    regs: Vec<Registration>,
    published: bool,
    publish_ns: u64,
    completion: Vec<u64>,
    completed: usize,
    bytes: [u64; 4],
    wasted: f64,
    events: u64,
    trace: blake3::Hasher,
    trace_buf: Vec<u8>,
    rng: Rng,
    plan_calls: u64,
    players: usize,
    players_from_appliances: usize,
    players_smooth: usize,
    conservation_errors: u64,
    samples: Vec<Sample>,
    next_sample: u64,
    tracker_messages: u64,
    chunks_transferred: u64,
    summaries: u64,
    summary_runs: u64,
    failure_reports: u64,
    epoch_notices: u64,
}

/// Where each appliance sits and what it can do: appliance `i` is in site `i mod sites`
/// (so sites and regions fill evenly) and in a capacity class drawn with the scenario's seed.
pub fn place(sc: &Scenario) -> Fleet {
    let mut rng = Rng::new(sc.seed);
    let total_share: f64 = sc.classes.iter().map(|c| c.share).sum();
    let mut fleet = Fleet { upload_bps: Vec::new(), download_bps: Vec::new(), site: Vec::new() };
    for i in 0..sc.appliances {
        let mut pick = rng.unit() * total_share;
        let mut class = &sc.classes[sc.classes.len() - 1];
        for c in &sc.classes {
            if pick < c.share {
                class = c;
                break;
            }
            pick -= c.share;
        }
        fleet.upload_bps.push(class.upload_bps);
        fleet.download_bps.push(class.download_bps);
        fleet.site.push(i % sc.sites());
    }
    fleet
}

/// Runs one strategy over the scenario.
pub fn run(sc: &Scenario, strategy: Strategy, opts: &Options, progress: Option<Progress<'_>>) -> Outcome {
    let mut sim = Sim::new(sc, strategy, opts);
    sim.run(progress);
    sim.outcome()
}

fn secs(s: f64) -> u64 {
    (s.max(0.0) * NS as f64).round() as u64
}

impl<'a> Sim<'a> {
    fn new(sc: &'a Scenario, strategy: Strategy, opts: &'a Options) -> Self {
        let rng = Rng::new(sc.seed ^ 0x005e_ed0f_e7e7);
        let mut net = Net::new();
        net.check_capacity = opts.check_capacity;
        net.check_global = opts.check_global;
        // A validated scenario's shape.
        let shape = sc.shape().unwrap_or_else(|e| panic!("{e:#}"));
        let chunks = shape.chunk_count();
        let empty = ChunkBitmap::new(chunks).unwrap_or_else(|e| panic!("{e}"));
        let slot_rule = |bps: f64| {
            let c = Config::default();
            ((bps / c.slot_bps as f64) as u32).clamp(c.min_slots, c.max_slots) + c.spare_slots
        };
        let mut nodes = Vec::with_capacity(sc.appliances + 1);
        let wire = 1.0 + sc.wire_overhead;
        let mut push_node = |net: &mut Net, site, region, up: f64, down: f64, slots| {
            nodes.push(Node {
                site,
                region,
                // Links carry framing and acknowledgements too: chunk bytes get the rest.
                up: net.add_resource(up / wire),
                down: net.add_resource(down / wire),
                upload_bps: up,
                alive: true,
                slots,
                busy: 0,
                queue: VecDeque::new(),
                held: empty.clone(),
                held_count: 0,
                requested: empty.clone(),
                cursor: 0,
                inflight: 0,
                complete_at: None,
                retry_pending: false,
                hungry: false,
                lost: Vec::new(),
                players: 0,
                swarm: None,
                parents: Vec::new(),
                children: Vec::new(),
                plan_epoch: 0,
                reported_complete: false,
                stored: [0; 4],
                reported: [0; 4],
            });
        };
        // The origin sits outside every site and region.
        push_node(&mut net, u32::MAX, u32::MAX, sc.origin_upload_bps, f64::INFINITY, sc.origin_slots);
        let fleet = place(sc);
        let sites = sc.sites();
        for i in 0..sc.appliances {
            let site = fleet.site[i] as u32;
            let region = site / sc.sites_per_region as u32;
            let (up, down) = (fleet.upload_bps[i], fleet.download_bps[i]);
            push_node(&mut net, site, region, up, down, slot_rule(up));
        }
        let mut uplinks = |cap: Option<f64>, count: usize| {
            cap.map(|c| (0..count).map(|_| net.add_resource(c / wire)).collect::<Vec<ResId>>())
        };
        let (site_out, site_in) = (uplinks(sc.site_uplink_bps, sites), uplinks(sc.site_uplink_bps, sites));
        let (region_out, region_in) =
            (uplinks(sc.region_uplink_bps, sc.regions), uplinks(sc.region_uplink_bps, sc.regions));
        let masters: Vec<u32> = (0..sc.regions)
            .map(|r| {
                // The first appliance of the region's first site.
                (1 + r * sc.sites_per_region).min(sc.appliances) as u32
            })
            .collect();
        let ids: Vec<NodeId> = (0..nodes.len() as u32).map(node_id).collect();
        let regs: Vec<Registration> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let (region, site) = if i == 0 { (u32::MAX, u32::MAX) } else { (n.region, n.site) };
                let prefix = if i == 0 {
                    vec![]
                } else {
                    let addr = IpAddr::from([10, (region % 256) as u8, (site % 256) as u8, 0]);
                    vec![IpPrefix::new(addr, 24).unwrap_or_else(|e| panic!("{e}"))]
                };
                Registration {
                    role: if i == 0 { Role::Origin } else { Role::Appliance },
                    mesh_addr: SocketAddr::from(([10, 255, (i >> 8) as u8, i as u8], 4433)),
                    site: if i == 0 { "origin".into() } else { format!("s{site}") },
                    region: if i == 0 { "origin".into() } else { format!("r{region}") },
                    prefixes: prefix,
                    upload_bps: n.upload_bps as u64,
                    disk_bytes: u64::MAX,
                    cert_sha256: None,
                }
            })
            .collect();
        let tracker = matches!(strategy, Strategy::PerChunk | Strategy::Fillmesh).then(|| {
            let far = 1u64 << 50;
            Tracker::new(Config {
                // The simulator reports failures itself (lost / re-register), so heartbeats
                // are not needed to keep nodes alive.
                unhealthy_after_ms: far,
                gone_after_ms: far,
                assignment_ttl_ms: 3_600_000,
                max_inflight_per_appliance: sc.max_inflight,
                seed: sc.seed,
                ..Config::default()
            })
        });
        let mut title_bytes = [0u8; 32];
        title_bytes[..8].copy_from_slice(&sc.seed.to_le_bytes());
        title_bytes[8] = 0xf1;
        let mut sim = Self {
            sc,
            strategy,
            opts,
            now: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            done_q: CompletionQueue::default(),
            net,
            nodes,
            transfers: Vec::new(),
            free_transfers: Vec::new(),
            chunks,
            shape,
            waiting: vec![Vec::new(); sc.regions],
            masters,
            site_out,
            site_in,
            region_out,
            region_in,
            tracker,
            hungry: VecDeque::new(),
            title: TitleId::from_bytes(title_bytes),
            ids,
            regs,
            published: false,
            publish_ns: secs(sc.publish_at_s),
            completion: Vec::new(),
            completed: 0,
            bytes: [0; 4],
            wasted: 0.0,
            events: 0,
            trace: blake3::Hasher::new(),
            trace_buf: Vec::with_capacity(1 << 16),
            rng,
            plan_calls: 0,
            players: 0,
            players_from_appliances: 0,
            players_smooth: 0,
            conservation_errors: 0,
            samples: Vec::new(),
            next_sample: 0,
            tracker_messages: 0,
            chunks_transferred: 0,
            summaries: 0,
            summary_runs: 0,
            failure_reports: 0,
            epoch_notices: 0,
        };
        sim.setup();
        sim
    }

    fn setup(&mut self) {
        if let Some(t) = self.tracker.as_mut() {
            for (id, reg) in self.ids.iter().zip(&self.regs) {
                t.register(0, id.clone(), reg.clone());
            }
        }
        self.schedule(self.publish_ns, Ev::Publish);
        let sc = self.sc;
        for f in &sc.failures {
            let mut picked: Vec<usize> = f.ids.clone();
            if picked.is_empty() {
                // `count` distinct appliances: a partial Fisher-Yates over the fleet.
                let mut all: Vec<usize> = (0..sc.appliances).collect();
                for k in 0..f.count {
                    let j = k + self.rng.below((all.len() - k) as u64) as usize;
                    all.swap(k, j);
                }
                picked = all[..f.count].to_vec();
            }
            for a in picked {
                let n = a as u32 + 1;
                self.schedule(secs(f.at_s), Ev::Fail(n));
                if let Some(r) = f.recover_after_s {
                    self.schedule(secs(f.at_s + r), Ev::Recover(n));
                }
            }
        }
        for (i, c) in sc.crowds.iter().enumerate() {
            self.schedule(secs(c.at_s), Ev::Crowd(i as u32));
        }
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, ev)));
    }

    fn run(&mut self, mut progress: Option<Progress<'_>>) {
        let mut next_progress = 0u64;
        // Whether events were handled at `now` since the last re-solve.
        let mut dirty = false;
        loop {
            let main = self.heap.peek().map(|Reverse((at, seq, _))| (*at, *seq));
            let done = self.done_q.peek().map(|(at, seq, _)| (at, seq));
            let next = match (main, done) {
                (Some(m), Some(d)) => Some(m.min(d)),
                (m, d) => m.or(d),
            };
            if dirty && next.map(|n| n.0) != Some(self.now) {
                // The batch at `now` is over (stale events skipped included): re-solve once.
                // That may schedule events earlier than `next`, so look again.
                dirty = false;
                self.resolve();
                continue;
            }
            let Some(next) = next else { break };
            let (at, seq, ev) = if Some(next) == done {
                let (at, seq, t) = self.done_q.pop().unwrap_or_else(|| unreachable!("peeked"));
                (at, seq, Ev::Done(t, self.transfers[t as usize].gen))
            } else {
                let Some(Reverse(e)) = self.heap.pop() else { unreachable!("peeked") };
                e
            };
            if let Ev::Start(t, g) = ev {
                // A transfer slot reused since: this event is stale.
                let tr = &self.transfers[t as usize];
                if !tr.live || tr.gen != g {
                    continue;
                }
            }
            if let Some(every) = self.opts.sample_every_s {
                while self.next_sample <= at && self.completed < self.sc.appliances {
                    self.sample();
                    self.next_sample += secs(every).max(1);
                }
            }
            self.now = at;
            self.events += 1;
            self.trace_buf.extend_from_slice(&at.to_le_bytes());
            self.trace_buf.extend_from_slice(&seq.to_le_bytes());
            ev.encode(&mut self.trace_buf);
            if let Ev::Start(t, _) = ev {
                let tr = &self.transfers[t as usize];
                self.trace_buf.extend_from_slice(&tr.src.to_le_bytes());
                self.trace_buf.extend_from_slice(&tr.dst.to_le_bytes());
                self.trace_buf.extend_from_slice(&tr.chunk.to_le_bytes());
            }
            if self.trace_buf.len() >= 1 << 16 {
                self.trace.update(&self.trace_buf);
                self.trace_buf.clear();
            }
            self.handle(ev);
            dirty = true;
            if let Some(p) = progress.as_mut() {
                if self.events >= next_progress {
                    next_progress = self.events + 100_000;
                    p(self.now as f64 / NS as f64, self.completed, self.sc.appliances);
                }
            }
        }
        self.trace.update(&self.trace_buf);
        self.trace_buf.clear();
        if let Some(p) = progress.as_mut() {
            p(self.now as f64 / NS as f64, self.completed, self.sc.appliances);
        }
    }

    /// Records the fleet's state as of `next_sample` (nothing changes between events).
    fn sample(&mut self) {
        let (mut used, mut cap, mut idle, mut empty, mut short) = (0.0, 0.0, 0, 0, 0);
        for n in &self.nodes[1..] {
            let (rate, flows) = self.net.load(n.up);
            used += rate;
            cap += self.net.capacity(n.up);
            if n.held_count == 0 {
                empty += 1;
            } else if flows - n.players.min(flows as u32) as usize == 0 {
                idle += 1;
            }
            if n.alive && n.complete_at.is_none() && n.inflight < self.sc.max_inflight as u32 {
                short += 1;
            }
        }
        let (origin, _) = self.net.load(self.nodes[0].up);
        let live = self.transfers.iter().filter(|t| t.live && t.kind == Kind::Fill);
        let (flowing, requested) =
            live.fold((0, 0), |(f, r), t| if t.flow.is_some() { (f + 1, r) } else { (f, r + 1) });
        self.samples.push(Sample {
            t_s: self.next_sample.saturating_sub(self.publish_ns) as f64 / NS as f64,
            upload_used: used / cap.max(1e-9),
            origin_used: origin / self.net.capacity(self.nodes[0].up).max(1e-9),
            idle_holders: idle,
            empty,
            flowing,
            requested,
            short,
            completed: self.completed,
        });
    }

    /// Re-solves the network and reschedules the flows whose rate changed.
    fn resolve(&mut self) {
        self.net.resolve(self.now);
        for k in 0..self.net.changed().len() {
            let f = self.net.changed()[k];
            let t = self.net.tag(f) as u32;
            match self.net.completion(f) {
                Some(at) => {
                    self.seq += 1;
                    self.done_q.set(t, at, self.seq);
                }
                None => self.done_q.remove(t),
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Publish => self.publish(),
            Ev::Start(t, _) => self.start_flow(t),
            Ev::Done(t, _) => self.done(t),
            Ev::Fail(n) => self.fail(n),
            Ev::Recover(n) => self.recover(n),
            Ev::Crowd(c) => self.crowd(c as usize),
            Ev::Retry(n) => {
                self.nodes[n as usize].retry_pending = false;
                self.want(n);
            }
            Ev::Report(n) => self.report(n),
        }
    }

    fn ms(&self) -> u64 {
        self.now / 1_000_000
    }

    fn publish(&mut self) {
        self.published = true;
        let chunks = self.chunks;
        for c in 0..chunks {
            self.nodes[0].held.insert(c);
        }
        self.nodes[0].held_count = chunks;
        if let Some(t) = self.tracker.as_mut() {
            let now = self.now / 1_000_000;
            t.publish(now, self.title, "sim".into(), &self.shape).unwrap_or_else(|e| panic!("{e}"));
            let full = ChunkBitmap::full(chunks).unwrap_or_else(|e| panic!("{e}"));
            t.report_held(now, &self.ids[0], self.title, full, &[]).unwrap_or_else(|e| panic!("{e}"));
        }
        for n in 1..self.nodes.len() as u32 {
            if self.strategy == Strategy::Fillmesh {
                self.fetch_plan(n);
                self.schedule(self.now + REPORT_EVERY, Ev::Report(n));
            }
            self.want(n);
        }
    }

    fn class(&self, src: u32, dst: u32) -> Class {
        if src == 0 {
            return Class::Origin;
        }
        let (s, d) = (&self.nodes[src as usize], &self.nodes[dst as usize]);
        if s.site == d.site {
            Class::SameSite
        } else if s.region == d.region {
            Class::SameRegion
        } else {
            Class::CrossRegion
        }
    }

    fn chunk_len(&self, c: u32) -> u64 {
        self.shape.chunk_len(c).unwrap_or(0)
    }

    /// Appliance `n` has free fetch slots: give it work, by its strategy.
    fn want(&mut self, n: u32) {
        if !self.published || n == 0 {
            return;
        }
        let node = &self.nodes[n as usize];
        if !node.alive || node.complete_at.is_some() {
            return;
        }
        match self.strategy {
            Strategy::Origin => self.want_sequential(n, false),
            Strategy::Tiered => {
                let region = node.region as usize;
                let is_master = self.masters[region] == n;
                self.want_sequential(n, !is_master);
            }
            Strategy::PerChunk => self.want_plan(n),
            Strategy::Fillmesh => {
                // Every parent, starting at a different one each time: the first parents
                // in the list would otherwise take every free request slot.
                let count = self.nodes[n as usize].parents.len() as u32;
                let start = self.rng.below(u64::from(count.max(1))) as u32;
                for k in 0..count {
                    self.want_from(n, (start + k) % count);
                }
            }
        }
    }

    /// Origin and tiered: the lowest chunks not yet requested, from the origin or the master.
    fn want_sequential(&mut self, n: u32, from_master: bool) {
        let max = self.sc.max_inflight as u32;
        while self.nodes[n as usize].inflight < max {
            let node = &self.nodes[n as usize];
            let mut c = node.cursor;
            while c < self.chunks && node.requested.contains(c) {
                c += 1;
            }
            self.nodes[n as usize].cursor = c;
            if c >= self.chunks {
                return;
            }
            let mut src = 0;
            if from_master {
                let m = self.masters[self.nodes[n as usize].region as usize];
                let master = &self.nodes[m as usize];
                if master.alive {
                    if !master.held.contains(c) {
                        let region = self.nodes[n as usize].region as usize;
                        if !self.waiting[region].contains(&n) {
                            self.waiting[region].push(n);
                        }
                        return;
                    }
                    src = m;
                }
            }
            self.nodes[n as usize].requested.insert(c);
            self.request(n, src, c);
        }
    }

    /// Per-chunk: ask the tracker's planner for as many assignments as there are free slots.
    fn want_plan(&mut self, n: u32) {
        let inflight = self.nodes[n as usize].inflight;
        let free = (self.sc.max_inflight as u32).saturating_sub(inflight);
        let batch = self.sc.plan_batch.min(self.sc.max_inflight) as u32;
        if free == 0 || (inflight > 0 && free < batch) {
            return;
        }
        let now = self.ms();
        let Some(tracker) = self.tracker.as_mut() else { return };
        self.plan_calls += 1;
        self.tracker_messages += 2;
        // The simulated appliances' disks hold every title: a plan never evicts.
        let plan: Vec<Assignment> = match tracker.plan(now, &self.ids[n as usize], free as usize) {
            Ok(p) => p.assignments,
            Err(e) => panic!("plan for {}: {e}", self.ids[n as usize]),
        };
        let got = plan.len() as u32;
        for a in plan {
            let src = a.sources.first().and_then(|s| node_index(&s.node)).unwrap_or(0);
            self.nodes[n as usize].requested.insert(a.chunk);
            self.request(n, src, a.chunk);
        }
        if got < free && !self.nodes[n as usize].hungry {
            self.nodes[n as usize].hungry = true;
            self.hungry.push_back(n);
        }
        if got < free && !self.nodes[n as usize].retry_pending {
            self.nodes[n as usize].retry_pending = true;
            let at = self.now + secs(self.sc.replan_s);
            self.schedule(at, Ev::Retry(n));
        }
    }

    /// Asks `src` for chunk `c` on behalf of `dst`. The request takes the latency of its
    /// class to arrive; a slot-limited source (origin and tiered strategies) then queues it
    /// while all its slots are busy. The tracker itself limits per-chunk sources.
    fn request(&mut self, dst: u32, src: u32, c: u32) {
        self.request_slot(dst, src, c, 0);
    }

    fn request_slot(&mut self, dst: u32, src: u32, c: u32, slot: u32) {
        self.nodes[dst as usize].inflight += 1;
        let bytes = self.chunk_len(c);
        let t = self.new_transfer(Transfer {
            dst,
            src,
            chunk: c,
            bytes,
            flow: None,
            gen: 0,
            live: true,
            kind: Kind::Fill,
            player_res: None,
            slot,
        });
        let delay = secs(self.sc.latency_s[self.class(src, dst) as usize]);
        let g = self.transfers[t as usize].gen;
        self.schedule(self.now + delay, Ev::Start(t, g));
    }

    fn new_transfer(&mut self, tr: Transfer) -> u32 {
        match self.free_transfers.pop() {
            Some(t) => {
                let gen = self.transfers[t as usize].gen;
                self.transfers[t as usize] = Transfer { gen: gen.wrapping_add(1), ..tr };
                t
            }
            None => {
                self.transfers.push(tr);
                (self.transfers.len() - 1) as u32
            }
        }
    }

    fn start_flow(&mut self, t: u32) {
        let tr = &self.transfers[t as usize];
        if !tr.live {
            return;
        }
        if self.slot_limited(tr.src) && tr.kind == Kind::Fill {
            let s = &mut self.nodes[tr.src as usize];
            if s.busy >= s.slots {
                let g = tr.gen;
                s.queue.push_back((t, g));
                return;
            }
            s.busy += 1;
        }
        self.open_flow(t);
    }

    fn open_flow(&mut self, t: u32) {
        let tr = &self.transfers[t as usize];
        let (src, dst, bytes) = (tr.src, tr.dst, tr.bytes);
        let mut res = Vec::with_capacity(6);
        res.push(self.nodes[src as usize].up);
        let src_place = (self.nodes[src as usize].site, self.nodes[src as usize].region);
        let dst_place = match tr.kind {
            Kind::Fill => {
                res.push(self.nodes[dst as usize].down);
                Some((self.nodes[dst as usize].site, self.nodes[dst as usize].region))
            }
            Kind::Player { .. } => {
                res.extend(tr.player_res);
                // A player's site is kept in `chunk`; its access network has no cap here.
                let site = tr.chunk;
                let out = (site, site / self.sc.sites_per_region as u32);
                if let (Some(up), true) = (&self.site_out, out.0 != src_place.0 && src != 0) {
                    res.push(up[src_place.0 as usize]);
                }
                if let (Some(up), true) = (&self.region_out, out.1 != src_place.1 && src != 0) {
                    res.push(up[src_place.1 as usize]);
                }
                None
            }
        };
        if let Some((site, region)) = dst_place {
            if site != src_place.0 {
                if let (Some(out), true) = (&self.site_out, src != 0) {
                    res.push(out[src_place.0 as usize]);
                }
                if let Some(inp) = &self.site_in {
                    res.push(inp[site as usize]);
                }
            }
            if region != src_place.1 {
                if let (Some(out), true) = (&self.region_out, src != 0) {
                    res.push(out[src_place.1 as usize]);
                }
                if let Some(inp) = &self.region_in {
                    res.push(inp[region as usize]);
                }
            }
        }
        let flow = self.net.start(self.now, &res, bytes, u64::from(t));
        self.transfers[t as usize].flow = Some(flow);
    }

    fn done(&mut self, t: u32) {
        let Some(flow) = self.transfers[t as usize].flow else { return };
        let left = self.net.stop(self.now, flow);
        let bytes = self.transfers[t as usize].bytes as f64;
        if left.abs() > 1.0 + 1e-9 * bytes {
            self.conservation_errors += 1;
        }
        let tr = &mut self.transfers[t as usize];
        tr.live = false;
        tr.flow = None;
        let (src, dst, chunk, kind, slot) = (tr.src, tr.dst, tr.chunk, tr.kind, tr.slot);
        self.free_transfers.push(t);
        match kind {
            Kind::Player { started, .. } => {
                let took = self.now - started;
                if let Kind::Player { bytes_per_s_bits, .. } = kind {
                    let rate = f64::from_bits(bytes_per_s_bits);
                    let ideal = bytes / rate;
                    if (took as f64 / NS as f64) <= ideal * 1.01 {
                        self.players_smooth += 1;
                    }
                }
                self.nodes[src as usize].players -= 1;
            }
            Kind::Fill => {
                self.release_source(src);
                self.nodes[dst as usize].inflight -= 1;
                let class = self.class(src, dst) as usize;
                self.bytes[class] += bytes as u64;
                self.nodes[dst as usize].stored[class] += bytes as u64;
                self.chunks_transferred += 1;
                if let Some(swarm) = self.nodes[dst as usize].swarm.as_mut() {
                    swarm.finish(slot as usize, chunk, SwarmOutcome::Stored(bytes as u64));
                }
                self.got_chunk(dst, src, chunk);
                self.wake(self.sc.wake_per_completion);
            }
        }
    }

    /// Whether `src` serves at most its upload slots at once, queueing further requests:
    /// every source under origin and tiered; under fillmesh, the origin (a real one answers
    /// `Busy` past its slots). Under per-chunk the tracker limits sources itself.
    fn slot_limited(&self, src: u32) -> bool {
        match self.strategy {
            Strategy::Origin | Strategy::Tiered => true,
            Strategy::PerChunk => false,
            Strategy::Fillmesh => src == 0,
        }
    }

    fn release_source(&mut self, src: u32) {
        if !self.slot_limited(src) {
            return;
        }
        self.nodes[src as usize].busy -= 1;
        self.release_queue(src);
    }

    /// Lets up to `k` hungry appliances plan again.
    fn wake(&mut self, k: usize) {
        for _ in 0..k {
            let Some(n) = self.hungry.pop_front() else { return };
            self.nodes[n as usize].hungry = false;
            self.want(n);
        }
    }

    fn got_chunk(&mut self, n: u32, src: u32, c: u32) {
        let node = &mut self.nodes[n as usize];
        if node.held.insert(c) {
            node.held_count += 1;
        }
        let full = node.held_count == self.chunks;
        if let Some(t) = self.tracker.as_mut().filter(|_| self.strategy == Strategy::PerChunk) {
            self.tracker_messages += 2;
            let now = self.now / 1_000_000;
            let fetched = [Fetched { chunk: c, source: self.ids[src as usize].clone() }];
            let held = self.nodes[n as usize].held.clone();
            t.report_held(now, &self.ids[n as usize], self.title, held, &fetched)
                .unwrap_or_else(|e| panic!("report_held: {e}"));
        }
        if full && self.nodes[n as usize].complete_at.is_none() {
            self.nodes[n as usize].complete_at = Some(self.now);
            self.completion.push(self.now.saturating_sub(self.publish_ns));
            self.completed += 1;
            if self.strategy == Strategy::Fillmesh {
                self.report(n);
            }
        }
        if self.strategy == Strategy::Fillmesh {
            self.have(n, c);
        }
        self.news(n);
    }

    /// `n` has something new (a chunk, or it recovered): under `tiered`, the children waiting
    /// on it as their region's master ask again; then `n` itself asks for more work.
    fn news(&mut self, n: u32) {
        if self.strategy == Strategy::Tiered {
            let region = self.nodes[n as usize].region as usize;
            if self.masters[region] == n {
                let waiting = std::mem::take(&mut self.waiting[region]);
                for w in waiting {
                    self.want(w);
                }
            }
        }
        self.want(n);
    }

    fn abort(&mut self, t: u32) {
        let tr = &mut self.transfers[t as usize];
        if !tr.live {
            return;
        }
        tr.live = false;
        let flow = tr.flow.take();
        let bytes = tr.bytes as f64;
        self.done_q.remove(t);
        if let Some(f) = flow {
            let left = self.net.stop(self.now, f);
            self.wasted += bytes - left;
        }
        self.free_transfers.push(t);
    }

    fn fail(&mut self, n: u32) {
        if !self.nodes[n as usize].alive {
            return;
        }
        self.nodes[n as usize].alive = false;
        let now = self.ms();
        if let Some(t) = self.tracker.as_mut() {
            t.lost(now, &self.ids[n as usize]);
        }
        let affected: Vec<u32> = (0..self.transfers.len() as u32)
            .filter(|&t| {
                let tr = &self.transfers[t as usize];
                tr.live && (tr.src == n || tr.dst == n)
            })
            .collect();
        for t in affected {
            let tr = &self.transfers[t as usize];
            let (src, dst, chunk, kind, started, slot) =
                (tr.src, tr.dst, tr.chunk, tr.kind, tr.flow.is_some(), tr.slot);
            self.abort(t);
            if let Kind::Player { .. } = kind {
                if started {
                    self.nodes[src as usize].players -= 1;
                }
                continue;
            }
            if self.slot_limited(src) && started {
                self.nodes[src as usize].busy -= 1;
                if self.nodes[src as usize].alive {
                    self.release_queue(src);
                }
            }
            let d = &mut self.nodes[dst as usize];
            d.inflight -= 1;
            d.requested.remove(chunk);
            d.cursor = d.cursor.min(chunk);
            if self.strategy == Strategy::Fillmesh {
                if dst != n {
                    // The child saw its parent vanish: dropped, reported at once.
                    if let Some(swarm) = self.nodes[dst as usize].swarm.as_mut() {
                        swarm.finish(slot as usize, chunk, SwarmOutcome::Lost);
                    }
                    self.tracker_messages += 1;
                    self.failure_reports += 1;
                    self.want(dst);
                }
                continue;
            }
            if dst == n {
                self.nodes[n as usize].lost.push((chunk, src));
            } else {
                // The receiver saw its source vanish: tell the tracker, fetch elsewhere.
                if let Some(tk) = self.tracker.as_mut() {
                    let _ = tk.report_failure(
                        now,
                        &self.ids[dst as usize],
                        self.title,
                        chunk,
                        &self.ids[n as usize],
                        FailureKind::Timeout,
                    );
                }
                self.want(dst);
            }
        }
        self.nodes[n as usize].queue.clear();
        self.nodes[n as usize].busy = 0;
        if self.strategy == Strategy::Fillmesh {
            // Its children lose a parent (their connections to it break); its own fill is
            // gone with it, and its parents forget it as a child.
            for (child, p) in std::mem::take(&mut self.nodes[n as usize].children) {
                if let Some(swarm) = self.nodes[child as usize].swarm.as_mut() {
                    swarm.remove_parent(p as usize);
                }
            }
            self.nodes[n as usize].swarm = None;
            for parent in std::mem::take(&mut self.nodes[n as usize].parents) {
                self.nodes[parent as usize].children.retain(|&(c, _)| c != n);
            }
        }
        if self.strategy == Strategy::Tiered {
            // Children waiting on a failed master fall back to the origin.
            let region = self.nodes[n as usize].region as usize;
            if self.masters.get(region) == Some(&n) {
                let waiting = std::mem::take(&mut self.waiting[region]);
                for w in waiting {
                    self.want(w);
                }
            }
        }
    }

    /// Starts queued transfers while `src` has free slots.
    fn release_queue(&mut self, src: u32) {
        while self.nodes[src as usize].busy < self.nodes[src as usize].slots {
            let Some((t, g)) = self.nodes[src as usize].queue.pop_front() else { break };
            if !self.transfers[t as usize].live || self.transfers[t as usize].gen != g {
                continue;
            }
            self.nodes[src as usize].busy += 1;
            self.open_flow(t);
        }
    }

    fn recover(&mut self, n: u32) {
        if self.nodes[n as usize].alive {
            return;
        }
        self.nodes[n as usize].alive = true;
        let now = self.ms();
        if let Some(t) = self.tracker.as_mut() {
            let id = &self.ids[n as usize];
            t.register(now, id.clone(), self.regs[n as usize].clone());
            if self.published {
                let held = self.nodes[n as usize].held.clone();
                t.report_held(now, id, self.title, held, &[]).unwrap_or_else(|e| panic!("{e}"));
            }
            for (chunk, src) in std::mem::take(&mut self.nodes[n as usize].lost) {
                let _ = t.report_failure(
                    now,
                    id,
                    self.title,
                    chunk,
                    &self.ids[src as usize],
                    FailureKind::Timeout,
                );
            }
        }
        self.nodes[n as usize].lost.clear();
        if self.strategy == Strategy::Fillmesh && self.published {
            self.nodes[n as usize].reported_complete = false;
            self.fetch_plan(n);
            self.schedule(self.now + REPORT_EVERY, Ev::Report(n));
        }
        self.news(n);
    }

    /// Fillmesh: appliance `n` asks the tracker for its fill plan and follows it: the plan's
    /// ranges replace the old ones, new parents are subscribed to (their held bitmap
    /// arrives), parents no longer named are dropped.
    fn fetch_plan(&mut self, n: u32) {
        let now = self.ms();
        let Some(tracker) = self.tracker.as_mut() else { return };
        self.tracker_messages += 2;
        self.plan_calls += 1;
        let plan = tracker
            .fill_plan(now, &self.ids[n as usize], &self.title)
            .unwrap_or_else(|e| panic!("fill plan for {}: {e}", self.ids[n as usize]));
        // As the node does: small chunks (a package's) get more requests in flight.
        let config = SwarmConfig { inflight: self.sc.max_inflight as u32, ..SwarmConfig::default() }
            .for_chunks(self.shape.len() / u64::from(self.shape.chunk_count().max(1)));
        let node = &mut self.nodes[n as usize];
        node.plan_epoch = plan.epoch;
        let swarm = node.swarm.get_or_insert_with(|| {
            Swarm::new(config, &node.held, self.sc.seed ^ u64::from(n).wrapping_mul(0x9e37_79b9))
        });
        swarm.set_plan(&plan.origin, &plan.import);
        let named: Vec<(u32, SourceClass)> =
            plan.parents.iter().filter_map(|p| node_index(&p.node).map(|i| (i, p.class))).collect();
        let old = node.parents.clone();
        let mut unsubscribed = Vec::new();
        for (p, &parent) in old.iter().enumerate() {
            if !named.iter().any(|&(i, _)| i == parent) && swarm.dropped(p).is_none() {
                swarm.remove_parent(p);
                unsubscribed.push((parent, p as u32));
            }
        }
        let current: Vec<u32> =
            old.iter().enumerate().filter(|&(p, _)| swarm.dropped(p).is_none()).map(|(_, &q)| q).collect();
        for (parent, p) in unsubscribed {
            self.nodes[parent as usize].children.retain(|&child| child != (n, p));
        }
        let mut subscribe = Vec::new();
        for &(parent, class) in &named {
            if current.contains(&parent) || !self.nodes[parent as usize].alive {
                continue;
            }
            let node = &mut self.nodes[n as usize];
            let Some(swarm) = node.swarm.as_mut() else { return };
            let p = swarm.add_parent(class, config.depth);
            node.parents.push(parent);
            subscribe.push((parent, p));
        }
        for (parent, p) in subscribe {
            if parent != 0 {
                let held = self.nodes[parent as usize].held.clone();
                if let Some(swarm) = self.nodes[n as usize].swarm.as_mut() {
                    let _ = swarm.advertise(p, &held);
                }
                self.nodes[parent as usize].children.push((n, p as u32));
            }
        }
    }

    /// Fillmesh: parent `p` of appliance `n` may have work: ask the fill while it hands some out.
    fn want_from(&mut self, n: u32, p: u32) {
        let node = &self.nodes[n as usize];
        if !node.alive || node.complete_at.is_some() {
            return;
        }
        let Some(&src) = node.parents.get(p as usize) else { return };
        loop {
            let Some(swarm) = self.nodes[n as usize].swarm.as_mut() else { return };
            match swarm.next(p as usize) {
                SwarmNext::Chunk(c) => self.request_slot(n, src, c, p),
                SwarmNext::Wait | SwarmNext::Stop => return,
            }
        }
    }

    /// Fillmesh: `n` gained chunk `c`: a HAVE to each subscribed child (taken as arriving at
    /// once: it is a few bytes on an open stream, and the request it leads to still pays
    /// its latency); where it is news to a child (a chunk it wants, not yet advertised to
    /// it), the child asks that parent for work. Why only then: a HAVE for a chunk the child
    /// holds changes nothing, and asking after each of those was a tenth of the
    /// 10,000-appliance run.
    fn have(&mut self, n: u32, c: u32) {
        let children = std::mem::take(&mut self.nodes[n as usize].children);
        for &(child, p) in &children {
            if let Some(swarm) = self.nodes[child as usize].swarm.as_mut() {
                if swarm.have(p as usize, c) == Ok(true) {
                    self.want_from(child, p);
                }
            }
        }
        // Taken out only to walk it while the children change: nothing here subscribes.
        self.nodes[n as usize].children = children;
    }

    /// Fillmesh: the periodic summary (held chunks, bytes by class) one message to the
    /// tracker; a plan from an older layout is fetched again.
    fn report(&mut self, n: u32) {
        let node = &self.nodes[n as usize];
        if !node.alive || node.swarm.is_none() || node.reported_complete {
            return;
        }
        let complete = node.complete_at.is_some();
        let now = self.ms();
        let Some(tracker) = self.tracker.as_mut() else { return };
        self.tracker_messages += 1;
        let node = &mut self.nodes[n as usize];
        let gained = node.swarm.as_mut().map(|s| runs(&s.take_gained())).unwrap_or_default();
        self.summaries += 1;
        self.summary_runs += gained.len() as u64;
        let bytes: [u64; 4] = std::array::from_fn(|k| node.stored[k] - node.reported[k]);
        node.reported = node.stored;
        tracker
            .report_fill(now, &self.ids[n as usize], self.title, &gained, bytes)
            .unwrap_or_else(|e| panic!("{e}"));
        if complete {
            self.nodes[n as usize].reported_complete = true;
            return;
        }
        if tracker.plan_epoch() != self.nodes[n as usize].plan_epoch {
            // The tracker's notice that the layout moved, then the plan.
            self.tracker_messages += 1;
            self.epoch_notices += 1;
            self.fetch_plan(n);
            self.want(n);
        }
        self.schedule(self.now + REPORT_EVERY, Ev::Report(n));
    }

    /// A flash crowd: players in random sites, each steered to an appliance holding the title
    /// (per-chunk and fillmesh: by the tracker's steering; otherwise nearest complete
    /// appliance), else the origin.
    fn crowd(&mut self, idx: usize) {
        let c = self.sc.crowds[idx].clone();
        let sites = self.sc.sites() as u64;
        for p in 0..c.players {
            let site = self.rng.below(sites) as u32;
            let region = site / self.sc.sites_per_region as u32;
            let ip = IpAddr::from([10, (region % 256) as u8, (site % 256) as u8, (p % 250 + 1) as u8]);
            let now = self.ms();
            let target = match self.tracker.as_mut() {
                Some(t) => t.steer(now, &self.title, ip).targets.first().and_then(node_index),
                None => self.nearest_complete(site, region),
            };
            let src = target.unwrap_or(0);
            self.players += 1;
            if src != 0 {
                self.players_from_appliances += 1;
            }
            self.nodes[src as usize].players += 1;
            let cap = self.net.add_resource(c.bitrate_bps);
            let bytes = (c.bitrate_bps * c.duration_s).round() as u64;
            let t = self.new_transfer(Transfer {
                dst: src,
                src,
                chunk: site,
                bytes,
                flow: None,
                gen: 0,
                live: true,
                kind: Kind::Player { bytes_per_s_bits: c.bitrate_bps.to_bits(), started: self.now },
                player_res: Some(cap),
                slot: 0,
            });
            let g = self.transfers[t as usize].gen;
            self.schedule(self.now, Ev::Start(t, g));
        }
    }

    fn nearest_complete(&self, site: u32, region: u32) -> Option<u32> {
        let mut best: Option<(u8, u32, u32)> = None;
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            if !n.alive || n.complete_at.is_none() {
                continue;
            }
            let rank = if n.site == site {
                0
            } else if n.region == region {
                1
            } else {
                2
            };
            let key = (rank, n.players, i as u32);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        best.map(|b| b.2)
    }

    fn outcome(mut self) -> Outcome {
        let tracker_bytes = self.tracker.as_ref().map(|t| {
            let status = t.status(self.now / 1_000_000);
            let mut out = [0u64; 4];
            if let Some(title) = status.titles.first() {
                for (k, key) in CLASS_KEYS.iter().enumerate() {
                    out[k] = title.bytes_by_class.get(*key).copied().unwrap_or(0);
                }
            }
            out
        });
        if self.opts.validate_tracker {
            if let Some(t) = self.tracker.as_ref() {
                t.debug_validate(self.now / 1_000_000).unwrap_or_else(|e| panic!("tracker: {e}"));
            }
        }
        let mut completion: Vec<f64> = self.completion.iter().map(|&ns| ns as f64 / NS as f64).collect();
        completion.sort_by(f64::total_cmp);
        Outcome {
            strategy: self.strategy,
            completion_s: completion,
            completed: self.completed,
            appliances: self.sc.appliances,
            bytes_by_class: self.bytes,
            wasted_bytes: self.wasted.round() as u64,
            events: self.events,
            trace_hash: self.trace.finalize().to_hex().to_string(),
            sim_end_s: self.now as f64 / NS as f64,
            plan_calls: self.plan_calls,
            players: self.players,
            players_from_appliances: self.players_from_appliances,
            players_smooth: self.players_smooth,
            tracker_bytes_by_class: tracker_bytes,
            max_local_solve: self.net.max_local,
            global_solves: std::mem::take(&mut self.net.global_solves),
            conservation_errors: self.conservation_errors,
            samples: std::mem::take(&mut self.samples),
            tracker_messages: self.tracker_messages,
            chunks_transferred: self.chunks_transferred,
            summaries: self.summaries,
            summary_runs: self.summary_runs,
            failure_reports: self.failure_reports,
            epoch_notices: self.epoch_notices,
        }
    }
}
