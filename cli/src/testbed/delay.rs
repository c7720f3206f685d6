//! The delay and loss element: `netem` is missing from this kernel, so the router namespace
//! sends every forwarded packet to an NFQUEUE and this element, a thread of the testbed
//! process inside that namespace, gives each packet its ACCEPT verdict once the one-way delay
//! of its path has passed (DROP for a lost packet). Verdicts go out of order across paths.
//!
//! Paths are looked up from the IPv4 header: node `k` of the testbed has the address
//! `10.200.k.2` (see [`netns::node_addr`]), and a table of one-way delays by (source,
//! destination) node says how long to hold a packet. Packets of one path keep their order:
//! each distinct delay has its own FIFO lane, and packets of a lane are all held for the same
//! time.

use std::collections::VecDeque;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::netns::{self, node_of, QUEUE_NUM};

/// Packets the kernel keeps waiting for the element before it drops new ones.
const KERNEL_QUEUE_LEN: u32 = 1 << 16;
/// Bytes of each packet copied to the element: the IPv4 header is all it reads.
const COPY_RANGE: u16 = 40;
/// Packets read per pass before releasing the ones due.
const BATCH: usize = 512;
/// How long the element sleeps when idle at most (the release granularity).
const IDLE_SLEEP: Duration = Duration::from_micros(50);

/// Errors of the delay element.
#[derive(Debug, thiserror::Error)]
pub enum DelayError {
    #[error("entering network namespace {ns}")]
    Setns { ns: String, source: std::io::Error },
    #[error("NFQUEUE {what} (is the `nfnetlink_queue` module available?)")]
    Queue { what: &'static str, source: std::io::Error },
    #[error("the delay element's thread panicked")]
    Panicked,
}

/// One-way delays between testbed nodes and the loss probability of every forwarded packet.
#[derive(Debug, Clone)]
pub struct PathTable {
    nodes: usize,
    /// Lane index by (source, destination), row-major.
    lane_of: Vec<u8>,
    /// The one-way delay of each lane, distinct values.
    lanes: Vec<Duration>,
    loss: f64,
}

impl PathTable {
    /// `delay(src, dst)` for every pair of `nodes` nodes; `loss` in [0, 1).
    pub fn new(nodes: usize, loss: f64, delay: impl Fn(usize, usize) -> Duration) -> Self {
        let mut lanes: Vec<Duration> = Vec::new();
        let mut lane_of = Vec::with_capacity(nodes * nodes);
        for s in 0..nodes {
            for d in 0..nodes {
                let v = delay(s, d);
                let i = match lanes.iter().position(|&l| l == v) {
                    Some(i) => i,
                    None => {
                        lanes.push(v);
                        lanes.len() - 1
                    }
                };
                lane_of.push(i as u8);
            }
        }
        Self { nodes, lane_of, lanes, loss: loss.clamp(0.0, 0.99) }
    }

    /// The lane of a packet from its IPv4 header, `None` for a packet between addresses the
    /// table does not know (passed at once).
    fn lane(&self, packet: &[u8]) -> Option<usize> {
        if packet.len() < 20 || packet[0] >> 4 != 4 {
            return None;
        }
        let src = node_of([packet[12], packet[13], packet[14], packet[15]])?;
        let dst = node_of([packet[16], packet[17], packet[18], packet[19]])?;
        (src < self.nodes && dst < self.nodes).then(|| self.lane_of[src * self.nodes + dst] as usize)
    }

    /// The one-way delay from node `src` to node `dst` (the tests check the table with it).
    #[cfg(test)]
    pub fn delay(&self, src: usize, dst: usize) -> Duration {
        self.lanes[self.lane_of[src * self.nodes + dst] as usize]
    }
}

/// What the element did, and how late it released packets after their due time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DelayStats {
    pub packets: u64,
    /// Bytes of the packets (their original length: a GSO packet counts whole).
    pub bytes: u64,
    pub dropped: u64,
    /// Packets passed at once (not between two testbed nodes, or a zero delay).
    pub passed: u64,
    pub seconds: f64,
    /// Most packets held at once.
    pub max_held: usize,
    /// Whether the element ran at a real-time priority (SCHED_FIFO), so the processes it
    /// carries do not delay its releases.
    pub realtime: bool,
    /// Release lateness (the jitter the element adds), microseconds.
    pub late_p50_us: f64,
    pub late_p99_us: f64,
    pub late_max_us: f64,
}

/// Lateness histogram: 10 µs buckets up to 20 ms, then one overflow bucket.
struct Lateness {
    buckets: Vec<u64>,
    max: Duration,
}

impl Lateness {
    const STEP_US: u64 = 10;
    const BUCKETS: usize = 2000;

    fn new() -> Self {
        Self { buckets: vec![0; Self::BUCKETS + 1], max: Duration::ZERO }
    }

    fn record(&mut self, late: Duration) {
        let i = ((late.as_micros() as u64) / Self::STEP_US).min(Self::BUCKETS as u64) as usize;
        self.buckets[i] += 1;
        self.max = self.max.max(late);
    }

    fn quantile(&self, q: f64) -> f64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return ((i as u64 + 1) * Self::STEP_US) as f64;
            }
        }
        self.max.as_micros() as f64
    }
}

/// A running element; stopped (every held packet released) when dropped or by [`stop`].
///
/// [`stop`]: DelayElement::stop
#[derive(Debug)]
pub struct DelayElement {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<DelayStats, DelayError>>>,
}

impl DelayElement {
    /// Starts the element in the network namespace whose handle is `netns` (a file under
    /// `/run/netns`); returns once the queue is bound, so packets are delayed from then on.
    pub fn start(netns: &Path, table: PathTable, seed: u64) -> Result<Self, DelayError> {
        let ns = File::open(netns)
            .map_err(|source| DelayError::Setns { ns: netns.display().to_string(), source })?;
        let name = netns.display().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("delay-element".into())
            .spawn(move || {
                // setns moves only this thread: the queue's netlink socket is the router's.
                if let Err(e) = nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET) {
                    let e = DelayError::Setns { ns: name, source: std::io::Error::from(e) };
                    let _ = ready_tx.send(Err(e.to_string()));
                    return Err(e);
                }
                let queue = match open_queue() {
                    Ok(q) => q,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return Err(e);
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let realtime = make_realtime();
                let mut stats = run(queue, &table, &flag, seed)?;
                stats.realtime = realtime;
                Ok(stats)
            })
            .map_err(|source| DelayError::Queue { what: "starting its thread", source })?;
        let mut element = Self { stop, thread: Some(thread) };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(element),
            Ok(Err(_)) | Err(_) => Err(element.finish().err().unwrap_or(DelayError::Queue {
                what: "binding",
                source: std::io::Error::other("the element did not start in 10 s"),
            })),
        }
    }

    /// Stops the element (held packets are released at once) and returns what it did.
    pub fn stop(mut self) -> Result<DelayStats, DelayError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<DelayStats, DelayError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| DelayError::Panicked)?,
            None => Ok(DelayStats::default()),
        }
    }
}

impl Drop for DelayElement {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Moves the calling thread to SCHED_FIFO (with `chrt`): the element wakes every 50 µs at
/// most and uses little CPU, but under a busy CPU an ordinary thread would release packets
/// milliseconds late. False when that was not possible.
fn make_realtime() -> bool {
    let Ok(link) = std::fs::read_link("/proc/thread-self") else { return false };
    let Some(tid) = link.file_name().and_then(|t| t.to_str()).map(str::to_owned) else { return false };
    netns::run(&["chrt", "-f", "-p", "20", &tid]).is_ok()
}

fn open_queue() -> Result<nfq::Queue, DelayError> {
    let q = |what| move |source| DelayError::Queue { what, source };
    let mut queue = nfq::Queue::open().map_err(q("opening"))?;
    queue.bind(QUEUE_NUM).map_err(q("binding"))?;
    queue.set_copy_range(QUEUE_NUM, COPY_RANGE).map_err(q("setting the copy range"))?;
    queue.set_queue_max_len(QUEUE_NUM, KERNEL_QUEUE_LEN).map_err(q("setting the queue length"))?;
    // GSO packets come whole (one verdict for up to 64 KiB) instead of being split first.
    queue.set_recv_gso(QUEUE_NUM, true).map_err(q("asking for GSO packets"))?;
    queue.set_nonblocking(true);
    Ok(queue)
}

/// A tiny xorshift generator for loss decisions.
struct Coin(u64);

impl Coin {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn run(
    mut queue: nfq::Queue,
    table: &PathTable,
    stop: &AtomicBool,
    seed: u64,
) -> Result<DelayStats, DelayError> {
    let verdict_err = |source| DelayError::Queue { what: "giving a verdict", source };
    let mut lanes: Vec<VecDeque<(Instant, nfq::Message)>> =
        table.lanes.iter().map(|_| VecDeque::new()).collect();
    let mut stats = DelayStats::default();
    let mut late = Lateness::new();
    let mut coin = Coin(seed | 1);
    let started = Instant::now();
    let mut held = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let mut got = 0;
        while got < BATCH {
            let mut msg = match queue.recv() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(DelayError::Queue { what: "receiving", source }),
            };
            got += 1;
            stats.packets += 1;
            stats.bytes += msg.get_original_len() as u64;
            let lane = table.lane(msg.get_payload());
            if table.loss > 0.0 && lane.is_some() && coin.unit() < table.loss {
                stats.dropped += 1;
                msg.set_verdict(nfq::Verdict::Drop);
                queue.verdict(msg).map_err(verdict_err)?;
                continue;
            }
            match lane.filter(|&l| !table.lanes[l].is_zero()) {
                Some(l) => {
                    lanes[l].push_back((Instant::now() + table.lanes[l], msg));
                    held += 1;
                    stats.max_held = stats.max_held.max(held);
                }
                None => {
                    stats.passed += 1;
                    msg.set_verdict(nfq::Verdict::Accept);
                    queue.verdict(msg).map_err(verdict_err)?;
                }
            }
        }
        let now = Instant::now();
        let mut next_due: Option<Instant> = None;
        for lane in &mut lanes {
            while let Some((due, _)) = lane.front() {
                if *due > now {
                    next_due = Some(next_due.map_or(*due, |n: Instant| n.min(*due)));
                    break;
                }
                if let Some((due, mut msg)) = lane.pop_front() {
                    late.record(now - due);
                    held -= 1;
                    msg.set_verdict(nfq::Verdict::Accept);
                    queue.verdict(msg).map_err(verdict_err)?;
                }
            }
        }
        if got == 0 {
            let wait =
                next_due.map_or(IDLE_SLEEP, |d| d.saturating_duration_since(Instant::now()).min(IDLE_SLEEP));
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }
    // Stopping: whatever is held goes on its way now.
    for lane in &mut lanes {
        for (_, mut msg) in lane.drain(..) {
            msg.set_verdict(nfq::Verdict::Accept);
            let _ = queue.verdict(msg);
        }
    }
    stats.seconds = started.elapsed().as_secs_f64();
    stats.late_p50_us = late.quantile(0.5);
    stats.late_p99_us = late.quantile(0.99);
    stats.late_max_us = late.max.as_micros() as f64;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::testbed::netns::node_addr;

    fn header(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0] = 0x45;
        h[12..16].copy_from_slice(&src.octets());
        h[16..20].copy_from_slice(&dst.octets());
        h
    }

    #[test]
    fn packets_find_the_delay_of_their_path() {
        let t = PathTable::new(3, 0.0, |s, d| Duration::from_millis(if s == d { 0 } else { (s + d) as u64 }));
        assert_eq!(t.lanes.len(), 4, "0, 1, 2 and 3 ms");
        let lane = t.lane(&header(node_addr(1), node_addr(2))).map(|l| t.lanes[l]);
        assert_eq!(lane, Some(Duration::from_millis(3)));
        assert_eq!(t.delay(0, 2), Duration::from_millis(2));
        // Unknown addresses, short or non-IPv4 packets pass at once.
        assert_eq!(t.lane(&header(Ipv4Addr::new(10, 201, 0, 1), node_addr(1))), None);
        assert_eq!(t.lane(&header(node_addr(1), node_addr(7))), None);
        assert_eq!(t.lane(&[0x45, 0, 0]), None);
        assert_eq!(t.lane(&[0x60; 40]), None);
    }

    #[test]
    fn lateness_quantiles() {
        let mut l = Lateness::new();
        for us in [5u64, 15, 25, 35, 1000] {
            l.record(Duration::from_micros(us));
        }
        assert_eq!(l.quantile(0.5), 30.0);
        assert_eq!(l.quantile(1.0), 1010.0);
        assert_eq!(l.max, Duration::from_millis(1));
    }
}
