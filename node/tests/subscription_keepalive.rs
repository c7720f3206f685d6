//! A subscription's keepalive is due a set time after the parent last wrote to it, however
//! busy the parent's store is with other titles: a parent filling one title must still be
//! heard by a child subscribed to another (a child lets go of a parent silent for 20 s).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fillmesh_net::frame::read_frame;
use fillmesh_net::{identity, rpc, MeshEndpoint, TlsIdentity, TransportLimits, Trust};
use fillmesh_node::serve::{ChunkSource, ServeLimits, Server};
use fillmesh_node::store::StoreError;
use fillmesh_protocol::messages::{MeshRequest, MeshResponse, Role};
use fillmesh_protocol::{ChunkBitmap, ChunkSize, Manifest, TitleId};
use tokio::sync::broadcast;

/// Holds one whole title and gains chunks of another all the time (fed by the test).
struct Busy {
    title: TitleId,
    manifest: Arc<Manifest>,
    gained: broadcast::Sender<(TitleId, u32)>,
}

impl ChunkSource for Busy {
    fn manifest(&self, title: &TitleId) -> Option<Arc<Manifest>> {
        (*title == self.title).then(|| self.manifest.clone())
    }
    fn held(&self, title: &TitleId) -> Option<ChunkBitmap> {
        (*title == self.title).then(|| ChunkBitmap::full(self.manifest.chunk_count()).unwrap())
    }
    fn read_chunk(&self, title: &TitleId, index: u32) -> Result<Bytes, StoreError> {
        Err(StoreError::NotHeld { title: *title, index })
    }
    fn watch_gained(&self) -> Option<broadcast::Receiver<(TitleId, u32)>> {
        Some(self.gained.subscribe())
    }
}

#[test]
fn an_idle_subscription_hears_its_keepalive_while_the_parent_gains_other_titles() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let data = vec![7u8; 3 << 20];
        let (title, manifest) = Manifest::from_bytes(&data, ChunkSize::new(1 << 20).unwrap()).unwrap();
        let other = TitleId::of(b"another title, being filled");
        let (gained, _) = broadcast::channel(64);
        let source = Arc::new(Busy { title, manifest: Arc::new(manifest), gained: gained.clone() });

        let child_key = identity::ephemeral();
        let limits = ServeLimits { keepalive: Duration::from_millis(300), ..ServeLimits::default() };
        let server =
            Server::new(source, Trust::new([identity::peer_id(&child_key)]), limits, None, Role::Appliance);
        let parent_key = identity::ephemeral();
        let parent = MeshEndpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            TlsIdentity::new(&parent_key).unwrap(),
            TransportLimits::default(),
        )
        .unwrap();
        let addr = parent.local_addr().unwrap();
        let serving = tokio::spawn(server.run(parent.clone()));
        // The parent's store gains a chunk of the other title every 50 ms, for the whole test.
        let feeding = tokio::spawn(async move {
            for c in 0..u32::MAX {
                let _ = gained.send((other, c % 1000));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });

        let child = MeshEndpoint::client(
            "127.0.0.1".parse().unwrap(),
            TlsIdentity::new(&child_key).unwrap(),
            TransportLimits::default(),
        )
        .unwrap();
        let io = Duration::from_secs(5);
        let conn = child.connect_within(addr, identity::peer_id(&parent_key), io).await.unwrap();
        let (first, _send, mut recv) =
            rpc::subscribe::<_, MeshResponse>(&conn, &MeshRequest::Subscribe { title }, io).await.unwrap();
        assert!(
            matches!(first, MeshResponse::Held { title: t, ref held } if t == title && held.is_full()),
            "{first:?}"
        );
        // Three keepalives, each well within the child's patience: 5 s here for a 300 ms
        // keepalive (before this was fixed, the other title's chunks put it off for ever).
        let started = Instant::now();
        for n in 0..3 {
            match read_frame::<MeshResponse>(&mut recv, Duration::from_secs(5)).await {
                Ok(MeshResponse::Have { title: t, chunks }) => {
                    assert_eq!(t, title);
                    assert!(chunks.is_empty(), "nothing of this title was gained: {chunks:?}");
                }
                other => panic!("keepalive {n}: {other:?} after {:?}", started.elapsed()),
            }
        }
        feeding.abort();
        conn.close(0u32.into(), b"done");
        parent.close();
        child.close();
        serving.abort();
    });
}
