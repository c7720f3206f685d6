//! An appliance's (or the origin's) life under a tracker: register, heartbeat, learn the
//! members the tracker vouches for, and fill by its plans, reporting what it holds.
//!
//! Every step tolerates the tracker going away: the link reconnects with backoff, registers
//! again and re-reports everything held, which is how a restarted tracker rebuilds its held
//! maps.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fillmesh_protocol::messages::{
    ErrorCode, Fetched, Heartbeat, Hello, Registration, Role, TrackerRequest, TrackerResponse, MAX_FETCHED,
    PROTOCOL_VERSION,
};
use fillmesh_protocol::{ChunkBitmap, IpPrefix, TitleId};
use libp2p_identity::PeerId;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use fillmesh_net::{rpc, MeshEndpoint, Pool};

use crate::metrics::FillMetrics;
use crate::serve::Server;
use crate::store::{ChunkWriter, Store};

mod assignee;

use assignee::Assignee;

/// Where the tracker is and who this node says it is.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub tracker: SocketAddr,
    pub tracker_id: PeerId,
    pub role: Role,
    pub mesh_addr: SocketAddr,
    pub site: String,
    pub region: String,
    pub prefixes: Vec<IpPrefix>,
    pub upload_bps: u64,
    pub disk_bytes: u64,
    /// Assignments worked on at once.
    pub parallel: usize,
    /// What players pin (SHA-256 of the SPKI of the certificate served on `h3`).
    pub cert_sha256: Option<[u8; 32]>,
    /// Player connections open now, reported in every heartbeat (steering ranks by it).
    pub player_sessions: prometheus_client::metrics::gauge::Gauge,
}

/// Why a tracker exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot reach the tracker: {0}")]
    Connect(String),
    #[error("tracker exchange failed: {0}")]
    Exchange(String),
    #[error("the tracker does not know this node")]
    NotRegistered,
    #[error("the tracker refused: {0}")]
    Refused(String),
}

/// The tracker, reached through the node's connection pool (one connection, dialled on
/// demand, dropped after a failed exchange).
struct TrackerLink {
    pool: Pool,
    addr: SocketAddr,
    peer: PeerId,
}

impl TrackerLink {
    async fn request(&self, request: &TrackerRequest) -> Result<TrackerResponse, LinkError> {
        let conn =
            self.pool.get(self.addr, self.peer).await.map_err(|e| LinkError::Connect(e.to_string()))?;
        match rpc::call::<_, TrackerResponse>(&conn, request, Duration::from_secs(10)).await {
            Ok(TrackerResponse::Error(e)) if e.code == ErrorCode::NotRegistered => {
                Err(LinkError::NotRegistered)
            }
            Ok(TrackerResponse::Error(e)) => Err(LinkError::Refused(format!("{:?}: {}", e.code, e.message))),
            Ok(response) => Ok(response),
            Err(e) => {
                self.pool.forget(self.addr, self.peer).await;
                Err(LinkError::Exchange(e.to_string()))
            }
        }
    }
}

/// A title the origin ingested, to be published to the tracker; `done` is answered once the
/// tracker has it (and dropped if the session ends first), so that `fillmesh seed` returns
/// only when players and appliances can find the title.
#[derive(Debug)]
pub struct ToPublish {
    pub title: TitleId,
    pub done: tokio::sync::oneshot::Sender<()>,
}

/// Runs until the process stops: (re)connects, registers, and works under the tracker.
/// `published` carries titles the origin ingested since it started.
pub async fn run(
    config: MemberConfig,
    endpoint: MeshEndpoint,
    store: Arc<Store>,
    server: Server,
    metrics: Arc<FillMetrics>,
    mut published: mpsc::UnboundedReceiver<ToPublish>,
) {
    let link = Arc::new(TrackerLink {
        pool: Pool::new(endpoint.clone(), Duration::from_secs(10)),
        addr: config.tracker,
        peer: config.tracker_id,
    });
    // No linger: the tracker holds this appliance's and its source's upload slots until the
    // chunk is reported, so each chunk is committed as soon as it is verified.
    let writer = match ChunkWriter::spawn(store.clone(), Duration::ZERO) {
        Ok(w) => w,
        Err(e) => {
            warn!("cannot start the chunk writer: {e}");
            return;
        }
    };
    let local = Local { endpoint, store, server, writer, metrics };
    let mut backoff = Duration::from_millis(250);
    // Bounded by the process's life; each pass waits at least `backoff`.
    loop {
        match session(&config, &link, &local, &mut published).await {
            Ok(()) => return,
            Err(e) => {
                warn!("tracker session ended: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// This node's own pieces that a session works with.
struct Local {
    endpoint: MeshEndpoint,
    store: Arc<Store>,
    server: Server,
    writer: ChunkWriter,
    metrics: Arc<FillMetrics>,
}

async fn session(
    config: &MemberConfig,
    link: &Arc<TrackerLink>,
    local: &Local,
    published: &mut mpsc::UnboundedReceiver<ToPublish>,
) -> Result<(), LinkError> {
    let Local { endpoint, store, server, writer, metrics } = local;
    // Versions first: a tracker of another protocol version is said so plainly (and the
    // session is retried), not met later as undecodable answers.
    match link.request(&TrackerRequest::Hello(Hello::ours(config.role))).await? {
        TrackerResponse::Hello(hello) if hello.version == PROTOCOL_VERSION => {
            debug!(agent = %hello.agent, "the tracker speaks our version");
        }
        other => return Err(LinkError::Exchange(format!("unexpected answer to hello: {other:?}"))),
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
        other => return Err(LinkError::Exchange(format!("unexpected answer to register: {other:?}"))),
    };
    info!(tracker = %config.tracker, "registered with the tracker");
    // Whatever the tracker knew of us may be gone: tell it everything (damage found so far
    // included).
    store.take_damaged();
    for info in store.titles() {
        if config.role == Role::Origin && info.held.is_full() {
            publish(link, store, info.title).await?;
        }
        report(link, info.title, store, Vec::new()).await?;
    }
    refresh_members(link, server).await?;

    let reports: Arc<Mutex<BTreeMap<TitleId, Vec<Fetched>>>> = Arc::default();
    let mut heartbeat = tokio::time::interval(interval);
    let mut flush = tokio::time::interval(Duration::from_millis(100));
    let mut work = tokio::task::JoinSet::new();
    let pool = Arc::new(Pool::new(endpoint.clone(), Duration::from_secs(10)));
    let mut idle_until = tokio::time::Instant::now();
    let disk_full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The title of each fetch task, so that an eviction can stop the title's fetches: a
    // chunk landing after the eviction would otherwise bring the title back.
    let mut running: Vec<(TitleId, tokio::task::AbortHandle)> = Vec::new();
    loop {
        // Ask for work whenever there is room (appliances only), the tracker had some, and
        // the disk quota is not reached (a full appliance keeps serving what it holds).
        if config.role == Role::Appliance
            && !disk_full.load(std::sync::atomic::Ordering::Relaxed)
            && work.len() < config.parallel
            && tokio::time::Instant::now() >= idle_until
        {
            let max = (config.parallel - work.len()) as u16;
            match link.request(&TrackerRequest::Plan { max }).await? {
                TrackerResponse::Plan { assignments, retry_after_ms, evict } => {
                    running.retain(|(t, task)| {
                        if evict.contains(t) {
                            task.abort();
                        }
                        !evict.contains(t) && !task.is_finished()
                    });
                    for title in evict {
                        evict_title(link, store, metrics, &disk_full, title).await?;
                    }
                    if assignments.is_empty() {
                        idle_until = tokio::time::Instant::now()
                            + Duration::from_millis(u64::from(retry_after_ms).clamp(50, 5000));
                    }
                    for a in assignments {
                        let title = a.title;
                        let ctx = Assignee {
                            link: link.clone(),
                            store: store.clone(),
                            writer: writer.clone(),
                            pool: pool.clone(),
                            reports: reports.clone(),
                            disk_full: disk_full.clone(),
                            metrics: metrics.clone(),
                        };
                        running.push((title, work.spawn(async move { ctx.work(a).await })));
                    }
                }
                other => return Err(LinkError::Exchange(format!("unexpected answer to plan: {other:?}"))),
            }
        }
        tokio::select! {
            _ = heartbeat.tick() => {
                let hb = Heartbeat {
                    healthy: true,
                    uploads_in_flight: server.in_flight(),
                    upload_bps_used: 0,
                    player_sessions: u32::try_from(config.player_sessions.get()).unwrap_or(0),
                    disk_used: store.titles().iter().map(|t| t.held_bytes()).sum(),
                };
                link.request(&TrackerRequest::Heartbeat(hb)).await?;
                refresh_members(link, server).await?;
            }
            _ = flush.tick() => flush_reports(link, store, &reports).await?,
            Some(ToPublish { title, done }) = published.recv() => {
                publish(link, store, title).await?;
                report(link, title, store, Vec::new()).await?;
                let _ = done.send(());
            }
            // A chunk found damaged on disk was dropped: the tracker hears that its title is
            // no longer whole here (steering stops sending players for it), and plans its
            // chunk again, which is asked for at once.
            () = store.damage_found() => {
                for title in store.take_damaged() {
                    report(link, title, store, Vec::new()).await?;
                }
                idle_until = tokio::time::Instant::now();
            }
            // A finished chunk frees a fetch slot here and an upload slot at its source; the
            // tracker hears of it now rather than at the next flush tick, so both are planned
            // again at once (the tracker counts a slot busy until the report).
            Some(_) = work.join_next(), if !work.is_empty() => flush_reports(link, store, &reports).await?,
        }
    }
}

/// Reports every chunk stored since the last report, with the held bitmaps of their titles.
async fn flush_reports(
    link: &TrackerLink,
    store: &Store,
    reports: &Mutex<BTreeMap<TitleId, Vec<Fetched>>>,
) -> Result<(), LinkError> {
    let pending = std::mem::take(&mut *reports.lock().unwrap_or_else(|p| p.into_inner()));
    for (title, fetched) in pending {
        for batch in fetched.chunks(MAX_FETCHED) {
            report(link, title, store, batch.to_vec()).await?;
        }
    }
    Ok(())
}

async fn publish(link: &TrackerLink, store: &Store, title: TitleId) -> Result<(), LinkError> {
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
) -> Result<(), LinkError> {
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
) -> Result<(), LinkError> {
    use std::sync::atomic::Ordering::Relaxed;
    let chunks = store.manifest(&title).map(|m| m.chunk_count());
    let s = store.clone();
    let removed = match tokio::task::spawn_blocking(move || s.remove_title(&title)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the removal did not finish: {e}")),
    };
    match removed {
        Ok(freed) => {
            info!(%title, freed_bytes = freed, "evicted at the tracker's word");
            metrics.title_evicted(freed);
            // The room it took is free again: filling may go on.
            disk_full.store(false, Relaxed);
        }
        Err(e) => {
            warn!(%title, "cannot evict: {e}");
            return report(link, title, store, Vec::new()).await;
        }
    }
    let Some(held) = chunks.and_then(|n| ChunkBitmap::new(n).ok()) else { return Ok(()) };
    link.request(&TrackerRequest::ReportHeld { title, held, fetched: Vec::new() }).await?;
    Ok(())
}

async fn refresh_members(link: &TrackerLink, server: &Server) -> Result<(), LinkError> {
    if let TrackerResponse::Members { nodes } = link.request(&TrackerRequest::Members).await? {
        for node in nodes {
            if let Ok(peer) = node.as_str().parse::<PeerId>() {
                server.trust().add(peer);
            }
        }
    }
    Ok(())
}
