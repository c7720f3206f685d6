//! `fillmesh-sim`: the simulator on its own (the same as `fillmesh sim`).

use clap::Parser;

/// The same allocator as the `fillmesh` binary, which runs `fillmesh sim`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "fillmesh-sim", version, about)]
struct Cli {
    #[command(flatten)]
    args: fillmesh_sims::cli::SimArgs,
}

fn main() -> anyhow::Result<()> {
    fillmesh_sims::cli::run(Cli::parse().args)
}
