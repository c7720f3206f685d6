//! Serving with every chunk verified on its read from disk, against the same node serving the
//! same bytes unverified, in the same run: to players (`fillmesh play` over HTTP/3) and to
//! peers (`fillmesh fetch` over the mesh).
//!
//! `cargo bench -p fillmesh-cli --bench serve [-- SIZE_MIB RUNS]` (defaults: 256 MiB, 5 runs).
//! Two nodes run in this process on 127.0.0.1, each holding the title (1 MiB chunks, in the
//! page cache: the cost of verification is the largest share of a read there). One serves
//! from its store as the binary does; the other from [`Unverified`], a double that reads the
//! store's data file raw, as serving did before every read was verified. Each run plays the
//! title from both nodes back to back, then fetches it from both, alternating which goes
//! first (ABBA); clients are separate processes (a player writing to /dev/null, a fetcher into
//! a fresh store, on a tmpfs where there is one). Each run's ratio is printed; the medians of
//! the figures and of the runs' ratios are reported, with the CPU time each side used per GiB.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use fillmesh_net::sync::LockExt;
use fillmesh_net::{identity, tls};
use fillmesh_node::daemon::{self, NodeConfig, Sources};
use fillmesh_node::serve::ChunkSource;
use fillmesh_node::store::{Store, StoreError};
use fillmesh_protocol::steering::{SteerAnswer, SteerEntry};
use fillmesh_protocol::{ChunkBitmap, ChunkSize, Manifest, TitleId};

/// The same allocator as the `fillmesh` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serves a store's chunks as they are in its data files, unverified: the baseline.
struct Unverified {
    store: Arc<Store>,
    files: Mutex<HashMap<TitleId, Arc<File>>>,
}

impl ChunkSource for Unverified {
    fn manifest(&self, title: &TitleId) -> Option<Arc<Manifest>> {
        self.store.manifest(title)
    }
    fn held(&self, title: &TitleId) -> Option<ChunkBitmap> {
        self.store.held(title)
    }
    fn read_chunk(&self, title: &TitleId, index: u32) -> Result<Bytes, StoreError> {
        let manifest = self.store.manifest(title).ok_or(StoreError::UnknownTitle(*title))?;
        let len = manifest.chunk_len(index).ok_or(StoreError::NotHeld { title: *title, index })?;
        let io = |source| StoreError::Io { what: format!("chunk {index} of {title}"), source };
        let file = {
            let mut files = self.files.locked();
            match files.get(title) {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(File::open(self.store.data_path(title)).map_err(io)?);
                    files.insert(*title, f.clone());
                    f
                }
            }
        };
        // The store's own read, without the verification.
        fillmesh_node::store::read_bytes_at(&file, len as usize, manifest.chunk_offset(index)).map_err(io)
    }
    fn name(&self, title: &TitleId) -> Option<String> {
        self.store.info(title).map(|i| i.name)
    }
}

/// One serving node of the run.
struct Node {
    name: &'static str,
    addr: SocketAddr,
    peer: String,
    /// What steering names it with.
    entry: SteerEntry,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A free UDP port on 127.0.0.1 (bound and released: a bench, not a test).
fn free_udp() -> anyhow::Result<SocketAddr> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5).max(1);
    let bin = env!("CARGO_BIN_EXE_fillmesh");
    let dir = tempfile::tempdir()?;
    // Fetchers' stores on a tmpfs where there is one: their disk is not what is measured.
    let shm = Path::new("/dev/shm");
    let scratch = if shm.is_dir() { tempfile::tempdir_in(shm)? } else { tempfile::tempdir_in(dir.path())? };

    // The title: BLAKE3's extendable output, written in 1 MiB pieces.
    let file = dir.path().join("title.bin");
    {
        let mut xof = blake3::Hasher::new().update(b"fillmesh serve bench").finalize_xof();
        let mut out = File::create(&file)?;
        let mut piece = vec![0u8; 1 << 20];
        for _ in 0..mib {
            xof.fill(&mut piece);
            out.write_all(&piece)?;
        }
    }
    let (title, manifest) = Manifest::from_reader(File::open(&file)?, ChunkSize::DEFAULT)?;

    // The fetchers' identities, trusted by both nodes.
    let fetchers: Vec<PathBuf> = (0..2 * runs).map(|i| scratch.path().join(format!("fetcher-{i}"))).collect();
    let mut trust = Vec::new();
    for f in &fetchers {
        trust.push(identity::peer_id(&identity::load_or_create(f)?));
    }

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut nodes = Vec::new();
    let mut tasks = Vec::new();
    for name in ["verified", "unverified"] {
        let data_dir = dir.path().join(name);
        let peer = identity::peer_id(&identity::load_or_create(&data_dir)?).to_string();
        // The certificate players see, made here so that steering can name its pin.
        let cert = rcgen::generate_simple_self_signed(vec!["fillmesh".to_owned()])?;
        let (cert_pem, key_pem) =
            (dir.path().join(format!("{name}.crt")), dir.path().join(format!("{name}.key")));
        std::fs::write(&cert_pem, cert.cert.pem())?;
        std::fs::write(&key_pem, cert.key_pair.serialize_pem())?;
        let pin = tls::spki_sha256(cert.cert.der()).map(|p| p.iter().map(|b| format!("{b:02x}")).collect());
        let addr = free_udp()?;
        let config = NodeConfig {
            data: data_dir.clone(),
            listen: addr,
            origin: false,
            http: None,
            trust: trust.clone(),
            upload_rate: None,
            serve: Default::default(),
            transport: Default::default(),
            player_cert: Some((cert_pem, key_pem)),
            trackers: Vec::new(),
            site: "bench".into(),
            region: "bench".into(),
            prefixes: Vec::new(),
            disk_bytes: u64::MAX,
            scrub: None,
            plan_stale_after: std::time::Duration::from_secs(60),
            stale_origin_rate: 10_000_000,
        };
        // A copy of the title (so it sits in the page cache), adopted by the store.
        let staging = dir.path().join(format!("{name}.staging"));
        std::fs::copy(&file, &staging)?;
        let manifest = manifest.clone();
        let mut stopped = stopped.clone();
        tasks.push(rt.spawn(daemon::run_with(
            config,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
            move |store| {
                if let Err(e) = store.import_complete(title, "title.mp4", manifest, &staging) {
                    panic!("import: {e}");
                }
                let source: Arc<dyn ChunkSource> = if name == "verified" {
                    store
                } else {
                    Arc::new(Unverified { store, files: Mutex::default() })
                };
                Sources { mesh: source.clone(), players: source }
            },
        )));
        let entry = SteerEntry {
            peer_id: peer.clone(),
            url: format!("https://{addr}/titles/{title}"),
            site: "bench".into(),
            region: "bench".into(),
            cert_sha256: pin,
        };
        nodes.push(Node { name, addr, peer, entry });
    }

    // Steering for the players: `/<node>/steer` names that node alone.
    let answers: HashMap<String, SteerAnswer> = nodes
        .iter()
        .map(|n| {
            let answer = SteerAnswer {
                title: title.to_string(),
                client_ip: "127.0.0.1".into(),
                targets: vec![n.entry.clone()],
                reason: String::new(),
                token: None,
                token_expires: None,
            };
            (n.name.to_owned(), answer)
        })
        .collect();
    let answers = Arc::new(answers);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let steering = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/{node}/steer",
        axum::routing::get(move |axum::extract::Path(node): axum::extract::Path<String>| {
            let answers = answers.clone();
            async move {
                answers.get(&node).map(|a| axum::Json(a.clone())).ok_or(axum::http::StatusCode::NOT_FOUND)
            }
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await });
    // The players keep their steering answers here, not in the home directory.
    let steer_cache = dir.path().join("steer-cache");
    // The nodes are up once they answer a player.
    for n in &nodes {
        let started = Instant::now();
        while let Err(e) = play(bin, &steering, n, &title, &steer_cache) {
            anyhow::ensure!(started.elapsed().as_secs() < 30, "{} did not come up: {e:#}", n.name);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    println!(
        "title: {mib} MiB, 1 MiB chunks, in the page cache; {runs} runs; one client process at a time on 127.0.0.1"
    );
    // Other work on the machine comes and goes (2 cores here, shared with whatever else runs),
    // so the two sides of a comparison run back to back: each run plays from both nodes, then
    // fetches from both, the node that goes first alternating from run to run (ABBA). Each
    // run gives one ratio per kind; their median is the figure that counts. CPU time is
    // counted too (the serving process's, and the client's), as it does not move with the
    // machine's load as throughput does.
    let mut results: HashMap<(&str, &str), Vec<f64>> = HashMap::new();
    let mut ratios: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut cpu: HashMap<(&str, &str), (f64, f64)> = HashMap::new();
    let mut fetcher = fetchers.iter();
    for run in 0..runs {
        let pair: Vec<&Node> =
            if run % 2 == 0 { nodes.iter().collect() } else { nodes.iter().rev().collect() };
        let back: Vec<&Node> = pair.iter().rev().copied().collect();
        for (kind, order) in [("players", &pair), ("peers", &back)] {
            let mut mbps = HashMap::new();
            for n in order.iter() {
                let before = Cpu::now();
                let secs = match kind {
                    "players" => play(bin, &steering, n, &title, &steer_cache)?,
                    _ => {
                        let f = fetcher.next().ok_or_else(|| anyhow::anyhow!("out of fetchers"))?;
                        fetch(bin, n, &title, f)?
                    }
                };
                let used = Cpu::now().since(&before);
                let total = cpu.entry((kind, n.name)).or_default();
                total.0 += used.0;
                total.1 += used.1;
                let rate = (mib << 20) as f64 / secs / 1e6;
                results.entry((kind, n.name)).or_default().push(rate);
                mbps.insert(n.name, rate);
            }
            ratios.entry(kind).or_default().push(mbps["verified"] / mbps["unverified"]);
        }
        println!("run {}: players {:.3}, peers {:.3}", run + 1, ratios["players"][run], ratios["peers"][run]);
    }
    let gib = (runs * mib) as f64 / 1024.0;
    for kind in ["players", "peers"] {
        let v = median(results.remove(&(kind, "verified")).unwrap_or_default());
        let u = median(results.remove(&(kind, "unverified")).unwrap_or_default());
        let r = median(ratios.remove(kind).unwrap_or_default());
        let (sv, cv) = cpu.get(&(kind, "verified")).copied().unwrap_or_default();
        let (su, cu) = cpu.get(&(kind, "unverified")).copied().unwrap_or_default();
        println!(
            "to {kind}: verified on read {v:.0} MB/s, unverified {u:.0} MB/s, ratio {:.3} (medians); \
             median of the runs' ratios {r:.3}; CPU s/GiB serving {:.2} vs {:.2}, client {:.2} vs {:.2}",
            v / u,
            sv / gib,
            su / gib,
            cv / gib,
            cu / gib
        );
    }
    let _ = stop.send(true);
    for t in tasks {
        rt.block_on(t)??;
    }
    Ok(())
}

/// CPU seconds used so far by this process (the serving nodes) and by its waited-for
/// children (the clients), from `/proc/self/stat` (in clock ticks, 10 ms: summed over runs).
struct Cpu(f64, f64);

impl Cpu {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<f64> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect())
            .unwrap_or_default();
        // utime, stime, cutime, cstime are fields 14-17 of the whole line: 11-14 after it.
        let at = |i: usize| fields.get(i).copied().unwrap_or(0.0) / 100.0;
        Self(at(11) + at(12), at(13) + at(14))
    }

    fn since(&self, before: &Self) -> (f64, f64) {
        (self.0 - before.0, self.1 - before.1)
    }
}

/// Runs a client to its end; its seconds.
fn timed(mut client: Command, what: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = client.env("FILLMESH_LOG", "error").output()?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(secs)
}

/// One `fillmesh play` of the title from `node` to /dev/null, keeping its steering answer in
/// `steer_cache`; its seconds.
fn play(bin: &str, steering: &str, node: &Node, title: &TitleId, steer_cache: &Path) -> anyhow::Result<f64> {
    let mut client = Command::new(bin);
    client
        .args(["play", &title.to_string(), "--tracker-http", &format!("{steering}/{}", node.name)])
        .args(["--out", "/dev/null"])
        .arg("--steer-cache")
        .arg(steer_cache);
    timed(client, &format!("play from {}", node.name))
}

/// One `fillmesh fetch` of the title from `node` into a fresh store at `data`, removed after;
/// its seconds.
fn fetch(bin: &str, node: &Node, title: &TitleId, data: &Path) -> anyhow::Result<f64> {
    let mut client = Command::new(bin);
    client
        .args(["fetch", &title.to_string(), "--from", &node.addr.to_string(), "--peer", &node.peer])
        .arg("--out")
        .arg(data.join("title.out"))
        .arg("--data")
        .arg(data);
    let secs = timed(client, &format!("fetch from {}", node.name))?;
    std::fs::remove_dir_all(data)?;
    Ok(secs)
}
