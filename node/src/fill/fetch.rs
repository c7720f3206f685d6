//! The fetch engine: fills a title from one or more sources at once, several chunks in
//! flight per source, verifying every chunk before it is stored, retrying a failed chunk
//! elsewhere, and dropping a source that sent a corrupt chunk or a false manifest.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fillmesh_net::MeshEndpoint;
use fillmesh_protocol::{Manifest, TitleId};
use libp2p_identity::PeerId;
use quinn::Connection;
use tokio::sync::{Notify, Semaphore};
use tracing::{info, warn, Instrument};

use super::client::{request_chunk, request_manifest, ChunkError};
use crate::store::{ChunkWriter, Store, StoreError, VerifiedChunk};

/// Verified chunks that may wait for their commit at once (32 MiB at the default chunk size).
const WRITE_SLOTS: usize = 32;

/// A node to fetch from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub addr: SocketAddr,
    pub peer: PeerId,
}

/// Knobs of a fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Chunk requests in flight per source.
    pub per_source: usize,
    /// Time allowed for one request, chunk bytes included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts of one chunk at one source before that source is not asked for it again.
    pub attempts_per_source: u32,
    /// How long a stored chunk may wait for others to share its sync (see
    /// [`ChunkWriter::spawn`]): a bulk fetch trades a few milliseconds per chunk for far fewer
    /// syncs.
    pub commit_linger: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            per_source: 4,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            attempts_per_source: 2,
            commit_linger: Duration::from_millis(4),
        }
    }
}

/// What one source did.
#[derive(Debug, Clone)]
pub struct SourceReport {
    pub source: Source,
    pub chunks: u64,
    pub bytes: u64,
    pub failures: u64,
    /// Chunks or manifests from it that failed verification.
    pub corrupt: u64,
    /// It lied: it is not asked again.
    pub bad: bool,
    /// Why it could not be used at all, if so.
    pub error: Option<String>,
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

/// How one chunk request went.
enum Outcome {
    Stored(u64),
    /// The source sent bytes that do not verify: it lies or its disk is bad.
    Corrupt(String),
    /// The source answered but cannot give this chunk now.
    Failed(String),
    /// The connection is gone.
    Lost(String),
    /// The store refused the chunk (disk full, I/O): stop everything.
    Store(StoreError),
}

struct Shared {
    queue: VecDeque<u32>,
    in_flight: usize,
    attempts: HashMap<(u32, usize), u32>,
    stopped: Option<StoreError>,
    fetched: Vec<u32>,
    reports: Vec<SourceReport>,
}

struct Job {
    title: TitleId,
    manifest: Arc<Manifest>,
    writer: ChunkWriter,
    /// Verified chunks waiting for their commit, at most [`WRITE_SLOTS`].
    write_slots: Arc<Semaphore>,
    opts: FetchOptions,
    shared: Mutex<Shared>,
    wake: Notify,
}

impl Job {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next chunk source `s` may try, or `None` when it should wait or stop.
    fn next_for(&self, s: usize) -> Next {
        let mut sh = self.lock();
        if sh.stopped.is_some() || sh.reports[s].bad {
            return Next::Stop;
        }
        let limit = self.opts.attempts_per_source;
        if let Some(pos) =
            sh.queue.iter().position(|&c| sh.attempts.get(&(c, s)).copied().unwrap_or(0) < limit)
        {
            let chunk = sh.queue.remove(pos).unwrap_or_default();
            sh.in_flight += 1;
            return Next::Chunk(chunk);
        }
        if sh.in_flight == 0 {
            Next::Stop
        } else {
            Next::Wait
        }
    }

    fn finish(&self, s: usize, chunk: u32, outcome: Outcome) {
        let mut sh = self.lock();
        sh.in_flight -= 1;
        match outcome {
            Outcome::Stored(bytes) => {
                sh.fetched.push(chunk);
                sh.reports[s].chunks += 1;
                sh.reports[s].bytes += bytes;
            }
            Outcome::Corrupt(_) => {
                sh.reports[s].corrupt += 1;
                sh.reports[s].bad = true;
                sh.queue.push_front(chunk);
            }
            Outcome::Failed(_) => {
                sh.reports[s].failures += 1;
                *sh.attempts.entry((chunk, s)).or_default() += 1;
                sh.queue.push_back(chunk);
            }
            Outcome::Lost(e) => {
                sh.reports[s].failures += 1;
                sh.reports[s].error.get_or_insert(e);
                *sh.attempts.entry((chunk, s)).or_default() = u32::MAX;
                sh.queue.push_front(chunk);
            }
            Outcome::Store(e) => {
                sh.queue.push_front(chunk);
                sh.stopped.get_or_insert(e);
            }
        }
        drop(sh);
        self.wake.notify_waiters();
    }
}

enum Next {
    Chunk(u32),
    Wait,
    Stop,
}

/// Fills `title` into `store` from `sources`. The manifest comes from the store when it is
/// already known, otherwise from the first source whose manifest verifies.
pub async fn fetch_title(
    endpoint: &MeshEndpoint,
    store: Arc<Store>,
    title: TitleId,
    sources: &[Source],
    opts: FetchOptions,
) -> Result<FetchReport, FetchError> {
    let started = Instant::now();
    let mut reports: Vec<SourceReport> = sources
        .iter()
        .map(|&source| SourceReport {
            source,
            chunks: 0,
            bytes: 0,
            failures: 0,
            corrupt: 0,
            bad: false,
            error: None,
        })
        .collect();
    let conns = connect_all(endpoint, sources, &opts, &mut reports).await;
    if conns.iter().all(Option::is_none) {
        let why = reports.iter().filter_map(|r| r.error.clone()).collect::<Vec<_>>().join("; ");
        return Err(FetchError::NoSource(why));
    }

    let manifest = match store.manifest(&title) {
        Some(m) => m,
        None => {
            let manifest = fetch_manifest(title, &conns, &opts, &mut reports).await?;
            let (s, m) = (store.clone(), manifest.clone());
            blocking(move || s.add_title(title, "", m)).await?;
            Arc::new(manifest)
        }
    };
    let held = store.held(&title).ok_or(StoreError::UnknownTitle(title))?;
    let already_held = held.count();
    let queue: VecDeque<u32> = (0..manifest.chunk_count()).filter(|&i| !held.contains(i)).collect();
    info!(
        %title,
        chunks = manifest.chunk_count(),
        already_held,
        to_fetch = queue.len(),
        setup = ?started.elapsed(),
        "fetch starting"
    );

    let job = Arc::new(Job {
        title,
        manifest: manifest.clone(),
        writer: ChunkWriter::spawn(store, opts.commit_linger)?,
        write_slots: Arc::new(Semaphore::new(WRITE_SLOTS)),
        opts: opts.clone(),
        shared: Mutex::new(Shared {
            queue,
            in_flight: 0,
            attempts: HashMap::new(),
            stopped: None,
            fetched: Vec::new(),
            reports,
        }),
        wake: Notify::new(),
    });
    let mut workers = tokio::task::JoinSet::new();
    for (s, conn) in conns.iter().enumerate() {
        let Some(conn) = conn else { continue };
        for _ in 0..opts.per_source.max(1) {
            let (job, conn) = (job.clone(), conn.clone());
            let peer = sources[s].peer;
            workers.spawn(worker(job, s, conn).instrument(tracing::info_span!("fetch", %peer)));
        }
    }
    while workers.join_next().await.is_some() {}
    // Workers of a source that went bad may leave commits behind: wait for every one.
    let _all = job.write_slots.acquire_many(WRITE_SLOTS as u32).await;
    for conn in conns.into_iter().flatten() {
        conn.close(0u32.into(), b"done");
    }

    let mut sh = job.lock();
    let report = FetchReport {
        title,
        chunks: manifest.chunk_count(),
        already_held,
        fetched: std::mem::take(&mut sh.fetched),
        bytes: sh.reports.iter().map(|r| r.bytes).sum(),
        elapsed: started.elapsed(),
        sources: sh.reports.clone(),
    };
    if let Some(e) = sh.stopped.take() {
        return Err(FetchError::Store(e));
    }
    if let Some(&first) = sh.queue.iter().min() {
        return Err(FetchError::Incomplete {
            title,
            missing: sh.queue.len(),
            first,
            report: Box::new(report),
        });
    }
    Ok(report)
}

async fn worker(job: Arc<Job>, s: usize, conn: Connection) {
    // Bounded: every pass either takes a chunk (finite queue, finite attempts per chunk and
    // source) or waits for another worker's progress, or stops.
    loop {
        match job.next_for(s) {
            Next::Stop => return,
            Next::Wait => {
                let notified = job.wake.notified();
                // Re-check after registering, so a wake-up between the two is not missed.
                if let Next::Wait = peek(&job, s) {
                    let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
                }
            }
            Next::Chunk(chunk) => match fetch_chunk(&job, &conn, chunk).await {
                Ok(verified) => {
                    // The commit (write, sync, mark) runs behind the worker, which goes on to
                    // the next request: the network never waits for an fsync. Pending commits
                    // are bounded by the write slots.
                    let Ok(slot) = job.write_slots.clone().acquire_owned().await else { return };
                    let job = job.clone();
                    tokio::spawn(async move {
                        let len = verified.bytes().len() as u64;
                        let outcome = match job.writer.put(verified).await {
                            Ok(_) => Outcome::Stored(len),
                            Err(e) => Outcome::Store(e),
                        };
                        log_outcome(&job.title, chunk, &outcome);
                        job.finish(s, chunk, outcome);
                        drop(slot);
                    });
                }
                Err(outcome) => {
                    log_outcome(&job.title, chunk, &outcome);
                    let stop = matches!(outcome, Outcome::Corrupt(_) | Outcome::Lost(_));
                    job.finish(s, chunk, outcome);
                    if stop {
                        return;
                    }
                }
            },
        }
    }
}

fn peek(job: &Job, s: usize) -> Next {
    let sh = job.lock();
    if sh.stopped.is_some() || sh.reports[s].bad {
        return Next::Stop;
    }
    let limit = job.opts.attempts_per_source;
    if sh.queue.iter().any(|&c| sh.attempts.get(&(c, s)).copied().unwrap_or(0) < limit) {
        Next::Chunk(0)
    } else if sh.in_flight == 0 {
        Next::Stop
    } else {
        Next::Wait
    }
}

fn log_outcome(title: &TitleId, chunk: u32, outcome: &Outcome) {
    match outcome {
        Outcome::Stored(_) => info!(%title, chunk, "stored chunk"),
        Outcome::Corrupt(e) => warn!(%title, chunk, "corrupt chunk, source marked bad: {e}"),
        Outcome::Failed(e) => info!(%title, chunk, "chunk failed: {e}"),
        Outcome::Lost(e) => warn!(%title, chunk, "source lost: {e}"),
        Outcome::Store(e) => warn!(%title, chunk, "store refused chunk: {e}"),
    }
}

/// Requests one chunk and verifies it; the error is how the attempt ended.
async fn fetch_chunk(job: &Job, conn: &Connection, chunk: u32) -> Result<VerifiedChunk, Outcome> {
    let Some(expected) = job.manifest.chunk_len(chunk) else {
        return Err(Outcome::Failed(format!("chunk {chunk} is out of range")));
    };
    let timeout = job.opts.request_timeout;
    let bytes =
        match tokio::time::timeout(timeout, request_chunk(conn, job.title, chunk, expected, timeout)).await {
            Err(_) => return Err(Outcome::Failed(format!("timed out after {timeout:?}"))),
            Ok(Err(ChunkError::Lost(e))) => return Err(Outcome::Lost(e)),
            Ok(Err(ChunkError::Refused(e) | ChunkError::NotHeld(e))) => return Err(Outcome::Failed(e)),
            Ok(Err(ChunkError::Lied(e))) => return Err(Outcome::Corrupt(e)),
            Ok(Ok(bytes)) => bytes,
        };
    VerifiedChunk::verify(job.title, &job.manifest, chunk, bytes.freeze())
        .map_err(|e| Outcome::Corrupt(e.to_string()))
}

async fn connect_all(
    endpoint: &MeshEndpoint,
    sources: &[Source],
    opts: &FetchOptions,
    reports: &mut [SourceReport],
) -> Vec<Option<Connection>> {
    let attempts = sources.iter().map(|s| async move {
        endpoint.connect_within(s.addr, s.peer, opts.connect_timeout).await.map_err(|e| e.to_string())
    });
    let results = futures_util::future::join_all(attempts).await;
    results
        .into_iter()
        .zip(reports.iter_mut())
        .map(|(r, report)| match r {
            Ok(conn) => Some(conn),
            Err(e) => {
                warn!(peer = %report.source.peer, addr = %report.source.addr, "cannot use source: {e}");
                report.error = Some(e);
                None
            }
        })
        .collect()
}

/// Asks each connected source in turn for the manifest; one that does not verify marks its
/// source bad.
async fn fetch_manifest(
    title: TitleId,
    conns: &[Option<Connection>],
    opts: &FetchOptions,
    reports: &mut [SourceReport],
) -> Result<Manifest, FetchError> {
    let mut reasons = Vec::new();
    for (s, conn) in conns.iter().enumerate() {
        let Some(conn) = conn else { continue };
        let peer = reports[s].source.peer;
        match request_manifest(conn, title, opts.request_timeout).await {
            Ok(m) => match m.verify(&title) {
                Ok(()) => return Ok(m),
                Err(e) => {
                    warn!(%peer, "false manifest, source marked bad: {e}");
                    reasons.push(format!("{peer} sent a false manifest"));
                    reports[s].corrupt += 1;
                    reports[s].bad = true;
                }
            },
            Err(e) => {
                info!(%peer, "no manifest: {e}");
                reasons.push(format!("{peer}: {e}"));
                reports[s].failures += 1;
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
