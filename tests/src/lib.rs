//! Helpers for end-to-end tests: locating the `fillmesh` binary that `cargo test` built,
//! starting nodes as real processes, and stopping every process a test started, even when
//! the test fails.

pub mod clients;
pub mod doubles;
pub mod fleet;
pub mod load;
pub mod media;
pub mod mesh;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use fillmesh_net::ready::Ready;

/// The `fillmesh` binary of this build. `cargo test --workspace` builds it (the node crate's
/// own integration tests need it); a test binary run on its own (`cargo test -p
/// fillmesh-tests`) would find a stale one, so each test binary asks cargo once to bring it up
/// to date (a no-op when it is).
pub fn fillmesh_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/fillmesh
        let profile_dir = exe.parent().and_then(|p| p.parent()).expect("target profile dir");
        let bin = profile_dir.join(format!("fillmesh{}", std::env::consts::EXE_SUFFIX));
        if let Ok(cargo) = std::env::var("CARGO") {
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "fillmesh-cli", "--bin", "fillmesh"]);
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

/// A `fillmesh` command with logs kept quiet unless a test asks otherwise.
pub fn fillmesh() -> Command {
    let mut cmd = Command::new(fillmesh_bin());
    cmd.stdin(Stdio::null());
    cmd
}

/// A child process killed and reaped when dropped, so no test leaves a process behind.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// SIGKILL, as a crash or an operator's `kill -9` would.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildGuard {
    /// Sends `signal` (SIGTERM: stop as a supervisor does; SIGHUP: reload).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal the process");
    }

    /// SIGTERM, then waits at most `limit` for the process to exit: its status, or `None` if
    /// it is still running (then it is killed when the guard drops).
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        wait_for(limit, || self.0.try_wait().ok().flatten())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Prints the PeerId of the identity in `data`, creating it if needed.
pub fn print_id(data: &Path) -> String {
    let out =
        fillmesh().arg("node").arg("--data").arg(data).arg("--print-id").output().expect("run fillmesh");
    assert!(out.status.success(), "print-id failed: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

/// A running `fillmesh node` process.
#[derive(Debug)]
pub struct NodeProcess {
    pub child: ChildGuard,
    pub peer: String,
    pub mesh: String,
    /// A node's `--http` (its operator surface), a tracker's viewer listener.
    pub http: Option<String>,
    /// A tracker's operator listener (`--admin-http`: `/status`, `/metrics`).
    pub admin: Option<String>,
    pub stderr: PathBuf,
}

impl NodeProcess {
    /// Starts `fillmesh node --data DATA ARGS...` and waits (at most 30 s) for its ready line.
    pub fn start(data: &Path, args: &[&str]) -> Self {
        Self::start_kind("node", data, args, &[])
    }

    /// Starts `fillmesh tracker --data DATA ARGS...` and waits for its ready line. Without
    /// `--admin-http` in `args`, the operators' listener takes a free port on 127.0.0.1 (its
    /// default port would clash between tests run at once).
    pub fn start_tracker(data: &Path, args: &[&str]) -> Self {
        Self::start_kind("tracker", data, args, &[])
    }

    /// [`NodeProcess::start_tracker`] with extra environment.
    pub fn start_tracker_env(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_kind("tracker", data, args, env)
    }

    /// [`NodeProcess::start`] with extra environment (e.g. `FILLMESH_LOG`).
    pub fn start_env(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_kind("node", data, args, env)
    }

    /// Starts `fillmesh KIND --config CONFIG` (its log appended to `stderr`) and waits for
    /// its ready line: a node or a tracker as a service manager runs it.
    pub fn start_config(kind: &str, config: &Path, stderr: &Path, env: &[(&str, &str)]) -> Self {
        let config = config.to_string_lossy();
        Self::launch(kind, &["--config", &config], stderr.to_path_buf(), env)
    }

    fn start_kind(kind: &str, data: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let stderr = data.with_extension("stderr.log");
        let data = data.to_string_lossy();
        let mut all: Vec<&str> = ["--data", &*data].into_iter().chain(args.iter().copied()).collect();
        // A tracker's operators' listener on a free port unless the test names one: its default
        // port would clash between tests run at once.
        if kind == "tracker" && !args.iter().any(|a| a.starts_with("--admin-http")) {
            all.extend(["--admin-http", "127.0.0.1:0"]);
        }
        Self::launch(kind, &all, stderr, env)
    }

    fn launch(kind: &str, args: &[&str], stderr: PathBuf, env: &[(&str, &str)]) -> Self {
        let log = File::options().create(true).append(true).open(&stderr).expect("stderr log");
        let child = fillmesh()
            .arg(kind)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start fillmesh");
        let mut child = ChildGuard(child);
        let stdout = child.0.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the node never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            panic!("{kind} did not become ready: {}", std::fs::read_to_string(&stderr).unwrap_or_default())
        });
        let ready: Ready = line.parse().unwrap_or_else(|e| panic!("{kind}: {e}"));
        Self {
            child,
            peer: ready.peer,
            mesh: ready.mesh.to_string(),
            http: ready.http.map(|a| a.to_string()),
            admin: ready.admin.map(|a| a.to_string()),
            stderr,
        }
    }

    /// The `/metrics` page of the process's operator listener: a tracker's `--admin-http`, a
    /// node's `--http` (which it must have been given).
    pub fn metrics(&self) -> String {
        let at = self.admin.as_deref().or(self.http.as_deref()).expect("an operator listener");
        let (code, page) = http(at, "GET", "/metrics", &[], b"");
        assert_eq!(code, 200, "/metrics at {at}: {page}");
        page
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a failing test can be rerun exactly.
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The `b3sum`-style hex id of a file's contents.
pub fn file_id(path: &Path) -> String {
    let out = fillmesh().arg("id").arg(path).output().expect("run fillmesh id");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8")[..64].to_owned()
}

/// A minimal HTTP/1.1 exchange (`Connection: close`), returning the status code and body.
/// Enough to poke an API with requests the real client would never send.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let (status, _, body) = http_with_head(addr, method, path, headers, body);
    (status, body)
}

/// [`http`], with the answer's head (status line and headers) as well.
pub fn http_with_head(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write request");
    // A server may answer from the headers alone and close before the body is sent (an
    // already-held title): the answer is read all the same.
    if let Err(e) = stream.write_all(body) {
        let early = matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset);
        assert!(early, "write body: {e}");
    }
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        // A reset after the answer (the body we sent was left unread) keeps what arrived.
        assert!(e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty(), "read response: {e}");
    }
    let response = String::from_utf8_lossy(&raw).into_owned();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response.as_str(), ""));
    (status, head.to_owned(), body.to_owned())
}

/// A sample's value (one without labels) in a Prometheus text page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
