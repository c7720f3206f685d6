//! `fillmesh seed`: hands a file to a running origin (see [`fillmesh_node::origin::seed()`]) and prints
//! the title id.

use std::path::PathBuf;

use clap::Args;
use fillmesh_net::say;
use fillmesh_protocol::units;

use fillmesh_node::origin::{seed_with, Seeded};

#[derive(Debug, Args)]
pub struct SeedArgs {
    pub file: PathBuf,
    /// The origin's --http URL, e.g. http://127.0.0.1:8080
    #[arg(long)]
    pub origin: String,
    /// The title's name (default: the file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Chunk size, a power of two from 1KiB to 64MiB.
    #[arg(long, value_parser = units::parse_size, default_value = "1MiB")]
    pub chunk_size: u64,
    /// Publish the title urgent: appliances fill it at once, whatever their fill windows
    /// (`fillmesh node --fill-window`). A title the origin holds already is marked urgent
    /// without sending it again.
    #[arg(long)]
    pub urgent: bool,
}

/// Seeds, then prints the title id (and says on stderr when nothing had to be sent, or when
/// the tracker has not confirmed the title yet).
pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    match seed_with(&args.file, &args.origin, args.name, args.chunk_size, args.urgent).await? {
        Seeded::AlreadyHeld(id) => {
            if args.urgent {
                eprintln!("already seeded; marked urgent");
            } else {
                eprintln!("already seeded");
            }
            say!("{id}");
        }
        Seeded::Sent(id) => say!("{id}"),
        Seeded::Stored(id) => {
            eprintln!("stored at the origin; its tracker has not confirmed the title yet (the origin publishes it when it reaches the tracker)");
            say!("{id}");
        }
    }
    Ok(())
}
