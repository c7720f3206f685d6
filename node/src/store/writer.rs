//! The group-commit writer: verified chunks from any number of fetches go to one thread, which
//! writes them and commits them together (one `fdatasync` and one index flush per batch).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Store, StoreError, VerifiedChunk};

/// What the writer thread commits chunks into: the store (durable, indexed), or the file a
/// fetch writes straight into ([`super::OutFile`]).
pub trait Commit: Send + Sync + 'static {
    /// Writes `chunks` and marks them held; per chunk, whether it was not held before. On an
    /// error no chunk of the batch counts as held.
    fn commit(&self, chunks: &[VerifiedChunk]) -> Result<Vec<bool>, StoreError>;
}

impl Commit for Store {
    fn commit(&self, chunks: &[VerifiedChunk]) -> Result<Vec<bool>, StoreError> {
        self.put_batch(chunks)
    }
}

/// Hands chunks to one writer thread that commits them in groups: under load, many chunks
/// share one `fdatasync` and one index flush, and concurrent fetches never contend for the
/// data file's lock.
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    tx: std::sync::mpsc::Sender<WriteJob>,
    /// Batches committed so far (each one data sync and one index flush).
    commits: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Debug)]
struct WriteJob {
    chunk: VerifiedChunk,
    done: tokio::sync::oneshot::Sender<Result<bool, StoreError>>,
}

impl ChunkWriter {
    /// Most chunks committed together.
    const MAX_BATCH: usize = 64;

    /// Starts the writer thread; it ends when the last `ChunkWriter` clone is dropped.
    ///
    /// A store commits a batch with one data sync and one index flush. `linger` is how long the
    /// first chunk of a batch may wait for company: zero commits whatever is queued at once
    /// (lowest latency per chunk); a few milliseconds cut the syncs of a bulk fill several
    /// times over, which the fill benchmark measured as ~5% more throughput and ~5% less CPU
    /// on both ends (syncs are VM exits and host work on a virtual disk). No chunk counts as
    /// held any earlier or later than its batch's sync either way.
    pub fn spawn(sink: Arc<dyn Commit>, linger: Duration) -> Result<Self, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel::<WriteJob>();
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = commits.clone();
        std::thread::Builder::new()
            .name("fillmesh-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    let deadline = Instant::now() + linger;
                    // Bounded by MAX_BATCH and by the deadline.
                    while jobs.len() < Self::MAX_BATCH {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    let chunks: Vec<VerifiedChunk> = jobs.iter().map(|j| j.chunk.clone()).collect();
                    let result = sink.commit(&chunks);
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match result {
                        Ok(fresh) => {
                            for (job, fresh) in jobs.into_iter().zip(fresh) {
                                let _ = job.done.send(Ok(fresh));
                            }
                        }
                        Err(e) => {
                            let reason = fillmesh_net::Chain(&e).to_string();
                            let mut first = Some(e);
                            for job in jobs {
                                let err =
                                    first.take().unwrap_or_else(|| StoreError::BatchFailed(reason.clone()));
                                let _ = job.done.send(Err(err));
                            }
                        }
                    }
                }
            })
            .map_err(|e| StoreError::io("starting the writer thread", e))?;
        Ok(Self { tx, commits })
    }

    /// Batches committed so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stores `chunk` durably and marks it held; true if it was not held before.
    pub async fn put(&self, chunk: VerifiedChunk) -> Result<bool, StoreError> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.tx.send(WriteJob { chunk, done }).map_err(|_| StoreError::WriterGone)?;
        result.await.map_err(|_| StoreError::WriterGone)?
    }
}
