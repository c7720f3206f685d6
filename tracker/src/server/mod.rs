//! `fillmesh tracker`: the I/O shell around `fillmesh_tracker::core`.
//!
//! The core decides; this module only moves bytes and time: it accepts trusted appliances on
//! the mesh API (QUIC, mutual TLS, the tracker's own PeerId), feeds their requests to the core
//! with the current time, persists the catalog and the registry in sled, and answers players
//! and operators over HTTP (`/steer`, `/status`, `/metrics`). Held maps are not persisted:
//! appliances report everything they hold whenever they (re)connect.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::core::{Config, Policy, Tracker};
use anyhow::Context;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use fillmesh_protocol::messages::{
    ErrorCode, ErrorReply, Hello, Registration, SteerTarget, TrackerRequest, TrackerResponse,
    PROTOCOL_VERSION,
};
use fillmesh_protocol::steering::{SteerAnswer, SteerEntry};
use fillmesh_protocol::{Manifest, NodeId, TitleId};
use libp2p_identity::PeerId;
use quinn::Connection;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

/// How long a node may take to send a request, and to take its answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

use fillmesh_net::frame::read_frame;
use fillmesh_net::{
    close, identity, rpc, say, trust, MeshEndpoint, Router, TlsIdentity, TransportLimits, Trust,
};
use fillmesh_protocol::ALPN;

/// Everything the tracker needs to start.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    pub data: PathBuf,
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub trust: Vec<PeerId>,
    pub policy: Policy,
    pub seed: u64,
    /// See the fields of the same names in [`Config`].
    pub corrupt_quorum: usize,
    pub evict_watermark_pct: u8,
    pub evict_min_idle_ms: u64,
}

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

#[derive(Serialize, Deserialize)]
struct CatalogRecord {
    name: String,
    manifest: Manifest,
}

/// The shared state of a running tracker.
struct Shared {
    core: Mutex<Tracker>,
    started: Instant,
    db: sled::Db,
    catalog: sled::Tree,
    registry: sled::Tree,
    trust: Trust,
    /// The connection each node registered on last; a node's loss is only reported when
    /// that connection (not an older one) closes.
    connections: Mutex<BTreeMap<NodeId, usize>>,
    refused: Arc<AtomicU64>,
}

impl Shared {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn core(&self) -> MutexGuard<'_, Tracker> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs the tracker until `shutdown` resolves. Prints one ready line:
/// `fillmesh tracker <peer id> mesh <addr> http <addr>`.
pub async fn run(
    config: TrackerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let key = identity::load_or_create(&config.data)?;
    let tls = TlsIdentity::new(&key)?;
    let peer = tls.peer_id();
    let db = sled::Config::new()
        .path(config.data.join("tracker-index"))
        .flush_every_ms(None)
        .open()
        .with_context(|| format!("opening the tracker's index in {}", config.data.display()))?;
    let catalog = db.open_tree("catalog")?;
    let registry = db.open_tree("registry")?;
    let core = Tracker::new(Config {
        policy: config.policy,
        seed: config.seed,
        corrupt_quorum: config.corrupt_quorum,
        evict_watermark_pct: config.evict_watermark_pct,
        evict_min_idle_ms: config.evict_min_idle_ms,
        ..Config::default()
    });
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        started: Instant::now(),
        db,
        catalog,
        registry,
        trust: Trust::new(config.trust.iter().copied()),
        connections: Mutex::new(BTreeMap::new()),
        refused: Default::default(),
    });
    let (titles, nodes) = restore(&shared)?;

    let endpoint = MeshEndpoint::bind(config.listen, tls, TransportLimits::default())?;
    let mesh_addr = endpoint.local_addr()?;
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("cannot listen on {}", config.http))?;
    let http_addr = listener.local_addr()?;
    let app = http_router(shared.clone());
    let http = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
    });
    let mesh = tokio::spawn(router(shared.clone()).run(endpoint.clone()));
    let ticker = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(250));
            loop {
                interval.tick().await;
                let now = shared.now();
                shared.core().tick(now);
            }
        })
    };
    info!(%peer, %mesh_addr, %http_addr, titles, nodes, trusted = config.trust.len(), "tracker ready");
    say!("fillmesh tracker {peer} mesh {mesh_addr} http {http_addr}");

    shutdown.await;
    info!("shutting down");
    endpoint.close();
    for task in [mesh, ticker] {
        task.abort();
    }
    http.abort();
    shared.db.flush()?;
    Ok(())
}

/// Loads the persisted catalog and registry into the core. Registered nodes come back
/// unhealthy until they reconnect and heartbeat.
fn restore(shared: &Shared) -> anyhow::Result<(usize, usize)> {
    let now = shared.now();
    let mut core = shared.core();
    let mut titles = 0;
    for entry in shared.catalog.iter() {
        let (key, value) = entry?;
        let title = TitleId::from_bytes(key.as_ref().try_into().context("catalog key is not a title id")?);
        let record: CatalogRecord = postcard::from_bytes(&value).context("corrupt catalog record")?;
        core.publish(now, title, record.name, &record.manifest)?;
        titles += 1;
    }
    let mut nodes = 0;
    for entry in shared.registry.iter() {
        let (key, value) = entry?;
        let node: NodeId = std::str::from_utf8(&key)?.parse()?;
        let registration: Registration = postcard::from_bytes(&value).context("corrupt registry record")?;
        core.register(now, node.clone(), registration);
        core.lost(now, &node);
        nodes += 1;
    }
    Ok((titles, nodes))
}

/// The mesh API: trusted nodes only (the gate), each request its own task.
fn router(shared: Arc<Shared>) -> Router {
    let refused = shared.refused.clone();
    let next_id = Arc::new(AtomicUsize::new(0));
    let gated = trust::gate(shared.trust.clone(), refused, "node", move |conn, peer| {
        let id = next_id.fetch_add(1, Relaxed) + 1;
        connection(conn, peer, shared.clone(), id)
    });
    Router::new().route(ALPN, gated)
}

async fn connection(conn: Connection, peer: PeerId, shared: Arc<Shared>, id: usize) {
    let Ok(node) = peer.to_string().parse::<NodeId>() else {
        conn.close(close::PROTOCOL, b"unusable peer id");
        return;
    };
    debug!(%peer, "node connected");
    rpc::serve(&conn, |mut send, mut recv| {
        let (shared, node) = (shared.clone(), node.clone());
        async move {
            let response = match read_frame::<TrackerRequest>(&mut recv, IO_TIMEOUT).await {
                Ok(request) => handle(&shared, &node, id, request).await,
                Err(e) => {
                    debug!(%node, "bad request: {e}");
                    error(ErrorCode::BadRequest, e.to_string())
                }
            };
            if let Err(e) = rpc::reply(&mut send, &response, IO_TIMEOUT).await {
                debug!(%node, "response not sent: {e}");
            }
        }
    })
    .await;
    let latest = shared.connections.lock().unwrap_or_else(|p| p.into_inner()).get(&node).copied();
    if latest == Some(id) {
        let now = shared.now();
        shared.core().lost(now, &node);
        info!(%peer, "node disconnected");
    }
}

fn error(code: ErrorCode, mut message: String) -> TrackerResponse {
    let mut end = message.len().min(fillmesh_protocol::messages::MAX_TEXT);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    TrackerResponse::Error(ErrorReply { code, message })
}

async fn handle(shared: &Shared, node: &NodeId, conn_id: usize, request: TrackerRequest) -> TrackerResponse {
    let now = shared.now();
    let done = |r: Result<(), String>| match r {
        Ok(()) => TrackerResponse::Ack,
        Err(e) => error(ErrorCode::BadRequest, e),
    };
    match request {
        TrackerRequest::Hello(hello) if hello.version != PROTOCOL_VERSION => {
            error(ErrorCode::VersionMismatch, format!("this tracker speaks version {PROTOCOL_VERSION}"))
        }
        TrackerRequest::Hello(_) => TrackerResponse::Hello(Hello {
            version: PROTOCOL_VERSION,
            role: fillmesh_protocol::messages::Role::Tracker,
            agent: concat!("fillmesh/", env!("CARGO_PKG_VERSION")).into(),
        }),
        TrackerRequest::Register(registration) => {
            if let Ok(bytes) = postcard::to_allocvec(&registration) {
                if let Err(e) =
                    persist(shared, &shared.registry, node.as_str().as_bytes().to_vec(), bytes).await
                {
                    warn!("cannot persist a registration: {e}");
                }
            }
            info!(%node, site = %registration.site, region = %registration.region, role = ?registration.role, "node registered");
            shared.connections.lock().unwrap_or_else(|p| p.into_inner()).insert(node.clone(), conn_id);
            let mut core = shared.core();
            core.register(now, node.clone(), registration);
            TrackerResponse::Registered { heartbeat_interval_ms: core.config().heartbeat_interval_ms as u32 }
        }
        TrackerRequest::Heartbeat(hb) => match shared.core().heartbeat(now, node, hb) {
            Ok(()) => TrackerResponse::Ack,
            // The tracker restarted or forgot the node: it must register again.
            Err(e) => error(ErrorCode::NotRegistered, e.to_string()),
        },
        TrackerRequest::ReportHeld { title, held, fetched } => {
            done(shared.core().report_held(now, node, title, held, &fetched).map_err(|e| e.to_string()))
        }
        TrackerRequest::ReportFailure { title, chunk, source, kind } => {
            let (result, (reporters, bad), quorum) = {
                let mut core = shared.core();
                let result = core.report_failure(now, node, title, chunk, &source, kind);
                (result, core.corrupt_reports(&source), core.config().quorum())
            };
            if result.is_ok() && kind == fillmesh_protocol::messages::FailureKind::Corrupt {
                if bad {
                    warn!(reporter = %node, %source, %title, chunk, "corrupt chunk reported; source marked bad ({reporters} distinct reporters)");
                } else {
                    warn!(reporter = %node, %source, %title, chunk, "corrupt chunk reported; source excluded for this reporter, marked bad once {quorum} distinct reporters agree ({reporters} so far)");
                }
            }
            done(result.map_err(|e| e.to_string()))
        }
        TrackerRequest::Plan { max } => match shared.core().plan(now, node, usize::from(max)) {
            Ok(plan) => {
                let retry_after_ms = if plan.assignments.is_empty() { 250 } else { 0 };
                for title in &plan.evict {
                    info!(appliance = %node, %title, "evicted to make room for a more recently wanted title");
                }
                TrackerResponse::Plan { assignments: plan.assignments, retry_after_ms, evict: plan.evict }
            }
            Err(e) => error(ErrorCode::NotRegistered, e.to_string()),
        },
        TrackerRequest::Steer { title, client_ip } => {
            let (targets, reason) = steer(shared, &title, client_ip);
            TrackerResponse::Steer { targets, reason }
        }
        TrackerRequest::Catalog => TrackerResponse::Catalog { titles: shared.core().catalog() },
        TrackerRequest::Members => TrackerResponse::Members { nodes: shared.core().members() },
        TrackerRequest::Publish { title, name, manifest } => {
            if manifest.verify(&title).is_err() {
                return error(ErrorCode::BadRequest, format!("the manifest does not hash to {title}"));
            }
            let result = shared.core().publish(now, title, name.clone(), &manifest);
            if result.is_ok() {
                let record = CatalogRecord { name, manifest };
                match postcard::to_allocvec(&record) {
                    Ok(bytes) => {
                        if let Err(e) =
                            persist(shared, &shared.catalog, title.as_bytes().to_vec(), bytes).await
                        {
                            warn!("cannot persist the catalog: {e}");
                            return error(ErrorCode::Internal, "cannot persist the catalog".into());
                        }
                    }
                    Err(e) => return error(ErrorCode::Internal, e.to_string()),
                }
                info!(%title, "title published");
            }
            done(result.map_err(|e| e.to_string()))
        }
    }
}

/// Writes one record and flushes the index (an fsync) on a blocking thread, off the async
/// executor: a slow disk delays this one request, never the others.
async fn persist(shared: &Shared, tree: &sled::Tree, key: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
    let (db, tree) = (shared.db.clone(), tree.clone());
    tokio::task::spawn_blocking(move || tree.insert(key, value).and_then(|_| db.flush()).map(|_| ()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Steering with what a player needs to reach each appliance.
fn steer(shared: &Shared, title: &TitleId, client: IpAddr) -> (Vec<SteerTarget>, String) {
    let mut core = shared.core();
    let steering = core.steer(shared.now(), title, client);
    let targets = steering
        .targets
        .iter()
        .filter_map(|node| {
            let reg = core.registration(node)?;
            Some(SteerTarget {
                node: node.clone(),
                url: format!("https://{}/titles/{title}", reg.mesh_addr),
                cert_sha256: reg.cert_sha256,
                site: reg.site.clone(),
                region: reg.region.clone(),
            })
        })
        .collect();
    (targets, steering.reason)
}

fn http_router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/steer", get(http_steer))
        .route("/status", get(http_status))
        .route("/metrics", get(http_metrics))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(shared)
}

#[derive(Deserialize)]
struct SteerParams {
    title: String,
    client_ip: Option<String>,
}

async fn http_steer(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(params): Query<SteerParams>,
) -> Response {
    let title: TitleId = match params.title.parse() {
        Ok(t) => t,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("title: {e}\n")).into_response(),
    };
    let client = match params.client_ip.as_deref().map(str::parse::<IpAddr>) {
        None => remote.ip(),
        Some(Ok(ip)) => ip,
        Some(Err(_)) => return (StatusCode::BAD_REQUEST, "client_ip is not an IP address\n").into_response(),
    };
    let (targets, reason) = steer(&shared, &title, client);
    let targets = targets.into_iter().map(SteerEntry::from).collect();
    Json(SteerAnswer { title: title.to_string(), client_ip: client.to_string(), targets, reason })
        .into_response()
}

async fn http_status(State(shared): State<Arc<Shared>>) -> Response {
    let status = shared.core().status(shared.now());
    Json(status).into_response()
}

async fn http_metrics(State(shared): State<Arc<Shared>>) -> Response {
    let status = shared.core().status(shared.now());
    let mut out = String::new();
    let healthy = status.appliances.iter().filter(|a| a.healthy).count();
    out.push_str(
        "# HELP fillmesh_tracker_nodes Registered nodes by health.\n# TYPE fillmesh_tracker_nodes gauge\n",
    );
    out.push_str(&format!("fillmesh_tracker_nodes{{state=\"healthy\"}} {healthy}\n"));
    out.push_str(&format!(
        "fillmesh_tracker_nodes{{state=\"unhealthy\"}} {}\n",
        status.appliances.len() - healthy
    ));
    out.push_str("# HELP fillmesh_tracker_refused_total Connections refused because the node is not trusted.\n# TYPE fillmesh_tracker_refused_total counter\n");
    out.push_str(&format!("fillmesh_tracker_refused_total {}\n", shared.refused.load(Relaxed)));
    out.push_str("# HELP fillmesh_title_complete_appliances Appliances holding every chunk of a title.\n# TYPE fillmesh_title_complete_appliances gauge\n");
    for t in &status.titles {
        out.push_str(&format!(
            "fillmesh_title_complete_appliances{{title=\"{}\"}} {}\n",
            t.id, t.complete_appliances
        ));
    }
    out.push_str("# HELP fillmesh_title_bytes_total Bytes delivered to appliances, by source class.\n# TYPE fillmesh_title_bytes_total counter\n");
    for t in &status.titles {
        for (class, bytes) in &t.bytes_by_class {
            out.push_str(&format!(
                "fillmesh_title_bytes_total{{title=\"{}\",class=\"{class}\"}} {bytes}\n",
                t.id
            ));
        }
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
