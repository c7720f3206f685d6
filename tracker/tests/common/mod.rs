//! Builders and an independent model of the tracker's rules, shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use fillmesh_protocol::messages::{FailureKind, Heartbeat, Registration, Role, MAX_EVICT};
use fillmesh_protocol::messages::{SourceClass, MAX_FILLS};
use fillmesh_protocol::{ChunkBitmap, ChunkSize, IpPrefix, NodeId, Shape, TitleId};
use fillmesh_tracker::core::{Config, Event, Fills, Millis, Plan, PlayerId, Policy, Steering, Tracker};

const B58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// A valid node id per index, e.g. "Node" + base58 digits.
pub fn node(i: usize) -> NodeId {
    let mut s = String::from("Nd");
    let mut n = i;
    loop {
        s.push(B58[n % 58] as char);
        n /= 58;
        if n == 0 {
            break;
        }
    }
    s.parse().unwrap()
}

pub fn title(i: usize) -> TitleId {
    TitleId::from_bytes([i as u8 + 1; 32])
}

/// A one-file title's shape: `chunks` chunks of 1 KiB, the last one `tail` bytes short.
pub fn shape(chunks: u32, tail: u64) -> Shape {
    let len = if chunks == 0 { 0 } else { u64::from(chunks) * 1024 - tail.min(1023) };
    Shape::file(len, ChunkSize::new(1024).unwrap()).unwrap()
}

/// A package's shape of `chunks` chunks of 1 KiB in up to three files (one empty file for
/// none), each file's last chunk `tail` bytes short: as many chunks as [`shape`] gives, with a
/// short chunk in the middle of the title.
pub fn package(chunks: u32, tail: u64) -> Shape {
    let files = chunks.clamp(1, 3);
    let lens = (0..files)
        .map(|k| {
            let c = chunks / files + u32::from(k < chunks % files);
            if c == 0 {
                0
            } else {
                u64::from(c) * 1024 - tail.min(1023)
            }
        })
        .collect();
    Shape::new(ChunkSize::new(1024).unwrap(), true, lens).unwrap()
}

pub fn registration(
    role: Role,
    i: usize,
    region: usize,
    site: usize,
    upload_bps: u64,
    disk: u64,
) -> Registration {
    let prefixes = if role == Role::Appliance {
        vec![
            IpPrefix::new(IpAddr::from([10, region as u8, 0, 0]), 16).unwrap(),
            IpPrefix::new(IpAddr::from([10, region as u8, site as u8, 0]), 24).unwrap(),
        ]
    } else {
        Vec::new()
    };
    Registration {
        role,
        mesh_addr: SocketAddr::from(([127, 0, 0, 1], 4000 + i as u16)),
        site: format!("site{site}"),
        region: format!("region{region}"),
        prefixes,
        upload_bps,
        disk_bytes: disk,
        cert_sha256: None,
    }
}

pub fn heartbeat(healthy: bool, sessions: u32) -> Heartbeat {
    Heartbeat { healthy, uploads_in_flight: 0, upload_bps_used: 0, player_sessions: sessions, disk_used: 0 }
}

/// What the rules say, tracked apart from the tracker's incremental counts.
#[derive(Debug, Default)]
pub struct Model {
    pub nodes: BTreeMap<NodeId, ModelNode>,
    pub bad: BTreeSet<NodeId>,
    /// Source -> every distinct reporter (node or player) of a corrupt chunk from it.
    pub corrupt: BTreeMap<NodeId, BTreeSet<Reporter>>,
    /// Reporter -> every source it reported corrupt (the tracker keeps only the latest 64;
    /// the tests' fleets are smaller than that).
    pub excluded: BTreeMap<NodeId, BTreeSet<NodeId>>,
    pub shapes: BTreeMap<TitleId, Shape>,
    /// Per title: publish time, raised by every steering request for it.
    pub wanted: BTreeMap<TitleId, Millis>,
    /// Every node that ever registered (the only ones a corrupt report may name).
    pub known: BTreeSet<NodeId>,
    /// Per title: when a player was last steered to it (never evicted within
    /// `evict_min_idle_ms` of that).
    pub steered: BTreeMap<TitleId, Millis>,
    pub origin: Option<NodeId>,
    /// The role each node last registered with (a player may accuse only an appliance).
    pub roles: BTreeMap<NodeId, Role>,
    /// The titles each appliance's latest fills named.
    pub filling: BTreeMap<NodeId, BTreeSet<TitleId>>,
}

/// Who reported a corrupt chunk, as the rules tell reporters apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reporter {
    Node(NodeId),
    /// A player by its address: IPv4 whole (IPv4-mapped IPv6 as IPv4), IPv6 by its /64.
    Player(std::net::IpAddr),
    /// A player by its playback token's id.
    Token([u8; 16]),
}

impl Reporter {
    pub fn player(player: PlayerId) -> Self {
        use std::net::IpAddr;
        let addr = match player {
            PlayerId::Token(id) => return Reporter::Token(id),
            PlayerId::Address(addr) => addr,
        };
        Reporter::Player(match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) >> 64 << 64).into()),
            },
            v4 => v4,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ModelNode {
    pub registration: Registration,
    pub last_heartbeat: Millis,
    pub lost: bool,
    pub says_healthy: bool,
    pub held: BTreeMap<TitleId, ChunkBitmap>,
}

impl Model {
    pub fn healthy(&self, config: &Config, now: Millis, id: &NodeId) -> bool {
        self.nodes.get(id).is_some_and(|n| {
            !n.lost && n.says_healthy && now.saturating_sub(n.last_heartbeat) < config.unhealthy_after_ms
        })
    }

    /// A healthy, non-bad appliance.
    pub fn eligible(&self, config: &Config, now: Millis, id: &NodeId) -> bool {
        !self.bad.contains(id)
            && self.healthy(config, now, id)
            && self.nodes.get(id).is_some_and(|n| n.registration.role == Role::Appliance)
    }

    /// Whether `reporter` reported `source` corrupt, so is never to be sent to it.
    pub fn excludes(&self, reporter: &NodeId, source: &NodeId) -> bool {
        self.excluded.get(reporter).is_some_and(|e| e.contains(source))
    }

    pub fn holds(&self, id: &NodeId, t: &TitleId, c: u32) -> bool {
        self.nodes.get(id).and_then(|n| n.held.get(t)).is_some_and(|m| m.contains(c))
    }

    /// Applies an event the tracker accepted (the model mirrors only what matters to the rules),
    /// after forgetting nodes gone by `now` as every mutating tracker call does.
    pub fn apply(&mut self, config: &Config, now: Millis, event: &Event) {
        if !matches!(event, Event::Steer { .. }) {
            let gone: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|(_, n)| now.saturating_sub(n.last_heartbeat) >= config.gone_after_ms)
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                self.nodes.remove(&id);
                if self.origin.as_ref() == Some(&id) {
                    self.origin = None;
                }
            }
        }
        match event {
            Event::Register { node, registration } => {
                self.known.insert(node.clone());
                self.roles.insert(node.clone(), registration.role);
                let held = self.nodes.remove(node).map(|n| n.held).unwrap_or_default();
                if registration.role == Role::Origin {
                    self.origin = Some(node.clone());
                } else if self.origin.as_ref() == Some(node) {
                    self.origin = None;
                }
                self.nodes.insert(
                    node.clone(),
                    ModelNode {
                        registration: registration.clone(),
                        last_heartbeat: now,
                        lost: false,
                        says_healthy: true,
                        held,
                    },
                );
            }
            Event::Heartbeat { node, heartbeat } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.last_heartbeat = now;
                    n.lost = false;
                    n.says_healthy = heartbeat.healthy;
                }
            }
            Event::Lost { node } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.lost = true;
                }
            }
            Event::Publish { title, shape, .. } => {
                self.shapes.entry(*title).or_insert_with(|| shape.clone());
                self.wanted.entry(*title).or_insert(now);
            }
            Event::Steer { title, .. } => {
                if let Some(w) = self.wanted.get_mut(title) {
                    *w = (*w).max(now);
                    let s = self.steered.entry(*title).or_insert(now);
                    *s = (*s).max(now);
                }
            }
            Event::ReportHeld { node, title, held, fetched } => {
                let ok = self.shapes.get(title).is_some_and(|m| {
                    m.chunk_count() == held.len() && fetched.iter().all(|f| f.chunk < m.chunk_count())
                });
                if let (true, Some(n)) = (ok, self.nodes.get_mut(node)) {
                    n.held.insert(*title, held.clone());
                }
            }
            Event::ReportFailure { reporter, title, chunk, source, kind } => {
                let ok = self.nodes.contains_key(reporter)
                    && self.shapes.get(title).is_some_and(|m| *chunk < m.chunk_count());
                if ok && *kind == FailureKind::Corrupt && self.known.contains(source) {
                    self.excluded.entry(reporter.clone()).or_default().insert(source.clone());
                    let believed = !self.bad.contains(reporter);
                    let reporters = self.corrupt.entry(source.clone()).or_default();
                    if believed {
                        reporters.insert(Reporter::Node(reporter.clone()));
                    }
                    if reporters.len() >= config.corrupt_quorum.max(1) {
                        self.bad.insert(source.clone());
                    }
                }
            }
            Event::PlayerCorrupt { player, title, chunk, source } => {
                let ok = self.roles.get(source) == Some(&Role::Appliance)
                    && self.shapes.get(title).is_some_and(|m| *chunk < m.chunk_count());
                if ok {
                    let reporters = self.corrupt.entry(source.clone()).or_default();
                    reporters.insert(Reporter::player(*player));
                    if reporters.len() >= config.corrupt_quorum.max(1) {
                        self.bad.insert(source.clone());
                    }
                }
            }
            Event::ReportFill { node, title, gained, .. } => {
                let chunks = self.shapes.get(title).map(|m| m.chunk_count());
                if let (Some(chunks), Some(n)) = (chunks, self.nodes.get_mut(node)) {
                    if gained.iter().all(|r| r.end <= chunks) {
                        let held = n.held.entry(*title).or_insert_with(|| ChunkBitmap::new(chunks).unwrap());
                        held.insert_runs(gained).unwrap();
                        // A summary says the node is alive, as a heartbeat does (its last
                        // heartbeat's health stands).
                        n.last_heartbeat = now;
                        n.lost = false;
                    }
                }
            }
            // Fill windows and urgent titles: these scenarios state no window and mark nothing
            // urgent (their rules are tested in the core's `window` module).
            Event::Tick
            | Event::Plan { .. }
            | Event::Fills { .. }
            | Event::FillWindow { .. }
            | Event::WallClock { .. }
            | Event::Urgent { .. } => {}
        }
    }

    /// A plan told `node` to drop `evict`: it no longer holds them.
    pub fn evicted(&mut self, node: &NodeId, evict: &[TitleId]) {
        if let Some(n) = self.nodes.get_mut(node) {
            for t in evict {
                n.held.remove(t);
            }
        }
    }

    /// Bytes the planner lets `node` fill: the watermark share of its disk.
    pub fn watermark(&self, config: &Config, node: &NodeId) -> u64 {
        let disk = self.nodes[node].registration.disk_bytes;
        u64::try_from(u128::from(disk) * u128::from(config.evict_watermark_pct) / 100).unwrap_or(u64::MAX)
    }

    /// One slot per `slot_bps` of upload, clamped (the origin to its own cap), plus spares.
    pub fn slots(&self, config: &Config, id: &NodeId) -> u32 {
        let reg = &self.nodes[id].registration;
        let max = if reg.role == Role::Origin { config.max_origin_slots } else { config.max_slots };
        let share = u32::try_from(reg.upload_bps / config.slot_bps).unwrap_or(u32::MAX);
        share.clamp(config.min_slots, max.max(config.min_slots)) + config.spare_slots
    }
}

/// Checks one plan against the rules; `before` is the in-flight list just before it.
pub fn check_plan(
    tracker: &Tracker,
    model: &Model,
    now: Millis,
    a: &NodeId,
    max: usize,
    before: &[(NodeId, TitleId, u32, NodeId)],
    plan: &Plan,
) -> Result<(), String> {
    check_evictions(tracker, model, now, a, before, plan)?;
    let plan = &plan.assignments;
    let config = tracker.config();
    if plan.len() > max {
        return Err(format!("plan of {} over max {max}", plan.len()));
    }
    let after = tracker.debug_inflight();
    let mine = after.iter().filter(|(n, ..)| n == a).count();
    if !plan.is_empty() && mine > config.max_inflight_per_appliance {
        return Err(format!("{mine} in flight for {a}"));
    }
    // Fetches already under way at eligible appliances, per (title, chunk).
    let mut busy: BTreeSet<(TitleId, u32)> =
        before.iter().filter(|(n, ..)| model.eligible(config, now, n)).map(|(_, t, c, _)| (*t, *c)).collect();
    let mut seen = BTreeSet::new();
    for asg in plan {
        let key = (asg.title, asg.chunk);
        if !seen.insert(key) || before.iter().any(|(n, t, c, _)| n == a && (*t, *c) == key) {
            return Err(format!("duplicate assignment {key:?} for {a}"));
        }
        if model.holds(a, &asg.title, asg.chunk) {
            return Err(format!("{a} already holds {key:?}"));
        }
        if asg.sources.is_empty() || asg.sources.len() > 8 {
            return Err(format!("{} sources", asg.sources.len()));
        }
        for s in &asg.sources {
            if model.bad.contains(&s.node) || !model.healthy(config, now, &s.node) {
                return Err(format!("source {} bad or unhealthy", s.node));
            }
            if !model.holds(&s.node, &asg.title, asg.chunk) {
                return Err(format!("source {} does not hold {key:?}", s.node));
            }
            if &s.node == a {
                return Err("self as source".into());
            }
            if model.excludes(a, &s.node) {
                return Err(format!("source {} named to {a}, which reported it corrupt", s.node));
            }
            let reg = &model.nodes[&s.node].registration;
            if s.role != reg.role || s.addr != reg.mesh_addr {
                return Err("source role or address wrong".into());
            }
            let (load, slots) = tracker.debug_load(&s.node).unwrap();
            if load > slots && s.node == asg.sources[0].node {
                return Err(format!("source {} at {load} of {slots} slots", s.node));
            }
            if slots != model.slots(config, &s.node) {
                return Err("slot formula".into());
            }
        }
        let first = &asg.sources[0];
        if first.role == Role::Origin {
            if asg.sources.len() != 1 || model.origin.as_ref() != Some(&first.node) {
                return Err("origin not alone or not the origin".into());
            }
            if config.policy == Policy::Mesh {
                // Holders `a` reported corrupt do not count: the origin is its only way.
                let held_somewhere = model.nodes.keys().any(|n| {
                    model.eligible(config, now, n)
                        && !model.excludes(a, n)
                        && model.holds(n, &asg.title, asg.chunk)
                });
                if held_somewhere || busy.contains(&key) {
                    return Err(format!("origin named for {key:?}, which the mesh has or fetches"));
                }
            }
        } else {
            if config.policy == Policy::OriginOnly {
                return Err("peer source under OriginOnly".into());
            }
            if !asg.sources.iter().all(|s| model.eligible(config, now, &s.node)) {
                return Err("peer source not an eligible appliance".into());
            }
        }
        if model.eligible(config, now, a) {
            busy.insert(key);
        }
        if !after.iter().any(|(n, t, c, s)| n == a && (*t, *c) == key && *s == first.node) {
            return Err("assignment not recorded in flight".into());
        }
    }
    // Slots, for every first source named in this plan.
    let mut loads: BTreeMap<&NodeId, u32> = BTreeMap::new();
    for (_, _, _, s) in &after {
        *loads.entry(s).or_default() += 1;
    }
    for asg in plan {
        let s = &asg.sources[0].node;
        if loads[s] > model.slots(config, s) {
            return Err(format!("{s} over its slots"));
        }
    }
    Ok(())
}

/// Checks a plan's evictions, with `model` as it was before them: at most [`MAX_EVICT`],
/// only titles `a` held, fetched or was filling (its latest fills), each wanted less recently than some title it did not
/// hold whole, none when the whole catalog fits under the watermark, none fetched any more;
/// and once a plan assigns anything, the titles `a` holds or fetches, each at its whole
/// length, fit under the watermark.
pub fn check_evictions(
    tracker: &Tracker,
    model: &Model,
    now: Millis,
    a: &NodeId,
    before: &[(NodeId, TitleId, u32, NodeId)],
    plan: &Plan,
) -> Result<(), String> {
    let config = tracker.config();
    let Some(me) = model.nodes.get(a) else {
        return if plan.evict.is_empty() { Ok(()) } else { Err("eviction for an unknown node".into()) };
    };
    let watermark = model.watermark(config, a);
    let catalog = model.shapes.values().fold(0u64, |s, m| s.saturating_add(m.len()));
    if !plan.evict.is_empty() && catalog <= watermark {
        return Err(format!("{a} evicted {:?} although the whole catalog fits", plan.evict));
    }
    if plan.evict.len() > MAX_EVICT {
        return Err(format!("{} evictions", plan.evict.len()));
    }
    let held = |t: &TitleId| me.held.get(t).is_some_and(|m| m.count() > 0);
    let after = tracker.debug_inflight();
    for v in &plan.evict {
        let fetched = before.iter().any(|(n, t, ..)| n == a && t == v)
            || model.filling.get(a).is_some_and(|f| f.contains(v));
        if !held(v) && !fetched {
            return Err(format!("{a} told to evict {v}, which it neither held nor fetched"));
        }
        let newer = model
            .wanted
            .iter()
            .any(|(t, w)| *w > model.wanted[v] && !me.held.get(t).is_some_and(|m| m.is_full()));
        if !newer {
            return Err(format!("{a} evicted {v} for no title wanted more recently"));
        }
        if model.steered.get(v).is_some_and(|&s| now.saturating_sub(s) < config.evict_min_idle_ms) {
            return Err(format!(
                "{a} evicted {v}, steered to within the last {} ms",
                config.evict_min_idle_ms
            ));
        }
        if after.iter().any(|(n, t, ..)| n == a && t == v) {
            return Err(format!("{a} still fetches evicted {v}"));
        }
    }
    if plan.assignments.is_empty() {
        return Ok(());
    }
    let committed = model
        .shapes
        .iter()
        .filter(|(t, _)| {
            (held(t) && !plan.evict.contains(t)) || after.iter().any(|(n, tt, ..)| n == a && tt == *t)
        })
        .fold(0u64, |s, (_, m)| s.saturating_add(m.len()));
    if committed > watermark {
        return Err(format!(
            "{a} planned to {committed} bytes over its watermark {watermark}: {plan:?} held {:?}",
            me.held.iter().map(|(t, m)| (t, m.iter().count())).collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// Checks an appliance's fills against the rules, with `model` as it was before them: at
/// most [`MAX_FILLS`] plans, each for a distinct published title it does not hold whole and
/// that fits under its watermark, with parents that are neither itself, nor bad, nor sources
/// it reported corrupt, and under [`Policy::OriginOnly`] only the origin, for every chunk;
/// evictions as for plans (only titles it held or was filling), and once it fills anything,
/// what it holds and fills, each at its whole length, fits under the watermark.
pub fn check_fills(
    tracker: &Tracker,
    model: &Model,
    now: Millis,
    a: &NodeId,
    before: &[(NodeId, TitleId, u32, NodeId)],
    fills: &Fills,
) -> Result<(), String> {
    let config = tracker.config();
    let Some(me) = model.nodes.get(a) else { return Err(format!("fills for unknown {a}")) };
    if me.registration.role != Role::Appliance && !fills.plans.is_empty() {
        return Err(format!("{:?} {a} given fills", me.registration.role));
    }
    if fills.plans.len() > MAX_FILLS {
        return Err(format!("{} plans", fills.plans.len()));
    }
    let watermark = model.watermark(config, a);
    let mut titles = BTreeSet::new();
    for plan in &fills.plans {
        let t = &plan.title;
        let Some(m) = model.shapes.get(t) else { return Err(format!("a plan for unpublished {t}")) };
        if !titles.insert(*t) {
            return Err(format!("two plans for {t}"));
        }
        if me.held.get(t).is_some_and(|h| h.is_full()) {
            return Err(format!("{a} told to fill {t}, which it holds whole"));
        }
        if m.len() > watermark {
            return Err(format!("{a} told to fill {t} of {} bytes over its watermark {watermark}", m.len()));
        }
        if plan.parents.is_empty() {
            return Err(format!("a plan for {t} with no parent"));
        }
        for p in &plan.parents {
            if p.node == *a || model.bad.contains(&p.node) {
                return Err(format!("{a} given parent {} (itself or bad)", p.node));
            }
            if model.excluded.get(a).is_some_and(|e| e.contains(&p.node)) {
                return Err(format!("{a} given parent {}, which it reported corrupt", p.node));
            }
            if (p.class == SourceClass::Origin) != (model.origin.as_ref() == Some(&p.node)) {
                return Err(format!("parent {} classed {:?}", p.node, p.class));
            }
        }
        if config.policy == Policy::OriginOnly
            && (plan.parents.iter().any(|p| p.class != SourceClass::Origin)
                || plan.origin != [std::ops::Range { start: 0, end: m.chunk_count() }])
        {
            return Err(format!("origin-only plan {plan:?}"));
        }
    }
    // Evictions: the plan rules (titles it was filling count as fetched).
    let as_plan = Plan { assignments: Vec::new(), evict: fills.evict.clone() };
    check_evictions(tracker, model, now, a, before, &as_plan)?;
    if fills.plans.is_empty() {
        return Ok(());
    }
    let committed = model
        .shapes
        .iter()
        .filter(|(t, _)| {
            (me.held.get(*t).is_some_and(|m| m.count() > 0) && !fills.evict.contains(t))
                || titles.contains(*t)
        })
        .fold(0u64, |s, (_, m)| s.saturating_add(m.len()));
    if committed > watermark && model.shapes.values().fold(0u64, |s, m| s.saturating_add(m.len())) > watermark
    {
        return Err(format!("{a} fills to {committed} bytes over its watermark {watermark}: {fills:?}"));
    }
    Ok(())
}

/// Checks a steering answer against the rules.
pub fn check_steer(
    tracker: &Tracker,
    model: &Model,
    now: Millis,
    t: &TitleId,
    client: IpAddr,
    steering: &Steering,
) -> Result<(), String> {
    let config = tracker.config();
    if steering.reason.is_empty() == (steering.targets.is_empty() || steering.content_miss) {
        return Err("reason must be given exactly when there is no target or a content miss".into());
    }
    let whole = |n: &NodeId| model.nodes[n].held.get(t).is_some_and(|m| m.is_full());
    let best = |n: &NodeId| {
        model.nodes[n].registration.prefixes.iter().filter(|p| p.contains(client)).map(|p| p.len()).max()
    };
    let mut last: Option<(bool, u8)> = None;
    let mut seen = BTreeSet::new();
    for (k, n) in steering.targets.iter().enumerate() {
        if !seen.insert(n) {
            return Err("duplicate target".into());
        }
        if model.origin.as_ref() == Some(n) {
            if k + 1 != steering.targets.len() {
                return Err("the origin is not last".into());
            }
            if model.bad.contains(n) || !model.healthy(config, now, n) {
                return Err("an unhealthy or bad origin steered to".into());
            }
            continue;
        }
        if !model.eligible(config, now, n) {
            return Err(format!("target {n} not a healthy non-bad appliance"));
        }
        if model.nodes[n].held.get(t).is_none_or(|m| m.count() == 0) {
            return Err(format!("target {n} holds nothing of the title"));
        }
        // Whole holders matching the client's prefixes come first, longest first.
        if !whole(n) {
            last = Some((false, 0));
            continue;
        }
        let b = best(n);
        let key = (b.is_some(), b.unwrap_or(0));
        if let Some(prev) = last {
            if key > prev {
                return Err("prefix matches not first, longest first".into());
            }
        }
        last = Some(key);
    }
    if let Some(first) = steering.targets.first() {
        let is_origin = model.origin.as_ref() == Some(first);
        if !is_origin && whole(first) && best(first).is_some() && steering.content_miss {
            return Err("a whole holder matching the client's prefix counted as a content miss".into());
        }
        if (is_origin || !whole(first)) && !steering.content_miss {
            return Err("a partial holder or the origin first, not counted as a content miss".into());
        }
    }
    if steering.targets.len() < fillmesh_protocol::messages::MAX_TARGETS && model.shapes.contains_key(t) {
        let left_out = model.nodes.iter().any(|(n, node)| {
            model.eligible(config, now, n)
                && node.held.get(t).is_some_and(|m| m.count() > 0)
                && !seen.contains(n)
        });
        if left_out {
            return Err("a holder left out of a short list".into());
        }
    }
    if let Some(o) = &model.origin {
        let ready = !model.bad.contains(o) && model.healthy(config, now, o);
        if ready && model.shapes.contains_key(t) && steering.targets.last() != Some(o) {
            return Err("a healthy origin not last on the list".into());
        }
    }
    Ok(())
}

/// Checks what the status says of corrupt reports: per node, the distinct reporters up to the
/// quorum, and bad exactly when the quorum was reached.
pub fn check_corrupt_status(tracker: &Tracker, model: &Model, now: Millis) -> Result<(), String> {
    let quorum = tracker.config().corrupt_quorum.max(1);
    for a in tracker.status(now).appliances {
        let id: NodeId = a.peer_id.parse().unwrap();
        let reporters = model.corrupt.get(&id).map_or(0, |r| r.len());
        if a.corrupt_reports as usize != reporters.min(quorum) || a.bad != model.bad.contains(&id) {
            return Err(format!(
                "{id}: status says {} reports, bad {}; {reporters} reporters, quorum {quorum}",
                a.corrupt_reports, a.bad
            ));
        }
    }
    Ok(())
}
