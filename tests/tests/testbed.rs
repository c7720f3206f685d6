//! `fillmesh testbed` end to end: a short scenario (4 appliances in 2 regions, an 8 MiB title)
//! on the real binaries in network namespaces behind shaped links and the delay element, then
//! in the simulator; the report's figures; a crashed run's leftovers removed; Ctrl-C removing
//! everything. Needs root (CI has it): without it the test says so and checks nothing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fillmesh_tests::{fillmesh, wait_for, ChildGuard};
use serde_json::Value;

const SCENARIO: &str = r#"
appliances = 4
regions = 2
sites_per_region = 1
title_size = "8MiB"
chunk_size = "1MiB"
origin_upload = "50Mbps"
seed = 3
[appliance]
upload = "50Mbps"
download = "100Mbps"
[latency_ms]
same_site = 0.5
same_region = 5
cross_region = 20
origin = 20
"#;

/// Why the testbed cannot run here, if it cannot.
fn cannot_run() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid_root =
        status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|v| v.split_whitespace().nth(1))
            == Some("0");
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    if !uid_root || caps & (1 << 12) == 0 || caps & (1 << 21) == 0 {
        return Some("not root with CAP_NET_ADMIN and CAP_SYS_ADMIN".into());
    }
    for tool in ["ip", "tc", "iptables"] {
        let ok = Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !ok.is_ok_and(|s| s.success()) {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

fn namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Waits (bounded) for a child to exit; SIGTERM then SIGKILL if it does not.
fn finish(mut child: ChildGuard, limit: Duration) -> std::process::ExitStatus {
    if let Some(status) = wait_for(limit, || child.0.try_wait().ok().flatten()) {
        return status;
    }
    let _ = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    if let Some(status) = wait_for(Duration::from_secs(20), || child.0.try_wait().ok().flatten()) {
        panic!("the testbed did not finish in {} s (stopped by SIGTERM: {status})", limit.as_secs());
    }
    child.kill();
    panic!("the testbed did not finish in {} s, nor on SIGTERM", limit.as_secs());
}

fn class(side: &Value, key: &str) -> u64 {
    side["bytes_by_class"][key].as_u64().unwrap_or(0)
}

fn full_run(dir: &Path, scenario: &Path) {
    // A crashed run's leftovers: a namespace of a process that no longer exists.
    let stale = "fmtb-4194300-r";
    let made = Command::new("ip").args(["netns", "add", stale]).status().expect("ip netns add");
    assert!(made.success());
    let out = dir.join("report.json");
    let child = fillmesh()
        .args(["testbed", "--scenario"])
        .arg(scenario)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("testbed.log")).expect("log"))
        .spawn()
        .expect("start fillmesh testbed");
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let status = finish(child, Duration::from_secs(240));
    let text = reader.join().expect("reader");
    let log = std::fs::read_to_string(dir.join("testbed.log")).unwrap_or_default();
    assert!(status.success(), "fillmesh testbed failed: {status}\n{text}\n{log}");
    assert!(!namespaces().contains(&stale.to_owned()), "the stale namespace is still there");
    assert!(text.contains("removed 1 namespaces left by a crashed run"), "{text}");
    assert!(text.contains("completion p50 (s)") && text.contains("delay element:"), "{text}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("report")).expect("JSON");
    let title = 8u64 << 20;
    assert_eq!(report["appliances"], 4, "the scenario's own fields are in the report");
    assert_eq!(report["title_bytes"], title);
    for side in ["sim", "testbed"] {
        let s = &report[side];
        assert_eq!(s["completed"], 4, "{side}: {s}");
        let (p50, max) = (s["completion_p50_s"].as_f64(), s["completion_max_s"].as_f64());
        assert!(p50.is_some_and(|p| p > 0.0) && max >= p50, "{side}: {s}");
        // Every appliance got every byte from somewhere, and every chunk left the origin once
        // at least.
        let total: u64 =
            ["same_site", "same_region", "cross_region", "origin"].iter().map(|k| class(s, k)).sum();
        assert!(total >= 4 * title, "{side}: {total} bytes for 4 x {title}: {s}");
        assert!(s["origin_bytes"].as_u64().is_some_and(|o| o >= title), "{side}: {s}");
    }
    // The element held packets for their path's delay: the cross-region paths of 10 ms one
    // way, and nothing it held was released much later than due.
    let e = &report["delay_element"];
    assert!(e["packets"].as_u64().is_some_and(|p| p > 1000), "{e}");
    assert!(e["max_held"].as_u64().is_some_and(|p| p > 0), "{e}");
    // The 20 ms paths: no appliance can be done before a request and a chunk crossed one.
    let t = report["testbed"]["completion_s"][0].as_f64().unwrap_or(0.0);
    assert!(t > 0.02, "the first completion took {t} s: the delay is not there");
}

fn interrupted_run(dir: &Path, scenario: &Path) {
    let child = fillmesh()
        .args(["testbed", "--scenario"])
        .arg(scenario)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("interrupted.log")).expect("log"))
        .spawn()
        .expect("start fillmesh testbed");
    let pid = child.id();
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // Wait (bounded by the child's own waits) for the mesh to be up, then Ctrl-C.
    let started = Instant::now();
    let mut seen = String::new();
    while let Some(Ok(line)) = lines.next() {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("registered") || started.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    assert!(seen.contains("registered"), "the testbed did not come up:\n{seen}");
    let prefix = format!("fmtb-{pid}-");
    assert!(namespaces().iter().any(|n| n.starts_with(&prefix)), "no namespace of the run");
    let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status();
    let status = finish(child, Duration::from_secs(60));
    assert!(!status.success(), "an interrupted testbed must fail");
    let log = std::fs::read_to_string(dir.join("interrupted.log")).unwrap_or_default();
    assert!(log.contains("interrupted"), "{log}");
    let left: Vec<String> = namespaces().into_iter().filter(|n| n.starts_with(&prefix)).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_short_scenario_on_the_testbed_and_in_the_simulator() {
    if let Some(why) = cannot_run() {
        eprintln!("skipped, checks nothing: the testbed needs root and its tools ({why})");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, SCENARIO).expect("scenario");
    full_run(dir.path(), &scenario);
    interrupted_run(dir.path(), &scenario);
    long_path(dir.path());
}

/// The long path: a fetch and raw quinn over one 50 ms, lossy path; both complete (the fetch
/// verifies every chunk) and the figures are printed. Their ratio is a benchmark's business.
fn long_path(dir: &Path) {
    let child = fillmesh()
        .args(["testbed", "--long-path", "100Mbps", "--long-path-size", "4MiB", "--loss-pct", "0.5"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("long.log")).expect("log"))
        .spawn()
        .expect("start fillmesh testbed --long-path");
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let status = finish(child, Duration::from_secs(120));
    let text = reader.join().expect("reader");
    let log = std::fs::read_to_string(dir.join("long.log")).unwrap_or_default();
    assert!(status.success(), "{status}\n{text}\n{log}");
    assert!(text.contains("of raw quinn"), "{text}");
    assert!(text.contains("4 chunks (4194304 bytes)"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("delay element:") && !l.contains(" 0 packets")), "{text}");
}

#[test]
fn fields_the_testbed_cannot_honour_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("events.toml");
    std::fs::write(
        &scenario,
        "appliances = 4\nsite_uplink = \"1Gbps\"\n[[events]]\nkind = \"fail\"\nat_s = 1.0\ncount = 1\n",
    )
    .expect("scenario");
    let out = fillmesh().args(["testbed", "--scenario"]).arg(&scenario).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot honour") && err.contains("site_uplink") && err.contains("\"fail\""),
        "{err}"
    );
    // A scenario the simulator rejects is rejected the same way.
    std::fs::write(&scenario, "appliancez = 4\n").expect("scenario");
    let out = fillmesh().args(["testbed", "--scenario"]).arg(&scenario).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("appliancez"));
}
