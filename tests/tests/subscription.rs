//! A parent's side of the swarming fill's subscriptions, with real processes: a child
//! subscribed to an appliance that is filling hears its held bitmap and then a HAVE for every
//! chunk it gains, so that what it was told covers the whole title by the end; an unknown
//! title is refused; an idle subscription hears a keepalive.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::{Duration, Instant};

use fillmesh_net::frame::read_frame;
use fillmesh_net::{rpc, MeshEndpoint, TlsIdentity, TransportLimits};
use fillmesh_protocol::messages::{ErrorCode, MeshRequest, MeshResponse};
use fillmesh_protocol::{ChunkBitmap, TitleId};
use fillmesh_tests::mesh::Mesh;

#[test]
fn a_child_hears_the_bitmap_then_a_have_for_every_chunk_its_parent_gains() {
    // 24 chunks, the origin at 4 MB/s: the appliances fill over about 6 s. The test speaks
    // as appliance 1 (a member, so appliance 0 serves it) to appliance 0.
    let mesh = Mesh::start("mesh", "4MB", 2, 24 << 20);
    let title: TitleId = mesh.title.parse().unwrap();
    let appliance = &mesh.appliances[0].1;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let key = fillmesh_net::identity::load_or_create(&mesh.appliances[1].0).unwrap();
        let endpoint = MeshEndpoint::client(
            "127.0.0.1".parse().unwrap(),
            TlsIdentity::new(&key).unwrap(),
            TransportLimits::default(),
        )
        .unwrap();
        let io = Duration::from_secs(10);
        let deadline = Instant::now() + Duration::from_secs(30);
        let (first, mut send, mut recv) = loop {
            let conn = endpoint
                .connect_within(appliance.mesh.parse().unwrap(), appliance.peer.parse().unwrap(), io)
                .await;
            if let Err(e) = &conn {
                eprintln!("not yet: {e}");
            }
            if let Ok(conn) = conn {
                let unknown = TitleId::of(b"no such title");
                if let Ok((MeshResponse::Error(e), ..)) =
                    rpc::subscribe::<_, MeshResponse>(&conn, &MeshRequest::Subscribe { title: unknown }, io)
                        .await
                {
                    assert_eq!(e.code, ErrorCode::UnknownTitle, "{e:?}");
                }
                match rpc::subscribe::<_, MeshResponse>(&conn, &MeshRequest::Subscribe { title }, io).await {
                    Ok(sub) if !matches!(sub.0, MeshResponse::Error(_)) => break sub,
                    other => eprintln!("not yet: {:?}", other.map(|s| s.0)),
                }
            }
            assert!(
                Instant::now() < deadline,
                "no subscription to the appliance within 30 s: {}",
                appliance.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut told: ChunkBitmap = match first {
            MeshResponse::Held { title: t, held } if t == title => held,
            other => panic!("the first answer is not the held bitmap: {other:?}"),
        };
        let at_start = told.count();
        let chunks = told.len();
        let mut haves = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !told.is_full() {
            assert!(Instant::now() < deadline, "told of {} of {chunks} chunks in 120 s", told.count());
            match read_frame::<MeshResponse>(&mut recv, Duration::from_secs(30)).await.unwrap() {
                MeshResponse::Have { title: t, chunks: gained } => {
                    assert_eq!(t, title);
                    for c in gained {
                        assert!(c < chunks, "a HAVE past the end: {c}");
                        told.insert(c);
                        haves += 1;
                    }
                }
                // Sent again only when the subscriber fell behind the store's feed.
                MeshResponse::Held { held, .. } => told = held,
                other => panic!("unexpected on a subscription: {other:?}"),
            }
        }
        assert!(at_start < chunks, "the appliance held the title whole before the test subscribed");
        assert!(haves > 0);
        // Now idle: a keepalive (an empty HAVE) arrives within the parent's interval.
        match read_frame::<MeshResponse>(&mut recv, Duration::from_secs(15)).await.unwrap() {
            MeshResponse::Have { chunks, .. } => assert!(chunks.is_empty(), "{chunks:?}"),
            other => panic!("unexpected on an idle subscription: {other:?}"),
        }
        // The child ends it.
        send.finish().unwrap();
    });
    // What it was told matches what the tracker heard from the appliance.
    mesh.wait_complete(Duration::from_secs(60));
}
