//! `fillmesh keys`: the playback keys trackers sign players' tokens with, listed, added
//! (rotation: the new key signs, the old ones stay accepted until their tokens expire) and
//! retired (at once), in a lone tracker's data directory or in a fleet's etcd. A running
//! tracker takes the change within seconds, and appliances with its next epoch.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use fillmesh_tracker::server::keys::{self, KeyOp, KeyStore};

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,
    /// The data directory of a lone tracker (its `playback-keys.json`).
    #[arg(long, global = true, conflicts_with = "etcd")]
    pub data: Option<PathBuf>,
    /// etcd endpoints of a fleet of trackers (comma-separated or repeated).
    #[arg(long, global = true, value_delimiter = ',', value_name = "URL")]
    pub etcd: Vec<String>,
    /// The fleet's key prefix in etcd.
    #[arg(long, global = true, default_value = "/fillmesh/")]
    pub etcd_prefix: String,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// One line per key: its id, when it was made, and whether it signs or is only accepted.
    List,
    /// A new key, which signs from now on; every other key stays accepted for --keep seconds
    /// (the tokens they signed expire meanwhile), then drops out.
    Add {
        /// Seconds the keys it supersedes stay accepted: at least the trackers' --token-ttl.
        #[arg(long, default_value_t = keys::DEFAULT_KEEP.as_secs(), value_parser = clap::value_parser!(u64).range(0..=30 * 86_400))]
        keep: u64,
    },
    /// Removes the key ID at once: tokens it signed are refused (reason `key`).
    Retire {
        /// The key's id, as `list` prints it.
        id: String,
    },
}

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let store = match (args.data, args.etcd.is_empty()) {
        (Some(dir), true) => KeyStore::Dir(dir),
        (None, false) => {
            let mut prefix = args.etcd_prefix;
            if !prefix.ends_with('/') {
                prefix.push('/');
            }
            KeyStore::Etcd { endpoints: args.etcd, prefix }
        }
        _ => anyhow::bail!("give --data DIR (a lone tracker) or --etcd URL (a fleet)"),
    };
    match args.action {
        KeysAction::List => {
            let records = store.read().await?;
            anyhow::ensure!(
                !records.is_empty(),
                "no playback keys yet: a tracker makes the first when it starts"
            );
            for line in keys::describe(&records, keys::unix_now()) {
                fillmesh_net::say!("{line}");
            }
        }
        KeysAction::Add { keep } => {
            fillmesh_net::say!("{}", store.change(&KeyOp::Add { keep: Duration::from_secs(keep) }).await?)
        }
        KeysAction::Retire { id } => fillmesh_net::say!("{}", store.change(&KeyOp::Retire(id)).await?),
    }
    Ok(())
}
