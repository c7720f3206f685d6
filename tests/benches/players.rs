//! Players at once (issue 30, item 1): N concurrent video players against ONE appliance, over
//! HTTP/3 and over HTTPS/TCP, each paced at a bitrate, verifying every byte; what the players
//! saw (connections established and refused, time to first byte, stalls) and what the
//! appliance spent (CPU, memory, UDP datagrams dropped).
//!
//! `cargo bench -p fillmesh-tests --bench players [-- ARGS]`; ARGS (defaults in brackets):
//! - `--players 1000,5000`: the runs' sizes, players at once, one run per size and protocol;
//! - `--proto h3|tcp|both` [both]: HTTP/3, or HTTPS on TCP (HTTP/1.1, keep-alive), or both;
//! - `--rate-mbit 4`: each player's bitrate; 0: unpaced (each asks its next range as soon as
//!   the last ended);
//! - `--secs 30`: each run's length; `--ramp-secs 1`: the players' starts spread over it;
//! - `--title-mib 1024`, `--range-mib 2`: the title's size and the ranges asked;
//! - `--buffer-secs 8`: a paced player asks its next range when it holds less than this
//!   ahead of its playhead;
//! - `--node-arg ARG` (repeatable): passed to the appliance as it is (e.g. the lead's new
//!   flags: `--node-arg=--max-connections --node-arg=2000`);
//! - `--client-payload 6500`: the largest UDP payload the HTTP/3 clients take (their
//!   endpoints' `max_udp_payload_size`): by default `MTU_UPPER_BOUND`, as `fillmesh play`'s
//!   endpoint; `1472` is quinn's default and what a 1,500-byte path allows (a browser's case);
//! - `--client-sockets N`: the HTTP/3 clients' UDP sockets (default: one per 250 players, 2
//!   to 32). Each has a 16 MiB receive buffer, so more sockets also queue more for a client
//!   process that falls behind;
//! - `--netns`: the clients in a network namespace of their own, reaching the appliance over
//!   a veth pair (made and removed by the bench, as root), rather than over loopback;
//! - `--appliance-cpus LIST`, `--client-cpus LIST` (`taskset -c` lists, e.g. `0` and `1`):
//!   the appliance's threads and the client process kept on CPUs of their own, so that
//!   neither waits for a core the other holds (on 2 cores each gets one: half the capacity,
//!   but each side's cost and latency without the other's).
//!
//! **The appliance** is one `fillmesh node` process (the release build), as `--origin` with
//! no tracker (so no playback tokens), holding one title whose bytes are a function of their
//! offset (`fillmesh_tests::load::word`), seeded through its ingest API, presenting a
//! self-signed certificate (rcgen) that the players pin by its key's SHA-256, as steering
//! pins one. Its data lives under /tmp/load/ and is deleted at the end; the process is
//! stopped at the end (and on a panic, by its guard). It runs for every run of the bench: its
//! CPU seconds (utime + stime of /proc/PID/stat), UDP drops (the last column of
//! /proc/net/udp for its port) are before/after deltas over a run, its peak resident memory
//! (VmHWM) is since the run's start (reset through /proc/PID/clear_refs), its final one
//! (VmRSS) at the run's end.
//!
//! **The players** run in a separate process (this bench again, `--client`), so that its CPU
//! (reported) is told apart from the appliance's; one tokio runtime, a task per player. Over
//! HTTP/3 (quinn + h3) players share a few client UDP sockets (one per 250 players, 2 to 32)
//! with 16 MiB receive buffers (SO_RCVBUFFORCE), so that datagrams are dropped at the
//! server if anywhere; over TCP each has its own connection (HTTP/1.1 over rustls, written
//! here: about 150 lines for a GET with Range and a Content-Length body). Each player opens
//! its connection (a handshake timeout of 10 s), then reads ranges of `--range-mib` one
//! after another from a random start (wrapping at the title's end), as a player does with a
//! progressive file: paced, it asks the next range when its buffer ahead (bytes received
//! turned into seconds at its bitrate, less the time since its first byte) falls under
//! `--buffer-secs`. It checks every byte against the content function.
//!
//! **Reported** per run: players asked; connections established; failed connections as
//! refused (a QUIC CONNECTION_REFUSED or H3_EXCESSIVE_LOAD close, a TCP refusal or reset at
//! connect or in the TLS handshake, or a 503 to the first request), timed out (no handshake in 10 s) and other;
//! completed requests; 503s to later requests (retried after a second); errors (a connection
//! lost, a wrong byte, a request with no byte for 20 s); MB verified; STALLS: a player's
//! playhead (starting at its first byte, moving at its bitrate) has caught up with the bytes
//! it received and no byte has come for more than 1 s (unpaced: any request with no byte for
//! more than 1 s), counted once per gap; time to first byte of every request (request sent
//! to first body byte) and of each player's first request (from before its handshake) as
//! p50/p99/max; the appliance's CPU seconds, peak and final RSS, UDP drops; the client
//! process's CPU seconds and its sockets' UDP drops; the appliance's own part of the TTFB
//! (request received to first piece ready: gate, read and verification of the chunk) from its
//! `fillmesh_player_ttfb_seconds` histogram, as the bounds of the buckets holding p50 and p99. Each row also says whether the appliance was still up.
//!
//! Not done: HTTP/2 (TCP players speak HTTP/1.1); players going to another appliance when
//! refused (a refused player stops); adaptive bitrates; players arriving and leaving during
//! a run (all arrive over `--ramp-secs` and stay).
//!
//! Measured here (2 cores shared with three other sessions' builds and tests: load average
//! 7-10, 18 at one point, so every process waits for a core and the appliance's CPU seconds
//! are what it got, not what it needed; 1 GiB title, 4 Mbit/s, 2 MiB ranges, 30 s, loopback).
//! Before issue 30's item 2 (one UDP socket with the kernel's 208 KiB, 256 player requests at
//! once, 1,024 TCP connections), starts over 1 s:
//!
//! | players | proto | estab | refused | timed out | stalls | TTFB p50/p99/max ms | MB/s | app CPU s | RSS pk MB | UDP drops |
//! |---|---|---|---|---|---|---|---|---|---|---|
//! | 100 | h3 | 100 | 0 | 0 | 0 | 2.4/111/327 | 65 | 4.6 | 239 | 691 |
//! | 100 | tcp | 100 | 0 | 0 | 0 | 1.0/5.2/9 | 65 | 2.4 | 140 | 0 |
//! | 300 | h3 | 300 | 0 | 0 | 27 | 7.7/2205/9742 | 190 | 13.2 | 711 | 33,510 |
//! | 300 | tcp | 300 | 0 | 0 | 0 | 6.2/319/379 | 192 | 6.5 | 192 | 0 |
//! | 1000 | h3 | 653 | 0 | 347 | 1,577 | 751/18103/19430 | 100 | 10.7 | 1,019 | 97,115 |
//! | 1000 | tcp | 624 | 376 (503) | 0 | 1,728 | 1171/3618/4150 | 317 | 14.8 | 752 | 0 |
//! | 5000 | h3 | 1266 | 2680 (503) | 1054 | 1,770 | 890/18425/20001 | 115 | 14.9 | 1,353 | 47,181 |
//! | 5000 | tcp | 1232 | 749 (503) | 3019 | 1,529 | 1142/2618/3647 | 541 | 24.4 | 821 | 0 |
//!
//! After the lead's item 2 (16 MiB UDP buffers, `--max-handshakes 256`, `--max-connections
//! 4096`, `--max-player-requests 4096`; merge of 07:00), same defaults:
//!
//! | players | proto | estab | refused | timed out | stalls | TTFB p50/p99/max ms | MB/s | app CPU s | RSS pk MB | UDP drops |
//! |---|---|---|---|---|---|---|---|---|---|---|
//! | 1000 | h3 | 624 | 376 (QUIC) | 0 | 2,414 | 2891/5543/5823 | 60 | 12.7 | 2,123 | 10,666 |
//! | 1000 | tcp | 923 | 77 (reset) | 0 | 170 | 359/1907/2311 | 536 | 19.6 | 1,498 | 0 |
//! | 5000 | h3 | 758 | 4242 (QUIC) | 0 | 2,102 | 3075/5414/9930 | 90 | 14.7 | 2,628 | 0 |
//! | 5000 | tcp | 1252 | 1179 (reset) | 0 (2,569 other: resets seen by connect, now refused) | 2,734 | 1039/2852/4029 | 428 | 17.6 | 686 | 0 |
//!
//! In the same sitting, the new binary with the old settings (`--node-arg=--udp-buffer=104KiB
//! --node-arg=--max-player-requests=256 --node-arg=--max-connections=1000000
//! --node-arg=--max-handshakes=100000`), 1000 players: h3 423 established, 560 answered 503,
//! 17 timed out, TTFB p99 14.8 s, 89,511 drops, RSS 1,071 MB; tcp 960 established, 40
//! answered 503, p99 1.3 s. And the new defaults with starts over 10 s (`--ramp-secs 10`,
//! load 9-18): every one of 1,000 connections established on both, no drop, but TTFB p99
//! 4.7 s (h3) and 7.5 s (tcp), 3,897 and 2,524 stalls, and the appliance at 3,165 MB peak
//! (2,564 MB at the end) on h3.
//!
//! After the lead's second change (chunks shared between requests and sent in 256 KiB
//! slices, `--max-handshakes 1024`; merge of 07:30), same defaults, load 11.5:
//!
//! | players | proto | estab | refused | timed out | stalls | TTFB p50/p99/max ms | MB/s | app CPU s | RSS pk MB | UDP drops |
//! |---|---|---|---|---|---|---|---|---|---|---|
//! | 1000 | h3 | 1000 | 0 | 0 | 3,723 | 1119/7443/8263 | 48 | 8.0 | 2,744 | 29,175 |
//! | 1000 | tcp | 1000 | 0 | 0 | 2,013 | 1083/4207/4789 | 291 | 10.9 | 2,412 | 0 |
//! | 5000 | h3 | 1665 | 3335 (QUIC) | 0 | 3,695 | 2617/7796/9554 | 67 | 12.9 | 4,133 | 34,885 |
//! | 5000 | tcp | 3317 | 1683 (reset) | 0 | 18,460 | 2493/5559/6484 | 702 | 24.3 | 3,164 | 0 |
//!
//! Neither process was short of CPU time by its own count (appliance 10-25 s and client
//! 4-16 s in a 30 s run), but the machine was: the targets (TTFB p99 <= 200 ms, no stall at
//! 1,000) need this run on a quiet machine before they can be judged.
//!
//! Judged later (issue 30's second session; README, "Players at once: last figures", has the
//! table): on a machine whose only other load ran at nice 10 with the kernel's autogroups
//! off, and with clients that take 6,500-byte datagrams, 1,000 players over each protocol
//! were served without stalls (0 in four of five runs, 1 in the other), TTFB p99 118-216 ms
//! over HTTP/3 and 12-48 ms over TCP. With `--client-payload 1472` both processes fill the
//! two cores and players stall.
//!
//! 5,000 players over 10 s at `--max-connections 1000` (the 1,000 taken arriving within 2 s)
//! stalled 1,597 times over HTTP/3 and 25 over TCP; with the appliance taking at most 100 new
//! connections a second as well (`--node-arg=--connection-rate --node-arg=100`), none in six
//! of seven runs over both (23 in the other).

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use fillmesh_net::tls::{player_client_config, spki_sha256, SERVER_NAME};
use fillmesh_tests::load::{self, quantile};
use fillmesh_tests::{fillmesh, wait_for, ChildGuard, NodeProcess};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request with no byte for this long is an error (and ends its player).
const SILENCE_LIMIT: Duration = Duration::from_secs(20);
/// No byte for longer than this while behind the bitrate is a stall.
const STALL_GAP: Duration = Duration::from_secs(1);
const PLAYERS_PER_SOCKET: usize = 250;
const CLIENT_RCVBUF: usize = 16 << 20;
/// H3_EXCESSIVE_LOAD (RFC 9114): a server closing a connection it cannot take.
const H3_EXCESSIVE_LOAD: u32 = 0x107;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    H3,
    Tcp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::H3 => "h3",
            Proto::Tcp => "tcp",
        }
    }
}

/// The bench's arguments (the client's are the same plus where and what).
#[derive(Debug, Clone)]
struct Args {
    players: Vec<usize>,
    protos: Vec<Proto>,
    rate_mbit: f64,
    secs: f64,
    ramp_secs: f64,
    title_mib: u64,
    range_mib: f64,
    buffer_secs: f64,
    node_args: Vec<String>,
    /// The largest UDP payload the HTTP/3 clients accept (their endpoints' max_udp_payload_size).
    client_payload: u16,
    /// HTTP/3 client sockets; 0: one per PLAYERS_PER_SOCKET players (2 to 32).
    client_sockets: usize,
    netns: bool,
    /// CPUs (a `taskset -c` list) the appliance's threads are kept on; empty: any.
    appliance_cpus: String,
    /// CPUs the client process is kept on; empty: any.
    client_cpus: String,
    client: bool,
    addr: Option<SocketAddr>,
    title: String,
    pin: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        players: vec![1000, 5000],
        protos: vec![Proto::H3, Proto::Tcp],
        rate_mbit: 4.0,
        secs: 30.0,
        ramp_secs: 1.0,
        title_mib: 1024,
        range_mib: 2.0,
        buffer_secs: 8.0,
        node_args: Vec::new(),
        client_payload: fillmesh_net::endpoint::MTU_UPPER_BOUND,
        client_sockets: 0,
        netns: false,
        appliance_cpus: String::new(),
        client_cpus: String::new(),
        client: false,
        addr: None,
        title: String::new(),
        pin: String::new(),
    };
    let mut it = std::env::args().skip(1);
    let usage = "usage: players [--players N[,N..]] [--proto h3|tcp|both] [--rate-mbit R] [--secs S] \
                 [--ramp-secs S] [--title-mib M] [--range-mib M] [--buffer-secs S] [--node-arg ARG]... [--client-payload BYTES] [--client-sockets N] [--netns] [--appliance-cpus LIST] [--client-cpus LIST]";
    // Bounded by the argument list.
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline.clone().or_else(|| it.next()).unwrap_or_else(|| panic!("{flag} needs a value; {usage}"))
        };
        let num =
            |v: String| v.parse::<f64>().unwrap_or_else(|_| panic!("{flag}: not a number: {v}; {usage}"));
        match flag.as_str() {
            "--bench" => {}
            "--players" => {
                a.players =
                    value().split(',').map(|n| n.parse().unwrap_or_else(|_| panic!("{usage}"))).collect()
            }
            "--proto" => {
                a.protos = match value().as_str() {
                    "h3" => vec![Proto::H3],
                    "tcp" => vec![Proto::Tcp],
                    "both" => vec![Proto::H3, Proto::Tcp],
                    other => panic!("--proto {other}; {usage}"),
                }
            }
            "--rate-mbit" => a.rate_mbit = num(value()),
            "--secs" => a.secs = num(value()),
            "--ramp-secs" => a.ramp_secs = num(value()),
            "--title-mib" => a.title_mib = num(value()) as u64,
            "--range-mib" => a.range_mib = num(value()),
            "--buffer-secs" => a.buffer_secs = num(value()),
            "--node-arg" => a.node_args.push(value()),
            "--client-payload" => {
                a.client_payload =
                    value().parse().unwrap_or_else(|_| panic!("--client-payload 1200..=65527; {usage}"))
            }
            "--client-sockets" => a.client_sockets = num(value()) as usize,
            "--netns" => a.netns = true,
            "--appliance-cpus" => a.appliance_cpus = value(),
            "--client-cpus" => a.client_cpus = value(),
            "--client" => a.client = true,
            "--addr" => a.addr = Some(value().parse().expect("--addr")),
            "--title" => a.title = value(),
            "--pin" => a.pin = value(),
            other => panic!("unknown argument {other}; {usage}"),
        }
    }
    assert!(!a.players.is_empty() && a.players.iter().all(|&n| n > 0), "{usage}");
    assert!(a.secs > 0.0 && a.ramp_secs >= 0.0 && a.ramp_secs < a.secs, "--ramp-secs under --secs; {usage}");
    assert!(a.title_mib > 0 && a.range_mib > 0.0 && a.range_mib <= a.title_mib as f64, "{usage}");
    a
}

fn main() {
    let args = parse_args();
    if args.client {
        client_main(&args);
    } else {
        bench_main(&args);
    }
}

/// Raises this process's soft limit on open files to its hard limit (the processes it starts
/// inherit it): 5,000 TCP players need 5,000 descriptors on each side. The limits before.
fn raise_open_files() -> (u64, u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    (soft, hard)
}

// ---------------------------------------------------------------------------------------
// The bench: the appliance, one client process per run, the table.

/// A network namespace for the clients, joined to this one by a veth pair (10.77.X.1 here,
/// .2 there), made by the bench and removed when dropped (needs root).
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
}

impl Netns {
    fn create() -> Self {
        let id = std::process::id();
        let x = id % 256;
        let netns = Netns {
            name: format!("fmload{id}"),
            host_if: format!("fml{id}a"),
            host_ip: format!("10.77.{x}.1"),
        };
        let peer = format!("fml{id}b");
        let ns = netns.name.as_str();
        let (host_net, ns_net) = (format!("{}/30", netns.host_ip), format!("10.77.{x}.2/30"));
        let steps: [Vec<&str>; 8] = [
            vec!["netns", "add", ns],
            vec!["link", "add", &netns.host_if, "type", "veth", "peer", "name", &peer],
            vec!["link", "set", &peer, "netns", ns],
            vec!["addr", "add", &host_net, "dev", &netns.host_if],
            vec!["link", "set", &netns.host_if, "up"],
            vec!["-n", ns, "addr", "add", &ns_net, "dev", &peer],
            vec!["-n", ns, "link", "set", &peer, "up"],
            vec!["-n", ns, "link", "set", "lo", "up"],
        ];
        for step in &steps {
            let out = Command::new("ip").args(step).output().expect("run ip (iproute2)");
            assert!(out.status.success(), "ip {}: {}", step.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        netns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of the pair deletes both.
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

fn bench_main(args: &Args) {
    let (soft, hard) = raise_open_files();
    let ticks = load::clock_ticks();
    std::fs::create_dir_all("/tmp/load").expect("/tmp/load");
    let dir = tempfile::Builder::new().prefix("players-").tempdir_in("/tmp/load").expect("temp dir");

    // The players' certificate, pinned by the clients as steering pins an appliance's.
    let cert = rcgen::generate_simple_self_signed(vec!["fillmesh.invalid".into()]).expect("certificate");
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).expect("cert");
    std::fs::write(&key_pem, cert.key_pair.serialize_pem()).expect("key");
    let pin: String =
        spki_sha256(cert.cert.der()).expect("SPKI").iter().map(|b| format!("{b:02x}")).collect();

    let size = args.title_mib << 20;
    let file = dir.path().join("title.bin");
    load::write_title(&file, size).expect("write the title");
    let (cert_s, key_s) = (cert_pem.display().to_string(), key_pem.display().to_string());
    // An address of its own (the mesh tests use 127.0.0.10-..20), or the veth's end here.
    let netns = args.netns.then(Netns::create);
    let listen = netns.as_ref().map_or("127.0.0.30:0".to_owned(), |n| format!("{}:0", n.host_ip));
    let mut node_args: Vec<&str> = vec![
        "--origin",
        "--listen",
        &listen,
        "--http",
        "127.0.0.30:0",
        "--tls-cert",
        &cert_s,
        "--tls-key",
        &key_s,
    ];
    node_args.extend(args.node_args.iter().map(String::as_str));
    // A short drain at the end, unless the arguments name one.
    if !args.node_args.iter().any(|a| a.starts_with("--drain-secs")) {
        node_args.extend(["--drain-secs", "2"]);
    }
    let appliance = NodeProcess::start(&dir.path().join("appliance"), &node_args);
    let pid = appliance.child.0.id();
    if !args.appliance_cpus.is_empty() {
        // Every thread it has now (it has started: its runtime's workers exist); the threads
        // they make later inherit their mask.
        let out = Command::new("taskset")
            .args(["-a", "-p", "-c", &args.appliance_cpus, &pid.to_string()])
            .output()
            .expect("run taskset (util-linux)");
        assert!(out.status.success(), "taskset -c {} for the appliance: {out:?}", args.appliance_cpus);
    }
    let url = format!("http://{}", appliance.http.as_deref().expect("the appliance's --http"));
    let out = fillmesh().arg("seed").arg(&file).args(["--origin", &url]).output().expect("fillmesh seed");
    assert!(out.status.success(), "seed: {out:?}");
    let title = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    std::fs::remove_file(&file).expect("remove the title's source");
    let addr: SocketAddr = appliance.mesh.parse().expect("mesh address");
    let limit = load::open_files_limit(pid).map_or("?".into(), |(s, h)| format!("{s} (hard {h})"));
    println!(
        "players bench: appliance pid {pid} at {addr} (HTTP/3 on UDP and HTTPS on TCP), title {} MiB; \
         its open-files limit {limit} (this shell's was {soft}, hard {hard}); {} Mbit/s per player{}, \
         ranges of {} MiB, buffer {} s, {} s a run, starts over {} s; HTTP/3 clients take datagrams up to {} bytes; node args: {:?}",
        args.title_mib,
        args.rate_mbit,
        if args.rate_mbit > 0.0 { "" } else { " (unpaced)" },
        args.range_mib,
        args.buffer_secs,
        args.secs,
        args.ramp_secs,
        args.client_payload,
        args.node_args
    );
    for line in appliance.log().lines().filter(|l| l.contains("receive buffer")).take(2) {
        println!("appliance: {}", line.trim());
    }
    if !(args.appliance_cpus.is_empty() && args.client_cpus.is_empty()) {
        let any = |l: &str| if l.is_empty() { "any".to_owned() } else { l.to_owned() };
        println!("CPUs: appliance {}, clients {}", any(&args.appliance_cpus), any(&args.client_cpus));
    }
    if let Some(ns) = &netns {
        println!("clients in network namespace {} (veth {}, appliance at {addr})", ns.name, ns.host_if);
    }
    println!("load: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());

    let mut rows = Vec::new();
    for &n in &args.players {
        for &proto in &args.protos {
            let row = run(args, proto, n, &appliance, &title, &pin, ticks, netns.as_ref());
            println!("{}", row_line(&row));
            println!("      {}", detail_line(&row));
            rows.push(row);
            if !alive(&appliance) {
                println!(
                    "the appliance is down: no more runs; its log's tail:\n{}",
                    tail(&appliance.log(), 20)
                );
                break;
            }
            // Let the connections of this run close before the next.
            std::thread::sleep(Duration::from_secs(3));
        }
    }
    println!("\n{}", header_line());
    for row in &rows {
        println!("{}", row_line(row));
    }
    println!(
        "(estab: connections established; refused / t-out / other: failed connections; requests: \
         ranges completed; 503: later requests refused; err: connections lost, bad bytes, silent \
         requests; stalls: no byte for > 1 s while behind the bitrate; TTFB in ms, first = a \
         player's first request from before its handshake; app CPU: appliance CPU s over the run; \
         RSS peak/final MB; drops: datagrams its UDP socket dropped; cli CPU: client process CPU s)"
    );
    println!("load at the end: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    for r in &rows {
        for (key, what) in [("first_fail", "first other connection failure"), ("first_error", "first error")]
        {
            if let Some(e) = r[key].as_str() {
                println!("{} x {}: {what}: {e}", r["proto"].as_str().unwrap_or("?"), r["players"]);
            }
        }
    }
    let mut appliance = appliance;
    if appliance.child.terminate(Duration::from_secs(40)).is_none() {
        println!("the appliance did not stop within 40 s of SIGTERM: killed");
    }
}

fn alive(node: &NodeProcess) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", node.child.0.id()))
        .is_ok_and(|s| s.rfind(')').is_some_and(|i| !s[i..].starts_with(") Z")))
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One run: a client process of `n` players over `proto`; the figures as a JSON object.
#[allow(clippy::too_many_arguments)]
fn run(
    args: &Args,
    proto: Proto,
    n: usize,
    appliance: &NodeProcess,
    title: &str,
    pin: &str,
    ticks: f64,
    netns: Option<&Netns>,
) -> Value {
    let pid = appliance.child.0.id();
    let addr: SocketAddr = appliance.mesh.parse().expect("mesh address");
    let port = addr.port();
    let (cpu0, drops0) = (load::cpu_seconds(pid, ticks), load::udp_drops(port));
    let served0 = ttfb_buckets(&appliance.metrics());
    let peak_reset = load::reset_peak_rss(pid);
    let exe = std::env::current_exe().expect("this bench's path");
    // In the namespace: `ip netns exec` joins it; on CPUs of its own: `taskset -c LIST` keeps it
    // (and the threads it makes) there; then the client (this same executable).
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if let Some(ns) = netns {
        argv.extend(["ip", "netns", "exec", ns.name.as_str()].map(Into::into));
    }
    if !args.client_cpus.is_empty() {
        argv.extend(["taskset", "-c", args.client_cpus.as_str()].map(Into::into));
    }
    argv.push(exe.into());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd.args(["--client", "--proto", proto.name(), "--players", &n.to_string()])
        .args(["--addr", &addr.to_string(), "--title", title, "--pin", pin])
        .args(["--rate-mbit", &args.rate_mbit.to_string(), "--secs", &args.secs.to_string()])
        .args(["--ramp-secs", &args.ramp_secs.to_string(), "--title-mib", &args.title_mib.to_string()])
        .args(["--range-mib", &args.range_mib.to_string(), "--buffer-secs", &args.buffer_secs.to_string()])
        .args(["--client-payload", &args.client_payload.to_string()])
        .args(["--client-sockets", &args.client_sockets.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut client = ChildGuard(cmd.spawn().expect("start the client process"));
    // Bounded: the client stops its players at --secs and closes within seconds after.
    let limit = Duration::from_secs_f64(args.secs + 60.0 + n as f64 / 100.0);
    let status = wait_for(limit, || client.0.try_wait().ok().flatten());
    let (cpu1, drops1) = (load::cpu_seconds(pid, ticks), load::udp_drops(port));
    let mut out = String::new();
    if let Some(mut stdout) = client.0.stdout.take() {
        if status.is_some() {
            let _ = stdout.read_to_string(&mut out);
        }
    }
    let mut row: Value = match status {
        Some(s) if s.success() => serde_json::from_str(out.trim())
            .unwrap_or_else(|e| json!({"first_error": format!("client output: {e}: {out}")})),
        Some(s) => json!({"first_error": format!("the client process failed: {s}")}),
        None => json!({"first_error": "the client process did not end in time (killed)"}),
    };
    row["proto"] = json!(proto.name());
    row["players"] = json!(n);
    row["app_cpu"] = json!(cpu0.zip(cpu1).map(|(a, b)| b - a));
    row["rss_peak"] = json!(if peak_reset { load::status_mb(pid, "VmHWM") } else { None });
    row["rss_final"] = json!(load::status_mb(pid, "VmRSS"));
    row["drops"] = json!(drops0.zip(drops1).map(|(a, b)| b.saturating_sub(a)));
    row["up"] = json!(alive(appliance));
    // The appliance's own part of the time to first byte (request received to first piece
    // ready: gate, chunk read and verification), from its histogram: what the players' TTFB
    // adds beyond it is transport and the client.
    let served: Vec<(f64, f64)> =
        ttfb_buckets(&appliance.metrics()).iter().zip(&served0).map(|(a, b)| (a.0, a.1 - b.1)).collect();
    row["served_p50"] = json!(bucket_quantile(&served, 0.5).map(|s| s * 1e3));
    row["served_p99"] = json!(bucket_quantile(&served, 0.99).map(|s| s * 1e3));
    row
}

/// The cumulative buckets (upper bound in seconds, count) of the appliance's
/// `fillmesh_player_ttfb_seconds` histogram.
fn ttfb_buckets(metrics: &str) -> Vec<(f64, f64)> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("fillmesh_player_ttfb_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, rest) = l.split_once('"')?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, rest.split_whitespace().last()?.parse().ok()?))
        })
        .collect()
}

/// The upper bound of the bucket holding quantile `q` of cumulative `buckets`.
fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    (total > 0.0).then(|| buckets.iter().find(|b| b.1 >= q * total).map_or(f64::INFINITY, |b| b.0))
}

/// The rest of a run's figures: p90s, the first requests' tail, stalls' length, MB verified.
fn detail_line(r: &Value) -> String {
    let f = |k: &str, p: usize| r[k].as_f64().map_or("-".into(), |v| format!("{v:.p$}"));
    format!(
        "refused at the connection {} (the rest: 503 to the first request); TTFB p90 {} ms; after \
         the first two requests p50/p99/max {}/{}/{} ms; first request p50/p90/p99/max \
         {}/{}/{}/{} ms; {} players stalled, {} s stalled in all; {} MB verified; client wall {} s, its sockets dropped {} datagrams; the appliance's \
         own TTFB (request received to first piece ready, bucket bounds) p50/p99 <= {}/{} ms",
        r["refused_at_connect"].as_u64().map_or("-".into(), |v| v.to_string()),
        f("ttfb_p90", 1),
        f("steady_p50", 1),
        f("steady_p99", 1),
        f("steady_max", 0),
        f("first_p50", 0),
        f("first_p90", 0),
        f("first_p99", 0),
        f("first_max", 0),
        r["stalled_players"].as_u64().map_or("-".into(), |v| v.to_string()),
        f("stalled_s", 1),
        r["bytes"].as_f64().map_or("-".into(), |v| format!("{:.0}", v / 1e6)),
        f("client_wall", 1),
        r["client_drops"].as_u64().map_or("-".into(), |v| v.to_string()),
        f("served_p50", 1),
        f("served_p99", 1),
    )
}

fn header_line() -> String {
    format!(
        "{:<5} {:>6} {:>6} {:>7} {:>6} {:>6} {:>8} {:>5} {:>5} {:>6} {:>24} {:>17} {:>8} {:>7} {:>8} {:>8} {:>9} {:>3}",
        "proto",
        "play",
        "estab",
        "refused",
        "t-out",
        "other",
        "requests",
        "503",
        "err",
        "stalls",
        "TTFB p50/p99/max ms",
        "first p50/p99",
        "MB/s",
        "app CPU",
        "RSS pk",
        "RSS end",
        "drops",
        "up"
    )
}

fn row_line(r: &Value) -> String {
    let u = |k: &str| r[k].as_u64().map_or("-".into(), |v| v.to_string());
    let f = |k: &str, p: usize| r[k].as_f64().map_or("-".into(), |v| format!("{v:.p$}"));
    format!(
        "{:<5} {:>6} {:>6} {:>7} {:>6} {:>6} {:>8} {:>5} {:>5} {:>6} {:>24} {:>17} {:>8} {:>7} {:>8} {:>8} {:>9} {:>3}  cli CPU {}",
        r["proto"].as_str().unwrap_or("?"),
        u("players"),
        u("established"),
        u("refused"),
        u("timed_out"),
        u("other"),
        u("requests"),
        u("refused_requests"),
        u("errors"),
        u("stalls"),
        format!("{}/{}/{}", f("ttfb_p50", 1), f("ttfb_p99", 1), f("ttfb_max", 0)),
        format!("{}/{}", f("first_p50", 0), f("first_p99", 0)),
        f("mb_s", 1),
        f("app_cpu", 1),
        f("rss_peak", 0),
        f("rss_final", 0),
        u("drops"),
        if r["up"].as_bool() == Some(true) { "yes" } else { "NO" },
        f("client_cpu", 1),
    )
}

// ---------------------------------------------------------------------------------------
// The client process: N players, their tallies summed into one JSON line on stdout.

/// Why a player's connection failed.
#[derive(Debug)]
enum Fail {
    /// At the connection: a QUIC close CONNECTION_REFUSED or H3_EXCESSIVE_LOAD, a TCP reset.
    Refused,
    /// The first request answered 503.
    Busy,
    TimedOut,
    Other(String),
}

/// What one player saw.
#[derive(Debug, Default)]
struct Tally {
    established: bool,
    fail: Option<Fail>,
    first_ttfb_us: Option<u32>,
    ttfb_us: Vec<u32>,
    /// Of the requests after a player's first two (which fill its buffer at its start).
    steady_ttfb_us: Vec<u32>,
    requests: u64,
    refused_requests: u64,
    errors: u64,
    first_error: Option<String>,
    bytes: u64,
    stalls: u64,
    stalled: Duration,
}

impl Tally {
    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// What the players share: where, what, how fast.
struct Plan {
    addr: SocketAddr,
    path: String,
    size: u64,
    range: u64,
    /// Bytes per second; 0: unpaced.
    rate: f64,
    buffer: Duration,
    end: tokio::time::Instant,
    h3: quinn::ClientConfig,
    tcp: tokio_rustls::TlsConnector,
}

/// A player's playback clock: the time of its first byte and the bytes it got since.
#[derive(Debug, Default)]
struct Clock {
    start: Option<tokio::time::Instant>,
    bytes: u64,
}

impl Clock {
    /// When the playhead reaches the end of what was received (a stall can only start then);
    /// unpaced players are always behind; before the first byte, never.
    fn catch_up(&self, rate: f64) -> tokio::time::Instant {
        match self.start {
            _ if rate == 0.0 => tokio::time::Instant::now(),
            None => tokio::time::Instant::now() + Duration::from_secs(3600),
            Some(s) => s + Duration::from_secs_f64(self.bytes as f64 / rate),
        }
    }
}

/// Waits for `fut`, counting a stall if no byte came for STALL_GAP while behind the bitrate,
/// and giving up after SILENCE_LIMIT with no byte. `last` is when the last byte came.
async fn watched<T>(
    fut: impl std::future::Future<Output = T>,
    last: tokio::time::Instant,
    clock: &Clock,
    plan: &Plan,
    tally: &mut Tally,
) -> Result<T, String> {
    tokio::pin!(fut);
    let stall_at = (last + STALL_GAP).max(clock.catch_up(plan.rate));
    let silence = last + SILENCE_LIMIT;
    let mut stalled_since = None;
    // Bounded: at most two timers fire before it returns.
    loop {
        let timer = if stalled_since.is_none() { stall_at.min(silence) } else { silence };
        tokio::select! {
            v = &mut fut => {
                if let Some(s) = stalled_since {
                    tally.stalled += tokio::time::Instant::now() - s;
                }
                return Ok(v);
            }
            () = tokio::time::sleep_until(timer) => {
                if tokio::time::Instant::now() >= silence {
                    return Err(format!("no byte for {} s", SILENCE_LIMIT.as_secs()));
                }
                tally.stalls += 1;
                stalled_since = Some(tokio::time::Instant::now());
            }
        }
    }
}

/// A player's connection.
enum Conn {
    H3 { conn: quinn::Connection, send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes> },
    Tcp { stream: Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>, buf: Vec<u8> },
}

fn classify_quic(e: &quinn::ConnectionError) -> Fail {
    match e {
        quinn::ConnectionError::ConnectionClosed(c)
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            Fail::Refused
        }
        quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == quinn::VarInt::from_u32(H3_EXCESSIVE_LOAD) =>
        {
            Fail::Refused
        }
        quinn::ConnectionError::TimedOut => Fail::TimedOut,
        e => Fail::Other(e.to_string()),
    }
}

async fn connect(proto: Proto, plan: &Plan, endpoint: &quinn::Endpoint) -> Result<Conn, Fail> {
    match proto {
        Proto::H3 => {
            let connecting = endpoint
                .connect_with(plan.h3.clone(), plan.addr, SERVER_NAME)
                .map_err(|e| Fail::Other(e.to_string()))?;
            let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
                Err(_) => return Err(Fail::TimedOut),
                Ok(Err(e)) => return Err(classify_quic(&e)),
                Ok(Ok(c)) => c,
            };
            let (mut driver, send) =
                h3::client::new(h3_quinn::Connection::new(conn.clone())).await.map_err(|e| {
                    conn.close_reason().map_or_else(|| Fail::Other(e.to_string()), |r| classify_quic(&r))
                })?;
            tokio::spawn(async move {
                let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
            });
            Ok(Conn::H3 { conn, send })
        }
        Proto::Tcp => {
            let tcp = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio::net::TcpStream::connect(plan.addr))
                .await
            {
                Err(_) => return Err(Fail::TimedOut),
                // A reset: the appliance refused at its limits (a reset before TLS), so quickly
                // that connect() saw it (measured: 2,569 of 5,000 players at once).
                Ok(Err(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return Err(Fail::Refused)
                }
                Ok(Err(e)) => return Err(Fail::Other(e.to_string())),
                Ok(Ok(t)) => t,
            };
            let _ = tcp.set_nodelay(true);
            let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).expect("server name");
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, plan.tcp.connect(name, tcp)).await {
                Err(_) => return Err(Fail::TimedOut),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return Err(Fail::Refused),
                Ok(Err(e)) => return Err(Fail::Other(format!("TLS: {e}"))),
                Ok(Ok(s)) => s,
            };
            Ok(Conn::Tcp { stream: Box::new(stream), buf: vec![0; 64 << 10] })
        }
    }
}

/// How a request ended.
enum Got {
    /// The range, whole and verified.
    Done,
    /// 503: the appliance turned it away.
    Refused,
}

/// Asks bytes `start..=end` and verifies them; counts TTFB and stalls into `tally`.
async fn request(
    conn: &mut Conn,
    plan: &Plan,
    start: u64,
    end: u64,
    clock: &mut Clock,
    tally: &mut Tally,
    first: Option<tokio::time::Instant>,
) -> Result<Got, String> {
    let sent = tokio::time::Instant::now();
    let mut last = sent;
    let mut offset = start;
    let mut first_byte = true;
    let mut got =
        |data: &[u8], clock: &mut Clock, tally: &mut Tally, offset: &mut u64| -> Result<(), String> {
            let now = tokio::time::Instant::now();
            if first_byte && !data.is_empty() {
                first_byte = false;
                let us = (now - sent).as_micros().min(u32::MAX.into()) as u32;
                tally.ttfb_us.push(us);
                if tally.requests >= 2 {
                    tally.steady_ttfb_us.push(us);
                }
                if let Some(t0) = first {
                    tally.first_ttfb_us = Some((now - t0).as_micros().min(u32::MAX.into()) as u32);
                }
                clock.start.get_or_insert(now);
            }
            if *offset + data.len() as u64 > end + 1 {
                return Err("a body longer than its range".into());
            }
            if !load::matches(*offset, data) {
                return Err(format!("wrong bytes in {}..{}", *offset, *offset + data.len() as u64));
            }
            *offset += data.len() as u64;
            clock.bytes += data.len() as u64;
            tally.bytes += data.len() as u64;
            Ok(())
        };
    match conn {
        Conn::H3 { send, .. } => {
            let request = http::Request::get(format!("https://{SERVER_NAME}{}", plan.path))
                .header("range", format!("bytes={start}-{end}"))
                .body(())
                .map_err(|e| e.to_string())?;
            let mut stream = send.send_request(request).await.map_err(|e| e.to_string())?;
            stream.finish().await.map_err(|e| e.to_string())?;
            let response = watched(stream.recv_response(), last, clock, plan, tally)
                .await?
                .map_err(|e| e.to_string())?;
            match response.status().as_u16() {
                206 => {}
                503 => return Ok(Got::Refused),
                s => return Err(format!("status {s}")),
            }
            // Bounded by the range's length (longer is an error) and SILENCE_LIMIT per piece.
            loop {
                let piece =
                    watched(std::future::poll_fn(|cx| stream.poll_recv_data(cx)), last, clock, plan, tally)
                        .await?
                        .map_err(|e| e.to_string())?;
                let Some(mut piece) = piece else { break };
                last = tokio::time::Instant::now();
                while piece.has_remaining() {
                    let n = piece.chunk().len();
                    got(piece.chunk(), clock, tally, &mut offset)?;
                    piece.advance(n);
                }
            }
        }
        Conn::Tcp { stream, buf } => {
            let head = format!(
                "GET {} HTTP/1.1\r\nHost: {SERVER_NAME}\r\nRange: bytes={start}-{end}\r\n\r\n",
                plan.path
            );
            stream.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
            // rustls may keep what it could not write to the socket at once: without a flush
            // the request can wait there while the appliance waits for it (one player in
            // 1,000 then saw its connection closed by the appliance's header timeout, 10 s).
            stream.flush().await.map_err(|e| e.to_string())?;
            // The response head: at most 16 KiB, read until its blank line.
            let mut filled = 0;
            let head_end = loop {
                if let Some(i) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                if filled >= 16 << 10 {
                    return Err("a response head over 16 KiB".into());
                }
                let n = watched(stream.read(&mut buf[filled..]), last, clock, plan, tally)
                    .await?
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed before a response".into());
                }
                filled += n;
            };
            let text = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let status: u16 = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let length: u64 = text
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .ok_or_else(|| format!("no Content-Length: {text}"))?;
            let mut body = &buf[head_end..filled];
            let mut left = length;
            let keep = status == 206;
            if keep && !body.is_empty() {
                let take = body.len().min(left as usize);
                got(&body[..take], clock, tally, &mut offset)?;
                body = &body[take..];
                left -= take as u64;
            }
            if !keep {
                left -= (body.len() as u64).min(left);
            }
            // Bounded by Content-Length and SILENCE_LIMIT per read.
            while left > 0 {
                let want = buf.len().min(left as usize);
                let n = watched(stream.read(&mut buf[..want]), last, clock, plan, tally)
                    .await?
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed inside a body".into());
                }
                last = tokio::time::Instant::now();
                if keep {
                    got(&buf[..n], clock, tally, &mut offset)?;
                }
                left -= n as u64;
            }
            match status {
                206 => {}
                503 => return Ok(Got::Refused),
                s => return Err(format!("status {s}")),
            }
        }
    }
    if offset != end + 1 {
        return Err(format!("a body of {} bytes for a range of {}", offset - start, end + 1 - start));
    }
    Ok(Got::Done)
}

/// One player: connect, then ranges until the plan's end.
async fn player(
    proto: Proto,
    plan: Arc<Plan>,
    endpoint: quinn::Endpoint,
    delay: Duration,
    seed: u64,
) -> Tally {
    let mut tally = Tally::default();
    tokio::time::sleep(delay).await;
    let t0 = tokio::time::Instant::now();
    let body = async {
        let mut conn = match connect(proto, &plan, &endpoint).await {
            Ok(c) => c,
            Err(f) => {
                tally.fail = Some(f);
                return;
            }
        };
        tally.established = true;
        let mut clock = Clock::default();
        // A random start, on a 4 KiB boundary as a player seeking by byte offset might.
        let mut pos = (load::word(seed) % plan.size) & !4095;
        let mut first = Some(t0);
        // Bounded by the plan's end (the caller's select) and each request's limits.
        loop {
            if plan.rate > 0.0 && clock.start.is_some() {
                let ahead_until = clock.catch_up(plan.rate);
                let ask_at = ahead_until.checked_sub(plan.buffer).unwrap_or(ahead_until);
                tokio::time::sleep_until(ask_at).await;
            }
            let end = (pos + plan.range).min(plan.size) - 1;
            match request(&mut conn, &plan, pos, end, &mut clock, &mut tally, first).await {
                Ok(Got::Done) => {
                    tally.requests += 1;
                    first = None;
                    pos = if end + 1 >= plan.size { 0 } else { end + 1 };
                }
                Ok(Got::Refused) if first.is_some() => {
                    tally.fail = Some(Fail::Busy);
                    tally.established = false;
                    return;
                }
                Ok(Got::Refused) => {
                    tally.refused_requests += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    let reason = match &conn {
                        Conn::H3 { conn, .. } => {
                            conn.close_reason().map_or_else(|| e.clone(), |r| format!("{e} ({r})"))
                        }
                        Conn::Tcp { .. } => e,
                    };
                    tally.error(reason);
                    return;
                }
            }
        }
    };
    tokio::select! {
        () = body => {}
        () = tokio::time::sleep_until(plan.end) => {}
    }
    tally
}

/// A client UDP endpoint with a large receive buffer (SO_RCVBUFFORCE: past rmem_max, as root).
fn client_endpoint(max_payload: u16) -> quinn::Endpoint {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("client UDP socket");
    if setsockopt(&socket, sockopt::RcvBufForce, &CLIENT_RCVBUF).is_err() {
        let _ = setsockopt(&socket, sockopt::RcvBuf, &CLIENT_RCVBUF);
    }
    let granted = getsockopt(&socket, sockopt::RcvBuf).unwrap_or(0);
    if granted < CLIENT_RCVBUF {
        eprintln!(
            "client UDP receive buffer {granted} bytes (asked {CLIENT_RCVBUF}): drops may be the client's"
        );
    }
    let runtime = quinn::default_runtime().expect("a tokio runtime");
    let mut config = quinn::EndpointConfig::default();
    config.max_udp_payload_size(max_payload).expect("--client-payload 1200..=65527");
    quinn::Endpoint::new(config, None, socket, runtime).expect("client endpoint")
}

fn client_main(args: &Args) {
    raise_open_files();
    let ticks = load::clock_ticks();
    let proto = args.protos[0];
    let n = args.players[0];
    let pin: [u8; 32] = (0..32)
        .map(|i| u8::from_str_radix(&args.pin[2 * i..2 * i + 2], 16).expect("--pin hex"))
        .collect::<Vec<u8>>()
        .try_into()
        .expect("a 32-byte pin");
    let tls = player_client_config(pin).expect("client TLS");
    let mut tcp_tls = tls.clone();
    tcp_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC client config");
    let mut h3 = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(30).try_into().expect("idle timeout")));
    h3.transport_config(Arc::new(transport));

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let wall = Instant::now();
    let (tallies, client_drops) = runtime.block_on(async {
        let plan = Arc::new(Plan {
            addr: args.addr.expect("--addr"),
            path: format!("/titles/{}", args.title),
            size: args.title_mib << 20,
            range: (args.range_mib * (1 << 20) as f64) as u64,
            rate: args.rate_mbit * 1e6 / 8.0,
            buffer: Duration::from_secs_f64(args.buffer_secs),
            end: tokio::time::Instant::now() + Duration::from_secs_f64(args.secs),
            h3,
            tcp: tokio_rustls::TlsConnector::from(Arc::new(tcp_tls)),
        });
        let sockets = match (proto, args.client_sockets) {
            (Proto::Tcp, _) => 1,
            (Proto::H3, 0) => n.div_ceil(PLAYERS_PER_SOCKET).clamp(2, 32),
            (Proto::H3, s) => s.clamp(1, n),
        };
        let endpoints: Vec<quinn::Endpoint> =
            (0..sockets).map(|_| client_endpoint(args.client_payload)).collect();
        let ports: Vec<u16> =
            endpoints.iter().filter_map(|e| e.local_addr().ok()).map(|a| a.port()).collect();
        let drops = |ports: &[u16]| ports.iter().filter_map(|&p| load::udp_drops(p)).sum::<u64>();
        let drops0 = drops(&ports);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let delay = Duration::from_secs_f64(args.ramp_secs * i as f64 / n as f64);
            let seed = i as u64 * 7919 + u64::from(std::process::id());
            tasks.spawn(player(proto, plan.clone(), endpoints[i % sockets].clone(), delay, seed));
        }
        let mut tallies = Vec::with_capacity(n);
        while let Some(t) = tasks.join_next().await {
            tallies.push(t.expect("a player task"));
        }
        for e in &endpoints {
            e.close(0u32.into(), b"done");
        }
        // At once, each bounded: one after another they took 2 s each.
        let mut idle = tokio::task::JoinSet::new();
        for e in endpoints {
            idle.spawn(async move { tokio::time::timeout(Duration::from_secs(2), e.wait_idle()).await });
        }
        while idle.join_next().await.is_some() {}
        (tallies, drops(&ports).saturating_sub(drops0))
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    let secs = wall.elapsed().as_secs_f64();

    let count = |f: &dyn Fn(&Tally) -> bool| tallies.iter().filter(|t| f(t)).count();
    let sum = |f: &dyn Fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    let mut ttfb: Vec<u32> = tallies.iter().flat_map(|t| t.ttfb_us.iter().copied()).collect();
    let mut first: Vec<u32> = tallies.iter().filter_map(|t| t.first_ttfb_us).collect();
    let mut steady: Vec<u32> = tallies.iter().flat_map(|t| t.steady_ttfb_us.iter().copied()).collect();
    let other_reason = tallies.iter().find_map(|t| match &t.fail {
        Some(Fail::Other(e)) => Some(format!("connection failed: {e}")),
        _ => None,
    });
    let first_error = tallies.iter().find_map(|t| t.first_error.clone());
    let bytes = sum(&|t| t.bytes);
    let out = json!({
        "established": count(&|t| t.established),
        "refused": count(&|t| matches!(t.fail, Some(Fail::Refused | Fail::Busy))),
        "refused_at_connect": count(&|t| matches!(t.fail, Some(Fail::Refused))),
        "timed_out": count(&|t| matches!(t.fail, Some(Fail::TimedOut))),
        "other": count(&|t| matches!(t.fail, Some(Fail::Other(_)))),
        "requests": sum(&|t| t.requests),
        "refused_requests": sum(&|t| t.refused_requests),
        "errors": sum(&|t| t.errors),
        "bytes": bytes,
        "mb_s": bytes as f64 / 1e6 / args.secs,
        "stalls": sum(&|t| t.stalls),
        "stalled_players": count(&|t| t.stalls > 0),
        "stalled_s": tallies.iter().map(|t| t.stalled.as_secs_f64()).sum::<f64>(),
        "ttfb_p50": quantile(&mut ttfb, 0.5, 1e3),
        "ttfb_p90": quantile(&mut ttfb, 0.9, 1e3),
        "ttfb_p99": quantile(&mut ttfb, 0.99, 1e3),
        "ttfb_max": quantile(&mut ttfb, 1.0, 1e3),
        "steady_p50": quantile(&mut steady, 0.5, 1e3),
        "steady_p99": quantile(&mut steady, 0.99, 1e3),
        "steady_max": quantile(&mut steady, 1.0, 1e3),
        "first_p50": quantile(&mut first, 0.5, 1e3),
        "first_p90": quantile(&mut first, 0.9, 1e3),
        "first_p99": quantile(&mut first, 0.99, 1e3),
        "first_max": quantile(&mut first, 1.0, 1e3),
        "client_cpu": load::cpu_seconds(std::process::id(), ticks),
        "client_wall": secs,
        "client_drops": client_drops,
        "first_error": first_error,
        "first_fail": other_reason,
    });
    println!("{out}");
}
