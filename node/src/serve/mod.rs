//! Giving chunks: the mesh server ([`mesh`], trusted peers, ALPN `fillmesh/1`) and the player
//! server ([`players`], HTTP/3, ALPN `h3`, and [`https`], the same answers over HTTPS on TCP), both reading from a [`ChunkSource`] and sharing
//! the node's rate buckets (`classes`). The daemon routes each ALPN to its server on one endpoint.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use fillmesh_protocol::{ChunkBitmap, Manifest, TitleId};

use crate::store::{Store, StoreError};

pub mod gate;
pub mod https;
pub mod mesh;
#[cfg(test)]
mod package_tests;
mod path;
pub mod players;
mod range;
pub mod reads;

pub use gate::Gate;
pub use mesh::{ServeLimits, ServeStats, Server};
pub use players::{Drain, PlayerLimits, PlayerMetrics, PlayerServer};
pub use reads::Reads;

/// What a node serves from. The store is the real one; tests put doubles here (a peer that
/// lies), which is why serving goes through a trait rather than a runtime switch.
pub trait ChunkSource: Send + Sync + 'static {
    /// The manifest of `title`, if the source knows the title (whether or not it holds any
    /// of its chunks); served to peers and players as it is.
    fn manifest(&self, title: &TitleId) -> Option<Arc<Manifest>>;
    /// Which chunks of `title` are held (a copy of the whole bitmap); `None` for an unknown
    /// title. Subscriptions start from it.
    fn held(&self, title: &TitleId) -> Option<ChunkBitmap>;
    /// Whether every chunk of `chunks` is held (false for an unknown title). The player
    /// server asks this for every request; a source that can answer without copying the
    /// whole bitmap (128 KiB for a 1 TiB title of 1 MiB chunks) should.
    fn holds(&self, title: &TitleId, chunks: Range<u32>) -> bool {
        self.held(title).is_some_and(|h| chunks.into_iter().all(|i| h.contains(i)))
    }
    /// The bytes of a held chunk, verified.
    fn read_chunk(&self, title: &TitleId, index: u32) -> Result<Bytes, StoreError>;
    /// The same for a chunk served in part, whose other parts are likely asked for soon (a
    /// source may keep it a moment).
    fn read_chunk_part(&self, title: &TitleId, index: u32) -> Result<Bytes, StoreError> {
        self.read_chunk(title, index)
    }
    /// Chunks as they become held from now on, for the HAVEs of subscriptions (`None`: this
    /// source never gains any, and subscribers get its bitmap alone).
    fn watch_gained(&self) -> Option<tokio::sync::broadcast::Receiver<(TitleId, u32)>> {
        None
    }
    /// The title's name, where known (for a player's `Content-Type`).
    fn name(&self, _title: &TitleId) -> Option<String> {
        None
    }
}

impl ChunkSource for Store {
    fn manifest(&self, title: &TitleId) -> Option<Arc<Manifest>> {
        Store::manifest(self, title)
    }
    fn held(&self, title: &TitleId) -> Option<ChunkBitmap> {
        Store::held(self, title)
    }
    fn holds(&self, title: &TitleId, chunks: Range<u32>) -> bool {
        Store::holds(self, title, chunks)
    }
    fn read_chunk(&self, title: &TitleId, index: u32) -> Result<Bytes, StoreError> {
        Store::read_chunk(self, title, index)
    }
    fn read_chunk_part(&self, title: &TitleId, index: u32) -> Result<Bytes, StoreError> {
        Store::read_chunk_part(self, title, index)
    }
    fn name(&self, title: &TitleId) -> Option<String> {
        self.info(title).map(|i| i.name).filter(|n| !n.is_empty())
    }
    fn watch_gained(&self) -> Option<tokio::sync::broadcast::Receiver<(TitleId, u32)>> {
        Some(Store::watch_gained(self))
    }
}
