//! The service manager's notifications (`sd_notify`), with real processes and a unix datagram
//! socket bound by the test in systemd's place (`NOTIFY_SOCKET`): a node under a tracker says
//! `READY=1` only once it has registered (not when it prints its ready line), pings
//! `WATCHDOG=1` when `WATCHDOG_USEC` is set, and says `STOPPING=1` on SIGTERM; a tracker says
//! `READY=1` once listening.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use fillmesh_tests::fleet::free_port;
use fillmesh_tests::{print_id, NodeProcess};
use nix::sys::signal::Signal;

/// systemd's end of the notifications: every datagram received, in order.
struct Manager {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Manager {
    fn bind(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        Self { socket, seen: Vec::new() }
    }

    /// Receives until a datagram has a line `line`, for at most `limit`; returns its index in
    /// [`Manager::seen`].
    fn until(&mut self, line: &str, limit: Duration) -> usize {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while start.elapsed() < limit {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let datagram = String::from_utf8(buf[..n].to_vec()).unwrap();
                    let found = datagram.lines().any(|l| l == line);
                    self.seen.push(datagram);
                    if found {
                        return self.seen.len() - 1;
                    }
                }
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("receiving notifications: {e}"),
            }
        }
        panic!("no {line:?} within {limit:?}; received {:?}", self.seen)
    }

    fn count(&self, line: &str) -> usize {
        self.seen.iter().filter(|d| d.lines().any(|l| l == line)).count()
    }
}

#[test]
fn a_node_under_a_tracker_is_ready_once_registered_and_pings_its_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify.sock");
    let mut manager = Manager::bind(&socket);
    let (tracker_data, node_data) = (dir.path().join("tracker"), dir.path().join("node"));
    let ip = "127.0.29.201";
    let tracker_id = {
        let out = fillmesh_tests::fillmesh()
            .arg("tracker")
            .arg("--data")
            .arg(&tracker_data)
            .arg("--print-id")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let node_id = print_id(&node_data);
    let tracker_mesh = format!("{ip}:{}", free_port(ip));

    // The tracker is not up yet: the node listens (prints its ready line) but cannot register.
    let socket_env = socket.to_str().unwrap();
    let node = NodeProcess::start_env(
        &node_data,
        &["--listen", &format!("{ip}:0"), "--tracker", &tracker_mesh, "--tracker-id", &tracker_id],
        // A 400 ms watchdog: pings every 200 ms.
        &[("NOTIFY_SOCKET", socket_env), ("WATCHDOG_USEC", "400000"), ("FILLMESH_LOG", "info")],
    );
    // Several watchdog pings while it keeps failing to reach the tracker, and no READY=1.
    for _ in 0..3 {
        manager.until("WATCHDOG=1", Duration::from_secs(30));
    }
    assert_eq!(manager.count("READY=1"), 0, "ready before any tracker answered: {:?}", manager.seen);
    assert!(
        manager.seen.iter().any(|d| d.contains("STATUS=") && d.contains("registering")),
        "no status line saying it waits for a tracker: {:?}",
        manager.seen
    );

    // The tracker comes up (trusting the node): READY=1 follows the registration.
    let tracker_http = format!("{ip}:{}", free_port(ip));
    let _tracker = NodeProcess::start_tracker(
        &tracker_data,
        &["--listen", &tracker_mesh, "--http", &tracker_http, "--trust", &node_id],
    );
    let ready = manager.until("READY=1", Duration::from_secs(60));
    assert!(manager.seen[ready].contains("registered"), "{:?}", manager.seen[ready]);
    assert!(node.log().contains("registered with the tracker"), "{}", node.log());
    // The watchdog goes on after readiness.
    let pings = manager.count("WATCHDOG=1");
    manager.until("WATCHDOG=1", Duration::from_secs(30));
    assert_eq!(manager.count("WATCHDOG=1"), pings + 1);

    node.child.signal(Signal::SIGTERM);
    manager.until("STOPPING=1", Duration::from_secs(30));
}

#[test]
fn a_tracker_is_ready_once_listening() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify.sock");
    let mut manager = Manager::bind(&socket);
    let ip = "127.0.29.202";
    let tracker = NodeProcess::start_tracker_env(
        &dir.path().join("tracker"),
        &["--listen", &format!("{ip}:0"), "--http", &format!("{ip}:0")],
        &[("NOTIFY_SOCKET", socket.to_str().unwrap()), ("WATCHDOG_USEC", "400000")],
    );
    let ready = manager.until("READY=1", Duration::from_secs(30));
    let mesh = tracker.mesh.clone();
    assert!(manager.seen[ready].contains(&format!("STATUS=serving on {mesh}")), "{:?}", manager.seen[ready]);
    manager.until("WATCHDOG=1", Duration::from_secs(30));
    tracker.child.signal(Signal::SIGTERM);
    manager.until("STOPPING=1", Duration::from_secs(30));
}

#[test]
fn a_node_on_its_own_is_ready_once_listening() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify.sock");
    let mut manager = Manager::bind(&socket);
    let node = NodeProcess::start_env(
        &dir.path().join("node"),
        &["--listen", "127.0.29.203:0"],
        &[("NOTIFY_SOCKET", socket.to_str().unwrap())],
    );
    let ready = manager.until("READY=1", Duration::from_secs(30));
    assert!(
        manager.seen[ready].contains(&format!("STATUS=serving on {}", node.mesh)),
        "{:?}",
        manager.seen[ready]
    );
    node.child.signal(Signal::SIGTERM);
    manager.until("STOPPING=1", Duration::from_secs(30));
}
