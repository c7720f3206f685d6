//! The appliance's fill of one title among the parents its tracker assigned: the I/O shell of
//! [`fillmesh_swarm::Swarm`]. One task per title owns the swarm; around it, a subscription
//! task per parent (the held bitmap, then HAVEs) and a task per chunk request (request,
//! verify, commit), each telling the title's task what happened over one channel. The title's
//! task asks the swarm what to request after every event, sends the tracker a summary about
//! once a second (held runs and bytes per class since the last one it answered), reports a
//! corrupt parent at once, and keeps going when the tracker cannot be reached: summaries wait
//! until it can, and the plan it has stays in force.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use fillmesh_net::frame::read_frame;
use fillmesh_net::{rpc, Pool};
use fillmesh_protocol::bitmap::runs;
use fillmesh_protocol::messages::{
    ErrorCode, FailureKind, FillPlan, MeshRequest, MeshResponse, SourceClass, TrackerRequest,
    TrackerResponse, MAX_GAINED,
};
use fillmesh_protocol::{ChunkBitmap, Manifest, NodeId, TitleId};
use fillmesh_swarm::{Config as SwarmConfig, Dropped, Next, Outcome, Swarm};
use libp2p_identity::PeerId;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use super::client::{request_chunk, ChunkError};
use super::{request_manifest, ManifestMiss};
use crate::metrics::FillMetrics;
use crate::rate::TokenBucket;
use crate::store::{ChunkWriter, Store, StoreError, VerifiedChunk};

/// Time allowed for one chunk request, bytes included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A subscription silent this long is dead (parents send a keepalive every 5 s).
const SUBSCRIPTION_SILENCE: Duration = Duration::from_secs(20);
/// How often a summary goes to the tracker while there is something to say.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);
/// Requests in flight per parent. Why 2: one chunk's request and answer overlap the next's
/// on a parent's connection; the download as a whole is capped by `inflight`.
const PARENT_DEPTH: u32 = 2;

/// What the tracker side of a title's fill needs: the node's link to the tracker, seen
/// through a trait so that the fill does not depend on the member module that owns it.
pub(crate) trait Tracker: Send + Sync + 'static {
    /// One exchange with the tracker; an error when it cannot be reached or refused.
    fn request(
        &self,
        request: TrackerRequest,
    ) -> impl std::future::Future<Output = Result<TrackerResponse, String>> + Send;
    /// The tracker's epoch seen in an answer: the owner asks for new fills when it moved.
    fn saw_epoch(&self, epoch: u64);
    /// The fill needs a new plan (every parent it had is gone).
    fn want_plan(&self);
}

/// The local pieces a title's fill uses.
pub(crate) struct Local {
    pub(crate) store: Arc<Store>,
    pub(crate) writer: ChunkWriter,
    pub(crate) pool: Arc<Pool>,
    pub(crate) metrics: Arc<FillMetrics>,
    /// Set when the store refuses a chunk for want of room: no more filling until an
    /// eviction frees some.
    pub(crate) disk_full: Arc<AtomicBool>,
    /// Requests in flight over all parents.
    pub(crate) inflight: u32,
    /// While the plan is stale ([`Control::Escalate`]), every request to the origin waits
    /// its turn in this bucket (shared by all fills): a long tracker outage must not turn
    /// into an origin storm.
    pub(crate) stale_origin: Arc<TokenBucket>,
}

/// What the owner tells a running fill.
#[derive(Debug)]
pub(crate) enum Control {
    /// A newer plan for the title.
    Plan(FillPlan),
    /// The plan is stale (or no longer): see [`Swarm::escalate`].
    Escalate(bool),
}

/// Runs the fill of `plan.title` until the title is held whole (and the tracker told) or the
/// store stops it. Dropping (aborting) the task stops the fill and every task of it.
pub(crate) async fn run<T: Tracker>(
    plan: FillPlan,
    local: Arc<Local>,
    tracker: Arc<T>,
    control: mpsc::Receiver<Control>,
) {
    let title = plan.title;
    let span = tracing::info_span!("fill", %title);
    async move {
        let Some(manifest) = manifest(&plan, &local, tracker.as_ref()).await else {
            // Nobody gave a manifest that verifies: the owner asks again with the next fills.
            tracker.want_plan();
            return;
        };
        let held = match local.store.held(&title) {
            Some(h) => h,
            None => match ChunkBitmap::new(manifest.chunk_count()) {
                Ok(h) => h,
                Err(e) => {
                    warn!("{e}");
                    return;
                }
            },
        };
        let config = SwarmConfig { inflight: local.inflight.max(1), ..SwarmConfig::default() };
        let seed =
            local.store.dir().to_string_lossy().bytes().fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        let mut fill = Fill {
            title,
            manifest,
            swarm: Swarm::new(config, &held, seed),
            parents: Vec::new(),
            local,
            tracker,
            events: mpsc::channel(1024),
            tasks: JoinSet::new(),
            unsent: Vec::new(),
            unsent_bytes: [0; 4],
            summary_pending: false,
            reconciled: false,
            escalated: false,
        };
        info!(
            parents = plan.parents.len(),
            origin_chunks = plan.origin.iter().map(|r| r.len()).sum::<usize>(),
            held = held.count(),
            "filling by the tracker's plan"
        );
        fill.apply(plan);
        fill.drive(control).await;
    }
    .instrument(span)
    .await
}

/// The title's manifest: the store's, or the first parent's (nearest first) that verifies,
/// added to the store under the name the tracker's catalog gives it.
async fn manifest<T: Tracker>(plan: &FillPlan, local: &Local, tracker: &T) -> Option<Arc<Manifest>> {
    let title = plan.title;
    if let Some(m) = local.store.manifest(&title) {
        return Some(m);
    }
    for parent in &plan.parents {
        let Ok(peer) = parent.node.as_str().parse::<PeerId>() else { continue };
        let Ok(conn) = local.pool.get(parent.addr, peer).await else { continue };
        let manifest = match request_manifest(&conn, title, REQUEST_TIMEOUT).await {
            Ok(m) => m,
            Err(ManifestMiss::Unavailable(e)) => {
                debug!(parent = %parent.node, "no manifest: {e}");
                continue;
            }
            Err(ManifestMiss::False(e)) => {
                warn!(parent = %parent.node, "false manifest: {e}");
                continue;
            }
        };
        let name = match tracker.request(TrackerRequest::Catalog).await {
            Ok(TrackerResponse::Catalog { titles }) => {
                titles.into_iter().find(|t| t.title == title).map(|t| t.name).unwrap_or_default()
            }
            _ => String::new(),
        };
        let (store, m) = (local.store.clone(), manifest.clone());
        match tokio::task::spawn_blocking(move || store.add_title(title, &name, m)).await {
            Ok(Ok(())) => return Some(Arc::new(manifest)),
            Ok(Err(e)) => warn!("cannot add the title to the store: {e}"),
            Err(e) => warn!("adding the title did not finish: {e}"),
        }
    }
    None
}

/// What a parent's tasks tell the title's task.
#[derive(Debug)]
enum Event {
    Held(usize, ChunkBitmap),
    Have(usize, Vec<u32>),
    /// The subscription ended (busy, refused, broke the protocol, went silent, lost).
    Ended(usize, String),
    /// A request's chunk verified: its request slot is free while it is written.
    Received(usize, u32),
    /// How a request ended.
    Finished(usize, u32, Outcome, String),
    /// A summary was answered (`None`), or failed and gives back what it carried.
    Summarised(Option<(Vec<u32>, [u64; 4])>),
    /// The whole bitmap was delivered (or not).
    Reconciled(bool),
}

struct ParentState {
    node: NodeId,
    addr: SocketAddr,
    peer: Option<PeerId>,
    class: SourceClass,
    subscription: Option<tokio::task::AbortHandle>,
}

struct Fill<T> {
    title: TitleId,
    manifest: Arc<Manifest>,
    swarm: Swarm,
    /// By the swarm's parent index.
    parents: Vec<ParentState>,
    local: Arc<Local>,
    tracker: Arc<T>,
    events: (mpsc::Sender<Event>, mpsc::Receiver<Event>),
    tasks: JoinSet<()>,
    /// Chunks gained and bytes stored that no answered summary has carried yet.
    unsent: Vec<u32>,
    unsent_bytes: [u64; 4],
    summary_pending: bool,
    /// The whole bitmap went to the tracker after the last chunk.
    reconciled: bool,
    escalated: bool,
}

impl<T: Tracker> Fill<T> {
    /// Follows a plan: its ranges replace the old ones, parents it names are subscribed to
    /// (kept if already), parents it no longer names are let go.
    fn apply(&mut self, plan: FillPlan) {
        self.swarm.set_plan(&plan.origin, &plan.import);
        for (p, parent) in self.parents.iter_mut().enumerate() {
            let named = plan.parents.iter().any(|q| q.node == parent.node);
            if !named && self.swarm.dropped(p).is_none() {
                self.swarm.remove_parent(p);
                if let Some(sub) = parent.subscription.take() {
                    sub.abort();
                }
            }
        }
        for q in plan.parents {
            let known = self
                .parents
                .iter()
                .enumerate()
                .any(|(p, parent)| parent.node == q.node && self.swarm.dropped(p).is_none());
            if known {
                continue;
            }
            let p = self.swarm.add_parent(q.class, PARENT_DEPTH);
            let peer = q.node.as_str().parse::<PeerId>().ok();
            let mut state =
                ParentState { node: q.node, addr: q.addr, peer, class: q.class, subscription: None };
            match (peer, q.class) {
                (None, _) => {
                    self.swarm.remove_parent(p);
                }
                // The origin holds everything: nothing to subscribe to.
                (Some(_), SourceClass::Origin) => {}
                (Some(peer), _) => {
                    let sub = subscribe(
                        self.local.pool.clone(),
                        q.addr,
                        peer,
                        self.title,
                        p,
                        self.events.0.clone(),
                    );
                    state.subscription = Some(self.tasks.spawn(sub.in_current_span()));
                }
            }
            debug_assert_eq!(p, self.parents.len());
            self.parents.push(state);
        }
    }

    async fn drive(&mut self, mut control: mpsc::Receiver<Control>) {
        let mut summary = tokio::time::interval(SUMMARY_EVERY);
        summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inflight = 0u32;
        let mut control_open = true;
        let mut announced = false;
        // Bounded by the fill: each pass handles one event, tick or control message, and the
        // loop ends once every chunk is held and summed up (or the store stops it).
        loop {
            inflight += self.dispatch();
            if (self.swarm.is_complete() || self.swarm.is_stopped()) && inflight == 0 {
                if self.swarm.is_complete() && !announced {
                    info!(chunks = self.manifest.chunk_count(), "title complete");
                    announced = true;
                }
                // Done once the tracker has heard it all, the last time as the whole bitmap
                // (a whole bitmap the session sent earlier may have crossed the last
                // summaries and put back an older view); until then it is retried (the
                // tracker may be away: the title is served meanwhile).
                if self.summarise() && self.reconcile() {
                    break;
                }
            }
            tokio::select! {
                Some(event) = self.events.1.recv() => {
                    if matches!(event, Event::Finished(..)) {
                        inflight = inflight.saturating_sub(1);
                    }
                    self.handle(event).await;
                }
                c = control.recv(), if control_open => match c {
                    Some(Control::Plan(plan)) => self.apply(plan),
                    Some(Control::Escalate(on)) => {
                        self.escalated = on;
                        self.swarm.escalate(on);
                    }
                    None => control_open = false,
                },
                _ = summary.tick() => {
                    self.summarise();
                }
            }
        }
    }

    /// Starts every request the swarm wants now; returns how many.
    fn dispatch(&mut self) -> u32 {
        let mut started = 0;
        for p in 0..self.parents.len() {
            // Bounded: each pass takes a chunk, which the swarm gives out at most once at a
            // time, up to the parent's depth.
            while let Next::Chunk(c) = self.swarm.next(p) {
                let parent = &self.parents[p];
                let Some(peer) = parent.peer else { break };
                let pace = (self.escalated && parent.class == SourceClass::Origin)
                    .then(|| self.local.stale_origin.clone());
                let request = fetch(
                    self.local.clone(),
                    self.manifest.clone(),
                    self.title,
                    parent.addr,
                    peer,
                    p,
                    c,
                    pace,
                    self.events.0.clone(),
                );
                self.tasks.spawn(request.in_current_span());
                started += 1;
            }
        }
        started
    }

    async fn handle(&mut self, event: Event) {
        let dropped = match event {
            Event::Held(p, held) => self.swarm.advertise(p, &held).err().map(|why| (p, why)),
            Event::Have(p, chunks) => {
                chunks.into_iter().find_map(|c| self.swarm.have(p, c).err()).map(|why| (p, why))
            }
            Event::Ended(p, why) => {
                debug!(parent = %self.parents[p].node, "subscription ended: {why}");
                self.swarm.remove_parent(p);
                // No parent but the origin left: a plan of the fleet as it is now.
                let usable = (0..self.parents.len())
                    .any(|q| self.parents[q].class != SourceClass::Origin && self.swarm.dropped(q).is_none());
                if !usable {
                    self.tracker.want_plan();
                }
                None
            }
            Event::Received(p, c) => {
                self.swarm.received(p, c);
                None
            }
            Event::Reconciled(ok) => {
                self.summary_pending = false;
                self.reconciled = ok;
                None
            }
            Event::Summarised(failed) => {
                self.summary_pending = false;
                if let Some((chunks, bytes)) = failed {
                    self.unsent.extend(chunks);
                    for (u, b) in self.unsent_bytes.iter_mut().zip(bytes) {
                        *u += b;
                    }
                }
                None
            }
            Event::Finished(p, c, outcome, detail) => {
                if let Outcome::Stored(bytes) = outcome {
                    let class = self.parents[p].class as usize;
                    self.unsent_bytes[class] += bytes;
                    debug!(chunk = c, source = %self.parents[p].node, "stored chunk");
                } else if !detail.is_empty() {
                    debug!(parent = %self.parents[p].node, chunk = c, "{detail}");
                }
                if outcome == Outcome::StoreFailed {
                    self.local.disk_full.store(true, Relaxed);
                }
                let corrupt = outcome == Outcome::Corrupt;
                let dropped = self.swarm.finish(p, c, outcome);
                if corrupt {
                    // At once: the tracker excludes the parent from our plans and counts the
                    // report toward its quorum.
                    self.report(p, c, FailureKind::Corrupt);
                }
                dropped.map(|why| (p, why))
            }
        };
        if let Some((p, why)) = dropped {
            // A parent that broke the subscription's rules lied: the tracker hears it as it
            // hears of a corrupt chunk (already reported), so that this appliance gets what
            // only that parent was to bring, and a quorum of reporters marks it bad.
            if !matches!(why, Dropped::Corrupt | Dropped::Gone) {
                self.report(p, 0, FailureKind::Corrupt);
            }
            self.dropped(p, why);
        }
        self.unsent.extend(self.swarm.take_gained());
    }

    /// Parent `p` was dropped for `why`: its subscription ends; without any parent left
    /// that can help, a new plan is asked for.
    fn dropped(&mut self, p: usize, why: Dropped) {
        let parent = &mut self.parents[p];
        warn!(parent = %parent.node, "parent dropped: {why}");
        if let Some(sub) = parent.subscription.take() {
            sub.abort();
        }
        if (0..self.parents.len()).all(|p| self.swarm.dropped(p).is_some()) {
            self.tracker.want_plan();
        }
    }

    fn report(&self, p: usize, chunk: u32, kind: FailureKind) {
        let request = TrackerRequest::ReportFailure {
            title: self.title,
            chunk,
            source: self.parents[p].node.clone(),
            kind,
        };
        let tracker = self.tracker.clone();
        tokio::spawn(async move {
            match tracker.request(request).await {
                // The tracker now leaves the parent out of this appliance's plans and gives
                // it what only that parent was to bring: a new plan.
                Ok(_) if kind == FailureKind::Corrupt => tracker.want_plan(),
                Ok(_) => {}
                Err(e) => debug!("failure report not delivered: {e}"),
            }
        });
    }

    /// Sends the title's whole held bitmap once, in a task of its own; true once the tracker
    /// has it.
    fn reconcile(&mut self) -> bool {
        if self.reconciled {
            return true;
        }
        if self.summary_pending {
            return false;
        }
        let Some(held) = self.local.store.held(&self.title) else { return true };
        self.summary_pending = true;
        let (title, tracker, events) = (self.title, self.tracker.clone(), self.events.0.clone());
        tokio::spawn(
            async move {
                let sent =
                    tracker.request(TrackerRequest::ReportHeld { title, held, fetched: Vec::new() }).await;
                if let Err(e) = &sent {
                    debug!("whole bitmap not delivered: {e}");
                }
                let _ = events.send(Event::Reconciled(sent.is_ok())).await;
            }
            .in_current_span(),
        );
        false
    }

    /// Sends what no answered summary carried yet, in a task of its own (the fill never
    /// waits on the tracker, which may be gone: what a summary that fails carried is kept for
    /// the next). At most one summary is on its way. True when nothing is left to send and
    /// none is on its way.
    fn summarise(&mut self) -> bool {
        if self.summary_pending {
            return false;
        }
        let bytes: [u64; 4] = self.unsent_bytes;
        if self.unsent.is_empty() && bytes == [0; 4] {
            return true;
        }
        let chunks = std::mem::take(&mut self.unsent);
        self.unsent_bytes = [0; 4];
        self.summary_pending = true;
        let (title, tracker, store, events) =
            (self.title, self.tracker.clone(), self.local.store.clone(), self.events.0.clone());
        tokio::spawn(
            async move {
                let gained = runs(&chunks);
                let sent = async {
                    let request = if gained.len() <= MAX_GAINED {
                        TrackerRequest::FillSummary { title, gained, bytes }
                    } else {
                        // Too scattered for one summary: the whole bitmap, then the bytes alone.
                        if let Some(held) = store.held(&title) {
                            tracker
                                .request(TrackerRequest::ReportHeld { title, held, fetched: Vec::new() })
                                .await?;
                        }
                        TrackerRequest::FillSummary { title, gained: Vec::new(), bytes }
                    };
                    match tracker.request(request).await? {
                        TrackerResponse::Epoch(epoch) => Ok(epoch),
                        other => Err(format!("unexpected answer to a summary: {other:?}")),
                    }
                }
                .await;
                let outcome = match sent {
                    Ok(epoch) => {
                        tracker.saw_epoch(epoch);
                        None
                    }
                    Err(e) => {
                        // Kept for the next one: the tracker may be away for a while.
                        debug!("summary not delivered: {e}");
                        Some((chunks, bytes))
                    }
                };
                let _ = events.send(Event::Summarised(outcome)).await;
            }
            .in_current_span(),
        );
        false
    }
}

/// Subscribes to parent `p`'s holdings of `title` and passes on what it says, until the
/// subscription ends.
async fn subscribe(
    pool: Arc<Pool>,
    addr: SocketAddr,
    peer: PeerId,
    title: TitleId,
    p: usize,
    events: mpsc::Sender<Event>,
) {
    let why = async {
        // A parent that does not know the title yet (it has not had its manifest) is asked
        // again, less and less often: it is about to. Bounded by the fill, which aborts this
        // task when it lets the parent go.
        let mut wait = Duration::from_millis(100);
        let (first, _send, mut recv) = loop {
            let conn = pool.get(addr, peer).await.map_err(|e| format!("unreachable: {e}"))?;
            let sub =
                rpc::subscribe::<_, MeshResponse>(&conn, &MeshRequest::Subscribe { title }, REQUEST_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?;
            match sub.0 {
                MeshResponse::Error(ref e) if e.code == ErrorCode::UnknownTitle => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                _ => break sub,
            }
        };
        let mut next = Some(first);
        // Bounded by the subscription: each pass reads one message within the silence bound.
        loop {
            let message = match next.take() {
                Some(m) => m,
                None => read_frame::<MeshResponse>(&mut recv, SUBSCRIPTION_SILENCE)
                    .await
                    .map_err(|e| e.to_string())?,
            };
            let event = match message {
                MeshResponse::Held { title: t, held } if t == title => Event::Held(p, held),
                MeshResponse::Have { title: t, chunks } if t == title => {
                    if chunks.is_empty() {
                        continue;
                    }
                    Event::Have(p, chunks)
                }
                MeshResponse::Error(e) if e.code == ErrorCode::Busy => return Err("busy".to_owned()),
                MeshResponse::Error(e) => return Err(format!("{:?}: {}", e.code, e.message)),
                _ => return Err("answered a subscription with something else".to_owned()),
            };
            if events.send(event).await.is_err() {
                return Ok(());
            }
        }
    }
    .await;
    // `_send` is dropped with the future: the parent sees the stream end.
    if let Err(why) = why {
        let _ = events.send(Event::Ended(p, why)).await;
    }
}

/// Requests chunk `c` from parent `p`, verifies it and commits it, telling the title's task.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    local: Arc<Local>,
    manifest: Arc<Manifest>,
    title: TitleId,
    addr: SocketAddr,
    peer: PeerId,
    p: usize,
    c: u32,
    pace: Option<Arc<TokenBucket>>,
    events: mpsc::Sender<Event>,
) {
    let (outcome, detail) = async {
        let expected =
            manifest.chunk_len(c).ok_or((Outcome::Refused, format!("chunk {c} is out of range")))?;
        if let Some(bucket) = &pace {
            bucket.take(expected).await;
        }
        let conn =
            local.pool.get(addr, peer).await.map_err(|e| (Outcome::Lost, format!("unreachable: {e}")))?;
        let bytes =
            tokio::time::timeout(REQUEST_TIMEOUT, request_chunk(&conn, title, c, expected, REQUEST_TIMEOUT))
                .await
                .map_err(|_| (Outcome::Timeout, format!("timed out after {REQUEST_TIMEOUT:?}")))?
                .map_err(|e| match e {
                    ChunkError::Lost(e) => (Outcome::Lost, e),
                    ChunkError::NotHeld(e) => (Outcome::NotHeld, e),
                    ChunkError::Refused(e) => (Outcome::Refused, e),
                    ChunkError::Lied(e) => (Outcome::Corrupt, e),
                })?;
        let len = bytes.len() as u64;
        let verified = match VerifiedChunk::verify(title, &manifest, c, bytes.freeze()) {
            Ok(v) => v,
            Err(e) => {
                local.metrics.chunk_rejected();
                warn!(%peer, chunk = c, "corrupt chunk: {e}");
                return Err((Outcome::Corrupt, e.to_string()));
            }
        };
        local.metrics.chunk_verified(len);
        let _ = events.send(Event::Received(p, c)).await;
        match local.writer.put(verified).await {
            Ok(_) => Ok((Outcome::Stored(len), String::new())),
            Err(e @ StoreError::QuotaExceeded { .. }) => {
                if !local.disk_full.swap(true, Relaxed) {
                    tracing::error!("{e}; no more filling, serving what is held");
                }
                Err((Outcome::StoreFailed, e.to_string()))
            }
            Err(e) => {
                tracing::error!(chunk = c, "cannot store chunk: {e}");
                Err((Outcome::StoreFailed, e.to_string()))
            }
        }
    }
    .await
    .unwrap_or_else(|e| e);
    if outcome == Outcome::Lost {
        local.pool.forget(addr, peer).await;
    }
    let _ = events.send(Event::Finished(p, c, outcome, detail)).await;
}

/// The running fills of a node, by title, for the owner that starts and stops them.
#[derive(Default)]
pub(crate) struct Fills {
    running: HashMap<TitleId, (tokio::task::AbortHandle, mpsc::Sender<Control>)>,
    tasks: JoinSet<()>,
}

impl Fills {
    /// Starts or updates the fill of each plan's title; stops fills of titles not named.
    pub(crate) fn follow<T: Tracker>(&mut self, plans: Vec<FillPlan>, local: &Arc<Local>, tracker: &Arc<T>) {
        // Finished fills leave the set.
        while let Some(done) = self.tasks.try_join_next() {
            let _ = done;
        }
        self.running.retain(|_, (task, _)| !task.is_finished());
        let named: Vec<TitleId> = plans.iter().map(|p| p.title).collect();
        self.running.retain(|title, (task, _)| {
            let keep = named.contains(title);
            if !keep {
                task.abort();
                info!(%title, "no longer in this appliance's fills: stopped");
            }
            keep
        });
        for plan in plans {
            if let Some((_, control)) = self.running.get(&plan.title) {
                let _ = control.try_send(Control::Plan(plan));
                continue;
            }
            let (tx, rx) = mpsc::channel(16);
            let title = plan.title;
            let task = self.tasks.spawn(run(plan, local.clone(), tracker.clone(), rx));
            self.running.insert(title, (task, tx));
        }
    }

    /// Stops the fill of `title`, if one runs.
    pub(crate) fn stop(&mut self, title: &TitleId) {
        if let Some((task, _)) = self.running.remove(title) {
            task.abort();
        }
    }

    /// Tells every running fill whether the plan is stale.
    pub(crate) fn escalate(&self, on: bool) {
        for (_, control) in self.running.values() {
            let _ = control.try_send(Control::Escalate(on));
        }
    }

    /// Fills running now.
    pub(crate) fn len(&self) -> usize {
        self.running.values().filter(|(t, _)| !t.is_finished()).count()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
