//! `fillmesh node`: an appliance, or the origin with `--origin`, until stopped.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use fillmesh_net::endpoint::{DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HANDSHAKES};
use fillmesh_net::TransportLimits;
use fillmesh_protocol::units;
use libp2p_identity::PeerId;

use std::ffi::OsString;

use super::runtime;
use crate::config::{self, ConfigError, Settings};
use fillmesh_node::daemon::{self, Control, NodeConfig};
use fillmesh_node::serve::{PlayerLimits, ServeLimits};
use fillmesh_node::store::scrub::ScrubConfig;
use fillmesh_node::window::{FillWindows, LocalRange};
use tokio::sync::mpsc::Sender;

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// A TOML file of settings: every flag is a key of the same name in snake case
    /// (`upload_rate = "50MB"`). The command line, then `FILLMESH_<KEY>` variables, win over it;
    /// SIGHUP reads it again.
    #[arg(long, env = "FILLMESH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective settings (as a config file, each with where it came from) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Data directory: identity, index and chunk files.
    #[arg(long)]
    pub data: PathBuf,
    /// Mesh (QUIC) address.
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub listen: SocketAddr,
    /// Print this node's PeerId (creating the identity if needed) and exit.
    #[arg(long)]
    pub print_id: bool,
    /// Run as the origin: accepts titles from `fillmesh seed` on --http.
    #[arg(long)]
    pub origin: bool,
    /// The node's operator HTTP address (no authentication): /metrics and /health on every
    /// node; the ingest API (`fillmesh seed`) on the origin. Keep it on loopback (e.g.
    /// 127.0.0.1:8080) or a management network: a non-loopback address is logged as a
    /// warning. Players use the mesh port, which serves none of this.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// A PeerId allowed to make mesh requests (repeatable).
    #[arg(long = "trust", value_name = "PEERID")]
    pub trust: Vec<PeerId>,
    /// Cap on everything sent, peers and players together, e.g. 50MB (bytes per second);
    /// under it players go first (see --serve-rate, --fill-upload-rate).
    #[arg(long, value_parser = units::parse_size)]
    pub upload_rate: Option<u64>,
    /// Cap on chunk bytes sent to peers filling from this node, e.g. 150MB (bytes per
    /// second), within --upload-rate and behind the players; registered as the node's upload.
    #[arg(long, value_parser = units::parse_size)]
    pub fill_upload_rate: Option<u64>,
    /// Cap on chunk bytes this node's fills fetch, e.g. 150MB (bytes per second).
    #[arg(long, value_parser = units::parse_size)]
    pub fill_download_rate: Option<u64>,
    /// Cap on bytes sent to players, e.g. 1GB (bytes per second), within --upload-rate.
    #[arg(long, value_parser = units::parse_size)]
    pub serve_rate: Option<u64>,
    /// A range of the host's local day in which this node takes fill traffic, HH:MM-HH:MM
    /// (e.g. 02:00-14:00; 22:00-06:00 wraps midnight); repeatable, at most 8, none: always.
    /// Outside them it neither fills nor fills others, except titles seeded --urgent, and
    /// serves players as always.
    #[arg(long = "fill-window", value_name = "HH:MM-HH:MM")]
    pub fill_window: Vec<LocalRange>,
    /// Mesh requests served at once by this node.
    #[arg(long, default_value_t = 64)]
    pub max_requests: usize,
    /// Player requests (HTTP/3 and HTTPS) served at once; one more is answered 503 at once.
    /// Each holds up to two chunks in memory while its body is sent.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_player_requests: u64,
    /// Chunk reads (a read from disk and its verification) the node runs at once, for peers
    /// and players together; more wait their turn, first come first served. Default: four
    /// per core.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub chunk_reads: Option<u64>,
    /// Mesh streams one peer may have open at once.
    #[arg(long, default_value_t = 16)]
    pub max_streams_per_peer: u32,
    /// Receive and send buffer of the node's UDP socket, e.g. 16MiB (at most 1GiB). The
    /// kernel caps it at net.core.rmem_max/wmem_max unless the node may pass them
    /// (CAP_NET_ADMIN); the node logs what it was granted and how to raise the cap.
    #[arg(long, value_parser = units::parse_size, default_value = "16MiB")]
    pub udp_buffer: u64,
    /// Connections the node holds at once on each transport (QUIC: players and peers; TCP:
    /// players); one more is refused at once, so that its player goes to another appliance.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// QUIC and TLS handshakes the node runs at once; more are refused at once.
    #[arg(long, default_value_t = DEFAULT_MAX_HANDSHAKES as u64,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_handshakes: u64,
    /// New connections the node takes a second on each transport (a second's worth at once);
    /// one more is refused at once, as past --max-connections. Players that arrive together
    /// each want their buffer filled at once: this spreads a crowd's arrival over appliances.
    /// Default 0: no limit.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub connection_rate: u32,
    /// A tracker's mesh address; the node registers and fills under its plans. Repeat it,
    /// with --tracker-id, once per tracker of a fleet: the node registers with each.
    #[arg(long, requires = "tracker_id")]
    pub tracker: Vec<SocketAddr>,
    /// The PeerId of the tracker named by the --tracker in the same position (as `fillmesh
    /// tracker --print-id` shows it).
    #[arg(long, requires = "tracker")]
    pub tracker_id: Vec<PeerId>,
    /// The site this appliance stands in.
    #[arg(long, default_value = "default")]
    pub site: String,
    /// The region of its site.
    #[arg(long, default_value = "default")]
    pub region: String,
    /// A client prefix this appliance serves, e.g. 127.0.1.0/24 (repeatable).
    #[arg(long = "serve-prefix", value_name = "CIDR")]
    pub serve_prefix: Vec<fillmesh_protocol::IpPrefix>,
    /// Disk the appliance may fill, e.g. 500GiB.
    #[arg(long, value_parser = units::parse_size, default_value = "1TiB")]
    pub disk_quota: u64,
    /// A PEM certificate chain to present to players (HTTP/3 and HTTPS on TCP) instead of the
    /// node's own.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Bytes per second the background scrub re-verifies held chunks at, e.g. 16MB; 0 turns
    /// the scrub off.
    #[arg(long, value_parser = units::parse_size, default_value_t = ScrubConfig::DEFAULT_RATE)]
    pub scrub_rate: u64,
    /// Seconds between the starts of two scrub passes at least.
    #[arg(long, default_value_t = ScrubConfig::DEFAULT_INTERVAL.as_secs())]
    pub scrub_interval_secs: u64,
    /// With the tracker unreachable this long, fills also ask the origin for chunks no parent
    /// offers (paced by --stale-origin-rate); until then they fill from the parents and
    /// origin slice of their last plan alone.
    #[arg(long, value_parser = units::parse_duration, default_value = "60s")]
    pub plan_stale_after: std::time::Duration,
    /// Bytes per second this appliance asks of the origin at most while its plan is stale.
    #[arg(long, value_parser = units::parse_size, default_value = "10MB")]
    pub stale_origin_rate: u64,
    /// On SIGTERM: seconds the node keeps serving the responses in flight, after telling its
    /// trackers and refusing new players, before it exits.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_secs: u64,
}

impl Settings for NodeArgs {
    type Config = NodeConfig;

    fn print_id(&self) -> Option<&std::path::Path> {
        self.print_id.then_some(self.data.as_path())
    }

    fn print_config(&self) -> bool {
        self.print_config
    }

    fn config(self) -> Result<NodeConfig, Vec<String>> {
        use fillmesh_protocol::messages::{MAX_LABEL, MAX_PREFIXES, MAX_TRACKERS};
        let mut problems = Vec::new();
        if self.tracker.len() != self.tracker_id.len() {
            problems.push(format!(
                "give one --tracker-id per --tracker, in the same order ({} and {})",
                self.tracker.len(),
                self.tracker_id.len()
            ));
        }
        if self.tracker.len() > MAX_TRACKERS {
            problems.push(format!("at most {MAX_TRACKERS} --tracker ({} given)", self.tracker.len()));
        }
        for (what, label) in [("site", &self.site), ("region", &self.region)] {
            if label.is_empty() || label.len() > MAX_LABEL {
                problems.push(format!("--{what} must be 1 to {MAX_LABEL} bytes"));
            }
        }
        if self.serve_prefix.len() > MAX_PREFIXES {
            problems
                .push(format!("at most {MAX_PREFIXES} --serve-prefix ({} given)", self.serve_prefix.len()));
        }
        match self.http {
            None if self.origin => {
                problems.push("--origin needs --http ADDR for `fillmesh seed` to reach it".to_owned())
            }
            Some(http) if same_tcp_port(http, self.listen) => problems.push(format!(
                "--http {http} and --listen {} take the same TCP port (players' HTTPS listens on \
                 --listen's port)",
                self.listen
            )),
            _ => {}
        }
        for (flag, path) in [("tls-cert", &self.tls_cert), ("tls-key", &self.tls_key)] {
            if let Some(path) = path {
                if let Err(e) = std::fs::File::open(path) {
                    problems.push(format!("--{flag} {}: {e}", path.display()));
                }
            }
        }
        if self.udp_buffer > 1 << 30 {
            problems.push(format!("--udp-buffer {} is over 1GiB", self.udp_buffer));
        }
        let fill_window = FillWindows::new(self.fill_window.clone()).unwrap_or_else(|e| {
            problems.push(format!("--fill-window: {e}"));
            FillWindows::always()
        });
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(NodeConfig {
            data: self.data,
            listen: self.listen,
            origin: self.origin,
            http: self.http,
            trust: self.trust,
            upload_rate: self.upload_rate,
            serve: {
                let defaults = ServeLimits::default();
                ServeLimits {
                    max_requests: self.max_requests.max(1),
                    chunk_reads: self
                        .chunk_reads
                        .map_or(defaults.chunk_reads, |n| usize::try_from(n).unwrap_or(usize::MAX)),
                    ..defaults
                }
            },
            players: PlayerLimits {
                max_requests: usize::try_from(self.max_player_requests).unwrap_or(usize::MAX),
                ..PlayerLimits::default()
            },
            transport: TransportLimits {
                max_streams_per_connection: self.max_streams_per_peer.max(1),
                udp_buffer: usize::try_from(self.udp_buffer).unwrap_or(usize::MAX),
                max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
                max_handshakes: usize::try_from(self.max_handshakes).unwrap_or(usize::MAX),
                connection_rate: self.connection_rate,
                ..TransportLimits::default()
            },
            player_cert: self.tls_cert.zip(self.tls_key),
            trackers: self.tracker.iter().copied().zip(self.tracker_id.iter().copied()).collect(),
            site: self.site,
            region: self.region,
            prefixes: self.serve_prefix,
            disk_bytes: self.disk_quota,
            scrub: (self.scrub_rate > 0).then(|| ScrubConfig {
                rate: self.scrub_rate,
                interval: std::time::Duration::from_secs(self.scrub_interval_secs),
            }),
            plan_stale_after: self.plan_stale_after,
            stale_origin_rate: self.stale_origin_rate,
            fill_upload_rate: self.fill_upload_rate,
            fill_download_rate: self.fill_download_rate,
            serve_rate: self.serve_rate,
            fill_window,
            drain: std::time::Duration::from_secs(self.drain_secs),
        })
    }
}

/// Whether two addresses would take the same TCP port on this host.
pub(crate) fn same_tcp_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Runs the node (or prints its PeerId or its settings) until SIGTERM or Ctrl-C, which drain
/// it; SIGHUP reads the settings again and applies what can change while it runs.
pub fn run(tail: Vec<OsString>) -> anyhow::Result<()> {
    let Some(config) = config::start::<NodeArgs>("node", &tail)? else { return Ok(()) };
    runtime()?.block_on(async move {
        let (control, controls) = tokio::sync::mpsc::channel(4);
        tokio::spawn(signals(control, move || config::resolve::<NodeArgs>("node", &tail)?.config()));
        daemon::run_controlled(config, controls).await
    })
}

/// Turns signals into controls: SIGHUP reads the settings again (`reread`) and hands them
/// over, or logs why not and changes nothing; SIGTERM and Ctrl-C stop (drain; a second one
/// exits at once).
async fn signals(control: Sender<Control>, reread: impl Fn() -> Result<NodeConfig, ConfigError>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut hup, mut term) = match (signal(SignalKind::hangup()), signal(SignalKind::terminate())) {
        (Ok(hup), Ok(term)) => (hup, term),
        (Err(e), _) | (_, Err(e)) => {
            // The node runs on (the sender kept: dropping it would stop the node), without
            // reloads or a drain.
            tracing::error!("cannot listen for signals, so no reload and no drain: {e}");
            let _keep = control;
            return std::future::pending().await;
        }
    };
    // Bounded by the process's life: one turn per signal.
    loop {
        let sent = tokio::select! {
            _ = hup.recv() => match reread() {
                Ok(config) => {
                    tracing::info!("SIGHUP: settings read again");
                    control.send(Control::Reload(Box::new(config))).await
                }
                Err(e) => {
                    tracing::error!("SIGHUP: settings not applied, the node goes on as it was:\n{e}");
                    Ok(())
                }
            },
            _ = term.recv() => control.send(Control::Stop).await,
            _ = tokio::signal::ctrl_c() => control.send(Control::Stop).await,
        };
        if sent.is_err() {
            return;
        }
    }
}
