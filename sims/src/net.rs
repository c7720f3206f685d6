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

#[derive(Debug, Clone)]
struct Flow {
    res: Vec<ResId>,
    /// Bytes per second.
    rate: f64,
    /// Bytes still to deliver as of `since`.
    remaining: f64,
    since: u64,
    live: bool,
    tag: u64,
}

/// The network: resources, the flows on them and their max-min fair rates.
#[derive(Debug, Default)]
pub struct Net {
    cap: Vec<f64>,
    res_flows: Vec<Vec<FlowId>>,
    flows: Vec<Flow>,
    free: Vec<FlowId>,
    dirty: Vec<ResId>,
    /// Flows whose rate changed (or that started) in the last [`Net::resolve`].
    changed: Vec<FlowId>,
    // Scratch, stamped so nothing needs clearing between solves.
    stamp: u32,
    res_mark: Vec<u32>,
    res_local: Vec<u32>,
    flow_mark: Vec<u32>,
    dirty_mark: Vec<u32>,
    dirty_stamp: u32,
    /// Check the capacity invariant after every resolve (tests).
    pub check_capacity: bool,
    /// Also compare every resolve with a from-scratch solve (tests, small topologies).
    pub check_global: bool,
    /// Largest local set solved so far, and how many resolves fell back to a global solve.
    pub max_local: usize,
    pub global_solves: u64,
}

impl Net {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_resource(&mut self, bytes_per_sec: f64) -> ResId {
        let id = self.cap.len() as ResId;
        self.cap.push(bytes_per_sec.max(0.0));
        self.res_flows.push(Vec::new());
        self.res_mark.push(0);
        self.res_local.push(0);
        self.dirty_mark.push(0);
        id
    }

    pub fn capacity(&self, r: ResId) -> f64 {
        self.cap[r as usize]
    }

    pub fn resources(&self) -> usize {
        self.cap.len()
    }

    /// Starts a flow of `bytes` over `res` at `now`; its rate is set by the next resolve.
    pub fn start(&mut self, now: u64, res: &[ResId], bytes: u64, tag: u64) -> FlowId {
        let flow =
            Flow { res: res.to_vec(), rate: 0.0, remaining: bytes as f64, since: now, live: true, tag };
        let id = match self.free.pop() {
            Some(id) => {
                self.flows[id as usize] = flow;
                id
            }
            None => {
                self.flows.push(flow);
                self.flow_mark.push(0);
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
        let res = std::mem::take(&mut f.res);
        for &r in &res {
            let list = &mut self.res_flows[r as usize];
            if let Some(p) = list.iter().position(|&x| x == id) {
                list.swap_remove(p);
            }
            self.mark_dirty(r);
        }
        self.free.push(id);
        left
    }

    pub fn rate(&self, id: FlowId) -> f64 {
        self.flows[id as usize].rate
    }

    pub fn tag(&self, id: FlowId) -> u64 {
        self.flows[id as usize].tag
    }

    /// When the flow will have delivered its last byte at its current rate (integer ns,
    /// rounded up), or `None` while its rate is zero.
    pub fn completion(&self, id: FlowId) -> Option<u64> {
        let f = &self.flows[id as usize];
        if f.remaining <= 0.0 {
            return Some(f.since);
        }
        if f.rate <= 0.0 {
            return None;
        }
        let ns = (f.remaining * 1e9 / f.rate).ceil();
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
        loop {
            if set.len() > LOCAL_LIMIT {
                self.global_solves += 1;
                set = (0..self.cap.len() as ResId)
                    .filter(|&r| !self.res_flows[r as usize].is_empty())
                    .collect();
            }
            self.max_local = self.max_local.max(set.len());
            let (sub, rates, more) = self.solve_local(&set);
            if more.is_empty() || set.len() >= self.cap.len() {
                for (&f, &rate) in sub.iter().zip(&rates) {
                    if self.flows[f as usize].rate != rate || self.flows[f as usize].since == now {
                        self.settle(now, f);
                        self.flows[f as usize].rate = rate;
                        self.changed.push(f);
                    }
                }
                break;
            }
            set.extend(more);
        }
        self.changed.sort_unstable();
        self.changed.dedup();
        if self.check_capacity {
            if let Err(e) = self.check_capacities() {
                panic!("capacity invariant broken at {now} ns: {e}");
            }
        }
        if self.check_global {
            let global = self.solve_all();
            for (i, f) in self.flows.iter().enumerate() {
                if f.live {
                    let g = global[i];
                    assert!(
                        (f.rate - g).abs() <= 1e-6 * g.max(1.0),
                        "flow {i}: local rate {} but global max-min rate {g}",
                        f.rate
                    );
                }
            }
        }
    }

    /// Solves the flows crossing `set` with every other flow fixed. Returns the re-solved
    /// flows, their new rates, and the boundary resources where the result could break
    /// max-min fairness (empty when it is final).
    fn solve_local(&mut self, set: &[ResId]) -> (Vec<FlowId>, Vec<f64>, Vec<ResId>) {
        self.stamp = self.stamp.wrapping_add(1);
        let stamp = self.stamp;
        // Local resources: the set first, then the boundary.
        let mut local: Vec<ResId> = Vec::with_capacity(set.len() * 2);
        for &r in set {
            if self.res_mark[r as usize] != stamp {
                self.res_mark[r as usize] = stamp;
                self.res_local[r as usize] = local.len() as u32;
                local.push(r);
            }
        }
        let inner = local.len();
        let mut sub: Vec<FlowId> = Vec::new();
        for &r in &local[..inner] {
            for &f in &self.res_flows[r as usize] {
                if self.flow_mark[f as usize] != stamp {
                    self.flow_mark[f as usize] = stamp;
                    sub.push(f);
                }
            }
        }
        sub.sort_unstable();
        for &f in &sub {
            for &r in &self.flows[f as usize].res {
                if self.res_mark[r as usize] != stamp {
                    self.res_mark[r as usize] = stamp;
                    self.res_local[r as usize] = local.len() as u32;
                    local.push(r);
                }
            }
        }
        // Capacities: whole for the set, residual for the boundary.
        let mut cap: Vec<f64> = Vec::with_capacity(local.len());
        let mut outside_sum = vec![0.0; local.len()];
        let mut outside_max = vec![0.0f64; local.len()];
        let mut has_outside = vec![false; local.len()];
        for (l, &r) in local.iter().enumerate() {
            let mut c = self.cap[r as usize];
            if l >= inner {
                for &f in &self.res_flows[r as usize] {
                    if self.flow_mark[f as usize] != stamp {
                        let rate = self.flows[f as usize].rate;
                        outside_sum[l] += rate;
                        outside_max[l] = outside_max[l].max(rate);
                        has_outside[l] = true;
                    }
                }
                c = (c - outside_sum[l]).max(0.0);
            }
            cap.push(c);
        }
        let flow_res: Vec<Vec<u32>> = sub
            .iter()
            .map(|&f| self.flows[f as usize].res.iter().map(|&r| self.res_local[r as usize]).collect())
            .collect();
        let (rates, frozen_at) = progressive_fill(&cap, &flow_res);
        // Boundary checks.
        let mut new_sum = vec![0.0; local.len()];
        let mut old_sum = vec![0.0; local.len()];
        let mut new_max = vec![0.0f64; local.len()];
        let mut bottlenecked_min = vec![f64::INFINITY; local.len()];
        for (i, &f) in sub.iter().enumerate() {
            let old = self.flows[f as usize].rate;
            for &l in &flow_res[i] {
                let l = l as usize;
                new_sum[l] += rates[i];
                old_sum[l] += old;
                new_max[l] = new_max[l].max(rates[i]);
            }
            let b = frozen_at[i] as usize;
            bottlenecked_min[b] = bottlenecked_min[b].min(rates[i]);
        }
        let mut more = Vec::new();
        for l in inner..local.len() {
            if !has_outside[l] {
                continue;
            }
            let r = local[l];
            let c = self.cap[r as usize];
            let tol = EPS * c.max(1.0);
            let was_saturated = outside_sum[l] + old_sum[l] >= c - tol;
            let is_saturated = outside_sum[l] + new_sum[l] >= c - tol;
            let om = outside_max[l];
            let broken = (was_saturated && (!is_saturated || new_max[l] > om + EPS * om.max(1.0)))
                || (bottlenecked_min[l] < om - EPS * om.max(1.0));
            if broken {
                more.push(r);
            }
        }
        (sub, rates, more)
    }

    /// The max-min fair rate of every flow slot (0 for dead slots), solved from scratch.
    pub fn solve_all(&self) -> Vec<f64> {
        let live: Vec<usize> = (0..self.flows.len()).filter(|&i| self.flows[i].live).collect();
        let flow_res: Vec<Vec<u32>> = live.iter().map(|&i| self.flows[i].res.clone()).collect();
        let (rates, _) = progressive_fill(&self.cap, &flow_res);
        let mut out = vec![0.0; self.flows.len()];
        for (k, &i) in live.iter().enumerate() {
            out[i] = rates[k];
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

    /// Live flows (for reports).
    pub fn live_flows(&self) -> usize {
        self.flows.len() - self.free.len()
    }
}

/// Progressive filling: all unfrozen flows rise together; when a resource fills, its flows
/// freeze at that level. Returns each flow's rate and the resource it froze on.
fn progressive_fill(cap: &[f64], flow_res: &[Vec<u32>]) -> (Vec<f64>, Vec<u32>) {
    let mut remaining = cap.to_vec();
    let mut count = vec![0u32; cap.len()];
    let mut flows_at: Vec<Vec<u32>> = vec![Vec::new(); cap.len()];
    for (i, res) in flow_res.iter().enumerate() {
        for &l in res {
            count[l as usize] += 1;
            flows_at[l as usize].push(i as u32);
        }
    }
    let mut rates = vec![0.0; flow_res.len()];
    let mut frozen_at = vec![u32::MAX; flow_res.len()];
    let mut frozen = vec![false; flow_res.len()];
    // Min-heap of (share, resource); shares only grow, so stale entries are re-pushed.
    let mut heap: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
    let key = |x: f64| x.max(0.0).to_bits();
    for l in 0..cap.len() {
        if count[l] > 0 {
            heap.push(Reverse((key(remaining[l] / f64::from(count[l])), l as u32)));
        }
    }
    while let Some(Reverse((k, l))) = heap.pop() {
        let lu = l as usize;
        if count[lu] == 0 {
            continue;
        }
        let share = remaining[lu].max(0.0) / f64::from(count[lu]);
        if key(share) != k {
            heap.push(Reverse((key(share), l)));
            continue;
        }
        for &i in &flows_at[lu] {
            let i = i as usize;
            if frozen[i] {
                continue;
            }
            frozen[i] = true;
            rates[i] = share;
            frozen_at[i] = l;
            for &l2 in &flow_res[i] {
                let l2 = l2 as usize;
                remaining[l2] -= share;
                count[l2] -= 1;
            }
        }
    }
    (rates, frozen_at)
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
