//! The figures of one side of the comparison (simulator or testbed) and the side-by-side
//! table.

use std::collections::BTreeMap;
use std::fmt::Write;

use fillmesh_sims::report::percentile;
use serde::Serialize;

/// The byte classes, in the simulator's and the tracker's own keys.
pub const CLASSES: [&str; 4] = ["same_site", "same_region", "cross_region", "origin"];

/// What one side measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    /// Seconds from publishing to an appliance's last chunk: the median and the slowest
    /// (`None` when no appliance completed; the max is `None` unless every one did).
    pub completion_p50_s: Option<f64>,
    pub completion_max_s: Option<f64>,
    pub completed: usize,
    pub appliances: usize,
    pub origin_bytes: u64,
    pub bytes_by_class: BTreeMap<String, u64>,
    /// Each completion time, sorted.
    pub completion_s: Vec<f64>,
}

impl Side {
    pub fn new(mut completion_s: Vec<f64>, appliances: usize, bytes_by_class: [u64; 4]) -> Self {
        completion_s.sort_by(f64::total_cmp);
        let completed = completion_s.len();
        Self {
            completion_p50_s: percentile(&completion_s, 0.5),
            completion_max_s: (completed == appliances).then(|| completion_s.last().copied()).flatten(),
            completed,
            appliances,
            origin_bytes: bytes_by_class[3],
            bytes_by_class: CLASSES.iter().zip(bytes_by_class).map(|(k, v)| ((*k).to_owned(), v)).collect(),
            completion_s,
        }
    }

    fn class(&self, key: &str) -> u64 {
        self.bytes_by_class.get(key).copied().unwrap_or(0)
    }
}

/// testbed / simulator, when both exist and the simulator's is not zero.
fn ratio(sim: Option<f64>, testbed: Option<f64>) -> Option<f64> {
    match (sim, testbed) {
        (Some(s), Some(t)) if s > 0.0 => Some(t / s),
        _ => None,
    }
}

/// The side-by-side table: one row per figure, the ratio testbed / simulator, and whether it
/// is within the target (±15% for times and classes, origin bytes ≤ 1.05x the title on each
/// side).
pub fn table(sim: &Side, testbed: &Side, title_bytes: u64) -> String {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    // (figure, simulator, testbed, ratio, within target)
    type Row = (String, Option<f64>, Option<f64>, Option<f64>, String);
    let mut rows: Vec<Row> = Vec::new();
    let within = |r: Option<f64>| match r {
        Some(r) if (0.85..=1.15).contains(&r) => "yes".to_owned(),
        Some(_) => "NO".to_owned(),
        None => "-".to_owned(),
    };
    for (name, s, t) in [
        ("completion p50 (s)", sim.completion_p50_s, testbed.completion_p50_s),
        ("completion max (s)", sim.completion_max_s, testbed.completion_max_s),
    ] {
        let r = ratio(s, t);
        rows.push((name.to_owned(), s, t, r, within(r)));
    }
    let title = title_bytes.max(1) as f64;
    let (so, to) = (sim.origin_bytes as f64 / title, testbed.origin_bytes as f64 / title);
    let ok = if so <= 1.05 && to <= 1.05 { "yes" } else { "NO" };
    rows.push((
        "origin / title".into(),
        Some(so),
        Some(to),
        ratio(Some(so), Some(to)),
        format!("{ok} (<= 1.05)"),
    ));
    for key in CLASSES {
        let (s, t) = (mib(sim.class(key)), mib(testbed.class(key)));
        let r = ratio(Some(s), Some(t));
        // A class that carries under 2% of the title on both sides has no meaningful ratio.
        let small = s.max(t) < 0.02 * title / (1u64 << 20) as f64;
        let verdict = if small { "- (small)".to_owned() } else { within(r) };
        rows.push((format!("{key} (MiB)"), Some(s), Some(t), r, verdict));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>12} {:>12} {:>12}  within target",
        "", "simulator", "testbed", "testbed/sim"
    );
    let cell = |v: Option<f64>, prec: usize| v.map_or("-".to_owned(), |v| format!("{v:.prec$}"));
    for (name, s, t, r, verdict) in rows {
        let _ =
            writeln!(out, "{name:<22} {:>12} {:>12} {:>12}  {verdict}", cell(s, 2), cell(t, 2), cell(r, 3));
    }
    let _ = writeln!(
        out,
        "{:<22} {:>12} {:>12}",
        "appliances complete",
        format!("{}/{}", sim.completed, sim.appliances),
        format!("{}/{}", testbed.completed, testbed.appliances)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_and_the_table() {
        let sim = Side::new(vec![3.0, 1.0, 2.0, 4.0], 4, [100 << 20, 50 << 20, 10 << 20, 64 << 20]);
        assert_eq!((sim.completion_p50_s, sim.completion_max_s), (Some(2.0), Some(4.0)));
        assert_eq!(sim.origin_bytes, 64 << 20);
        let partial = Side::new(vec![2.2, 1.1], 4, [0, 0, 0, 128 << 20]);
        assert_eq!(partial.completion_max_s, None);
        let t = table(&sim, &partial, 64 << 20);
        assert!(t.contains("completion p50 (s)"), "{t}");
        assert!(t.contains("2/4"), "{t}");
        assert!(t.contains("NO (<= 1.05)"), "{t}");
        assert!(t.lines().any(|l| l.starts_with("completion p50") && l.contains("0.550")), "{t}");
    }
}
