//! The tracker's index in sled: the catalog (title: name and manifest) and the registry
//! (node: registration), written through on each publish and registration and read back into
//! the core at start.

use std::path::Path;

use anyhow::Context;
use fillmesh_protocol::messages::Registration;
use fillmesh_protocol::{Manifest, NodeId, TitleId};
use serde::{Deserialize, Serialize};

use crate::core::{Millis, Tracker};

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CatalogRecord {
    pub(super) name: String,
    pub(super) manifest: Manifest,
}

/// Why a record was not written to the index.
#[derive(Debug, thiserror::Error)]
pub(super) enum IndexError {
    #[error("writing the tracker's index")]
    Write(#[from] sled::Error),
    #[error("the task writing the tracker's index ended")]
    Task(#[from] tokio::task::JoinError),
}

/// The sled database and its two trees.
pub(super) struct Index {
    db: sled::Db,
    pub(super) catalog: sled::Tree,
    pub(super) registry: sled::Tree,
}

impl Index {
    /// Opens (or creates) the index in the tracker's data directory. Writes are flushed by
    /// [`Index::put`], not on a timer.
    pub(super) fn open(data: &Path) -> anyhow::Result<Self> {
        let db = sled::Config::new()
            .path(data.join("tracker-index"))
            .flush_every_ms(None)
            .open()
            .with_context(|| format!("opening the tracker's index in {}", data.display()))?;
        let catalog = db.open_tree("catalog")?;
        let registry = db.open_tree("registry")?;
        Ok(Self { db, catalog, registry })
    }

    /// Loads the persisted catalog and registry into the core, returning how many titles
    /// and nodes. Registered nodes come back unhealthy until they reconnect and heartbeat.
    pub(super) fn restore(&self, core: &mut Tracker, now: Millis) -> anyhow::Result<(usize, usize)> {
        let mut titles = 0;
        for entry in self.catalog.iter() {
            let (key, value) = entry?;
            let title =
                TitleId::from_bytes(key.as_ref().try_into().context("catalog key is not a title id")?);
            let record: CatalogRecord = postcard::from_bytes(&value).context("corrupt catalog record")?;
            core.publish(now, title, record.name, &record.manifest)?;
            titles += 1;
        }
        let mut nodes = 0;
        for entry in self.registry.iter() {
            let (key, value) = entry?;
            let node: NodeId = std::str::from_utf8(&key)?.parse()?;
            let registration: Registration =
                postcard::from_bytes(&value).context("corrupt registry record")?;
            core.register(now, node.clone(), registration);
            core.lost(now, &node);
            nodes += 1;
        }
        Ok((titles, nodes))
    }

    /// Writes one record to `tree` and flushes the index (an fsync) on a blocking thread, off
    /// the async executor: a slow disk delays this one request, never the others.
    pub(super) async fn put(
        &self,
        tree: &sled::Tree,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), IndexError> {
        let (db, tree) = (self.db.clone(), tree.clone());
        tokio::task::spawn_blocking(move || tree.insert(key, value).and_then(|_| db.flush()).map(|_| ()))
            .await??;
        Ok(())
    }

    /// Flushes what is left, at shutdown.
    pub(super) fn flush(&self) -> anyhow::Result<()> {
        self.db.flush()?;
        Ok(())
    }
}
