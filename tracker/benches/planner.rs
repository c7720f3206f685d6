//! Plan throughput at fleet scale: 1,000 appliances (10 regions x 10 sites x 10), the origin,
//! one title of 10,000 chunks, starting mid-fill (each appliance holds a random ~30%). Every
//! assignment is completed at once by a held report, so the swarm keeps moving. Prints plans
//! per second and mean microseconds per plan; asserts nothing about speed.
//!
//! Run: `cargo bench -p fillmesh-tracker --bench planner`
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use fillmesh_protocol::messages::{Fetched, Heartbeat, Registration, Role};
use fillmesh_protocol::{ChunkBitmap, ChunkSize, IpPrefix, NodeId, Shape, TitleId};
use fillmesh_tracker::core::{Config, Tracker};

const REGIONS: usize = 10;
const SITES: usize = 10;
const PER_SITE: usize = 10;
const CHUNKS: u32 = 10_000;
const PLANS: usize = 20_000;

fn id(i: usize) -> NodeId {
    const B58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let (mut s, mut n) = (String::from("Bench"), i);
    loop {
        s.push(B58[n % 58] as char);
        n /= 58;
        if n == 0 {
            break s.parse().unwrap();
        }
    }
}

fn reg(role: Role, i: usize, region: usize, site: usize) -> Registration {
    Registration {
        role,
        mesh_addr: SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 4433)),
        site: format!("s{site}"),
        region: format!("r{region}"),
        prefixes: vec![IpPrefix::new(IpAddr::from([10, region as u8, site as u8, 0]), 24).unwrap()],
        upload_bps: 100_000_000,
        disk_bytes: u64::MAX,
        cert_sha256: None,
    }
}

/// xorshift64*: the benchmark's own deterministic randomness.
fn rng(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn main() {
    let mut tracker = Tracker::new(Config::default());
    let now = 1_000;
    let origin = id(usize::MAX >> 1);
    tracker.register(now, origin.clone(), reg(Role::Origin, 0, 0, 0));
    let n = REGIONS * SITES * PER_SITE;
    let ids: Vec<NodeId> = (0..n).map(id).collect();
    for (i, node) in ids.iter().enumerate() {
        tracker.register(
            now,
            node.clone(),
            reg(Role::Appliance, i, i / (SITES * PER_SITE), (i / PER_SITE) % SITES),
        );
    }
    let cs = ChunkSize::DEFAULT;
    let shape = Shape::file(u64::from(CHUNKS) * cs.bytes(), cs).unwrap();
    let title = TitleId::from_bytes([9; 32]);
    tracker.publish(now, title, "bench".into(), &shape).unwrap();
    tracker.report_held(now, &origin, title, ChunkBitmap::full(CHUNKS).unwrap(), &[]).unwrap();

    let setup = Instant::now();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut held: Vec<ChunkBitmap> = Vec::with_capacity(n);
    for node in &ids {
        let mut map = ChunkBitmap::new(CHUNKS).unwrap();
        for c in 0..CHUNKS {
            if rng(&mut state) % 100 < 30 {
                map.insert(c);
            }
        }
        tracker.report_held(now, node, title, map.clone(), &[]).unwrap();
        held.push(map);
    }
    println!("mid-fill state: {n} appliances x {CHUNKS} chunks in {:.2?}", setup.elapsed());

    let hb = Heartbeat {
        healthy: true,
        uploads_in_flight: 0,
        upload_bps_used: 0,
        player_sessions: 0,
        disk_used: 0,
    };
    let mut now = now;
    let (mut assignments, mut plan_time, mut report_time) = (0usize, 0f64, 0f64);
    let total = Instant::now();
    for k in 0..PLANS {
        let i = k % n;
        if i == 0 {
            // A second passes per sweep of the fleet; everyone stays alive.
            now += 1_000;
            tracker.heartbeat(now, &origin, hb).unwrap();
            for node in &ids {
                tracker.heartbeat(now, node, hb).unwrap();
            }
        }
        let t0 = Instant::now();
        let plan = tracker.plan(now, &ids[i], 8).unwrap().assignments;
        plan_time += t0.elapsed().as_secs_f64();
        assignments += plan.len();
        let t1 = Instant::now();
        if !plan.is_empty() {
            let fetched: Vec<Fetched> =
                plan.iter().map(|a| Fetched { chunk: a.chunk, source: a.sources[0].node.clone() }).collect();
            for a in &plan {
                held[i].insert(a.chunk);
            }
            tracker.report_held(now, &ids[i], title, held[i].clone(), &fetched).unwrap();
        }
        report_time += t1.elapsed().as_secs_f64();
    }
    let wall = total.elapsed().as_secs_f64();
    let status = tracker.status(now);
    let t = &status.titles[0];
    println!(
        "{PLANS} plans, {assignments} assignments ({:.2} per plan) in {wall:.2} s",
        assignments as f64 / PLANS as f64
    );
    println!(
        "plan: {:.0} plans/s, {:.1} us per plan; held report: {:.1} us each",
        PLANS as f64 / plan_time,
        plan_time / PLANS as f64 * 1e6,
        report_time / PLANS as f64 * 1e6
    );
    println!(
        "bytes so far: origin {} MiB, by class {:?}; complete appliances {}",
        t.origin_bytes >> 20,
        t.bytes_by_class.iter().map(|(k, v)| format!("{k}={}MiB", v >> 20)).collect::<Vec<_>>(),
        t.complete_appliances
    );
}
