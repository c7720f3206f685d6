//! The node's Prometheus registry (appliance or origin): mesh serving, filling, fill progress
//! per title, and what players got. One registry, built by [`registry`], which every part
//! registers into; served on `--http ADDR` (the node's operator listener) at `/metrics`
//! ([`route`]) as [`fillmesh_net::metrics::page`] renders it, never on the players' port.

use std::sync::Arc;

use fillmesh_net::metrics::{encode_family, page};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::serve::{PlayerMetrics, ServeStats};
use crate::store::scrub::ScrubStatus;
use crate::store::{Store, TitleInfo};

/// Counters of the fill side.
#[derive(Debug, Default)]
pub struct FillMetrics {
    /// Chunks received that verified, and bytes of them.
    pub chunks_verified: Counter,
    /// The bytes of those chunks (counted, not registered: `/metrics` does not show it).
    pub bytes_verified: Counter,
    /// Chunks received that did not verify (rejected, never stored).
    pub chunks_rejected: Counter,
    /// Titles deleted because the tracker's planner evicted them, and the bytes that freed.
    pub titles_evicted: Counter,
    /// The bytes of held chunks those deletions freed.
    pub bytes_evicted: Counter,
}

impl FillMetrics {
    /// A chunk of `bytes` received and verified.
    pub fn chunk_verified(&self, bytes: u64) {
        self.chunks_verified.inc();
        self.bytes_verified.inc_by(bytes);
    }

    /// A chunk received that failed verification.
    pub fn chunk_rejected(&self) {
        self.chunks_rejected.inc();
    }

    /// A title deleted at the planner's word, freeing `bytes`.
    pub fn title_evicted(&self, bytes: u64) {
        self.titles_evicted.inc();
        self.bytes_evicted.inc_by(bytes);
    }

    /// Registers these counters in the node's registry. (Verified bytes are counted, not
    /// shown: they never were.)
    pub fn register(&self, registry: &mut Registry) {
        for (name, help, counter) in [
            (
                "fillmesh_chunks_verified",
                "Chunks received from peers or the origin that verified",
                &self.chunks_verified,
            ),
            (
                "fillmesh_chunks_rejected",
                "Chunks received that failed verification and were dropped",
                &self.chunks_rejected,
            ),
            (
                "fillmesh_evicted_titles",
                "Titles deleted to make room, as the tracker's planner decided",
                &self.titles_evicted,
            ),
            ("fillmesh_evicted_bytes", "Bytes of held chunks freed by eviction", &self.bytes_evicted),
        ] {
            registry.register(name, help, counter.clone());
        }
    }
}

/// The store's gauges and counters, and the scrub's, read at each scrape.
#[derive(Debug)]
struct StoreGauges(Arc<Store>, Arc<ScrubStatus>);

impl Collector for StoreGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let titles = self.0.titles();
        let per_title = |count: fn(&TitleInfo) -> u32| {
            titles.iter().map(move |t| ([("title", t.title.to_string())], u64::from(count(t))))
        };
        encode_family(
            &mut encoder,
            "fillmesh_fill_chunks_held",
            "Verified chunks held, per title.",
            MetricType::Gauge,
            per_title(|t| t.held.count()),
        )?;
        encode_family(
            &mut encoder,
            "fillmesh_fill_chunks",
            "Chunks of each title.",
            MetricType::Gauge,
            per_title(|t| t.manifest.chunk_count()),
        )?;
        let none: [(&str, &str); 0] = [];
        encode_family(
            &mut encoder,
            "fillmesh_store_held_bytes",
            "Bytes of all held chunks.",
            MetricType::Gauge,
            [(none, self.0.held_bytes())],
        )?;
        encode_family(
            &mut encoder,
            "fillmesh_store_chunks_damaged",
            "Held chunks that failed verification on disk (on a read or in the scrub) and were dropped.",
            MetricType::Counter,
            [(none, self.0.damaged_chunks())],
        )?;
        encode_family(
            &mut encoder,
            "fillmesh_scrub_last_pass_timestamp_seconds",
            "When the scrub last finished verifying every held chunk of a title (Unix time).",
            MetricType::Gauge,
            self.1.last_scrubbed().into_iter().map(|(t, at)| ([("title", t.to_string())], at)),
        )
    }
}

/// The node's one registry: every part's metrics, and the store's and the scrub's.
pub fn registry(
    store: Arc<Store>,
    serve: &ServeStats,
    fill: &FillMetrics,
    players: &PlayerMetrics,
    scrub: Arc<ScrubStatus>,
) -> Registry {
    let mut registry = Registry::default();
    serve.register(&mut registry);
    fill.register(&mut registry);
    registry.register("fillmesh_scrub_bytes", "Chunk bytes the scrub verified on disk", scrub.bytes.clone());
    registry.register_collector(Box::new(StoreGauges(store, scrub)));
    players.register(&mut registry);
    registry
}

/// `/metrics` (the node's registry) and `/health`, for an axum router.
pub fn route(registry: Arc<Registry>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(move || async move { page(&registry) }))
        .route("/health", axum::routing::get(|| async { "ok\n" }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fillmesh_protocol::{ChunkSize, Manifest};

    /// Every family a scraper saw before the registry, with its name, labels and type (the
    /// player TTFB alone was a summary and is now a histogram, with the same `_sum` and
    /// `_count`).
    #[test]
    fn the_node_registry_keeps_every_name_label_and_type() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let data = vec![7u8; 3 * 4096];
        let (title, manifest) = Manifest::from_bytes(&data, ChunkSize::new(4096).unwrap()).unwrap();
        store.add_title(title, "t", manifest).unwrap();
        let (serve, fill, players) =
            (ServeStats::default(), FillMetrics::default(), PlayerMetrics::default());
        let registry = registry(store, &serve, &fill, &players, Arc::default());
        serve.chunks.inc();
        fill.chunk_verified(4096);
        fill.title_evicted(1 << 20);
        players.bytes.inc_by(100);
        players.count(http::StatusCode::PARTIAL_CONTENT);
        players.ttfb.observe(0.003);
        let (headers, text) = page(&registry);
        assert_eq!(headers[0].1, "text/plain; version=0.0.4; charset=utf-8");
        for (name, kind) in [
            ("fillmesh_mesh_served_chunks_total", "counter"),
            ("fillmesh_mesh_served_bytes_total", "counter"),
            ("fillmesh_mesh_refused_total", "counter"),
            ("fillmesh_mesh_bad_requests_total", "counter"),
            ("fillmesh_chunks_verified_total", "counter"),
            ("fillmesh_chunks_rejected_total", "counter"),
            ("fillmesh_evicted_titles_total", "counter"),
            ("fillmesh_evicted_bytes_total", "counter"),
            ("fillmesh_fill_chunks_held", "gauge"),
            ("fillmesh_fill_chunks", "gauge"),
            ("fillmesh_store_held_bytes", "gauge"),
            ("fillmesh_store_chunks_damaged_total", "counter"),
            ("fillmesh_scrub_bytes_total", "counter"),
            ("fillmesh_scrub_last_pass_timestamp_seconds", "gauge"),
            ("fillmesh_player_bytes_total", "counter"),
            ("fillmesh_player_requests_total", "counter"),
            ("fillmesh_cache_misses_total", "counter"),
            ("fillmesh_player_ttfb_seconds", "histogram"),
        ] {
            assert!(text.contains(&format!("\n# TYPE {name} {kind}\n")), "{name} {kind}:\n{text}");
        }
        for line in [
            "fillmesh_mesh_served_chunks_total 1",
            "fillmesh_chunks_verified_total 1",
            "fillmesh_evicted_titles_total 1",
            "fillmesh_evicted_bytes_total 1048576",
            &format!("fillmesh_fill_chunks_held{{title=\"{title}\"}} 0"),
            &format!("fillmesh_fill_chunks{{title=\"{title}\"}} 3"),
            "fillmesh_store_held_bytes 0",
            "fillmesh_store_chunks_damaged_total 0",
            "fillmesh_scrub_bytes_total 0",
            "fillmesh_player_bytes_total 100",
            "fillmesh_player_requests_total{status=\"206\"} 1",
            "fillmesh_cache_misses_total{kind=\"content\"} 0",
            "fillmesh_cache_misses_total{kind=\"health\"} 0",
            "fillmesh_player_ttfb_seconds_sum 0.003",
            "fillmesh_player_ttfb_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
        }
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    }
}
