//! The testbed's network: one router namespace and one namespace per node, each node joined
//! to the router by a veth pair, rates shaped with `tbf` on both ends of each pair (the
//! node's end for its upload, the router's end for its download), every forwarded packet
//! sent to the router's NFQUEUE for the delay element.
//!
//! Names: every namespace is `fmtb-<pid>-<role>`, so a run's leftovers are recognisable; links
//! are created directly inside the namespaces (`ip -n`), so nothing is added to the host's
//! own namespace but the namespace names themselves. [`Network`] removes everything when
//! dropped (processes still inside first, then the namespaces, which takes the links with
//! them); [`sweep_leftovers`] removes what a crashed run left.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The prefix of every namespace a testbed creates.
pub const PREFIX: &str = "fmtb-";
/// The router's own address (the tracker listens there), on its loopback.
pub const ROUTER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
/// The NFQUEUE number the router's rule sends forwarded packets to (the delay element reads
/// it).
pub const QUEUE_NUM: u16 = 0;
/// How long one `ip`, `tc` or `iptables` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// The address of testbed node `k` (0 = origin, 1.. = appliances); `k` below 250.
pub fn node_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, k as u8, 2)
}

/// The node an address belongs to, if it is a testbed node's.
pub(super) fn node_of(addr: [u8; 4]) -> Option<usize> {
    (addr[0] == 10 && addr[1] == 200 && addr[3] == 2).then_some(addr[2] as usize)
}

/// Errors building or removing the network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("running `{cmd}`")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error("`{cmd}` did not finish in {secs} s")]
    Timeout { cmd: String, secs: u64 },
}

/// Runs a command to completion (bounded by [`COMMAND_TIMEOUT`]) and returns its stdout.
pub fn run(args: &[&str]) -> Result<String, NetError> {
    let cmd = args.join(" ");
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetError::Spawn { cmd: cmd.clone(), source })?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NetError::Timeout { cmd, secs: COMMAND_TIMEOUT.as_secs() });
            }
            Err(source) => return Err(NetError::Spawn { cmd, source }),
        }
    };
    let read = |r: Option<&mut dyn std::io::Read>| {
        let mut s = String::new();
        if let Some(r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    };
    let stdout = read(child.stdout.as_mut().map(|r| r as &mut dyn std::io::Read));
    let stderr = read(child.stderr.as_mut().map(|r| r as &mut dyn std::io::Read));
    if !status.success() {
        return Err(NetError::Failed { cmd, stderr: stderr.trim().to_owned() });
    }
    Ok(stdout)
}

/// One node's link to the router: rates in bytes per second (`None`: not shaped), and how
/// long a full queue of the shaped ends takes to drain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    pub upload_bps: Option<f64>,
    pub download_bps: Option<f64>,
    pub queue: Duration,
}

/// The namespaces of one run; removed when dropped.
#[derive(Debug)]
pub struct Network {
    router: String,
    nodes: Vec<String>,
}

impl Network {
    /// Builds the router and one namespace per link: node `k` gets `link[k]` and the address
    /// [`node_addr`]`(k)`. At most 250 nodes.
    pub fn create(links: &[Link]) -> Result<Self, NetError> {
        let run_id = format!("{PREFIX}{}", std::process::id());
        let mut net = Self { router: format!("{run_id}-r"), nodes: Vec::new() };
        run(&["ip", "netns", "add", &net.router])?;
        let r = net.router.clone();
        run(&["ip", "-n", &r, "link", "set", "lo", "up"])?;
        run(&["ip", "-n", &r, "addr", "add", &format!("{ROUTER_ADDR}/32"), "dev", "lo"])?;
        run(&["ip", "netns", "exec", &r, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // Every packet routed between two nodes goes through the delay element. Without a
        // listener the kernel drops them (no bypass: a missing element must not go unseen).
        run(&[
            "ip",
            "netns",
            "exec",
            &r,
            "iptables",
            "-A",
            "FORWARD",
            "-j",
            "NFQUEUE",
            "--queue-num",
            &QUEUE_NUM.to_string(),
        ])?;
        for (k, link) in links.iter().enumerate() {
            let ns = format!("{run_id}-n{k}");
            run(&["ip", "netns", "add", &ns])?;
            net.nodes.push(ns.clone());
            let dev = format!("n{k}");
            run(&[
                "ip", "-n", &r, "link", "add", &dev, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            let gw = Ipv4Addr::new(10, 200, k as u8, 1);
            run(&["ip", "-n", &r, "addr", "add", &format!("{gw}/24"), "dev", &dev])?;
            run(&["ip", "-n", &r, "link", "set", &dev, "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            run(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", node_addr(k)), "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "route", "add", "default", "via", &gw.to_string()])?;
            if let Some(bps) = link.upload_bps {
                shape(&ns, "eth0", bps, link.queue)?;
            }
            if let Some(bps) = link.download_bps {
                shape(&r, &dev, bps, link.queue)?;
            }
        }
        Ok(net)
    }

    /// The router's namespace name (the tracker and the delay element run there).
    pub fn router(&self) -> &str {
        &self.router
    }

    /// Node `k`'s namespace name.
    pub fn node(&self, k: usize) -> &str {
        &self.nodes[k]
    }

    /// What each node's shaped links carried and dropped: node `k`'s upload (its own end)
    /// and download (the router's end), in node order.
    pub fn link_stats(&self) -> Vec<LinkStats> {
        (0..self.nodes.len())
            .map(|k| LinkStats {
                upload: qdisc_stats(&self.nodes[k], "eth0"),
                download: qdisc_stats(&self.router, &format!("n{k}")),
            })
            .collect()
    }

    /// The handle of a namespace, for `setns`.
    pub fn handle(ns: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(ns)
    }

    /// Kills what still runs inside and removes every namespace (and so every link).
    pub fn remove(&mut self) {
        let all: Vec<String> = self.nodes.drain(..).chain(std::iter::once(self.router.clone())).collect();
        for ns in &all {
            kill_inside(ns);
        }
        for ns in &all {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        self.router.clear();
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if !self.router.is_empty() {
            self.remove();
        }
    }
}

/// Shapes `dev`'s egress in `ns` to `bps` bytes per second: a token bucket with a 32 KiB
/// burst and a drop-tail queue that drains in `queue` (at the rate).
fn shape(ns: &str, dev: &str, bps: f64, queue: Duration) -> Result<(), NetError> {
    let latency = format!("{}ms", queue.as_millis().max(1));
    let bits = format!("{}bit", (bps * 8.0).round() as u64);
    run(&[
        "tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &bits, "burst", "32kb",
        "latency", &latency,
    ])?;
    Ok(())
}

/// One shaped direction of a link: bytes and packets sent, packets dropped (queue full).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct QdiscStats {
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
}

/// Both directions of a node's link.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LinkStats {
    pub upload: QdiscStats,
    pub download: QdiscStats,
}

/// The root qdisc's counters of `dev` in `ns` (zeros when it cannot be read).
fn qdisc_stats(ns: &str, dev: &str) -> QdiscStats {
    let Ok(out) = run(&["tc", "-n", ns, "-s", "-j", "qdisc", "show", "dev", dev]) else {
        return QdiscStats::default();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) else { return QdiscStats::default() };
    let Some(root) = v.as_array().and_then(|a| a.iter().find(|q| q["root"] == true)) else {
        return QdiscStats::default();
    };
    let n = |k: &str| root[k].as_u64().unwrap_or(0);
    QdiscStats { bytes: n("bytes"), packets: n("packets"), drops: n("drops") }
}

/// SIGKILLs every process in namespace `ns` and waits (bounded) for them to go.
fn kill_inside(ns: &str) {
    let pids = |ns: &str| -> Vec<i32> {
        run(&["ip", "netns", "pids", ns])
            .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    };
    let own = std::process::id() as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<i32> = pids(ns).into_iter().filter(|&p| p != own).collect();
        if left.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in left {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the namespaces (and whatever runs in them) of testbed runs whose process is gone;
/// returns their names.
pub fn sweep_leftovers() -> Result<Vec<String>, NetError> {
    let list = run(&["ip", "netns", "list"])?;
    let mut removed = Vec::new();
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| {
            p == std::process::id()
                || std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "fillmesh")
        });
        if alive {
            continue;
        }
        kill_inside(name);
        run(&["ip", "netns", "del", name])?;
        removed.push(name.to_owned());
    }
    Ok(removed)
}
