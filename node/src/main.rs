//! The `fillmesh` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use fillmesh_node::id::{b3sum_line, title_id_of_file};

#[derive(Debug, Parser)]
#[command(name = "fillmesh", version, about = "Peer-assisted content distribution overlay")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the title id of each FILE, in the same form as `b3sum FILE`.
    Id {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fillmesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Id { files } => {
            let mut failed = 0usize;
            for path in &files {
                match title_id_of_file(path).with_context(|| format!("{}", path.display())) {
                    Ok(id) => println!("{}", b3sum_line(&id, &path.to_string_lossy())),
                    Err(e) => {
                        eprintln!("fillmesh: {e:#}");
                        failed += 1;
                    }
                }
            }
            anyhow::ensure!(failed == 0, "{failed} of {} files could not be read", files.len());
            Ok(())
        }
    }
}
