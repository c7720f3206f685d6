//! The simulator runs the tracker's sans-IO core: nothing of the tracker's server (tokio,
//! quinn, sled) may reach its dependency tree.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::Command;

#[test]
fn the_simulator_depends_on_no_runtime_no_transport_and_no_database() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "-p", "fillmesh-sims", "-e", "normal", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(names.contains(&"fillmesh-tracker"), "the simulator should run the tracker's core:\n{tree}");
    for banned in ["tokio", "quinn", "sled", "fillmesh-net", "axum"] {
        assert!(!names.contains(&banned), "{banned} is in the simulator's tree:\n{tree}");
    }
}
