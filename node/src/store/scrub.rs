//! The background scrub: every held chunk re-verified from disk at a bounded rate, so that
//! damage in titles nobody asks for is found (and the chunk dropped and filled again) before
//! a player or a peer needs it.
//!
//! One pass walks every title and every chunk held when the pass reaches the title, reading
//! each around the page cache ([`Store::scrub_chunk`]) through a token bucket of
//! [`ScrubConfig::rate`] bytes per second; a pass starts at most once per
//! [`ScrubConfig::interval`]. The task runs until the node aborts it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fillmesh_net::sync::LockExt;
use fillmesh_net::Chain;
use fillmesh_protocol::TitleId;
use prometheus_client::metrics::counter::Counter;
use tracing::{debug, info, warn};

use super::{Scrubbed, Store, StoreError};
use fillmesh_net::rate::TokenBucket;

/// How fast and how often the scrub runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubConfig {
    /// Bytes verified per second at most.
    pub rate: u64,
    /// A pass starts at most this often (a pass that takes longer is followed at once).
    pub interval: Duration,
}

impl ScrubConfig {
    /// The default pace of `fillmesh node` (`--scrub-rate`): 16 MB/s (a 1 TiB appliance in
    /// about 19 hours).
    pub const DEFAULT_RATE: u64 = 16_000_000;
    /// The default interval of `fillmesh node` (`--scrub-interval-secs`): a pass at most
    /// every hour.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
}

/// What the scrub did, for `/metrics`.
#[derive(Debug, Default)]
pub struct ScrubStatus {
    /// Chunk bytes the scrub verified.
    pub bytes: Counter,
    /// Per title: when (Unix seconds) the scrub last finished a pass over it.
    finished: Mutex<BTreeMap<TitleId, u64>>,
}

impl ScrubStatus {
    /// Unix time of each title's last finished pass.
    pub fn last_scrubbed(&self) -> Vec<(TitleId, u64)> {
        self.finished().iter().map(|(t, at)| (*t, *at)).collect()
    }

    fn finished(&self) -> std::sync::MutexGuard<'_, BTreeMap<TitleId, u64>> {
        self.finished.locked()
    }
}

/// Scrubs `store` until the task is aborted.
pub async fn run(store: Arc<Store>, config: ScrubConfig, status: Arc<ScrubStatus>) {
    let bucket = TokenBucket::new(config.rate.max(1));
    info!(rate = config.rate, interval_s = config.interval.as_secs(), "scrub started");
    // One pass per turn; each waits for the bucket, and the next pass for the interval.
    loop {
        let started = tokio::time::Instant::now();
        let (mut verified, mut dropped) = (0u64, 0u32);
        let titles: Vec<TitleId> = store.titles().iter().map(|i| i.title).collect();
        status.finished().retain(|t, _| titles.contains(t));
        for title in titles {
            let Some(info) = store.info(&title) else { continue };
            let mut whole = true;
            for index in info.held.iter() {
                bucket.take(info.manifest.chunk_len(index).unwrap_or(0)).await;
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.scrub_chunk(&title, index)).await {
                    Ok(Ok(Scrubbed::Verified(n))) => {
                        verified += n;
                        status.bytes.inc_by(n);
                    }
                    Ok(Ok(Scrubbed::Dropped)) => dropped += 1,
                    Ok(Ok(Scrubbed::NotHeld)) => {}
                    // Evicted while the pass went through it.
                    Ok(Err(StoreError::UnknownTitle(_))) => {
                        whole = false;
                        break;
                    }
                    Ok(Err(e)) => {
                        warn!(%title, index, "scrub cannot check a chunk: {}", Chain(&e));
                        whole = false;
                    }
                    Err(e) => {
                        warn!(%title, index, "scrub task failed: {e}");
                        whole = false;
                    }
                }
            }
            if whole {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                status.finished().insert(title, now);
            }
        }
        debug!(verified_bytes = verified, dropped, secs = started.elapsed().as_secs_f64(), "scrub pass done");
        tokio::time::sleep_until(started + config.interval.max(Duration::from_millis(100))).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::VerifiedChunk;
    use bytes::Bytes;
    use fillmesh_protocol::{ChunkSize, Manifest};
    use std::os::unix::fs::FileExt;

    #[test]
    fn the_scrub_finds_damage_nobody_reads_and_records_each_pass() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let data: Vec<u8> = (0..4 * 4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
        let (id, m) = Manifest::from_bytes(&data, ChunkSize::new(4096).unwrap()).unwrap();
        store.add_title(id, "cold", m.clone()).unwrap();
        for i in 0..4 {
            let bytes = Bytes::copy_from_slice(&data[i as usize * 4096..(i as usize + 1) * 4096]);
            store.put_chunk(&VerifiedChunk::verify(id, &m, i, bytes).unwrap()).unwrap();
        }
        let file = std::fs::OpenOptions::new().write(true).open(store.data_path(&id)).unwrap();
        file.write_all_at(&[0x5a; 4], 2 * 4096 + 7).unwrap();
        let status = Arc::new(ScrubStatus::default());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let config = ScrubConfig { rate: 10_000_000, interval: Duration::from_millis(100) };
        let found = rt.block_on(async {
            let scrub = tokio::spawn(run(store.clone(), config, status.clone()));
            // Bounded: at most 10 s of passes over 16 KiB.
            let found = tokio::time::timeout(Duration::from_secs(10), async {
                while status.bytes.get() < 2 * 3 * 4096 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            scrub.abort();
            found
        });
        assert!(found.is_ok(), "two passes did not finish in 10 s");
        assert_eq!(store.damaged_chunks(), 1, "the damage was not found, or counted twice");
        assert_eq!(store.held(&id).unwrap().iter().collect::<Vec<_>>(), vec![0, 1, 3]);
        assert_eq!(store.take_damaged(), vec![id]);
        let passes = status.last_scrubbed();
        assert_eq!(passes.len(), 1);
        assert_eq!(passes[0].0, id);
        assert!(passes[0].1 > 1_600_000_000, "not a Unix time: {}", passes[0].1);
    }
}
