//! The mesh API: trusted appliances (and the origin) over QUIC with mutual TLS, each
//! connection behind the trust gate, each request its own task, answered by the core.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use fillmesh_net::frame::read_frame;
use fillmesh_net::sync::LockExt;
use fillmesh_net::{close, identity, rpc, trust, Chain, Router};
use fillmesh_protocol::messages::{
    accepts_version, ErrorCode, ErrorReply, Hello, TrackerRequest, TrackerResponse, PROTOCOL_VERSION,
};
use fillmesh_protocol::{NodeId, TitleId, ALPN};
use libp2p_identity::PeerId;
use quinn::Connection;
use tracing::{debug, info, warn};

use super::persist::{CatalogRecord, IndexError};
use super::{FleetError, Shared};
use crate::core::CoreError;

/// How long a node may take to send a request, and to take its answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The mesh API: trusted nodes only (the gate), each request its own task.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    let refused = shared.refused.clone();
    let next_id = Arc::new(AtomicUsize::new(0));
    let gated = trust::gate(shared.trust.clone(), refused, "node", move |conn, peer| {
        let id = next_id.fetch_add(1, Relaxed) + 1;
        connection(conn, peer, shared.clone(), id)
    });
    Router::new().route(ALPN, gated)
}

async fn connection(conn: Connection, peer: PeerId, shared: Arc<Shared>, id: usize) {
    let Ok(node) = identity::node_id(&peer) else {
        conn.close(close::PROTOCOL, b"unusable peer id");
        return;
    };
    debug!(%peer, "node connected");
    rpc::serve(&conn, |mut send, mut recv| {
        let (shared, node) = (shared.clone(), node.clone());
        async move {
            let response = match read_frame::<TrackerRequest>(&mut recv, IO_TIMEOUT).await {
                Ok(request) => handle(&shared, &node, id, request).await,
                Err(e) => {
                    debug!(%node, "bad request: {}", Chain(&e));
                    error(ErrorCode::BadRequest, Chain(&e).to_string())
                }
            };
            if let Err(e) = rpc::reply(&mut send, &response, IO_TIMEOUT).await {
                debug!(%node, "response not sent: {}", Chain(&e));
            }
            shared.wake.notify_one();
        }
    })
    .await;
    let latest = shared.connections.locked().get(&node).copied();
    if latest == Some(id) {
        let now = shared.now();
        shared.core().lost(now, &node);
        shared.wake.notify_one();
        info!(%peer, "node disconnected");
    }
}

/// The epoch nodes see: the core's, moved also by a change of the playback keys (so that
/// appliances ask for them again).
fn epoch(shared: &Shared, core: &crate::core::Tracker) -> u64 {
    core.epoch() + shared.tokens.version()
}

fn error(code: ErrorCode, message: String) -> TrackerResponse {
    TrackerResponse::Error(ErrorReply::new(code, message))
}

async fn handle(shared: &Shared, node: &NodeId, conn_id: usize, request: TrackerRequest) -> TrackerResponse {
    let now = shared.now();
    let done = |r: Result<(), CoreError>| match r {
        Ok(()) => TrackerResponse::Ack,
        Err(e) => error(ErrorCode::BadRequest, e.to_string()),
    };
    match request {
        TrackerRequest::Hello(hello) if !accepts_version(hello.version) => {
            error(ErrorCode::VersionMismatch, format!("this tracker speaks version {PROTOCOL_VERSION}"))
        }
        TrackerRequest::Hello(_) => {
            TrackerResponse::Hello(Hello::ours(fillmesh_protocol::messages::Role::Tracker))
        }
        TrackerRequest::Register(registration) => {
            if let Ok(bytes) = postcard::to_allocvec(&registration) {
                let index = &shared.index;
                if let Err(e) = index.put(&index.registry, node.as_str().as_bytes().to_vec(), bytes).await {
                    warn!("cannot persist a registration: {}", Chain(&e));
                }
            }
            info!(%node, site = %registration.site, region = %registration.region, role = ?registration.role, "node registered");
            shared.connections.locked().insert(node.clone(), conn_id);
            let mut core = shared.core();
            core.register(now, node.clone(), registration);
            TrackerResponse::Registered { heartbeat_interval_ms: core.config().heartbeat_interval_ms as u32 }
        }
        TrackerRequest::Heartbeat(hb) => {
            // One guard for both calls (a second `shared.core()` in the match would wait on
            // the guard its scrutinee holds).
            let mut core = shared.core();
            match core.heartbeat(now, node, hb) {
                Ok(()) => TrackerResponse::Epoch(epoch(shared, &core)),
                // The tracker restarted or forgot the node: it must register again.
                Err(e) => error(ErrorCode::NotRegistered, e.to_string()),
            }
        }
        TrackerRequest::ReportHeld { title, held, fetched } => {
            done(shared.core().report_held(now, node, title, held, &fetched))
        }
        TrackerRequest::ReportFailure { title, chunk, source, kind } => {
            let (result, (reporters, bad), quorum) = {
                let mut core = shared.core();
                let result = core.report_failure(now, node, title, chunk, &source, kind);
                (result, core.corrupt_reports(&source), core.config().quorum())
            };
            if result.is_ok() && kind == fillmesh_protocol::messages::FailureKind::Corrupt {
                if bad {
                    warn!(reporter = %node, %source, %title, chunk, "corrupt chunk reported; source marked bad ({reporters} distinct reporters)");
                } else {
                    warn!(reporter = %node, %source, %title, chunk, "corrupt chunk reported; source excluded for this reporter, marked bad once {quorum} distinct reporters agree ({reporters} so far)");
                }
            }
            done(result)
        }
        TrackerRequest::Fills => match shared.core().fills(now, node) {
            Ok(fills) => {
                for title in &fills.evict {
                    info!(appliance = %node, %title, "evicted to make room for a more recently wanted title");
                }
                TrackerResponse::Fills {
                    plans: fills.plans,
                    evict: fills.evict,
                    epoch: fills.epoch + shared.tokens.version(),
                }
            }
            Err(e) => error(ErrorCode::NotRegistered, e.to_string()),
        },
        TrackerRequest::FillSummary { title, gained, bytes } => {
            let mut core = shared.core();
            match core.report_fill(now, node, title, &gained, bytes) {
                Ok(()) => TrackerResponse::Epoch(epoch(shared, &core)),
                Err(e @ crate::core::CoreError::UnknownNode(_)) => {
                    error(ErrorCode::NotRegistered, e.to_string())
                }
                Err(e) => error(ErrorCode::BadRequest, e.to_string()),
            }
        }
        TrackerRequest::Steer { title, client_ip } => {
            let (targets, reason) = shared.steer(&title, client_ip);
            TrackerResponse::Steer { targets, reason }
        }
        TrackerRequest::Catalog => TrackerResponse::Catalog { titles: shared.core().catalog() },
        TrackerRequest::Members => TrackerResponse::Members { nodes: shared.core().members() },
        TrackerRequest::Publish { title, name, manifest } => {
            if manifest.verify(&title).is_err() {
                return error(ErrorCode::BadRequest, format!("the manifest does not hash to {title}"));
            }
            // The tracker keeps the shape alone: appliances get manifests from one another
            // over the mesh and verify them against the id themselves.
            let shape = manifest.shape();
            let result = shared.core().publish(now, title, name.clone(), &shape);
            if result.is_ok() {
                if let Err(e) = persist_title(shared, title, CatalogRecord { name, shape }).await {
                    warn!(%title, "cannot persist the catalog: {}", Chain(&e));
                    return error(ErrorCode::Internal, format!("cannot persist the catalog: {}", Chain(&e)));
                }
                info!(%title, "title published");
            }
            done(result)
        }
        TrackerRequest::Trackers => TrackerResponse::Trackers { live: shared.core().live_trackers() },
        // Public halves only: an appliance can check tokens and cannot mint them.
        TrackerRequest::PlaybackKeys => {
            TrackerResponse::PlaybackKeys { required: shared.tokens.required, keys: shared.tokens.public() }
        }
    }
}

/// Why a published title was not written where the catalog lives.
#[derive(Debug, thiserror::Error)]
enum PersistError {
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("encoding the catalog record")]
    Encode(#[from] postcard::Error),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Writes a published title where the catalog lives: the fleet's etcd, or this tracker's
/// sled index.
async fn persist_title(shared: &Shared, title: TitleId, record: CatalogRecord) -> Result<(), PersistError> {
    if let Some(fleet) = &shared.fleet {
        return Ok(fleet.publish(title, &record).await?);
    }
    let bytes = postcard::to_allocvec(&record)?;
    let index = &shared.index;
    Ok(index.put(&index.catalog, title.as_bytes().to_vec(), bytes).await?)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use fillmesh_protocol::messages::{Registration, Role};
    use fillmesh_protocol::{ChunkBitmap, ChunkSize, Manifest, PackageBuilder};

    use super::*;
    use crate::core::{Config, Tracker};

    fn register(role: Role, port: u16) -> TrackerRequest {
        TrackerRequest::Register(Registration {
            role,
            mesh_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            site: "s".into(),
            region: "r".into(),
            prefixes: vec!["10.0.0.0/8".parse().unwrap()],
            upload_bps: 100_000_000,
            disk_bytes: u64::MAX,
            cert_sha256: None,
        })
    }

    fn ladder() -> (TitleId, Manifest) {
        let mut b = PackageBuilder::new(ChunkSize::new(1024).unwrap());
        let files =
            [("index.m3u8", 120), ("v0/index.m3u8", 300), ("v0/init.mp4", 900), ("v0/seg1.m4s", 5000)];
        for (path, len) in files {
            b.start_file(path).unwrap();
            b.update(&vec![len as u8; len]).unwrap();
            b.finish_file().unwrap();
        }
        b.finish().unwrap()
    }

    /// A package published over the mesh (its manifest checked against the id, its shape
    /// kept) is steered to by its base URL, trailing slash and all, so that a playlist's
    /// relative URLs resolve inside it; a one-file title by its own URL, as before. The
    /// index keeps the package's shape.
    #[tokio::test]
    async fn a_package_is_steered_to_by_its_base_url() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared::for_test(dir.path());
        let (origin, appliance): (NodeId, NodeId) = ("origin".parse().unwrap(), "edge".parse().unwrap());
        let ack = |r: TrackerResponse| assert!(!matches!(r, TrackerResponse::Error(_)), "{r:?}");
        ack(handle(&shared, &origin, 1, register(Role::Origin, 4433)).await);
        ack(handle(&shared, &appliance, 2, register(Role::Appliance, 4434)).await);

        let (package, manifest) = ladder();
        let (file, file_manifest) = Manifest::from_bytes(&[5; 3000], ChunkSize::new(1024).unwrap()).unwrap();
        // A manifest that is not the id's is refused, as before.
        let wrong = TrackerRequest::Publish { title: file, name: "x".into(), manifest: manifest.clone() };
        assert!(matches!(handle(&shared, &origin, 1, wrong).await, TrackerResponse::Error(_)));
        for (title, manifest) in [(package, manifest.clone()), (file, file_manifest)] {
            let chunks = manifest.chunk_count();
            ack(handle(&shared, &origin, 1, TrackerRequest::Publish { title, name: "t".into(), manifest })
                .await);
            let held = ChunkBitmap::full(chunks).unwrap();
            let report = TrackerRequest::ReportHeld { title, held, fetched: Vec::new() };
            ack(handle(&shared, &appliance, 2, report).await);
        }
        assert_eq!(shared.core().shape(&package), Some(&manifest.shape()));

        let client = IpAddr::from([10, 0, 0, 9]);
        let (targets, _) = shared.steer(&package, client);
        let urls: Vec<&str> = targets.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                format!("https://127.0.0.1:4434/titles/{package}/"),
                format!("https://127.0.0.1:4433/titles/{package}/")
            ],
            "the appliance, then the origin"
        );
        let (targets, _) = shared.steer(&file, client);
        let urls: Vec<&str> = targets.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                format!("https://127.0.0.1:4434/titles/{file}"),
                format!("https://127.0.0.1:4433/titles/{file}")
            ]
        );

        let mut restored = Tracker::new(Config::default());
        shared.index.restore(&mut restored, 0).unwrap();
        assert_eq!(restored.shape(&package), Some(&manifest.shape()));
        assert!(restored.shape(&package).unwrap().is_package());
    }
}
