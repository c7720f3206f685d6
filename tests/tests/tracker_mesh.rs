//! A whole mesh under the tracker, as real processes on 127.0.0.x: a tracker, an origin with a
//! capped upload rate and 8 appliances in 2 regions / 4 sites fill a 64 MiB title.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use fillmesh_tests::mesh::{start_appliance, Mesh};
use fillmesh_tests::{fillmesh, http, wait_for, NodeProcess};
use serde_json::Value;

const TITLE_LEN: usize = 64 << 20;
const APPLIANCES: usize = 8;

fn start_mesh(policy: &str, origin_rate: &str) -> Mesh {
    Mesh::start(policy, origin_rate, APPLIANCES, TITLE_LEN)
}

fn wait_complete(mesh: &Mesh, limit: Duration) -> Value {
    mesh.wait_complete(limit)
}

fn assert_bytes(mesh: &Mesh) {
    mesh.assert_bytes()
}

fn status(tracker: &NodeProcess) -> Option<Value> {
    fillmesh_tests::mesh::status(tracker)
}

fn title_status(tracker: &NodeProcess, title: &str) -> Option<Value> {
    fillmesh_tests::mesh::title_status(tracker, title)
}

#[test]
fn appliances_fill_from_one_another_and_the_origin_sends_the_title_about_once() {
    let mesh = start_mesh("mesh", "32MB");
    let t = wait_complete(&mesh, Duration::from_secs(180));
    assert_bytes(&mesh);
    let origin_bytes = t["origin_bytes"].as_u64().unwrap();
    let ratio = origin_bytes as f64 / TITLE_LEN as f64;
    eprintln!("mesh: origin bytes {origin_bytes} = {ratio:.3} x the title; status: {t}");
    assert!(ratio <= 1.25, "origin sent {ratio:.3} x the title");
    assert_eq!(t["peer_bytes"].as_u64().unwrap() + origin_bytes, (APPLIANCES * TITLE_LEN) as u64);
    // The catalog has the title under its name; steering sends a client in site s1's prefix
    // to a site-s1 appliance first.
    let s = status(&mesh.tracker).unwrap();
    assert!(s["titles"].as_array().unwrap().iter().any(|t| t["name"] == "feature.mp4"));
    let (code, body) = http(
        mesh.tracker.http.as_deref().unwrap(),
        "GET",
        &format!("/steer?title={}&client_ip=127.0.12.99", mesh.title),
        &[],
        b"",
    );
    assert_eq!(code, 200, "{body}");
    let steer: Value = serde_json::from_str(&body).unwrap();
    let targets = steer["targets"].as_array().unwrap();
    // Every appliance, then the origin as the last resort.
    assert_eq!(targets.len(), APPLIANCES + 1, "{body}");
    assert_eq!(targets[APPLIANCES]["peer_id"], mesh.origin.peer.as_str(), "{body}");
    assert_eq!(targets[0]["site"], "s1", "{body}");
    assert_eq!(targets[1]["site"], "s1", "{body}");

    // The operator's view: `fillmesh status` prints the same JSON, the metrics carry the byte
    // classes, and `--print-id` names the running tracker.
    let out = fillmesh().args(["status", "--tracker-admin", &mesh.tracker_admin_url()]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["titles"][0]["complete_appliances"], APPLIANCES as u64);
    assert_eq!(
        printed["appliances"].as_array().unwrap().len(),
        APPLIANCES + 1,
        "8 appliances and the origin"
    );
    let metrics = mesh.tracker.metrics();
    let origin_line =
        format!("fillmesh_title_bytes_total{{title=\"{}\",class=\"origin\"}} {origin_bytes}", mesh.title);
    assert!(metrics.contains(&origin_line), "{metrics}");
    let complete_line =
        format!("fillmesh_title_complete_appliances{{title=\"{}\"}} {APPLIANCES}", mesh.title);
    assert!(metrics.lines().any(|l| l == complete_line), "{metrics}");
    for family in [
        "fillmesh_tracker_nodes gauge",
        "fillmesh_tracker_refused_total counter",
        "fillmesh_title_complete_appliances gauge",
        "fillmesh_title_bytes_total counter",
    ] {
        assert!(metrics.contains(&format!("\n# TYPE {family}\n")), "{family}:\n{metrics}");
    }
    let out = fillmesh()
        .args(["tracker", "--print-id", "--data"])
        .arg(mesh.dir.path().join("tracker"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), mesh.tracker.peer);
    drop(mesh.origin);
}

#[test]
fn origin_only_policy_shows_the_contrast() {
    let mesh = start_mesh("origin-only", "256MB");
    let t = wait_complete(&mesh, Duration::from_secs(240));
    assert_bytes(&mesh);
    let origin_bytes = t["origin_bytes"].as_u64().unwrap();
    let ratio = origin_bytes as f64 / TITLE_LEN as f64;
    eprintln!("origin-only: origin bytes {origin_bytes} = {ratio:.3} x the title");
    assert!(ratio >= APPLIANCES as f64 * 0.99, "origin-only must send a copy per appliance, sent {ratio:.3}");
    assert_eq!(t["peer_bytes"].as_u64().unwrap(), 0);
}

#[test]
fn the_tracker_killed_mid_fill_comes_back_with_its_catalog_and_the_fill_completes() {
    let mut mesh = start_mesh("mesh", "8MB");
    // Let the fill get going, then kill the tracker hard.
    wait_for(Duration::from_secs(60), || {
        let t = title_status(&mesh.tracker, &mesh.title)?;
        (t["origin_bytes"].as_u64()? + t["peer_bytes"].as_u64()? >= 8 << 20).then_some(())
    })
    .expect("the fill did not start");
    let mesh_addr = mesh.tracker.mesh.clone();
    let http_addr = mesh.tracker.http.clone().unwrap();
    mesh.tracker.child.kill();
    let mut args = mesh.tracker_args.clone();
    args[1] = mesh_addr.clone();
    args[3] = http_addr;
    mesh.tracker = NodeProcess::start_tracker(
        &mesh.dir.path().join("tracker"),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(mesh.tracker.mesh, mesh_addr);
    let catalog = status(&mesh.tracker).unwrap();
    assert!(
        catalog["titles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == mesh.title.as_str() && t["name"] == "feature.mp4"),
        "the catalog did not survive: {catalog}"
    );
    wait_complete(&mesh, Duration::from_secs(240));
    assert_bytes(&mesh);
}

#[test]
fn an_untrusted_appliance_is_refused_by_the_tracker_and_by_appliances() {
    let mesh = start_mesh("mesh", "64MB");
    wait_complete(&mesh, Duration::from_secs(180));
    let stranger_dir = mesh.dir.path().join("stranger");
    let stranger = start_appliance(&stranger_dir, 0, &mesh.tracker);
    let stranger_id = stranger.peer.clone();
    wait_for(Duration::from_secs(20), || {
        mesh.tracker.log().contains(&format!("refusing untrusted node peer={stranger_id}")).then_some(())
    })
    .unwrap_or_else(|| panic!("tracker did not refuse the stranger:\n{}", mesh.tracker.log()));
    let s = status(&mesh.tracker).unwrap();
    assert!(!s["appliances"].as_array().unwrap().iter().any(|a| a["peer_id"] == stranger_id.as_str()));
    // An appliance serves only tracker-vouched members: the stranger's fetch (same identity,
    // its own store) is refused.
    let fetch_dir = mesh.dir.path().join("stranger-fetch");
    std::fs::create_dir_all(&fetch_dir).unwrap();
    std::fs::copy(stranger_dir.join("identity.key"), fetch_dir.join("identity.key")).unwrap();
    let (_, first) = &mesh.appliances[0];
    let out = fillmesh()
        .args(["fetch", &mesh.title, "--from", &first.mesh, "--peer", &first.peer, "--out"])
        .arg(mesh.dir.path().join("stolen.bin"))
        .arg("--data")
        .arg(&fetch_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not trusted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(stranger);
}
