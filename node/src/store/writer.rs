//! The group-commit writer: verified chunks from any number of fetches go to one thread, which
//! writes each as it comes and commits them together (one `fdatasync` and one index flush per
//! batch).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use super::{Store, StoreError, VerifiedChunk, Written};

/// What the writer thread commits chunks into: the store (durable, indexed), or the file a
/// fetch writes straight into ([`super::OutFile`]). A commit has two halves, so that a
/// chunk's buffer goes as soon as its bytes are written, not after the batch's sync.
pub trait Commit: Send + Sync + 'static {
    /// Writes `chunk` where it belongs; it neither counts as held nor is durable until
    /// [`Commit::commit`]. `pending` is the bytes the same batch wrote before it.
    fn write(&self, chunk: &VerifiedChunk, pending: u64) -> Result<Written, StoreError>;
    /// Makes the chunks written durable and marks them held; per chunk, whether it was not
    /// held before. On an error no chunk of the batch counts as held.
    fn commit(&self, written: &[Written]) -> Result<Vec<bool>, StoreError>;
}

impl Commit for Store {
    fn write(&self, chunk: &VerifiedChunk, pending: u64) -> Result<Written, StoreError> {
        self.write_chunk(chunk, pending)
    }
    fn commit(&self, written: &[Written]) -> Result<Vec<bool>, StoreError> {
        self.commit_written(written)
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
    /// Released with the chunk's bytes, once they are written (see [`ChunkWriter::put_with`]).
    slot: Option<OwnedSemaphorePermit>,
    done: Done,
}

type Done = tokio::sync::oneshot::Sender<Result<bool, StoreError>>;

impl ChunkWriter {
    /// Most chunks committed together.
    const MAX_BATCH: usize = 64;
    /// Most chunks written and waiting for a commit: when the commits fall this far behind,
    /// the writes wait (and so, once the write slots are taken, does the network).
    const MAX_UNCOMMITTED: usize = 4 * Self::MAX_BATCH;

    /// Starts the writer threads; they end when the last `ChunkWriter` clone is dropped.
    ///
    /// Two threads: one writes each chunk as soon as it comes and drops its buffer (its write
    /// slot released), the other commits what was written in batches: a store's with one data
    /// sync and one index flush. Writes go on while a batch syncs, so the chunks held in
    /// memory wait for the disk's bandwidth, never for a sync's latency: with the two in one,
    /// a 1 GiB `fetch --data` kept 32 chunk buffers alive through each group commit (86-90 MB
    /// resident; see `fill::swarm::WRITE_SLOTS`).
    ///
    /// `linger` is how long a batch stays open after its first chunk: zero commits whatever
    /// is written at once (lowest latency per chunk); a few milliseconds cut the syncs of a
    /// bulk fill several times over, which the fill benchmark measured as ~5% more throughput
    /// and ~5% less CPU on both ends (syncs are VM exits and host work on a virtual disk).
    /// No chunk counts as held any earlier or later than its batch's sync either way.
    pub fn spawn(sink: Arc<dyn Commit>, linger: Duration) -> Result<Self, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel::<WriteJob>();
        let (written_tx, written_rx) =
            std::sync::mpsc::sync_channel::<(Written, Done)>(Self::MAX_UNCOMMITTED);
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // Bytes written and not committed yet: counted against a store's quota with those held.
        let uncommitted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let start = |name: &str, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(body)
                .map_err(|e| StoreError::io("starting the writer thread", e))
        };
        let (writes, pending) = (sink.clone(), uncommitted.clone());
        start(
            "fillmesh-writer",
            Box::new(move || {
                // Ends when every sender is gone, or the committer is.
                while let Ok(WriteJob { chunk, slot, done }) = rx.recv() {
                    let result = writes.write(&chunk, pending.load(Relaxed));
                    // Its bytes are written: the buffer goes, the next chunk may come.
                    drop((chunk, slot));
                    match result {
                        Ok(written) => {
                            pending.fetch_add(written.bytes(), Relaxed);
                            if written_tx.send((written, done)).is_err() {
                                return;
                            }
                        }
                        // This chunk alone fails; the others go on.
                        Err(e) => {
                            let _ = done.send(Err(e));
                        }
                    }
                }
            }),
        )?;
        let counted = commits.clone();
        start(
            "fillmesh-commit",
            Box::new(move || {
                while let Ok(first) = written_rx.recv() {
                    let mut batch = vec![first];
                    let deadline = Instant::now() + linger;
                    // Bounded by MAX_BATCH and by the deadline.
                    while batch.len() < Self::MAX_BATCH {
                        match written_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                            Ok(w) => batch.push(w),
                            Err(_) => break,
                        }
                    }
                    let (written, dones): (Vec<Written>, Vec<Done>) = batch.into_iter().unzip();
                    let result = sink.commit(&written);
                    // Held now (or failed): no longer pending either way.
                    uncommitted.fetch_sub(written.iter().map(Written::bytes).sum(), Relaxed);
                    counted.fetch_add(1, Relaxed);
                    match result {
                        Ok(fresh) => {
                            for (done, fresh) in dones.into_iter().zip(fresh) {
                                let _ = done.send(Ok(fresh));
                            }
                        }
                        Err(e) => {
                            let reason = fillmesh_net::Chain(&e).to_string();
                            let mut first = Some(e);
                            for done in dones {
                                let err =
                                    first.take().unwrap_or_else(|| StoreError::BatchFailed(reason.clone()));
                                let _ = done.send(Err(err));
                            }
                        }
                    }
                }
            }),
        )?;
        Ok(Self { tx, commits })
    }

    /// Batches committed so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Relaxed)
    }

    /// Stores `chunk` durably and marks it held; true if it was not held before.
    pub async fn put(&self, chunk: VerifiedChunk) -> Result<bool, StoreError> {
        self.put_with(chunk, None).await
    }

    /// As [`ChunkWriter::put`], releasing `slot` as soon as the chunk's bytes are written
    /// and its buffer dropped, before the commit that makes it held: a fill bounds the chunk
    /// buffers alive at once by its slots, not the chunks waiting for a sync.
    pub async fn put_with(
        &self,
        chunk: VerifiedChunk,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<bool, StoreError> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.tx.send(WriteJob { chunk, slot, done }).map_err(|_| StoreError::WriterGone)?;
        result.await.map_err(|_| StoreError::WriterGone)?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    use super::*;
    use bytes::Bytes;
    use fillmesh_protocol::{ChunkSize, Manifest};
    use tokio::sync::Semaphore;

    /// Writes nothing anywhere; each commit waits for the test to open its gate.
    struct Gated {
        gate: Mutex<std::sync::mpsc::Receiver<()>>,
        written: AtomicUsize,
    }

    impl Commit for Gated {
        fn write(&self, chunk: &VerifiedChunk, _: u64) -> Result<Written, StoreError> {
            self.written.fetch_add(1, Relaxed);
            let len = chunk.bytes.len() as u64;
            Ok(Written { title: chunk.title, index: chunk.index, len, written: true, file: None })
        }
        fn commit(&self, written: &[Written]) -> Result<Vec<bool>, StoreError> {
            let _ = self.gate.lock().unwrap().recv();
            Ok(vec![true; written.len()])
        }
    }

    #[test]
    fn a_slot_comes_back_once_its_chunk_is_written_and_no_chunk_is_held_before_its_commit() {
        let data: Vec<u8> = (0..4 * 4096u32).map(|i| (i % 253) as u8).collect();
        let (title, manifest) = Manifest::from_bytes(&data, ChunkSize::new(4096).unwrap()).unwrap();
        let chunk = |i: u32| {
            let at = i as usize * 4096;
            VerifiedChunk::verify(title, &manifest, i, Bytes::copy_from_slice(&data[at..at + 4096])).unwrap()
        };
        let (open, gate) = std::sync::mpsc::channel();
        let sink = Arc::new(Gated { gate: Mutex::new(gate), written: AtomicUsize::new(0) });
        let writer = ChunkWriter::spawn(sink.clone(), Duration::ZERO).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            // One slot for four chunks: each next one gets it only once the chunk before is
            // written, while the first commit still waits at its gate. (The bound only turns
            // a broken release into a failure instead of a hang.)
            let slots = Arc::new(Semaphore::new(1));
            let bound = Duration::from_secs(120);
            let mut puts = Vec::new();
            for i in 0..4 {
                let slot = tokio::time::timeout(bound, slots.clone().acquire_owned())
                    .await
                    .expect("the slot must come back once its chunk is written, before any commit")
                    .unwrap();
                let (w, c) = (writer.clone(), chunk(i));
                puts.push(tokio::spawn(async move { w.put_with(c, Some(slot)).await }));
            }
            drop(tokio::time::timeout(bound, slots.acquire()).await.expect("the last slot must come back"));
            assert_eq!(sink.written.load(Relaxed), 4);
            assert!(puts.iter().all(|p| !p.is_finished()), "a chunk was reported before its commit");
            for _ in 0..4 {
                let _ = open.send(());
            }
            for put in puts {
                assert!(put.await.unwrap().unwrap());
            }
        });
    }
}
