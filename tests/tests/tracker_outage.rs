//! No tracker, no stop, with real processes: 8 appliances fill a title; the tracker is killed
//! with SIGKILL once every appliance has its plan and is not restarted; every appliance still
//! ends with the whole title, verified, the origin sending about one copy; and a player that
//! was steered before the kill plays the title after it.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::Stdio;
use std::time::Duration;

use fillmesh_tests::mesh::Mesh;
use fillmesh_tests::{file_id, http, metric, wait_for};

/// 48 chunks; the origin at 8 MB/s sends one copy in about 6 s.
const TITLE_LEN: usize = 48 << 20;

#[test]
fn the_fleet_fills_and_plays_on_after_the_tracker_is_killed() {
    let mut mesh = Mesh::start("mesh", "8MB", 8, TITLE_LEN);
    // Every appliance has its plan (its fill started) ...
    wait_for(Duration::from_secs(60), || {
        mesh.appliances.iter().all(|(_, a)| a.log().contains("filling by the tracker's plan")).then_some(())
    })
    .expect("not every appliance got its plan within 60 s");
    // ... and a player has been steered (its answer kept in the mesh's steering cache) and
    // plays on from partial holders and the origin.
    let early_out = mesh.dir.path().join("early.mp4");
    let early = mesh
        .play_command("127.0.11.7", &early_out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cache =
        mesh.dir.path().join("cache").join("fillmesh").join("steer").join(format!("{}.json", mesh.title));
    wait_for(Duration::from_secs(30), || cache.exists().then_some(()))
        .expect("the player kept no steering answer");
    let before = mesh.appliances.iter().filter(|(_, a)| a.log().contains("title complete")).count();
    assert!(before < 8, "the fill was over before the tracker was killed");
    mesh.tracker.child.kill();

    // Every appliance completes without it.
    wait_for(Duration::from_secs(180), || {
        mesh.appliances.iter().all(|(_, a)| a.log().contains("title complete")).then_some(())
    })
    .unwrap_or_else(|| {
        let logs: Vec<String> = mesh.appliances.iter().map(|(_, a)| a.log()).collect();
        panic!("not every appliance completed without the tracker:\n{}", logs.join("\n----\n"))
    });
    mesh.assert_bytes();
    // The origin sent about one copy (its own count: the tracker is gone).
    let (code, page) = http(mesh.origin.http.as_deref().unwrap(), "GET", "/metrics", &[], b"");
    assert_eq!(code, 200);
    let served = metric(&page, "fillmesh_mesh_served_bytes_total").unwrap();
    assert!(
        served <= 1.10 * TITLE_LEN as f64,
        "the origin served {served} bytes, {:.3} x the title",
        served / TITLE_LEN as f64
    );

    let early = early.wait_with_output().unwrap();
    assert!(early.status.success(), "{}", String::from_utf8_lossy(&early.stderr));
    assert_eq!(file_id(&early_out), mesh.title);
    // A player steered before the kill plays after it, from its kept answer.
    let late_out = mesh.dir.path().join("late.mp4");
    let late = mesh.play("127.0.11.7", &late_out, &[]);
    let stderr = String::from_utf8_lossy(&late.stderr);
    assert!(late.status.success(), "{stderr}");
    assert!(stderr.contains("tracker unreachable: using the steering answer cached"), "{stderr}");
    assert!(String::from_utf8_lossy(&late.stdout).contains("every byte verified"));
    assert_eq!(file_id(&late_out), mesh.title);
}
