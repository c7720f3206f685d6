//! `fillmesh node`: an appliance, or the origin with `--origin`, until stopped.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use fillmesh_net::TransportLimits;
use fillmesh_protocol::units;
use libp2p_identity::PeerId;

use super::{runtime, shutdown_signal};
use fillmesh_node::daemon::{self, NodeConfig};
use fillmesh_node::serve::ServeLimits;
use fillmesh_node::store::scrub::ScrubConfig;

#[derive(Debug, Args)]
pub struct NodeArgs {
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
    /// Upload rate cap shared by all peers, e.g. 50MB (bytes per second).
    #[arg(long, value_parser = units::parse_size)]
    pub upload_rate: Option<u64>,
    /// Mesh requests served at once by this node.
    #[arg(long, default_value_t = 64)]
    pub max_requests: usize,
    /// Mesh streams one peer may have open at once.
    #[arg(long, default_value_t = 16)]
    pub max_streams_per_peer: u32,
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
}

/// Runs the node (or prints its PeerId) until Ctrl-C or SIGTERM.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    if args.print_id {
        return super::print_peer_id(&args.data);
    }
    let config = NodeConfig {
        data: args.data,
        listen: args.listen,
        origin: args.origin,
        http: args.http,
        trust: args.trust,
        upload_rate: args.upload_rate,
        serve: ServeLimits { max_requests: args.max_requests.max(1), ..ServeLimits::default() },
        transport: TransportLimits {
            max_streams_per_connection: args.max_streams_per_peer.max(1),
            ..TransportLimits::default()
        },
        player_cert: args.tls_cert.zip(args.tls_key),
        trackers: args.tracker.iter().copied().zip(args.tracker_id.iter().copied()).collect(),
        site: args.site,
        region: args.region,
        prefixes: args.serve_prefix,
        disk_bytes: args.disk_quota,
        scrub: (args.scrub_rate > 0).then(|| ScrubConfig {
            rate: args.scrub_rate,
            interval: std::time::Duration::from_secs(args.scrub_interval_secs),
        }),
        plan_stale_after: args.plan_stale_after,
        stale_origin_rate: args.stale_origin_rate,
    };
    anyhow::ensure!(
        args.tracker.len() == args.tracker_id.len(),
        "give one --tracker-id per --tracker, in the same order ({} and {})",
        args.tracker.len(),
        args.tracker_id.len()
    );
    anyhow::ensure!(
        args.tracker.len() <= fillmesh_protocol::messages::MAX_TRACKERS,
        "at most {} trackers",
        fillmesh_protocol::messages::MAX_TRACKERS
    );
    for (what, label) in [("site", &config.site), ("region", &config.region)] {
        anyhow::ensure!(
            !label.is_empty() && label.len() <= fillmesh_protocol::messages::MAX_LABEL,
            "--{what} must be 1 to {} bytes",
            fillmesh_protocol::messages::MAX_LABEL
        );
    }
    anyhow::ensure!(
        config.prefixes.len() <= fillmesh_protocol::messages::MAX_PREFIXES,
        "at most {} --serve-prefix",
        fillmesh_protocol::messages::MAX_PREFIXES
    );
    runtime()?.block_on(daemon::run(config, shutdown_signal()))
}
