//! What a run reports: the terminal table, the JSON document and the SVG plot.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::bounds::Bounds;
use crate::scenario::{Class, Scenario};
use crate::sim::{Outcome, Sample, CLASS_KEYS};

/// Min, mean and max of a capacity over the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    /// The smallest value (infinity when there are none).
    pub min: f64,
    /// The arithmetic mean (0 when there are none).
    pub mean: f64,
    /// The largest value (minus infinity when there are none).
    pub max: f64,
}

impl Spread {
    /// The spread of `v`, one value per appliance.
    pub fn of(v: &[f64]) -> Self {
        let n = v.len().max(1) as f64;
        Self {
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            mean: v.iter().sum::<f64>() / n,
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// One strategy's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyReport {
    /// The strategy's name, as `--strategy` takes it ([`Strategy::name`]).
    ///
    /// [`Strategy::name`]: crate::sim::Strategy::name
    pub strategy: String,
    /// Seconds from publishing; `null` when no appliance completed.
    pub completion_p50_s: Option<f64>,
    /// The 99th percentile (nearest rank) of the completed appliances' times, seconds from
    /// publishing; `null` when no appliance completed.
    pub completion_p99_s: Option<f64>,
    /// `null` unless every appliance completed.
    pub completion_max_s: Option<f64>,
    /// The scenario's lower bound, [`Bounds::bound_s`], the same for every strategy.
    pub bound_s: f64,
    /// `completion_max_s / bound_s`, at least 1 (nothing beats the bound); `null` unless every
    /// appliance completed.
    pub ratio_to_bound: Option<f64>,
    /// Bytes of completed chunk transfers from the origin (`bytes_by_class["origin"]`).
    pub origin_bytes: u64,
    /// `origin_bytes` in title sizes: 1.0 is the origin sending the title once.
    pub origin_bytes_per_title: f64,
    /// Keys "same_site", "same_region", "cross_region", "origin".
    pub bytes_by_class: BTreeMap<String, u64>,
    /// Appliances that came to hold the whole title.
    pub completed: usize,
    /// Appliances in the fleet, the origin not counted.
    pub appliances: usize,
    /// Bytes delivered by transfers that failures then cut off (delivered for nothing).
    pub wasted_bytes: u64,
    /// Players the flash crowds brought, one streaming session each.
    pub players: usize,
    /// Players steered to an appliance; the rest streamed from the origin.
    pub players_from_appliances: usize,
    /// Players whose session finished within 1% of its duration (full bitrate throughout).
    pub players_smooth: usize,
    /// Events the engine handled, each of them in `trace_hash`.
    pub events: u64,
    /// BLAKE3 of the run's event trace, hex: the same scenario, seed and strategy give the
    /// same hash on every machine.
    pub trace_hash: String,
    /// Wall-clock seconds the run took on this machine (not simulated time).
    pub wall_s: f64,
    /// `events / wall_s`: the engine's speed on this machine.
    pub events_per_s: f64,
    /// Plans asked of the tracker: `Tracker::plan` calls (per-chunk) or fill plans
    /// (fillmesh); 0 for origin and tiered.
    pub plan_calls: u64,
    /// Every message to or from the tracker over the chunks transferred.
    pub tracker_messages_per_chunk: f64,
    /// Fillmesh: the tracker messages by kind, each per appliance per second of its fill
    /// (publish to completion), the rates the tracker load benchmark sends.
    pub tracker_mix: Option<TrackerMix>,
}

/// Fillmesh: what appliances send the tracker while they fill, per appliance per second of
/// fill. Heartbeats are not simulated (one a second per appliance, filling or not).
#[derive(Debug, Clone, Serialize)]
pub struct TrackerMix {
    /// The rates' divisor: seconds of fill summed over the appliances that completed, each
    /// from publishing to its completion.
    pub fill_appliance_s: f64,
    /// Fill summaries sent (chunks gained as runs, bytes by class), one a second while an
    /// appliance fills.
    pub summaries_per_s: f64,
    /// Chunk runs in a summary, on average.
    pub runs_per_summary: f64,
    /// Chunks stored (fill transfers completed): no tracker message, the scale of the others.
    pub chunks_per_s: f64,
    /// Fill plans asked (`Fills`), each a request and an answer.
    pub plans_per_s: f64,
    /// Reports of a parent lost while a fetch from it was in flight.
    pub failure_reports_per_s: f64,
    /// Answers to a summary that told of a new layout epoch (each followed by a fill plan).
    pub epoch_notices_per_s: f64,
}

/// The JSON report. Rates are in bytes per second, as `Registration::upload_bps` is.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Appliances in the fleet, the origin not counted.
    pub appliances: usize,
    /// Regions of the topology.
    pub regions: usize,
    /// Sites in each region.
    pub sites_per_region: usize,
    /// The title's size in bytes.
    pub title_bytes: u64,
    /// The chunk size in bytes (a power of two).
    pub chunk_bytes: u64,
    /// The title's files: 1 for a one-file title, more for a package.
    pub files: usize,
    /// The title's chunks (a package's files each end in a chunk of their own).
    pub chunks: u64,
    /// The origin's upload.
    pub origin_upload_bps: f64,
    /// The scenario's appliance classes, as given (shares not normalised).
    pub appliance_classes: Vec<Class>,
    /// The appliances' uploads as placed (drawn from the classes with the seed).
    pub appliance_upload_bps: Spread,
    /// The appliances' downloads as placed.
    pub appliance_download_bps: Spread,
    /// Each site's uplink, each direction; `null` when sites are not limited.
    pub site_uplink_bps: Option<f64>,
    /// Each region's uplink, each direction; `null` when regions are not limited.
    pub region_uplink_bps: Option<f64>,
    /// Request-to-first-byte delay in seconds, keyed "same_site", "same_region",
    /// "cross_region", "origin".
    pub latency_s: BTreeMap<String, f64>,
    /// The scenario's seed, of every random choice in the run.
    pub seed: u64,
    /// Always "bytes per second": the unit of every rate in the report, for its readers.
    pub rate_unit: &'static str,
    /// BLAKE3 over the strategies' own trace hashes, in the order run.
    pub trace_hash: String,
    /// The scenario's lower bounds, against which `ratio_to_bound` is measured.
    pub bounds: Bounds,
    /// One entry per strategy, in the order run.
    pub strategies: Vec<StrategyReport>,
    /// Per strategy, the completion times (seconds from publishing, sorted): the plot's curves.
    #[serde(skip)]
    pub curves: Vec<(String, Vec<f64>)>,
    /// Per strategy, the fleet's state over time (`--samples`).
    #[serde(skip)]
    pub samples: Vec<(String, Vec<Sample>)>,
}

impl Report {
    /// The samples as CSV: one line per strategy and instant.
    pub fn samples_csv(&self) -> String {
        let mut out = String::from(
            "strategy,t_s,upload_used,origin_used,idle_holders,empty,flowing,requested,short,completed\n",
        );
        for (name, samples) in &self.samples {
            for s in samples {
                let _ = writeln!(
                    out,
                    "{name},{:.4},{:.4},{:.4},{},{},{},{},{},{}",
                    s.t_s,
                    s.upload_used,
                    s.origin_used,
                    s.idle_holders,
                    s.empty,
                    s.flowing,
                    s.requested,
                    s.short,
                    s.completed
                );
            }
        }
        out
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

impl StrategyReport {
    /// One strategy's figures from its outcome, with the scenario's bound (`bound_s`) and the
    /// wall-clock seconds the run took (`wall_s`).
    pub fn new(o: &Outcome, sc: &Scenario, bound_s: f64, wall_s: f64) -> Self {
        let max = (o.completed == o.appliances).then(|| o.completion_s.last().copied()).flatten();
        let bytes_by_class =
            CLASS_KEYS.iter().zip(o.bytes_by_class).map(|(k, v)| ((*k).to_owned(), v)).collect();
        Self {
            strategy: o.strategy.name().into(),
            completion_p50_s: percentile(&o.completion_s, 0.5),
            completion_p99_s: percentile(&o.completion_s, 0.99),
            completion_max_s: max,
            bound_s,
            ratio_to_bound: max.map(|m| m / bound_s),
            origin_bytes: o.bytes_by_class[3],
            origin_bytes_per_title: o.bytes_by_class[3] as f64 / sc.title_bytes as f64,
            bytes_by_class,
            completed: o.completed,
            appliances: o.appliances,
            wasted_bytes: o.wasted_bytes,
            players: o.players,
            players_from_appliances: o.players_from_appliances,
            players_smooth: o.players_smooth,
            events: o.events,
            trace_hash: o.trace_hash.clone(),
            wall_s,
            events_per_s: o.events as f64 / wall_s.max(1e-9),
            plan_calls: o.plan_calls,
            tracker_messages_per_chunk: o.tracker_messages as f64 / o.chunks_transferred.max(1) as f64,
            tracker_mix: (o.summaries > 0).then(|| {
                let t: f64 = o.completion_s.iter().sum::<f64>().max(1e-9);
                TrackerMix {
                    fill_appliance_s: t,
                    summaries_per_s: o.summaries as f64 / t,
                    runs_per_summary: o.summary_runs as f64 / o.summaries as f64,
                    chunks_per_s: o.chunks_transferred as f64 / t,
                    plans_per_s: o.plan_calls as f64 / t,
                    failure_reports_per_s: o.failure_reports as f64 / t,
                    epoch_notices_per_s: o.epoch_notices as f64 / t,
                }
            }),
        }
    }
}

impl Report {
    /// The terminal table: the scenario and its bound, one row per strategy (completion times,
    /// ratio to the bound, origin bytes per title, bytes by class in multiples of the title,
    /// tracker messages per chunk), then each strategy's tracker mix and, where there were
    /// any, its incomplete appliances, bytes lost to failures and players.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let f = self.title_bytes as f64;
        let _ = writeln!(
            s,
            "{} appliances ({} regions x {} sites), title {}{}, chunks {}, origin {}, bound {:.2} s \
             (Kumar-Ross {:.2} s{})",
            self.appliances,
            self.regions,
            self.sites_per_region,
            fillmesh_protocol::units::fmt_size(self.title_bytes),
            if self.files > 1 {
                format!(" in {} files ({} chunks)", self.files, self.chunks)
            } else {
                String::new()
            },
            fillmesh_protocol::units::fmt_size(self.chunk_bytes),
            fillmesh_protocol::units::fmt_rate(self.origin_upload_bps),
            self.bounds.bound_s,
            self.bounds.kumar_ross_s,
            match &self.bounds.cut_set_at {
                Some(at) => format!(", cut-set {:.2} s at {at}", self.bounds.cut_set_s),
                None => String::new(),
            }
        );
        let _ = writeln!(
            s,
            "{:<9} {:>9} {:>9} {:>9} {:>7} {:>12} {:>10} {:>12} {:>13} {:>8} {:>12}",
            "strategy",
            "p50 s",
            "p99 s",
            "max s",
            "ratio",
            "origin/title",
            "same_site",
            "same_region",
            "cross_region",
            "origin",
            "tracker/chunk"
        );
        let opt = |v: Option<f64>, prec: usize| v.map_or("-".to_owned(), |v| format!("{v:.prec$}"));
        for r in &self.strategies {
            let class = |k: &str| format!("{:.2}F", r.bytes_by_class.get(k).copied().unwrap_or(0) as f64 / f);
            let _ = writeln!(
                s,
                "{:<9} {:>9} {:>9} {:>9} {:>7} {:>12.3} {:>10} {:>12} {:>13} {:>8} {:>12.4}",
                r.strategy,
                opt(r.completion_p50_s, 2),
                opt(r.completion_p99_s, 2),
                opt(r.completion_max_s, 2),
                opt(r.ratio_to_bound, 3),
                r.origin_bytes_per_title,
                class("same_site"),
                class("same_region"),
                class("cross_region"),
                class("origin"),
                r.tracker_messages_per_chunk,
            );
        }
        let _ = writeln!(
            s,
            "(bytes by class in multiples F of the title size; trace {})",
            &self.trace_hash[..16]
        );
        for r in &self.strategies {
            if let Some(m) = &r.tracker_mix {
                let _ = writeln!(
                    s,
                    "{}: per appliance per second of fill: {:.3} summaries ({:.1} runs each), {:.4} plans, \
                     {:.4} failure reports, {:.4} epoch notices; {:.1} chunks",
                    r.strategy,
                    m.summaries_per_s,
                    m.runs_per_summary,
                    m.plans_per_s,
                    m.failure_reports_per_s,
                    m.epoch_notices_per_s,
                    m.chunks_per_s
                );
            }
        }
        for r in &self.strategies {
            if r.completed < r.appliances || r.players > 0 || r.wasted_bytes > 0 {
                let _ = writeln!(
                    s,
                    "{}: {}/{} complete, {} bytes cut off by failures, players {} ({} from appliances, {} smooth)",
                    r.strategy,
                    r.completed,
                    r.appliances,
                    r.wasted_bytes,
                    r.players,
                    r.players_from_appliances,
                    r.players_smooth
                );
            }
        }
        s
    }

    /// The fraction of appliances complete over time, one line per strategy, the bound marked.
    pub fn svg(&self) -> String {
        let (w, h) = (820.0, 500.0);
        let (left, right, top, bottom) = (70.0, 170.0, 40.0, 60.0);
        let pw = w - left - right;
        let ph = h - top - bottom;
        let mut xmax = self.bounds.bound_s;
        for (_, c) in &self.curves {
            if let Some(&last) = c.last() {
                xmax = xmax.max(last);
            }
        }
        // A logarithmic time axis when the strategies differ by orders of magnitude.
        let log = xmax > 20.0 * self.bounds.bound_s && self.bounds.bound_s > 0.0;
        let xmin = if log { 10f64.powf((self.bounds.bound_s / 2.0).log10().floor()) } else { 0.0 };
        let xmax = if log { 10f64.powf((xmax * 1.05).log10().ceil()) } else { nice(xmax * 1.05) };
        let n = self.appliances.max(1) as f64;
        let x = |t: f64| {
            if log {
                left + pw * (t.max(xmin) / xmin).ln() / (xmax / xmin).ln()
            } else {
                left + pw * t / xmax
            }
        };
        let ticks: Vec<f64> = if log {
            let mut v = Vec::new();
            let mut d = xmin;
            while d <= xmax * 1.0001 {
                for m in [1.0, 2.0, 5.0] {
                    if m * d <= xmax * 1.0001 {
                        v.push(m * d);
                    }
                }
                d *= 10.0;
            }
            v
        } else {
            (0..=5).map(|k| xmax * k as f64 / 5.0).collect()
        };
        let y = |f: f64| top + ph * (1.0 - f);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" font-size="14" text-anchor="middle">{} appliances, {} title, {} chunks: fraction complete over time</text>"#,
            left + pw / 2.0,
            self.appliances,
            fillmesh_protocol::units::fmt_size(self.title_bytes),
            fillmesh_protocol::units::fmt_size(self.chunk_bytes)
        );
        for &t in &ticks {
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
                x(t),
                top,
                top + ph,
                top + ph + 18.0,
                trim(t)
            );
        }
        for k in 0..=5 {
            let f = k as f64 / 5.0;
            let _ = writeln!(
                s,
                r##"<line x1="{0}" y1="{1:.1}" x2="{2}" y2="{1:.1}" stroke="#ddd"/><text x="{3}" y="{4:.1}" text-anchor="end">{5}</text>"##,
                left,
                y(f),
                left + pw,
                left - 6.0,
                y(f) + 4.0,
                trim(f)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">seconds after publishing{}</text>"#,
            left + pw / 2.0,
            h - 18.0,
            if log { " (logarithmic)" } else { "" }
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{0}" text-anchor="middle" transform="rotate(-90 18 {0})">fraction of appliances holding the title</text>"#,
            top + ph / 2.0
        );
        let bx = x(self.bounds.bound_s);
        let _ = writeln!(
            s,
            r##"<line x1="{bx:.1}" y1="{top}" x2="{bx:.1}" y2="{}" stroke="#000" stroke-dasharray="6 4"/><text x="{:.1}" y="{}" >bound {:.2} s</text>"##,
            top + ph,
            bx + 4.0,
            top + 14.0,
            self.bounds.bound_s
        );
        for (i, (name, c)) in self.curves.iter().enumerate() {
            let color = color(name);
            let mut pts = format!("{:.1},{:.1}", x(c.first().copied().unwrap_or(0.0)), y(0.0));
            let step = (c.len() / 600).max(1);
            let mut k = 0;
            while k < c.len() {
                let (t, f) = (c[k], k as f64 / n);
                let f2 = (k + 1) as f64 / n;
                let _ = write!(pts, " {:.1},{:.1} {:.1},{:.1}", x(t), y(f), x(t), y(f2));
                k = if k + step >= c.len() && k + 1 < c.len() { c.len() - 1 } else { k + step };
            }
            let _ =
                writeln!(s, r#"<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>"#);
            let ly = top + 20.0 + 20.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{0}" y1="{ly}" x2="{1}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{2}" y="{3}">{name}</text>"#,
                left + pw + 14.0,
                left + pw + 40.0,
                left + pw + 46.0,
                ly + 4.0
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

fn color(name: &str) -> &'static str {
    match name {
        "origin" => "#d62728",
        "tiered" => "#ff7f0e",
        "per-chunk" => "#9467bd",
        _ => "#1f77b4",
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Rounds an axis maximum up to 1, 2 or 5 times a power of ten.
fn nice(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}
