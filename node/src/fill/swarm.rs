//! The one fill of a title among parents: the I/O shell of [`fillmesh_swarm::Swarm`], which
//! both an appliance under its tracker ([`run`], started by `member` from the tracker's
//! fills) and `fillmesh fetch` (`super::fetch`, its sources as parents) run.
//!
//! One task per title owns the swarm; around it, a subscription task per parent (the held
//! bitmap, then HAVEs) and a task per chunk request (request, verify, commit), each telling
//! the title's task what happened over one channel. The title's task asks the swarm what to
//! request after every event and tells its [`Owner`] what the fill did: an appliance's owner
//! sends the tracker a summary about once a second (held runs and bytes per class since the
//! last one it answered), reports a lying parent at once, and keeps going when the tracker
//! cannot be reached (summaries wait until it can, and the plan it has stays in force);
//! `fetch`'s owner tells its progress bar and stream.
//!
//! A fill with an owner that can send it new plans ends once its title is whole and told; one
//! without (`fetch`) also ends when no parent it has can help any more: every parent gone, or
//! nothing happening for [`Local::stall`] with no request in flight.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use fillmesh_net::frame::read_frame;
use fillmesh_net::{identity, rpc, Chain, Pool};
use fillmesh_protocol::bitmap::runs;
use fillmesh_protocol::messages::{
    ErrorCode, FailureKind, FillPlan, MeshRequest, MeshResponse, SourceClass, TrackerRequest,
    TrackerResponse, MAX_GAINED,
};
use fillmesh_protocol::{ChunkBitmap, Manifest, NodeId, TitleId};
use fillmesh_swarm::{Config as SwarmConfig, Dropped, Next, Outcome, Swarm};
use libp2p_identity::PeerId;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use super::client::request_chunk;
use super::{request_manifest, ClientError};
use crate::metrics::FillMetrics;
use crate::store::{ChunkWriter, Store, StoreError, VerifiedChunk};
use fillmesh_net::rate::TokenBucket;

/// A subscription silent this long is dead (parents send a keepalive every 5 s).
const SUBSCRIPTION_SILENCE: Duration = Duration::from_secs(20);
/// How often a summary goes to the owner while there is something to say.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);
/// Verified chunks that may wait to be written at once, by default (8 MiB at the default
/// chunk size): enough for the network to go on through a store's sync. A slot is released
/// once its chunk's bytes are written, before the sync that makes it held (chunks written
/// and waiting for their sync hold no memory). Measured on a 1 GiB `fetch --data`: with 32
/// slots each held to the commit, peak resident memory was 84-88 MB.
pub(crate) const WRITE_SLOTS: usize = 8;
/// Keepalives (empty HAVEs) a subscription may send beyond one a second: parents send one
/// every 5 s when idle.
const KEEPALIVE_BURST: u64 = 10;
/// How long a parent that does not know the title yet is asked again: an appliance's parent
/// is about to (it is getting its manifest); a source that still does not after this is not
/// going to.
const UNKNOWN_TITLE_PATIENCE: Duration = Duration::from_secs(30);

/// Why an exchange with the tracker failed: the connection (none could be made, or it failed
/// during the exchange), the tracker's word (a refusal), or its answer (undecodable, or not
/// the answer to what was asked).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TrackerError {
    /// No connection to the tracker could be made.
    #[error("cannot reach the tracker")]
    Unreachable(#[source] fillmesh_net::TransportError),
    /// The connection was lost, or the exchange failed or timed out on it.
    #[error("tracker exchange failed")]
    Exchange(#[source] fillmesh_net::CallError),
    /// The tracker's answer could not be decoded.
    #[error("the tracker's answer is malformed")]
    Malformed(#[source] fillmesh_net::CallError),
    /// The tracker answered `NotRegistered`: it has no registration of this node (it
    /// restarted, or let the registration lapse); the session ends and the next registers.
    #[error("the tracker does not know this node")]
    NotRegistered,
    /// The tracker refused the request.
    #[error("the tracker refused: {code:?}: {message}")]
    Refused {
        /// The tracker's reason, as a code (any but `NotRegistered`).
        code: ErrorCode,
        /// The tracker's explanation.
        message: String,
    },
    /// The tracker answered something else than what was asked (another protocol version).
    #[error("unexpected answer to {asked}: {answer:?}")]
    Unexpected {
        /// The request the answer came to (`hello`, `register`, `fills`, ...).
        asked: &'static str,
        /// The answer as decoded.
        answer: Box<TrackerResponse>,
    },
    /// No tracker to ask.
    #[error("no tracker")]
    NoTracker,
}

/// What the tracker side of an appliance's fill needs: the node's link to the tracker, seen
/// through a trait so that the fill does not depend on the member module that owns it (only
/// on its [`TrackerError`]).
pub(crate) trait Tracker: Send + Sync + 'static {
    /// One exchange with the tracker; an error when it cannot be reached or refused.
    fn request(
        &self,
        request: TrackerRequest,
    ) -> impl Future<Output = Result<TrackerResponse, TrackerError>> + Send;
    /// The tracker's epoch seen in an answer: the owner asks for new fills when it moved.
    fn saw_epoch(&self, epoch: u64);
    /// The fill needs a new plan (every parent it had is gone).
    fn want_plan(&self);
}

/// Who a fill tells what it did. Calls that return futures run in tasks of their own: the
/// fill never waits on them.
pub(crate) trait Owner: Send + Sync + 'static {
    /// The chunks gained (in the order they were stored) and the bytes stored from each
    /// class of parent since the last summary that was answered; an error gives them back
    /// for the next one.
    fn summary(
        &self,
        title: TitleId,
        gained: &[u32],
        bytes: [u64; 4],
    ) -> impl Future<Output = Result<(), TrackerError>> + Send;
    /// The title is whole: what is held, once more as a whole (a whole view sent earlier may
    /// have crossed the last summaries). An error: it is sent again.
    fn whole(&self, title: TitleId) -> impl Future<Output = Result<(), TrackerError>> + Send;
    /// `parent` sent a corrupt chunk (`chunk`) or broke the subscription's rules.
    fn lied(&self, title: TitleId, chunk: u32, parent: &NodeId);
    /// No parent that can help is left.
    fn stranded(&self);
    /// Chunk `chunk` of `bytes` is verified and committed.
    fn stored(&self, chunk: u32, bytes: u64);
}

/// The local pieces a fill uses.
pub(crate) struct Local {
    pub(crate) writer: ChunkWriter,
    pub(crate) pool: Arc<Pool>,
    pub(crate) metrics: Arc<FillMetrics>,
    /// Set when the store refuses a chunk for want of room: no more filling until an
    /// eviction frees some.
    pub(crate) disk_full: Arc<AtomicBool>,
    /// The swarm's tunables (requests in flight over all parents and per parent, attempts).
    pub(crate) swarm: SwarmConfig,
    /// Time allowed for one request, chunk bytes included.
    pub(crate) request_timeout: Duration,
    /// Verified chunks waiting to be written, each holding its bytes in memory.
    pub(crate) write_slots: Arc<Semaphore>,
    /// A fill no one can send new plans to ends after this long with nothing happening and
    /// no request in flight (`None`: it waits for them however long).
    pub(crate) stall: Option<Duration>,
    /// While the plan is stale ([`Control::Escalate`]), every request to the origin waits
    /// its turn in this bucket (shared by all fills): a long tracker outage must not turn
    /// into an origin storm.
    pub(crate) stale_origin: Option<Arc<TokenBucket>>,
    /// Every chunk a fill fetches waits its turn here: the node's fill download cap.
    pub(crate) rates: Arc<crate::classes::Rates>,
}

/// What the owner tells a running fill.
#[derive(Debug)]
pub(crate) enum Control {
    /// A newer plan for the title.
    Plan(FillPlan),
    /// The plan is stale (or no longer): see [`Swarm::escalate`].
    Escalate(bool),
}

/// How a fill ended: the swarm (what each parent did), the parents by the swarm's index, and
/// the store's error if one stopped it.
pub(crate) struct Ended {
    pub(crate) swarm: Swarm,
    pub(crate) parents: Vec<ParentEnd>,
    pub(crate) store_error: Option<StoreError>,
}

/// A parent of an ended fill.
pub(crate) struct ParentEnd {
    pub(crate) node: NodeId,
    /// Why its subscription ended, if it did.
    pub(crate) ended: Option<String>,
}

/// Runs an appliance's fill of `plan.title` until the title is held whole (and the tracker
/// told) or the store stops it. Dropping (aborting) the task stops the fill and every task
/// of it.
pub(crate) async fn run<T: Tracker>(
    plan: FillPlan,
    local: Arc<Local>,
    store: Arc<Store>,
    tracker: Arc<T>,
    control: mpsc::Receiver<Control>,
) {
    let title = plan.title;
    let span = tracing::info_span!("fill", %title);
    async move {
        let Some(manifest) = manifest(&plan, &local, &store, tracker.as_ref()).await else {
            // Nobody gave a manifest that verifies: the owner asks again with the next fills.
            tracker.want_plan();
            return;
        };
        let held = match store.held(&title) {
            Some(h) => h,
            None => match ChunkBitmap::new(manifest.chunk_count()) {
                Ok(h) => h,
                Err(e) => {
                    warn!("{e}");
                    return;
                }
            },
        };
        let seed = store.dir().to_string_lossy().bytes().fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        info!(
            parents = plan.parents.len(),
            origin_chunks = plan.origin.iter().map(|r| r.len()).sum::<usize>(),
            held = held.count(),
            "filling by the tracker's plan"
        );
        let owner = Arc::new(Reporting { tracker, store });
        fill(plan, manifest, &held, seed, local, owner, Some(control)).await;
    }
    .instrument(span)
    .await
}

/// Fills `plan.title` (of `manifest`, `held` already here) from the plan's parents until it
/// is whole and its owner told, the store stops it, or (with no `control` to send it new
/// plans) no parent can help any more. `seed` makes this fill's picks its own.
pub(crate) async fn fill<O: Owner>(
    plan: FillPlan,
    manifest: Arc<Manifest>,
    held: &ChunkBitmap,
    seed: u64,
    local: Arc<Local>,
    owner: Arc<O>,
    control: Option<mpsc::Receiver<Control>>,
) -> Ended {
    // Small chunks (a package's segments): more requests in flight for the same bytes.
    let config = local.swarm.for_chunks(manifest.len() / u64::from(manifest.chunk_count().max(1)));
    let mut swarm = Swarm::new(config, held, seed);
    // A package's start of playback (playlists, inits, first segments) before the rest.
    swarm.set_first(&manifest.startup_chunks());
    let mut fill = Fill {
        title: plan.title,
        manifest,
        swarm,
        depth: config.depth,
        parents: Vec::new(),
        local,
        owner,
        events: mpsc::channel(1024),
        tasks: JoinSet::new(),
        unsent: Vec::new(),
        unsent_bytes: [0; 4],
        summary_pending: false,
        reconciled: false,
        escalated: false,
        store_error: None,
    };
    fill.apply(plan);
    fill.drive(control).await;
    Ended {
        swarm: fill.swarm,
        parents: fill.parents.into_iter().map(|p| ParentEnd { node: p.node, ended: p.ended }).collect(),
        store_error: fill.store_error,
    }
}

/// The title's manifest: the store's, or the first parent's (nearest first) that verifies,
/// added to the store under the name the tracker's catalog gives it.
async fn manifest<T: Tracker>(
    plan: &FillPlan,
    local: &Local,
    store: &Arc<Store>,
    tracker: &T,
) -> Option<Arc<Manifest>> {
    let title = plan.title;
    if let Some(m) = store.manifest(&title) {
        return Some(m);
    }
    for parent in &plan.parents {
        let Some(peer) = identity::peer_of(&parent.node) else { continue };
        let Ok(conn) = local.pool.get(parent.addr, peer).await else { continue };
        let manifest = match request_manifest(&conn, title, local.request_timeout).await {
            Ok(m) => m,
            Err(ClientError::FalseManifest(e)) => {
                warn!(parent = %parent.node, "false manifest: {e}");
                continue;
            }
            Err(e) => {
                debug!(parent = %parent.node, "no manifest: {}", Chain(&e));
                continue;
            }
        };
        let name = match tracker.request(TrackerRequest::Catalog).await {
            Ok(TrackerResponse::Catalog { titles }) => {
                titles.into_iter().find(|t| t.title == title).map(|t| t.name).unwrap_or_default()
            }
            _ => String::new(),
        };
        let (store, m) = (store.clone(), manifest.clone());
        match tokio::task::spawn_blocking(move || store.add_title(title, &name, m)).await {
            Ok(Ok(())) => return Some(Arc::new(manifest)),
            Ok(Err(e)) => warn!("cannot add the title to the store: {}", Chain(&e)),
            Err(e) => warn!("adding the title did not finish: {e}"),
        }
    }
    None
}

/// An appliance's owner: its tracker hears the summaries, the whole bitmap at the end, and
/// every lying parent at once.
struct Reporting<T> {
    tracker: Arc<T>,
    store: Arc<Store>,
}

impl<T: Tracker> Owner for Reporting<T> {
    async fn summary(&self, title: TitleId, chunks: &[u32], bytes: [u64; 4]) -> Result<(), TrackerError> {
        let gained = runs(chunks);
        let request = if gained.len() <= MAX_GAINED {
            TrackerRequest::FillSummary { title, gained, bytes }
        } else {
            // Too scattered for one summary: the whole bitmap, then the bytes alone.
            if let Some(held) = self.store.held(&title) {
                self.tracker.request(TrackerRequest::ReportHeld { title, held, fetched: Vec::new() }).await?;
            }
            TrackerRequest::FillSummary { title, gained: Vec::new(), bytes }
        };
        match self.tracker.request(request).await? {
            TrackerResponse::Epoch(epoch) => {
                self.tracker.saw_epoch(epoch);
                Ok(())
            }
            other => Err(TrackerError::Unexpected { asked: "a summary", answer: Box::new(other) }),
        }
    }

    async fn whole(&self, title: TitleId) -> Result<(), TrackerError> {
        let Some(held) = self.store.held(&title) else { return Ok(()) };
        self.tracker
            .request(TrackerRequest::ReportHeld { title, held, fetched: Vec::new() })
            .await
            .map(|_| ())
    }

    fn lied(&self, title: TitleId, chunk: u32, parent: &NodeId) {
        let request = TrackerRequest::ReportFailure {
            title,
            chunk,
            source: parent.clone(),
            kind: FailureKind::Corrupt,
        };
        let tracker = self.tracker.clone();
        tokio::spawn(
            async move {
                match tracker.request(request).await {
                    // The tracker now leaves the parent out of this appliance's plans and
                    // gives it what only that parent was to bring: a new plan.
                    Ok(_) => tracker.want_plan(),
                    Err(e) => debug!("failure report not delivered: {}", Chain(&e)),
                }
            }
            .in_current_span(),
        );
    }

    fn stranded(&self) {
        self.tracker.want_plan();
    }

    fn stored(&self, _: u32, _: u64) {}
}

/// What a parent's tasks tell the title's task.
#[derive(Debug)]
enum Event {
    Held(usize, ChunkBitmap),
    Have(usize, Vec<u32>),
    /// The subscription ended (busy, refused, broke the protocol, went silent, lost).
    Ended(usize, ClientError),
    /// The parent broke a rule of the subscription that only its task sees.
    Broke(usize, Dropped),
    /// A request's chunk verified: its request slot is free while it is written.
    Received(usize, u32),
    /// How a request ended (and the store's error, if it refused the chunk).
    Finished(usize, u32, Outcome, String, Option<StoreError>),
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
    ended: Option<String>,
}

struct Fill<O> {
    title: TitleId,
    manifest: Arc<Manifest>,
    swarm: Swarm,
    /// Requests in flight per parent ([`SwarmConfig::for_chunks`] of this title's chunks).
    depth: u32,
    /// By the swarm's parent index.
    parents: Vec<ParentState>,
    local: Arc<Local>,
    owner: Arc<O>,
    events: (mpsc::Sender<Event>, mpsc::Receiver<Event>),
    tasks: JoinSet<()>,
    /// Chunks gained and bytes stored that no answered summary has carried yet.
    unsent: Vec<u32>,
    unsent_bytes: [u64; 4],
    summary_pending: bool,
    /// The owner heard the title whole after the last chunk.
    reconciled: bool,
    escalated: bool,
    store_error: Option<StoreError>,
}

impl<O: Owner> Fill<O> {
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
            let p = self.swarm.add_parent(q.class, self.depth);
            let peer = identity::peer_of(&q.node);
            let mut state = ParentState {
                node: q.node,
                addr: q.addr,
                peer,
                class: q.class,
                subscription: None,
                ended: None,
            };
            match (peer, q.class) {
                (None, _) => {
                    self.swarm.remove_parent(p);
                    state.ended = Some("its node id is not a peer id".into());
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
                        self.local.request_timeout,
                        self.events.0.clone(),
                    );
                    state.subscription = Some(self.tasks.spawn(sub.in_current_span()));
                }
            }
            debug_assert_eq!(p, self.parents.len());
            self.parents.push(state);
        }
    }

    /// A parent that can still be asked for something.
    fn any_usable(&self) -> bool {
        (0..self.parents.len()).any(|p| self.swarm.dropped(p).is_none())
    }

    async fn drive(&mut self, mut control: Option<mpsc::Receiver<Control>>) {
        let mut summary = tokio::time::interval(SUMMARY_EVERY);
        summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inflight = 0u32;
        let mut announced = false;
        let mut last_news = tokio::time::Instant::now();
        // Bounded by the fill: each pass handles one event, tick or control message, and the
        // loop ends once every chunk is held and summed up, the store stops it, or (with no
        // one to send new plans) no parent can help.
        loop {
            inflight += self.dispatch();
            let done = self.swarm.is_complete() || self.swarm.is_stopped();
            if done && inflight == 0 {
                if self.swarm.is_complete() && !announced {
                    info!(chunks = self.manifest.chunk_count(), "title complete");
                    announced = true;
                }
                // Done once the owner has heard it all, the last time as the whole title;
                // until then it is retried (the tracker may be away: the title is served
                // meanwhile).
                if self.summarise() && self.reconcile() {
                    break;
                }
            }
            // Nobody can send new parents: with none left, or nothing heard for the stall
            // bound and nothing asked, the fill is over.
            let stranded = !done && control.is_none() && inflight == 0;
            if stranded && !self.any_usable() {
                break;
            }
            let stall = self.local.stall.filter(|_| stranded);
            let stalled = async {
                match stall {
                    Some(bound) => tokio::time::sleep_until(last_news + bound).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(event) = self.events.1.recv() => {
                    if matches!(event, Event::Finished(..)) {
                        inflight = inflight.saturating_sub(1);
                    }
                    if !matches!(event, Event::Summarised(_) | Event::Reconciled(_)) {
                        last_news = tokio::time::Instant::now();
                    }
                    self.handle(event);
                }
                c = async { control.as_mut()?.recv().await }, if control.is_some() => match c {
                    Some(Control::Plan(plan)) => self.apply(plan),
                    Some(Control::Escalate(on)) => {
                        self.escalated = on;
                        self.swarm.escalate(on);
                    }
                    None => control = None,
                },
                _ = summary.tick() => {
                    self.summarise();
                }
                () = stalled => {
                    debug!(?stall, "no parent gave anything: the fill stops");
                    break;
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
                    .then(|| self.local.stale_origin.clone())
                    .flatten();
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

    fn handle(&mut self, event: Event) {
        let dropped = match event {
            Event::Held(p, held) => self.swarm.advertise(p, &held).err().map(|why| (p, why)),
            Event::Have(p, chunks) => {
                chunks.into_iter().find_map(|c| self.swarm.have(p, c).err()).map(|why| (p, why))
            }
            Event::Ended(p, why) => {
                let why = Chain(&why).to_string();
                debug!(parent = %self.parents[p].node, "subscription ended: {why}");
                self.parents[p].ended = Some(why);
                self.swarm.remove_parent(p);
                // No parent but the origin left: a plan of the fleet as it is now.
                let usable = (0..self.parents.len())
                    .any(|q| self.parents[q].class != SourceClass::Origin && self.swarm.dropped(q).is_none());
                if !usable {
                    self.owner.stranded();
                }
                None
            }
            Event::Broke(p, why) => Some((p, self.swarm.reject(p, why))),
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
            Event::Finished(p, c, outcome, detail, store_error) => {
                if let Outcome::Stored(bytes) = outcome {
                    let class = self.parents[p].class as usize;
                    self.unsent_bytes[class] += bytes;
                    debug!(chunk = c, source = %self.parents[p].node, "stored chunk");
                    self.owner.stored(c, bytes);
                } else if !detail.is_empty() {
                    debug!(parent = %self.parents[p].node, chunk = c, "{detail}");
                }
                if outcome == Outcome::StoreFailed {
                    self.local.disk_full.store(true, Relaxed);
                }
                if let Some(e) = store_error {
                    self.store_error.get_or_insert(e);
                }
                let corrupt = outcome == Outcome::Corrupt;
                let dropped = self.swarm.finish(p, c, outcome);
                if corrupt {
                    // At once: the tracker excludes the parent from our plans and counts the
                    // report toward its quorum.
                    self.owner.lied(self.title, c, &self.parents[p].node);
                }
                dropped.map(|why| (p, why))
            }
        };
        if let Some((p, why)) = dropped {
            // A parent that broke the subscription's rules lied: the tracker hears it as it
            // hears of a corrupt chunk (already reported), so that this appliance gets what
            // only that parent was to bring, and a quorum of reporters marks it bad.
            if !matches!(why, Dropped::Corrupt | Dropped::Gone) {
                self.owner.lied(self.title, 0, &self.parents[p].node);
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
        if !self.any_usable() {
            self.owner.stranded();
        }
    }

    /// Tells the owner what is held, once, after the last chunk (or the store's failure), in
    /// a task of its own; true once it has heard it.
    fn reconcile(&mut self) -> bool {
        if self.reconciled {
            return true;
        }
        if self.summary_pending {
            return false;
        }
        self.summary_pending = true;
        let (title, owner, events) = (self.title, self.owner.clone(), self.events.0.clone());
        tokio::spawn(
            async move {
                let sent = owner.whole(title).await;
                if let Err(e) = &sent {
                    debug!("whole bitmap not delivered: {}", Chain(e));
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
        let (title, owner, events) = (self.title, self.owner.clone(), self.events.0.clone());
        tokio::spawn(
            async move {
                let outcome = match owner.summary(title, &chunks, bytes).await {
                    Ok(()) => None,
                    Err(e) => {
                        // Kept for the next one: the tracker may be away for a while.
                        debug!("summary not delivered: {}", Chain(&e));
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
    timeout: Duration,
    events: mpsc::Sender<Event>,
) {
    let why = async {
        // A parent that does not know the title yet (it has not had its manifest) is asked
        // again, less and less often, for a while: it is about to.
        let patience = tokio::time::Instant::now() + UNKNOWN_TITLE_PATIENCE;
        let mut wait = Duration::from_millis(100);
        // Bounded by the patience: each pass waits at least 100 ms.
        let (first, _send, mut recv) = loop {
            let conn = pool.get(addr, peer).await.map_err(ClientError::Unreachable)?;
            let sub =
                rpc::subscribe::<_, MeshResponse>(&conn, &MeshRequest::Subscribe { title }, timeout).await?;
            match sub.0 {
                MeshResponse::Error(ref e) if e.code == ErrorCode::UnknownTitle => {
                    if tokio::time::Instant::now() + wait > patience {
                        return Err(ClientError::UnknownTitle(e.message.clone()));
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                _ => break sub,
            }
        };
        let mut next = Some(first);
        let since = tokio::time::Instant::now();
        let mut keepalives = 0u64;
        // Bounded by the subscription: each pass reads one message within the silence bound.
        loop {
            let message = match next.take() {
                Some(m) => m,
                None => read_frame::<MeshResponse>(&mut recv, SUBSCRIPTION_SILENCE)
                    .await
                    .map_err(|e| ClientError::from(rpc::CallError::from(e)))?,
            };
            let event = match message {
                MeshResponse::Held { title: t, held } if t == title => Event::Held(p, held),
                MeshResponse::Have { title: t, chunks } if t == title => {
                    if chunks.is_empty() {
                        // A keepalive, every 5 s from an honest parent: one that sends them
                        // much faster only makes this task spin, and is let go.
                        keepalives += 1;
                        let secs = since.elapsed().as_secs();
                        if keepalives > KEEPALIVE_BURST + secs {
                            let _ = events
                                .send(Event::Broke(p, Dropped::Keepalives { sent: keepalives, secs }))
                                .await;
                            return Ok(());
                        }
                        continue;
                    }
                    Event::Have(p, chunks)
                }
                MeshResponse::Error(e) if e.code == ErrorCode::Busy => return Err(ClientError::Busy),
                MeshResponse::Error(e) => {
                    return Err(ClientError::Refused { code: e.code, message: e.message })
                }
                _ => return Err(ClientError::Unexpected { asked: "a subscription", got: "something else" }),
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
    let timeout = local.request_timeout;
    let (outcome, detail, store_error) = async {
        let expected =
            manifest.chunk_len(c).ok_or((Outcome::Refused, format!("chunk {c} is out of range"), None))?;
        if let Some(bucket) = &pace {
            bucket.take(expected).await;
        }
        local.rates.fill_download(expected).await;
        let failed = |e: ClientError| (outcome(&e), Chain(&e).to_string(), None);
        let conn = local.pool.get(addr, peer).await.map_err(|e| failed(ClientError::Unreachable(e)))?;
        let bytes = tokio::time::timeout(timeout, request_chunk(&conn, title, c, expected, timeout))
            .await
            .map_err(|_| failed(ClientError::TimedOut(timeout)))?
            .map_err(failed)?;
        let len = bytes.len() as u64;
        // Hashed on the blocking pool, not on the runtime's workers: they receive (and, in
        // `fillmesh fetch`, there is one), so a 1 MiB hash there held up quinn's packets.
        // Measured on 1 GiB `fetch --data` from a warm origin, 8 alternated runs each: 892
        // against 850 MB/s, the same CPU seconds.
        let (m, bytes) = (manifest.clone(), bytes.freeze());
        let checked = tokio::task::spawn_blocking(move || VerifiedChunk::verify(title, &m, c, bytes))
            .await
            .map_err(|e| (Outcome::StoreFailed, format!("verifying task: {e}"), None))?;
        let verified = match checked {
            Ok(v) => v,
            Err(e) => {
                local.metrics.chunk_rejected();
                warn!(%peer, chunk = c, "corrupt chunk: {e}");
                return Err((Outcome::Corrupt, e.to_string(), None));
            }
        };
        local.metrics.chunk_verified(len);
        // Held until the chunk's bytes are written (the writer releases it then, before the
        // commit's sync): verified chunks waiting for the disk are bounded, and while they are
        // at the bound this request keeps its slot (the network waits for the disk, not the
        // other way round).
        let Ok(slot) = local.write_slots.clone().acquire_owned().await else {
            return Err((Outcome::StoreFailed, "the fill is over".into(), None));
        };
        let _ = events.send(Event::Received(p, c)).await;
        match local.writer.put_with(verified, Some(slot)).await {
            Ok(_) => Ok((Outcome::Stored(len), String::new(), None)),
            Err(e @ StoreError::QuotaExceeded { .. }) => {
                if !local.disk_full.swap(true, Relaxed) {
                    tracing::error!("{e}; no more filling, serving what is held");
                }
                Err((Outcome::StoreFailed, e.to_string(), Some(e)))
            }
            Err(e) => {
                tracing::error!(chunk = c, "cannot store chunk: {}", Chain(&e));
                Err((Outcome::StoreFailed, Chain(&e).to_string(), Some(e)))
            }
        }
    }
    .await
    .unwrap_or_else(|e| e);
    if outcome == Outcome::Lost {
        local.pool.forget(addr, peer).await;
    }
    let _ = events.send(Event::Finished(p, c, outcome, detail, store_error)).await;
}

/// What a failed chunk request says of its source, for the swarm.
fn outcome(e: &ClientError) -> Outcome {
    match e {
        ClientError::Unreachable(_) | ClientError::Lost(_) | ClientError::LostInBody(_) => Outcome::Lost,
        ClientError::TimedOut(_) => Outcome::Timeout,
        ClientError::NotHeld(_) => Outcome::NotHeld,
        // It could not or would not answer: busy, an error answer, a stream reset.
        ClientError::Failed(_)
        | ClientError::Body(_)
        | ClientError::Refused { .. }
        | ClientError::Busy
        | ClientError::UnknownTitle(_)
        | ClientError::Version(_) => Outcome::Refused,
        // It broke the protocol or sent what was not asked for.
        ClientError::Malformed(_)
        | ClientError::Unexpected { .. }
        | ClientError::WrongChunk { .. }
        | ClientError::Short { .. }
        | ClientError::FalseManifest(_) => Outcome::Corrupt,
    }
}

/// The running fills of a node, by title, for the owner that starts and stops them. Each
/// fill belongs to the tracker whose plan started it (an index among the node's trackers):
/// with several trackers each title's fills come from its owner, and a plan for a title whose
/// fill follows another tracker takes it over (ownership moved) without stopping it.
#[derive(Default)]
pub(crate) struct Fills {
    running: HashMap<TitleId, Running>,
    tasks: JoinSet<()>,
}

struct Running {
    task: tokio::task::AbortHandle,
    control: mpsc::Sender<Control>,
    /// The tracker (by index) whose plan it follows.
    by: usize,
}

impl Fills {
    /// Starts or updates the fill of each plan's title under tracker `by`; stops the fills of
    /// `by` whose titles are not named, except those `moving` to another tracker (whose plan
    /// takes them over: stopped here, they would lose their requests in flight).
    pub(crate) fn follow<T: Tracker>(
        &mut self,
        by: usize,
        plans: Vec<FillPlan>,
        local: &Arc<Local>,
        store: &Arc<Store>,
        tracker: &Arc<T>,
        moving: impl Fn(&TitleId) -> bool,
    ) {
        // Finished fills leave the set.
        while let Some(done) = self.tasks.try_join_next() {
            let _ = done;
        }
        self.running.retain(|_, r| !r.task.is_finished());
        let named: Vec<TitleId> = plans.iter().map(|p| p.title).collect();
        self.running.retain(|title, r| {
            let keep = r.by != by || named.contains(title) || moving(title);
            if !keep {
                r.task.abort();
                info!(%title, "no longer in this appliance's fills: stopped");
            }
            keep
        });
        for plan in plans {
            if let Some(r) = self.running.get_mut(&plan.title) {
                if r.by != by {
                    // The fill goes on (its requests in flight, its parents' subscriptions)
                    // under the new owner's plan; the tracker handle routes by title.
                    info!(title = %plan.title, "another tracker coordinates this title now: its plan takes the fill over");
                    r.by = by;
                }
                let _ = r.control.try_send(Control::Plan(plan));
                continue;
            }
            let (tx, rx) = mpsc::channel(16);
            let title = plan.title;
            let task = self.tasks.spawn(run(plan, local.clone(), store.clone(), tracker.clone(), rx));
            self.running.insert(title, Running { task, control: tx, by });
        }
    }

    /// Stops the fill of `title`, if one runs.
    pub(crate) fn stop(&mut self, title: &TitleId) {
        if let Some(r) = self.running.remove(title) {
            r.task.abort();
        }
    }

    /// Tells every running fill of tracker `by` whether its plan is stale.
    pub(crate) fn escalate(&self, by: usize, on: bool) {
        for r in self.running.values().filter(|r| r.by == by) {
            let _ = r.control.try_send(Control::Escalate(on));
        }
    }

    /// Fills of tracker `by` running now.
    pub(crate) fn len(&self, by: usize) -> usize {
        self.running.values().filter(|r| r.by == by && !r.task.is_finished()).count()
    }

    pub(crate) fn is_empty(&self, by: usize) -> bool {
        self.len(by) == 0
    }
}
