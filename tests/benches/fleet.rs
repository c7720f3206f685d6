//! A title filled under three trackers sharing etcd against the same fill under one: etcd,
//! the trackers, an origin and 8 appliances (2 regions, 4 sites) as real processes on
//! loopback (`fillmesh_tests::fleet`), a title seeded, the time from `fillmesh seed`'s return
//! until every appliance has logged it complete, and the origin's bytes. Runs alternate
//! (one, three, three, one, ...), a fresh fleet each; medians and their ratio are printed.
//! Asserts nothing about speed. The one tracker keeps its catalog in etcd as well, so the
//! two sides differ only in how many trackers share the fleet.
//!
//! `cargo bench -p fillmesh-tests --bench fleet [-- SIZE_MIB RUNS]` (default 64 MiB, 3 runs
//! a side). Says it skipped without `etcd`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use fillmesh_tests::fleet::Fleet;
use fillmesh_tests::{test_bytes, wait_for};

/// One fill: seconds from the seed's return to every appliance complete, and origin bytes
/// over the title's length. `None` without etcd.
fn fill(trackers: usize, bytes: &[u8], run: usize) -> Option<(f64, f64)> {
    let fleet = Fleet::start(trackers, 8, "100MB")?;
    // Every tracker sees the whole set live before the title is seeded.
    wait_for(Duration::from_secs(60), || {
        (0..trackers).all(|t| fleet.live_trackers(t) == Some(trackers)).then_some(())
    })
    .expect("the trackers did not all see each other live");
    let file = fleet.dir.path().join(format!("title-{run}.mp4"));
    std::fs::write(&file, bytes).unwrap();
    let title = fleet.seed(&file);
    let seeded = Instant::now();
    wait_for(Duration::from_secs(300), || (fleet.completed(&title) == 8).then_some(()))
        .expect("the fill did not complete within 300 s");
    let secs = seeded.elapsed().as_secs_f64();
    fleet.wait_filled(&title, Duration::from_secs(10));
    Some((secs, fleet.origin_served() / bytes.len() as f64))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3).max(1);
    println!("fleet: a {mib} MiB title to 8 appliances, origin at 100 MB/s, {runs} runs a side");
    let (mut one, mut three) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // A title of its own each run (a fresh fleet anyway), ABBA order.
        let bytes = test_bytes(mib << 20, 1000 + run as u64);
        let order: [usize; 2] = if run % 2 == 0 { [1, 3] } else { [3, 1] };
        for trackers in order {
            let Some((secs, origin)) = fill(trackers, &bytes, run) else { return };
            println!(
                "run {}: {trackers} tracker(s): filled in {secs:.2} s, origin {origin:.3} x the title",
                run + 1
            );
            if trackers == 1 {
                one.push(secs)
            } else {
                three.push(secs)
            }
        }
    }
    let (a, b) = (median(one), median(three));
    println!("one tracker {a:.2} s, three trackers {b:.2} s (medians); three / one = {:.3}", b / a);
}
