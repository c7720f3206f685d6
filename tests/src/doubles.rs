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
    /// Its subscribers are told it holds every chunk of every title it knows, and it serves
    /// none (`NotHeld` to every chunk request), so that however far its own fill got, what it
    /// advertises is a lie.
    AdvertisesAll,
    /// Its subscribers get a held bitmap one chunk longer than the title.
    OversizedBitmap,
    /// Its subscribers get HAVEs for every chunk over and over (50 times the title, paced).
    FloodsHaves,
    /// Serves honestly, with a keepalive of a millisecond ([`LyingNode::start`] sets it), so
    /// that its subscribers get empty HAVEs a thousand times a second.
    FloodsKeepalives,
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
        let real = self.store.held(title)?;
        match self.lie {
            Lie::AdvertisesAll => ChunkBitmap::full(real.len()).ok(),
            Lie::OversizedBitmap => {
                let mut longer = ChunkBitmap::new(real.len() + 1).ok()?;
                for c in real.iter() {
                    longer.insert(c);
                }
                Some(longer)
            }
            _ => Some(real),
        }
    }

    fn holds(&self, title: &TitleId, chunks: std::ops::Range<u32>) -> bool {
        // Players are served honestly from what is held: the lies are for subscribers.
        self.store.holds(title, chunks)
    }

    fn watch_gained(&self) -> Option<tokio::sync::broadcast::Receiver<(TitleId, u32)>> {
        if self.lie != Lie::FloodsHaves {
            return Some(self.store.watch_gained());
        }
        let (tx, rx) = tokio::sync::broadcast::channel(4096);
        let store = self.store.clone();
        // Bounded: 50 times each title's chunks, 64 at a time, then it stops.
        std::thread::spawn(move || {
            // The subscription reads the held bitmap after this: the title is in the store by
            // the time this looks.
            std::thread::sleep(std::time::Duration::from_millis(50));
            for info in store.titles() {
                let n = info.manifest.chunk_count().max(1);
                for k in 0..50 * n {
                    if tx.send((info.title, k % n)).is_err() {
                        return;
                    }
                    if k % 64 == 63 {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                }
            }
        });
        Some(rx)
    }

    fn read_chunk(&self, title: &TitleId, index: u32) -> Result<Bytes, StoreError> {
        if self.lie == Lie::AdvertisesAll {
            return Err(StoreError::NotHeld { title: *title, index });
        }
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

/// A node run in this process that serves through [`Lying`], until [`LyingNode::stop`].
#[derive(Debug)]
pub struct LyingNode {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl LyingNode {
    /// Starts `config` in `rt`, its mesh and players served through [`Lying`] with `lie`.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        mut config: fillmesh_node::daemon::NodeConfig,
        lie: Lie,
    ) -> Self {
        if lie == Lie::FloodsKeepalives {
            config.serve.keepalive = std::time::Duration::from_millis(1);
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            fillmesh_node::daemon::run_with(config, shutdown, move |store| {
                let liar = Lying::source(store, lie);
                fillmesh_node::daemon::Sources { mesh: liar.clone(), players: liar }
            })
            .await
            .map_err(|e| e.to_string())
        });
        Self { stop, task }
    }

    /// Stops it and waits for it to end; panics if it failed.
    pub fn stop(self, rt: &tokio::runtime::Runtime) {
        let _ = self.stop.send(());
        let ended = rt.block_on(self.task).expect("the lying node's task");
        ended.expect("the lying node");
    }
}
