//! The `fillmesh` command line: clap and dispatch. Each command lives in
//! [`commands`]`::<command>`: its arguments and its `run`; the testbed's machinery (network
//! namespaces, shaped links, the delay element) in [`testbed`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};
mod commands;
mod config;
mod testbed;

use commands::{self as cli, runtime};

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
    Id(cli::id::IdArgs),
    /// Run an appliance, or the origin with --origin.
    Node(Box<cli::node::NodeArgs>),
    /// Hand FILE to a running origin, which stores and publishes it; prints the title id.
    Seed(cli::seed::SeedArgs),
    /// Download one title, verified, from one or more named nodes.
    Fetch(cli::fetch::FetchArgs),
    /// Run the tracker: mesh API over QUIC, steering, status and metrics over HTTP.
    Tracker(cli::tracker::TrackerArgs),
    /// Check a config file of `fillmesh node` or `fillmesh tracker` without starting anything.
    Config(cli::config::ConfigArgs),
    /// List, add (rotate) or retire the playback keys trackers sign players' tokens with.
    Keys(cli::keys::KeysArgs),
    /// Stream a title over HTTP/3 from the appliance the tracker steers to, verifying every
    /// chunk, failing over down the steering list; prints a summary.
    Play(cli::play::PlayArgs),
    /// The main job: a whole mesh on this machine, a title filled and played, and a report.
    Demo(cli::demo::DemoArgs),
    /// Print the mesh state as JSON.
    Status {
        /// The tracker's operator URL (its --admin-http), e.g. http://127.0.0.1:8001.
        /// `--tracker-http` is an older name for it: /status is no longer on the tracker's
        /// viewer listener (--http), which answers it 404.
        #[arg(long, alias = "tracker-http", value_name = "URL")]
        tracker_admin: String,
    },
    /// Run a simulator scenario on the real binaries in network namespaces behind shaped
    /// links with the scenario's latencies (root only), then in the simulator; print both.
    Testbed(cli::testbed::TestbedArgs),
    /// Simulate filling a title over thousands of appliances with the tracker's own planner.
    Sim(cli::sim::SimCommand),
}

fn main() -> ExitCode {
    // `node` and `tracker` take their settings from the command line, the environment and a
    // config file together (`config::resolve`); clap alone sees only the command line.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let layered = match argv.get(1).and_then(|a| a.to_str()) {
        Some("node") => Some(Layered::Node),
        Some("tracker") => Some(Layered::Tracker),
        _ => None,
    };
    let cli = if layered.is_none() { Some(Cli::parse()) } else { None };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FILLMESH_LOG")
                .unwrap_or_else(|_| "info,quinn=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let tail = argv.get(2..).unwrap_or_default().to_vec();
    let outcome = match (layered, cli) {
        (Some(Layered::Node), _) => cli::node::run(tail),
        (Some(Layered::Tracker), _) => cli::tracker::run(tail),
        (None, Some(cli)) => run(cli),
        (None, None) => Ok(()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fillmesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The commands whose settings are layered.
#[derive(Clone, Copy)]
enum Layered {
    Node,
    Tracker,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Id(args) => cli::id::run(args),
        // Only reached when clap found them elsewhere than first (`main` dispatches them).
        Command::Node(_) | Command::Tracker(_) => {
            anyhow::bail!("give the command first: `fillmesh node ...` or `fillmesh tracker ...`")
        }
        Command::Seed(args) => runtime()?.block_on(cli::seed::run(args)),
        Command::Fetch(args) => cli::fetch::runtime()?.block_on(cli::fetch::run(args)),
        Command::Config(args) => cli::config::run(args),
        Command::Keys(args) => runtime()?.block_on(cli::keys::run(args)),
        Command::Status { tracker_admin } => runtime()?.block_on(cli::status::run(&tracker_admin)),
        Command::Play(args) => runtime()?.block_on(cli::play::run(args)),
        Command::Sim(args) => cli::sim::run(args),
        Command::Testbed(args) => runtime()?.block_on(cli::testbed::run(args)),
        Command::Demo(args) => runtime()?.block_on(cli::demo::run(args.into())),
    }
}
