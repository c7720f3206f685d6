//! Scale: 10,000 appliances (4 regions x 4 sites) fill a 10 GiB title in 16 MiB chunks with
//! the fillmesh strategy (the fill the node runs: the tracker's fill layouts and each
//! appliance's own `fillmesh_swarm::Swarm`). Prints wall time, events per second, peak memory
//! (VmHWM) and the fill figures (tracker messages per chunk, cross-region bytes against their
//! floor); asserts nothing about speed.
//!
//! Run: `cargo bench -p fillmesh-sims --bench scale`
//! Smaller: `FILLMESH_SCALE_APPLIANCES=1000 cargo bench -p fillmesh-sims --bench scale`
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use fillmesh_sims::report::{percentile, StrategyReport};
use fillmesh_sims::{bounds, run, sim, Options, Scenario, Strategy};

/// The same allocator as the `fillmesh` binary, which runs `fillmesh sim`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l[6..].trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let n = std::env::var("FILLMESH_SCALE_APPLIANCES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let sc = Scenario { appliances: n, title_bytes: 10 << 30, chunk_bytes: 16 << 20, ..Scenario::default() };
    sc.validate().unwrap();
    let b = bounds::compute(&sc, &sim::place(&sc));
    println!(
        "scale: {n} appliances, 10 GiB title, 16 MiB chunks ({} chunks), {} chunk transfers, fillmesh",
        sc.chunks(),
        sc.chunks() * n as u64
    );
    let started = Instant::now();
    let o = run(&sc, Strategy::Fillmesh, &Options::default(), None);
    let wall = started.elapsed().as_secs_f64();
    let r = StrategyReport::new(&o, &sc, b.bound_s, wall);
    println!("wall time        {wall:.2} s");
    println!("events           {} ({:.0} events/s)", o.events, o.events as f64 / wall);
    println!("plan calls       {}", o.plan_calls);
    println!(
        "tracker messages {} ({:.4} per chunk transferred)",
        o.tracker_messages, r.tracker_messages_per_chunk
    );
    println!("peak memory      {}", vm_hwm());
    println!("largest re-solve {} resources, {} global re-solves", o.max_local_solve, o.global_solves);
    println!(
        "completion       p50 {:.2} s, p99 {:.2} s, max {:.2} s; bound {:.2} s; ratio {:.3}",
        percentile(&o.completion_s, 0.5).unwrap_or(f64::NAN),
        percentile(&o.completion_s, 0.99).unwrap_or(f64::NAN),
        r.completion_max_s.unwrap_or(f64::NAN),
        b.bound_s,
        r.ratio_to_bound.unwrap_or(f64::NAN)
    );
    println!("origin bytes     {:.3} x the title", r.origin_bytes_per_title);
    let f = sc.title_bytes as f64;
    let class = |k: &str| r.bytes_by_class.get(k).copied().unwrap_or(0) as f64 / f;
    println!(
        "bytes by class   {:.1} F same site, {:.1} F same region, {:.1} F cross-region, {:.1} F origin",
        class("same_site"),
        class("same_region"),
        class("cross_region"),
        class("origin")
    );
    // With the origin sending each chunk once, every region but one takes each chunk in
    // across regions at least once: the floor is (regions - 1) titles.
    let floor = sc.regions.saturating_sub(1) as f64;
    let cross = class("cross_region");
    let over = if floor > 0.0 { format!("{:.2}x", cross / floor) } else { "n/a".into() };
    println!("cross-region     {cross:.2} F, {over} the floor of {floor:.0} F");
    println!("trace            {}", o.trace_hash);
}
