//! `fillmesh testbed --scenario FILE.toml [--out REPORT.json]`: the simulator's scenario on
//! the real binaries. Each node (origin, appliances) in its own network namespace behind a
//! link shaped to the scenario's rates, the tracker on the router between them, every packet
//! between two nodes held for its path's one-way delay (half the scenario's latency of the
//! path's class) by the delay element; a title of the scenario's size seeded, each
//! appliance's completion time taken from the tracker's status, then the same scenario in
//! the simulator, and the two side by side.
//!
//! Everything it creates is removed at the end, on failure and on Ctrl-C or SIGTERM; a
//! crashed run's namespaces are removed by the next run. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use fillmesh_net::{baseline, say};
use fillmesh_protocol::units;
use fillmesh_sims::{Scenario, Strategy};
use serde_json::Value;
use tokio::process::Command;
use tokio::sync::watch;

use super::demo::{self, run_tool, run_tool_with, start_with, Proc};
use crate::testbed::delay::{DelayElement, DelayStats, PathTable};
use crate::testbed::netns::{self, node_addr, Link, LinkStats, Network, ROUTER_ADDR};
use crate::testbed::report::{self, Side};
use crate::testbed::{self, spawn_in_netns, StopOnDrop};

#[derive(Debug, Args)]
pub struct TestbedArgs {
    /// The simulator's scenario file (the same TOML `fillmesh sim --scenario` reads).
    #[arg(long, value_name = "FILE.toml", required_unless_present_any = ["measure_element", "long_path"])]
    pub scenario: Option<PathBuf>,
    /// Write the report (scenario, `sim`, `testbed`, the delay element's figures) as JSON.
    #[arg(long, value_name = "REPORT.json")]
    pub out: Option<PathBuf>,
    /// Percent of the packets between two nodes the delay element drops.
    #[arg(long, default_value_t = 0.0, value_parser = parse_loss)]
    pub loss_pct: f64,
    /// How long a full queue of a shaped link takes to drain (milliseconds): the links are
    /// drop-tail token buckets (`tbf`). On testbed16, 50 ms queues dropped about 7,600
    /// packets at the uploads and the fill took 10% longer; 150 ms dropped none there.
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u64).range(1..=2000))]
    pub queue_ms: u64,
    /// Give up when the fill has not completed after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Keep the data directories and logs here instead of removing them.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// One long path instead of a scenario: `fillmesh fetch` of one title from an origin
    /// across a 50 ms round trip at this rate (each way, e.g. 50Mbps), with --loss-pct,
    /// against raw quinn (one stream, the same TLS and transport settings) over the same path.
    #[arg(long, value_name = "RATE", value_parser = units::parse_rate, conflicts_with = "scenario")]
    pub long_path: Option<f64>,
    /// The title's size on the long path.
    #[arg(long, value_parser = units::parse_size, default_value = "64MiB")]
    pub long_path_size: u64,
    /// Measure what the delay element carries (packets per second, added jitter) and exit.
    #[arg(long)]
    pub measure_element: bool,
}

fn parse_loss(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a percentage"))?;
    if (0.0..50.0).contains(&v) {
        Ok(v)
    } else {
        Err("the loss must be at least 0 and below 50 percent".into())
    }
}

/// The testbed's checks before anything is created: privileges and tools.
pub fn preflight() -> anyhow::Result<()> {
    if let Some(why) = testbed::privilege_problem() {
        anyhow::bail!("{why}; run it as root (sudo fillmesh testbed ...)");
    }
    let missing = testbed::missing_tools();
    anyhow::ensure!(missing.is_empty(), "the testbed needs these packages installed: {}", missing.join(", "));
    Ok(())
}

/// Runs the testbed; Ctrl-C or SIGTERM stops it early, with everything removed.
pub async fn run(args: TestbedArgs) -> anyhow::Result<()> {
    // The handlers are installed before anything is created.
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // The scenario first: what it asks for is refused the same way with or without root.
    let sc = match &args.scenario {
        Some(path) if !args.measure_element && args.long_path.is_none() => Some(load(path)?),
        _ => None,
    };
    preflight()?;
    let removed = netns::sweep_leftovers()?;
    if !removed.is_empty() {
        say!("removed {} namespaces left by a crashed run: {}", removed.len(), removed.join(" "));
    }
    let work = async {
        if args.measure_element {
            let m = tokio::task::spawn_blocking(measure_element).await??;
            say!("{m}");
            return Ok(());
        }
        if let Some(rate) = args.long_path {
            return long_path(rate, &args).await;
        }
        match (&sc, &args.scenario) {
            (Some(sc), Some(path)) => testbed(sc, path, &args).await,
            _ => anyhow::bail!("--scenario is required"),
        }
    };
    tokio::select! {
        result = work => result,
        _ = int.recv() => anyhow::bail!("interrupted: every process, namespace and link removed"),
        _ = term.recv() => anyhow::bail!("terminated: every process, namespace and link removed"),
    }
}

/// The scenario's class of a path between nodes `a` and `b` (0 = origin, `k` = appliance
/// `k - 1`): same site, same region, cross region, origin.
fn class_of(sc: &Scenario, site: &[usize], a: usize, b: usize) -> usize {
    if a == 0 || b == 0 {
        return 3;
    }
    let (sa, sb) = (site[a - 1], site[b - 1]);
    if sa == sb {
        0
    } else if sa / sc.sites_per_region == sb / sc.sites_per_region {
        1
    } else {
        2
    }
}

/// The testbed's record of the fill.
struct Fill {
    side: Side,
    seed_s: f64,
    element: DelayStats,
    /// Node 0 the origin, then the appliances.
    links: Vec<LinkStats>,
    /// Seconds from publishing to the last completion (or the give-up).
    fill_s: f64,
    /// (seconds, fraction of the fleet's bytes held) at each status snapshot.
    progress: Vec<(f64, f64)>,
}

/// Reads and validates the scenario, and refuses what the testbed cannot honour.
fn load(path: &Path) -> anyhow::Result<Scenario> {
    let sc = Scenario::from_file(path)?;
    sc.validate()?;
    let refused = testbed::refusals(&sc);
    anyhow::ensure!(
        refused.is_empty(),
        "{}: the testbed cannot honour these fields:\n  {}",
        path.display(),
        refused.join("\n  ")
    );
    Ok(sc)
}

async fn testbed(sc: &Scenario, path: &Path, args: &TestbedArgs) -> anyhow::Result<()> {
    let sc = sc.clone();
    let fill = fill_on_testbed(&sc, args).await?;
    say!("simulating the same scenario ...");
    let sim = tokio::task::spawn_blocking({
        let sc = sc.clone();
        let opts = fillmesh_sims::Options { sample_every_s: Some(0.1), ..fillmesh_sims::Options::default() };
        // The fill the appliances run: the tracker's fills and the swarm.
        move || fillmesh_sims::run(&sc, Strategy::Fillmesh, &opts, None)
    })
    .await?;
    let sim_side = Side::new(sim.completion_s.clone(), sc.appliances, sim.bytes_by_class);
    say!();
    say!(
        "== {}: {} appliances, {} regions x {} sites, {:.0} MiB title in {} KiB chunks ==",
        path.display(),
        sc.appliances,
        sc.regions,
        sc.sites_per_region,
        sc.title_bytes as f64 / (1u64 << 20) as f64,
        sc.chunk_bytes >> 10
    );
    say!("{}", report::table(&sim_side, &fill.side, sc.title_bytes).trim_end());
    let e = &fill.element;
    say!(
        "delay element: {} packets ({:.0}/s, {:.1} MB/s) over {:.1} s, {} dropped, at most {} held; \
         release late by p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        e.packets,
        e.packets as f64 / e.seconds.max(1e-9),
        e.bytes as f64 / e.seconds.max(1e-9) / 1e6,
        e.seconds,
        e.dropped,
        e.max_held,
        e.late_p50_us,
        e.late_p99_us,
        e.late_max_us
    );
    // When each side had delivered a quarter, half, three quarters and all of the fleet's
    // bytes: the simulator's delivered bytes are its upload in use, integrated.
    let fleet_bytes = (sc.appliances as u64 * sc.title_bytes) as f64;
    let mut sim_progress = Vec::new();
    let (mut delivered, mut last_t) = (0.0, 0.0);
    let up_total: f64 = fillmesh_sims::sim::place(&sc).upload_bps.iter().sum();
    for smp in &sim.samples {
        let carried = smp.upload_used * up_total + smp.origin_used * sc.origin_upload_bps;
        delivered += carried / (1.0 + sc.wire_overhead) * (smp.t_s - last_t);
        last_t = smp.t_s;
        sim_progress.push((smp.t_s, delivered / fleet_bytes));
    }
    let reach = |p: &[(f64, f64)], f: f64| p.iter().find(|(_, x)| *x >= f - 1e-9).map(|(t, _)| *t);
    for f in [0.05, 0.25, 0.5, 0.75, 0.99] {
        let (s, t) = (reach(&sim_progress, f), reach(&fill.progress, f));
        let cell = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
        say!("{:<22} {:>12} {:>12}", format!("{:.0}% of bytes at (s)", f * 100.0), cell(s), cell(t));
    }
    let (up, down): (Vec<_>, Vec<_>) = fill.links.iter().map(|l| (l.upload, l.download)).unzip();
    let sum = |v: &[netns::QdiscStats], f: fn(&netns::QdiscStats) -> u64| v.iter().map(f).sum::<u64>();
    let fleet = fillmesh_sims::sim::place(&sc);
    let capacity: f64 = sc.origin_upload_bps + fleet.upload_bps.iter().sum::<f64>();
    say!(
        "links: {:.1} MB sent up ({:.0}% of the uploads' capacity over the {:.1} s fill), {} packets dropped \
         by full upload queues, {} by full download queues",
        sum(&up, |q| q.bytes) as f64 / 1e6,
        100.0 * sum(&up, |q| q.bytes) as f64 / (capacity * fill.fill_s.max(1e-9)),
        fill.fill_s,
        sum(&up, |q| q.drops),
        sum(&down, |q| q.drops),
    );
    let chunk_bytes: u64 = fill.side.bytes_by_class.values().sum();
    let measured_overhead = sum(&up, |q| q.bytes) as f64 / chunk_bytes.max(1) as f64 - 1.0;
    say!(
        "wire overhead: the links sent {:.3} bytes per chunk byte delivered (the scenario's wire_overhead is {})",
        1.0 + measured_overhead,
        sc.wire_overhead
    );
    if let Some(out) = &args.out {
        let mut json = serde_json::to_value(&sc)?;
        if let Value::Object(map) = &mut json {
            map.insert("scenario_file".into(), path.display().to_string().into());
            map.insert("loss_pct".into(), args.loss_pct.into());
            map.insert("queue_ms".into(), args.queue_ms.into());
            map.insert("sim".into(), serde_json::to_value(&sim_side)?);
            map.insert("testbed".into(), serde_json::to_value(&fill.side)?);
            map.insert("seed_s".into(), fill.seed_s.into());
            map.insert("delay_element".into(), serde_json::to_value(&fill.element)?);
            map.insert("fill_s".into(), fill.fill_s.into());
            map.insert("measured_wire_overhead".into(), measured_overhead.into());
            map.insert("testbed_progress".into(), serde_json::to_value(&fill.progress)?);
            map.insert("links".into(), serde_json::to_value(&fill.links)?);
        }
        std::fs::write(out, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
        say!("wrote {}", out.display());
    }
    Ok(())
}

/// `ip netns exec NS fillmesh`.
fn in_ns(ns: &str, exe: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(exe);
    cmd
}

/// Snapshots of the tracker's `/status`, taken from inside the router's namespace.
type Snapshots = watch::Receiver<Option<(Instant, Value)>>;

/// Polls `url` every `every` from a thread in namespace `ns` until the receiver goes or the
/// guard is dropped.
fn watch_status(ns: &str, url: String, every: Duration) -> anyhow::Result<(Snapshots, StopOnDrop)> {
    let (tx, rx) = watch::channel(None);
    let (stop, _thread) = spawn_in_netns(&Network::handle(ns), "status-watch", move |stop| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(2)).build() else {
                return;
            };
            while !stop.load(Ordering::Relaxed) && !tx.is_closed() {
                if let Ok(r) = client.get(&url).send().await {
                    let text = r.text().await.unwrap_or_default();
                    if let Ok(v) = serde_json::from_str::<Value>(&text) {
                        let _ = tx.send(Some((Instant::now(), v)));
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
    })?;
    Ok((rx, StopOnDrop(stop)))
}

/// Waits (at most `limit`) for a status snapshot that satisfies `done`.
async fn wait_for(
    rx: &mut Snapshots,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(Instant, &Value) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let snapshot = rx.borrow_and_update().clone();
        if let Some((at, v)) = snapshot {
            if done(at, &v) {
                return Ok(());
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => anyhow::bail!("the tracker's status stopped coming ({what})"),
            Err(_) => anyhow::bail!("{what}: not done in {} s", limit.as_secs()),
        }
    }
}

async fn fill_on_testbed(sc: &Scenario, args: &TestbedArgs) -> anyhow::Result<Fill> {
    let exe = std::env::current_exe().context("locating the fillmesh binary")?;
    let (_temp, dir) = super::work_dir(args.keep.as_deref(), "fillmesh-testbed-")?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let s = |p: &Path| p.display().to_string();
    let fleet = fillmesh_sims::sim::place(sc);
    let n = sc.appliances;

    // The title first, so its writing is not in anyone's way.
    let title_file = dir.join("title.bin");
    demo::write_sample(&title_file, sc.title_bytes)?;

    // Identities, so everyone knows whom to trust.
    let id_log = logs.join("id.log");
    let node_dirs: Vec<PathBuf> = (0..=n)
        .map(|k| if k == 0 { dir.join("origin") } else { dir.join(format!("appliance-{}", k - 1)) })
        .collect();
    let mut trusted = String::new();
    for d in &node_dirs {
        trusted.push_str(&run_tool(&exe, &["node", "--print-id", "--data", &s(d)], &id_log).await?);
    }
    let trust_file = dir.join("trusted.txt");
    std::fs::write(&trust_file, trusted)?;

    // The network: node 0 the origin (upload only), then the appliances.
    let queue = Duration::from_millis(args.queue_ms);
    let mut links = vec![Link { upload_bps: Some(sc.origin_upload_bps), download_bps: None, queue }];
    links.extend((0..n).map(|i| Link {
        queue,
        upload_bps: Some(fleet.upload_bps[i]),
        download_bps: fleet.download_bps[i].is_finite().then_some(fleet.download_bps[i]),
    }));
    let started = Instant::now();
    let net = tokio::task::spawn_blocking(move || Network::create(&links)).await??;
    let table = PathTable::new(n + 1, args.loss_pct / 100.0, |a, b| {
        Duration::from_secs_f64(sc.latency_s[class_of(sc, &fleet.site, a, b)] / 2.0)
    });
    let element = DelayElement::start(&Network::handle(net.router()), table, sc.seed)?;
    say!(
        "testbed: {} namespaces ({}*) built in {:.1} s; delay element bound",
        n + 2,
        net.router().trim_end_matches("-r"),
        started.elapsed().as_secs_f64()
    );

    // The tracker on the router, the origin, the appliances.
    let tracker_log = logs.join("tracker.log");
    let tracker_dir = dir.join("tracker");
    let tracker_id = run_tool(&exe, &["tracker", "--print-id", "--data", &s(&tracker_dir)], &id_log).await?;
    let tracker_id = tracker_id.trim().to_owned();
    let tracker_mesh = format!("{ROUTER_ADDR}:4400");
    let tracker_http = format!("{ROUTER_ADDR}:8000");
    // The operators' listener on the router's own loopback, where the status watch runs.
    let tracker_admin = "127.0.0.1:8001";
    let seed = sc.seed.to_string();
    let tracker: Proc = start_with(
        in_ns(net.router(), &exe),
        "tracker",
        &[
            "--data",
            &s(&tracker_dir),
            "--listen",
            &tracker_mesh,
            "--http",
            &tracker_http,
            "--admin-http",
            tracker_admin,
            "--trust-file",
            &s(&trust_file),
            "--seed",
            &seed,
        ]
        .map(String::from),
        &tracker_log,
    )
    .await?;
    let origin_http = format!("{}:8080", node_addr(0));
    let mut procs = vec![tracker];
    for (k, d) in node_dirs.iter().enumerate() {
        let mut a = vec![
            "--data".to_owned(),
            s(d),
            "--listen".into(),
            format!("{}:4433", node_addr(k)),
            "--tracker".into(),
            tracker_mesh.clone(),
            "--tracker-id".into(),
            tracker_id.clone(),
            // The scrub would compete with the fill for the disk and the CPU.
            "--scrub-rate".into(),
            "0".into(),
        ];
        let up = if k == 0 {
            a.extend(
                ["--origin", "--http", &origin_http, "--site", "origin", "--region", "origin"]
                    .map(String::from),
            );
            sc.origin_upload_bps
        } else {
            let site = fleet.site[k - 1];
            a.extend([
                "--site".into(),
                format!("s{site}"),
                "--region".into(),
                format!("r{}", site / sc.sites_per_region),
            ]);
            fleet.upload_bps[k - 1]
        };
        // The rate the tracker plans with; the link itself is shaped to it too.
        a.extend(["--upload-rate".into(), format!("{}", up.round() as u64)]);
        let log =
            logs.join(if k == 0 { "origin.log".to_owned() } else { format!("appliance-{}.log", k - 1) });
        procs.push(start_with(in_ns(net.node(k), &exe), "node", &a, &log).await?);
    }
    let peers: Vec<String> = procs[2..].iter().map(|p| p.peer.clone()).collect();

    let (mut rx, _watch) =
        watch_status(net.router(), format!("http://{tracker_admin}/status"), Duration::from_millis(50))?;
    let count_registered = |v: &Value| v["appliances"].as_array().map_or(0, |a| a.len());
    wait_for(&mut rx, Duration::from_secs(60), "every node registering with the tracker", |_, v| {
        count_registered(v) > n
    })
    .await?;
    say!(
        "{} processes up and registered after {:.1} s; seeding",
        procs.len(),
        started.elapsed().as_secs_f64()
    );

    let seed_started = Instant::now();
    let title = run_tool_with(
        in_ns(net.router(), &exe),
        &[
            "seed",
            &s(&title_file),
            "--origin",
            &format!("http://{origin_http}"),
            "--chunk-size",
            &sc.chunk_bytes.to_string(),
        ],
        &logs.join("seed.log"),
    )
    .await?
    .trim()
    .to_owned();
    let published = Instant::now();
    let seed_s = (published - seed_started).as_secs_f64();
    say!("seeded {title} in {seed_s:.1} s; filling {n} appliances");

    let mut done_at: Vec<Option<f64>> = vec![None; n];
    let mut last_title = Value::Null;
    let mut last_report = Instant::now();
    let mut progress: Vec<(f64, u64)> = Vec::new();
    let result = wait_for(&mut rx, Duration::from_secs(args.timeout_secs), "the fill", |at, v| {
        let appliances = v["appliances"].as_array().cloned().unwrap_or_default();
        let mut total = 0;
        for (i, p) in peers.iter().enumerate() {
            let held = appliances
                .iter()
                .find(|a| a["peer_id"] == p.as_str())
                .and_then(|a| a["held_bytes"].as_u64())
                .unwrap_or(0);
            total += held.min(sc.title_bytes);
            if done_at[i].is_none() && held >= sc.title_bytes {
                done_at[i] = Some(at.saturating_duration_since(published).as_secs_f64());
            }
        }
        progress.push((at.saturating_duration_since(published).as_secs_f64(), total));
        if let Some(t) = v["titles"].as_array().and_then(|ts| ts.iter().find(|t| t["id"] == title.as_str())) {
            last_title = t.clone();
        }
        let complete = done_at.iter().filter(|d| d.is_some()).count();
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            say!("  {:5.1} s: {complete}/{n} appliances complete", published.elapsed().as_secs_f64());
        }
        complete == n
    })
    .await;
    let fill_s = published.elapsed().as_secs_f64();
    // Stop everyone before the figures: the element's report covers the fill only.
    drop(procs);
    let links = tokio::task::spawn_blocking({
        let stats = net.link_stats();
        move || stats
    })
    .await?;
    let element = tokio::task::spawn_blocking(move || element.stop()).await??;
    tokio::task::spawn_blocking(move || drop(net)).await?;
    if let Err(e) = result {
        let complete = done_at.iter().filter(|d| d.is_some()).count();
        say!("the fill did not complete: {complete}/{n} appliances ({e:#})");
    }
    let mut by_class = [0u64; 4];
    for (slot, key) in by_class.iter_mut().zip(report::CLASSES) {
        *slot = last_title["bytes_by_class"][key].as_u64().unwrap_or(0);
    }
    let side = Side::new(done_at.into_iter().flatten().collect(), n, by_class);
    if let Some(d) = &args.keep {
        say!("kept {}", d.display());
    }
    let wanted = (n as u64 * sc.title_bytes).max(1) as f64;
    let progress = progress.into_iter().map(|(t, b)| (t, b as f64 / wanted)).collect();
    Ok(Fill { side, seed_s, element, links, fill_s, progress })
}

/// The delay element's capacity, measured alone: two nodes on unshaped links, UDP datagrams
/// of 1,200 bytes from one to the other through the element with a 5 ms one-way delay, first
/// as fast as the sender can (what gets through per second is the capacity), then paced at
/// a fraction of it (the delay each datagram saw beyond 5 ms is the added jitter).
pub fn measure_element() -> anyhow::Result<String> {
    use std::net::UdpSocket;
    const DELAY: Duration = Duration::from_millis(5);
    let link = Link { upload_bps: None, download_bps: None, queue: Duration::ZERO };
    let net = Network::create(&[link, link])?;
    let table = PathTable::new(2, 0.0, |a, b| if a == b { Duration::ZERO } else { DELAY });
    let element = DelayElement::start(&Network::handle(net.router()), table, 1)?;
    let base = Instant::now();
    let mut lines = Vec::new();
    for (phase, pace) in [("flood", None), ("paced", Some(20_000u64))] {
        let secs = 2.0;
        let (rstop, receiver) = spawn_in_netns(&Network::handle(net.node(1)), "udp-sink", move |stop| {
            let mut got = 0u64;
            let mut late: Vec<u64> = Vec::new();
            let Ok(sock) = UdpSocket::bind("0.0.0.0:9000") else { return (0, late) };
            let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(len) = sock.recv(&mut buf) {
                    if len >= 8 {
                        got += 1;
                        let sent = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
                        let now = base.elapsed().as_micros() as u64;
                        late.push(now.saturating_sub(sent).saturating_sub(DELAY.as_micros() as u64));
                    }
                }
            }
            (got, late)
        })?;
        std::thread::sleep(Duration::from_millis(100));
        let (_s, sender) = spawn_in_netns(&Network::handle(net.node(0)), "udp-source", move |_| {
            let Ok(sock) = UdpSocket::bind("0.0.0.0:0") else { return 0u64 };
            let mut buf = [0u8; 1200];
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed().as_secs_f64() < secs {
                if let Some(pps) = pace {
                    let due = Duration::from_secs_f64(sent as f64 / pps as f64);
                    if start.elapsed() < due {
                        std::hint::spin_loop();
                        continue;
                    }
                }
                buf[..8].copy_from_slice(&(base.elapsed().as_micros() as u64).to_le_bytes());
                if sock.send_to(&buf, (node_addr(1), 9000)).is_ok() {
                    sent += 1;
                }
            }
            sent
        })?;
        let sent = sender.join().map_err(|_| anyhow::anyhow!("the sender panicked"))??;
        std::thread::sleep(DELAY * 4 + Duration::from_millis(100));
        rstop.store(true, Ordering::Relaxed);
        let (got, mut late) = receiver.join().map_err(|_| anyhow::anyhow!("the receiver panicked"))??;
        late.sort_unstable();
        let q =
            |p: f64| late.get(((late.len() as f64 * p) as usize).min(late.len().saturating_sub(1))).copied();
        lines.push(format!(
            "{phase:<6} sent {:>8.0}/s, through {:>8.0}/s ({:.0} Mbit/s), delay beyond 5 ms: p50 {} us, p99 {} us, max {} us",
            sent as f64 / secs,
            got as f64 / secs,
            got as f64 * 1200.0 * 8.0 / secs / 1e6,
            q(0.5).map_or("-".into(), |v| v.to_string()),
            q(0.99).map_or("-".into(), |v| v.to_string()),
            late.last().map_or("-".into(), |v| v.to_string()),
        ));
    }
    let stats = element.stop()?;
    drop(net);
    lines.push(format!(
        "element: {} packets, at most {} held, release late by p50 {:.0} us, p99 {:.0} us",
        stats.packets, stats.max_held, stats.late_p50_us, stats.late_p99_us
    ));
    Ok(lines.join("\n"))
}

/// One transfer across one long path: `fillmesh fetch` from an origin, then raw quinn, over
/// the same shaped link (`rate` each way), 25 ms each way, `--loss-pct` of the packets lost.
async fn long_path(rate: f64, args: &TestbedArgs) -> anyhow::Result<()> {
    use fillmesh_net::{MeshEndpoint, TlsIdentity, TransportLimits};
    const ONE_WAY: Duration = Duration::from_millis(25);
    let exe = std::env::current_exe().context("locating the fillmesh binary")?;
    let temp = tempfile::Builder::new().prefix("fillmesh-long-path-").tempdir()?;
    let dir = temp.path().to_path_buf();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let s = |p: &Path| p.display().to_string();
    let size = args.long_path_size;
    let title_file = dir.join("title.bin");
    demo::write_sample(&title_file, size)?;
    let (origin_dir, fetcher_dir) = (dir.join("origin"), dir.join("fetcher"));
    let id_log = logs.join("id.log");
    let fetcher = run_tool(&exe, &["node", "--print-id", "--data", &s(&fetcher_dir)], &id_log).await?;
    let queue = Duration::from_millis(args.queue_ms);
    let link = Link { upload_bps: Some(rate), download_bps: Some(rate), queue };
    let net = tokio::task::spawn_blocking(move || Network::create(&[link, link])).await??;
    let table =
        PathTable::new(2, args.loss_pct / 100.0, |a, b| if a == b { Duration::ZERO } else { ONE_WAY });
    let element = DelayElement::start(&Network::handle(net.router()), table, 7)?;
    let origin_http = format!("{}:8080", node_addr(0));
    let origin_mesh = std::net::SocketAddr::from((node_addr(0), 4433));
    let origin = start_with(
        in_ns(net.node(0), &exe),
        "node",
        &[
            "--data".to_owned(),
            s(&origin_dir),
            "--origin".into(),
            "--listen".into(),
            origin_mesh.to_string(),
            "--http".into(),
            origin_http.clone(),
            "--trust".into(),
            fetcher.trim().to_owned(),
            "--scrub-rate".into(),
            "0".into(),
        ],
        &logs.join("origin.log"),
    )
    .await?;
    let title = run_tool_with(
        in_ns(net.router(), &exe),
        &["seed", &s(&title_file), "--origin", &format!("http://{origin_http}")],
        &logs.join("seed.log"),
    )
    .await?
    .trim()
    .to_owned();
    say!(
        "long path: {:.0} Mbit/s each way, {} ms round trip, {}% loss, a {:.0} MiB title",
        rate * 8.0 / 1e6,
        (ONE_WAY * 2).as_millis(),
        args.loss_pct,
        size as f64 / (1u64 << 20) as f64
    );

    // fillmesh fetch, timed from start to exit (its process start and handshake included).
    let started = Instant::now();
    let fetch = tokio::time::timeout(
        Duration::from_secs(args.timeout_secs),
        run_tool_with(
            in_ns(net.node(1), &exe),
            &[
                "fetch",
                &title,
                "--from",
                &origin_mesh.to_string(),
                "--peer",
                &origin.peer,
                "--out",
                &s(&dir.join("copy.bin")),
                "--identity",
                &s(&fetcher_dir),
            ],
            &logs.join("fetch.log"),
        ),
    )
    .await
    .context("the fetch did not finish in time")??;
    let fill_mbs = size as f64 / started.elapsed().as_secs_f64() / 1e6;
    for line in fetch.lines() {
        say!("  fetch: {line}");
    }
    drop(origin);

    // Raw quinn: one stream of the same size, sender in the origin's namespace.
    let tls = TlsIdentity::new(&fillmesh_net::identity::ephemeral())?;
    let sender_peer = tls.peer_id();
    let raw_addr = std::net::SocketAddr::from((node_addr(0), 5433));
    let (_stop, sender) =
        spawn_in_netns(&Network::handle(net.node(0)), "raw-sender", move |_| -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let endpoint = MeshEndpoint::bind(raw_addr, tls, TransportLimits::default())?;
                let wait = Duration::from_secs(30);
                baseline::send(&endpoint, size, wait, Duration::from_secs(60)).await?;
                Ok(())
            })
        })?;
    let limit = Duration::from_secs(args.timeout_secs);
    let (_stop2, receiver) =
        spawn_in_netns(&Network::handle(net.node(1)), "raw-receiver", move |_| -> anyhow::Result<f64> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let tls = TlsIdentity::new(&fillmesh_net::identity::ephemeral())?;
                let endpoint = MeshEndpoint::client(node_addr(1).into(), tls, TransportLimits::default())?;
                Ok(baseline::receive(&endpoint, raw_addr, sender_peer, size, limit).await?)
            })
        })?;
    let raw = tokio::task::spawn_blocking(move || receiver.join()).await?;
    let raw_mbs = raw.map_err(|_| anyhow::anyhow!("the raw receiver panicked"))???;
    let _ = tokio::task::spawn_blocking(move || sender.join()).await?;
    let stats = tokio::task::spawn_blocking(move || element.stop()).await??;
    tokio::task::spawn_blocking(move || drop(net)).await?;
    let link_mbs = rate / 1e6;
    say!(
        "fillmesh fetch  {fill_mbs:7.2} MB/s = {:.3} of raw quinn, {:.3} of the link rate",
        fill_mbs / raw_mbs,
        fill_mbs / link_mbs
    );
    say!(
        "raw quinn       {raw_mbs:7.2} MB/s = {:.3} of the link rate ({link_mbs:.2} MB/s)",
        raw_mbs / link_mbs
    );
    say!(
        "delay element: {} packets, {} dropped, release late by p50 {:.0} us, p99 {:.0} us",
        stats.packets,
        stats.dropped,
        stats.late_p50_us,
        stats.late_p99_us
    );
    Ok(())
}
