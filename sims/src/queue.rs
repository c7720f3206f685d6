//! The completion queue: at most one pending completion per transfer, kept in a 4-ary heap
//! indexed by transfer so that a rate change moves a transfer's completion in place instead
//! of leaving a stale entry behind (every re-solve changes many rates).

/// A pending completion: (time in ns, sequence number) and the transfer.
type Entry = (u64, u64, u32);

/// Children per node of the heap. Why 4, not 2: half the levels to move through in a heap
/// of up to 80,000 transfers (8 fetches for each of 10,000 appliances), and a node's four
/// children lie side by side.
const ARITY: usize = 4;

const NONE: u32 = u32::MAX;

/// The pending completions of transfers, earliest first by (time in ns, sequence number): at
/// most one per transfer (transfer indices are dense, from 0), moved in place when it changes.
#[derive(Debug, Default)]
pub struct CompletionQueue {
    heap: Vec<Entry>,
    /// Per transfer: its entry's index in `heap`, or `NONE`.
    pos: Vec<u32>,
}

impl CompletionQueue {
    /// The earliest completion, if any.
    pub fn peek(&self) -> Option<Entry> {
        self.heap.first().copied()
    }

    /// Transfers with a pending completion.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no transfer has a pending completion.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Sets transfer `t`'s completion to (`at`, `seq`), replacing any it had.
    pub fn set(&mut self, t: u32, at: u64, seq: u64) {
        if self.pos.len() <= t as usize {
            self.pos.resize(t as usize + 1, NONE);
        }
        let p = self.pos[t as usize];
        if p == NONE {
            self.heap.push((at, seq, t));
            let i = self.heap.len() - 1;
            self.pos[t as usize] = i as u32;
            self.up(i);
        } else {
            let i = p as usize;
            let old = self.heap[i];
            self.heap[i] = (at, seq, t);
            if (at, seq) < (old.0, old.1) {
                self.up(i);
            } else {
                self.down(i);
            }
        }
    }

    /// Drops transfer `t`'s completion, if it has one.
    pub fn remove(&mut self, t: u32) {
        let Some(&p) = self.pos.get(t as usize) else { return };
        if p == NONE {
            return;
        }
        self.pos[t as usize] = NONE;
        let i = p as usize;
        let last = self.heap.len() - 1;
        if i == last {
            self.heap.pop();
            return;
        }
        self.heap.swap_remove(i);
        self.pos[self.heap[i].2 as usize] = i as u32;
        self.down(i);
        self.up(i);
    }

    /// Removes and returns the earliest completion.
    pub fn pop(&mut self) -> Option<Entry> {
        let first = self.peek()?;
        self.remove(first.2);
        Some(first)
    }

    fn key(&self, i: usize) -> (u64, u64) {
        (self.heap[i].0, self.heap[i].1)
    }

    /// Moves the entry at `i` up to its place, shifting parents down into the hole (one
    /// write per level instead of a swap).
    fn up(&mut self, mut i: usize) {
        let e = self.heap[i];
        while i > 0 {
            let parent = (i - 1) / ARITY;
            let p = self.heap[parent];
            if (e.0, e.1) >= (p.0, p.1) {
                break;
            }
            self.heap[i] = p;
            self.pos[p.2 as usize] = i as u32;
            i = parent;
        }
        self.heap[i] = e;
        self.pos[e.2 as usize] = i as u32;
    }

    /// Moves the entry at `i` down to its place, shifting the smallest child up each level.
    fn down(&mut self, mut i: usize) {
        let n = self.heap.len();
        let e = self.heap[i];
        loop {
            let l = ARITY * i + 1;
            if l >= n {
                break;
            }
            let mut m = l;
            for k in l + 1..(l + ARITY).min(n) {
                if self.key(k) < self.key(m) {
                    m = k;
                }
            }
            let c = self.heap[m];
            if (c.0, c.1) >= (e.0, e.1) {
                break;
            }
            self.heap[i] = c;
            self.pos[c.2 as usize] = i as u32;
            i = m;
        }
        self.heap[i] = e;
        self.pos[e.2 as usize] = i as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn pops_in_order_whatever_the_updates() {
        let mut q = CompletionQueue::default();
        let mut model: Vec<Option<(u64, u64)>> = vec![None; 50];
        let mut rng = Rng::new(3);
        for seq in 0..5_000u64 {
            let t = rng.below(50) as u32;
            match rng.below(4) {
                0 => {
                    q.remove(t);
                    model[t as usize] = None;
                }
                1 => {
                    let popped = q.pop();
                    let want = model
                        .iter()
                        .enumerate()
                        .filter_map(|(i, e)| e.map(|(at, s)| (at, s, i as u32)))
                        .min();
                    assert_eq!(popped, want);
                    if let Some((_, _, i)) = want {
                        model[i as usize] = None;
                    }
                }
                _ => {
                    let at = rng.below(1000);
                    q.set(t, at, seq);
                    model[t as usize] = Some((at, seq));
                }
            }
            assert_eq!(q.len(), model.iter().flatten().count());
        }
    }
}
