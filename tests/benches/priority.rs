//! Players first under fill (issue 29, item 4): a player's time to first byte from an
//! appliance while it uploads fill to peers at its cap, against the same figure idle.
//!
//! `cargo bench -p fillmesh-tests --bench priority [-- REQUESTS]` (default 30): a tracker (open
//! fleet: no tokens), an origin and appliance A as real processes; A fills a 256 MiB title,
//! then REQUESTS range requests for its first 64 KiB over HTTPS on TCP (curl, a new TLS
//! connection each, as a player starting) give the idle figures. Then two more appliances of
//! A's site (started before the title, with a fill window closed until a reload opens it, so
//! that A trusts them by then) fill the title from A, which sends them fill at its caps
//! (`--fill-upload-rate 30MB`, and `--upload-rate 30MB` for everything it sends, so the total
//! cap is saturated by fill and only the players-first rule keeps players from queueing
//! behind it), and the same requests give the loaded figures. A's fill upload over the loaded
//! requests (from its `fillmesh_mesh_served_bytes_total`) shows it was at its cap. The ratio
//! is loaded over idle, p50 (the target: at most 1.5).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fillmesh_tests::mesh::{start_origin, title_status};
use fillmesh_tests::{fillmesh, http, metric, print_id, test_bytes, wait_for, NodeProcess};

const TITLE: usize = 256 << 20;
const CAP: &str = "30MB";
const CAP_BPS: f64 = 30e6;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// `n` first-64-KiB range requests to `url`, each on a new HTTPS connection: the time to
/// first byte (curl's `time_starttransfer`) in ms, and the handshakes' part (`time_appconnect`).
fn ttfbs(url: &str, n: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut first, mut handshake) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let out = Command::new("curl")
            .args(["-sk", "--http2", "--max-time", "10", "-r", "0-65535", "-o", "/dev/null"])
            .args(["-w", "%{http_code} %{time_appconnect} %{time_starttransfer}"])
            .arg(url)
            .output()
            .expect("curl");
        let written = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = written.split_whitespace().collect();
        assert_eq!(fields.first(), Some(&"206"), "{written} {}", String::from_utf8_lossy(&out.stderr));
        handshake.push(fields[1].parse::<f64>().expect("appconnect") * 1e3);
        first.push(fields[2].parse::<f64>().expect("starttransfer") * 1e3);
    }
    (first, handshake)
}

fn served(http_addr: &str) -> f64 {
    let (_, page) = http(http_addr, "GET", "/metrics", &[], b"");
    metric(&page, "fillmesh_mesh_served_bytes_total").unwrap_or(0.0)
}

fn appliance(data: &Path, i: usize, tracker: &NodeProcess, extra: &[&str]) -> NodeProcess {
    appliance_env(data, i, tracker, extra, &[])
}

fn appliance_env(
    data: &Path,
    i: usize,
    tracker: &NodeProcess,
    extra: &[&str],
    env: &[(&str, &str)],
) -> NodeProcess {
    let listen = format!("127.0.0.{}:0", 11 + i);
    let mut args = vec![
        "--listen",
        &listen,
        "--http",
        &listen,
        "--tracker",
        &tracker.mesh,
        "--tracker-id",
        &tracker.peer,
        "--site",
        "s0",
        "--region",
        "r0",
    ];
    args.extend_from_slice(extra);
    NodeProcess::start_env(data, &args, env)
}

fn main() {
    let n: usize =
        std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(30);
    let dir = tempfile::tempdir().expect("temp dir");
    let origin_dir = dir.path().join("origin");
    let dirs: Vec<_> = (0..3).map(|i| dir.path().join(format!("appliance-{i}"))).collect();
    let mut trusted = vec![print_id(&origin_dir)];
    trusted.extend(dirs.iter().map(|d| print_id(d)));
    let trust_file = dir.path().join("trusted.txt");
    std::fs::write(&trust_file, trusted.join("\n")).expect("trust file");
    let trust = trust_file.display().to_string();
    let tracker = NodeProcess::start_tracker(
        &dir.path().join("tracker"),
        &["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--trust-file", &trust, "--no-tokens"],
    );
    let origin = start_origin(&origin_dir, &tracker, &[]);
    let a = appliance(&dirs[0], 0, &tracker, &["--fill-upload-rate", CAP, "--upload-rate", CAP]);
    // B and C: a fill window (UTC) twelve hours from now, in their config file.
    let hour = (SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() / 3600 + 12) % 24;
    let closed = dir.path().join("closed.toml");
    std::fs::write(&closed, format!("fill_window = [\"{hour:02}:00-{:02}:00\"]\n", (hour + 1) % 24))
        .expect("config");
    let config = closed.display().to_string();
    let utc = [("TZ", "UTC")];
    let b = appliance_env(&dirs[1], 1, &tracker, &["--config", &config], &utc);
    let c = appliance_env(&dirs[2], 2, &tracker, &["--config", &config], &utc);
    let file = dir.path().join("feature.mp4");
    std::fs::write(&file, test_bytes(TITLE, 42)).expect("title file");
    let url = format!("http://{}", origin.http.as_deref().expect("origin http"));
    let out = fillmesh().arg("seed").arg(&file).args(["--origin", &url]).output().expect("seed");
    assert!(out.status.success(), "{out:?}");
    let title = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let complete = |count: u64| {
        wait_for(Duration::from_secs(180), || {
            (title_status(&tracker, &title)?["complete_appliances"].as_u64()? >= count).then_some(())
        })
    };
    complete(1).expect("appliance A did not fill");
    assert_eq!(
        title_status(&tracker, &title).and_then(|t| t["complete_appliances"].as_u64()),
        Some(1),
        "B or C filled outside its window"
    );
    let player_url = format!("https://{}/titles/{title}", a.mesh);
    let a_http = a.http.clone().expect("A's http");

    // Warm up (page cache, first connections), then idle.
    ttfbs(&player_url, 3);
    let (mut idle, mut idle_hs) = ttfbs(&player_url, n);

    // Two more appliances of A's site fill the title from A: their window opens (a reload).
    let before = served(&a_http);
    std::fs::write(&closed, "fill_window = []\n").expect("config");
    for node in [&b, &c] {
        node.child.signal(nix::sys::signal::Signal::SIGHUP);
    }
    wait_for(Duration::from_secs(60), || (served(&a_http) - before > 16e6).then_some(())).unwrap_or_else(
        || {
            let tail = |log: String| log.lines().rev().take(15).collect::<Vec<_>>().join("\n");
            panic!("A did not start uploading fill\nA:\n{}\nB:\n{}", tail(a.log()), tail(b.log()))
        },
    );
    let (bytes0, t0) = (served(&a_http), Instant::now());
    let (mut loaded, mut loaded_hs) = ttfbs(&player_url, n);
    let (bytes1, secs) = (served(&a_http), t0.elapsed().as_secs_f64());
    let rate = (bytes1 - bytes0) / secs;
    let filled_meanwhile =
        title_status(&tracker, &title).and_then(|t| t["complete_appliances"].as_u64()).unwrap_or(0);

    println!(
        "{n} range requests (first 64 KiB, HTTPS/TCP, a new connection each) to appliance A of a 256 MiB title; ms"
    );
    println!("{:<34} {:>8} {:>8} {:>8}", "", "p50", "p90", "max");
    for (name, v) in [
        ("idle: TLS handshake done", &mut idle_hs),
        ("idle: first byte", &mut idle),
        ("fill at cap: TLS handshake done", &mut loaded_hs),
        ("fill at cap: first byte", &mut loaded),
    ] {
        println!(
            "{name:<34} {:>8.2} {:>8.2} {:>8.2}",
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 1.0)
        );
    }
    println!(
        "A's fill upload during the loaded requests: {:.1} MB/s over {secs:.1} s (cap {CAP}: {:.0}% of it); appliances complete at the end: {filled_meanwhile} of 3",
        rate / 1e6,
        100.0 * rate / CAP_BPS
    );
    let (i, l) = (percentile(&mut idle, 0.5), percentile(&mut loaded, 0.5));
    println!("ratio first byte loaded / idle, p50: {:.2} (target: at most 1.5)", l / i);
    complete(3).expect("the two appliances did not fill");
    drop((b, c, a, origin, tracker));
}
