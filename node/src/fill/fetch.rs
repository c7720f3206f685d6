//! `fillmesh fetch`'s fill: connects to every source given, gets the manifest (from the
//! destination or the first source whose manifest verifies), then runs the one fill of a title
//! among parents (`super::swarm`, what appliances run under their tracker) with every source
//! a parent of the same rank, several chunks in flight each, and reports what each source did.
//! The destination is the store (resumable) or the output file itself ([`OutFile`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fillmesh_net::sync::LockExt;
use fillmesh_net::{identity, Chain, MeshEndpoint, Pool};
use fillmesh_protocol::messages::{FillPlan, Parent, Role, SourceClass};
use fillmesh_protocol::{ChunkBitmap, Manifest, NodeId, TitleId};
use fillmesh_swarm::{Config as SwarmConfig, Dropped};
use libp2p_identity::PeerId;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::client::{hello, request_manifest, ClientError};
use super::swarm::TrackerError;
use super::swarm::{self, Ended, Local, Owner};
use crate::metrics::FillMetrics;
use crate::store::{ChunkWriter, Commit, OutFile, Store, StoreError};

/// A node to fetch from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// Its mesh (QUIC) address.
    pub addr: SocketAddr,
    /// The PeerId it must prove on connecting; a node that proves another is not used.
    pub peer: PeerId,
}

/// Where a fetch puts a title.
pub trait Destination: Commit {
    /// The title's manifest and the chunks already held, if this destination knows the title
    /// (a store resuming an interrupted fetch).
    fn known(&self, title: &TitleId) -> Option<(Arc<Manifest>, ChunkBitmap)>;
    /// Takes the verified manifest of a title it does not know yet.
    fn adopt(&self, title: TitleId, manifest: &Manifest) -> Result<(), StoreError>;
    /// Verified chunks that may wait to be written at once, each holding its bytes in
    /// memory (a chunk written and waiting for its commit's sync holds none).
    fn write_slots(&self) -> usize {
        swarm::WRITE_SLOTS
    }
    /// How long a stored chunk may wait for others to share its commit (see
    /// [`ChunkWriter::spawn`]): for a store's bulk fetch, a few milliseconds per chunk buy
    /// far fewer syncs.
    fn commit_linger(&self) -> Duration {
        Duration::from_millis(4)
    }
}

impl Destination for Store {
    fn known(&self, title: &TitleId) -> Option<(Arc<Manifest>, ChunkBitmap)> {
        Some((self.manifest(title)?, self.held(title)?))
    }
    fn adopt(&self, title: TitleId, manifest: &Manifest) -> Result<(), StoreError> {
        self.add_title(title, "", manifest.clone())
    }
    /// As many as a fetch without a store: a slot is released once its chunk is written,
    /// and the writes go on while a batch syncs, so the slots wait for the disk's bandwidth
    /// only, never for a sync.
    fn write_slots(&self) -> usize {
        4
    }
}

impl Destination for OutFile {
    fn known(&self, title: &TitleId) -> Option<(Arc<Manifest>, ChunkBitmap)> {
        self.adopted(title)
    }
    fn adopt(&self, title: TitleId, manifest: &Manifest) -> Result<(), StoreError> {
        OutFile::adopt(self, title, manifest)
    }
    /// Its commits are positioned writes with no sync, so a chunk waits for little. Measured
    /// on a 1 GiB fetch: peak resident memory 30-36 MB with 4 slots, 43-47 MB with 8, 54-60
    /// MB with the store's 32.
    fn write_slots(&self) -> usize {
        4
    }
    /// No sync to share: each batch is written at once.
    fn commit_linger(&self) -> Duration {
        Duration::ZERO
    }
}

/// Told how a fetch goes, from its tasks (keep each call short): the progress bar, and the
/// stream of a title to standard output.
pub trait Observer: Send + Sync {
    /// The fill starts: the title's manifest and the chunks already held.
    fn started(&self, manifest: &Manifest, held: &ChunkBitmap);
    /// Chunk `index` (`bytes` long) is verified and committed.
    fn stored(&self, index: u32, bytes: u64);
}

/// Knobs of a fetch.
#[derive(Clone)]
pub struct FetchOptions {
    /// Chunk requests in flight per source.
    pub per_source: usize,
    /// Time allowed for one request, chunk bytes included.
    pub request_timeout: Duration,
    /// Time allowed for dialling a source, its TLS handshake included.
    pub connect_timeout: Duration,
    /// Attempts of one chunk at one source before that source is not asked for it again.
    pub attempts_per_source: u32,
    /// The fetch gives up after this long with no source giving or announcing anything (and
    /// no request in flight): what is missing is held by no source that answers.
    pub stall: Duration,
    /// Where verified and rejected chunks are counted.
    pub metrics: Arc<FillMetrics>,
    /// Told of the fill's start and of each chunk stored; `None` for a fetch nobody watches.
    pub observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for FetchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchOptions")
            .field("per_source", &self.per_source)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("attempts_per_source", &self.attempts_per_source)
            .field("stall", &self.stall)
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            per_source: 4,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            attempts_per_source: 2,
            stall: Duration::from_secs(10),
            metrics: Arc::default(),
            observer: None,
        }
    }
}

/// What one source did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Chunks it sent that verified and were stored.
    pub chunks: u64,
    /// The bytes of those chunks.
    pub bytes: u64,
    /// Requests to it that failed: the manifest or a chunk not held, refused, timed out, or
    /// lost with the connection (a chunk that failed verification counts in `corrupt`).
    pub failures: u64,
    /// Chunks or manifests from it that failed verification.
    pub corrupt: u64,
    /// It lied: it was not asked again.
    pub bad: bool,
    /// Why it could not be used (any more), if so.
    pub error: Option<String>,
}

impl Tally {
    fn usable(&self) -> bool {
        !self.bad && self.error.is_none()
    }
}

/// What one source did, by source.
#[derive(Debug, Clone)]
pub struct SourceReport {
    /// The source, as given to [`fetch_title`].
    pub source: Source,
    /// What it did.
    pub tally: Tally,
}

/// What a fetch did.
#[derive(Debug, Clone)]
pub struct FetchReport {
    /// The title fetched.
    pub title: TitleId,
    /// The title's chunk count, from its manifest.
    pub chunks: u32,
    /// Chunks already held when the fetch started.
    pub already_held: u32,
    /// Chunks fetched and stored by this fetch, in completion order.
    pub fetched: Vec<u32>,
    /// The bytes of the chunks this fetch stored, summed over the sources.
    pub bytes: u64,
    /// From the call to the end of the fill: connecting and the manifest included.
    pub elapsed: Duration,
    /// One per source given, in the order given.
    pub sources: Vec<SourceReport>,
}

/// Why a fetch did not complete.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No source could be dialled and greeted (a node of another protocol version counts as
    /// unreachable); the text holds each source's reason, joined by `; `.
    #[error("no source could be reached: {0}")]
    NoSource(String),
    /// The destination did not know the title and no usable source gave a manifest that
    /// verifies against its id; the text holds each source's reason, joined by `; `.
    #[error("no source gave a manifest that verifies against {0}: {1}")]
    NoManifest(TitleId, String),
    /// The fill ended with chunks missing: every source was dropped or gone, or none gave or
    /// announced anything for [`FetchOptions::stall`]. A store keeps what was stored, for a
    /// later fetch to resume from.
    #[error("{missing} chunks of {title} could not be fetched from any source (first: {first})")]
    Incomplete {
        /// The title fetched.
        title: TitleId,
        /// How many of its chunks the destination still lacks.
        missing: usize,
        /// The lowest index missing.
        first: u32,
        /// What the fetch did, as a completed fetch reports it.
        report: Box<FetchReport>,
    },
    /// The destination failed: adopting the manifest, starting its writer, or storing a
    /// chunk (a full disk or quota included).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Fills `title` into `into` from `sources`. The manifest comes from `into` when it already
/// knows the title, otherwise from the first source whose manifest verifies.
pub async fn fetch_title<D: Destination>(
    endpoint: &MeshEndpoint,
    into: Arc<D>,
    title: TitleId,
    sources: &[Source],
    opts: FetchOptions,
) -> Result<FetchReport, FetchError> {
    let started = Instant::now();
    let pool = Arc::new(Pool::new(endpoint.clone(), opts.connect_timeout));
    let mut tallies = vec![Tally::default(); sources.len()];
    connect_all(&pool, sources, &opts, &mut tallies).await;
    if tallies.iter().all(|t| !t.usable()) {
        let why = tallies.iter().filter_map(|t| t.error.clone()).collect::<Vec<_>>().join("; ");
        return Err(FetchError::NoSource(why));
    }

    let known = match into.known(&title) {
        Some(known) => Some(known),
        None => {
            let manifest = fetch_manifest(&pool, title, sources, &opts, &mut tallies).await?;
            let (d, m) = (into.clone(), manifest);
            blocking(move || d.adopt(title, &m)).await?;
            into.known(&title)
        }
    };
    let (manifest, held) = known.ok_or(StoreError::UnknownTitle(title))?;
    if let Some(observer) = &opts.observer {
        observer.started(&manifest, &held);
    }
    let already_held = held.count();
    info!(
        %title,
        chunks = manifest.chunk_count(),
        already_held,
        to_fetch = manifest.chunk_count() - already_held,
        setup = ?started.elapsed(),
        "fetch starting"
    );
    // Every usable source is a parent of the same rank: each takes any chunk it holds,
    // `per_source` at a time, rarest first.
    let parents: Vec<Parent> = sources
        .iter()
        .zip(&tallies)
        .filter(|(_, t)| t.usable())
        .filter_map(|(s, _)| {
            Some(Parent {
                node: identity::node_id(&s.peer).ok()?,
                addr: s.addr,
                class: SourceClass::SameSite,
            })
        })
        .collect();
    let depth = u32::try_from(opts.per_source.max(1)).unwrap_or(u32::MAX);
    let local = Arc::new(Local {
        writer: ChunkWriter::spawn(into.clone(), into.commit_linger())?,
        pool: pool.clone(),
        metrics: opts.metrics.clone(),
        disk_full: Arc::default(),
        swarm: SwarmConfig {
            inflight: depth.saturating_mul(parents.len().max(1) as u32),
            attempts: u8::try_from(opts.attempts_per_source.max(1)).unwrap_or(u8::MAX),
            depth,
            ..SwarmConfig::default()
        },
        request_timeout: opts.request_timeout,
        write_slots: Arc::new(Semaphore::new(into.write_slots().max(1))),
        stall: Some(opts.stall),
        stale_origin: None,
        rates: Arc::new(crate::classes::Rates::uncapped()),
    });
    let owner = Arc::new(Fetching { observer: opts.observer.clone(), fetched: Mutex::default() });
    let plan = FillPlan { title, parents, origin: Vec::new(), import: Vec::new(), epoch: 0 };
    let seed = u64::from(std::process::id()) ^ started.elapsed().as_nanos() as u64;
    let span = tracing::info_span!("fetch", %title);
    let Ended { swarm, parents, store_error } = tracing::Instrument::instrument(
        swarm::fill(plan, manifest.clone(), &held, seed, local, owner.clone(), None),
        span,
    )
    .await;
    pool.close_all(b"done").await;

    let reports: Vec<SourceReport> = sources
        .iter()
        .zip(tallies)
        .map(|(&source, mut tally)| {
            let node = identity::node_id(&source.peer).ok();
            if let Some(p) = parents.iter().position(|p| Some(&p.node) == node.as_ref()) {
                let t = swarm.tally(p);
                (tally.chunks, tally.bytes, tally.failures) =
                    (t.chunks, t.bytes, tally.failures + t.failures);
                match swarm.dropped(p) {
                    Some(Dropped::Corrupt) => (tally.corrupt, tally.bad) = (tally.corrupt + 1, true),
                    Some(Dropped::Gone) => {
                        tally.error =
                            Some(parents[p].ended.clone().unwrap_or_else(|| "its connection ended".into()))
                    }
                    // Logged by the fill when it dropped the source.
                    Some(_) => tally.bad = true,
                    None => {}
                }
            }
            SourceReport { source, tally }
        })
        .collect();
    let fetched = std::mem::take(&mut *owner.fetched.locked());
    let report = FetchReport {
        title,
        chunks: manifest.chunk_count(),
        already_held,
        fetched,
        bytes: reports.iter().map(|r| r.tally.bytes).sum(),
        elapsed: started.elapsed(),
        sources: reports,
    };
    if let Some(e) = store_error {
        return Err(FetchError::Store(e));
    }
    let missing = (0..manifest.chunk_count()).filter(|&c| !swarm.holds(c)).collect::<Vec<_>>();
    if let Some(&first) = missing.first() {
        return Err(FetchError::Incomplete {
            title,
            missing: missing.len(),
            first,
            report: Box::new(report),
        });
    }
    Ok(report)
}

/// The fill's owner for a fetch: there is no tracker to tell; the observer hears each chunk.
struct Fetching {
    observer: Option<Arc<dyn Observer>>,
    /// Chunks stored, in the order they were.
    fetched: Mutex<Vec<u32>>,
}

impl Owner for Fetching {
    async fn summary(&self, _: TitleId, _: &[u32], _: [u64; 4]) -> Result<(), TrackerError> {
        Ok(())
    }
    async fn whole(&self, _: TitleId) -> Result<(), TrackerError> {
        Ok(())
    }
    /// Nobody to tell: the fill has logged the drop, and the report marks the source bad.
    fn lied(&self, _: TitleId, _: u32, _: &NodeId) {}
    fn stranded(&self) {}
    fn stored(&self, chunk: u32, bytes: u64) {
        self.fetched.locked().push(chunk);
        if let Some(observer) = &self.observer {
            observer.stored(chunk, bytes);
        }
    }
}

/// Dials every source (kept in `pool`) and says hello; a source that cannot be used gets its
/// reason in its tally.
async fn connect_all(pool: &Pool, sources: &[Source], opts: &FetchOptions, tallies: &mut [Tally]) {
    let attempts = sources.iter().map(|s| async move {
        let conn = pool.get(s.addr, s.peer).await.map_err(ClientError::Unreachable)?;
        // A node of another protocol version is said so now, not met as undecodable answers.
        hello(&conn, Role::Appliance, opts.request_timeout).await?;
        Ok::<_, ClientError>(())
    });
    let results = futures_util::future::join_all(attempts).await;
    for (r, (source, tally)) in results.into_iter().zip(sources.iter().zip(tallies)) {
        if let Err(e) = r {
            let e = Chain(&e).to_string();
            warn!(peer = %source.peer, addr = %source.addr, "cannot use source: {e}");
            tally.error = Some(e);
        }
    }
}

/// Asks each usable source in turn for the manifest; one that does not verify marks its
/// source bad.
async fn fetch_manifest(
    pool: &Pool,
    title: TitleId,
    sources: &[Source],
    opts: &FetchOptions,
    tallies: &mut [Tally],
) -> Result<Manifest, FetchError> {
    let mut reasons = Vec::new();
    for (s, source) in sources.iter().enumerate() {
        if !tallies[s].usable() {
            continue;
        }
        let peer = source.peer;
        let conn = match pool.get(source.addr, peer).await {
            Ok(conn) => conn,
            Err(e) => {
                let e = Chain(&e).to_string();
                reasons.push(format!("{peer}: {e}"));
                tallies[s].error = Some(e);
                continue;
            }
        };
        match request_manifest(&conn, title, opts.request_timeout).await {
            Ok(m) => return Ok(m),
            Err(ClientError::FalseManifest(e)) => {
                warn!(%peer, "false manifest, source marked bad: {e}");
                reasons.push(format!("{peer} sent a false manifest"));
                tallies[s].corrupt += 1;
                tallies[s].bad = true;
            }
            Err(e) => {
                let e = Chain(&e);
                info!(%peer, "no manifest: {e}");
                reasons.push(format!("{peer}: {e}"));
                tallies[s].failures += 1;
            }
        }
    }
    Err(FetchError::NoManifest(title, reasons.join("; ")))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::Io { what: "store task".into(), source: std::io::Error::other(e.to_string()) })
    })
}
