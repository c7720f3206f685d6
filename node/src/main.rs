//! The `fillmesh` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use fillmesh_node::daemon::{self, NodeConfig};
use fillmesh_node::fetch::{fetch_title, FetchOptions, Source};
use fillmesh_node::id::{b3sum_line, title_id_of_file};
use fillmesh_node::serve::ServeLimits;
use fillmesh_node::store::Store;
use fillmesh_node::tls::TlsIdentity;
use fillmesh_node::tracker_server::{self, TrackerConfig};
use fillmesh_node::transport::{MeshEndpoint, TransportLimits};
use fillmesh_node::{identity, say, units};
use fillmesh_protocol::{ChunkSize, TitleId};
use fillmesh_tracker::core::Policy;
use libp2p_identity::PeerId;

/// mimalloc keeps freed chunk buffers for reuse instead of returning them to the kernel
/// after each chunk: glibc's allocator page-faulted every fresh 1 MiB buffer.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "fillmesh", version, about = "Peer-assisted content distribution overlay")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the title id of each FILE, in the same form as `b3sum FILE`.
    Id {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run an appliance, or the origin with --origin.
    Node(Box<NodeArgs>),
    /// Hand FILE to a running origin, which stores and publishes it; prints the title id.
    Seed(SeedArgs),
    /// Download one title, verified, from one or more named nodes.
    Fetch(FetchArgs),
    /// Run the tracker: mesh API over QUIC, steering, status and metrics over HTTP.
    Tracker(TrackerArgs),
    /// Stream a title over HTTP/3 from the appliance the tracker steers to, verifying every
    /// chunk, failing over down the steering list; prints a summary.
    Play(PlayArgs),
    /// The main job: a whole mesh on this machine, a title filled and played, and a report.
    Demo(DemoArgs),
    /// Print the mesh state as JSON.
    Status {
        /// The tracker's --http URL, e.g. http://127.0.0.1:8000
        #[arg(long)]
        tracker_http: String,
    },
    /// Simulate filling a title over thousands of appliances with the tracker's own planner.
    Sim(fillmesh_sims::cli::SimArgs),
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Appliances to start (in 2 regions, 2 per site).
    #[arg(long, default_value_t = 8)]
    appliances: usize,
    /// Size of the generated sample title.
    #[arg(long, value_parser = units::parse_bytes, default_value = "128MiB")]
    size: u64,
    /// Use this file as the title instead of a generated one.
    #[arg(long)]
    file: Option<PathBuf>,
    /// The origin's upload cap (bytes per second), so the mesh has something to prove.
    #[arg(long, value_parser = units::parse_bytes, default_value = "100MB")]
    upload_rate: u64,
    /// Keep every data directory and log here instead of removing them.
    #[arg(long)]
    keep: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PlayArgs {
    title: TitleId,
    /// The tracker's --http URL, e.g. http://127.0.0.1:8000
    #[arg(long)]
    tracker_http: String,
    /// Steer as this client address (default: the address the tracker sees).
    #[arg(long)]
    client_ip: Option<std::net::IpAddr>,
    /// Write the verified title here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Chunk requests in flight (the read-ahead window).
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Seconds without progress before failing over.
    #[arg(long, default_value_t = 5)]
    stall_secs: u64,
    /// Consume at most this many bytes per second, as a player at a bitrate (e.g. 8MB).
    #[arg(long, value_parser = units::parse_bytes)]
    rate: Option<u64>,
}

#[derive(Debug, Args)]
struct TrackerArgs {
    /// Data directory: identity, catalog and registry.
    #[arg(long)]
    data: PathBuf,
    /// Mesh (QUIC) address appliances connect to.
    #[arg(long, default_value = "127.0.0.1:4400")]
    listen: SocketAddr,
    /// HTTP address for players and operators (/steer, /status, /metrics).
    #[arg(long, default_value = "127.0.0.1:8000")]
    http: SocketAddr,
    /// Print the tracker's PeerId (creating the identity if needed) and exit.
    #[arg(long)]
    print_id: bool,
    /// A PeerId allowed to register (repeatable).
    #[arg(long = "trust", value_name = "PEERID")]
    trust: Vec<PeerId>,
    /// A file of PeerIds allowed to register, one per line (# comments allowed).
    #[arg(long)]
    trust_file: Option<PathBuf>,
    /// `mesh` (appliances fill one another) or `origin-only` (every appliance pulls from the
    /// origin: for comparison runs).
    #[arg(long, default_value = "mesh")]
    policy: String,
    /// Seed of the planner's tie-breaking.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Distinct appliances that must report corrupt chunks from a node before it is excluded
    /// for everyone (one report excludes it only for the reporter).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=16))]
    corrupt_quorum: u8,
    /// Percent of an appliance's disk quota the planner fills; beyond it, less recently
    /// wanted titles are evicted to make room for a newer one.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    evict_watermark: u8,
    /// Seconds after its last player during which a title is never evicted.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    evict_min_idle_secs: u64,
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// Data directory: identity, index and chunk files.
    #[arg(long)]
    data: PathBuf,
    /// Mesh (QUIC) address.
    #[arg(long, default_value = "127.0.0.1:4433")]
    listen: SocketAddr,
    /// Print this node's PeerId (creating the identity if needed) and exit.
    #[arg(long)]
    print_id: bool,
    /// Run as the origin: accepts titles from `fillmesh seed` on --http.
    #[arg(long)]
    origin: bool,
    /// HTTP address: /metrics and /health on every node; the ingest API on the origin.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// A PeerId allowed to make mesh requests (repeatable).
    #[arg(long = "trust", value_name = "PEERID")]
    trust: Vec<PeerId>,
    /// Upload rate cap shared by all peers, e.g. 50MB (bytes per second).
    #[arg(long, value_parser = units::parse_bytes)]
    upload_rate: Option<u64>,
    /// Mesh requests served at once by this node.
    #[arg(long, default_value_t = 64)]
    max_requests: usize,
    /// Mesh streams one peer may have open at once.
    #[arg(long, default_value_t = 16)]
    max_streams_per_peer: u32,
    /// The tracker's mesh address; the node registers and fills under its plans.
    #[arg(long, requires = "tracker_id")]
    tracker: Option<SocketAddr>,
    /// The tracker's PeerId (as `fillmesh tracker --print-id` shows it).
    #[arg(long, requires = "tracker")]
    tracker_id: Option<PeerId>,
    /// The site this appliance stands in.
    #[arg(long, default_value = "default")]
    site: String,
    /// The region of its site.
    #[arg(long, default_value = "default")]
    region: String,
    /// A client prefix this appliance serves, e.g. 127.0.1.0/24 (repeatable).
    #[arg(long = "serve-prefix", value_name = "CIDR")]
    serve_prefix: Vec<fillmesh_protocol::IpPrefix>,
    /// Disk the appliance may fill, e.g. 500GiB.
    #[arg(long, value_parser = units::parse_bytes, default_value = "1TiB")]
    disk_quota: u64,
    /// A PEM certificate chain to present to players (HTTP/3) instead of the node's own.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct SeedArgs {
    file: PathBuf,
    /// The origin's --http URL, e.g. http://127.0.0.1:8080
    #[arg(long)]
    origin: String,
    /// The title's name (default: the file name).
    #[arg(long)]
    name: Option<String>,
    /// Chunk size, a power of two from 1KiB to 64MiB.
    #[arg(long, value_parser = units::parse_bytes, default_value = "1MiB")]
    chunk_size: u64,
}

#[derive(Debug, Args)]
struct FetchArgs {
    title: TitleId,
    /// A source's mesh address (repeatable; pairs with --peer in order).
    #[arg(long = "from", value_name = "ADDR", required = true)]
    from: Vec<SocketAddr>,
    /// A source's PeerId (repeatable; pairs with --from in order).
    #[arg(long = "peer", value_name = "PEERID", required = true)]
    peer: Vec<PeerId>,
    /// Where to write the verified title.
    #[arg(long)]
    out: PathBuf,
    /// Keep identity and chunks here (resumable); otherwise both are temporary.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Chunk requests in flight per source.
    #[arg(long, default_value_t = 4)]
    per_source: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FILLMESH_LOG")
                .unwrap_or_else(|_| "info,quinn=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fillmesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Id { files } => id(&files),
        Command::Node(args) => node(*args),
        Command::Seed(args) => runtime()?.block_on(seed(args)),
        Command::Fetch(args) => runtime()?.block_on(fetch(args)),
        Command::Tracker(args) => tracker(args),
        Command::Status { tracker_http } => runtime()?.block_on(status(&tracker_http)),
        Command::Play(args) => runtime()?.block_on(play(args)),
        Command::Sim(args) => fillmesh_sims::cli::run(args),
        Command::Demo(args) => {
            runtime()?.block_on(fillmesh_node::demo::run(fillmesh_node::demo::DemoOptions {
                appliances: args.appliances,
                size: args.size,
                file: args.file,
                origin_upload_rate: args.upload_rate,
                keep: args.keep,
            }))
        }
    }
}

fn id(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut failed = 0usize;
    for path in files {
        match title_id_of_file(path).with_context(|| format!("{}", path.display())) {
            Ok(id) => say!("{}", b3sum_line(&id, &path.to_string_lossy())),
            Err(e) => {
                eprintln!("fillmesh: {e:#}");
                failed += 1;
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} of {} files could not be read", files.len());
    Ok(())
}

fn node(args: NodeArgs) -> anyhow::Result<()> {
    if args.print_id {
        let key = identity::load_or_create(&args.data)?;
        say!("{}", identity::peer_id(&key));
        return Ok(());
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
        tracker: args.tracker.zip(args.tracker_id),
        site: args.site,
        region: args.region,
        prefixes: args.serve_prefix,
        disk_bytes: args.disk_quota,
    };
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

fn tracker(args: TrackerArgs) -> anyhow::Result<()> {
    if args.print_id {
        let key = identity::load_or_create(&args.data)?;
        say!("{}", identity::peer_id(&key));
        return Ok(());
    }
    let mut trust = args.trust;
    if let Some(file) = &args.trust_file {
        trust.extend(tracker_server::read_trust_file(file)?);
    }
    let policy = match args.policy.as_str() {
        "mesh" => Policy::Mesh,
        "origin-only" => Policy::OriginOnly,
        other => anyhow::bail!("--policy {other:?}: use mesh or origin-only"),
    };
    let config = TrackerConfig {
        data: args.data,
        listen: args.listen,
        http: args.http,
        trust,
        policy,
        seed: args.seed,
        corrupt_quorum: args.corrupt_quorum.into(),
        evict_watermark_pct: args.evict_watermark,
        evict_min_idle_ms: args.evict_min_idle_secs * 1000,
    };
    runtime()?.block_on(tracker_server::run(config, shutdown_signal()))
}

async fn play(args: PlayArgs) -> anyhow::Result<()> {
    let opts = fillmesh_node::play::PlayOptions {
        tracker_http: args.tracker_http,
        client_ip: args.client_ip,
        out: args.out,
        window: args.window.clamp(1, 64),
        stall: Duration::from_secs(args.stall_secs.max(1)),
        rate: args.rate,
    };
    let s = fillmesh_node::play::play(args.title, &opts).await?;
    let secs = s.total.as_secs_f64().max(1e-9);
    say!(
        "played {}: {} bytes in {:.3} s, {:.1} MB/s, time to first byte {:.1} ms, every byte verified",
        s.title,
        s.bytes,
        secs,
        s.bytes as f64 / secs / 1e6,
        s.time_to_first_byte.as_secs_f64() * 1e3
    );
    if let Some((peer, site, region, _)) = s.appliances.iter().find(|a| a.3 > 0) {
        say!("served by {peer} (site {site}, region {region})");
    }
    for (peer, site, region, bytes) in &s.appliances {
        say!("appliance {peer} (site {site}, region {region}): {bytes} bytes");
    }
    say!("failovers: {}", s.failovers);
    Ok(())
}

async fn status(url: &str) -> anyhow::Result<()> {
    let base = url.trim_end_matches('/');
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let response =
        client.get(format!("{base}/status")).send().await.with_context(|| format!("cannot reach {base}"))?;
    let code = response.status();
    let body = response.text().await?;
    anyhow::ensure!(code.is_success(), "the tracker answered {code}: {}", body.trim());
    let json: serde_json::Value = serde_json::from_str(&body).context("the tracker's status is not JSON")?;
    say!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    ChunkSize::new(args.chunk_size)?;
    let path = args.file.clone();
    let before = std::fs::metadata(&path).with_context(|| format!("{}", path.display()))?;
    anyhow::ensure!(before.is_file(), "{} is not a regular file", path.display());
    let hash_path = path.clone();
    let id = tokio::task::spawn_blocking(move || title_id_of_file(&hash_path))
        .await?
        .with_context(|| format!("reading {}", path.display()))?;
    let base = args.origin.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
    let probe = client
        .get(format!("{base}/titles/{id}"))
        .send()
        .await
        .with_context(|| format!("cannot reach the origin at {base}"))?;
    if probe.status().is_success() {
        eprintln!("already seeded");
        say!("{id}");
        return Ok(());
    }
    let name = args
        .name
        .unwrap_or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let file = tokio::fs::File::open(&path).await.with_context(|| format!("{}", path.display()))?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
    let response = client
        .post(format!("{base}/titles"))
        .query(&[("name", name.as_str()), ("chunk_size", &args.chunk_size.to_string())])
        .header(fillmesh_node::origin::TITLE_HEADER, id.to_string())
        .header(reqwest::header::CONTENT_LENGTH, before.len())
        .body(body)
        .send()
        .await
        .with_context(|| format!("uploading to {base}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "the origin refused the title ({status}): {}", text.trim());
    let after = std::fs::metadata(&path).with_context(|| format!("{}", path.display()))?;
    if after.len() != before.len() || after.modified().ok() != before.modified().ok() {
        anyhow::bail!(
            "{} changed while it was being seeded; seed it again once it is stable",
            path.display()
        );
    }
    say!("{id}");
    Ok(())
}

async fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.from.len() == args.peer.len(),
        "give one --peer PEERID for each --from ADDR ({} addresses, {} peers)",
        args.from.len(),
        args.peer.len()
    );
    let sources: Vec<Source> =
        args.from.iter().zip(&args.peer).map(|(&addr, &peer)| Source { addr, peer }).collect();
    let temp;
    let (key, data) = match &args.data {
        Some(dir) => (identity::load_or_create(dir)?, dir.clone()),
        None => {
            temp = tempfile::tempdir()?;
            (identity::ephemeral(), temp.path().to_path_buf())
        }
    };
    let tls = TlsIdentity::new(&key)?;
    tracing::info!(peer = %tls.peer_id(), "fetching as");
    let bind_ip = if sources[0].addr.is_ipv4() { "0.0.0.0" } else { "::" }.parse()?;
    let endpoint = MeshEndpoint::client(bind_ip, tls, TransportLimits::default())?;
    let store_dir = data.clone();
    let store = Arc::new(tokio::task::spawn_blocking(move || Store::open(&store_dir)).await??);
    let opts = FetchOptions { per_source: args.per_source.max(1), ..FetchOptions::default() };
    let result = fetch_title(&endpoint, store.clone(), args.title, &sources, opts).await;
    let report = match result {
        Ok(r) => r,
        Err(fillmesh_node::fetch::FetchError::Incomplete { report, .. }) => {
            print_report(&report);
            anyhow::bail!(
                "incomplete: {} of {} chunks could not be fetched",
                report.chunks - report.already_held - report.fetched.len() as u32,
                report.chunks
            );
        }
        Err(e) => return Err(e.into()),
    };
    let out = args.out.clone();
    let title = args.title;
    tokio::task::spawn_blocking(move || store.export(&title, &out)).await??;
    print_report(&report);
    endpoint.close();
    Ok(())
}

fn print_report(r: &fillmesh_node::fetch::FetchReport) {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    say!(
        "fetched {}: {} chunks ({} bytes) in {:.3} s, {:.1} MB/s; {} of {} chunks already held",
        r.title,
        r.fetched.len(),
        r.bytes,
        secs,
        r.bytes as f64 / secs / 1e6,
        r.already_held,
        r.chunks
    );
    for s in &r.sources {
        say!(
            "source {} at {}: {} chunks, {} bytes, {} failures, {} corrupt{}{}",
            s.source.peer,
            s.source.addr,
            s.chunks,
            s.bytes,
            s.failures,
            s.corrupt,
            if s.bad { ", marked bad" } else { "" },
            s.error.as_deref().map(|e| format!(", unusable: {e}")).unwrap_or_default()
        );
    }
}
