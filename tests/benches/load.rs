//! Tracker load: one `fillmesh tracker` process holding N real QUIC connections, each an
//! emulated appliance with its own libp2p identity, sent the steady-state message mix of a
//! fleet filling at 1 Gbit/s; the tracker's CPU seconds per second from /proc, extrapolated to
//! 10,000 appliances (README.md, "Performance targets": under one core).
//!
//! `cargo bench -p fillmesh-tests --bench load [-- N SECONDS]` (default 2000 20). Every
//! connection is dialled from this process over 8 client UDP sockets (quinn multiplexes the
//! connections of one endpoint), so neither side needs a file descriptor per connection.
//!
//! Four phases on the same connections, each a 5 s warm-up and then SECONDS measured:
//! 1. **heartbeats**, the baseline: a `Heartbeat` a second per appliance, what a fleet that
//!    fills nothing sends. (Not idle: the tracker forgets an appliance after 15 s without
//!    hearing from it, less than the set-up of 2,000 connections and one phase take.)
//! 2. **fill mix, heartbeats**: a heartbeat a second besides the `FillSummary`s and `Fills`
//!    at the rates below (what a filling node sent before its summaries stood in for
//!    heartbeats).
//! 3. **fill mix, as the node**: summaries, `Fills`, and a heartbeat every 10 s (a summary
//!    answered tells the tracker the node is alive); `Members` only when the tracker's epoch
//!    moves, which it does not in a steady fill.
//! 4. **heartbeats + members (before)**: each heartbeat followed by a `Members` request, as
//!    `node/src/member` did after every heartbeat before it asked only on an epoch change.
//!
//! An appliance the tracker forgot registers again, as the node's session does; those
//! answers count as errors.
//!
//! Measured here (2,000 connections, 15 s windows, release build, 2 cores; see README for
//! the latest figures): with the per-chunk holder lists kept only for titles the per-chunk
//! planner plans and the tracker on one thread, heartbeats alone 0.16-0.18 tracker CPU s/s;
//! the fill mix with a heartbeat a second 0.31-0.33 (1.6 cores at 10,000); as the node sends
//! it 0.24 (1.2 cores at 10,000), p50 0.4 ms, p99 11 ms. Before those changes, the fill mix
//! with heartbeats took 0.51-0.57 CPU s/s (holder lists 18-22% of it); with `Members` after
//! every heartbeat the tracker kept up in no run (each answer lists every live member, 106 KB
//! at 2,000: 212 MB/s for the fleet). What is left is per request: QUIC, TLS, the kernel's
//! UDP and the runtime, about 95 us a request, each on its own stream.
//!
//! The fill rates are the simulator's (`fillmesh sim --strategy fillmesh --appliances 1000`, per
//! appliance per second of fill; 1 GiB, 1 MiB chunks, 1 Gbit/s up, 2 Gbit/s down, the fill
//! within 1.08x of its bound): 1.051 summaries of 100.7 runs each, 0.1175 plans, no failure
//! reports and no epoch notices, over 120.3 chunks gained. Per appliance they hardly depend on
//! the fleet's size: each appliance fills at its link's rate from about the same start (a run
//! at 10,000 took longer than this machine could give it). The simulator does not run
//! heartbeats.
//! Chunks gained are drawn at random among those not yet held (rarest-first picks look
//! random to the tracker), which gives about as many runs per summary as the simulator's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fillmesh_net::sync::LockExt;
use fillmesh_net::tls::SERVER_NAME;
use fillmesh_net::{identity, rpc, MeshEndpoint, TlsIdentity, TransportLimits};
use fillmesh_protocol::bitmap::runs;
use fillmesh_protocol::manifest::Manifest;
use fillmesh_protocol::messages::{
    ErrorCode, Heartbeat, Hello, Registration, Role, TrackerRequest, TrackerResponse,
};
use fillmesh_protocol::{ChunkBitmap, ChunkSize, TitleId, ALPN};
use fillmesh_tests::{test_bytes, NodeProcess};
use libp2p_identity::{Keypair, PeerId};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::Connection;

/// The simulator's rates, per appliance per second of fill (see the module comment).
const SUMMARIES_PER_S: f64 = 1.051;
const CHUNKS_PER_S: f64 = 120.3;
const PLANS_PER_S: f64 = 0.1175;
/// The node's heartbeat interval (the tracker's `heartbeat_interval_ms`, 1000).
const HEARTBEATS_PER_S: f64 = 1.0;
/// While its summaries stand in for heartbeats, a filling node's heartbeat goes every 10
/// intervals (`node/src/member`).
const HEARTBEAT_FIGURES_EVERY_S: f64 = 10.0;
/// Bytes by source class in the simulator's 1,000 x 1 GiB fill (759 F same site, 237 F same
/// region, 3 F cross region, 1 F origin): what the summaries say the chunks came from.
const CLASS_SHARE: [f64; 4] = [0.759, 0.237, 0.003, 0.001];
const CHUNK_BYTES: u64 = 1 << 20;
const REGIONS: usize = 4;
const SITES_PER_REGION: usize = 4;
const CLIENT_ENDPOINTS: usize = 8;
const WARM_UP: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const TARGET_FLEET: f64 = 10_000.0;

#[derive(Clone, Copy, PartialEq)]
struct Phase {
    name: &'static str,
    /// Seconds between heartbeats.
    heartbeat_every: f64,
    members: Members,
    fill: bool,
}

/// When an appliance asks for the member list.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Members {
    /// Never (the tracker's epoch does not move in a steady fill).
    OnEpoch,
    /// After every heartbeat, as the node did before.
    EveryHeartbeat,
}

/// The phases with `Members` after every heartbeat last: at 2,000 appliances it overloads
/// the tracker, and what it leaves behind (appliances forgotten, then registered again) must
/// not touch the others.
const PHASES: [Phase; 4] = [
    Phase { name: "heartbeats (baseline)", heartbeat_every: 1.0, members: Members::OnEpoch, fill: false },
    Phase { name: "fill mix, heartbeats", heartbeat_every: 1.0, members: Members::OnEpoch, fill: true },
    Phase {
        name: "fill mix (as the node)",
        heartbeat_every: HEARTBEAT_FIGURES_EVERY_S,
        members: Members::OnEpoch,
        fill: true,
    },
    Phase {
        name: "heartbeats + members (before)",
        heartbeat_every: 1.0,
        members: Members::EveryHeartbeat,
        fill: false,
    },
];

/// Kinds of request, for counts and latencies.
const KINDS: [&str; 4] = ["heartbeat", "members", "fill summary", "fills"];

/// What the appliances' tasks record while the window is open.
#[derive(Default)]
struct Record {
    open: AtomicBool,
    sent: [AtomicU64; 4],
    errors: [AtomicU64; 4],
    answer_bytes: AtomicU64,
    reregistered: AtomicU64,
    first_error: Mutex<Option<String>>,
    latencies_us: Mutex<[Vec<u32>; 4]>,
}

/// One emulated appliance: its connection and what it holds of the title.
struct Appliance {
    index: usize,
    conn: Connection,
    held: Vec<bool>,
    held_count: u32,
    rng: u64,
    /// Fractional chunks owed to the next summary.
    carry: f64,
}

impl Appliance {
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Chunks gained since the last summary, as runs: random chunks not yet held.
    fn gain(&mut self) -> Vec<std::ops::Range<u32>> {
        self.carry += CHUNKS_PER_S / SUMMARIES_PER_S;
        let want = self.carry.floor() as u32;
        self.carry -= f64::from(want);
        let len = self.held.len() as u32;
        let mut picked = Vec::with_capacity(want as usize);
        for _ in 0..want.min(len - self.held_count) {
            let mut c = (self.next_random() % u64::from(len)) as u32;
            // Bounded: some chunk is not held (checked above), found within `len` steps.
            while self.held[c as usize] {
                c = (c + 1) % len;
            }
            self.held[c as usize] = true;
            self.held_count += 1;
            picked.push(c);
        }
        runs(&picked)
    }
}

fn percentile(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    f64::from(v[((v.len() - 1) as f64 * p).round() as usize]) / 1000.0
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32, ticks_per_s: f64) -> f64 {
    fillmesh_tests::load::cpu_seconds(pid, ticks_per_s).expect("read /proc/<pid>/stat")
}

fn registration(i: usize, role: Role) -> Registration {
    let site = i % (REGIONS * SITES_PER_REGION);
    Registration {
        role,
        // Never dialled: the tracker only hands it to other appliances.
        mesh_addr: SocketAddr::from(([127, 1, (i >> 8) as u8, i as u8], 4433)),
        site: format!("s{site}"),
        region: format!("r{}", site / SITES_PER_REGION),
        prefixes: Vec::new(),
        upload_bps: 125_000_000,
        // No eviction: room for every title.
        disk_bytes: 1 << 50,
        cert_sha256: None,
    }
}

async fn call(conn: &Connection, request: &TrackerRequest) -> TrackerResponse {
    match rpc::call::<_, TrackerResponse>(conn, request, CALL_TIMEOUT).await {
        Ok(TrackerResponse::Error(e)) => panic!("the tracker refused {request:?}: {e:?}"),
        Ok(r) => r,
        Err(e) => panic!("tracker exchange failed: {e}"),
    }
}

async fn dial(endpoint: &MeshEndpoint, key: &Keypair, tracker: SocketAddr, tracker_id: PeerId) -> Connection {
    let tls = TlsIdentity::new(key).expect("TLS identity");
    let client = tls.client_config(tracker_id, ALPN).expect("client TLS config");
    let quic = QuicClientConfig::try_from(client).expect("QUIC client config");
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    // As the node's own endpoint: keep-alives a third of the 30 s idle timeout.
    transport.max_idle_timeout(Some(Duration::from_secs(30).try_into().expect("idle timeout")));
    transport.keep_alive_interval(Some(Duration::from_secs(10)));
    config.transport_config(Arc::new(transport));
    let connecting = endpoint.inner().connect_with(config, tracker, SERVER_NAME).expect("connect");
    // Longer than a call's timeout: 2,000 handshakes share two cores with everything else.
    tokio::time::timeout(Duration::from_secs(60), connecting)
        .await
        .expect("handshake timed out")
        .expect("handshake")
}

/// One appliance through one phase: its requests until `end`, sequential as a node's link is
/// per kind, each kind on its own interval (first tick at a random offset, so the fleet's
/// requests spread over the second).
async fn run_appliance(
    mut a: Appliance,
    phase: Phase,
    title: TitleId,
    end: tokio::time::Instant,
    rec: Arc<Record>,
) -> Appliance {
    let start = tokio::time::Instant::now();
    let offset = |a: &mut Appliance, period: f64| {
        Duration::from_secs_f64(period * (a.next_random() % 1000) as f64 / 1000.0)
    };
    let interval = |first: Duration, period: f64| {
        let mut i = tokio::time::interval_at(start + first, Duration::from_secs_f64(period));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    };
    let (f_hb, f_sum, f_plan) = (
        offset(&mut a, phase.heartbeat_every),
        offset(&mut a, 1.0 / SUMMARIES_PER_S),
        offset(&mut a, 1.0 / PLANS_PER_S),
    );
    let mut heartbeat = interval(f_hb, phase.heartbeat_every);
    let mut summary = interval(f_sum, 1.0 / SUMMARIES_PER_S);
    let mut plans = interval(f_plan, 1.0 / PLANS_PER_S);
    let held_bytes = |a: &Appliance| u64::from(a.held_count) * CHUNK_BYTES;
    // Bounded by `end`: every wait is cut off there and each request by its own timeout.
    loop {
        let kind = tokio::select! {
            () = tokio::time::sleep_until(end) => return a,
            _ = heartbeat.tick() => 0,
            _ = summary.tick(), if phase.fill => 2,
            _ = plans.tick(), if phase.fill => 3,
        };
        let mut requests = Vec::with_capacity(2);
        match kind {
            0 => {
                requests.push((
                    0,
                    TrackerRequest::Heartbeat(Heartbeat {
                        healthy: true,
                        uploads_in_flight: 0,
                        upload_bps_used: 0,
                        player_sessions: 0,
                        disk_used: held_bytes(&a),
                    }),
                ));
                if phase.members == Members::EveryHeartbeat {
                    requests.push((1, TrackerRequest::Members));
                }
            }
            2 => {
                let gained = a.gain();
                let n: u32 = gained.iter().map(|r| r.end - r.start).sum();
                let bytes = CLASS_SHARE.map(|s| (f64::from(n) * s * CHUNK_BYTES as f64) as u64);
                requests.push((2, TrackerRequest::FillSummary { title, gained, bytes }));
            }
            _ => requests.push((3, TrackerRequest::Fills)),
        }
        for (k, request) in requests {
            let open = rec.open.load(Relaxed);
            let sent_at = Instant::now();
            let answer = rpc::call::<_, TrackerResponse>(&a.conn, &request, CALL_TIMEOUT).await;
            let us = sent_at.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
            if !open {
                if let Ok(TrackerResponse::Error(e)) = &answer {
                    if e.code == ErrorCode::NotRegistered {
                        let again = TrackerRequest::Register(registration(a.index, Role::Appliance));
                        let _ = rpc::call::<_, TrackerResponse>(&a.conn, &again, CALL_TIMEOUT).await;
                    }
                }
                continue;
            }
            rec.sent[k].fetch_add(1, Relaxed);
            match answer {
                Ok(TrackerResponse::Error(e)) if e.code == ErrorCode::NotRegistered => {
                    rec.errors[k].fetch_add(1, Relaxed);
                    rec.reregistered.fetch_add(1, Relaxed);
                    let again = TrackerRequest::Register(registration(a.index, Role::Appliance));
                    let _ = rpc::call::<_, TrackerResponse>(&a.conn, &again, CALL_TIMEOUT).await;
                }
                Ok(TrackerResponse::Error(_)) | Err(_) => {
                    rec.errors[k].fetch_add(1, Relaxed);
                    let mut first = rec.first_error.locked();
                    if first.is_none() {
                        *first = Some(format!("{}: {answer:?}", KINDS[k]));
                    }
                }
                Ok(answer) => {
                    if k == 1 {
                        if let TrackerResponse::Members { nodes } = &answer {
                            let bytes: usize = nodes.iter().map(|n| n.as_str().len() + 1).sum();
                            rec.answer_bytes.fetch_add(bytes as u64, Relaxed);
                        }
                    }
                    rec.latencies_us.locked()[k].push(us);
                }
            }
        }
    }
}

struct Measured {
    tracker_cpu: f64,
    client_cpu: f64,
    rates: [f64; 4],
    errors: [u64; 4],
    members_mb_s: f64,
    p50: [f64; 4],
    p99: [f64; 4],
    all_p50: f64,
    all_p99: f64,
    first_error: Option<String>,
    reregistered: u64,
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    assert!(n >= 1 && secs >= 1, "usage: load [N SECONDS]");
    let window = Duration::from_secs(secs);
    let ticks = fillmesh_tests::load::clock_ticks();

    let dir = tempfile::tempdir().expect("temporary directory");
    // Key 0 is the origin's, 1..=n the appliances'.
    let keys: Vec<Keypair> = (0..=n).map(|_| identity::ephemeral()).collect();
    let trust: String = keys.iter().map(|k| format!("{}\n", identity::peer_id(k))).collect();
    let trust_file = dir.path().join("trusted.txt");
    std::fs::write(&trust_file, trust).expect("write the trust file");
    let tracker = NodeProcess::start_tracker(
        &dir.path().join("tracker"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--trust-file",
            trust_file.to_str().expect("a UTF-8 path"),
        ],
    );
    let tracker_pid = tracker.child.0.id();
    let tracker_addr: SocketAddr = tracker.mesh.parse().expect("tracker mesh address");
    let tracker_id: PeerId = tracker.peer.parse().expect("tracker PeerId");

    // A title long enough that no appliance completes it in the two fill phases (chunks gained
    // at CHUNKS_PER_S for 2 x (warm-up + window), with a quarter to spare).
    let fill_s = 2.0 * (WARM_UP + window).as_secs_f64();
    let chunks = ((CHUNKS_PER_S * fill_s * 1.25) as u32).max(1024);
    let cvs: Vec<[u8; 32]> = test_bytes(chunks as usize * 32, 7)
        .chunks_exact(32)
        .map(|cv| cv.try_into().expect("32 bytes"))
        .collect();
    let chunk_size = ChunkSize::new(CHUNK_BYTES).expect("chunk size");
    let manifest = Manifest::new(u64::from(chunks) * CHUNK_BYTES, chunk_size, cvs).expect("manifest");
    let title = manifest.root();

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let results = runtime.block_on(async {
        let endpoints: Vec<MeshEndpoint> = (0..CLIENT_ENDPOINTS)
            .map(|_| {
                let tls = TlsIdentity::new(&identity::ephemeral()).expect("TLS identity");
                MeshEndpoint::client("127.0.0.1".parse().expect("ip"), tls, TransportLimits::default())
                    .expect("client endpoint")
            })
            .collect();

        // The origin publishes the title and holds all of it.
        let origin = dial(&endpoints[0], &keys[0], tracker_addr, tracker_id).await;
        call(&origin, &TrackerRequest::Hello(Hello::ours(Role::Origin))).await;
        call(&origin, &TrackerRequest::Register(registration(0, Role::Origin))).await;
        call(&origin, &TrackerRequest::Publish { title, name: "load".into(), manifest: manifest.clone() }).await;
        let full = ChunkBitmap::full(chunks).expect("bitmap");
        call(&origin, &TrackerRequest::ReportHeld { title, held: full, fetched: Vec::new() }).await;

        // The appliances connect and register, 32 at a time.
        let connected = Instant::now();
        let keys = Arc::new(keys);
        let limit = Arc::new(tokio::sync::Semaphore::new(32));
        let registered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 1..=n {
            let (keys, limit, registered) = (keys.clone(), limit.clone(), registered.clone());
            let endpoint = endpoints[i % CLIENT_ENDPOINTS].clone();
            tasks.spawn(async move {
                let permit = limit.acquire_owned().await.expect("semaphore");
                let conn = dial(&endpoint, &keys[i], tracker_addr, tracker_id).await;
                call(&conn, &TrackerRequest::Hello(Hello::ours(Role::Appliance))).await;
                call(&conn, &TrackerRequest::Register(registration(i, Role::Appliance))).await;
                drop(permit);
                // Heartbeats until every appliance is registered, so that none is forgotten
                // meanwhile. Bounded: at most 300 (5 minutes).
                registered.fetch_add(1, Relaxed);
                for _ in 0..300 {
                    if registered.load(Relaxed) >= n {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let hb = Heartbeat { healthy: true, uploads_in_flight: 0, upload_bps_used: 0, player_sessions: 0, disk_used: 0 };
                    call(&conn, &TrackerRequest::Heartbeat(hb)).await;
                }
                // The first plan once the fleet is whole: each registration moves the epoch,
                // and a plan asked after it computes the title's layout again.
                call(&conn, &TrackerRequest::Fills).await;
                Appliance { index: i, conn, held: vec![false; chunks as usize], held_count: 0, rng: i as u64 | 1, carry: 0.0 }
            });
        }
        let mut fleet = Vec::with_capacity(n);
        while let Some(a) = tasks.join_next().await {
            fleet.push(a.expect("an appliance's set-up"));
        }
        println!(
            "tracker load: {n} appliances connected and registered in {:.1} s (one process, {CLIENT_ENDPOINTS} client UDP sockets); \
             title of {chunks} chunks of 1 MiB; {}s measured per phase after {}s of warm-up",
            connected.elapsed().as_secs_f64(),
            window.as_secs(),
            WARM_UP.as_secs()
        );

        let mut results = Vec::new();
        for phase in PHASES {
            let rec = Arc::new(Record::default());
            let end = tokio::time::Instant::now() + WARM_UP + window;
            let mut tasks = tokio::task::JoinSet::new();
            for a in fleet.drain(..) {
                tasks.spawn(run_appliance(a, phase, title, end, rec.clone()));
            }
            tokio::time::sleep(WARM_UP).await;
            let (t0, c0, w0) =
                (cpu_seconds(tracker_pid, ticks), cpu_seconds(std::process::id(), ticks), Instant::now());
            rec.open.store(true, Relaxed);
            tokio::time::sleep_until(end).await;
            rec.open.store(false, Relaxed);
            let wall = w0.elapsed().as_secs_f64();
            let (t1, c1) = (cpu_seconds(tracker_pid, ticks), cpu_seconds(std::process::id(), ticks));
            while let Some(a) = tasks.join_next().await {
                fleet.push(a.expect("an appliance's phase"));
            }
            let lost: Vec<String> =
                fleet.iter().filter_map(|a| a.conn.close_reason()).map(|r| r.to_string()).collect();
            if let Some(first) = lost.first() {
                println!("{}: {} connections closed by the end of this phase (first: {first})", phase.name, lost.len());
            }
            let mut lat = std::mem::take(&mut *rec.latencies_us.locked());
            let mut all: Vec<u32> = lat.iter().flatten().copied().collect();
            let m = Measured {
                tracker_cpu: (t1 - t0) / wall,
                client_cpu: (c1 - c0) / wall,
                rates: std::array::from_fn(|k| rec.sent[k].load(Relaxed) as f64 / wall),
                errors: std::array::from_fn(|k| rec.errors[k].load(Relaxed)),
                members_mb_s: rec.answer_bytes.load(Relaxed) as f64 / wall / 1e6,
                p50: std::array::from_fn(|k| percentile(&mut lat[k], 0.5)),
                p99: std::array::from_fn(|k| percentile(&mut lat[k], 0.99)),
                all_p50: percentile(&mut all, 0.5),
                all_p99: percentile(&mut all, 0.99),
                reregistered: rec.reregistered.load(Relaxed),
                first_error: rec.first_error.locked().take(),
            };
            results.push((phase, m));
        }
        let open = fleet.iter().filter(|a| a.conn.close_reason().is_none()).count();
        for a in &fleet {
            a.conn.close(0u32.into(), b"done");
        }
        origin.close(0u32.into(), b"done");
        (results, open)
    });
    let (results, open) = results;
    runtime.shutdown_timeout(Duration::from_secs(5));

    println!("connections held at the end: {open} of {n}");
    println!(
        "{:<24} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "phase",
        "hb/s",
        "members/s",
        "summary/s",
        "fills/s",
        "errors",
        "tracker",
        "x base",
        "p50 ms",
        "p99 ms"
    );
    let baseline = results[0].1.tracker_cpu;
    for (phase, m) in &results {
        println!(
            "{:<24} {:>9.0} {:>9.0} {:>10.0} {:>9.1} {:>9} {:>9.3} {:>9.1} {:>8.2} {:>8.2}",
            phase.name,
            m.rates[0],
            m.rates[1],
            m.rates[2],
            m.rates[3],
            m.errors.iter().sum::<u64>(),
            m.tracker_cpu,
            m.tracker_cpu / baseline.max(1e-9),
            m.all_p50,
            m.all_p99
        );
    }
    println!("(tracker: CPU seconds per second of the tracker process, utime + stime from /proc)");
    for (phase, m) in &results {
        let kinds: Vec<String> = (0..4)
            .filter(|&k| m.rates[k] > 0.0)
            .map(|k| format!("{} {:.2}/{:.2}", KINDS[k], m.p50[k], m.p99[k]))
            .collect();
        println!(
            "{}: p50/p99 ms by kind: {}; members answers {:.1} MB/s; this client process {:.2} CPU s/s",
            phase.name,
            kinds.join(", "),
            m.members_mb_s,
            m.client_cpu
        );
        if let Some(e) = &m.first_error {
            println!(
                "{}: first error: {e}; {} appliances forgotten and registered again",
                phase.name, m.reregistered
            );
        }
    }
    let scale = TARGET_FLEET / n as f64;
    // A phase is a steady state only if the tracker kept up: the heartbeats went out at the
    // rate asked (each waits for the one before) and hardly any request failed.
    let kept_up = |phase: &Phase, m: &Measured| {
        let sent: f64 = m.rates.iter().sum::<f64>() * window.as_secs_f64();
        m.rates[0] >= 0.9 * n as f64 / phase.heartbeat_every
            && (m.errors.iter().sum::<u64>() as f64) < 0.01 * sent
    };
    for (phase, m) in &results {
        if kept_up(phase, m) {
            println!(
                "{}: extrapolated to 10,000 appliances (linear in connections, x{scale:.1}): {:.2} CPU s/s",
                phase.name,
                m.tracker_cpu * scale
            );
        } else {
            println!(
                "{}: the tracker did not keep up at {n} appliances ({:.0} of {n} heartbeats/s, {} errors): \
                 not a steady state, not extrapolated",
                phase.name,
                m.rates[0],
                m.errors.iter().sum::<u64>()
            );
        }
    }
    // Each Members answer lists every live member: its cost grows with the square of the fleet
    // (more requests, each longer).
    let member_bytes = 53.0 * n as f64 * n as f64 * HEARTBEATS_PER_S;
    println!(
        "members after every heartbeat ask for about {:.0} MB/s of answers at {n} appliances, {:.0} MB/s at 10,000",
        member_bytes / 1e6,
        member_bytes * scale * scale / 1e6
    );
    println!("target: under one core at 10,000 appliances");
}
