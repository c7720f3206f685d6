//! The mesh API: trusted appliances (and the origin) over QUIC with mutual TLS, each
//! connection behind the trust gate, each request its own task, answered by the core.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use fillmesh_net::frame::read_frame;
use fillmesh_net::sync::LockExt;
use fillmesh_net::{close, identity, rpc, trust, Chain, Router};
use fillmesh_protocol::messages::{
    ErrorCode, ErrorReply, Hello, TrackerRequest, TrackerResponse, PROTOCOL_VERSION,
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
        TrackerRequest::Hello(hello) if hello.version != PROTOCOL_VERSION => {
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
                Ok(()) => TrackerResponse::Epoch(core.epoch()),
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
                TrackerResponse::Fills { plans: fills.plans, evict: fills.evict, epoch: fills.epoch }
            }
            Err(e) => error(ErrorCode::NotRegistered, e.to_string()),
        },
        TrackerRequest::FillSummary { title, gained, bytes } => {
            let mut core = shared.core();
            match core.report_fill(now, node, title, &gained, bytes) {
                Ok(()) => TrackerResponse::Epoch(core.epoch()),
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
            let result = shared.core().publish(now, title, name.clone(), &manifest);
            if result.is_ok() {
                if let Err(e) = persist_title(shared, title, CatalogRecord { name, manifest }).await {
                    warn!(%title, "cannot persist the catalog: {}", Chain(&e));
                    return error(ErrorCode::Internal, format!("cannot persist the catalog: {}", Chain(&e)));
                }
                info!(%title, "title published");
            }
            done(result)
        }
        TrackerRequest::Trackers => TrackerResponse::Trackers { live: shared.core().live_trackers() },
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
