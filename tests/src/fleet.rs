//! Several trackers sharing one etcd, as real processes on loopback: etcd (started and
//! stopped by the test, data in a temporary directory), trackers on 127.0.0.2.. with fixed
//! ports (so that a killed tracker comes back where the appliances look for it), an origin
//! and appliances that know every tracker.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fillmesh_net::sync::LockExt;
use serde_json::Value;

use crate::mesh::{appliance_args, seed_through, status_at, title_in};
use crate::{fillmesh, http, print_id, wait_for, ChildGuard, NodeProcess};

/// A port free on `ip` for both TCP and UDP now (the process that takes it binds it a moment
/// later; nothing else on these addresses asks for ports meanwhile).
pub fn free_port(ip: &str) -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind((ip, 0)).expect("bind a loopback port");
        let port = tcp.local_addr().expect("local address").port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP on {ip}");
}

/// The trackers' etcd lease in the fleet tests, in seconds: a tracker killed is out of the
/// fleet (and its titles move) within this.
pub const LEASE_SECS: u64 = 1;
const LEASE: &str = "1";

/// One etcd member on loopback, killed when dropped.
#[derive(Debug)]
pub struct Etcd {
    child: Option<ChildGuard>,
    data: PathBuf,
    client: String,
    peer: String,
    log: PathBuf,
}

impl Etcd {
    /// `None` (with a message) when `etcd` is not installed.
    pub fn start(dir: &Path) -> Option<Self> {
        if Command::new("etcd").arg("--version").stdout(Stdio::null()).status().is_err() {
            eprintln!("SKIPPED: etcd is not installed (apt-get install etcd-server)");
            return None;
        }
        let mut etcd = Etcd {
            child: None,
            data: dir.join("etcd-data"),
            client: format!("127.0.0.1:{}", free_port("127.0.0.1")),
            peer: format!("127.0.0.1:{}", free_port("127.0.0.1")),
            log: dir.join("etcd.log"),
        };
        etcd.restart();
        Some(etcd)
    }

    /// The URL trackers are given.
    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts it (again) on its data directory and ports, and waits until it is healthy.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::File::options().create(true).append(true).open(&self.log).expect("etcd log");
        let peer_url = format!("http://{}", self.peer);
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data.display()))
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            // Leases as short as 1 s (etcd's shortest is 1.5 election timeouts): a title
            // whose owner dies moves within about a second.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(ChildGuard(child));
        wait_for(Duration::from_secs(60), || {
            TcpStream::connect(&self.client).ok()?;
            let (code, body) = http(&self.client, "GET", "/health", &[], b"");
            (code == 200 && body.contains("true")).then_some(())
        })
        .unwrap_or_else(|| {
            panic!("etcd did not become healthy: {}", std::fs::read_to_string(&self.log).unwrap_or_default())
        });
    }

    /// Puts a raw value (etcd's JSON gateway), as a broken or hostile writer could.
    pub fn put_raw(&self, key: &str, value: &[u8]) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = format!(r#"{{"key":"{}","value":"{}"}}"#, b64.encode(key), b64.encode(value));
        let (code, answer) = http(
            &self.client,
            "POST",
            "/v3/kv/put",
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(code, 200, "{answer}");
    }
}

/// A TCP forwarder to etcd that the test can cut: the tracker behind it loses etcd while
/// the others keep it (a partition of one tracker).
#[derive(Debug)]
pub struct Proxy {
    pub addr: String,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let (stop, conns) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let (flag, kept, target) = (stop.clone(), conns.clone(), target.to_owned());
        std::thread::spawn(move || {
            while !flag.load(Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(upstream) = TcpStream::connect(&target) else { continue };
                        let _ = client.set_nonblocking(false);
                        let mut list = kept.locked();
                        for (mut from, mut to) in [(&client, &upstream), (&upstream, &client)]
                            .map(|(a, b)| (a.try_clone(), b.try_clone()))
                            .into_iter()
                            .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                        {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                            });
                        }
                        list.extend([client, upstream]);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Proxy { addr, stop, conns }
    }

    /// Closes every connection and stops accepting.
    pub fn cut(&self) {
        self.stop.store(true, Relaxed);
        for conn in self.conns.locked().drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A tracker of the fleet: where it listens (fixed, for restarts) and the process.
#[derive(Debug)]
pub struct FleetTracker {
    pub data: PathBuf,
    pub mesh: String,
    /// The viewers' listener (`/steer`).
    pub http: String,
    /// The operators' listener (`/status`, `/metrics`).
    pub admin: String,
    pub peer: String,
    pub process: Option<NodeProcess>,
    /// The forwarder it reaches etcd through, if the test cuts it off.
    pub proxy: Option<Proxy>,
}

/// etcd, trackers, an origin and appliances; every process stopped when dropped.
#[derive(Debug)]
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub etcd: Etcd,
    pub trackers: Vec<FleetTracker>,
    pub origin: NodeProcess,
    pub appliances: Vec<(PathBuf, NodeProcess)>,
    trust_file: PathBuf,
}

/// The key prefix the tests' fleets use.
pub const PREFIX: &str = "/fleet-test/";

impl Fleet {
    /// `None` when etcd is not installed. The origin's upload is capped at `origin_rate`.
    pub fn start(trackers: usize, appliances: usize, origin_rate: &str) -> Option<Self> {
        Self::start_with(trackers, appliances, origin_rate, &[])
    }

    /// As [`Fleet::start`], the trackers in `behind_proxy` reaching etcd through a [`Proxy`].
    pub fn start_with(
        trackers: usize,
        appliances: usize,
        origin_rate: &str,
        behind_proxy: &[usize],
    ) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let etcd = Etcd::start(dir.path())?;
        let origin_dir = dir.path().join("origin");
        let appliance_dirs: Vec<PathBuf> =
            (0..appliances).map(|i| dir.path().join(format!("appliance-{i}"))).collect();
        let mut trusted = vec![print_id(&origin_dir)];
        trusted.extend(appliance_dirs.iter().map(|d| print_id(d)));
        let trust_file = dir.path().join("trusted.txt");
        std::fs::write(&trust_file, format!("{}\n", trusted.join("\n"))).expect("trust file");
        let mut fleet_trackers = Vec::new();
        for t in 0..trackers {
            let ip = format!("127.0.0.{}", 2 + t);
            let data = dir.path().join(format!("tracker-{t}"));
            let out =
                fillmesh().arg("tracker").arg("--data").arg(&data).arg("--print-id").output().expect("run");
            assert!(out.status.success(), "{out:?}");
            let http_port = free_port(&ip);
            // Two TCP ports: the kernel may hand the same free port out twice.
            let admin_port =
                (0..100).map(|_| free_port(&ip)).find(|p| *p != http_port).expect("a second free port");
            fleet_trackers.push(FleetTracker {
                data,
                mesh: format!("{ip}:{}", free_port(&ip)),
                http: format!("{ip}:{http_port}"),
                admin: format!("{ip}:{admin_port}"),
                peer: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
                process: None,
                proxy: behind_proxy.contains(&t).then(|| Proxy::start(&etcd.url()["http://".len()..])),
            });
        }
        let mut tracker_flags = Vec::new();
        for t in &fleet_trackers {
            tracker_flags.extend([
                "--tracker".to_owned(),
                t.mesh.clone(),
                "--tracker-id".to_owned(),
                t.peer.clone(),
            ]);
        }
        for t in &mut fleet_trackers {
            start_tracker(t, &etcd.url(), &trust_file);
        }
        let mut origin_args: Vec<String> = [
            "--origin",
            "--listen",
            "127.0.0.10:0",
            "--http",
            "127.0.0.10:0",
            "--site",
            "origin",
            "--region",
            "core",
            "--upload-rate",
            origin_rate,
        ]
        .map(str::to_owned)
        .to_vec();
        origin_args.extend(tracker_flags.iter().cloned());
        let origin =
            NodeProcess::start(&origin_dir, &origin_args.iter().map(String::as_str).collect::<Vec<_>>());
        let mut fleet =
            Fleet { dir, etcd, trackers: fleet_trackers, origin, appliances: Vec::new(), trust_file };
        for (i, d) in appliance_dirs.into_iter().enumerate() {
            // The first tracker's pair comes with the usual flags; the others follow.
            let first = fleet.trackers[0].process.as_ref().expect("tracker 0");
            let mut args = appliance_args(i, first);
            args.extend(tracker_flags.iter().skip(4).cloned());
            let node = NodeProcess::start(&d, &args.iter().map(String::as_str).collect::<Vec<_>>());
            fleet.appliances.push((d, node));
        }
        Some(fleet)
    }

    /// Starts tracker `t` again on its data directory and addresses.
    pub fn start_tracker(&mut self, t: usize) {
        start_tracker(&mut self.trackers[t], &self.etcd.url(), &self.trust_file);
    }

    /// SIGKILL to tracker `t`.
    pub fn kill_tracker(&mut self, t: usize) {
        if let Some(mut p) = self.trackers[t].process.take() {
            p.child.kill();
        }
    }

    /// Tracker `t`'s status, if it answers.
    pub fn status(&self, t: usize) -> Option<Value> {
        let tracker = &self.trackers[t];
        tracker.process.as_ref()?;
        status_at(&tracker.admin)
    }

    /// How many trackers tracker `t` lists as live.
    pub fn live_trackers(&self, t: usize) -> Option<usize> {
        Some(self.status(t)?["trackers"].as_array()?.iter().filter(|x| x["live"] == true).count())
    }

    /// The title's entry in tracker `t`'s status.
    pub fn title_status(&self, t: usize, title: &str) -> Option<Value> {
        title_in(&self.status(t)?, title)
    }

    /// The index of the tracker that tracker `t` says owns `title`.
    pub fn owner(&self, t: usize, title: &str) -> Option<usize> {
        let owner = self.title_status(t, title)?["owner"].as_str()?.to_owned();
        self.trackers.iter().position(|tr| tr.peer == owner)
    }

    /// `GET /steer` of `title` at tracker `t` as `client_ip`: the status code and the answer.
    pub fn steer(&self, t: usize, title: &str, client_ip: &str) -> Option<(u16, Value)> {
        let tracker = &self.trackers[t];
        TcpStream::connect(&tracker.http).ok()?;
        let path = format!("/steer?title={title}&client_ip={client_ip}");
        let (code, body) = http(&tracker.http, "GET", &path, &[], b"");
        Some((code, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    /// Seeds `file` through the origin; returns its title id.
    pub fn seed(&self, file: &Path) -> String {
        seed_through(&self.origin, file)
    }

    /// How many appliances logged `title` complete.
    pub fn completed(&self, title: &str) -> usize {
        self.appliances.iter().filter(|(_, a)| completed(&a.log(), title)).count()
    }

    /// Waits (at most `limit`) until every appliance has `title` whole, then checks each
    /// one's bytes hash to the title id.
    pub fn wait_filled(&self, title: &str, limit: Duration) {
        wait_for(limit, || (self.completed(title) == self.appliances.len()).then_some(())).unwrap_or_else(
            || {
                let logs: Vec<String> =
                    self.trackers.iter().filter_map(|t| t.process.as_ref()).map(|p| p.log()).collect();
                panic!(
                    "{} of {} appliances completed {title} in {limit:?}; trackers' logs:\n{}",
                    self.completed(title),
                    self.appliances.len(),
                    logs.join("\n----\n")
                )
            },
        );
        for (data, _) in &self.appliances {
            let file = data.join("data").join(format!("{title}.data"));
            assert_eq!(crate::file_id(&file), title, "{}", data.display());
        }
    }

    /// Bytes the origin served to the mesh (its own count).
    pub fn origin_served(&self) -> f64 {
        let (code, page) =
            http(self.origin.http.as_deref().expect("origin http"), "GET", "/metrics", &[], b"");
        assert_eq!(code, 200);
        crate::metric(&page, "fillmesh_mesh_served_bytes_total").unwrap_or(0.0)
    }
}

/// Starts `tracker` in the fleet of the etcd at `url`, with a lease of [`LEASE_SECS`].
fn start_tracker(tracker: &mut FleetTracker, url: &str, trust_file: &Path) {
    let trust = trust_file.display().to_string();
    let url = match &tracker.proxy {
        Some(proxy) => format!("http://{}", proxy.addr),
        None => url.to_owned(),
    };
    let url = url.as_str();
    let args = [
        "--listen",
        &tracker.mesh,
        "--http",
        &tracker.http,
        "--admin-http",
        &tracker.admin,
        "--trust-file",
        &trust,
        "--etcd",
        url,
        "--etcd-prefix",
        PREFIX,
        "--etcd-lease-secs",
        LEASE,
    ];
    let process = NodeProcess::start_tracker(&tracker.data, &args);
    assert_eq!(process.peer, tracker.peer);
    tracker.process = Some(process);
}

/// Whether an appliance's log says `title` is complete (the fill's span names the title).
pub fn completed(log: &str, title: &str) -> bool {
    log.lines().any(|l| l.contains(title) && l.contains("title complete"))
}
