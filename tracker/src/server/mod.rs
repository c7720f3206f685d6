//! `fillmesh tracker`: the I/O shell around `fillmesh_tracker::core`.
//!
//! The core decides; this module only moves bytes and time, by job:
//! - `mesh`: the mesh API (QUIC, mutual TLS, the tracker's own PeerId): trusted appliances'
//!   requests, fed to the core with the current time.
//! - `http`: two HTTP listeners: the viewers' (`/steer`, `/report`, the watch page) and the
//!   operators' (`/status`, `/metrics`, the fleet page; loopback by default).
//! - `persist`: the catalog and the registry in sled, written off the async executor and read
//!   back at start. Held maps are not persisted: appliances report everything they hold
//!   whenever they (re)connect.
//! - here: the configuration, [`run`] with its ready line, and waking the core when its next
//!   deadline is due.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::core::{Config, Policy, Tracker, TrackerInfo};
use anyhow::Context;
use fillmesh_net::ready::{ProcessKind, Ready};
use fillmesh_net::sync::LockExt;
use fillmesh_net::{
    identity, notify, rpc, say, Chain, MeshEndpoint, Pool, TlsIdentity, TransportLimits, Trust,
};
use fillmesh_protocol::messages::{ErrorCode, SteerTarget, TrackerRequest, TrackerResponse, MINUTES_PER_DAY};
use fillmesh_protocol::{NodeId, TitleId};
use libp2p_identity::PeerId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

mod fleet;
mod http;
pub mod keys;
mod mesh;
mod persist;

pub use fleet::{EtcdConfig, FleetError};

/// The longest the core goes without a tick, whatever its next deadline says.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Everything the tracker needs to start.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// The tracker's directory: its identity key (created on first start) and its sled
    /// index (`tracker-index`: the catalog and the registry).
    pub data: PathBuf,
    /// UDP address of the mesh API (QUIC); port 0 picks one, which the ready line prints.
    pub listen: SocketAddr,
    /// TCP address of the viewers' HTTP API (`/steer`, `/report`, `/watch`); port 0 picks
    /// one.
    pub http: SocketAddr,
    /// TCP address of the operators' HTTP API (`/status`, `/metrics`, the fleet page), which
    /// names every appliance's address, load and holdings: loopback or a management network.
    /// Port 0 picks one.
    pub admin_http: SocketAddr,
    /// PeerIds allowed to connect to the mesh API; with etcd, also added to the fleet's
    /// trust list at start.
    pub trust: Vec<PeerId>,
    /// [`Config::policy`].
    pub policy: Policy,
    /// [`Config::seed`].
    pub seed: u64,
    /// See the fields of the same names in [`Config`].
    pub corrupt_quorum: usize,
    /// [`Config::evict_watermark_pct`].
    pub evict_watermark_pct: u8,
    /// [`Config::evict_min_idle_ms`].
    pub evict_min_idle_ms: u64,
    /// The fleet's store: with it, the catalog, the trust list and the tracker membership
    /// live in etcd and titles are owned by one live tracker each; without it (the default)
    /// this tracker alone keeps them in sled.
    pub etcd: Option<EtcdConfig>,
    /// Playback tokens: whether appliances require them, how long they last, what they bind.
    pub tokens: TokenConfig,
    /// A key `/steer` requires (`Authorization: Bearer KEY`): the operator's own front end
    /// asks for viewers. `None` (the default): anyone may ask.
    pub steer_key: Option<String>,
}

/// Playback tokens, as the tracker hands them out ([`fillmesh_protocol::token`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// Appliances serve players only with a token steering signed (the default); off, the
    /// fleet is open: anyone who reaches an appliance may play any title it holds.
    pub required: bool,
    /// How long a token lasts from steering (12 h by default).
    pub ttl: Duration,
    /// Which client address a token is bound to (by its prefix).
    pub bind: TokenBind,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self { required: true, ttl: Duration::from_secs(12 * 3600), bind: TokenBind::Off }
    }
}

/// Which client address steering binds a token to: the token is then good only for clients
/// in its /24 (IPv4) or /48 (IPv6), [`BIND_V4`] and [`BIND_V6`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenBind {
    /// The `client_ip` of the steering request, when given: the operator's front end that
    /// asks for a viewer knows the viewer's address. Tokens steered for the address the
    /// tracker sees are not bound (a player may reach the tracker and the appliances by
    /// different addresses, IPv4 and IPv6 say).
    Given,
    /// The `client_ip` given, else the address the tracker sees.
    Seen,
    /// Never bound (the default: a player behind a NAT pool, or reaching the tracker over IPv6
    /// and the appliances over IPv4, would be refused; the token's expiry and title bound
    /// what a leaked token opens).
    Off,
}

/// The prefix length an IPv4 client's token is bound to: a /24, so a player whose address
/// changes within its provider's pool keeps playing.
pub const BIND_V4: u8 = 24;
/// The prefix length an IPv6 client's token is bound to.
pub const BIND_V6: u8 = 48;

/// Reads a trust file: one PeerId per line; blank lines and `#` comments are ignored.
pub fn read_trust_file(path: &Path) -> anyhow::Result<Vec<PeerId>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(n, line)| (n, line.split('#').next().unwrap_or("").trim()))
        .filter(|(_, line)| !line.is_empty())
        .map(|(n, line)| {
            line.parse().with_context(|| format!("{}:{}: {line:?} is not a PeerId", path.display(), n + 1))
        })
        .collect()
}

/// The shared state of a running tracker.
struct Shared {
    core: Mutex<Tracker>,
    started: Instant,
    index: persist::Index,
    trust: Trust,
    /// The connection each node registered on last; a node's loss is only reported when
    /// that connection (not an older one) closes.
    connections: Mutex<BTreeMap<NodeId, usize>>,
    /// Connections the trust gate refused.
    refused: Counter,
    /// Steering answers whose first target is not a near appliance holding the whole title.
    content_misses: Counter,
    /// Poked after each request the core handled: its next deadline may have moved earlier.
    wake: Notify,
    /// The fleet's etcd, when the tracker runs in one.
    fleet: Option<Arc<fleet::Fleet>>,
    /// 1 while the fleet's etcd answers (lease held, watch running), 0 while it is lost.
    etcd_up: Gauge,
    /// Connections to the other trackers of the fleet (steering asks a title's owner).
    peers: Option<Pool>,
    /// Until then (at most), a restarted tracker of a fleet is not yet live: see
    /// [`Shared::warm`]. Set once the registry is restored.
    warm_until: Mutex<Option<Instant>>,
    /// Playback tokens: the keys and whether they are required.
    tokens: keys::Tokens,
    /// How steering binds tokens to clients.
    bind: TokenBind,
    /// What `/steer` requires, if anything.
    steer_key: Option<String>,
}

impl Shared {
    /// A tracker's shared state with the default configuration, its index in `data`, no
    /// fleet and nobody trusted: the mesh handler and steering without the network.
    #[cfg(test)]
    fn for_test(data: &Path) -> Self {
        Shared {
            core: Mutex::new(Tracker::new(Config::default())),
            started: Instant::now(),
            index: persist::Index::open(data).expect("the index"),
            trust: Trust::new([]),
            connections: Mutex::new(BTreeMap::new()),
            refused: Counter::default(),
            content_misses: Counter::default(),
            wake: Notify::new(),
            fleet: None,
            etcd_up: Gauge::default(),
            peers: None,
            warm_until: Mutex::new(None),
            tokens: keys::Tokens::new(false, Duration::from_secs(60)),
            bind: TokenBind::Off,
            steer_key: None,
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn core(&self) -> MutexGuard<'_, Tracker> {
        self.core.locked()
    }

    /// Steering with what a player needs to reach each appliance.
    fn steer(&self, title: &TitleId, client: IpAddr) -> (Vec<SteerTarget>, String) {
        let mut core = self.core();
        let steering = core.steer(self.now(), title, client);
        if steering.content_miss {
            self.content_misses.inc();
        }
        // A package's URL is its base, with the trailing slash: a playlist's relative URLs
        // resolve inside the package (`https://ADDR/titles/ID/` + `v0/index.m3u8`).
        let slash = if core.shape(title).is_some_and(|s| s.is_package()) { "/" } else { "" };
        let targets = steering
            .targets
            .iter()
            .filter_map(|node| {
                let reg = core.registration(node)?;
                Some(SteerTarget {
                    node: node.clone(),
                    url: format!("https://{}/titles/{title}{slash}", reg.mesh_addr),
                    cert_sha256: reg.cert_sha256,
                    site: reg.site.clone(),
                    region: reg.region.clone(),
                })
            })
            .collect();
        (targets, steering.reason)
    }
}

impl Shared {
    /// Whether this tracker may count itself live in the fleet (and so own titles). A tracker
    /// that restarts with nodes in its registry waits until they are all back (registered
    /// and healthy) or [`WARM_UP`] has passed, so that its first fill layouts are those of
    /// the whole fleet: planned from a fleet still reconnecting, they would hand out origin
    /// slices that overlap those of the plans the appliances already follow.
    fn warm(&self) -> bool {
        let mut until = self.warm_until.locked();
        let Some(at) = *until else { return false };
        let back = self.core().status(self.now()).appliances.iter().all(|a| a.healthy);
        if back || Instant::now() >= at {
            // Once warm, warm for the life of the process.
            *until = Some(self.started);
            return true;
        }
        false
    }

    /// Steering for any title: this tracker's own answer for a title it owns, else the
    /// owner's, asked over the mesh; this tracker's own again when the owner does not answer
    /// within [`OWNER_TIMEOUT`] (it may be gone, its lease not yet expired), so a player is
    /// always answered.
    async fn steer_any(&self, title: &TitleId, client: IpAddr) -> (Vec<SteerTarget>, String) {
        let owner = {
            let core = self.core();
            match core.owner(title) {
                Some(owner) if !core.owns(title) => core.tracker_info(owner).cloned(),
                _ => None,
            }
        };
        if let (Some(owner), Some(pool)) = (owner, &self.peers) {
            match tokio::time::timeout(OWNER_TIMEOUT, ask_owner(pool, &owner, *title, client)).await {
                Ok(Ok(answer)) => return answer,
                Ok(Err(e)) => {
                    debug!(owner = %owner.peer_id, %title, "steering from this tracker's own view: {}", Chain(&e))
                }
                Err(_) => {
                    debug!(owner = %owner.peer_id, %title, "steering from this tracker's own view: the owner did not answer")
                }
            }
        }
        self.steer(title, client)
    }
}

/// The longest a restarted tracker waits for the nodes it knew before it counts itself live
/// (appliances reconnect with a backoff of at most 5 s).
const WARM_UP: Duration = Duration::from_secs(8);

/// How long steering waits for a title's owner.
const OWNER_TIMEOUT: Duration = Duration::from_secs(1);

/// Why another tracker of the fleet gave no answer to a request: it could not be reached or
/// the exchange failed (`Connect`, `Call`), or it answered but not with what was asked
/// (`Refused`, `Unexpected`).
#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("the tracker's record names {0}, which is not a PeerId")]
    PeerId(NodeId),
    #[error("cannot connect to the tracker")]
    Connect(#[source] fillmesh_net::TransportError),
    #[error("the request to the tracker failed")]
    Call(#[source] fillmesh_net::CallError),
    #[error("the tracker refused: {code:?}: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("unexpected answer: {0:?}")]
    Unexpected(Box<TrackerResponse>),
}

async fn ask_owner(
    pool: &Pool,
    owner: &TrackerInfo,
    title: TitleId,
    client_ip: IpAddr,
) -> Result<(Vec<SteerTarget>, String), AskError> {
    match ask_tracker(pool, owner, &TrackerRequest::Steer { title, client_ip }).await? {
        TrackerResponse::Steer { targets, reason } => Ok((targets, reason)),
        other => Err(AskError::Unexpected(Box::new(other))),
    }
}

/// One request to another tracker of the fleet over the mesh, within [`OWNER_TIMEOUT`].
async fn ask_tracker(
    pool: &Pool,
    tracker: &TrackerInfo,
    request: &TrackerRequest,
) -> Result<TrackerResponse, AskError> {
    let peer =
        identity::peer_of(&tracker.peer_id).ok_or_else(|| AskError::PeerId(tracker.peer_id.clone()))?;
    let conn = pool.get(tracker.addr, peer).await.map_err(AskError::Connect)?;
    match rpc::call::<_, TrackerResponse>(&conn, request, OWNER_TIMEOUT).await {
        Ok(TrackerResponse::Error(e)) => Err(AskError::Refused { code: e.code, message: e.message }),
        Ok(answer) => Ok(answer),
        Err(e) => {
            pool.forget(tracker.addr, peer).await;
            Err(AskError::Call(e))
        }
    }
}

/// Runs the tracker until `shutdown` resolves. Prints one ready line:
/// `fillmesh tracker <peer id> mesh <addr> http <addr> admin <addr>`.
pub async fn run(
    config: TrackerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (_keep, reloads) = tokio::sync::mpsc::channel(1);
    run_with_reloads(config, shutdown, reloads).await
}

/// [`run`], applying each configuration `reloads` hands over (SIGHUP): the trust list
/// changes live; what cannot is named in the log.
pub async fn run_with_reloads(
    config: TrackerConfig,
    shutdown: impl std::future::Future<Output = ()>,
    reloads: tokio::sync::mpsc::Receiver<TrackerConfig>,
) -> anyhow::Result<()> {
    let _watchdog = notify::watchdog();
    let key = identity::load_or_create(&config.data)?;
    let tls = TlsIdentity::new(&key)?;
    let peer = tls.peer_id();
    let core = Tracker::new(Config {
        policy: config.policy,
        seed: config.seed,
        corrupt_quorum: config.corrupt_quorum,
        evict_watermark_pct: config.evict_watermark_pct,
        evict_min_idle_ms: config.evict_min_idle_ms,
        ..Config::default()
    });
    // Why 128 streams a connection where nodes allow 16: QUIC gives a peer more streams
    // (MAX_STREAMS) once an eighth of its allowance is used, each time in a packet of its own
    // that the peer then acknowledges. With one request a stream and 16 streams, that was two
    // more packets every third request, on top of the request, its answer and the ACK.
    let limits = TransportLimits { max_streams_per_connection: 128, ..TransportLimits::default() };
    let endpoint = MeshEndpoint::bind(config.listen, tls, limits)?;
    let mesh_addr = endpoint.local_addr()?;
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("cannot listen on {}", config.http))?;
    let http_addr = listener.local_addr()?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_http)
        .await
        .with_context(|| format!("cannot listen on {} (--admin-http)", config.admin_http))?;
    let admin_addr = admin_listener.local_addr()?;
    if !admin_addr.ip().is_loopback() {
        warn!(%admin_addr, "--admin-http shows every appliance's address, load and holdings, with no authentication: keep it on a management network that viewers cannot reach");
    }
    let me = identity::node_id(&peer).context("the tracker's own PeerId")?;
    let fleet = match config.etcd.clone() {
        Some(etcd) => {
            let info = TrackerInfo {
                peer_id: me.clone(),
                addr: mesh_addr,
                http: http_addr,
                admin: Some(admin_addr),
            };
            let fleet = fleet::Fleet::connect(etcd, info).await?;
            fleet.trust(&config.trust).await?;
            Some(Arc::new(fleet))
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        started: Instant::now(),
        index: persist::Index::open(&config.data)?,
        trust: Trust::new(config.trust.iter().copied()),
        connections: Mutex::new(BTreeMap::new()),
        refused: Counter::default(),
        content_misses: Counter::default(),
        wake: Notify::new(),
        peers: fleet.as_ref().map(|_| Pool::new(endpoint.clone(), OWNER_TIMEOUT)),
        warm_until: Mutex::new(None),
        fleet: fleet.clone(),
        etcd_up: Gauge::default(),
        tokens: keys::Tokens::new(config.tokens.required, config.tokens.ttl),
        bind: config.tokens.bind,
        steer_key: config.steer_key.clone(),
    });
    if fleet.is_none() {
        // A lone tracker's keys are in its data directory; the first made at its first start.
        shared.tokens.set(keys::read_file(&config.data)?);
        if config.tokens.required && !shared.tokens.has_keys() {
            let record = keys::KeyRecord::generate(keys::unix_now())?;
            keys::write_file(&config.data, std::slice::from_ref(&record))?;
            info!(key = %record.id, "made the first playback key");
            shared.tokens.set(vec![record]);
        }
    }
    let (titles, nodes) = shared.index.restore(&mut shared.core(), shared.now())?;
    *shared.warm_until.locked() = Some(if nodes > 0 { Instant::now() + WARM_UP } else { Instant::now() });
    if let Some(fleet) = fleet {
        // The mesh opens once the fleet is read: a tracker that planned before it knew the
        // live set would take every title for its own (and the appliances' fills with it).
        let (read, first_read) = tokio::sync::oneshot::channel();
        tokio::spawn(fleet::run(fleet, shared.clone(), read));
        if tokio::time::timeout(Duration::from_secs(30), first_read).await.is_err() {
            warn!("etcd did not answer within 30 s of start: coordinating alone until it does");
            let me = TrackerInfo {
                peer_id: me.clone(),
                addr: mesh_addr,
                http: http_addr,
                admin: Some(admin_addr),
            };
            shared.core().set_fleet(me.peer_id.clone(), vec![me]);
        }
        if config.tokens.required && !shared.tokens.has_keys() {
            // The fleet's first key, made by the first tracker to find none (two trackers
            // starting at once may each make one: both are accepted, the newer signs).
            let record = keys::KeyRecord::generate(keys::unix_now())?;
            if let Some(fleet) = &shared.fleet {
                match fleet.put_key(&record).await {
                    Ok(()) => info!(key = %record.id, "made the fleet's first playback key"),
                    Err(e) => warn!("cannot write the fleet's first playback key: {}", Chain(&e)),
                }
            }
            shared.tokens.upsert(&record.id.clone(), Some(record));
        }
    }

    let app = http::viewer_router(shared.clone());
    let http = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
    });
    let admin_app = http::admin_router(shared.clone());
    let admin = tokio::spawn(async move { axum::serve(admin_listener, admin_app).await });
    let mesh = tokio::spawn(mesh::router(shared.clone()).run(endpoint.clone()));
    let ticker = tokio::spawn(tick(shared.clone()));
    let clock = tokio::spawn(wall_clock(shared.clone()));
    let reloader = tokio::spawn(reload_keys(shared.clone(), config.data.clone()));
    let reapply = tokio::spawn(apply_reloads(shared.clone(), config.clone(), reloads));
    info!(%peer, %mesh_addr, %http_addr, %admin_addr, titles, nodes, trusted = config.trust.len(), "tracker ready");
    let ready = Ready {
        kind: ProcessKind::Tracker,
        peer: peer.to_string(),
        mesh: mesh_addr,
        http: Some(http_addr),
        admin: Some(admin_addr),
    };
    say!("{ready}");
    notify::ready(&format!("serving on {mesh_addr}, http {http_addr}"));

    shutdown.await;
    notify::stopping("shutting down");
    info!("shutting down");
    if let Some(fleet) = &shared.fleet {
        fleet.leave().await;
    }
    endpoint.close();
    for task in [mesh, ticker, clock, reloader, reapply] {
        task.abort();
    }
    http.abort();
    admin.abort();
    shared.index.flush()?;
    Ok(())
}

/// Applies the configurations the binary reads again on SIGHUP: the trust list (a lone
/// tracker's replaced; a fleet's, kept in etcd and shared by every tracker, gains the new
/// peers, and a peer is removed from it with etcd itself); every other change is named as
/// needing a restart.
async fn apply_reloads(
    shared: Arc<Shared>,
    mut running: TrackerConfig,
    mut reloads: tokio::sync::mpsc::Receiver<TrackerConfig>,
) {
    // Bounded by the process's life: one turn per reload.
    while let Some(new) = reloads.recv().await {
        if new.trust != running.trust {
            match &shared.fleet {
                None => {
                    let (added, removed) = shared.trust.relist(new.trust.iter().copied());
                    info!(added, removed, "reload: trust list changed");
                }
                Some(fleet) => match fleet.trust(&new.trust).await {
                    Ok(()) => info!(
                        listed = new.trust.len(),
                        "reload: the fleet's trust list in etcd gained the peers listed (a peer is removed from it in etcd)"
                    ),
                    Err(e) => warn!("reload: cannot write the trust list to etcd: {}", Chain(&e)),
                },
            }
            running.trust = new.trust.clone();
        }
        let fixed = [
            ("data", new.data != running.data),
            ("listen", new.listen != running.listen),
            ("http", new.http != running.http),
            ("admin_http", new.admin_http != running.admin_http),
            ("policy", new.policy != running.policy),
            ("seed", new.seed != running.seed),
            ("corrupt_quorum", new.corrupt_quorum != running.corrupt_quorum),
            ("evict_watermark", new.evict_watermark_pct != running.evict_watermark_pct),
            ("evict_min_idle_secs", new.evict_min_idle_ms != running.evict_min_idle_ms),
            ("etcd", new.etcd != running.etcd),
            ("no_tokens/token_ttl/token_bind", new.tokens != running.tokens),
            ("steer_key_file", new.steer_key != running.steer_key),
        ];
        for (key, changed) in fixed {
            if changed {
                warn!(
                    key,
                    "reload: {key} cannot change while the tracker runs; restart it to apply the new value"
                );
            }
        }
    }
}

/// Reads a lone tracker's key file again when it changes, and drops keys past their end,
/// every [`keys::RELOAD`].
async fn reload_keys(shared: Arc<Shared>, data: PathBuf) {
    let mut every = tokio::time::interval(keys::RELOAD);
    loop {
        every.tick().await;
        let before = shared.tokens.version();
        if shared.fleet.is_some() {
            shared.tokens.drop_lapsed();
        } else {
            shared.tokens.refresh_file(&data);
        }
        if shared.tokens.version() != before {
            // The epoch appliances see moved: they ask for the keys again.
            shared.wake.notify_one();
        }
    }
}

/// Tells the core the minute of the day in UTC (fill windows open and close by it) now, and
/// again just after each minute turns. The one place the wall clock is read: the core takes
/// the minute as an event.
async fn wall_clock(shared: Arc<Shared>) {
    loop {
        let since_epoch =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let minute = ((since_epoch.as_secs() / 60) % u64::from(MINUTES_PER_DAY)) as u16;
        let now = shared.now();
        let moved = {
            let mut core = shared.core();
            let before = core.epoch();
            core.wall_clock(now, minute);
            before != core.epoch()
        };
        if moved {
            info!(minute, "fill windows opened or closed");
        }
        // Just past the next minute's start (a clock stepped back or forward is caught up at
        // the next turn, at most a minute later).
        let into = Duration::from_millis((since_epoch.as_millis() % 60_000) as u64);
        tokio::time::sleep(Duration::from_secs(60).saturating_sub(into) + Duration::from_millis(20)).await;
    }
}

/// Ticks the core when its next deadline ([`Tracker::poll_timeout`]) is due, or after a
/// request (which may have brought it earlier), and at least every [`MAX_SLEEP`].
async fn tick(shared: Arc<Shared>) {
    loop {
        let next = {
            let now = shared.now();
            let mut core = shared.core();
            core.tick(now);
            core.poll_timeout()
        };
        let sleep = next.map_or(MAX_SLEEP, |at| Duration::from_millis(at.saturating_sub(shared.now())));
        tokio::select! {
            () = tokio::time::sleep(sleep.min(MAX_SLEEP)) => {}
            () = shared.wake.notified() => {}
        }
    }
}
