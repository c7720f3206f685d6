//! The tracker's two HTTP listeners.
//!
//! The viewers' (`--http`): `/steer` (where a player goes), `/report` (a player's word that an
//! appliance sent a chunk that failed verification), `/trackers` (the viewer addresses of the
//! fleet's live trackers, which the watch page falls back to), `/health`, and the watch page
//! `/watch/<title id>` with what it loads: `/page.css`, and hls.js with its licence under
//! `/assets/`. Nothing on it names an appliance beyond what steering hands a player.
//!
//! The operators' (`--admin-http`, loopback by default): `/status` (every appliance's address,
//! load and holdings: what `fillmesh status` prints), `/metrics` (the tracker's registry),
//! `/health`, and the fleet page `/` (live, it polls `/status`) with `/page.css`. On the
//! viewers' listener these paths are 404 with a line saying where they are, and no data.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use fillmesh_net::metrics::{encode_family, page};
use fillmesh_protocol::steering::{PlayerReport, SteerAnswer, SteerEntry};
use fillmesh_protocol::token::{canonical, Refusal};
use fillmesh_protocol::{IpPrefix, TitleId};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use super::keys::unix_now;
use super::{Shared, TokenBind, BIND_V4, BIND_V6};
use crate::core::PlayerId;

/// The viewers' listener (`--http`).
pub(super) fn viewer_router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/steer", get(steer))
        .route("/report", post(report).layer(DefaultBodyLimit::max(PlayerReport::MAX_BYTES)))
        .route("/trackers", get(trackers))
        .route("/health", get(|| async { "ok\n" }))
        .route("/watch/{id}", get(watch))
        .route("/page.css", get(|| async { ([("content-type", "text/css; charset=utf-8")], PAGE_CSS) }))
        .route("/assets/hls.min.js", get(|| async { asset("text/javascript; charset=utf-8", HLS_JS) }))
        .route(
            "/assets/hls.js.LICENSE.txt",
            get(|| async { asset("text/plain; charset=utf-8", HLS_JS_LICENSE) }),
        )
        .fallback(not_here)
        .with_state(shared)
}

/// The operators' listener (`--admin-http`).
pub(super) fn admin_router(shared: Arc<Shared>) -> axum::Router {
    let metrics = Arc::new(registry(shared.clone()));
    axum::Router::new()
        .route("/status", get(status))
        .route("/metrics", get(move || std::future::ready(page(&metrics))))
        .route("/health", get(|| async { "ok\n" }))
        .route("/", get(|| async { page_html(FLEET_PAGE) }))
        .route("/page.css", get(|| async { ([("content-type", "text/css; charset=utf-8")], PAGE_CSS) }))
        .with_state(shared)
}

/// The paths only the operators' listener serves.
const OPERATOR_PATHS: [&str; 3] = ["/", "/status", "/metrics"];

/// Any other path on the viewers' listener: 404. An operator path is told where it is (an
/// operator's script written for the one listener of old finds out why), with no data.
async fn not_here(uri: axum::http::Uri) -> Response {
    let body = if OPERATOR_PATHS.contains(&uri.path().trim_end_matches('/').max("/")) {
        "not found: operator views (/status, /metrics, the fleet page) are on the tracker's --admin-http listener\n"
    } else {
        "not found\n"
    };
    (StatusCode::NOT_FOUND, [("cache-control", "no-store")], body).into_response()
}

/// `/`: the live view of the fleet (it polls `/status`). The pages are plain HTML with their
/// script inline, compiled into the binary: no build step and nothing fetched from elsewhere.
const FLEET_PAGE: &str = include_str!("pages/fleet.html");
/// `/watch/<title id>`: a `<video>` that asks `/steer` and moves down the list on error.
const WATCH_PAGE: &str = include_str!("pages/watch.html");
/// What both pages look like in common.
const PAGE_CSS: &str = include_str!("pages/page.css");
/// hls.js (1.7.4, Apache-2.0, `tracker/assets/hls.js/README.md` says where it comes from), which
/// the watch page loads to play a package where the browser has no HLS player of its own.
const HLS_JS: &[u8] = include_bytes!("../../assets/hls.js/hls.min.js");
/// hls.js's licence: its own notice, then the Apache License 2.0 it names, in full.
const HLS_JS_LICENSE: &str = concat!(
    include_str!("../../assets/hls.js/LICENSE"),
    "\n",
    include_str!("../../assets/hls.js/LICENSE-2.0.txt")
);

/// A file the pages load. It changes only with the tracker's binary, so browsers may keep it a
/// day (an upgraded tracker's hls.js is taken up within a day).
fn asset(content_type: &'static str, body: impl Into<axum::body::Body>) -> Response {
    let headers = [
        ("content-type", content_type),
        ("cache-control", "public, max-age=86400"),
        ("x-content-type-options", "nosniff"),
    ];
    (headers, body.into()).into_response()
}

fn page_html(page: &'static str) -> Response {
    ([("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store")], page).into_response()
}

async fn watch(axum::extract::Path(id): axum::extract::Path<String>) -> Response {
    match id.parse::<TitleId>() {
        Ok(_) => page_html(WATCH_PAGE),
        Err(e) => (StatusCode::NOT_FOUND, format!("title: {e}\n")).into_response(),
    }
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
    registry.register(
        "fillmesh_tracker_content_misses",
        "Players steered first to a partial holder, a far appliance or the origin: no near appliance held the whole title",
        shared.content_misses.clone(),
    );
    if shared.fleet.is_some() {
        registry.register(
            "fillmesh_tracker_etcd_up",
            "1 while the fleet's etcd answers (lease held, catalog watched); 0 while it is lost and the tracker coordinates on what it knows",
            shared.etcd_up.clone(),
        );
    }
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

/// Whether `given` is `expected`, in time that does not depend on where they differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// `url` with the token as the first segment of its path: `https://ADDR/titles/ID` becomes
/// `https://ADDR/p/TOKEN/titles/ID`, so every URL a playlist resolves against it carries it.
fn with_token(url: &str, token: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let path = url[authority..].find('/').map_or(url.len(), |i| authority + i);
    format!("{}/p/{token}{}", &url[..path], &url[path..])
}

async fn steer(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<SteerParams>,
) -> Response {
    if let Some(key) = &shared.steer_key {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_secret(g.as_bytes(), key.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Bearer")],
                "steering needs the operator's key: Authorization: Bearer KEY\n",
            )
                .into_response();
        }
    }
    let title: TitleId = match params.title.parse() {
        Ok(t) => t,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("title: {e}\n")).into_response(),
    };
    let given = match params.client_ip.as_deref().map(str::parse::<IpAddr>) {
        None => None,
        Some(Ok(ip)) => Some(ip),
        Some(Err(_)) => return (StatusCode::BAD_REQUEST, "client_ip is not an IP address\n").into_response(),
    };
    let client = given.unwrap_or(remote.ip());
    let (targets, reason) = shared.steer_any(&title, client).await;
    shared.wake.notify_one();
    let bound = match shared.bind {
        TokenBind::Off => None,
        TokenBind::Given => given,
        TokenBind::Seen => Some(client),
    };
    let prefix = bound
        .map(canonical)
        .and_then(|ip| IpPrefix::new(ip, if ip.is_ipv4() { BIND_V4 } else { BIND_V6 }).ok());
    let issued = if targets.is_empty() { None } else { shared.tokens.issue(title, prefix) };
    let targets = targets
        .into_iter()
        .map(|t| {
            let mut entry = SteerEntry::from(t);
            if let Some(issued) = &issued {
                entry.url = with_token(&entry.url, &issued.token);
            }
            entry
        })
        .collect();
    let (token, token_expires) = issued.map_or((None, None), |i| (Some(i.token), Some(i.expires)));
    // Any page may ask: the watch page of one tracker asks the others of its fleet when its
    // own cannot answer.
    (
        [("access-control-allow-origin", "*")],
        Json(SteerAnswer {
            title: title.to_string(),
            client_ip: client.to_string(),
            targets,
            reason,
            token,
            token_expires,
        }),
    )
        .into_response()
}

/// `POST /report` with a [`PlayerReport`]: counted toward the appliance's corrupt-chunk quorum
/// with the player known by its token (tokens on: a token is one reporter) or by the address
/// of this connection (an open fleet). 204 when counted; 400 (with the reason) for a
/// malformed report or one naming a chunk, an appliance or a title the tracker does not know,
/// 403 (with the token's refusal, one word) when tokens are on and the report's token is
/// missing or not good for its title, 413 past [`PlayerReport::MAX_BYTES`]; a refused report
/// changes nothing.
async fn report(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let refused = |why: String| (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response();
    let (report, (title, source, chunk)) = match Json::<PlayerReport>::from_bytes(&body) {
        Err(e) => return refused(e.body_text()),
        Ok(Json(report)) => match report.check() {
            Ok(fields) => (report, fields),
            Err(e) => return refused(e.to_string()),
        },
    };
    let player = if shared.tokens.required {
        let claims = match report.token.as_deref() {
            None => Err(Refusal::Missing),
            Some(token) => shared.tokens.key_set().verify(token, unix_now()),
        };
        match claims {
            Ok(claims) if claims.title == title => PlayerId::Token(claims.token_id),
            Ok(_) => return forbidden(Refusal::Title),
            Err(why) => return forbidden(why),
        }
    } else {
        PlayerId::Address(remote.ip())
    };
    let counted = shared.core().report_player_corrupt(shared.now(), player, title, chunk, &source);
    shared.wake.notify_one();
    match counted {
        Ok(()) => {
            tracing::info!(player = ?player, appliance = %source, %title, chunk, "a player reported a chunk that failed verification");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

/// A report refused for its token: 403 and the reason's word.
fn forbidden(why: Refusal) -> Response {
    (StatusCode::FORBIDDEN, format!("{}\n", why.as_str())).into_response()
}

/// `/trackers`: the viewer (`--http`) addresses of the fleet's live trackers, this one's
/// included; empty without a fleet. Any page may read it: the watch page asks the others when
/// its own tracker cannot steer.
async fn trackers(State(shared): State<Arc<Shared>>) -> Response {
    let live: Vec<String> = {
        let core = shared.core();
        core.live_trackers().iter().filter_map(|t| core.tracker_info(t)).map(|i| i.http.to_string()).collect()
    };
    ([("access-control-allow-origin", "*")], Json(serde_json::json!({ "trackers": live }))).into_response()
}

async fn status(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let status = shared.core().status(shared.now());
    // Only the fleet page of another tracker of the fleet (served from that tracker's admin
    // listener) may read it from a page: it merges the owners' figures. Any other page an
    // operator's browser opens must not, though the browser reaches this loopback listener.
    let origin = headers.get("origin").and_then(|o| o.to_str().ok()).filter(|origin| {
        let core = shared.core();
        core.live_trackers()
            .iter()
            .filter_map(|t| core.tracker_info(t)?.admin)
            .any(|admin| *origin == format!("http://{admin}"))
    });
    match origin {
        Some(origin) => {
            let allow = [("access-control-allow-origin", origin.to_owned()), ("vary", "origin".to_owned())];
            (allow, Json(status)).into_response()
        }
        None => ([("vary", "origin")], Json(status)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_first_in_the_path() {
        assert_eq!(
            with_token("https://127.0.0.11:4433/titles/x/", "T0k-_"),
            "https://127.0.0.11:4433/p/T0k-_/titles/x/"
        );
        assert_eq!(with_token("https://[::1]:4433/titles/x", "T"), "https://[::1]:4433/p/T/titles/x");
    }

    #[test]
    fn a_steering_key_matches_only_itself() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdeF", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!same_secret(b"", b"0123456789abcdef"));
    }
}
