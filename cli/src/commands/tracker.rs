//! `fillmesh tracker`: the tracker's server (`fillmesh_tracker::server`) until stopped.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use fillmesh_tracker::core::Policy;
use std::time::Duration;

use anyhow::Context;
use fillmesh_tracker::server::{self as tracker_server, TokenBind, TokenConfig, TrackerConfig};
use libp2p_identity::PeerId;

use std::ffi::OsString;

use super::shutdown_signal;
use crate::config::{self, Settings};

#[derive(Debug, Args)]
pub struct TrackerArgs {
    /// A TOML file of settings: every flag is a key of the same name in snake case
    /// (`token_ttl = 3600`). The command line, then `FILLMESH_<KEY>` variables, win over it.
    #[arg(long, env = "FILLMESH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective settings (as a config file, each with where it came from) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Data directory: identity, catalog and registry.
    #[arg(long)]
    pub data: PathBuf,
    /// Mesh (QUIC) address appliances connect to.
    #[arg(long, default_value = "127.0.0.1:4400")]
    pub listen: SocketAddr,
    /// HTTP address for viewers: /steer, /report, `/watch/<title>` (the viewer surface, open
    /// to players). Operator views are never served here (404).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub http: SocketAddr,
    /// HTTP address for operators: /status (every appliance's address, load and holdings),
    /// /metrics and the fleet page at /. No authentication: keep it on loopback (the default)
    /// or a management network; a non-loopback address is logged as a warning.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub admin_http: SocketAddr,
    /// Print the tracker's PeerId (creating the identity if needed) and exit.
    #[arg(long)]
    pub print_id: bool,
    /// A PeerId allowed to register (repeatable).
    #[arg(long = "trust", value_name = "PEERID")]
    pub trust: Vec<PeerId>,
    /// A file of PeerIds allowed to register, one per line (# comments allowed).
    #[arg(long)]
    pub trust_file: Option<PathBuf>,
    /// `mesh` (appliances fill one another) or `origin-only` (every appliance pulls from the
    /// origin: for comparison runs).
    #[arg(long, default_value = "mesh")]
    pub policy: String,
    /// Seed of the planner's tie-breaking.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Distinct appliances that must report corrupt chunks from a node before it is excluded
    /// for everyone (one report excludes it only for the reporter).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub corrupt_quorum: u8,
    /// Percent of an appliance's disk quota the planner fills; beyond it, less recently
    /// wanted titles are evicted to make room for a newer one.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub evict_watermark: u8,
    /// Seconds after its last player during which a title is never evicted.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub evict_min_idle_secs: u64,
    /// etcd endpoints (`http://127.0.0.1:2379`, comma-separated or repeated): the fleet's
    /// catalog, trust list and tracker membership live there, shared by several trackers.
    /// Without it this tracker keeps them alone, in its data directory.
    #[arg(long, value_delimiter = ',', value_name = "URL")]
    pub etcd: Vec<String>,
    /// The key prefix of this fleet in etcd (two fleets can share a cluster).
    #[arg(long, default_value = "/fillmesh/", requires = "etcd")]
    pub etcd_prefix: String,
    /// Seconds this tracker's lease lasts without a keepalive: a tracker gone this long is
    /// out of the fleet and its titles move to the others. etcd raises a lease shorter than
    /// 1.5 times its election timeout to that (2 s with etcd's default of 1 s); a 1 s lease
    /// needs etcd's `--election-timeout 500` or less.
    #[arg(long, default_value_t = 5, requires = "etcd", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub etcd_lease_secs: u64,
    /// An open fleet: appliances serve any player, with no playback token. By default
    /// steering hands each player a token signed by the tracker, and appliances refuse
    /// (403) requests without a valid one.
    #[arg(long)]
    pub no_tokens: bool,
    /// Seconds a playback token lasts from steering (a player asks again on expiry).
    #[arg(long, default_value_t = 43_200, value_parser = clap::value_parser!(u64).range(1..=30 * 86_400))]
    pub token_ttl: u64,
    /// Which client address tokens are bound to (its /24 or /48): `off` (the default: a
    /// player may reach the tracker and the appliances from different addresses), `given`
    /// (the client_ip of the steering request, when given: the operator's front end asks for
    /// the viewer it sees) or `seen` (that, else the address the tracker sees).
    #[arg(long, default_value = "off")]
    pub token_bind: String,
    /// A file holding the key `/steer` then requires (`Authorization: Bearer KEY`): only the
    /// operator's front end asks for viewers. Off by default.
    #[arg(long)]
    pub steer_key_file: Option<PathBuf>,
}

impl Settings for TrackerArgs {
    type Config = TrackerConfig;

    fn print_id(&self) -> Option<&std::path::Path> {
        self.print_id.then_some(self.data.as_path())
    }

    fn print_config(&self) -> bool {
        self.print_config
    }

    fn config(self) -> Result<TrackerConfig, Vec<String>> {
        let mut problems = Vec::new();
        let mut trust = self.trust;
        if let Some(file) = &self.trust_file {
            match tracker_server::read_trust_file(file) {
                Ok(peers) => trust.extend(peers),
                Err(e) => problems.push(format!("--trust-file {}: {e:#}", file.display())),
            }
        }
        let policy = match self.policy.as_str() {
            "mesh" => Policy::Mesh,
            "origin-only" => Policy::OriginOnly,
            other => {
                problems.push(format!("--policy {other:?}: use mesh or origin-only"));
                Policy::Mesh
            }
        };
        let bind = match self.token_bind.as_str() {
            "given" => TokenBind::Given,
            "seen" => TokenBind::Seen,
            "off" => TokenBind::Off,
            other => {
                problems.push(format!("--token-bind {other:?}: use given, seen or off"));
                TokenBind::Off
            }
        };
        let steer_key = self.steer_key_file.as_ref().and_then(|path| match steer_key(path) {
            Ok(key) => Some(key),
            Err(e) => {
                problems.push(format!("--steer-key-file {e:#}"));
                None
            }
        });
        if self.admin_http == self.http && self.http.port() != 0 {
            problems.push(format!(
                "--admin-http and --http are both {}: the operators' views need a listener of their own",
                self.http
            ));
        }
        if self.no_tokens && self.token_bind != "off" {
            problems.push("--token-bind binds tokens, and --no-tokens turns them off: give one".to_owned());
        }
        let etcd = etcd_config(self.etcd, self.etcd_prefix, self.etcd_lease_secs).unwrap_or_else(|e| {
            problems.push(format!("{e:#}"));
            None
        });
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(TrackerConfig {
            data: self.data,
            listen: self.listen,
            http: self.http,
            admin_http: self.admin_http,
            trust,
            policy,
            seed: self.seed,
            corrupt_quorum: self.corrupt_quorum.into(),
            evict_watermark_pct: self.evict_watermark,
            evict_min_idle_ms: self.evict_min_idle_secs * 1000,
            etcd,
            tokens: TokenConfig { required: !self.no_tokens, ttl: Duration::from_secs(self.token_ttl), bind },
            steer_key,
        })
    }
}

/// The steering key in `path`: 16 to 256 printable characters on one line.
fn steer_key(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let key = text.trim().to_owned();
    anyhow::ensure!(
        (16..=256).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()),
        "{}: the steering key is 16 to 256 printable characters on one line",
        path.display()
    );
    Ok(key)
}

/// Runs the tracker (or prints its PeerId or its settings) until Ctrl-C or SIGTERM.
pub fn run(tail: Vec<OsString>) -> anyhow::Result<()> {
    let Some(config) = config::start::<TrackerArgs>("tracker", &tail)? else { return Ok(()) };
    // One thread: every request takes the core's one lock anyway, and a multi-threaded
    // runtime only adds wake-ups across threads.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        // SIGHUP (a unit's `reload`) reads the settings again: the trust list changes live.
        let (reload, reloads) = tokio::sync::mpsc::channel(1);
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            tokio::spawn(async move {
                // Bounded by the process's life: one turn per signal.
                while hup.recv().await.is_some() {
                    match config::resolve::<TrackerArgs>("tracker", &tail).and_then(|r| r.config()) {
                        Ok(config) => {
                            tracing::info!("SIGHUP: settings read again");
                            if reload.send(config).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::error!(
                            "SIGHUP: settings not applied, the tracker goes on as it was:\n{e}"
                        ),
                    }
                }
            });
        }
        tracker_server::run_with_reloads(config, shutdown_signal(), reloads).await
    })
}

/// The fleet's etcd from the flags: `None` without endpoints. The prefix ends with `/`, so
/// that `/a` and `/ab` are two fleets.
fn etcd_config(
    endpoints: Vec<String>,
    mut prefix: String,
    lease_secs: u64,
) -> anyhow::Result<Option<tracker_server::EtcdConfig>> {
    if endpoints.is_empty() {
        return Ok(None);
    }
    if prefix.is_empty() || prefix.len() > 128 {
        anyhow::bail!("--etcd-prefix: give 1 to 128 bytes, e.g. /fillmesh/");
    }
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok(Some(tracker_server::EtcdConfig { endpoints, prefix, lease_secs }))
}
