//! Prometheus text for a node (appliance or origin): mesh serving, filling, fill progress per
//! title, and what players got. Served on `--http ADDR` at `/metrics` (and on HTTP/3 at the
//! mesh port for the player part).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::serve::{PlayerServer, Server};
use crate::store::Store;

/// Counters of the fill side.
#[derive(Debug, Default)]
pub struct FillMetrics {
    /// Chunks received that verified, and bytes of them.
    pub chunks_verified: AtomicU64,
    pub bytes_verified: AtomicU64,
    /// Chunks received that did not verify (rejected, never stored).
    pub chunks_rejected: AtomicU64,
    /// Titles deleted because the tracker's planner evicted them, and the bytes that freed.
    pub titles_evicted: AtomicU64,
    pub bytes_evicted: AtomicU64,
}

impl FillMetrics {
    /// A chunk of `bytes` received and verified.
    pub fn chunk_verified(&self, bytes: u64) {
        self.chunks_verified.fetch_add(1, Relaxed);
        self.bytes_verified.fetch_add(bytes, Relaxed);
    }

    /// A chunk received that failed verification.
    pub fn chunk_rejected(&self) {
        self.chunks_rejected.fetch_add(1, Relaxed);
    }

    /// A title deleted at the planner's word, freeing `bytes`.
    pub fn title_evicted(&self, bytes: u64) {
        self.titles_evicted.fetch_add(1, Relaxed);
        self.bytes_evicted.fetch_add(bytes, Relaxed);
    }
}

/// Renders every metric of a node.
pub fn render(store: &Store, server: &Server, players: Option<&PlayerServer>, fill: &FillMetrics) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in lines {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let stats = &server.stats;
    metric(
        "fillmesh_mesh_served_chunks_total",
        "counter",
        "Chunks served to peers.",
        &[(String::new(), stats.chunks.load(Relaxed))],
    );
    metric(
        "fillmesh_mesh_served_bytes_total",
        "counter",
        "Chunk bytes served to peers.",
        &[(String::new(), stats.bytes.load(Relaxed))],
    );
    metric(
        "fillmesh_mesh_refused_total",
        "counter",
        "Mesh connections refused because the peer is not trusted.",
        &[(String::new(), stats.refused_untrusted.load(Relaxed))],
    );
    metric(
        "fillmesh_mesh_bad_requests_total",
        "counter",
        "Malformed mesh requests.",
        &[(String::new(), stats.bad_requests.load(Relaxed))],
    );
    metric(
        "fillmesh_chunks_verified_total",
        "counter",
        "Chunks received from peers or the origin that verified.",
        &[(String::new(), fill.chunks_verified.load(Relaxed))],
    );
    metric(
        "fillmesh_chunks_rejected_total",
        "counter",
        "Chunks received that failed verification and were dropped.",
        &[(String::new(), fill.chunks_rejected.load(Relaxed))],
    );
    metric(
        "fillmesh_evicted_titles_total",
        "counter",
        "Titles deleted to make room, as the tracker's planner decided.",
        &[(String::new(), fill.titles_evicted.load(Relaxed))],
    );
    metric(
        "fillmesh_evicted_bytes_total",
        "counter",
        "Bytes of held chunks freed by eviction.",
        &[(String::new(), fill.bytes_evicted.load(Relaxed))],
    );
    let titles = store.titles();
    let held: Vec<(String, u64)> =
        titles.iter().map(|t| (format!("{{title=\"{}\"}}", t.title), u64::from(t.held.count()))).collect();
    let total: Vec<(String, u64)> = titles
        .iter()
        .map(|t| (format!("{{title=\"{}\"}}", t.title), u64::from(t.manifest.chunk_count())))
        .collect();
    metric("fillmesh_fill_chunks_held", "gauge", "Verified chunks held, per title.", &held);
    metric("fillmesh_fill_chunks", "gauge", "Chunks of each title.", &total);
    metric(
        "fillmesh_store_held_bytes",
        "gauge",
        "Bytes of all held chunks.",
        &[(String::new(), store.held_bytes())],
    );
    if let Some(player) = players {
        out.push_str(&player.metrics.render());
    }
    out
}

/// The `/metrics` route for an axum router.
pub fn route(
    store: Arc<Store>,
    server: Server,
    players: Option<PlayerServer>,
    fill: Arc<FillMetrics>,
) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let body = render(&store, &server, players.as_ref(), &fill);
                async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        )
        .route("/health", axum::routing::get(|| async { "ok\n" }))
}
