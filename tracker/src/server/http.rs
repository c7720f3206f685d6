//! The HTTP API for players and operators: `/steer` (where a player goes), `/status` (what
//! `fillmesh status` prints), `/metrics` (the tracker's registry) and `/health`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use fillmesh_net::metrics::{encode_family, page};
use fillmesh_protocol::steering::{SteerAnswer, SteerEntry};
use fillmesh_protocol::TitleId;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use super::Shared;

pub(super) fn router(shared: Arc<Shared>) -> axum::Router {
    let metrics = Arc::new(registry(shared.clone()));
    axum::Router::new()
        .route("/steer", get(steer))
        .route("/status", get(status))
        .route("/metrics", get(move || std::future::ready(page(&metrics))))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(shared)
}

/// The tracker's one registry: the trust gate's refusals, and gauges and counters read from
/// the core's status at each scrape.
fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "fillmesh_tracker_refused",
        "Connections refused because the node is not trusted",
        shared.refused.clone(),
    );
    registry.register_collector(Box::new(CoreMetrics(shared)));
    registry
}

/// What the core's status says, at each scrape.
struct CoreMetrics(Arc<Shared>);

impl std::fmt::Debug for CoreMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoreMetrics")
    }
}

impl Collector for CoreMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.0.core().status(self.0.now());
        let healthy = status.appliances.iter().filter(|a| a.healthy).count() as u64;
        let unhealthy = status.appliances.len() as u64 - healthy;
        encode_family(
            &mut encoder,
            "fillmesh_tracker_nodes",
            "Registered nodes by health.",
            MetricType::Gauge,
            [([("state", "healthy")], healthy), ([("state", "unhealthy")], unhealthy)],
        )?;
        encode_family(
            &mut encoder,
            "fillmesh_title_complete_appliances",
            "Appliances holding every chunk of a title.",
            MetricType::Gauge,
            status.titles.iter().map(|t| ([("title", t.id.as_str())], u64::from(t.complete_appliances))),
        )?;
        encode_family(
            &mut encoder,
            "fillmesh_title_bytes",
            "Bytes delivered to appliances, by source class.",
            MetricType::Counter,
            status.titles.iter().flat_map(|t| {
                t.bytes_by_class
                    .iter()
                    .map(|(class, bytes)| ([("title", t.id.as_str()), ("class", class)], *bytes))
            }),
        )
    }
}

#[derive(Deserialize)]
struct SteerParams {
    title: String,
    client_ip: Option<String>,
}

async fn steer(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(params): Query<SteerParams>,
) -> Response {
    let title: TitleId = match params.title.parse() {
        Ok(t) => t,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("title: {e}\n")).into_response(),
    };
    let client = match params.client_ip.as_deref().map(str::parse::<IpAddr>) {
        None => remote.ip(),
        Some(Ok(ip)) => ip,
        Some(Err(_)) => return (StatusCode::BAD_REQUEST, "client_ip is not an IP address\n").into_response(),
    };
    let (targets, reason) = shared.steer(&title, client);
    shared.wake.notify_one();
    let targets = targets.into_iter().map(SteerEntry::from).collect();
    Json(SteerAnswer { title: title.to_string(), client_ip: client.to_string(), targets, reason })
        .into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let status = shared.core().status(shared.now());
    Json(status).into_response()
}
