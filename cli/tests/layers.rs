//! The workspace's layers: the command line is the binary's alone. No library crate may
//! depend on clap (a library is used by programs that have their own arguments: the demo,
//! the tests, the package player to come), and the player client does not depend on the
//! appliance library.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::Command;

/// The names of the crates in `package`'s normal dependency tree (with `features`).
fn tree(package: &str, features: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["tree", "--offline", "-p", package, "-e", "normal", "--prefix", "none"]);
    for f in features {
        cmd.args(["--features", f]);
    }
    let out = cmd.current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    assert!(out.status.success(), "cargo tree -p {package} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
}

#[test]
fn only_the_binary_depends_on_clap() {
    // The check can fail: the binary's own tree has clap.
    assert!(
        tree("fillmesh-cli", &[]).iter().any(|n| n == "clap"),
        "fillmesh-cli should parse its flags with clap"
    );
    let libraries: [(&str, &[&str]); 7] = [
        ("fillmesh-protocol", &[]),
        ("fillmesh-net", &[]),
        ("fillmesh-swarm", &[]),
        ("fillmesh-tracker", &["server"]),
        ("fillmesh-node", &[]),
        ("fillmesh-player", &[]),
        ("fillmesh-sims", &[]),
    ];
    for (library, features) in libraries {
        let names = tree(library, features);
        assert!(names.iter().any(|n| n == library), "cargo tree of {library} does not list it: {names:?}");
        assert!(!names.iter().any(|n| n == "clap"), "{library} depends on clap: {names:?}");
    }
}

#[test]
fn the_player_client_is_not_built_on_the_appliance() {
    let names = tree("fillmesh-player", &[]);
    assert!(names.iter().any(|n| n == "fillmesh-protocol"), "{names:?}");
    for banned in ["fillmesh-node", "fillmesh-tracker", "sled"] {
        assert!(!names.iter().any(|n| n == banned), "{banned} is in the player's tree: {names:?}");
    }
}
