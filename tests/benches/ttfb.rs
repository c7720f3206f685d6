//! Player time to first byte on loopback, steering included (README.md, "Performance targets":
//! under 50 ms).
//!
//! `cargo bench -p fillmesh-tests --bench ttfb [-- PLAYS]` (default 20): a tracker, an origin
//! and two appliances as real processes, a 32 MiB title filled, then `fillmesh play` run
//! PLAYS times from a client in the first appliances' prefix. Each play's phases come from its
//! debug log (steered, connected, manifest verified) and its time to first byte (the first
//! verified chunk written) from its summary. The baseline, measured in the same run, is the
//! bare cost of the two round trips every play must make before any chunk: a steering HTTP
//! request to the tracker, and a QUIC handshake with the appliance (both inside `play`'s own
//! "connected" mark, so the ratio is first byte / connected).

use std::time::Duration;

use fillmesh_tests::mesh::Mesh;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The `ms=` field of the first log line containing `mark`.
fn mark_ms(log: &str, mark: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(mark))?;
    line.split_whitespace().find_map(|w| w.strip_prefix("ms=")).and_then(|v| v.parse().ok())
}

fn main() {
    let plays: usize =
        std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(20);
    let mesh = Mesh::start("mesh", "1GB", 2, 32 << 20);
    mesh.wait_complete(Duration::from_secs(120));
    let out = mesh.dir.path().join("played.bin");
    let (mut steered, mut connected, mut manifest, mut first) = (vec![], vec![], vec![], vec![]);
    for _ in 0..plays {
        // A fresh output file each time: truncating the last one is not the player's cost.
        let _ = std::fs::remove_file(&out);
        let run = mesh
            .play_command("127.0.11.99", &out)
            .env("FILLMESH_LOG", "fillmesh_player=debug")
            .env("NO_COLOR", "1")
            .output()
            .expect("run fillmesh play");
        let stdout = String::from_utf8_lossy(&run.stdout);
        let log = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "play failed: {stdout}\n{log}");
        let ttfb: f64 = stdout
            .split("time to first byte ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .expect("time to first byte in the summary");
        steered.push(mark_ms(&log, "steered").expect("steered mark"));
        connected.push(mark_ms(&log, "connected").expect("connected mark"));
        manifest.push(mark_ms(&log, "manifest verified").expect("manifest mark"));
        first.push(ttfb);
    }
    println!("{plays} plays of a 32 MiB title (1 MiB chunks) from 2 appliances on loopback; ms since play() started");
    println!("{:<28} {:>8} {:>8} {:>8}", "", "p50", "p90", "max");
    for (name, v) in [
        ("steered (tracker /steer)", &mut steered),
        ("connected (QUIC + HTTP/3)", &mut connected),
        ("manifest verified", &mut manifest),
        ("first byte (chunk 0 verified)", &mut first),
    ] {
        println!(
            "{name:<28} {:>8.1} {:>8.1} {:>8.1}",
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 1.0)
        );
    }
    let (c, f) = (percentile(&mut connected, 0.5), percentile(&mut first, 0.5));
    println!("ratio first byte / connected (baseline: the round trips every play makes), p50: {:.2}", f / c);
    println!("target: first byte under 50 ms; p50 {f:.1} ms, max {:.1} ms", percentile(&mut first, 1.0));
}
