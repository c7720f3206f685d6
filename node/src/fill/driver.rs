//! The async driver of the [`Scheduler`]: workers per source pull its decisions, request
//! chunks over the mesh, verify them and commit them through the group-commit writer, and
//! feed back how each attempt went. Both fills run on it: `fillmesh fetch`
//! ([`super::fetch`]) and the tracker's assignments (`member`); what differs between them
//! (how a source is reached, what is logged and reported) is their [`Sources`].
//!
//! Also the one mapping of a chunk request's result to the scheduler's [`Outcome`]
//! ([`Attempt::outcome`]).

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fillmesh_protocol::{Manifest, TitleId};
use quinn::Connection;
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument;

use super::client::{request_chunk, ChunkError};
use super::scheduler::{Next, Outcome, Scheduler};
use crate::metrics::FillMetrics;
use crate::store::{ChunkWriter, StoreError, VerifiedChunk};

/// Verified chunks that may wait for their commit at once, by default (32 MiB at the default
/// chunk size): enough for the network to go on through a store's group commit and its sync.
pub(crate) const WRITE_SLOTS: usize = 32;

/// How one attempt at a chunk went, in the detail the logs want.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Verified and stored, this many bytes.
    Stored(u64),
    /// No connection to the source could be had.
    Unreachable(String),
    /// The request failed.
    Request(ChunkError),
    /// No answer within the request's time.
    TimedOut(Duration),
    /// The chunk is not in the manifest.
    OutOfRange(u32),
    /// The bytes did not verify against the manifest.
    Unverified(String),
    /// The store refused the verified chunk.
    Store(StoreError),
}

impl Attempt {
    /// What the attempt means to the scheduler.
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            Attempt::Stored(bytes) => Outcome::Stored(*bytes),
            Attempt::Unreachable(e) | Attempt::Request(ChunkError::Lost(e)) => Outcome::Lost(e.clone()),
            Attempt::Request(ChunkError::NotHeld(_)) => Outcome::NotHeld,
            Attempt::Request(ChunkError::Refused(_)) | Attempt::OutOfRange(_) => Outcome::Refused,
            Attempt::TimedOut(_) => Outcome::Timeout,
            Attempt::Request(ChunkError::Lied(_)) | Attempt::Unverified(_) => Outcome::Corrupt,
            Attempt::Store(_) => Outcome::StoreFailed,
        }
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attempt::Stored(bytes) => write!(f, "stored {bytes} bytes"),
            Attempt::Request(
                ChunkError::Lost(e) | ChunkError::NotHeld(e) | ChunkError::Refused(e) | ChunkError::Lied(e),
            )
            | Attempt::Unreachable(e)
            | Attempt::Unverified(e) => f.write_str(e),
            Attempt::TimedOut(t) => write!(f, "timed out after {t:?}"),
            Attempt::OutOfRange(chunk) => write!(f, "chunk {chunk} is out of range"),
            Attempt::Store(e) => write!(f, "{e}"),
        }
    }
}

/// The fill's user's side: how its sources (the scheduler's indices) are reached, and what
/// it does with each attempt (logs, reports to the tracker).
pub(crate) trait Sources: Send + Sync + 'static {
    /// A connection to source `s`, dialled now or before; asked once per worker, when it first
    /// has a chunk to request. An error makes the source lost.
    fn connect(&self, s: usize) -> impl Future<Output = Result<Connection, String>> + Send;

    /// How an attempt of source `s` at `chunk` went. Heard before the scheduler hears it, so
    /// that (say) the tracker learns of a failed source before the chunk goes to the next.
    fn attempted(
        &self,
        s: usize,
        chunk: u32,
        attempt: &Attempt,
        outcome: &Outcome,
    ) -> impl Future<Output = ()> + Send;

    /// The span the workers of source `s` run in.
    fn span(&self, s: usize) -> tracing::Span;
}

/// The title being filled and the local pieces a fill uses.
pub(crate) struct Job {
    pub title: TitleId,
    pub manifest: Arc<Manifest>,
    pub writer: ChunkWriter,
    pub metrics: Arc<FillMetrics>,
    /// Time allowed for one request, chunk bytes included.
    pub request_timeout: Duration,
    /// Verified chunks that may wait for their commit at once: each holds its bytes in memory.
    pub write_slots: usize,
}

/// How a fill ended: the scheduler (its reports, what was fetched, what is missing) and the
/// store's error if one stopped it.
pub(crate) struct Filled {
    pub scheduler: Scheduler,
    pub store_error: Option<StoreError>,
}

struct Run<S> {
    job: Job,
    sources: S,
    /// Verified chunks waiting for their commit, at most [`Job::write_slots`].
    write_slots: Arc<Semaphore>,
    state: Mutex<Filled>,
    wake: Notify,
}

impl<S: Sources> Run<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Filled> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the user, then the scheduler, how an attempt went, and wakes waiting workers.
    async fn settle(&self, s: usize, chunk: u32, attempt: Attempt) {
        let outcome = attempt.outcome();
        self.sources.attempted(s, chunk, &attempt, &outcome).await;
        let mut state = self.lock();
        if let Attempt::Store(e) = attempt {
            state.store_error.get_or_insert(e);
        }
        state.scheduler.finish(s, chunk, outcome);
        drop(state);
        self.wake.notify_waiters();
    }

    /// Requests one chunk and verifies it; the error is how the attempt ended.
    async fn fetch_chunk(&self, conn: &Connection, chunk: u32) -> Result<VerifiedChunk, Attempt> {
        let Job { title, manifest, request_timeout: timeout, .. } = &self.job;
        let expected = manifest.chunk_len(chunk).ok_or(Attempt::OutOfRange(chunk))?;
        let bytes = tokio::time::timeout(*timeout, request_chunk(conn, *title, chunk, expected, *timeout))
            .await
            .map_err(|_| Attempt::TimedOut(*timeout))?
            .map_err(Attempt::Request)?;
        let len = bytes.len() as u64;
        match VerifiedChunk::verify(*title, manifest, chunk, bytes.freeze()) {
            Ok(verified) => {
                self.job.metrics.chunk_verified(len);
                Ok(verified)
            }
            Err(e) => {
                self.job.metrics.chunk_rejected();
                Err(Attempt::Unverified(e.to_string()))
            }
        }
    }
}

/// Runs `scheduler` to its end over `sources`: as many workers per source as its cap. Returns
/// once every worker stopped and every commit is done.
pub(crate) async fn drive<S: Sources>(job: Job, scheduler: Scheduler, sources: S) -> Filled {
    let caps: Vec<usize> = (0..scheduler.source_count()).map(|s| scheduler.cap(s)).collect();
    let slots = job.write_slots.max(1);
    let run = Arc::new(Run {
        job,
        sources,
        write_slots: Arc::new(Semaphore::new(slots)),
        state: Mutex::new(Filled { scheduler, store_error: None }),
        wake: Notify::new(),
    });
    let mut workers = tokio::task::JoinSet::new();
    for (s, &cap) in caps.iter().enumerate() {
        for _ in 0..cap {
            workers.spawn(worker(run.clone(), s).instrument(run.sources.span(s)));
        }
    }
    while workers.join_next().await.is_some() {}
    // Workers of a source that went bad may leave commits behind: wait for every one.
    let _all = run.write_slots.acquire_many(slots as u32).await;
    let mut state = run.lock();
    Filled { scheduler: std::mem::take(&mut state.scheduler), store_error: state.store_error.take() }
}

async fn worker<S: Sources>(run: Arc<Run<S>>, s: usize) {
    let mut conn: Option<Connection> = None;
    // A chunk this worker handed to the writer: its request is over, told to the scheduler
    // with the next ask (one lock for both).
    let mut handed_off: Option<u32> = None;
    // Bounded: every pass takes a chunk (finite chunks, finite attempts per chunk and source),
    // waits for another worker's progress, or stops.
    loop {
        // Created before asking, so that a wake-up between the ask and the wait is not missed.
        let notified = run.wake.notified();
        let next = {
            let mut state = run.lock();
            if let Some(chunk) = handed_off.take() {
                state.scheduler.received(s, chunk);
            }
            state.scheduler.next(s)
        };
        let chunk = match next {
            Next::Stop => return,
            Next::Wait => {
                let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
                continue;
            }
            Next::Chunk(chunk) => chunk,
        };
        let conn = match &conn {
            Some(c) => c,
            None => match run.sources.connect(s).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    run.settle(s, chunk, Attempt::Unreachable(e)).await;
                    continue;
                }
            },
        };
        match run.fetch_chunk(conn, chunk).await {
            Ok(verified) => {
                // The commit (write, sync, mark) runs behind the worker, which goes on to the
                // next request: the network never waits for an fsync. Pending commits are
                // bounded by the write slots.
                let Ok(slot) = run.write_slots.clone().acquire_owned().await else { return };
                handed_off = Some(chunk);
                let run = run.clone();
                tokio::spawn(async move {
                    let len = verified.bytes().len() as u64;
                    let attempt = match run.job.writer.put(verified).await {
                        Ok(_) => Attempt::Stored(len),
                        Err(e) => Attempt::Store(e),
                    };
                    run.settle(s, chunk, attempt).await;
                    drop(slot);
                });
            }
            Err(attempt) => run.settle(s, chunk, attempt).await,
        }
    }
}
