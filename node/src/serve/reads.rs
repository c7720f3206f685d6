//! Chunk reads for serving, a bounded number at once, first come first served.
//!
//! Each read is a `pread` of up to a chunk and a BLAKE3 pass over it, on the blocking pool.
//! Unbounded, a burst of players starts as many at once as tokio's pool has threads (512): on
//! a machine with two cores they share the cores with each other and with the runtime's
//! workers, so every read takes as long as all of them together, and the workers that accept,
//! answer and send are starved meanwhile. Bounded, the reads queue in order: the first to come
//! is served first, and the workers keep their share.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::store::StoreError;

/// The chunk reads a node's servers run at once (shared by the mesh and player servers).
#[derive(Debug, Clone)]
pub struct Reads {
    permits: Arc<Semaphore>,
}

impl Reads {
    /// Most reads the limit allows at once, whatever is asked.
    pub const MAX: usize = 1024;

    /// At most `at_once` reads at once (1 to [`Self::MAX`]).
    pub fn new(at_once: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(at_once.clamp(1, Self::MAX))) }
    }

    /// The default bound: four per core. A read that finds its chunk in the page cache is CPU
    /// (the hash), and two per core keep the cores busy; one that reaches the disk waits, and
    /// more of them at once keep an SSD's queue full.
    pub fn default_at_once() -> usize {
        4 * std::thread::available_parallelism().map_or(2, usize::from)
    }

    /// Runs `read` on the blocking pool once a place is free, in the order asked. The read
    /// runs to its end even if the handle is dropped (as a blocking task would).
    pub fn spawn<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> JoinHandle<Result<T, StoreError>> {
        let permits = self.permits.clone();
        tokio::spawn(async move {
            // The semaphore is never closed: acquiring fails only if it were.
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|e| StoreError::io("waiting to read a chunk", std::io::Error::other(e)))?;
            tokio::task::spawn_blocking(read)
                .await
                .unwrap_or_else(|e| Err(StoreError::io("chunk read task", std::io::Error::other(e))))
        })
    }
}

impl Default for Reads {
    fn default() -> Self {
        Self::new(Self::default_at_once())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Duration;

    use super::*;

    /// No more reads run at once than the limit, and all of them complete.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_than_the_limit_at_once() {
        let reads = Reads::new(3);
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let handles: Vec<_> = (0..24)
            .map(|i| {
                let (running, most) = (running.clone(), most.clone());
                reads.spawn(move || {
                    let now = running.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    std::thread::sleep(Duration::from_millis(40));
                    running.fetch_sub(1, SeqCst);
                    Ok(i)
                })
            })
            .collect();
        let mut got = Vec::new();
        for h in handles {
            got.push(h.await.expect("read task").expect("read"));
        }
        assert_eq!(got, (0..24).collect::<Vec<_>>());
        let most = most.load(SeqCst);
        assert!(most <= 3, "{most} reads at once, over the limit of 3");
        // They do run side by side (24 reads of 40 ms one after another would be no bound).
        assert!(most > 1, "the reads ran one at a time");
    }

    /// A read's error comes back as it was; the place it held is free again.
    #[tokio::test]
    async fn an_error_is_returned_and_frees_its_place() {
        let reads = Reads::new(1);
        let failed =
            reads.spawn(|| Err::<(), _>(StoreError::UnknownTitle(fillmesh_protocol::TitleId::of(b"x"))));
        assert!(matches!(failed.await.expect("task"), Err(StoreError::UnknownTitle(_))));
        let next = tokio::time::timeout(Duration::from_secs(10), reads.spawn(|| Ok(7))).await;
        assert_eq!(next.expect("the place was freed").expect("task").expect("read"), 7);
    }

    #[test]
    fn the_limit_is_clamped() {
        assert_eq!(Reads::new(0).permits.available_permits(), 1);
        assert_eq!(Reads::new(usize::MAX).permits.available_permits(), Reads::MAX);
    }
}
