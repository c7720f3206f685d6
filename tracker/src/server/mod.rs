//! `fillmesh tracker`: the I/O shell around `fillmesh_tracker::core`.
//!
//! The core decides; this module only moves bytes and time, by job:
//! - `mesh`: the mesh API (QUIC, mutual TLS, the tracker's own PeerId): trusted appliances'
//!   requests, fed to the core with the current time.
//! - `http`: players and operators over HTTP (`/steer`, `/status`, `/metrics`).
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

use crate::core::{Config, Policy, Tracker};
use anyhow::Context;
use fillmesh_net::ready::{ProcessKind, Ready};
use fillmesh_net::{identity, say, MeshEndpoint, TlsIdentity, TransportLimits, Trust};
use fillmesh_protocol::messages::SteerTarget;
use fillmesh_protocol::{NodeId, TitleId};
use libp2p_identity::PeerId;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;
use tracing::info;

mod http;
mod mesh;
mod persist;

/// The longest the core goes without a tick, whatever its next deadline says.
const MAX_SLEEP: Duration = Duration::from_secs(1);

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
}

impl Shared {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn core(&self) -> MutexGuard<'_, Tracker> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Steering with what a player needs to reach each appliance.
    fn steer(&self, title: &TitleId, client: IpAddr) -> (Vec<SteerTarget>, String) {
        let mut core = self.core();
        let steering = core.steer(self.now(), title, client);
        if steering.content_miss {
            self.content_misses.inc();
        }
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
        index: persist::Index::open(&config.data)?,
        trust: Trust::new(config.trust.iter().copied()),
        connections: Mutex::new(BTreeMap::new()),
        refused: Counter::default(),
        content_misses: Counter::default(),
        wake: Notify::new(),
    });
    let (titles, nodes) = shared.index.restore(&mut shared.core(), shared.now())?;

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
    let app = http::router(shared.clone());
    let http = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
    });
    let mesh = tokio::spawn(mesh::router(shared.clone()).run(endpoint.clone()));
    let ticker = tokio::spawn(tick(shared.clone()));
    info!(%peer, %mesh_addr, %http_addr, titles, nodes, trusted = config.trust.len(), "tracker ready");
    let ready =
        Ready { kind: ProcessKind::Tracker, peer: peer.to_string(), mesh: mesh_addr, http: Some(http_addr) };
    say!("{ready}");

    shutdown.await;
    info!("shutting down");
    endpoint.close();
    for task in [mesh, ticker] {
        task.abort();
    }
    http.abort();
    shared.index.flush()?;
    Ok(())
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
