//! The router, the trust gate, the request layer and the pool, over real QUIC on 127.0.0.1.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use fillmesh_net::frame::{read_frame, write_all};
use fillmesh_net::{
    close, identity, rpc, trust, MeshEndpoint, Pool, Router, TlsIdentity, TransportLimits, Trust,
};
use fillmesh_protocol::messages::{ErrorCode, ErrorReply, MeshRequest, MeshResponse};
use fillmesh_protocol::{TitleId, ALPN};
use prometheus_client::metrics::counter::Counter;

const IO: Duration = Duration::from_secs(5);

fn endpoint() -> MeshEndpoint {
    let tls = TlsIdentity::new(&identity::ephemeral()).unwrap();
    MeshEndpoint::bind("127.0.0.1:0".parse().unwrap(), tls, TransportLimits::default()).unwrap()
}

fn error(message: &str) -> MeshResponse {
    MeshResponse::Error(ErrorReply { code: ErrorCode::Internal, message: message.into() })
}

/// A server on the mesh ALPN behind the trust gate: a manifest request is answered after
/// `slow`, a chunk request at once; chunk 7 gets bytes that are no frame at all.
fn serve(server: &MeshEndpoint, trusted: Trust, refused: Counter, slow: Duration) {
    let handler = move |conn: quinn::Connection, _peer| async move {
        rpc::serve(&conn, |mut send, mut recv| async move {
            let Ok(request) = read_frame::<MeshRequest>(&mut recv, IO).await else { return };
            match request {
                MeshRequest::Manifest { .. } => {
                    tokio::time::sleep(slow).await;
                    let _ = rpc::reply(&mut send, &error("slow"), IO).await;
                }
                MeshRequest::Chunk { index: 7, .. } => {
                    let _ = write_all(&mut send, &[0xff; 8], IO).await;
                    let _ = send.finish();
                }
                _ => {
                    let _ = rpc::reply(&mut send, &error("fast"), IO).await;
                }
            }
        })
        .await
    };
    let router = Router::new().route(ALPN, trust::gate(trusted, refused, "peer", handler));
    tokio::spawn(router.run(server.clone()));
}

fn message(r: MeshResponse) -> String {
    match r {
        MeshResponse::Error(e) => e.message,
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test]
async fn each_request_runs_as_its_own_task_so_a_slow_one_holds_up_no_other() {
    let (server, client) = (endpoint(), endpoint());
    serve(&server, Trust::new([client.peer_id()]), Counter::default(), Duration::from_secs(3));
    let conn = client.connect_within(server.local_addr().unwrap(), server.peer_id(), IO).await.unwrap();
    let title = TitleId::of(b"t");
    let manifest = MeshRequest::Manifest { title };
    let order = std::sync::Mutex::new(Vec::new());
    let slow = async {
        let answer = rpc::call::<_, MeshResponse>(&conn, &manifest, IO).await;
        order.lock().unwrap().push("slow");
        answer
    };
    let fast = async {
        // Sent after the slow request is on its way.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = rpc::call::<_, MeshResponse>(&conn, &MeshRequest::Chunk { title, index: 0 }, IO).await;
        order.lock().unwrap().push("fast");
        answer
    };
    let (slow, fast) = tokio::join!(slow, fast);
    assert_eq!(message(fast.unwrap()), "fast");
    assert_eq!(message(slow.unwrap()), "slow");
    assert_eq!(*order.lock().unwrap(), ["fast", "slow"], "the fast request waited for the slow one");
}

#[tokio::test]
async fn a_malformed_answer_is_told_apart_from_a_lost_connection() {
    let (server, client) = (endpoint(), endpoint());
    serve(&server, Trust::new([client.peer_id()]), Counter::default(), Duration::ZERO);
    let conn = client.connect_within(server.local_addr().unwrap(), server.peer_id(), IO).await.unwrap();
    let e =
        rpc::call::<_, MeshResponse>(&conn, &MeshRequest::Chunk { title: TitleId::of(b"t"), index: 7 }, IO)
            .await
            .unwrap_err();
    assert!(e.is_malformed() && !e.is_connection_lost(), "{e:?}");
    conn.close(0u32.into(), b"bye");
    let e =
        rpc::call::<_, MeshResponse>(&conn, &MeshRequest::Chunk { title: TitleId::of(b"t"), index: 0 }, IO)
            .await
            .unwrap_err();
    assert!(e.is_connection_lost() && !e.is_malformed(), "{e:?}");
}

#[tokio::test]
async fn the_gate_closes_an_untrusted_peer_and_counts_it() {
    let (server, stranger) = (endpoint(), endpoint());
    let refused = Counter::default();
    serve(&server, Trust::new([]), refused.clone(), Duration::ZERO);
    let conn = stranger.connect_within(server.local_addr().unwrap(), server.peer_id(), IO).await.unwrap();
    let e =
        rpc::call::<_, MeshResponse>(&conn, &MeshRequest::Chunk { title: TitleId::of(b"t"), index: 0 }, IO)
            .await
            .unwrap_err();
    assert!(e.is_connection_lost(), "{e:?}");
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) => assert_eq!(c.error_code, close::UNTRUSTED),
        other => panic!("expected an application close, got {other:?}"),
    }
    assert_eq!(refused.get(), 1);
}

#[tokio::test]
async fn the_pool_reuses_an_open_connection_and_dials_again_once_it_closed() {
    let (server, client) = (endpoint(), endpoint());
    serve(&server, Trust::new([client.peer_id()]), Counter::default(), Duration::ZERO);
    let (addr, peer) = (server.local_addr().unwrap(), server.peer_id());
    let pool = Pool::new(client.clone(), IO);
    let first = pool.get(addr, peer).await.unwrap();
    let again = pool.get(addr, peer).await.unwrap();
    assert_eq!(first.stable_id(), again.stable_id());
    first.close(0u32.into(), b"done");
    let fresh = pool.get(addr, peer).await.unwrap();
    assert_ne!(first.stable_id(), fresh.stable_id());
    let chunk = MeshRequest::Chunk { title: TitleId::of(b"t"), index: 0 };
    assert_eq!(message(rpc::call::<_, MeshResponse>(&fresh, &chunk, IO).await.unwrap()), "fast");
    // A node that is not who we expect is refused at the handshake, within the timeout.
    let wrong = identity::peer_id(&identity::ephemeral());
    assert!(pool.get(addr, wrong).await.is_err());
}
