//! A simulation job as `fillmesh sim` runs it: the scenario (a file or the defaults) with
//! overrides, the strategies, the run, and the outputs. The command line's flags that fill
//! [`SimArgs`] are the `fillmesh` binary's (`fillmesh-cli`): this crate has no clap.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use crate::bounds;
use crate::report::{Report, Spread, StrategyReport};
use crate::scenario::Scenario;
use crate::sim::{self, Options, Strategy};

/// A simulation: filling a title over thousands of appliances with the tracker's own fill
/// layouts and each appliance's swarm, as the node does, next to the contrast strategies.
#[derive(Debug, Clone)]
pub struct SimArgs {
    /// A TOML scenario (topology, capacities, events); flags below override it.
    pub scenario: Option<PathBuf>,
    /// Number of appliances.
    pub appliances: Option<usize>,
    /// Title size, e.g. 1GiB, 10GiB, 512MiB.
    pub title_size: Option<u64>,
    /// Chunk size, a power of two, e.g. 1MiB, 16MiB.
    pub chunk_size: Option<u64>,
    /// The title as a package of this many files of equal size (1: a one-file title).
    pub files: Option<usize>,
    /// Seed of every random choice (placement, failures, players, planner ties).
    pub seed: Option<u64>,
    /// Which strategies to run, in this order: [`Strategy::ALL`] by default.
    pub strategies: Vec<Strategy>,
    /// Write the JSON report here.
    pub out: Option<PathBuf>,
    /// Write an SVG plot of the fraction complete over time here.
    pub plot: Option<PathBuf>,
    /// Regions (appliances are spread evenly over regions x sites).
    pub regions: Option<usize>,
    /// Sites in each region.
    pub sites_per_region: Option<usize>,
    /// Every appliance's upload, e.g. 1Gbps (makes the fleet homogeneous).
    pub upload: Option<f64>,
    /// Every appliance's download, e.g. 2Gbps.
    pub download: Option<f64>,
    /// The origin's upload, e.g. 10Gbps.
    pub origin_upload: Option<f64>,
    /// Write the fleet's state over time as CSV here (upload in use, idle holders, ...).
    pub samples: Option<PathBuf>,
    /// Seconds between two samples (with --samples).
    pub sample_every: f64,
    /// Check the no-resource-over-capacity invariant after every re-solve (slower).
    pub check: bool,
    /// No progress indicator.
    pub quiet: bool,
}

impl SimArgs {
    /// The scenario: the file (or the defaults) with the flags applied.
    pub fn scenario(&self) -> anyhow::Result<Scenario> {
        let mut sc = match &self.scenario {
            Some(p) => Scenario::from_file(p)?,
            None => Scenario::default(),
        };
        if let Some(v) = self.appliances {
            sc.appliances = v;
        }
        if let Some(v) = self.title_size {
            sc.title_bytes = v;
        }
        if let Some(v) = self.chunk_size {
            sc.chunk_bytes = v;
        }
        if let Some(v) = self.files {
            sc.files = v;
        }
        if let Some(v) = self.seed {
            sc.seed = v;
        }
        if let Some(v) = self.regions {
            sc.regions = v;
        }
        if let Some(v) = self.sites_per_region {
            sc.sites_per_region = v;
        }
        if self.upload.is_some() || self.download.is_some() {
            let mut c = sc.classes[0].clone();
            c.share = 1.0;
            c.upload_bps = self.upload.unwrap_or(c.upload_bps);
            c.download_bps = self.download.unwrap_or(c.download_bps);
            sc.classes = vec![c];
        }
        if let Some(v) = self.origin_upload {
            sc.origin_upload_bps = v;
        }
        sc.validate()?;
        Ok(sc)
    }
}

impl Default for SimArgs {
    /// The scenario's defaults, every strategy, no outputs but the table.
    fn default() -> Self {
        Self {
            scenario: None,
            appliances: None,
            title_size: None,
            chunk_size: None,
            files: None,
            seed: None,
            strategies: Strategy::ALL.to_vec(),
            out: None,
            plot: None,
            regions: None,
            sites_per_region: None,
            upload: None,
            download: None,
            origin_upload: None,
            samples: None,
            sample_every: 0.05,
            check: false,
            quiet: false,
        }
    }
}

/// Runs the strategies over one scenario and builds the report.
pub fn simulate(sc: &Scenario, strategies: &[Strategy], opts: &Options, progress: bool) -> Report {
    let fleet = sim::place(sc);
    let b = bounds::compute(sc, &fleet);
    let mut reports = Vec::new();
    let mut curves = Vec::new();
    let mut samples = Vec::new();
    let mut hasher = blake3::Hasher::new();
    for &s in strategies {
        let started = Instant::now();
        let tty = std::io::stderr().is_terminal();
        let mut last = Instant::now();
        let mut show = |t: f64, done: usize, n: usize| {
            let every = if tty { 0.2 } else { 10.0 };
            if last.elapsed().as_secs_f64() < every && done < n {
                return;
            }
            last = Instant::now();
            let mut e = std::io::stderr();
            let _ = if tty {
                write!(e, "\r{:<9} simulated {t:9.2} s, {done}/{n} complete ", s.name())
            } else {
                writeln!(e, "{}: simulated {t:.2} s, {done}/{n} complete", s.name())
            };
        };
        let o = if progress { sim::run(sc, s, opts, Some(&mut show)) } else { sim::run(sc, s, opts, None) };
        if progress && tty {
            eprintln!();
        }
        let wall = started.elapsed().as_secs_f64();
        hasher.update(o.trace_hash.as_bytes());
        reports.push(StrategyReport::new(&o, sc, b.bound_s, wall));
        samples.push((s.name().to_owned(), o.samples));
        curves.push((s.name().to_owned(), o.completion_s));
    }
    let keys = ["same_site", "same_region", "cross_region", "origin"];
    Report {
        appliances: sc.appliances,
        regions: sc.regions,
        sites_per_region: sc.sites_per_region,
        title_bytes: sc.title_bytes,
        chunk_bytes: sc.chunk_bytes,
        files: sc.files,
        chunks: sc.chunks(),
        origin_upload_bps: sc.origin_upload_bps,
        appliance_classes: sc.classes.clone(),
        appliance_upload_bps: Spread::of(&fleet.upload_bps),
        appliance_download_bps: Spread::of(&fleet.download_bps),
        site_uplink_bps: sc.site_uplink_bps,
        region_uplink_bps: sc.region_uplink_bps,
        latency_s: keys.iter().zip(sc.latency_s).map(|(k, v)| ((*k).to_owned(), v)).collect(),
        seed: sc.seed,
        rate_unit: "bytes per second",
        trace_hash: hasher.finalize().to_hex().to_string(),
        bounds: b,
        strategies: reports,
        curves,
        samples,
    }
}

/// Runs the job: prints the table, writes the outputs asked for.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    let sc = args.scenario()?;
    let opts = Options {
        check_capacity: args.check,
        sample_every_s: args.samples.is_some().then_some(args.sample_every),
        ..Options::default()
    };
    let report = simulate(&sc, &args.strategies, &opts, !args.quiet);
    print!("{}", report.table());
    if let Some(p) = &args.out {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(p, json + "\n").with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.samples {
        std::fs::write(p, report.samples_csv()).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.plot {
        std::fs::write(p, report.svg()).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
