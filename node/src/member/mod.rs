//! An appliance's (or the origin's) life under a tracker: register, heartbeat, learn the
//! members the tracker vouches for, and fill by its plans, reporting what it holds.
//!
//! Every step tolerates the tracker going away: the link reconnects with backoff, registers
//! again and re-reports everything held, which is how a restarted tracker rebuilds its held
//! maps.
//!
//! Under several trackers (one fleet sharing etcd) the node keeps one session per tracker:
//! it registers and heartbeats with each, and each tracker plans the titles it owns
//! (rendezvous hashing over the live trackers, `fillmesh_protocol::ownership`). When the live
//! set moves (a tracker's lease expired, or it came back) the node computes the owners itself
//! and sends each new owner the whole held map of the titles it now owns, so that it rebuilds
//! their holdings; the new owner's plans take the running fills over.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use fillmesh_protocol::messages::{
    accepts_version, ErrorCode, Fetched, Heartbeat, Hello, Registration, Role, TrackerRequest,
    TrackerResponse,
};
use fillmesh_protocol::ownership;
use fillmesh_protocol::{ChunkBitmap, IpPrefix, NodeId, TitleId};
use fillmesh_swarm::Config as SwarmConfig;
use libp2p_identity::PeerId;
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn, Instrument};

use fillmesh_net::sync::LockExt;
use fillmesh_net::{identity, rpc, Chain, MeshEndpoint, Pool};

use crate::classes::Rates;
use crate::fill::swarm::{self, TrackerError};
use crate::metrics::FillMetrics;
use crate::serve::{Gate, Server};
use crate::store::{ChunkWriter, Store};
use crate::window::FillWindows;
use fillmesh_net::rate::TokenBucket;

/// While fill summaries stand in for heartbeats, a heartbeat still goes every this many
/// intervals, with its figures.
const HEARTBEAT_FIGURES_EVERY: u32 = 10;

/// Where the tracker is and who this node says it is.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// Every tracker of the fleet: mesh address and PeerId (one for a lone tracker).
    pub trackers: Vec<(SocketAddr, PeerId)>,
    /// Appliance or origin, as registered: only an appliance asks for fills, only the origin
    /// publishes the titles it holds whole.
    pub role: Role,
    /// The node's bound mesh address (not the one asked for: port 0 is resolved), registered
    /// so that parents and players can be sent to it.
    pub mesh_addr: SocketAddr,
    /// The site the node stands in, registered for steering and planning.
    pub site: String,
    /// The region of its site, registered for steering and planning.
    pub region: String,
    /// The client prefixes this node serves, registered for steering.
    pub prefixes: Vec<IpPrefix>,
    /// The upload the node registers, in bytes per second: its upload cap, or 1 GB/s
    /// when it has none.
    pub upload_bps: u64,
    /// The disk the node registers, in bytes: its store's quota.
    pub disk_bytes: u64,
    /// Chunk requests in flight at once over all parents of a fill.
    pub parallel: usize,
    /// The tracker away this long: fills may ask the origin for chunks no parent offers.
    pub plan_stale_after: Duration,
    /// Bytes per second a fill asks of the origin meanwhile.
    pub stale_origin_rate: u64,
    /// What players pin (SHA-256 of the SPKI of the certificate served on `h3`).
    pub cert_sha256: Option<[u8; 32]>,
    /// Player connections open now, reported in every heartbeat (steering ranks by it).
    pub player_sessions: prometheus_client::metrics::gauge::Gauge,
    /// The player servers' playback tokens: told the keys and whether tokens are required
    /// by each tracker.
    pub gate: Arc<Gate>,
    /// The node's rate buckets: fills fetch within the fill download cap.
    pub rates: Arc<Rates>,
    /// The fill window (local time), sent to each tracker after registering and again
    /// whenever it changes (a reload, or the host's offset from UTC).
    pub windows: tokio::sync::watch::Receiver<FillWindows>,
    /// Turned true at the first registration with any tracker (the node's readiness for
    /// its service manager, `fillmesh_net::notify`).
    pub registered: tokio::sync::watch::Sender<bool>,
    /// Turns true when the node starts draining: each tracker is told at once (an unhealthy
    /// heartbeat: steering stops naming the node), and no more fills are asked for.
    pub draining: tokio::sync::watch::Receiver<bool>,
    /// Counts the trackers told of the drain, for the node to wait on (bounded).
    pub told_draining: Arc<tokio::sync::watch::Sender<usize>>,
}

/// The tracker, reached through the node's connection pool (one connection, dialled on
/// demand, dropped after a failed exchange).
struct TrackerLink {
    pool: Pool,
    addr: SocketAddr,
    peer: PeerId,
    /// Its index among the node's trackers (what its fills are tagged with).
    by: usize,
    /// The epoch of the fills this node follows (`u64::MAX` before the first).
    epoch: AtomicU64,
    /// Woken when the fills should be asked for again.
    want_fills: tokio::sync::Notify,
    /// When a fill summary was last answered: the tracker takes it as a heartbeat.
    summary_answered: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// The live trackers it last reported (empty: no fleet, it owns every title).
    live: std::sync::Mutex<Vec<NodeId>>,
}

impl TrackerLink {
    /// Whether this tracker owns `title` among `live` (all titles without a fleet).
    fn owns(&self, title: &TitleId, live: &[NodeId]) -> bool {
        live.is_empty()
            || ownership::owner(title, live)
                .is_some_and(|o| identity::node_id(&self.peer).is_ok_and(|me| *o == me))
    }

    /// The tracker's epoch, seen in an answer: when it is not that of our fills, they are
    /// asked for again.
    fn saw(&self, epoch: u64) {
        if self.epoch.load(Relaxed) != epoch {
            self.want_fills.notify_one();
        }
    }

    async fn request(&self, request: &TrackerRequest) -> Result<TrackerResponse, TrackerError> {
        let conn = self.pool.get(self.addr, self.peer).await.map_err(TrackerError::Unreachable)?;
        match rpc::call::<_, TrackerResponse>(&conn, request, Duration::from_secs(10)).await {
            Ok(TrackerResponse::Error(e)) if e.code == ErrorCode::NotRegistered => {
                Err(TrackerError::NotRegistered)
            }
            Ok(TrackerResponse::Error(e)) => Err(TrackerError::Refused { code: e.code, message: e.message }),
            Ok(response) => Ok(response),
            Err(e) => {
                self.pool.forget(self.addr, self.peer).await;
                Err(if e.is_malformed() { TrackerError::Malformed(e) } else { TrackerError::Exchange(e) })
            }
        }
    }
}

/// A title the origin ingested, to be published to the tracker; `done` is answered once the
/// tracker has it (and dropped if the session ends first), so that `fillmesh seed` returns
/// only when players and appliances can find the title.
#[derive(Debug)]
pub struct ToPublish {
    /// The title ingested, held whole in the store.
    pub title: TitleId,
    /// Published urgent (`fillmesh seed --urgent`): the tracker plans it whatever the fill
    /// windows.
    pub urgent: bool,
    /// Answered once a tracker has taken the title and its held map; the upload waits on it
    /// to answer `201`.
    pub done: tokio::sync::oneshot::Sender<()>,
}

/// Runs until the process stops: (re)connects, registers, and works under the tracker.
/// `published` carries titles the origin ingested since it started. The fills it starts live
/// across sessions: when the tracker cannot be reached they go on with the plans they have,
/// and once it has been away longer than [`MemberConfig::plan_stale_after`] they may ask the
/// origin for what no parent offers, paced (see `fill::swarm`).
pub async fn run(
    config: MemberConfig,
    endpoint: MeshEndpoint,
    store: Arc<Store>,
    server: Server,
    metrics: Arc<FillMetrics>,
    published: mpsc::UnboundedReceiver<ToPublish>,
) {
    // Why a linger: chunks commit in groups (one index flush per group); a summary a second
    // reports them, so nothing waits on a single chunk's commit.
    let writer = match ChunkWriter::spawn(store.clone(), Duration::from_millis(2)) {
        Ok(w) => w,
        Err(e) => {
            warn!("cannot start the chunk writer: {}", Chain(&e));
            return;
        }
    };
    let local = Arc::new(swarm::Local {
        writer,
        pool: Arc::new(Pool::new(endpoint.clone(), Duration::from_secs(10))),
        metrics,
        disk_full: Arc::new(AtomicBool::new(false)),
        swarm: SwarmConfig { inflight: (config.parallel as u32).max(1), ..SwarmConfig::default() },
        request_timeout: Duration::from_secs(30),
        write_slots: Arc::new(Semaphore::new(swarm::WRITE_SLOTS)),
        // An appliance's fill can always be sent new plans: it waits for them.
        stall: None,
        stale_origin: Some(Arc::new(TokenBucket::new(config.stale_origin_rate.max(1)))),
        rates: config.rates.clone(),
    });
    let links: Vec<Arc<TrackerLink>> = config
        .trackers
        .iter()
        .enumerate()
        .map(|(by, &(addr, peer))| {
            Arc::new(TrackerLink {
                pool: Pool::new(endpoint.clone(), Duration::from_secs(10)),
                addr,
                peer,
                by,
                epoch: AtomicU64::new(u64::MAX),
                want_fills: tokio::sync::Notify::new(),
                summary_answered: std::sync::Mutex::new(None),
                live: std::sync::Mutex::new(Vec::new()),
            })
        })
        .collect();
    let state = Arc::new(Member {
        local,
        store,
        fills: std::sync::Mutex::new(swarm::Fills::default()),
        server,
        published: tokio::sync::Mutex::new(published),
        route: Arc::new(Route { links: links.clone(), owners: std::sync::Mutex::new(HashMap::new()) }),
    });
    let config = Arc::new(config);
    let mut sessions = tokio::task::JoinSet::new();
    for link in links {
        let span = tracing::info_span!("tracker", addr = %link.addr);
        sessions.spawn(keep(config.clone(), link, state.clone()).instrument(span));
    }
    while sessions.join_next().await.is_some() {}
}

/// One tracker's sessions, one after another, until the process stops.
async fn keep(config: Arc<MemberConfig>, link: Arc<TrackerLink>, state: Arc<Member>) {
    let mut backoff = Duration::from_millis(250);
    let mut last_contact = tokio::time::Instant::now();
    let mut escalated = false;
    // Bounded by the process's life; each pass waits at least `backoff`.
    loop {
        let error = match session(&config, &link, &state, &mut last_contact, &mut escalated).await {
            Ok(()) => return,
            Err(e) => e,
        };
        let away = last_contact.elapsed();
        let idle = state.fills().is_empty(link.by);
        if away >= config.plan_stale_after && !escalated && !idle {
            warn!(away_secs = away.as_secs(), "the tracker has been away too long: fills may now ask the origin for what no parent offers, at {} B/s", config.stale_origin_rate);
            state.fills().escalate(link.by, true);
            escalated = true;
        }
        warn!("tracker session ended: {}; retrying in {backoff:?}", Chain(&error));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// What outlives a session: the fills (shared by the sessions with every tracker) and what
/// they use.
struct Member {
    local: Arc<swarm::Local>,
    store: Arc<Store>,
    fills: std::sync::Mutex<swarm::Fills>,
    server: Server,
    /// Titles the origin ingested: whichever session is up publishes each.
    published: tokio::sync::Mutex<mpsc::UnboundedReceiver<ToPublish>>,
    /// Where each fill's summaries and reports go.
    route: Arc<Route>,
}

impl Member {
    fn fills(&self) -> std::sync::MutexGuard<'_, swarm::Fills> {
        self.fills.locked()
    }
}

async fn session(
    config: &MemberConfig,
    link: &Arc<TrackerLink>,
    state: &Arc<Member>,
    last_contact: &mut tokio::time::Instant,
    escalated: &mut bool,
) -> Result<(), TrackerError> {
    let store = state.store.clone();
    let server = state.server.clone();
    // Versions first: a tracker of another protocol version is said so plainly (and the
    // session is retried), not met later as undecodable answers.
    match link.request(&TrackerRequest::Hello(Hello::ours(config.role))).await? {
        TrackerResponse::Hello(hello) if accepts_version(hello.version) => {
            debug!(agent = %hello.agent, "the tracker speaks our version");
        }
        other => return Err(TrackerError::Unexpected { asked: "hello", answer: Box::new(other) }),
    }
    let registration = Registration {
        role: config.role,
        mesh_addr: config.mesh_addr,
        site: config.site.clone(),
        region: config.region.clone(),
        prefixes: config.prefixes.clone(),
        upload_bps: config.upload_bps,
        disk_bytes: config.disk_bytes,
        cert_sha256: config.cert_sha256,
    };
    let interval = match link.request(&TrackerRequest::Register(registration)).await? {
        TrackerResponse::Registered { heartbeat_interval_ms } => {
            Duration::from_millis(u64::from(heartbeat_interval_ms).clamp(100, 60_000))
        }
        other => return Err(TrackerError::Unexpected { asked: "register", answer: Box::new(other) }),
    };
    info!(tracker = %link.addr, "registered with the tracker");
    config.registered.send_replace(true);
    *last_contact = tokio::time::Instant::now();
    let mut windows = config.windows.clone();
    let window = windows.borrow_and_update().clone();
    let mut window_sent = send_window(link, &window).await?;
    if *escalated {
        info!("the tracker is back: fills follow its plans again");
        state.fills().escalate(link.by, false);
        *escalated = false;
    }
    // Whatever the tracker knew of us may be gone: tell it everything (damage found so far
    // included).
    store.take_damaged();
    for info in store.titles() {
        if config.role == Role::Origin && info.held.is_full() {
            publish(link, &store, info.title).await?;
        }
        report(link, info.title, &store, Vec::new()).await?;
    }
    refresh_members(link, &server, &config.gate).await?;
    // Every title was just reported: those this tracker owns now are known there.
    let mut owned = owned_titles(link, &store).await?;
    if config.role == Role::Appliance {
        fills(link, state).await?;
    }

    let mut heartbeat = tokio::time::interval(interval);
    // Fills are asked for again now and then even if no epoch moved: a fill that ended
    // without its title whole (a store error, no parent could help) starts again.
    let mut refill = tokio::time::interval(Duration::from_secs(30));
    refill.tick().await;
    let mut members_epoch = None;
    let mut last_heartbeat = tokio::time::Instant::now();
    let mut draining = config.draining.clone();
    let mut told = false;
    loop {
        if *draining.borrow_and_update() && !told {
            // Said once per session (a session that starts while draining says it first).
            let hb = Heartbeat {
                healthy: false,
                uploads_in_flight: server.in_flight(),
                upload_bps_used: 0,
                player_sessions: u32::try_from(config.player_sessions.get()).unwrap_or(0),
                disk_used: store.titles().iter().map(|t| t.held_bytes()).sum(),
            };
            link.request(&TrackerRequest::Heartbeat(hb)).await?;
            info!("told the tracker this node is draining");
            config.told_draining.send_modify(|n| *n += 1);
            told = true;
        }
        let asking = config.role == Role::Appliance && !told;
        tokio::select! {
            // The drain starting: told at the top of the loop.
            Ok(()) = draining.changed(), if !told => continue,
            _ = heartbeat.tick() => {
                // The host's offset from UTC moved (daylight saving): the window in UTC did.
                let window = windows.borrow().clone();
                if window_sent.as_ref().is_some_and(|sent| *sent != window.utc_now()) {
                    window_sent = send_window(link, &window).await?;
                }
                // A summary answered within the interval told the tracker this node is alive;
                // the heartbeat's figures (uploads, players, disk) still go every
                // HEARTBEAT_FIGURES_EVERY intervals. Why: a filling appliance sends a summary
                // a second, and a heartbeat besides doubled what the tracker handles (the
                // load bench: 0.31 CPU s/s at 2,000 appliances with both, see README).
                let summarised = link
                    .summary_answered
                    .locked()
                    .is_some_and(|at| at.elapsed() < interval);
                if summarised && last_heartbeat.elapsed() < interval * HEARTBEAT_FIGURES_EVERY {
                    *last_contact = tokio::time::Instant::now();
                    continue;
                }
                last_heartbeat = tokio::time::Instant::now();
                let hb = Heartbeat {
                    healthy: !told,
                    uploads_in_flight: server.in_flight(),
                    upload_bps_used: 0,
                    player_sessions: u32::try_from(config.player_sessions.get()).unwrap_or(0),
                    disk_used: store.titles().iter().map(|t| t.held_bytes()).sum(),
                };
                if let TrackerResponse::Epoch(epoch) = link.request(&TrackerRequest::Heartbeat(hb)).await? {
                    link.saw(epoch);
                    // Membership moves the epoch (a node registers, goes, turns bad): only
                    // then is the list asked for again (here, and when a fill's summary sees
                    // it move). Why: the list names every member (106 KB at 2,000), and asked
                    // after every heartbeat it was more than the tracker could send (`cargo
                    // bench -p fillmesh-tests --bench load`).
                    if members_epoch != Some(epoch) {
                        refresh_members(link, &server, &config.gate).await?;
                        rehome(link, &store, &mut owned).await?;
                        members_epoch = Some(epoch);
                    }
                }
                *last_contact = tokio::time::Instant::now();
            }
            _ = refill.tick(), if asking => fills(link, state).await?,
            // A reload changed the fill window.
            Ok(()) = windows.changed() => {
                let window = windows.borrow_and_update().clone();
                info!(window = %window, "fill window changed");
                window_sent = send_window(link, &window).await?;
            }
            // The epoch moved (seen in a summary's answer: the heartbeat may be 10 s away) or
            // a fill wants a plan.
            () = link.want_fills.notified(), if asking => {
                refresh_members(link, &server, &config.gate).await?;
                rehome(link, &store, &mut owned).await?;
                fills(link, state).await?;
            }
            Some(ToPublish { title, urgent, done }) = async { state.published.lock().await.recv().await } => {
                publish(link, &store, title).await?;
                if urgent {
                    mark_urgent(link, title).await?;
                }
                report(link, title, &store, Vec::new()).await?;
                let _ = done.send(());
            }
            // A chunk found damaged on disk was dropped: the tracker hears that its title is
            // no longer whole here (steering stops sending players for it), and the title is
            // in this appliance's next fills again.
            () = store.damage_found() => {
                for title in store.take_damaged() {
                    report(link, title, &store, Vec::new()).await?;
                }
                if config.role == Role::Appliance {
                    fills(link, state).await?;
                }
            }
        }
    }
}

/// Asks for this appliance's fills and follows them: evicts what the tracker says to, starts
/// or updates a fill per plan, stops the fills no longer named. With the disk full, only
/// evictions are followed (a full appliance keeps serving what it holds).
async fn fills(link: &Arc<TrackerLink>, state: &Member) -> Result<(), TrackerError> {
    let (plans, evict, epoch) = match link.request(&TrackerRequest::Fills).await? {
        TrackerResponse::Fills { plans, evict, epoch } => (plans, evict, epoch),
        other => return Err(TrackerError::Unexpected { asked: "fills", answer: Box::new(other) }),
    };
    link.epoch.store(epoch, Relaxed);
    for title in evict {
        state.fills().stop(&title);
        evict_title(link, &state.store, &state.local.metrics, &state.local.disk_full, title).await?;
    }
    if state.local.disk_full.load(Relaxed) {
        return Ok(());
    }
    for plan in &plans {
        state.route.follow(plan.title, link.by);
    }
    // A title this tracker no longer names because it no longer owns it: its fill goes on
    // until the new owner's plan takes it over.
    let live = link.live.locked().clone();
    let moving = |title: &TitleId| !link.owns(title, &live);
    state.fills().follow(link.by, plans, &state.local, &state.store, &state.route, moving);
    Ok(())
}

/// The titles held here that `link`'s tracker owns, by the live trackers it reports: all of
/// them from a tracker without a fleet (which answers an empty list, or, older, refuses the
/// question).
async fn owned_titles(link: &TrackerLink, store: &Store) -> Result<BTreeSet<TitleId>, TrackerError> {
    let live = match link.request(&TrackerRequest::Trackers).await {
        Ok(TrackerResponse::Trackers { live }) => live,
        Ok(other) => return Err(TrackerError::Unexpected { asked: "trackers", answer: Box::new(other) }),
        Err(TrackerError::Refused { .. }) => Vec::new(),
        Err(e) => return Err(e),
    };
    let owned = store.titles().into_iter().map(|info| info.title).filter(|t| link.owns(t, &live)).collect();
    *link.live.locked() = live;
    Ok(owned)
}

/// The live trackers may have changed: the titles `link`'s tracker owns now and did not
/// before get their whole held map sent there, so that the new owner knows every holder
/// before it plans (the old owner heard the fill summaries).
async fn rehome(
    link: &TrackerLink,
    store: &Store,
    owned: &mut BTreeSet<TitleId>,
) -> Result<(), TrackerError> {
    let now = owned_titles(link, store).await?;
    for &title in now.difference(owned) {
        debug!(%title, "this tracker owns the title now: its whole held map goes there");
        report(link, title, store, Vec::new()).await?;
    }
    *owned = now;
    Ok(())
}

/// What the fills talk to: each title's summaries and reports go to the tracker whose plan
/// the fill follows now (its owner), so a new owner's plan takes a fill over without stopping
/// it: no request in flight is lost, nothing is fetched twice.
struct Route {
    links: Vec<Arc<TrackerLink>>,
    /// The tracker (by index) each title's fill follows.
    owners: std::sync::Mutex<HashMap<TitleId, usize>>,
}

impl Route {
    /// The link of the tracker `title`'s fill follows.
    fn link(&self, title: TitleId) -> Option<Arc<TrackerLink>> {
        let by = self.owners.locked().get(&title).copied();
        self.links.get(by.unwrap_or(0)).cloned()
    }

    /// Title `title`'s fill follows tracker `by` from now on.
    fn follow(&self, title: TitleId, by: usize) {
        self.owners.locked().insert(title, by);
    }
}

impl swarm::Tracker for Route {
    async fn request(&self, request: TrackerRequest) -> Result<TrackerResponse, TrackerError> {
        let title = match &request {
            TrackerRequest::FillSummary { title, .. }
            | TrackerRequest::ReportHeld { title, .. }
            | TrackerRequest::ReportFailure { title, .. } => Some(*title),
            _ => None,
        };
        let Some(title) = title else {
            // About no title (the catalog, for a name): any tracker answers, the first that
            // does.
            let mut failed = TrackerError::NoTracker;
            for link in &self.links {
                match link.request(&request).await {
                    Ok(response) => return Ok(response),
                    Err(e) => failed = e,
                }
            }
            return Err(failed);
        };
        let link = self.link(title).ok_or(TrackerError::NoTracker)?;
        if let TrackerRequest::ReportHeld { held, .. } = &request {
            if held.is_full() {
                // The title is whole here: every tracker hears it (once per title), so that
                // any of them steers to this appliance and counts it in its status.
                for other in self.links.iter().filter(|l| l.by != link.by) {
                    let (other, request) = (other.clone(), request.clone());
                    tokio::spawn(async move {
                        if let Err(e) = other.request(&request).await {
                            debug!(tracker = %other.addr, "a whole title not told: {}", Chain(&e));
                        }
                    });
                }
            }
        }
        let response = link.request(&request).await?;
        if let (TrackerRequest::FillSummary { .. }, TrackerResponse::Epoch(epoch)) = (&request, &response) {
            // The tracker took the summary as a heartbeat; its epoch may ask for new fills.
            *link.summary_answered.locked() = Some(tokio::time::Instant::now());
            link.saw(*epoch);
        }
        Ok(response)
    }
    /// Seen in [`Route::request`], by the link that answered.
    fn saw_epoch(&self, _: u64) {}
    fn want_plan(&self) {
        for link in &self.links {
            link.want_fills.notify_one();
        }
    }
}

/// Sends the fill window (in UTC by the host's offset now) to the tracker; what was sent, or
/// `None` from a tracker of an earlier build, which refuses the request (it plans fills
/// whenever, and is not asked again this session).
async fn send_window(
    link: &TrackerLink,
    windows: &FillWindows,
) -> Result<Option<Vec<fillmesh_protocol::messages::DayRange>>, TrackerError> {
    let ranges = windows.utc_now();
    match link.request(&TrackerRequest::FillWindow { ranges: ranges.clone() }).await {
        Ok(_) => {
            debug!(window = %windows, "fill window sent");
            Ok(Some(ranges))
        }
        Err(TrackerError::Refused { code: ErrorCode::BadRequest, message }) if windows.is_always() => {
            debug!("the tracker takes no fill window ({message}); none is set here");
            Ok(None)
        }
        Err(TrackerError::Refused { code: ErrorCode::BadRequest, message }) => {
            warn!(window = %windows, "the tracker refused the fill window ({message}): an earlier build plans fills at any hour");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Marks a published title urgent at the tracker; a tracker of an earlier build refuses the
/// request, which is said and otherwise ignored (the title is published, not urgent).
async fn mark_urgent(link: &TrackerLink, title: TitleId) -> Result<(), TrackerError> {
    match link.request(&TrackerRequest::Urgent { title }).await {
        Ok(_) => {
            info!(%title, "marked urgent at the tracker");
            Ok(())
        }
        Err(TrackerError::Refused { code: ErrorCode::BadRequest, message }) => {
            warn!(%title, "the tracker did not take the urgent mark ({message}): published, not urgent");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn publish(link: &TrackerLink, store: &Store, title: TitleId) -> Result<(), TrackerError> {
    let Some(info) = store.info(&title) else { return Ok(()) };
    let request =
        TrackerRequest::Publish { title, name: info.name.clone(), manifest: (*info.manifest).clone() };
    link.request(&request).await?;
    info!(%title, name = %info.name, "published to the tracker");
    Ok(())
}

async fn report(
    link: &TrackerLink,
    title: TitleId,
    store: &Store,
    fetched: Vec<Fetched>,
) -> Result<(), TrackerError> {
    let Some(held) = store.held(&title) else { return Ok(()) };
    link.request(&TrackerRequest::ReportHeld { title, held, fetched }).await?;
    Ok(())
}

/// Deletes a title the tracker's planner evicted to make room for a newer one (the tracker
/// already counts it as not held here), then reports an empty map of it, so that a report of
/// it that crossed the plan does not leave the tracker thinking it is still here. If it cannot
/// be deleted, the real map is reported instead: the tracker should know what is served.
async fn evict_title(
    link: &TrackerLink,
    store: &Arc<Store>,
    metrics: &FillMetrics,
    disk_full: &std::sync::atomic::AtomicBool,
    title: TitleId,
) -> Result<(), TrackerError> {
    use std::sync::atomic::Ordering::Relaxed;
    let chunks = store.manifest(&title).map(|m| m.chunk_count());
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.remove_title(&title)).await {
        Ok(Ok(freed)) => {
            info!(%title, freed_bytes = freed, "evicted at the tracker's word");
            metrics.title_evicted(freed);
            // The room it took is free again: filling may go on.
            disk_full.store(false, Relaxed);
        }
        Ok(Err(e)) => {
            warn!(%title, "cannot evict: {}", Chain(&e));
            return report(link, title, store, Vec::new()).await;
        }
        Err(e) => {
            warn!(%title, "cannot evict: the removal did not finish: {e}");
            return report(link, title, store, Vec::new()).await;
        }
    }
    let Some(held) = chunks.and_then(|n| ChunkBitmap::new(n).ok()) else { return Ok(()) };
    link.request(&TrackerRequest::ReportHeld { title, held, fetched: Vec::new() }).await?;
    Ok(())
}

/// Asks the tracker for the members it vouches for (trusted from now on) and for the
/// playback keys (the player servers check tokens with them): both change only when its epoch
/// moves.
async fn refresh_members(link: &TrackerLink, server: &Server, gate: &Gate) -> Result<(), TrackerError> {
    if let TrackerResponse::Members { nodes } = link.request(&TrackerRequest::Members).await? {
        for node in nodes {
            if let Some(peer) = identity::peer_of(&node) {
                server.trust().add(peer);
            }
        }
    }
    match link.request(&TrackerRequest::PlaybackKeys).await {
        Ok(TrackerResponse::PlaybackKeys { required, keys }) => gate.learn(link.by, required, keys),
        Ok(other) => {
            return Err(TrackerError::Unexpected { asked: "playback keys", answer: Box::new(other) })
        }
        // A tracker of an earlier build, which hands out no tokens: an open fleet.
        Err(TrackerError::Refused { code: ErrorCode::BadRequest, .. }) => {
            gate.learn(link.by, false, Vec::new())
        }
        Err(e) => return Err(e),
    }
    Ok(())
}
