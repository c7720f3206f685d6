//! Helpers for end-to-end tests: locating the `fillmesh` binary that `cargo test` built, and
//! child processes that are always stopped, even when a test fails.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::OnceLock;

/// The `fillmesh` binary of this build. `cargo test --workspace` builds it (the node crate's
/// own integration tests need it); when a test runs alone it is built here once.
pub fn fillmesh_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/fillmesh
        let profile_dir = exe.parent().and_then(|p| p.parent()).expect("target profile dir");
        let bin = profile_dir.join(format!("fillmesh{}", std::env::consts::EXE_SUFFIX));
        if !bin.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "fillmesh-node", "--bin", "fillmesh"]);
            if profile_dir.ends_with("release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build");
            assert!(status.success(), "cargo build of the fillmesh binary failed");
        }
        bin
    })
    .clone()
}

/// A child process killed and reaped when dropped, so no test leaves a process behind.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
