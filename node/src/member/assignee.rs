//! The tracker-driven fill: one assigned chunk, tried at the tracker's sources in its order
//! (the fill driver with the sources ranked so, one attempt each), every failed source
//! reported to the tracker, every stored chunk recorded for the next report of what is held.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fillmesh_net::Pool;
use fillmesh_protocol::messages::{Assignment, FailureKind, Fetched, TrackerRequest, TrackerResponse};
use fillmesh_protocol::{Manifest, NodeId, TitleId};
use libp2p_identity::PeerId;
use quinn::Connection;
use tracing::{debug, info, warn};

use super::TrackerLink;
use crate::fill::driver::{self, failure_kind, Attempt, Job, Sources};
use crate::fill::scheduler::{Outcome, Scheduler, Tally};
use crate::fill::{request_manifest, ChunkError, ManifestMiss};
use crate::metrics::FillMetrics;
use crate::store::{ChunkWriter, Store, StoreError};

/// Time allowed for one request to a source.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What an assignment's work needs of the node and its session.
pub(super) struct Assignee {
    pub link: Arc<TrackerLink>,
    pub store: Arc<Store>,
    pub writer: ChunkWriter,
    pub pool: Arc<Pool>,
    pub reports: Arc<Mutex<BTreeMap<TitleId, Vec<Fetched>>>>,
    pub disk_full: Arc<AtomicBool>,
    pub metrics: Arc<FillMetrics>,
}

impl Assignee {
    /// Fetches one assigned chunk from the first source that delivers it verified, reporting
    /// every failed source to the tracker.
    pub(super) async fn work(self, a: Assignment) {
        // A source whose id does not parse is skipped (and not reported).
        let sources: Vec<_> = a
            .sources
            .iter()
            .filter_map(|s| Some((s.node.clone(), s.addr, s.node.as_str().parse::<PeerId>().ok()?)))
            .collect();
        let mut assigned = Assigned { ctx: self, title: a.title, sources };
        // The title's manifest: the store's, or that of the first source (in order) whose
        // manifest verifies; a source that fails this failed the chunk, and is reported so.
        let manifest = match assigned.ctx.store.manifest(&a.title) {
            Some(m) => m,
            None => {
                let mut found = None;
                for s in 0..assigned.sources.len() {
                    match assigned.manifest_from(s, a.chunk).await {
                        Ok(m) => {
                            found = Some(m);
                            assigned.sources.drain(..s);
                            break;
                        }
                        Err(Some(kind)) => assigned.report_failure(s, a.chunk, kind).await,
                        Err(None) => {}
                    }
                }
                let Some(manifest) = found else { return };
                manifest
            }
        };
        let mut scheduler = Scheduler::new([a.chunk], 1);
        for rank in 0..assigned.sources.len() {
            scheduler.add_source(rank as u32, 1, Tally::default());
        }
        let job = Job {
            title: a.title,
            manifest,
            writer: assigned.ctx.writer.clone(),
            metrics: assigned.ctx.metrics.clone(),
            request_timeout: REQUEST_TIMEOUT,
            write_slots: driver::WRITE_SLOTS,
        };
        driver::drive(job, scheduler, assigned).await;
    }
}

/// One assignment's sources, in the tracker's order.
struct Assigned {
    ctx: Assignee,
    title: TitleId,
    sources: Vec<(NodeId, SocketAddr, PeerId)>,
}

impl Assigned {
    /// The title's manifest from source `s`, verified and added to the store; the error is
    /// what the tracker is told of the source, if anything.
    async fn manifest_from(&self, s: usize, chunk: u32) -> Result<Arc<Manifest>, Option<FailureKind>> {
        let conn = match self.connect(s).await {
            Ok(conn) => conn,
            Err(e) => {
                let attempt = Attempt::Unreachable(e);
                self.attempted(s, chunk, &attempt, &attempt.outcome()).await;
                return Err(None);
            }
        };
        let (title, peer) = (self.title, self.sources[s].2);
        let manifest = match request_manifest(&conn, title, REQUEST_TIMEOUT).await {
            Ok(m) => m,
            Err(ManifestMiss::Unavailable(_)) => return Err(Some(FailureKind::Refused)),
            Err(ManifestMiss::False(_)) => {
                warn!(%peer, %title, "false manifest");
                return Err(Some(FailureKind::Corrupt));
            }
        };
        // The catalog has the title's name (players' Content-Type comes from it).
        let name = match self.ctx.link.request(&TrackerRequest::Catalog).await {
            Ok(TrackerResponse::Catalog { titles }) => {
                titles.into_iter().find(|t| t.title == title).map(|t| t.name).unwrap_or_default()
            }
            _ => String::new(),
        };
        let (store, m) = (self.ctx.store.clone(), manifest.clone());
        match tokio::task::spawn_blocking(move || store.add_title(title, &name, m)).await {
            Ok(Ok(())) => Ok(Arc::new(manifest)),
            _ => Err(Some(FailureKind::Refused)),
        }
    }

    /// Ours, not the source's: no more filling here until an eviction frees room (said once).
    fn quota_reached(&self, e: &StoreError) {
        if !self.ctx.disk_full.swap(true, Relaxed) {
            tracing::error!("{e}; no more filling, serving what is held");
        }
    }

    async fn report_failure(&self, s: usize, chunk: u32, kind: FailureKind) {
        let request = TrackerRequest::ReportFailure {
            title: self.title,
            chunk,
            source: self.sources[s].0.clone(),
            kind,
        };
        if let Err(e) = self.ctx.link.request(&request).await {
            debug!("failure report not delivered: {e}");
        }
    }
}

impl Sources for Assigned {
    async fn connect(&self, s: usize) -> Result<Connection, String> {
        let (_, addr, peer) = self.sources[s];
        self.ctx.pool.get(addr, peer).await.map_err(|e| e.to_string())
    }

    async fn attempted(&self, s: usize, chunk: u32, attempt: &Attempt, outcome: &Outcome) {
        let (title, (node, _, peer)) = (self.title, &self.sources[s]);
        match attempt {
            Attempt::Stored(_) => {
                self.ctx
                    .reports
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(title)
                    .or_default()
                    .push(Fetched { chunk, source: node.clone() });
                debug!(%title, chunk, source = %node, "stored chunk");
            }
            Attempt::Unreachable(e) => info!(%peer, "source unreachable: {e}"),
            Attempt::Request(ChunkError::Lied(e)) => warn!(%peer, %title, chunk, "source lied: {e}"),
            Attempt::Unverified(e) => warn!(%peer, %title, chunk, "corrupt chunk: {e}"),
            Attempt::Store(e @ StoreError::QuotaExceeded { .. }) => self.quota_reached(e),
            Attempt::Store(e) => tracing::error!(%title, chunk, "cannot store chunk: {e}"),
            _ => {}
        }
        if let Some(kind) = failure_kind(outcome) {
            self.report_failure(s, chunk, kind).await;
        }
    }

    fn span(&self, _: usize) -> tracing::Span {
        tracing::Span::none()
    }
}
