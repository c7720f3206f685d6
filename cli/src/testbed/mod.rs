//! The testbed: the simulator's scenario on the real binaries, each node in its own network
//! namespace behind shaped links, with the path latencies of the scenario added by a delay
//! element of our own ([`delay`]: this kernel has no `netem`).
//!
//! - [`netns`]: the namespaces, veth pairs, `tbf` rates and the router's NFQUEUE rule; their
//!   removal, also of a crashed run's leftovers.
//! - [`delay`]: the NFQUEUE element that releases each packet after its path's delay.
//! - [`report`]: the side-by-side figures of the simulator and the testbed.
//!
//! The `fillmesh testbed` command (in the `cli` folder) puts them together.

pub mod delay;
pub mod netns;
pub mod report;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use fillmesh_sims::Scenario;

/// Linux capability bits the testbed needs: CAP_NET_ADMIN (links, qdiscs, iptables, NFQUEUE)
/// and CAP_SYS_ADMIN (creating and entering network namespaces).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// Why this process cannot build a testbed, if it cannot: it must run as root with
/// CAP_NET_ADMIN and CAP_SYS_ADMIN in effect.
pub fn privilege_problem() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("the testbed needs root (network namespaces, links, qdiscs, iptables)".into());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    for (bit, name) in [(CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")] {
        if eff & (1 << bit) == 0 {
            return Some(format!("the testbed needs {name}, which this process does not have"));
        }
    }
    None
}

/// The commands the testbed runs that are not on this machine (with the Debian package that
/// brings each).
pub fn missing_tools() -> Vec<&'static str> {
    [("ip", "iproute2"), ("tc", "iproute2"), ("iptables", "iptables")]
        .into_iter()
        .filter(|(cmd, _)| netns::run(&[cmd, "-V"]).is_err())
        .map(|(_, package)| package)
        .collect()
}

/// The most nodes (origin included) one testbed holds.
pub const MAX_NODES: usize = 250;

/// What of a scenario the testbed cannot honour, one line per field, naming it. Everything
/// else is honoured: appliances, regions, sites, title and chunk size, the appliance classes'
/// upload and download, the origin's upload, the four latencies, the seed. `publish_at_s` is
/// where both sides count completion from.
pub fn refusals(sc: &Scenario) -> Vec<String> {
    let d = Scenario::default();
    let tracker = fillmesh_tracker::core::Config::default();
    let mut out = Vec::new();
    if sc.appliances + 1 > MAX_NODES {
        out.push(format!("appliances = {}: the testbed holds at most {}", sc.appliances, MAX_NODES - 1));
    }
    if sc.site_uplink_bps.is_some() {
        out.push("site_uplink: shared site uplinks are not built (each node has its own link)".into());
    }
    if sc.region_uplink_bps.is_some() {
        out.push("region_uplink: shared region uplinks are not built".into());
    }
    if !sc.failures.is_empty() {
        out.push("events of kind \"fail\": the testbed does not stop appliances mid-fill".into());
    }
    if !sc.crowds.is_empty() {
        out.push("events of kind \"flash_crowd\": the testbed starts no players".into());
    }
    if sc.max_inflight != tracker.max_inflight_per_appliance {
        out.push(format!(
            "max_inflight = {}: the tracker's fetches in flight per appliance are {}",
            sc.max_inflight, tracker.max_inflight_per_appliance
        ));
    }
    for (name, differs) in [
        ("replan_s", sc.replan_s != d.replan_s),
        ("wake_per_completion", sc.wake_per_completion != d.wake_per_completion),
        ("plan_batch", sc.plan_batch != d.plan_batch),
        ("origin_slots", sc.origin_slots != d.origin_slots),
    ] {
        if differs {
            out.push(format!(
                "{name}: a knob of the simulator's model of the node; the real node has its own"
            ));
        }
    }
    for c in &sc.classes {
        if c.upload_bps <= 0.0 {
            out.push("an appliance class with no upload: a link needs a rate".into());
        }
    }
    out
}

/// Runs `f` on a new thread inside the network namespace whose handle is `netns` (only that
/// thread enters it). The flag asks `f` to stop.
pub fn spawn_in_netns<T: Send + 'static>(
    netns: &Path,
    name: &str,
    f: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static,
) -> std::io::Result<(Arc<AtomicBool>, JoinHandle<std::io::Result<T>>)> {
    let ns = std::fs::File::open(netns)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        Ok(f(flag))
    })?;
    Ok((stop, handle))
}

/// Sets a stop flag when dropped.
#[derive(Debug)]
pub struct StopOnDrop(pub Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_fields() {
        assert!(refusals(&Scenario::default()).is_empty());
        let mut sc =
            Scenario { region_uplink_bps: Some(1e9), plan_batch: 3, appliances: 400, ..Scenario::default() };
        sc.failures.push(fillmesh_sims::scenario::Failure {
            at_s: 1.0,
            ids: vec![],
            count: 1,
            recover_after_s: None,
        });
        let r = refusals(&sc).join("\n");
        for name in ["region_uplink", "plan_batch", "\"fail\"", "appliances = 400"] {
            assert!(r.contains(name), "{name} missing from {r}");
        }
        assert!(!r.contains("site_uplink"), "{r}");
    }
}
