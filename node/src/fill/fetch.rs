//! `fillmesh fetch`'s fill: connects to every source given, gets the manifest (from the
//! destination or the first source whose manifest verifies), then runs the fill [`driver`]
//! with all sources ranked alike, several chunks in flight each, and reports what each source
//! did. The destination is the store (resumable) or the output file itself ([`OutFile`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fillmesh_net::MeshEndpoint;
use fillmesh_protocol::messages::Role;
use fillmesh_protocol::{ChunkBitmap, Manifest, TitleId};
use libp2p_identity::PeerId;
use quinn::Connection;
use tracing::{debug, info, warn};

use super::client::{hello, request_manifest, ManifestMiss};
use super::driver::{self, Attempt, Filled, Job, Sources};
use super::scheduler::{Outcome, Scheduler, Tally};
use crate::metrics::FillMetrics;
use crate::store::{ChunkWriter, Commit, OutFile, Store, StoreError};

/// A node to fetch from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub addr: SocketAddr,
    pub peer: PeerId,
}

/// Where a fetch puts a title.
pub trait Destination: Commit {
    /// The title's manifest and the chunks already held, if this destination knows the title
    /// (a store resuming an interrupted fetch).
    fn known(&self, title: &TitleId) -> Option<(Arc<Manifest>, ChunkBitmap)>;
    /// Takes the verified manifest of a title it does not know yet.
    fn adopt(&self, title: TitleId, manifest: &Manifest) -> Result<(), StoreError>;
    /// Verified chunks that may wait for their commit at once, each holding its bytes in
    /// memory.
    fn write_slots(&self) -> usize {
        driver::WRITE_SLOTS
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
    pub connect_timeout: Duration,
    /// Attempts of one chunk at one source before that source is not asked for it again.
    pub attempts_per_source: u32,
    /// Where verified and rejected chunks are counted.
    pub metrics: Arc<FillMetrics>,
    pub observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for FetchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchOptions")
            .field("per_source", &self.per_source)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("attempts_per_source", &self.attempts_per_source)
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
            metrics: Arc::default(),
            observer: None,
        }
    }
}

/// What one source did.
#[derive(Debug, Clone)]
pub struct SourceReport {
    pub source: Source,
    pub tally: Tally,
}

/// What a fetch did.
#[derive(Debug, Clone)]
pub struct FetchReport {
    pub title: TitleId,
    pub chunks: u32,
    /// Chunks already held when the fetch started.
    pub already_held: u32,
    /// Chunks fetched and stored by this fetch, in completion order.
    pub fetched: Vec<u32>,
    pub bytes: u64,
    pub elapsed: Duration,
    pub sources: Vec<SourceReport>,
}

/// Why a fetch did not complete.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no source could be reached: {0}")]
    NoSource(String),
    #[error("no source gave a manifest that verifies against {0}: {1}")]
    NoManifest(TitleId, String),
    #[error("{missing} chunks of {title} could not be fetched from any source (first: {first})")]
    Incomplete { title: TitleId, missing: usize, first: u32, report: Box<FetchReport> },
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
    let mut tallies = vec![Tally::default(); sources.len()];
    let conns = connect_all(endpoint, sources, &opts, &mut tallies).await;
    if conns.iter().all(Option::is_none) {
        let why = tallies.iter().filter_map(|t| t.error.clone()).collect::<Vec<_>>().join("; ");
        return Err(FetchError::NoSource(why));
    }

    let known = match into.known(&title) {
        Some(known) => Some(known),
        None => {
            let manifest = fetch_manifest(title, sources, &conns, &opts, &mut tallies).await?;
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
    let mut scheduler =
        Scheduler::new((0..manifest.chunk_count()).filter(|&i| !held.contains(i)), opts.attempts_per_source);
    info!(
        %title,
        chunks = manifest.chunk_count(),
        already_held,
        to_fetch = scheduler.missing().len(),
        setup = ?started.elapsed(),
        "fetch starting"
    );
    // All alike: every source takes any chunk, `per_source` at a time.
    for tally in tallies {
        scheduler.add_source(0, opts.per_source, tally);
    }
    let job = Job {
        title,
        manifest: manifest.clone(),
        write_slots: into.write_slots(),
        writer: ChunkWriter::spawn(into.clone(), into.commit_linger())?,
        metrics: opts.metrics.clone(),
        request_timeout: opts.request_timeout,
    };
    let peers = sources.iter().map(|s| s.peer).collect();
    let connected = Connected { title, conns: conns.clone(), peers, observer: opts.observer.clone() };
    let Filled { scheduler, store_error } = driver::drive(job, scheduler, connected).await;
    for conn in conns.into_iter().flatten() {
        conn.close(0u32.into(), b"done");
    }

    let reports: Vec<SourceReport> = sources
        .iter()
        .enumerate()
        .map(|(s, &source)| SourceReport { source, tally: scheduler.tally(s).clone() })
        .collect();
    let report = FetchReport {
        title,
        chunks: manifest.chunk_count(),
        already_held,
        fetched: scheduler.fetched().to_vec(),
        bytes: reports.iter().map(|r| r.tally.bytes).sum(),
        elapsed: started.elapsed(),
        sources: reports,
    };
    if let Some(e) = store_error {
        return Err(FetchError::Store(e));
    }
    let missing = scheduler.missing();
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

/// The sources of a fetch, all connected (or not) up front.
struct Connected {
    title: TitleId,
    conns: Vec<Option<Connection>>,
    peers: Vec<PeerId>,
    observer: Option<Arc<dyn Observer>>,
}

impl Sources for Connected {
    async fn connect(&self, s: usize) -> Result<Connection, String> {
        // Not reached for a source that could not be connected: the scheduler knows it lost.
        self.conns[s].clone().ok_or_else(|| "not connected".to_string())
    }

    async fn attempted(&self, _: usize, chunk: u32, attempt: &Attempt, outcome: &Outcome) {
        let title = &self.title;
        match outcome {
            Outcome::Stored(bytes) => {
                debug!(%title, chunk, "stored chunk");
                if let Some(observer) = &self.observer {
                    observer.stored(chunk, *bytes);
                }
            }
            Outcome::Corrupt => warn!(%title, chunk, "corrupt chunk, source marked bad: {attempt}"),
            Outcome::NotHeld | Outcome::Refused | Outcome::Timeout => {
                info!(%title, chunk, "chunk failed: {attempt}")
            }
            Outcome::Lost(e) => warn!(%title, chunk, "source lost: {e}"),
            Outcome::StoreFailed => warn!(%title, chunk, "store refused chunk: {attempt}"),
        }
    }

    fn span(&self, s: usize) -> tracing::Span {
        let peer = self.peers[s];
        tracing::info_span!("fetch", %peer)
    }
}

async fn connect_all(
    endpoint: &MeshEndpoint,
    sources: &[Source],
    opts: &FetchOptions,
    tallies: &mut [Tally],
) -> Vec<Option<Connection>> {
    let attempts = sources.iter().map(|s| async move {
        let conn =
            endpoint.connect_within(s.addr, s.peer, opts.connect_timeout).await.map_err(|e| e.to_string())?;
        // A node of another protocol version is said so now, not met as undecodable answers.
        hello(&conn, Role::Appliance, opts.request_timeout).await?;
        Ok::<_, String>(conn)
    });
    let results = futures_util::future::join_all(attempts).await;
    results
        .into_iter()
        .zip(sources.iter().zip(tallies))
        .map(|(r, (source, tally))| match r {
            Ok(conn) => Some(conn),
            Err(e) => {
                warn!(peer = %source.peer, addr = %source.addr, "cannot use source: {e}");
                tally.error = Some(e);
                None
            }
        })
        .collect()
}

/// Asks each connected source in turn for the manifest; one that does not verify marks its
/// source bad.
async fn fetch_manifest(
    title: TitleId,
    sources: &[Source],
    conns: &[Option<Connection>],
    opts: &FetchOptions,
    tallies: &mut [Tally],
) -> Result<Manifest, FetchError> {
    let mut reasons = Vec::new();
    for (s, conn) in conns.iter().enumerate() {
        let Some(conn) = conn else { continue };
        let peer = sources[s].peer;
        match request_manifest(conn, title, opts.request_timeout).await {
            Ok(m) => return Ok(m),
            Err(ManifestMiss::False(e)) => {
                warn!(%peer, "false manifest, source marked bad: {e}");
                reasons.push(format!("{peer} sent a false manifest"));
                tallies[s].corrupt += 1;
                tallies[s].bad = true;
            }
            Err(ManifestMiss::Unavailable(e)) => {
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
