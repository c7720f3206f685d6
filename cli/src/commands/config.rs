//! `fillmesh config check FILE`: a config file of `fillmesh node` or `fillmesh tracker`
//! checked as a start would check it, and more, without starting anything.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::node::NodeArgs;
use super::tracker::TrackerArgs;
use crate::config::{self, ConfigFile};

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check FILE: TOML syntax, unknown keys (with the nearest known one), each value (with
    /// its line), missing keys, and conflicting or impossible settings. Exits 1 and lists
    /// every problem, or prints what the file configures.
    Check {
        /// The config file.
        file: PathBuf,
        /// Which command the file is for; by default the one that knows more of its keys
        /// (`node` on a tie).
        #[arg(long, value_parser = ["node", "tracker"])]
        r#for: Option<String>,
    },
}

/// Runs `fillmesh config ...`.
pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    let ConfigCommand::Check { file, r#for } = args.command;
    let role = match r#for.as_deref() {
        Some(role) => role.to_owned(),
        None => match ConfigFile::read(&file) {
            Ok(parsed)
                if config::unknown_keys::<TrackerArgs>(&parsed)
                    < config::unknown_keys::<NodeArgs>(&parsed) =>
            {
                "tracker".to_owned()
            }
            _ => "node".to_owned(),
        },
    };
    let checked = if role == "tracker" {
        config::check::<TrackerArgs>("tracker", &file)
    } else {
        config::check::<NodeArgs>("node", &file)
    };
    match checked {
        Ok(keys) => {
            fillmesh_net::say!(
                "{}: a valid `fillmesh {role}` configuration ({keys} keys set)",
                file.display()
            );
            Ok(())
        }
        Err(problems) => {
            for problem in &problems {
                eprintln!("{problem}");
            }
            anyhow::bail!(
                "{}: {} problem{} as a `fillmesh {role}` configuration",
                file.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            )
        }
    }
}
