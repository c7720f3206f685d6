//! A whole mesh as real processes on 127.0.0.x: a tracker, an origin, N appliances (appliance
//! i in site `s{i/2}`, region `r{i/4}`, on 127.0.0.(11+i), serving clients in
//! 127.0.(11+i/2).0/24), and one seeded title.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::{file_id, fillmesh, http, print_id, test_bytes, wait_for, NodeProcess};

/// A running mesh; every process is stopped when it is dropped.
#[derive(Debug)]
pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub tracker: NodeProcess,
    pub tracker_args: Vec<String>,
    pub origin: NodeProcess,
    pub appliances: Vec<(PathBuf, NodeProcess)>,
    /// The seeded title's id and its bytes' file.
    pub title: String,
    pub file: PathBuf,
    /// Identities created for nodes started later (trusted by the tracker from the start).
    pub spare: Vec<PathBuf>,
}

/// `fillmesh seed FILE` through `origin`'s ingest API; the title id it prints.
pub fn seed_through(origin: &NodeProcess, file: &Path) -> String {
    let url = format!("http://{}", origin.http.as_deref().expect("origin http"));
    let out = fillmesh().arg("seed").arg(file).args(["--origin", &url]).output().expect("run seed");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The flags of appliance `i`.
pub fn appliance_args(i: usize, tracker: &NodeProcess) -> Vec<String> {
    vec![
        "--listen".into(),
        format!("127.0.0.{}:0", 11 + i),
        "--tracker".into(),
        tracker.mesh.clone(),
        "--tracker-id".into(),
        tracker.peer.clone(),
        "--site".into(),
        format!("s{}", i / 2),
        "--region".into(),
        format!("r{}", i / 4),
        "--serve-prefix".into(),
        format!("127.0.{}.0/24", 11 + i / 2),
    ]
}

/// Starts the origin (mesh and ingest HTTP on 127.0.0.10) with its data in `data`, under
/// `tracker`, with `extra` flags.
pub fn start_origin(data: &Path, tracker: &NodeProcess, extra: &[&str]) -> NodeProcess {
    let args: Vec<&str> = [
        "--origin",
        "--listen",
        "127.0.0.10:0",
        "--http",
        "127.0.0.10:0",
        "--tracker",
        &tracker.mesh,
        "--tracker-id",
        &tracker.peer,
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect();
    NodeProcess::start(data, &args)
}

/// Starts appliance `i` with its data in `data`.
pub fn start_appliance(data: &Path, i: usize, tracker: &NodeProcess) -> NodeProcess {
    start_appliance_with(data, i, tracker, &[], &[])
}

/// Starts appliance `i` with extra flags and environment.
pub fn start_appliance_with(
    data: &Path,
    i: usize,
    tracker: &NodeProcess,
    extra: &[&str],
    env: &[(&str, &str)],
) -> NodeProcess {
    let mut args = appliance_args(i, tracker);
    args.extend(extra.iter().map(|s| s.to_string()));
    NodeProcess::start_env(data, &args.iter().map(String::as_str).collect::<Vec<_>>(), env)
}

/// What a mesh seeds.
#[derive(Debug, Clone)]
pub enum Title {
    /// `len` deterministic bytes named `feature.mp4`.
    Sample(usize),
    /// This file, as it is.
    File(PathBuf),
}

impl Mesh {
    /// Starts the tracker (`policy`), the origin (upload capped at `origin_rate`) and
    /// `appliances` appliances, and seeds a title of `len` bytes named `feature.mp4`.
    pub fn start(policy: &str, origin_rate: &str, appliances: usize, len: usize) -> Self {
        Self::start_with_spares(policy, origin_rate, appliances, len, 0)
    }

    /// As [`Mesh::start`], with `spares` extra identities the tracker trusts.
    pub fn start_with_spares(
        policy: &str,
        origin_rate: &str,
        appliances: usize,
        len: usize,
        spares: usize,
    ) -> Self {
        Self::start_full(policy, origin_rate, appliances, Title::Sample(len), spares, &[])
    }

    /// As [`Mesh::start_with_spares`], seeding `title`, with `node_args` given to the origin
    /// and to every appliance.
    pub fn start_full(
        policy: &str,
        origin_rate: &str,
        appliances: usize,
        title: Title,
        spares: usize,
        node_args: &[&str],
    ) -> Self {
        Self::start_tracked(policy, origin_rate, appliances, title, spares, node_args, &[])
    }

    /// As [`Mesh::start_full`], with `tracker_extra` given to the tracker.
    pub fn start_tracked(
        policy: &str,
        origin_rate: &str,
        appliances: usize,
        title: Title,
        spares: usize,
        node_args: &[&str],
        tracker_extra: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let origin_dir = dir.path().join("origin");
        let appliance_dirs: Vec<PathBuf> =
            (0..appliances).map(|i| dir.path().join(format!("appliance-{i}"))).collect();
        let spare: Vec<PathBuf> = (0..spares).map(|i| dir.path().join(format!("spare-{i}"))).collect();
        let mut trusted = vec![print_id(&origin_dir)];
        trusted.extend(appliance_dirs.iter().chain(&spare).map(|d| print_id(d)));
        let trust_file = dir.path().join("trusted.txt");
        std::fs::write(&trust_file, format!("# the mesh\n{}\n", trusted.join("\n"))).expect("trust file");

        let tracker_args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--http".into(),
            "127.0.0.1:0".into(),
            "--trust-file".into(),
            trust_file.display().to_string(),
            "--policy".into(),
            policy.into(),
        ]
        .into_iter()
        .chain(tracker_extra.iter().map(|a| a.to_string()))
        .collect();
        let tracker = NodeProcess::start_tracker(
            &dir.path().join("tracker"),
            &tracker_args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let extra: Vec<&str> = ["--site", "origin", "--region", "core", "--upload-rate", origin_rate]
            .into_iter()
            .chain(node_args.iter().copied())
            .collect();
        let origin = start_origin(&origin_dir, &tracker, &extra);
        let appliances = appliance_dirs
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                // Each appliance with its operator listener (`/metrics`), unless the test gives
                // its own.
                let own = format!("127.0.0.{}:0", 11 + i);
                let mut args = node_args.to_vec();
                if !node_args.contains(&"--http") {
                    args.extend(["--http", &own]);
                }
                (d.clone(), start_appliance_with(&d, i, &tracker, &args, &[]))
            })
            .collect();

        let file = match title {
            Title::Sample(len) => {
                let file = dir.path().join("feature.mp4");
                std::fs::write(&file, test_bytes(len, 42)).expect("title file");
                file
            }
            Title::File(file) => file,
        };
        let title = seed_through(&origin, &file);
        Mesh { dir, tracker, tracker_args, origin, appliances, title, file, spare }
    }

    /// Waits until every appliance holds the whole title; returns the title's status entry.
    pub fn wait_complete(&self, limit: Duration) -> Value {
        self.wait_complete_count(self.appliances.len(), limit)
    }

    /// Waits until each of this mesh's own appliances (not spares run in the test, which
    /// `complete_appliances` counts too) holds as many bytes as the title has: in a mesh of
    /// one title, the whole title.
    pub fn wait_own_complete(&self, limit: Duration) {
        let size = std::fs::metadata(&self.file).expect("title file").len();
        let peers: Vec<&str> = self.appliances.iter().map(|(_, p)| p.peer.as_str()).collect();
        wait_for(limit, || {
            let s = status(&self.tracker)?;
            let all = s["appliances"].as_array()?;
            peers
                .iter()
                .all(|peer| {
                    all.iter().any(|a| a["peer_id"] == *peer && a["held_bytes"].as_u64() >= Some(size))
                })
                .then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "the mesh's appliances did not complete in {limit:?}: {:?}\ntracker log:\n{}",
                status(&self.tracker),
                self.tracker.log()
            )
        })
    }

    /// Waits until `count` appliances hold the whole title.
    pub fn wait_complete_count(&self, count: usize, limit: Duration) -> Value {
        wait_for(limit, || {
            let t = title_status(&self.tracker, &self.title)?;
            (t["complete_appliances"].as_u64()? >= count as u64).then_some(t)
        })
        .unwrap_or_else(|| {
            panic!(
                "the fill did not complete in {limit:?}: {:?}\ntracker log:\n{}",
                title_status(&self.tracker, &self.title),
                self.tracker.log()
            )
        })
    }

    /// Every appliance's bytes hash to the title id.
    pub fn assert_bytes(&self) {
        for (data, _) in &self.appliances {
            let file = data.join("data").join(format!("{}.data", self.title));
            assert_eq!(file_id(&file), self.title, "{}", data.display());
        }
    }

    /// Seeds another file through the origin; returns its title id.
    pub fn seed(&self, file: &Path) -> String {
        seed_through(&self.origin, file)
    }

    /// One appliance's entry in the tracker's status.
    pub fn appliance_status(&self, peer: &str) -> Option<Value> {
        status(&self.tracker)?["appliances"].as_array()?.iter().find(|a| a["peer_id"] == peer).cloned()
    }

    /// Runs `fillmesh play` of the mesh's title as a client at `client_ip`, writing `out`.
    pub fn play(&self, client_ip: &str, out: &Path, extra: &[&str]) -> std::process::Output {
        self.play_command(client_ip, out).args(extra).output().expect("run fillmesh play")
    }

    /// `fillmesh play` of the mesh's title as a client at `client_ip`, writing `out`, not
    /// yet started (for a player to be spawned, or run with its own environment).
    pub fn play_command(&self, client_ip: &str, out: &Path) -> std::process::Command {
        self.play_title_command(&self.title, client_ip, out)
    }

    /// The same for another title seeded into the mesh.
    pub fn play_title_command(&self, title: &str, client_ip: &str, out: &Path) -> std::process::Command {
        let mut cmd = fillmesh();
        cmd.args(["play", title, "--tracker-http", &self.tracker_url(), "--client-ip", client_ip, "--out"])
            .arg(out)
            // Steering answers are kept in the mesh's directory, never in the home directory
            // (a test that wants its own passes --steer-cache).
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"));
        cmd
    }

    /// The configuration of an in-process appliance with spare identity `n`, in site `liars`
    /// of region r0, listening on `listen`, serving `prefix`, under this mesh's tracker.
    pub fn spare_node(&self, n: usize, listen: &str, prefix: &str) -> fillmesh_node::daemon::NodeConfig {
        fillmesh_node::daemon::NodeConfig {
            data: self.spare[n].clone(),
            listen: listen.parse().expect("listen address"),
            origin: false,
            http: None,
            trust: Vec::new(),
            upload_rate: None,
            serve: Default::default(),
            players: Default::default(),
            transport: Default::default(),
            player_cert: None,
            trackers: vec![(
                self.tracker.mesh.parse().expect("tracker address"),
                self.tracker.peer.parse().expect("tracker id"),
            )],
            site: "liars".into(),
            region: "r0".into(),
            prefixes: vec![prefix.parse().expect("prefix")],
            disk_bytes: 1 << 40,
            scrub: None,
            plan_stale_after: std::time::Duration::from_secs(60),
            stale_origin_rate: 10_000_000,
            fill_upload_rate: None,
            fill_download_rate: None,
            serve_rate: None,
            fill_window: Default::default(),
            drain: std::time::Duration::from_secs(30),
        }
    }

    /// The tracker's operator URL (`--admin-http`: `/status`, `/metrics`, the fleet page).
    pub fn tracker_admin_url(&self) -> String {
        format!("http://{}", self.tracker.admin.as_deref().expect("tracker admin"))
    }

    /// The tracker's viewer URL (`--http`: `/steer`, `/watch`).
    pub fn tracker_url(&self) -> String {
        format!("http://{}", self.tracker.http.as_deref().expect("tracker http"))
    }

    /// The steering answer for `title`, for the address the tracker sees.
    pub fn steer_title(&self, title: &str) -> Value {
        let path = format!("/steer?title={title}");
        let (code, body) = http(self.tracker.http.as_deref().expect("tracker http"), "GET", &path, &[], b"");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("steering JSON")
    }

    /// A playback token steering signs for `title`, as the start of a path: `/p/<token>`.
    pub fn token_path(&self, title: &str) -> String {
        let answer = self.steer_title(title);
        let token = answer["token"].as_str().unwrap_or_else(|| panic!("no token in {answer}"));
        format!("/p/{token}")
    }

    /// The steering answer for a client address.
    pub fn steer(&self, client_ip: &str) -> Value {
        let path = format!("/steer?title={}&client_ip={client_ip}", self.title);
        let (code, body) = http(self.tracker.http.as_deref().expect("tracker http"), "GET", &path, &[], b"");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("steering JSON")
    }
}

/// The tracker's status JSON (from its operator listener).
pub fn status(tracker: &NodeProcess) -> Option<Value> {
    status_at(tracker.admin.as_deref()?)
}

/// The `/status` of the tracker whose operator listener (`--admin-http`) is at `admin_addr`,
/// if it answers.
pub fn status_at(admin_addr: &str) -> Option<Value> {
    std::net::TcpStream::connect(admin_addr).ok()?;
    let (code, body) = http(admin_addr, "GET", "/status", &[], b"");
    (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

/// One title's entry in a tracker's status.
pub fn title_in(status: &Value, title: &str) -> Option<Value> {
    status["titles"].as_array()?.iter().find(|t| t["id"] == title).cloned()
}

/// One title's entry in the tracker's status.
pub fn title_status(tracker: &NodeProcess, title: &str) -> Option<Value> {
    title_in(&status(tracker)?, title)
}
