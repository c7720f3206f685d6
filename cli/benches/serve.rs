//! Serving to players and peers, three comparisons in the same run:
//! - `players`: every chunk verified on its read from disk, against the same node serving the
//!   same bytes unverified (`fillmesh play` over HTTP/3);
//! - `peers`: the same two nodes, to `fillmesh fetch` over the mesh;
//! - `tokens`: playback tokens on (the node under a tracker, checking the token in every
//!   request's path: issue 28's target is >= 0.98x) against tokens off (the verified node,
//!   under no tracker, which serves anyone), to `fillmesh play`.
//!
//! `cargo bench -p fillmesh-cli --bench serve [-- SIZE_MIB RUNS [ARMS]]` (defaults: 256 MiB,
//! 5 runs, `players,peers,tokens`). Three nodes run in this process on 127.0.0.1, each holding
//! the title (1 MiB chunks, in the page cache: the cost of verification is the largest share
//! of a read there). `verified` serves from its store as the binary does; `unverified` from
//! [`Unverified`], a double that reads the store's data file raw, as serving did before every
//! read was verified; `tokens` serves from its store and is under a tracker, so its player
//! servers require a token: it never reaches that tracker (a socket of this process that
//! answers nothing), and checks tokens with the public key the bench writes in its data
//! directory where a node keeps the keys it learnt, the bench signing tokens with the private
//! half and steering its players to `https://ADDR/p/TOKEN/titles/ID`. Each run, for each
//! comparison, the title goes to a client from both nodes back to back, the node that goes
//! first alternating from run to run and from comparison to comparison (ABBA); clients are
//! separate processes (a player writing to /dev/null, a fetcher into a fresh store, on a
//! tmpfs where there is one). Each run's ratio is printed; the medians of the figures and of
//! the runs' ratios are reported, with the CPU time each side used per GiB. Before the runs,
//! the cost of one token check as the node makes it ([`Gate::check`]), at first sight and from
//! its cache of verdicts.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fillmesh_net::sync::LockExt;
use fillmesh_net::{identity, tls};
use fillmesh_node::daemon::{self, NodeConfig, Sources};
use fillmesh_node::serve::gate::KEY_FILE;
use fillmesh_node::serve::{ChunkSource, Gate};
use fillmesh_node::store::{Store, StoreError};
use fillmesh_protocol::steering::{SteerAnswer, SteerEntry};
use fillmesh_protocol::token::{PublicKey, SigningKey};
use fillmesh_protocol::{ChunkBitmap, ChunkSize, IpPrefix, Manifest, TitleId};

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

/// The median; of an even count, the mean of the two middle values (the upper one alone, as
/// this took before, leans toward whichever side is ahead).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

/// A free UDP port on 127.0.0.1 (bound and released: a bench, not a test).
fn free_udp() -> anyhow::Result<SocketAddr> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

/// One comparison of the run: the title from node `a` against node `b`, to one kind of
/// client; its ratio is `a`'s throughput over `b`'s.
struct Arm {
    name: &'static str,
    what: &'static str,
    a: &'static str,
    b: &'static str,
    /// Players (`fillmesh play`), else peers (`fillmesh fetch`).
    players: bool,
}

const ARMS: [Arm; 3] = [
    Arm {
        name: "players",
        what: "verified on read vs unverified",
        a: "verified",
        b: "unverified",
        players: true,
    },
    Arm {
        name: "peers",
        what: "verified on read vs unverified",
        a: "verified",
        b: "unverified",
        players: false,
    },
    Arm { name: "tokens", what: "to players, tokens on vs off", a: "tokens", b: "verified", players: true },
];

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The keys a node keeps in its data directory as it learnt them from its trackers (the
/// node's [`KEY_FILE`]: each key's id in hex and the key in base64url).
fn write_kept_keys(data: &Path, keys: &[PublicKey]) -> anyhow::Result<()> {
    use base64::Engine;
    let kept: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "id": k.id.to_string(),
                "key": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.key),
            })
        })
        .collect();
    std::fs::create_dir_all(data)?;
    std::fs::write(data.join(KEY_FILE), serde_json::to_vec(&kept)?)?;
    Ok(())
}

/// µs per token check as a node's player servers make it ([`Gate::check`]: the token's hash,
/// the cache of verdicts, the claims against the request), at first sight (decode and
/// Ed25519 verify, then the verdict kept) and from the cache; medians of 5 runs.
fn gate_costs(key: &SigningKey, title: TitleId, prefix: IpPrefix) -> anyhow::Result<(f64, f64)> {
    const N: usize = 2000;
    let dir = tempfile::tempdir()?;
    let gate = Gate::under_trackers(1, dir.path());
    gate.learn(0, true, vec![key.public()]);
    let client = "127.0.0.1".parse()?;
    let expires = unix_now() + 3600;
    let (mut first, mut cached) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        // Fresh tokens: each is seen once, then once more from the cache.
        let tokens = (0..N).map(|_| key.sign(title, expires, Some(prefix))).collect::<Result<Vec<_>, _>>()?;
        for (times, round) in [(&mut first, 0), (&mut cached, 1)] {
            let started = Instant::now();
            for t in &tokens {
                let verdict = gate.check(Some(t.as_str()), &title, client);
                anyhow::ensure!(
                    verdict.is_ok(),
                    "the gate refused a good token (round {round}): {verdict:?}"
                );
            }
            times.push(started.elapsed().as_secs_f64() * 1e6 / N as f64);
        }
    }
    Ok((median(first), median(cached)))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5).max(1);
    let chosen = args.next().unwrap_or_else(|| "players,peers,tokens".into());
    let arms: Vec<&Arm> = ARMS.iter().filter(|a| chosen.split(',').any(|c| c == a.name)).collect();
    anyhow::ensure!(!arms.is_empty(), "ARMS: a comma-separated list of players, peers and tokens");
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

    // The playback key: its public half kept by the `tokens` node, the whole signing the
    // tokens of its players, bound to the players' /24 as steering binds them when it is
    // told the client's address.
    let key = SigningKey::generate()?;
    let prefix = IpPrefix::new("127.0.0.1".parse()?, 24)?;
    let (first_sight, cached) = gate_costs(&key, title, prefix)?;
    println!(
        "one token check as the node makes it: {first_sight:.2} µs at first sight (decode, Ed25519 verify), \
         {cached:.2} µs from the cache of verdicts (medians)"
    );

    // The fetchers' identities, trusted by every node.
    let fetchers: Vec<PathBuf> = (0..2 * runs).map(|i| scratch.path().join(format!("fetcher-{i}"))).collect();
    let mut trust = Vec::new();
    for f in &fetchers {
        trust.push(identity::peer_id(&identity::load_or_create(f)?));
    }
    // The `tokens` node's tracker: a socket that answers nothing, so that the node never
    // hears from it and keeps checking tokens with the key it was given.
    let silent_tracker = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let silent_tracker_id = identity::peer_id(&identity::load_or_create(&dir.path().join("tracker"))?);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut nodes = Vec::new();
    let mut tasks = Vec::new();
    let names = ["verified", "unverified", "tokens"]
        .into_iter()
        .filter(|n| arms.iter().any(|a| a.a == *n || a.b == *n));
    for name in names {
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
        let tokens = name == "tokens";
        if tokens {
            write_kept_keys(&data_dir, &[key.public()])?;
        }
        let config = NodeConfig {
            data: data_dir.clone(),
            listen: addr,
            origin: false,
            http: None,
            trust: trust.clone(),
            upload_rate: None,
            serve: Default::default(),
            players: Default::default(),
            transport: Default::default(),
            player_cert: Some((cert_pem, key_pem)),
            trackers: if tokens {
                vec![(silent_tracker.local_addr()?, silent_tracker_id)]
            } else {
                Vec::new()
            },
            site: "bench".into(),
            region: "bench".into(),
            prefixes: Vec::new(),
            disk_bytes: u64::MAX,
            scrub: None,
            plan_stale_after: std::time::Duration::from_secs(60),
            stale_origin_rate: 10_000_000,
            fill_upload_rate: None,
            fill_download_rate: None,
            serve_rate: None,
            fill_window: Default::default(),
            drain: std::time::Duration::from_secs(30),
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
                let source: Arc<dyn ChunkSource> = if name == "unverified" {
                    Arc::new(Unverified { store, files: Mutex::default() })
                } else {
                    store
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

    // Steering for the players: `/<node>/steer` names that node alone, with a token in its
    // URL for the `tokens` node (a day long: no renewal within the bench);
    // `/tokens-none/steer` names it without one (to see it refuse).
    let mut answers: HashMap<String, SteerAnswer> = HashMap::new();
    for n in &nodes {
        let answer = |entry: SteerEntry, token: Option<(String, u64)>| SteerAnswer {
            title: title.to_string(),
            client_ip: "127.0.0.1".into(),
            targets: vec![entry],
            reason: String::new(),
            token_expires: token.as_ref().map(|t| t.1),
            token: token.map(|t| t.0),
        };
        if n.name == "tokens" {
            let expires = unix_now() + 86_400;
            let token = key.sign(title, expires, Some(prefix))?;
            let url = n.entry.url.replacen("/titles/", &format!("/p/{token}/titles/"), 1);
            answers.insert(
                "tokens".into(),
                answer(SteerEntry { url, ..n.entry.clone() }, Some((token, expires))),
            );
            answers.insert("tokens-none".into(), answer(n.entry.clone(), None));
        } else {
            answers.insert(n.name.to_owned(), answer(n.entry.clone(), None));
        }
    }
    let answers = Arc::new(answers);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let steering = format!("http://{}", listener.local_addr()?);
    let app = common::steer::router(answers);
    rt.spawn(async move { axum::serve(listener, app).await });
    // The players keep their steering answers here, not in the home directory.
    let steer_cache = dir.path().join("steer-cache");
    // The nodes are up once they answer a player.
    for n in &nodes {
        let started = Instant::now();
        while let Err(e) = play(bin, &steering, n.name, &title, &steer_cache) {
            anyhow::ensure!(started.elapsed().as_secs() < 30, "{} did not come up: {e:#}", n.name);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    // The `tokens` node does require them: without one, the player is refused.
    if nodes.iter().any(|n| n.name == "tokens") {
        match play(bin, &steering, "tokens-none", &title, &steer_cache) {
            Ok(_) => anyhow::bail!("the tokens node served a player without a token"),
            Err(e) if format!("{e:#}").contains("missing") => {}
            Err(e) => {
                anyhow::bail!("the tokens node refused a player without a token, not for `missing`: {e:#}")
            }
        }
    }

    println!(
        "title: {mib} MiB, 1 MiB chunks, in the page cache; {runs} runs; one client process at a time on 127.0.0.1"
    );
    // Other work on the machine comes and goes (2 cores here, shared with whatever else runs),
    // so the two sides of a comparison run back to back, the one that goes first alternating
    // from run to run and from one comparison to the next (ABBA). Each run gives one ratio
    // per comparison; their median is the figure that counts. CPU time is counted too (the
    // serving process's, and the client's), as it does not move with the machine's load as
    // throughput does.
    let mut results: HashMap<(&str, &str), Vec<f64>> = HashMap::new();
    let mut ratios: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut cpu: HashMap<(&str, &str), (f64, f64)> = HashMap::new();
    let mut fetcher = fetchers.iter();
    let node =
        |name: &str| nodes.iter().find(|n| n.name == name).ok_or_else(|| anyhow::anyhow!("no node {name}"));
    for run in 0..runs {
        let mut line = Vec::new();
        for (i, arm) in arms.iter().enumerate() {
            let order = if (run + i) % 2 == 0 { [arm.a, arm.b] } else { [arm.b, arm.a] };
            let mut mbps = HashMap::new();
            for name in order {
                let n = node(name)?;
                let before = Cpu::now();
                let secs = if arm.players {
                    play(bin, &steering, n.name, &title, &steer_cache)?
                } else {
                    let f = fetcher.next().ok_or_else(|| anyhow::anyhow!("out of fetchers"))?;
                    fetch(bin, n, &title, f)?
                };
                let used = Cpu::now().since(&before);
                let total = cpu.entry((arm.name, name)).or_default();
                total.0 += used.0;
                total.1 += used.1;
                let rate = (mib << 20) as f64 / secs / 1e6;
                results.entry((arm.name, name)).or_default().push(rate);
                mbps.insert(name, rate);
            }
            let ratio = mbps[arm.a] / mbps[arm.b];
            ratios.entry(arm.name).or_default().push(ratio);
            line.push(format!("{} {ratio:.3}", arm.name));
        }
        println!("run {}: {}", run + 1, line.join(", "));
    }
    let gib = (runs * mib) as f64 / 1024.0;
    for arm in &arms {
        let a = median(results.remove(&(arm.name, arm.a)).unwrap_or_default());
        let b = median(results.remove(&(arm.name, arm.b)).unwrap_or_default());
        let r = median(ratios.remove(arm.name).unwrap_or_default());
        let (sa, ca) = cpu.get(&(arm.name, arm.a)).copied().unwrap_or_default();
        let (sb, cb) = cpu.get(&(arm.name, arm.b)).copied().unwrap_or_default();
        println!(
            "{} ({}): {} {a:.0} MB/s, {} {b:.0} MB/s, ratio {:.3} (medians); median of the runs' ratios {r:.3}; \
             CPU s/GiB serving {:.2} vs {:.2}, client {:.2} vs {:.2}",
            arm.name,
            arm.what,
            arm.a,
            arm.b,
            a / b,
            sa / gib,
            sb / gib,
            ca / gib,
            cb / gib
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

/// One `fillmesh play` of the title to /dev/null, steered by `/<answer>/steer`, keeping its
/// steering answer in `steer_cache`; its seconds.
fn play(bin: &str, steering: &str, answer: &str, title: &TitleId, steer_cache: &Path) -> anyhow::Result<f64> {
    let mut client = Command::new(bin);
    client
        .args(["play", &title.to_string(), "--tracker-http", &format!("{steering}/{answer}")])
        .args(["--out", "/dev/null"])
        .arg("--steer-cache")
        .arg(steer_cache);
    timed(client, &format!("play from {answer}"))
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
