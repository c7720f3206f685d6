//! Fill windows: when each appliance takes fill traffic, and which titles ignore that.
//!
//! An appliance states its window as ranges of minutes of the day in UTC (it converts its
//! local ranges itself, so that appliances in other time zones compare); the shell tells the
//! core the minute of the day as an event ([`super::Event::WallClock`]), never read here.
//! Outside its window an appliance is planned no fill of a title that is not urgent and is
//! nobody's parent for one; urgent titles are planned as if every window were open. Until the
//! shell tells the first minute, every window counts as open (the simulator and the tests of
//! other rules never do).

use std::collections::{BTreeMap, BTreeSet};

use fillmesh_protocol::messages::{window_open, DayRange, MAX_WINDOW_RANGES, MINUTES_PER_DAY};

use super::CoreError;

/// Every appliance's window and which are closed now.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    /// Ranges per node index (only nodes that stated a window).
    ranges: BTreeMap<u32, Vec<DayRange>>,
    /// The minute of the day (UTC) last told, if any.
    minute: Option<u16>,
    /// Nodes whose window is closed at `minute`.
    closed: BTreeSet<u32>,
}

impl Windows {
    /// Whether node `idx` takes fill traffic of titles that are not urgent now.
    pub(crate) fn open(&self, idx: u32) -> bool {
        !self.closed.contains(&idx)
    }

    /// The window node `idx` stated (none: always open).
    pub(crate) fn ranges(&self, idx: u32) -> &[DayRange] {
        self.ranges.get(&idx).map_or(&[], Vec::as_slice)
    }

    /// Node `idx`'s window is `ranges` from now on (none: always open). Refused, changing
    /// nothing, for more than [`MAX_WINDOW_RANGES`] ranges or one out of bounds or empty.
    /// True when whether it is open changed.
    pub(crate) fn set(&mut self, idx: u32, ranges: Vec<DayRange>) -> Result<bool, CoreError> {
        if ranges.len() > MAX_WINDOW_RANGES {
            return Err(CoreError::BadReport(format!(
                "{} fill window ranges, more than {MAX_WINDOW_RANGES}",
                ranges.len()
            )));
        }
        if let Some(r) = ranges.iter().find(|r| !r.is_valid()) {
            return Err(CoreError::BadReport(format!(
                "fill window range {}..{} is empty or past the day's {MINUTES_PER_DAY} minutes",
                r.start, r.end
            )));
        }
        if ranges.is_empty() {
            self.ranges.remove(&idx);
        } else {
            self.ranges.insert(idx, ranges);
        }
        Ok(self.refresh(idx))
    }

    /// The minute of the day in UTC is `minute` (taken modulo a day). True when any
    /// window opened or closed.
    pub(crate) fn clock(&mut self, minute: u16) -> bool {
        let minute = minute % MINUTES_PER_DAY;
        if self.minute == Some(minute) {
            return false;
        }
        self.minute = Some(minute);
        let nodes: Vec<u32> = self.ranges.keys().copied().collect();
        let mut moved = false;
        for idx in nodes {
            moved |= self.refresh(idx);
        }
        moved
    }

    /// Recomputes whether node `idx` is closed; true when it changed.
    fn refresh(&mut self, idx: u32) -> bool {
        let closed = self.minute.is_some_and(|m| !window_open(self.ranges(idx), m));
        if closed {
            self.closed.insert(idx)
        } else {
            self.closed.remove(&idx)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use fillmesh_protocol::messages::{Registration, Role};
    use fillmesh_protocol::{ChunkSize, NodeId, Shape, TitleId};
    use proptest::prelude::*;

    use super::*;
    use crate::core::{Config, Decision, Event, Tracker};

    fn reg(role: Role, region: u32, site: u32, port: u16) -> Registration {
        Registration {
            role,
            mesh_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            site: format!("s{site}"),
            region: format!("r{region}"),
            prefixes: vec![],
            upload_bps: 100_000_000,
            disk_bytes: u64::MAX,
            cert_sha256: None,
        }
    }

    fn name(i: usize) -> NodeId {
        // Node ids are base58: letters only, and no lowercase L.
        format!("n{}", b"abcdefghijkmnopqrstuvwxyz"[i % 25] as char).repeat(1 + i / 25).parse().unwrap()
    }

    /// An appliance: (region, site, window as (start, minutes) if any).
    type Appliance = (u32, u32, Option<(u16, u16)>);

    /// The events of a fleet of `appliances`, an origin and `titles` (urgent or not), with the
    /// wall clock at `minutes` in turn, each followed by every appliance asking for its fills.
    fn events(appliances: &[Appliance], titles: &[bool], minutes: &[u16]) -> Vec<Event> {
        let mut out = Vec::new();
        let origin: NodeId = "origin".parse().unwrap();
        out.push(Event::Register { node: origin, registration: reg(Role::Origin, 0, 0, 9999) });
        for (i, &(region, site, window)) in appliances.iter().enumerate() {
            out.push(Event::Register {
                node: name(i),
                registration: reg(Role::Appliance, region, site, i as u16 + 1),
            });
            let ranges = window
                .map(|(start, len)| DayRange { start, end: (start + len) % MINUTES_PER_DAY })
                .into_iter()
                .collect();
            out.push(Event::FillWindow { node: name(i), ranges });
        }
        let cs = ChunkSize::new(1024).unwrap();
        for (k, &urgent) in titles.iter().enumerate() {
            let title = TitleId::from_bytes([k as u8 + 1; 32]);
            let shape = Shape::file(40 * 1024, cs).unwrap();
            out.push(Event::Publish { title, name: format!("t{k}"), shape });
            if urgent {
                out.push(Event::Urgent { title });
            }
        }
        for &minute in minutes {
            out.push(Event::WallClock { minute });
            for i in 0..appliances.len() {
                out.push(Event::Fills { node: name(i) });
            }
        }
        out
    }

    fn appliances() -> impl Strategy<Value = Vec<Appliance>> {
        let window =
            prop_oneof![1 => Just(None), 3 => (0..MINUTES_PER_DAY, 1..MINUTES_PER_DAY).prop_map(Some)];
        proptest::collection::vec((0..2u32, 0..2u32, window), 1..16)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever the windows and the clock: a title that is not urgent is planned only to
        /// an appliance inside its window, and only with parents inside theirs (or the
        /// origin); an urgent title is planned to every appliance. The same events give the
        /// same decisions (replay).
        #[test]
        fn windows_keep_fill_of_titles_that_are_not_urgent_inside_them(
            appliances in appliances(),
            titles in proptest::collection::vec(any::<bool>(), 1..4),
            minutes in proptest::collection::vec(0..MINUTES_PER_DAY, 1..4),
        ) {
            let events = events(&appliances, &titles, &minutes);
            let origin: NodeId = "origin".parse().unwrap();
            let open = |i: usize, minute: u16| match appliances[i].2 {
                None => true,
                Some((start, len)) => DayRange { start, end: (start + len) % MINUTES_PER_DAY }.contains(minute),
            };
            let index = |n: &NodeId| (0..appliances.len()).find(|&i| name(i) == *n);
            let mut tracker = Tracker::new(Config::default());
            let mut decisions = Vec::new();
            let mut minute = 0;
            for (now, event) in events.iter().enumerate() {
                let decision = tracker.handle(now as u64, event);
                if let Event::WallClock { minute: m } = event {
                    minute = *m;
                }
                if let (Event::Fills { node }, Decision::Fills(fills)) = (event, &decision) {
                    let a = index(node).unwrap();
                    for (k, &urgent) in titles.iter().enumerate() {
                        let title = TitleId::from_bytes([k as u8 + 1; 32]);
                        let plan = fills.plans.iter().find(|p| p.title == title);
                        prop_assert_eq!(plan.is_some(), urgent || open(a, minute),
                            "title {} (urgent: {}) to appliance {} at minute {}", k, urgent, a, minute);
                        let Some(plan) = plan else { continue };
                        prop_assert!(plan.parents.iter().any(|p| p.node == origin), "the origin is always a parent");
                        for parent in &plan.parents {
                            if let Some(p) = index(&parent.node) {
                                prop_assert!(p != a);
                                prop_assert!(urgent || open(p, minute),
                                    "parent {} outside its window at minute {} for title {}", p, minute, k);
                            }
                        }
                    }
                }
                prop_assert!(!matches!(decision, Decision::Error(_)), "{:?}", decision);
                decisions.push(decision);
            }
            let mut again = Tracker::new(Config::default());
            let replayed: Vec<Decision> =
                events.iter().enumerate().map(|(now, e)| again.handle(now as u64, e)).collect();
            prop_assert_eq!(replayed, decisions);
        }
    }

    #[test]
    fn a_window_closing_moves_the_epoch_and_bad_windows_are_refused() {
        let mut t = Tracker::new(Config::default());
        let a = name(0);
        t.register(0, a.clone(), reg(Role::Appliance, 0, 0, 1));
        t.set_fill_window(0, &a, vec![DayRange { start: 120, end: 840 }]).unwrap();
        let before = t.epoch();
        t.wall_clock(1, 100);
        assert!(!t.fill_window_open(&a));
        assert!(t.epoch() > before);
        let closed = t.epoch();
        t.wall_clock(2, 101);
        assert_eq!(t.epoch(), closed, "a minute that opens or closes nothing moves nothing");
        t.wall_clock(3, 120);
        assert!(t.fill_window_open(&a));
        for bad in [DayRange { start: 5, end: 5 }, DayRange { start: 0, end: MINUTES_PER_DAY }] {
            assert!(t.set_fill_window(4, &a, vec![bad]).is_err());
        }
        let many = vec![DayRange { start: 1, end: 2 }; MAX_WINDOW_RANGES + 1];
        assert!(t.set_fill_window(4, &a, many).is_err());
        assert_eq!(t.fill_window(&a), &[DayRange { start: 120, end: 840 }], "a refusal changes nothing");
        assert!(t.set_fill_window(4, &name(1), vec![]).is_err(), "an unknown node");
    }
}
