//! `fillmesh node`: an appliance, or the origin with `--origin`, running until stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fillmesh_protocol::messages::Role;
use libp2p_identity::PeerId;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use fillmesh_net::ready::{ProcessKind, Ready};
use fillmesh_net::{identity, notify, say, MeshEndpoint, TlsIdentity, TransportLimits, Trust, H3_ALPN};

use crate::classes::{FillLive, RateCaps};
use crate::member::MemberConfig;
use crate::metrics::FillMetrics;

use crate::serve::{
    ChunkSource, Drain, Gate, PlayerLimits, PlayerMetrics, PlayerServer, ServeLimits, Server,
};
use crate::store::scrub::{self, ScrubConfig, ScrubStatus};
use crate::store::Store;
use crate::window::FillWindows;

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The data directory: the node's identity key, the store (index and data files) and,
    /// on the origin, the staging files of uploads.
    pub data: PathBuf,
    /// The mesh address: QUIC on UDP, and players' HTTPS on TCP at the same port number.
    /// Port 0 lets the kernel pick one whose TCP twin is free.
    pub listen: SocketAddr,
    /// Run as the origin: register as one, publish the titles held whole, and serve the
    /// ingest API on `http`, which it then requires.
    pub origin: bool,
    /// The node's operator surface over HTTP: `/metrics` and `/health` on every node, the
    /// ingest API on the origin. Players never see it (they use the mesh port); a
    /// non-loopback address is logged as a warning.
    pub http: Option<SocketAddr>,
    /// The PeerIds allowed mesh requests from the start; members the tracker vouches for are
    /// trusted as they are learned. Players are not affected.
    pub trust: Vec<PeerId>,
    /// Bytes per second sent at most, over peers and players together (uncapped when
    /// `None`); registered with the tracker as the node's upload (1 GB/s when `None`).
    pub upload_rate: Option<u64>,
    /// Limits of the mesh server.
    pub serve: ServeLimits,
    /// Limits of the player servers (HTTP/3 and HTTPS).
    pub players: PlayerLimits,
    /// Limits of the QUIC endpoint's connections: streams per peer, idle timeout, stream
    /// window.
    pub transport: TransportLimits,
    /// A certificate chain and key (PEM files) to present to players instead of the node's own.
    pub player_cert: Option<(PathBuf, PathBuf)>,
    /// The trackers to work under (none: a node on its own; several: one fleet).
    pub trackers: Vec<(SocketAddr, PeerId)>,
    /// The site this node stands in, registered with the trackers.
    pub site: String,
    /// The region of its site, registered with the trackers.
    pub region: String,
    /// The client prefixes this node serves, registered with the trackers for steering.
    pub prefixes: Vec<fillmesh_protocol::IpPrefix>,
    /// The store's quota in bytes of held chunks, also registered as the node's disk.
    pub disk_bytes: u64,
    /// The background scrub's pace; `None` turns it off.
    pub scrub: Option<ScrubConfig>,
    /// The tracker away this long, fills may ask the origin for chunks no parent offers ...
    pub plan_stale_after: Duration,
    /// ... at this many bytes per second at most.
    pub stale_origin_rate: u64,
    /// Caps of chunk bytes sent to peers, fetched by fills, and sent to players, each under
    /// `upload_rate` for what is sent (see [`crate::classes`]).
    pub fill_upload_rate: Option<u64>,
    /// See `fill_upload_rate`.
    pub fill_download_rate: Option<u64>,
    /// See `fill_upload_rate`.
    pub serve_rate: Option<u64>,
    /// When this node takes fill traffic (local time; see [`crate::window`]).
    pub fill_window: FillWindows,
    /// On [`Control::Stop`]: how long responses in flight may take to finish.
    pub drain: Duration,
}

impl NodeConfig {
    /// The rate caps of the configuration.
    pub fn rate_caps(&self) -> RateCaps {
        RateCaps {
            upload: self.upload_rate,
            fill_upload: self.fill_upload_rate,
            fill_download: self.fill_download_rate,
            serve: self.serve_rate,
        }
    }
}

/// What the binary asks of a running node (its signals).
#[derive(Debug)]
pub enum Control {
    /// SIGHUP: apply the settings that can change while the node runs (trust list, rates,
    /// fill window, disk quota, scrub, drain bound) and name in the log those that need a
    /// restart.
    Reload(Box<NodeConfig>),
    /// SIGTERM: drain, then exit. A second one while draining: exit at once.
    Stop,
}

/// Runs the node until `shutdown` resolves. Prints one line when ready, which scripts and
/// tests wait for: `fillmesh node <peer id> mesh <addr>[ http <addr>]`.
pub async fn run(config: NodeConfig, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    run_with(config, shutdown, |store| Sources { mesh: store.clone(), players: store }).await
}

/// [`run`], driven by `controls`: reloads as they come, and a drain on [`Control::Stop`]
/// (or when the sender is dropped).
pub async fn run_controlled(config: NodeConfig, controls: mpsc::Receiver<Control>) -> anyhow::Result<()> {
    serve(config, std::future::pending(), Some(controls), |store| Sources {
        mesh: store.clone(),
        players: store,
    })
    .await
}

/// What a node serves peers and players from.
pub struct Sources {
    /// What the mesh server answers trusted peers from.
    pub mesh: Arc<dyn ChunkSource>,
    /// What the player servers (HTTP/3 and HTTPS) answer players from.
    pub players: Arc<dyn ChunkSource>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

/// [`run`], with what peers and players are served from chosen by `sources` (given the
/// store). The binary always serves the store itself; tests put lying doubles here.
pub async fn run_with(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
    sources: impl FnOnce(Arc<Store>) -> Sources,
) -> anyhow::Result<()> {
    serve(config, shutdown, None, sources).await
}

async fn serve(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
    mut controls: Option<mpsc::Receiver<Control>>,
    sources: impl FnOnce(Arc<Store>) -> Sources,
) -> anyhow::Result<()> {
    let _watchdog = notify::watchdog();
    let key = identity::load_or_create(&config.data)?;
    let mut tls = TlsIdentity::new(&key)?;
    if let Some((cert, key)) = &config.player_cert {
        let chain = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
        let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
        tls = tls.with_player_certificate(&chain, &key)?;
    }
    let cert_sha256 = tls.player_spki_sha256();
    let peer = tls.peer_id();
    let store_dir = config.data.clone();
    let store = Arc::new(
        tokio::task::spawn_blocking(move || Store::open(&store_dir))
            .await?
            .with_context(|| format!("opening the store in {}", config.data.display()))?,
    );
    // Leftovers of uploads interrupted by a crash.
    let _ = std::fs::remove_dir_all(config.data.join("staging"));

    let player_tcp_tls = Arc::new(tls.player_tcp_config()?);
    // QUIC on UDP, and players' HTTPS on TCP on the same port number. With port 0 the
    // kernel picks a UDP port whose TCP twin may be taken by another program: another pick
    // then (bounded), as the operator asked for any port.
    let mut attempts = if config.listen.port() == 0 { 16 } else { 1 };
    let (endpoint, mesh_addr, player_tcp) = loop {
        attempts -= 1;
        let endpoint = MeshEndpoint::bind(config.listen, tls.clone(), config.transport.clone())?;
        let mesh_addr = endpoint.local_addr()?;
        match tokio::net::TcpListener::bind(mesh_addr).await {
            Ok(tcp) => break (endpoint, mesh_addr, tcp),
            Err(e) if attempts > 0 && e.kind() == std::io::ErrorKind::AddrInUse => {
                debug!(%mesh_addr, "TCP twin of the picked UDP port is taken; picking another");
                endpoint.close();
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot listen for HTTPS players on TCP {mesh_addr}")))
            }
        }
    };
    let socket = endpoint.socket_report();
    info!(%mesh_addr, "UDP socket: {socket}");
    if socket.capped() {
        warn!(%mesh_addr, "UDP socket buffers are smaller than asked ({socket}); {}", socket.hint());
    }
    let role = if config.origin { Role::Origin } else { Role::Appliance };
    store.set_quota(config.disk_bytes);
    let sources = sources(store.clone());
    // The rate buckets and the fill window, which a reload may change.
    let fill_live = FillLive::new(&config.rate_caps(), config.fill_window.clone());
    let trust = Trust::new(config.trust.iter().copied());
    let server = Server::new(sources.mesh, trust.clone(), config.serve.clone(), config.upload_rate, role)
        .with_rates(fill_live.rates.clone());
    // One registry for the whole node, shown at `/metrics` on its operator listener (`--http`)
    // only: never on the players' HTTP/3 and HTTPS.
    let fill_metrics = Arc::new(FillMetrics::default());
    let player_metrics = Arc::new(PlayerMetrics::default());
    let scrub_status = Arc::new(ScrubStatus::default());
    // Playback tokens: required under trackers (until they say otherwise), checked with the
    // public keys they hand out; a node on its own serves anyone.
    let gate = Arc::new(if config.trackers.is_empty() {
        Gate::open()
    } else {
        Gate::under_trackers(config.trackers.len(), &config.data)
    });
    let mut registry = crate::metrics::registry(
        store.clone(),
        &server.stats,
        &fill_metrics,
        &player_metrics,
        scrub_status.clone(),
    );
    gate.register(&mut registry);
    registry.register(
        "fillmesh_quic_connections_refused",
        "QUIC connections (players and peers) refused at once at the node's limits \
         (--max-connections, --max-handshakes)",
        endpoint.refused(),
    );
    let registry = Arc::new(registry);
    // Players and peers share the total cap, players first (`classes`).
    let player_sessions = player_metrics.sessions.clone();
    let drain = Arc::new(Drain::default());
    let players =
        PlayerServer::new(sources.players, config.players.clone(), fill_live.rates.clone(), player_metrics)
            .advertise_h3(mesh_addr.port())
            .with_gate(gate.clone())
            .with_drain(drain.clone())
            // One bound on chunk reads for peers and players together.
            .with_reads(server.reads().clone());
    let https = tokio::spawn(crate::serve::https::serve(
        players.clone(),
        player_tcp,
        player_tcp_tls,
        crate::serve::https::TcpLimits::from(&config.transport),
    ));
    let router = server.router().route(H3_ALPN, move |conn| players.clone().connection(conn));
    let serving = tokio::spawn(router.run(endpoint.clone()));
    let (published_tx, published_rx) = tokio::sync::mpsc::unbounded_channel();

    let mut ready =
        Ready { kind: ProcessKind::Node, peer: peer.to_string(), mesh: mesh_addr, http: None, admin: None };
    let http = match config.http {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let http_addr = listener.local_addr()?;
            if !http_addr.ip().is_loopback() {
                warn!(
                    %http_addr,
                    "--http is the node's operator surface (/metrics, /health and, on the origin, the ingest API `fillmesh seed` writes to) and has no authentication: keep it on loopback or a management network that players cannot reach"
                );
            }
            ready.http = Some(http_addr);
            // Every node: /metrics and /health. The origin: its ingest API too.
            let mut app = crate::metrics::route(registry.clone());
            if config.origin {
                app = app.merge(crate::origin::router(store.clone(), published_tx.clone()));
            }
            Some(tokio::spawn(async move { axum::serve(listener, app).await }))
        }
        None if config.origin => anyhow::bail!("--origin needs --http ADDR for `fillmesh seed` to reach it"),
        None => None,
    };
    let (draining, told) = (watch::Sender::new(false), Arc::new(watch::Sender::new(0usize)));
    let (registered, on_registered) = watch::channel(false);
    let member = (!config.trackers.is_empty()).then(|| {
        let member = MemberConfig {
            trackers: config.trackers.clone(),
            role,
            mesh_addr,
            site: config.site.clone(),
            region: config.region.clone(),
            prefixes: config.prefixes.clone(),
            upload_bps: config.rate_caps().stated_upload(),
            disk_bytes: config.disk_bytes,
            parallel: 8,
            plan_stale_after: config.plan_stale_after,
            stale_origin_rate: config.stale_origin_rate,
            cert_sha256,
            player_sessions,
            gate,
            rates: fill_live.rates.clone(),
            windows: fill_live.windows.subscribe(),
            draining: draining.subscribe(),
            told_draining: told.clone(),
            registered,
        };
        tokio::spawn(crate::member::run(
            member,
            endpoint.clone(),
            store.clone(),
            server.clone(),
            fill_metrics.clone(),
            published_rx,
        ))
    });
    let scrub_task = |pace: Option<ScrubConfig>| {
        pace.map(|pace| tokio::spawn(scrub::run(store.clone(), pace, scrub_status.clone())))
    };
    let titles = store.titles();
    info!(%peer, %mesh_addr, ?role, titles = titles.len(), fill_window = %config.fill_window, "node ready");
    let mut live = Live { scrubbing: scrub_task(config.scrub), config, trust, fill: fill_live };
    say!("{ready}");
    notify::ready_once_registered(member.is_some(), on_registered, format!("serving on {mesh_addr}"));

    tokio::pin!(shutdown);
    // Bounded by the process's life: one turn per signal.
    loop {
        let control = async {
            match controls.as_mut() {
                Some(c) => c.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            control = control => match control {
                Some(Control::Reload(new)) => {
                    let scrub_changed = new.scrub != live.config.scrub;
                    live.apply(*new, &store);
                    if scrub_changed {
                        // A pass starts again from the first title at the new pace.
                        if let Some(task) = live.scrubbing.take() {
                            task.abort();
                        }
                        live.scrubbing = scrub_task(live.config.scrub);
                    }
                }
                Some(Control::Stop) | None => {
                    notify::stopping("draining");
                    let bound = live.config.drain;
                    let second = async {
                        match controls.as_mut() {
                            Some(c) => { let _ = c.recv().await; }
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        () = drained(&drain, &draining, &told, &endpoint, bound, live.config.trackers.len()) => {}
                        () = second => warn!("stopped again while draining: exiting now"),
                    }
                    if let Err(e) = store.flush() {
                        warn!("flushing the index: {e}");
                    }
                    break;
                }
            },
        }
    }
    notify::stopping("shutting down");
    info!("shutting down");
    endpoint.close();
    if let Some(h) = http {
        h.abort();
    }
    https.abort();
    for task in [member, live.scrubbing.take()].into_iter().flatten() {
        task.abort();
    }
    serving.abort();
    endpoint.inner().wait_idle().await;
    Ok(())
}

/// The drain: the trackers told (steering stops naming this node), new connections and
/// requests turned away, then the responses in flight finished, within `bound`.
async fn drained(
    drain: &Drain,
    draining: &watch::Sender<bool>,
    told: &Arc<watch::Sender<usize>>,
    endpoint: &MeshEndpoint,
    bound: Duration,
    trackers: usize,
) {
    let started = tokio::time::Instant::now();
    info!(
        in_flight = drain.in_flight(),
        bound_secs = bound.as_secs(),
        "draining: telling the trackers, turning new players away"
    );
    draining.send_replace(true);
    drain.start();
    // New QUIC connections (players' and peers') are refused at once from now on, so a
    // player is sent on rather than left to time out; those open finish what they asked.
    endpoint.inner().set_server_config(None);
    let mut told_rx = told.subscribe();
    let all_told = told_rx.wait_for(|n| *n >= trackers);
    // A tracker away does not hold the drain up for long: it stops steering here anyway once
    // the node's connection drops.
    let _ = tokio::time::timeout(bound.min(Duration::from_secs(3)), all_told).await;
    let left = bound.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, drain.idle()).await {
        Ok(()) => info!(secs = started.elapsed().as_secs_f32(), "drained: no response in flight"),
        Err(_) => {
            warn!(in_flight = drain.in_flight(), "drain bound reached: exiting with responses in flight")
        }
    }
}

/// The settings a running node applies on a reload, and the handles that apply them.
struct Live {
    config: NodeConfig,
    trust: Trust,
    /// The rate buckets (every class and the total) and the fill window.
    fill: FillLive,
    scrubbing: Option<tokio::task::JoinHandle<()>>,
}

impl Live {
    /// Applies what can change while the node runs; logs each change and each setting that
    /// differs but needs a restart.
    fn apply(&mut self, new: NodeConfig, store: &Store) {
        let old = &self.config;
        if new.trust != old.trust {
            let (added, removed) = self.trust.relist(new.trust.iter().copied());
            info!(added, removed, "reload: trust list changed");
        }
        // Every rate (capped or not) and the fill window change live; the trackers hear the
        // window at once, the upload the node registers at its next registration.
        for change in self.fill.apply(&new.rate_caps(), new.fill_window.clone()) {
            info!("reload: {change}");
        }
        if new.disk_bytes != old.disk_bytes {
            store.set_quota(new.disk_bytes);
            info!(
                from = old.disk_bytes,
                to = new.disk_bytes,
                "reload: disk quota changed (the trackers hear it at the next registration)"
            );
        }
        if new.scrub != old.scrub {
            info!(scrub = ?new.scrub, "reload: scrub settings changed");
        }
        if new.drain != old.drain {
            info!(secs = new.drain.as_secs(), "reload: drain bound changed");
        }
        let fixed = [
            ("data", new.data != old.data),
            ("listen", new.listen != old.listen),
            ("origin", new.origin != old.origin),
            ("http", new.http != old.http),
            ("tls_cert/tls_key", new.player_cert != old.player_cert),
            ("tracker/tracker_id", new.trackers != old.trackers),
            ("site", new.site != old.site),
            ("region", new.region != old.region),
            ("serve_prefix", new.prefixes != old.prefixes),
            ("max_requests", new.serve.max_requests != old.serve.max_requests),
            ("chunk_reads", new.serve.chunk_reads != old.serve.chunk_reads),
            ("max_player_requests", new.players != old.players),
            (
                "max_streams_per_peer",
                new.transport.max_streams_per_connection != old.transport.max_streams_per_connection,
            ),
            ("udp_buffer", new.transport.udp_buffer != old.transport.udp_buffer),
            ("max_connections", new.transport.max_connections != old.transport.max_connections),
            ("max_handshakes", new.transport.max_handshakes != old.transport.max_handshakes),
            ("connection_rate", new.transport.connection_rate != old.transport.connection_rate),
            ("plan_stale_after", new.plan_stale_after != old.plan_stale_after),
            ("stale_origin_rate", new.stale_origin_rate != old.stale_origin_rate),
        ];
        for (key, changed) in fixed {
            if changed {
                warn!(
                    key,
                    "reload: {key} cannot change while the node runs; restart it to apply the new value"
                );
            }
        }
        let restart_only = NodeConfig {
            trust: new.trust.clone(),
            upload_rate: new.upload_rate,
            fill_upload_rate: new.fill_upload_rate,
            fill_download_rate: new.fill_download_rate,
            serve_rate: new.serve_rate,
            fill_window: new.fill_window.clone(),
            disk_bytes: new.disk_bytes,
            scrub: new.scrub,
            drain: new.drain,
            ..old.clone()
        };
        self.config = restart_only;
    }
}
