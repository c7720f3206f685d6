//! Test doubles built from the node library: a node that lies, for tests to prove that lies
//! are caught. They exist only here, never as a switch in the release binary.

use std::sync::Arc;

use bytes::Bytes;
use fillmesh_node::serve::ChunkSource;
use fillmesh_node::store::{Store, StoreError};
use fillmesh_protocol::{ChunkBitmap, Manifest, TitleId};

/// What a lying node falsifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// One bit of every chunk it serves (the middle byte's bit 6).
    ChunkBit,
    /// One bit of the first chaining value of every manifest it hands out.
    Manifest,
}

/// Serves from a real store, falsifying what `lie` says.
#[derive(Debug)]
pub struct Lying {
    pub store: Arc<Store>,
    pub lie: Lie,
}

impl Lying {
    pub fn source(store: Arc<Store>, lie: Lie) -> Arc<dyn ChunkSource> {
        Arc::new(Self { store, lie })
    }
}

impl ChunkSource for Lying {
    fn manifest(&self, title: &TitleId) -> Option<Arc<Manifest>> {
        let real = self.store.manifest(title)?;
        if self.lie != Lie::Manifest {
            return Some(real);
        }
        let mut cvs = real.chaining_values().to_vec();
        cvs[0][0] ^= 1;
        Manifest::new(real.len(), real.chunk_size(), cvs).ok().map(Arc::new)
    }

    fn held(&self, title: &TitleId) -> Option<ChunkBitmap> {
        self.store.held(title)
    }

    fn read_chunk(&self, title: &TitleId, index: u32) -> Result<Bytes, StoreError> {
        let bytes = self.store.read_chunk(title, index)?;
        if self.lie != Lie::ChunkBit {
            return Ok(bytes);
        }
        let mut bytes = bytes.to_vec();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        Ok(Bytes::from(bytes))
    }

    fn name(&self, title: &TitleId) -> Option<String> {
        self.store.info(title).map(|i| i.name)
    }
}
