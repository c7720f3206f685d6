//! `fillmesh sim`: the simulator's flags; the job itself is [`fillmesh_sims::job`].

use std::path::PathBuf;

use clap::Args;
use fillmesh_protocol::units::{parse_rate, parse_size};
use fillmesh_sims::job::SimArgs;
use fillmesh_sims::{Strategy, StrategyError};

/// The arguments of `fillmesh sim`.
#[derive(Debug, Args)]
pub struct SimCommand {
    /// A TOML scenario (topology, capacities, events); flags below override it.
    #[arg(long, value_name = "FILE.toml")]
    scenario: Option<PathBuf>,
    /// Number of appliances.
    #[arg(long, value_name = "N")]
    appliances: Option<usize>,
    /// Title size, e.g. 1GiB, 10GiB, 512MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    title_size: Option<u64>,
    /// Chunk size, a power of two, e.g. 1MiB, 16MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    chunk_size: Option<u64>,
    /// The title as a package of N files of equal size summing to the title size (each
    /// ending in a chunk of its own), as an HLS or DASH ladder is; 1, the default, is a
    /// one-file title.
    #[arg(long, value_name = "N")]
    files: Option<usize>,
    /// Seed of every random choice (placement, failures, players, planner ties).
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Which strategies to run: origin, tiered, per-chunk (the planner the node no longer
    /// runs, kept as a contrast), fillmesh (the fill the node ships), or all of them.
    #[arg(long, value_name = "NAME", default_value = "all", value_parser = parse_strategies)]
    strategy: Strategies,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
    /// Write an SVG plot of the fraction complete over time here.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Regions (appliances are spread evenly over regions x sites).
    #[arg(long)]
    regions: Option<usize>,
    /// Sites in each region.
    #[arg(long)]
    sites_per_region: Option<usize>,
    /// Every appliance's upload, e.g. 1Gbps (makes the fleet homogeneous).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    upload: Option<f64>,
    /// Every appliance's download, e.g. 2Gbps.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    download: Option<f64>,
    /// The origin's upload, e.g. 10Gbps.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    origin_upload: Option<f64>,
    /// Write the fleet's state over time as CSV here (upload in use, idle holders, ...).
    #[arg(long, value_name = "FILE.csv")]
    samples: Option<PathBuf>,
    /// Seconds between two samples (with --samples).
    #[arg(long, value_name = "S", default_value_t = 0.05)]
    sample_every: f64,
    /// Check the no-resource-over-capacity invariant after every re-solve (slower).
    #[arg(long)]
    check: bool,
    /// No progress indicator.
    #[arg(long)]
    quiet: bool,
}

/// The strategies `--strategy` names: one, or every one for `all`.
#[derive(Debug, Clone)]
struct Strategies(Vec<Strategy>);

/// `--strategy`: a strategy's name or `all`; an old name is refused with the one it has now.
fn parse_strategies(name: &str) -> Result<Strategies, StrategyError> {
    if name == "all" {
        return Ok(Strategies(Strategy::ALL.to_vec()));
    }
    Ok(Strategies(vec![Strategy::from_name(name)?]))
}

impl From<SimCommand> for SimArgs {
    fn from(c: SimCommand) -> Self {
        SimArgs {
            scenario: c.scenario,
            appliances: c.appliances,
            title_size: c.title_size,
            chunk_size: c.chunk_size,
            files: c.files,
            seed: c.seed,
            strategies: c.strategy.0,
            out: c.out,
            plot: c.plot,
            regions: c.regions,
            sites_per_region: c.sites_per_region,
            upload: c.upload,
            download: c.download,
            origin_upload: c.origin_upload,
            samples: c.samples,
            sample_every: c.sample_every,
            check: c.check,
            quiet: c.quiet,
        }
    }
}

/// Runs `fillmesh sim`.
pub fn run(command: SimCommand) -> anyhow::Result<()> {
    fillmesh_sims::job::run(command.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `fillmesh sim`'s flags, parsed as the binary parses them.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimCommand,
    }

    fn parse(args: &[&str]) -> Result<SimArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("fillmesh").chain(args.iter().copied())).map(|c| c.sim.into())
    }

    #[test]
    fn the_default_runs_every_strategy_with_the_shipped_fill_named_fillmesh() {
        let args = parse(&["--appliances", "64", "--title-size", "64MiB"]).unwrap();
        assert_eq!(args.strategies, Strategy::ALL);
        assert_eq!(
            args.strategies.iter().map(|s| s.name()).collect::<Vec<_>>(),
            ["origin", "tiered", "per-chunk", "fillmesh"]
        );
        assert_eq!((args.appliances, args.title_size), (Some(64), Some(64 << 20)));
        assert_eq!(args.files, None);
        assert_eq!(parse(&["--files", "5000"]).unwrap().files, Some(5000));
    }

    #[test]
    fn an_old_strategy_name_is_refused_with_its_new_name() {
        let err = parse(&["--strategy", "swarm"]).unwrap_err().to_string();
        assert!(err.contains("`swarm` is now called `fillmesh`"), "{err}");
        let err = parse(&["--strategy", "tracker"]).unwrap_err().to_string();
        assert!(err.contains("tracker"), "{err}");
        assert_eq!(parse(&["--strategy", "per-chunk"]).unwrap().strategies, [Strategy::PerChunk]);
        assert_eq!(parse(&["--strategy", "fillmesh"]).unwrap().strategies, [Strategy::Fillmesh]);
    }
}
