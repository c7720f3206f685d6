//! Flow-level network model: every transfer is a flow crossing a few capacity resources
//! (the sender's upload, the receiver's download, optional site and region uplinks), and the
//! rates are the max-min fair allocation found by progressive filling.
//!
//! Recomputing the whole allocation on every change costs O(flows x resources) and is far
//! too slow at 10,000 appliances, so a change is solved locally: the resources it touches
//! (set A) are re-solved with every flow crossing them, holding the rates of all other flows
//! fixed (the resources those flows share with A keep only their residual capacity). The
//! result is then checked against the max-min conditions at that boundary; wherever it could
//! break them (a saturated resource left unsaturated, a fixed flow no longer the largest on
//! its bottleneck, a re-solved flow bottlenecked below a fixed one) the boundary resource
//! joins A and the solve repeats. When no condition can break, every flow has a saturated
//! bottleneck on which it is largest, which is exactly max-min fairness. Tests compare it
//! against a from-scratch solve ([`Net::solve_all`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A capacity (bytes per second) shared by the flows crossing it.
pub type ResId = u32;
/// A flow's slot; slots are reused after removal.
pub type FlowId = u32;

/// Relative tolerance for "saturated" and "equal rates".
const EPS: f64 = 1e-9;
/// Past this many resources in the local set, solve everything at once.
const LOCAL_LIMIT: usize = 4096;
/// Up to this many resources, progressive filling finds each round's bottleneck by a scan
/// instead of a heap.
const LINEAR_FILL: usize = 128;

/// A share as a heap key: the bits of a non-negative `f64` order as the number does.
fn share_key(share: f64) -> u64 {
    share.max(0.0).to_bits()
}

/// Most resources one flow crosses (upload, site out, region out, region in, site in,
/// download).
pub const MAX_RES: usize = 6;

/// A flow, in one cache line: a solve reads the resources, rate and stamp of many flows, and
/// the completion queue then their bytes left. Why one line: apart, the rates and stamps in
/// an array of their own and the rest here, each re-solved flow cost two cache misses, and
/// reading the resources crossed was a quarter of the re-solve's time at 10,000 appliances.
#[derive(Debug, Clone)]
#[repr(align(64))]
struct Flow {
    /// The resources crossed are `res[..nres]` (inline: a solve visits many flows).
    res: [ResId; MAX_RES],
    nres: u8,
    /// Bytes per second, and the stamp of the last solve that took it in.
    rate: f64,
    mark: u32,
    /// Bytes still to deliver as of `since`.
    remaining: f64,
    since: u64,
    live: bool,
    tag: u64,
}

impl Flow {
    fn res(&self) -> &[ResId] {
        &self.res[..self.nres as usize]
    }
}

/// The network: resources, the flows on them and their max-min fair rates.
#[derive(Debug, Default)]
pub struct Net {
    cap: Vec<f64>,
    res_flows: Vec<Vec<FlowId>>,
    flows: Vec<Flow>,
    /// The rates of the flows crossing each resource, summed: kept as rates change, so a
    /// solve finds the residual capacity of a boundary resource without visiting its flows.
    res_sum: Vec<f64>,
    /// At least the largest rate of a flow crossing each resource: exact after a solve that
    /// re-solved all of them (or visited them all), raised to the re-solved flows' largest
    /// otherwise. See the boundary checks in [`Net::solve_local`].
    res_max: Vec<f64>,
    free: Vec<FlowId>,
    dirty: Vec<ResId>,
    /// Flows whose rate changed (or that started) in the last [`Net::resolve`].
    changed: Vec<FlowId>,
    // Scratch, stamped so nothing needs clearing between solves.
    stamp: u32,
    res_mark: Vec<u32>,
    res_local: Vec<u32>,
    dirty_mark: Vec<u32>,
    dirty_stamp: u32,
    scratch: Scratch,
    /// Check the capacity invariant after every resolve (tests).
    pub check_capacity: bool,
    /// Also compare every resolve with a from-scratch solve (tests, small topologies).
    pub check_global: bool,
    /// Largest set of resources solved at once so far (a global solve counts every resource
    /// that carries a flow).
    pub max_local: usize,
    /// Solves that fell back to a global one: the local set grew past `LOCAL_LIMIT` (4,096)
    /// resources.
    pub global_solves: u64,
}

impl Net {
    /// A network with no resources and no flows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a resource of `bytes_per_sec` (a negative capacity counts as 0) and returns its
    /// id: ids count up from 0 and are never reused.
    pub fn add_resource(&mut self, bytes_per_sec: f64) -> ResId {
        let id = self.cap.len() as ResId;
        self.cap.push(bytes_per_sec.max(0.0));
        self.res_flows.push(Vec::new());
        self.res_sum.push(0.0);
        self.res_max.push(0.0);
        self.res_mark.push(0);
        self.res_local.push(0);
        self.dirty_mark.push(0);
        id
    }

    /// Resource `r`'s capacity, bytes per second.
    pub fn capacity(&self, r: ResId) -> f64 {
        self.cap[r as usize]
    }

    /// Resources added so far (one past the largest id).
    pub fn resources(&self) -> usize {
        self.cap.len()
    }

    /// Starts a flow of `bytes` over `res` at `now`; its rate is set by the next resolve.
    pub fn start(&mut self, now: u64, res: &[ResId], bytes: u64, tag: u64) -> FlowId {
        assert!(res.len() <= MAX_RES, "a flow crosses at most {MAX_RES} resources");
        let mut flow = Flow {
            res: [0; MAX_RES],
            nres: res.len() as u8,
            rate: 0.0,
            mark: 0,
            remaining: bytes as f64,
            since: now,
            live: true,
            tag,
        };
        flow.res[..res.len()].copy_from_slice(res);
        let id = match self.free.pop() {
            Some(id) => {
                // The slot keeps its stamp: a stamp is told apart from the current one only.
                flow.mark = self.flows[id as usize].mark;
                self.flows[id as usize] = flow;
                id
            }
            None => {
                self.flows.push(flow);
                (self.flows.len() - 1) as FlowId
            }
        };
        for &r in res {
            self.res_flows[r as usize].push(id);
            self.mark_dirty(r);
        }
        id
    }

    /// Removes a flow (completed or aborted); returns the bytes it had not delivered by `now`.
    pub fn stop(&mut self, now: u64, id: FlowId) -> f64 {
        self.settle(now, id);
        let f = &mut self.flows[id as usize];
        f.live = false;
        let left = f.remaining.max(0.0);
        let (res, n) = (f.res, f.nres as usize);
        f.nres = 0;
        let rate = std::mem::replace(&mut f.rate, 0.0);
        for &r in &res[..n] {
            self.res_sum[r as usize] -= rate;
            let list = &mut self.res_flows[r as usize];
            if let Some(p) = list.iter().position(|&x| x == id) {
                list.swap_remove(p);
            }
            self.mark_dirty(r);
        }
        self.free.push(id);
        left
    }

    /// Flow `id`'s rate in bytes per second as the last [`Net::resolve`] set it: 0 before its
    /// first resolve and after [`Net::stop`].
    pub fn rate(&self, id: FlowId) -> f64 {
        self.flows[id as usize].rate
    }

    /// The tag the caller gave flow `id` in [`Net::start`] (the simulator's transfer index).
    pub fn tag(&self, id: FlowId) -> u64 {
        self.flows[id as usize].tag
    }

    /// When the flow will have delivered its last byte at its current rate (integer ns,
    /// rounded up), or `None` while its rate is zero.
    pub fn completion(&self, id: FlowId) -> Option<u64> {
        let f = &self.flows[id as usize];
        let rate = f.rate;
        if f.remaining <= 0.0 {
            return Some(f.since);
        }
        if rate <= 0.0 {
            return None;
        }
        let ns = (f.remaining * 1e9 / rate).ceil();
        Some(f.since.saturating_add(ns.max(1.0) as u64))
    }

    /// Bytes the flow still has to deliver at `now`.
    pub fn remaining_at(&self, now: u64, id: FlowId) -> f64 {
        let f = &self.flows[id as usize];
        f.remaining - f.rate * now.saturating_sub(f.since) as f64 / 1e9
    }

    /// Flows whose rate was set by the last resolve.
    pub fn changed(&self) -> &[FlowId] {
        &self.changed
    }

    fn settle(&mut self, now: u64, id: FlowId) {
        let f = &mut self.flows[id as usize];
        if now > f.since {
            f.remaining -= f.rate * (now - f.since) as f64 / 1e9;
            f.since = now;
        }
    }

    fn mark_dirty(&mut self, r: ResId) {
        if self.dirty.is_empty() {
            self.dirty_stamp = self.dirty_stamp.wrapping_add(1);
        }
        if self.dirty_mark[r as usize] != self.dirty_stamp {
            self.dirty_mark[r as usize] = self.dirty_stamp;
            self.dirty.push(r);
        }
    }

    /// Recomputes the rates affected by the starts and stops since the last call.
    pub fn resolve(&mut self, now: u64) {
        self.changed.clear();
        if self.dirty.is_empty() {
            return;
        }
        let mut set = std::mem::take(&mut self.dirty);
        let mut more = Vec::new();
        loop {
            if set.len() > LOCAL_LIMIT {
                self.global_solves += 1;
                set = (0..self.cap.len() as ResId)
                    .filter(|&r| !self.res_flows[r as usize].is_empty())
                    .collect();
            }
            self.max_local = self.max_local.max(set.len());
            self.solve_local(&set, &mut more);
            if more.is_empty() || set.len() >= self.cap.len() {
                let sc = std::mem::take(&mut self.scratch);
                for (&f, &rate) in sc.sub.iter().zip(&sc.fill.rates) {
                    if self.flows[f as usize].rate != rate || self.flows[f as usize].since == now {
                        self.settle(now, f);
                        self.flows[f as usize].rate = rate;
                        self.changed.push(f);
                    }
                }
                // The set's resources carry re-solved flows only: their sums are taken anew
                // (which also clears any rounding the running sums gathered); a boundary
                // resource's sum moves by its re-solved flows' change.
                for (l, &r) in sc.local.iter().enumerate() {
                    let r = r as usize;
                    if l < sc.inner {
                        self.res_sum[r] = sc.new_sum[l];
                        self.res_max[r] = sc.new_max[l];
                    } else {
                        self.res_sum[r] += sc.new_sum[l] - sc.old_sum[l];
                        let fixed = if sc.fixed_max[l].is_nan() { self.res_max[r] } else { sc.fixed_max[l] };
                        self.res_max[r] = fixed.max(sc.new_max[l]);
                    }
                }
                self.scratch = sc;
                break;
            }
            set.append(&mut more);
        }
        set.clear();
        self.dirty = set;
        // `sub` is sorted and without repeats, and so is `changed`, taken from it in order.
        debug_assert!(self.changed.windows(2).all(|w| w[0] < w[1]));
        if self.check_capacity {
            if let Err(e) = self.check_capacities() {
                panic!("capacity invariant broken at {now} ns: {e}");
            }
        }
        if self.check_global {
            let global = self.solve_all();
            for (i, f) in self.flows.iter().enumerate() {
                if f.live {
                    let (g, rate) = (global[i], f.rate);
                    assert!(
                        (rate - g).abs() <= 1e-6 * g.max(1.0),
                        "flow {i}: local rate {rate} but global max-min rate {g}"
                    );
                }
            }
        }
    }

    /// Solves the flows crossing `set` with every other flow fixed. Leaves the re-solved
    /// flows and their new rates in the scratch space (`sub`, `fill.rates`), and puts in
    /// `more` the boundary resources where the result could break max-min fairness (none
    /// when it is final).
    fn solve_local(&mut self, set: &[ResId], more: &mut Vec<ResId>) {
        more.clear();
        self.stamp = self.stamp.wrapping_add(1);
        let stamp = self.stamp;
        let mut sc = std::mem::take(&mut self.scratch);
        sc.clear();
        // Local resources: the set first, then the boundary.
        for &r in set {
            if self.res_mark[r as usize] != stamp {
                self.res_mark[r as usize] = stamp;
                self.res_local[r as usize] = sc.local.len() as u32;
                sc.local.push(r);
            }
        }
        let inner = sc.local.len();
        for &r in &sc.local[..inner] {
            for &f in &self.res_flows[r as usize] {
                if self.flows[f as usize].mark != stamp {
                    self.flows[f as usize].mark = stamp;
                    sc.sub.push(f);
                }
            }
        }
        sc.sub.sort_unstable();
        for &f in &sc.sub {
            for &r in self.flows[f as usize].res() {
                if self.res_mark[r as usize] != stamp {
                    self.res_mark[r as usize] = stamp;
                    self.res_local[r as usize] = sc.local.len() as u32;
                    sc.local.push(r);
                }
            }
        }
        sc.inner = inner;
        let n = sc.local.len();
        // What the re-solved flows carry on each local resource now, and how many cross it.
        sc.old_sum.resize(n, 0.0);
        sc.sub_count.resize(n, 0);
        sc.flow_start.push(0);
        for &f in &sc.sub {
            let old = self.flows[f as usize].rate;
            for &r in self.flows[f as usize].res() {
                let l = self.res_local[r as usize];
                sc.flow_res.push(l);
                sc.old_sum[l as usize] += old;
                sc.sub_count[l as usize] += 1;
            }
            sc.flow_start.push(sc.flow_res.len() as u32);
        }
        // Capacities: whole for the set, residual for the boundary (what its other flows,
        // held fixed, leave: its running sum less the re-solved flows' share).
        sc.outside_sum.resize(n, 0.0);
        sc.has_outside.resize(n, false);
        for (l, &r) in sc.local.iter().enumerate() {
            let mut c = self.cap[r as usize];
            if l >= inner && self.res_flows[r as usize].len() > sc.sub_count[l] as usize {
                sc.has_outside[l] = true;
                sc.outside_sum[l] = (self.res_sum[r as usize] - sc.old_sum[l]).max(0.0);
                c = (c - sc.outside_sum[l]).max(0.0);
            }
            sc.cap.push(c);
        }
        sc.fill.run(&sc.cap, &sc.flow_start, &sc.flow_res);
        // Boundary checks.
        sc.new_sum.resize(n, 0.0);
        sc.new_max.resize(n, 0.0);
        sc.bottlenecked_min.resize(n, f64::INFINITY);
        sc.fixed_max.resize(n, f64::NAN);
        for (i, &rate) in sc.fill.rates.iter().enumerate() {
            for &l in &sc.flow_res[sc.flow_start[i] as usize..sc.flow_start[i + 1] as usize] {
                let l = l as usize;
                sc.new_sum[l] += rate;
                sc.new_max[l] = sc.new_max[l].max(rate);
            }
            let b = sc.fill.frozen_at[i] as usize;
            sc.bottlenecked_min[b] = sc.bottlenecked_min[b].min(rate);
        }
        for l in inner..n {
            if !sc.has_outside[l] {
                continue;
            }
            let r = sc.local[l];
            let c = self.cap[r as usize];
            let tol = EPS * c.max(1.0);
            let was_saturated = sc.outside_sum[l] + sc.old_sum[l] >= c - tol;
            // Neither condition below can hold on a resource that was not saturated and on
            // which no re-solved flow froze: only then are its fixed flows visited, for the
            // largest of their rates. Why: visiting every boundary resource's flows was most
            // of the re-solve's time in the 10,000-appliance scale bench.
            if !was_saturated && sc.bottlenecked_min[l] == f64::INFINITY {
                continue;
            }
            let is_saturated = sc.outside_sum[l] + sc.new_sum[l] >= c - tol;
            // With `om` the largest rate of the fixed flows, the conditions are
            // `new_max > above(om)` and `bottlenecked_min < below(om)`, both functions rising
            // with `om`. The second cannot hold if it does not for `res_max`, which is at
            // least `om`; then the first holds exactly when no fixed flow has
            // `above(rate) >= new_max`, and the visit stops at the first that has (most often
            // the first fixed flow: one at the resource's fair share). Why: visiting every
            // fixed flow for `om` was a quarter of the re-solve's time at 3,000 appliances.
            let above = |x: f64| x + EPS * x.max(1.0);
            let below = |x: f64| x - EPS * x.max(1.0);
            let bmin = sc.bottlenecked_min[l];
            let broken = if was_saturated && !is_saturated {
                true
            } else if bmin >= below(self.res_max[r as usize]) {
                was_saturated
                    && !self.res_flows[r as usize].iter().any(|&f| {
                        let h = &self.flows[f as usize];
                        h.mark != stamp && above(h.rate) >= sc.new_max[l]
                    })
            } else {
                let om = self.res_flows[r as usize]
                    .iter()
                    .map(|&f| &self.flows[f as usize])
                    .filter(|f| f.mark != stamp)
                    .fold(0.0f64, |m, f| m.max(f.rate));
                sc.fixed_max[l] = om;
                (was_saturated && sc.new_max[l] > above(om)) || bmin < below(om)
            };
            if broken {
                more.push(r);
            }
        }
        self.scratch = sc;
    }

    /// The max-min fair rate of every flow slot (0 for dead slots), solved from scratch.
    pub fn solve_all(&self) -> Vec<f64> {
        let live: Vec<usize> = (0..self.flows.len()).filter(|&i| self.flows[i].live).collect();
        let mut start = vec![0u32];
        let mut res = Vec::new();
        for &i in &live {
            res.extend_from_slice(self.flows[i].res());
            start.push(res.len() as u32);
        }
        let mut fill = Fill::default();
        fill.run(&self.cap, &start, &res);
        let mut out = vec![0.0; self.flows.len()];
        for (k, &i) in live.iter().enumerate() {
            out[i] = fill.rates[k];
        }
        out
    }

    /// Every resource carries at most its capacity.
    pub fn check_capacities(&self) -> Result<(), String> {
        for (r, flows) in self.res_flows.iter().enumerate() {
            let used: f64 = flows.iter().map(|&f| self.flows[f as usize].rate).sum();
            let cap = self.cap[r];
            if used > cap * (1.0 + 1e-9) + 1e-6 {
                return Err(format!("resource {r} carries {used} B/s over its capacity {cap} B/s"));
            }
        }
        Ok(())
    }

    /// Bytes per second crossing resource `r` now, and how many flows cross it.
    pub fn load(&self, r: ResId) -> (f64, usize) {
        let flows = &self.res_flows[r as usize];
        (flows.iter().map(|&f| self.flows[f as usize].rate).sum(), flows.len())
    }

    /// Live flows (for reports).
    pub fn live_flows(&self) -> usize {
        self.flows.len() - self.free.len()
    }
}

/// Buffers of one local solve, kept between solves so that a solve allocates nothing.
#[derive(Debug, Default)]
struct Scratch {
    local: Vec<ResId>,
    sub: Vec<FlowId>,
    cap: Vec<f64>,
    /// Resources `local[..inner]` are the set, the rest its boundary.
    inner: usize,
    outside_sum: Vec<f64>,
    has_outside: Vec<bool>,
    /// Re-solved flows crossing each local resource.
    sub_count: Vec<u32>,
    /// Flow i crosses local resources `flow_res[flow_start[i]..flow_start[i + 1]]`.
    flow_start: Vec<u32>,
    flow_res: Vec<u32>,
    new_sum: Vec<f64>,
    old_sum: Vec<f64>,
    new_max: Vec<f64>,
    bottlenecked_min: Vec<f64>,
    /// The largest rate of the fixed flows on a boundary resource, where they were all
    /// visited (NaN elsewhere).
    fixed_max: Vec<f64>,
    fill: Fill,
}

impl Scratch {
    fn clear(&mut self) {
        self.local.clear();
        self.sub.clear();
        self.cap.clear();
        self.outside_sum.clear();
        self.has_outside.clear();
        self.sub_count.clear();
        self.flow_start.clear();
        self.flow_res.clear();
        self.new_sum.clear();
        self.old_sum.clear();
        self.new_max.clear();
        self.bottlenecked_min.clear();
        self.fixed_max.clear();
    }
}

/// Progressive filling: all unfrozen flows rise together; when a resource fills, its flows
/// freeze at that level. `run` leaves each flow's rate and the resource it froze on.
#[derive(Debug, Default)]
struct Fill {
    rates: Vec<f64>,
    frozen_at: Vec<u32>,
    remaining: Vec<f64>,
    count: Vec<u32>,
    /// Resource l's flows are `at[at_start[l]..at_start[l + 1]]`.
    at_start: Vec<u32>,
    at: Vec<u32>,
    frozen: Vec<bool>,
    /// Next free place of each resource in `at` while filling it.
    next: Vec<u32>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    /// Each resource's key (its share's bits; `u64::MAX` once it has no unfrozen flow), for
    /// [`Fill::run_linear`].
    keys: Vec<u64>,
}

impl Fill {
    fn run(&mut self, cap: &[f64], flow_start: &[u32], flow_res: &[u32]) {
        let flows = flow_start.len() - 1;
        let res_of = |i: usize| &flow_res[flow_start[i] as usize..flow_start[i + 1] as usize];
        self.remaining.clear();
        self.remaining.extend_from_slice(cap);
        self.count.clear();
        self.count.resize(cap.len(), 0);
        for &l in flow_res {
            self.count[l as usize] += 1;
        }
        // Counting sort of (resource, flow) pairs.
        self.at_start.clear();
        self.at_start.push(0);
        let mut acc = 0;
        for &c in &self.count {
            acc += c;
            self.at_start.push(acc);
        }
        self.at.clear();
        self.at.resize(flow_res.len(), 0);
        self.next.clear();
        self.next.extend_from_slice(&self.at_start[..cap.len()]);
        for i in 0..flows {
            for &l in res_of(i) {
                self.at[self.next[l as usize] as usize] = i as u32;
                self.next[l as usize] += 1;
            }
        }
        self.rates.clear();
        self.rates.resize(flows, 0.0);
        self.frozen_at.clear();
        self.frozen_at.resize(flows, u32::MAX);
        self.frozen.clear();
        self.frozen.resize(flows, false);
        if cap.len() <= LINEAR_FILL {
            self.run_linear(flow_start, flow_res);
            return;
        }
        // Min-heap of (share, resource); shares only grow, so stale entries are re-pushed.
        self.heap.clear();
        for l in 0..cap.len() {
            if self.count[l] > 0 {
                self.heap.push(Reverse((share_key(self.share(l)), l as u32)));
            }
        }
        while let Some(Reverse((k, l))) = self.heap.pop() {
            let lu = l as usize;
            if self.count[lu] == 0 {
                continue;
            }
            let share = self.share(lu);
            if share_key(share) != k {
                self.heap.push(Reverse((share_key(share), l)));
                continue;
            }
            self.freeze(l, share, flow_start, flow_res);
        }
    }

    /// The heap's order without the heap: each round takes the resource of least (share,
    /// index), which is what the heap pops once its stale entries are re-pushed (a stale key
    /// is never above its resource's current one), so the rates are the same bit for bit.
    /// Why: a local solve has 16 to 31 resources and 8 to 15 flows in most cases in the
    /// scale bench (3,000 appliances), where the heap's pushes and pops were 7.5% of the run.
    fn run_linear(&mut self, flow_start: &[u32], flow_res: &[u32]) {
        let n = self.count.len();
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        keys.extend((0..n).map(|l| self.linear_key(l)));
        self.keys = keys;
        loop {
            let mut best = (u64::MAX, 0);
            for (l, &k) in self.keys.iter().enumerate() {
                if k < best.0 {
                    best = (k, l);
                }
            }
            if best.0 == u64::MAX {
                return;
            }
            let l = best.1;
            self.freeze(l as u32, self.share(l), flow_start, flow_res);
            // Only the resources of the flows just frozen changed.
            for k in self.at_start[l]..self.at_start[l + 1] {
                let i = self.at[k as usize] as usize;
                if self.frozen_at[i] != l as u32 {
                    continue;
                }
                for &l2 in &flow_res[flow_start[i] as usize..flow_start[i + 1] as usize] {
                    self.keys[l2 as usize] = self.linear_key(l2 as usize);
                }
            }
        }
    }

    /// Resource `l`'s fair share of what is left of it among its unfrozen flows (at least
    /// one).
    fn share(&self, l: usize) -> f64 {
        self.remaining[l].max(0.0) / f64::from(self.count[l])
    }

    /// Resource `l`'s key in [`Fill::run_linear`]: its share's, or `u64::MAX` once it has no
    /// unfrozen flow.
    fn linear_key(&self, l: usize) -> u64 {
        match self.count[l] {
            0 => u64::MAX,
            _ => share_key(self.share(l)),
        }
    }

    /// Freezes resource `l`'s unfrozen flows at `share`.
    fn freeze(&mut self, l: u32, share: f64, flow_start: &[u32], flow_res: &[u32]) {
        let lu = l as usize;
        for k in self.at_start[lu]..self.at_start[lu + 1] {
            let i = self.at[k as usize] as usize;
            if self.frozen[i] {
                continue;
            }
            self.frozen[i] = true;
            self.rates[i] = share;
            self.frozen_at[i] = l;
            for &l2 in &flow_res[flow_start[i] as usize..flow_start[i + 1] as usize] {
                let l2 = l2 as usize;
                self.remaining[l2] -= share;
                self.count[l2] -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_flows_share_an_upload_and_a_third_takes_the_rest() {
        let mut net = Net::new();
        let up = net.add_resource(100.0);
        let d1 = net.add_resource(1000.0);
        let d2 = net.add_resource(30.0);
        let a = net.start(0, &[up, d1], 1000, 0);
        let b = net.start(0, &[up, d2], 1000, 1);
        net.resolve(0);
        assert_eq!(net.rate(b), 30.0);
        assert_eq!(net.rate(a), 70.0);
    }
}
