//! Serving players over HTTP/3 (ALPN `h3`) on the mesh's UDP port.
//!
//! `GET`/`HEAD /titles/<id>` with single-range support, `GET /manifests/<id>` (the postcard
//! manifest, so a player can verify what it gets), and nothing else: this is the viewers'
//! surface, so the node's operator views (`/metrics`, `/health`, the origin's ingest) are only
//! on its `--http` listener, and any other path here is 404. Only verified chunks leave the
//! node: a range not yet held whole, or whose first chunk the store finds damaged as it reads
//! (and drops), is answered 503 with `Retry-After`. Bytes go from disk to the stream one chunk at a time
//! through the node's rate buckets (players' class, first in the total), never buffered whole.
//!
//! A package is served by path, so that the relative URLs of its playlists resolve inside it:
//! - `GET`/`HEAD /titles/<package id>/<path>`: the file at `path` (percent-escapes decoded
//!   once), as a one-file title's bytes are served (ranges, 503 until held, verified on
//!   read), with the file's own id as `ETag` and a `Content-Type` by its extension
//!   ([`fillmesh_protocol::package::content_type`]). Its bytes are read from the title's data
//!   file, where file k starts at chunk `file_chunks(k).start`: the path is only ever looked
//!   up in the manifest, never opened. A path no package may hold (`..`, `.`, empty
//!   components, a backslash, a control character, absolute) or not in the listing: 404; an
//!   escape that does not decode (a bad `%XX`, not UTF-8): 400.
//! - `GET`/`HEAD /titles/<package id>/` and `/titles/<package id>` (no slash: the same answer,
//!   not a redirect, so a client that follows none still gets it): the listing, what `b3sum`
//!   prints for the files, `text/plain; charset=utf-8`, `ETag` the package id (the
//!   listing's BLAKE3).
//! - `/titles/<one-file title id>/<anything>`: 404.
//!
//! With playback tokens (a node under trackers that require them, see [`super::gate`]), every
//! request for a title's bytes, listing or manifest carries the token steering signed as the
//! first segment of its path, `/p/<token>/titles/...` and `/p/<token>/manifests/<id>`, and is
//! answered 403 with one word (and no content) unless the token is good for that title.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fillmesh_net::Chain;
use fillmesh_protocol::{package, Manifest, TitleId};
use futures_util::StreamExt;
use h3::server::RequestStream;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use quinn::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, Instrument};

use super::gate::Gate;
use super::path;
use super::range::{self, RangeRequest};
use super::reads::Reads;
use super::ChunkSource;
use crate::classes::Rates;
use crate::store::StoreError;

type Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// What an answer's body is made of; [`PlayerServer::pieces`] turns it into bytes.
#[derive(Debug)]
pub(crate) enum Body {
    Empty,
    Full(Bytes),
    Title(TitleBody),
}

/// Bytes `start..=end` of a title's data file (chunk i at i * chunk size), in `chunks`, all
/// held when the answer was made; the first already read and verified. Holds its request
/// slot until the body ends.
#[derive(Debug)]
pub(crate) struct TitleBody {
    title: TitleId,
    chunks: std::ops::Range<u32>,
    start: u64,
    end: u64,
    chunk_size: u64,
    first: Option<Bytes>,
    /// Where the file served ends in the data file (a one-file title's length).
    len: u64,
    /// The read of the next chunk, started while the last part of this one is sent.
    ahead: Option<JoinHandle<Result<Bytes, StoreError>>>,
    /// What is left to send of the chunk being sent.
    rest: Option<Bytes>,
    received: Instant,
    _slot: OwnedSemaphorePermit,
}

impl TitleBody {
    fn in_part(&self, index: u32) -> bool {
        in_part(index, self.start, self.end, self.chunk_size, self.len)
    }
}

/// What one HTTP/3 player connection may have sent and not acknowledged, or queued: 1 MiB
/// carries 160 Mbit/s at a 50 ms round trip, above the bitrates of any ladder.
const PLAYER_SEND_WINDOW: u64 = 1 << 20;

/// The most bytes of a chunk handed to the transport at once.
const SLICE: usize = 256 << 10;
/// The next chunk is read once no more than this is left to send of the current one.
const READ_AHEAD_AT: usize = 512 << 10;

/// Whether bytes `start..=end` of a file ending at byte `len` of its data file, in chunks of
/// `cs`, cover only part of chunk `index` (the other parts are then likely asked for soon).
fn in_part(index: u32, start: u64, end: u64, cs: u64, len: u64) -> bool {
    let first = u64::from(index) * cs;
    let last = (first + cs).min(len).saturating_sub(1);
    start > first || end < last
}

/// What a request for a title's bytes names: a one-file title, or a file of a package.
#[derive(Debug)]
struct Target {
    title: TitleId,
    etag: String,
    content_type: &'static str,
    /// Where the file's first byte sits in the title's data file.
    base: u64,
    /// The file's length.
    len: u64,
}

/// A body cut short: a chunk after the first was found damaged on disk (and dropped).
#[derive(Debug, thiserror::Error)]
#[error("a chunk failed verification on read; the body is cut short")]
pub(crate) struct Truncated;

/// The span of one player request, naming its method and path (at most 4 KiB of it: a
/// path inside a package is bounded far below that, see [`path::MAX_RAW_PATH`]).
pub(crate) fn request_span(method: &Method, path: &str) -> tracing::Span {
    let mut end = path.len().min(4096);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    tracing::debug_span!("request", %method, path = &path[..end])
}

/// What players got, registered in the node's registry.
#[derive(Debug)]
pub struct PlayerMetrics {
    /// Title bytes sent.
    pub bytes: Counter,
    /// Requests answered, by status.
    requests: Family<StatusLabel, Counter>,
    /// Time from request to first body byte, in seconds.
    pub ttfb: Histogram,
    /// Requests for content this appliance does not hold (unknown title, range not held).
    pub content_misses: Counter,
    /// Requests for content it holds but could not serve (overloaded).
    pub health_misses: Counter,
    misses: Family<[(&'static str, &'static str); 1], Counter>,
    /// Requests inside a package (`/titles/<package id>/...`), by what they were.
    package: Family<[(&'static str, &'static str); 1], Counter>,
    /// Player connections open now (HTTP/3 and HTTPS on TCP): what heartbeats report.
    pub sessions: Gauge,
    /// Players' TCP connections refused at the node's limits (QUIC's are counted by the
    /// endpoint, for peers and players alike).
    pub tcp_refused: Counter,
}

/// One open player connection, counted in [`PlayerMetrics::sessions`] while it lives.
#[derive(Debug)]
pub(crate) struct SessionGuard(Gauge);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

/// Bounds of the time-to-first-byte buckets, in seconds.
const TTFB_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

impl Default for PlayerMetrics {
    fn default() -> Self {
        let misses = Family::<[(&'static str, &'static str); 1], Counter>::default();
        Self {
            bytes: Counter::default(),
            requests: Family::default(),
            ttfb: Histogram::new(TTFB_BUCKETS),
            // Both kinds exist from the start, so that a scrape shows a 0 rather than nothing.
            content_misses: misses.get_or_create_owned(&[("kind", "content")]),
            health_misses: misses.get_or_create_owned(&[("kind", "health")]),
            misses,
            package: Family::default(),
            sessions: Gauge::default(),
            tcp_refused: Counter::default(),
        }
    }
}

/// What a request inside a package was, for [`PlayerMetrics`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum PackageRequest {
    /// A file of the package.
    File,
    /// The listing.
    Listing,
    /// A path not in the listing (or any path under a one-file title).
    NotFound,
    /// A path no package may hold (`..`, a backslash, absolute, ...) or that does not decode.
    Refused,
}

impl PlayerMetrics {
    /// Counts a player connection as open until the guard is dropped.
    pub(crate) fn session(&self) -> SessionGuard {
        self.sessions.inc();
        SessionGuard(self.sessions.clone())
    }

    pub(crate) fn package_request(&self, kind: PackageRequest) {
        let kind = match kind {
            PackageRequest::File => "file",
            PackageRequest::Listing => "listing",
            PackageRequest::NotFound => "not_found",
            PackageRequest::Refused => "refused",
        };
        self.package.get_or_create(&[("kind", kind)]).inc();
    }

    pub(crate) fn count(&self, status: StatusCode) {
        self.requests.get_or_create(&StatusLabel { status: status.as_u16() }).inc();
    }

    /// Registers these metrics in the node's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("fillmesh_player_bytes", "Title bytes sent to players", self.bytes.clone());
        registry.register("fillmesh_player_requests", "Player requests by status", self.requests.clone());
        registry.register(
            "fillmesh_cache_misses",
            "Player requests not served: content (not held) or health (held, overloaded)",
            self.misses.clone(),
        );
        registry.register(
            "fillmesh_player_package_requests",
            "Player requests inside a package: file, listing, not_found (not in the listing), \
             refused (a path no package may hold)",
            self.package.clone(),
        );
        registry.register(
            "fillmesh_player_sessions",
            "Player connections open now (HTTP/3 and HTTPS)",
            self.sessions.clone(),
        );
        registry.register(
            "fillmesh_player_tcp_connections_refused",
            "Players' TCP connections refused at once at the node's limits (--max-connections, \
             --max-handshakes)",
            self.tcp_refused.clone(),
        );
        registry.register(
            "fillmesh_player_ttfb_seconds",
            "Time from request to first body byte",
            self.ttfb.clone(),
        );
    }
}

/// Limits of player serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerLimits {
    /// Requests served at once by the whole appliance; one more is answered 503 at once (its
    /// player asks its next appliance). Each holds at most two chunks in memory while its
    /// body is sent (the one sent and the one read ahead): 2 MiB at 1 MiB chunks.
    pub max_requests: usize,
    /// A connection with no request for this long is closed.
    pub idle: Duration,
}

impl Default for PlayerLimits {
    fn default() -> Self {
        // Why: a paced player (4 Mbit/s) holds a request for the seconds its range takes to
        // drain through flow control, so players at once are about requests at once; 256 sent
        // 503s to most of 1,000 players. As many as the connections a node holds by default.
        Self { max_requests: fillmesh_net::endpoint::DEFAULT_MAX_CONNECTIONS, idle: Duration::from_secs(30) }
    }
}

/// A node's drain, seen by its player servers: once started, new connections and requests
/// are turned away (503, so a player asks its next appliance) while the responses in flight
/// finish, and the node waits for them ([`Drain::idle`]) up to its bound.
#[derive(Debug, Default)]
pub struct Drain {
    draining: std::sync::atomic::AtomicBool,
    in_flight: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

impl Drain {
    /// Turns new players away from now on.
    pub fn start(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the node is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Responses being sent now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Returns once no response is in flight.
    pub async fn idle(&self) {
        // Bounded by the responses in flight, each of which ends (the caller bounds the wait).
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Counts a response in flight until the guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(self.clone())
    }
}

/// One response in flight (see [`Drain`]).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Drain>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The HTTP/3 side of an appliance.
#[derive(Clone)]
pub struct PlayerServer {
    source: Arc<dyn ChunkSource>,
    slots: Arc<Semaphore>,
    limits: PlayerLimits,
    /// The node's rate buckets: bytes to players are the serve class (first in the total).
    rates: Arc<Rates>,
    metrics: Arc<PlayerMetrics>,
    /// `Alt-Svc` on every answer: HTTP/3 on this port.
    alt_svc: Option<HeaderValue>,
    /// Which requests for titles are served (playback tokens).
    gate: Arc<Gate>,
    /// The node's drain: new requests turned away, those in flight counted.
    drain: Arc<Drain>,
    /// Chunk reads at once (the node's, shared with its mesh server).
    reads: Reads,
}

impl std::fmt::Debug for PlayerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlayerServer").field("limits", &self.limits).finish()
    }
}

impl PlayerServer {
    /// A player server counting into `metrics` (which the node's registry holds, shown on its
    /// operator listener, never to players), sending within `rates`' serve and total caps.
    pub fn new(
        source: Arc<dyn ChunkSource>,
        limits: PlayerLimits,
        rates: Arc<Rates>,
        metrics: Arc<PlayerMetrics>,
    ) -> Self {
        Self {
            source,
            slots: Arc::new(Semaphore::new(limits.max_requests)),
            limits,
            rates,
            metrics,
            alt_svc: None,
            gate: Arc::new(Gate::open()),
            drain: Arc::new(Drain::default()),
            reads: Reads::default(),
        }
    }

    /// Reads chunks within `reads` (the node's bound, shared with its mesh server).
    pub fn with_reads(mut self, reads: Reads) -> Self {
        self.reads = reads;
        self
    }

    /// Follows `drain`: turns players away once it starts, and counts responses in flight
    /// in it.
    pub fn with_drain(mut self, drain: Arc<Drain>) -> Self {
        self.drain = drain;
        self
    }

    /// Counts one response in flight in the node's drain until the guard is dropped.
    pub(crate) fn in_flight(&self) -> InFlight {
        self.drain.enter()
    }

    /// Serves titles only to the requests `gate` admits (by default, to anyone).
    pub fn with_gate(mut self, gate: Arc<Gate>) -> Self {
        self.gate = gate;
        self
    }

    pub(crate) fn metrics(&self) -> &PlayerMetrics {
        &self.metrics
    }

    /// Advertises HTTP/3 on `port` (the node's UDP port) in every answer's `Alt-Svc`, so a
    /// client that came over TCP moves to QUIC.
    pub fn advertise_h3(mut self, port: u16) -> Self {
        self.alt_svc = HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")).ok();
        self
    }

    /// Serves one player connection until it closes or idles out.
    pub async fn connection(self, conn: Connection) {
        let remote = conn.remote_address();
        let _session = self.metrics.session();
        // What quinn holds for the player beyond what it has acknowledged (copies of what was
        // sent and is yet to be): bounded per player, where the endpoint's window suits
        // appliances filling one another at line rate. Why: 1,000 paced players on one
        // appliance held 2.9 GB resident with 16 MiB, each range queued whole.
        conn.set_send_window(PLAYER_SEND_WINDOW);
        let mut h3 = match h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await {
            Ok(c) => c,
            Err(e) => {
                debug!(%remote, "h3 setup failed: {e}");
                return;
            }
        };
        loop {
            let accepted = tokio::time::timeout(self.limits.idle, h3.accept()).await;
            let resolver = match accepted {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    debug!(%remote, "h3 connection ended: {e}");
                    return;
                }
                Err(_) => {
                    debug!(%remote, "idle player connection closed");
                    return;
                }
            };
            let server = self.clone();
            tokio::spawn(
                async move {
                    let (request, stream) = match resolver.resolve_request().await {
                        Ok(r) => r,
                        Err(e) => {
                            debug!("bad h3 request: {e}");
                            return;
                        }
                    };
                    let span = request_span(request.method(), request.uri().path());
                    server.request(request, stream, remote.ip()).instrument(span).await;
                }
                .instrument(tracing::debug_span!("player", %remote)),
            );
        }
    }

    async fn request(&self, request: Request<()>, mut stream: Stream, client: IpAddr) {
        let _in_flight = self.in_flight();
        let received = Instant::now();
        // Read the (empty) request body to its end first: a request stream dropped before its
        // FIN was read makes quinn send STOP_SENDING(0), which the client sees as a reset of
        // a response it may still be reading. Bounded in bytes and time.
        let drained = tokio::time::timeout(Duration::from_secs(2), async {
            let mut body = 0usize;
            while let Ok(Some(piece)) = stream.recv_data().await {
                body += bytes::Buf::remaining(&piece);
                if body > 64 << 10 {
                    return false;
                }
            }
            true
        })
        .await;
        let (head, body) = if matches!(drained, Ok(true)) {
            self.answer(request.method(), request.uri().path(), request.headers(), client, received).await
        } else {
            self.simple(StatusCode::PAYLOAD_TOO_LARGE, "requests carry no body\n", &[])
        };
        if let Err(e) = self.send_h3(&mut stream, head, body).await {
            debug!(path = %request.uri().path(), "response aborted: {e}");
        }
    }

    /// Sends an answer on an HTTP/3 stream; a body cut short by a chunk found damaged stops
    /// the stream (the player sees a truncated body, never a wrong byte).
    async fn send_h3(
        &self,
        stream: &mut Stream,
        head: Response<()>,
        body: Body,
    ) -> Result<(), h3::error::StreamError> {
        stream.send_response(head).await?;
        let mut pieces = std::pin::pin!(self.clone().pieces(body, tracing::Span::current()));
        while let Some(piece) = pieces.next().await {
            match piece {
                Ok(bytes) => stream.send_data(bytes).await?,
                Err(Truncated) => {
                    stream.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                    return Ok(());
                }
            }
        }
        stream.finish().await
    }

    /// The answer to one request, whatever carried it (HTTP/3 or HTTPS on TCP): the response
    /// head, with `Alt-Svc` and CORS headers, and what its body is made of. The answer to a
    /// `HEAD` has no body, whatever its status: over HTTP/2 a body after the head of a `HEAD`
    /// answer broke the stream (curl: error 92, no status).
    pub(crate) async fn answer(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        client: IpAddr,
        received: Instant,
    ) -> (Response<()>, Body) {
        let (head, body) = self.route(method, path, headers, client, received).await;
        (head, if method == Method::HEAD { Body::Empty } else { body })
    }

    async fn route(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        client: IpAddr,
        received: Instant,
    ) -> (Response<()>, Body) {
        // `/p/<token>/...`: the token steering signed, then the path as without one.
        let (token, path) = match path.strip_prefix("/p/") {
            Some(rest) => {
                let end = rest.find('/').unwrap_or(rest.len());
                (Some(&rest[..end]), &rest[end..])
            }
            None => (None, path),
        };
        if self.drain.is_draining() {
            // The node is going away: the player asks its next appliance (a 503 is "not
            // here", never an error to it) and comes back after the restart.
            return self.simple(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining\n",
                &[("retry-after", "5"), ("cache-control", "no-store")],
            );
        }
        if method == Method::OPTIONS {
            // A CORS preflight: a web player on another origin may send `Range`.
            return self.simple(
                StatusCode::NO_CONTENT,
                "",
                &[
                    ("access-control-allow-methods", "GET, HEAD, OPTIONS"),
                    ("access-control-allow-headers", "range"),
                    ("access-control-max-age", "86400"),
                ],
            );
        }
        // A title's bytes, its listing or its manifest: only for a token good for the title
        // (when tokens are required), checked before anything else is looked at.
        let title_id = path
            .strip_prefix("/titles/")
            .or_else(|| path.strip_prefix("/manifests/"))
            .map(|rest| &rest[..rest.find('/').unwrap_or(rest.len())]);
        if let Some(Ok(title)) = title_id.map(str::parse::<TitleId>) {
            if let Err(why) = self.gate.check(token, &title, client) {
                let word = why.as_str();
                debug!(%title, reason = word, "refused: playback token");
                return self.simple(
                    StatusCode::FORBIDDEN,
                    &format!("{word}\n"),
                    &[("x-fillmesh-refused", word), ("cache-control", "no-store")],
                );
            }
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.metrics.health_misses.inc();
            return self.simple(StatusCode::SERVICE_UNAVAILABLE, "busy\n", &[("retry-after", "1")]);
        };
        if let Some(rest) = path.strip_prefix("/titles/") {
            if method == Method::GET || method == Method::HEAD {
                let (id, file) = match rest.split_once('/') {
                    Some((id, file)) => (id, Some(file)),
                    None => (rest, None),
                };
                return self.title(method, headers, id, file, received, slot).await;
            }
        }
        match (method, path.split('/').collect::<Vec<_>>().as_slice()) {
            (&Method::GET, ["", "manifests", id]) => self.manifest(id),
            (m, _) if m != Method::GET && m != Method::HEAD => self.simple(
                StatusCode::METHOD_NOT_ALLOWED,
                "GET or HEAD\n",
                &[("allow", "GET, HEAD, OPTIONS")],
            ),
            _ => self.simple(StatusCode::NOT_FOUND, "not found\n", &[]),
        }
    }

    /// A response head with the headers every answer carries: `Alt-Svc` (HTTP/3 on the same
    /// port) and CORS (any origin may read, `Range` and friends exposed).
    fn head(&self, status: StatusCode) -> http::response::Builder {
        self.metrics.count(status);
        let mut head = Response::builder().status(status).header("access-control-allow-origin", "*").header(
            "access-control-expose-headers",
            "content-range, content-length, etag, accept-ranges, x-fillmesh-refused",
        );
        if let Some(alt_svc) = &self.alt_svc {
            head = head.header("alt-svc", alt_svc);
        }
        head
    }

    /// 416 for a range past the end of `len` bytes.
    fn unsatisfiable(&self, len: u64, etag: &str) -> (Response<()>, Body) {
        let range = format!("bytes */{len}");
        self.simple(StatusCode::RANGE_NOT_SATISFIABLE, "", &[("content-range", &range), ("etag", etag)])
    }

    fn simple(&self, status: StatusCode, body: &str, headers: &[(&str, &str)]) -> (Response<()>, Body) {
        let mut response = self.head(status).header("content-length", body.len());
        for (k, v) in headers {
            response = response.header(*k, *v);
        }
        let body =
            if body.is_empty() { Body::Empty } else { Body::Full(Bytes::copy_from_slice(body.as_bytes())) };
        (response.body(()).unwrap_or_default(), body)
    }

    fn manifest(&self, id: &str) -> (Response<()>, Body) {
        let Some(manifest) = id.parse::<TitleId>().ok().and_then(|t| self.source.manifest(&t)) else {
            return self.simple(StatusCode::NOT_FOUND, "unknown title\n", &[]);
        };
        let body = postcard::to_allocvec(&*manifest).unwrap_or_default();
        let response = self
            .head(StatusCode::OK)
            .header("content-type", "application/x-fillmesh-manifest")
            .header("content-length", body.len())
            .body(())
            .unwrap_or_default();
        (response, Body::Full(Bytes::from(body)))
    }

    /// `GET`/`HEAD /titles/<id>` (`file` is `None`) or `/titles/<id>/<file>`: a one-file
    /// title's bytes, a package's listing, or a file of a package by its path.
    async fn title(
        &self,
        method: &Method,
        headers: &HeaderMap,
        id: &str,
        file: Option<&str>,
        received: Instant,
        slot: OwnedSemaphorePermit,
    ) -> (Response<()>, Body) {
        let Some((title, manifest)) =
            id.parse::<TitleId>().ok().and_then(|t| self.source.manifest(&t).map(|m| (t, m)))
        else {
            self.metrics.content_misses.inc();
            return self.simple(StatusCode::NOT_FOUND, "unknown title\n", &[]);
        };
        let target = match (manifest.is_package(), file) {
            (false, None) => Target {
                title,
                etag: format!("\"{title}\""),
                content_type: self
                    .source
                    .name(&title)
                    .and_then(|n| mime_guess::from_path(n).first_raw())
                    .unwrap_or("application/octet-stream"),
                base: 0,
                len: manifest.len(),
            },
            (false, Some(_)) => {
                self.metrics.package_request(PackageRequest::NotFound);
                return self.simple(StatusCode::NOT_FOUND, "a one-file title has no paths\n", &[]);
            }
            // The listing, with or without the slash: its BLAKE3 is the package id, so the id
            // is its ETag as a one-file title's is.
            (true, None | Some("")) => {
                self.metrics.package_request(PackageRequest::Listing);
                let listing = manifest.listing().unwrap_or_default();
                return self.full(method, headers, Bytes::from(listing), "text/plain; charset=utf-8", &title);
            }
            (true, Some(raw)) => match self.package_file(&manifest, title, raw) {
                Ok(target) => target,
                Err(refusal) => return refusal,
            },
        };
        self.range(method, headers, target, &manifest, received, slot).await
    }

    /// The file of a package that a request's path (still escaped) names, or the answer that
    /// refuses it: 404 for a path no package may hold (`..`, a backslash, an absolute path,
    /// ... after decoding) or one not in the listing, 400 for a path that does not decode.
    #[allow(clippy::result_large_err)] // the refusal is the answer itself, made once per request
    fn package_file(
        &self,
        manifest: &Manifest,
        title: TitleId,
        raw: &str,
    ) -> Result<Target, (Response<()>, Body)> {
        let decoded = match path::decode(raw) {
            Ok(decoded) => decoded,
            Err(e @ path::DecodeError::TooLong(_)) => {
                self.metrics.package_request(PackageRequest::Refused);
                return Err(self.simple(StatusCode::NOT_FOUND, &format!("not found: {e}\n"), &[]));
            }
            Err(e) => {
                self.metrics.package_request(PackageRequest::Refused);
                return Err(self.simple(StatusCode::BAD_REQUEST, &format!("bad path: {e}\n"), &[]));
            }
        };
        if let Err(e) = package::check_path(&decoded) {
            self.metrics.package_request(PackageRequest::Refused);
            debug!(%title, "refused a path inside a package: {e}");
            return Err(self.simple(StatusCode::NOT_FOUND, &format!("not found: {e}\n"), &[]));
        }
        let Some((k, file)) = manifest.file(&decoded) else {
            self.metrics.package_request(PackageRequest::NotFound);
            return Err(self.simple(StatusCode::NOT_FOUND, "no such file in the package\n", &[]));
        };
        self.metrics.package_request(PackageRequest::File);
        Ok(Target {
            title,
            etag: format!("\"{}\"", file.id),
            content_type: package::content_type(&file.path),
            base: manifest.chunk_offset(manifest.file_chunks(k).start),
            len: file.len,
        })
    }

    /// An in-memory representation (a package's listing), with ranges as a title's bytes.
    fn full(
        &self,
        method: &Method,
        headers: &HeaderMap,
        bytes: Bytes,
        content_type: &str,
        title: &TitleId,
    ) -> (Response<()>, Body) {
        let len = bytes.len() as u64;
        let etag = format!("\"{title}\"");
        let header = headers.get("range").and_then(|v| v.to_str().ok());
        let (status, start, end) = match range::parse(header, len) {
            RangeRequest::Full => (StatusCode::OK, 0, len),
            RangeRequest::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
            RangeRequest::Unsatisfiable => return self.unsatisfiable(len, &etag),
        };
        let mut response = self
            .head(status)
            .header("content-length", end - start)
            .header("content-type", content_type)
            .header("etag", &etag)
            .header("accept-ranges", "bytes")
            .header("cache-control", "public, max-age=31536000, immutable");
        if status == StatusCode::PARTIAL_CONTENT {
            response = response.header("content-range", format!("bytes {start}-{}/{len}", end - 1));
        }
        let body = if method == Method::HEAD || start == end {
            Body::Empty
        } else {
            Body::Full(bytes.slice(start as usize..end as usize))
        };
        (response.body(()).unwrap_or_default(), body)
    }

    /// A byte range of a one-file title or of a file in a package, from the title's chunks:
    /// 503 if not held whole here, the first chunk read and verified before the head.
    async fn range(
        &self,
        method: &Method,
        headers: &HeaderMap,
        target: Target,
        manifest: &Manifest,
        received: Instant,
        slot: OwnedSemaphorePermit,
    ) -> (Response<()>, Body) {
        let Target { title, etag, content_type, base, len } = target;
        let header = headers.get("range").and_then(|v| v.to_str().ok());
        let (status, start, end) = match range::parse(header, len) {
            RangeRequest::Full if len == 0 => (StatusCode::OK, 0, 0),
            RangeRequest::Full => (StatusCode::OK, 0, len - 1),
            RangeRequest::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
            RangeRequest::Unsatisfiable => return self.unsatisfiable(len, &etag),
        };
        let body_len = if len == 0 { 0 } else { end - start + 1 };
        let cs = manifest.chunk_size().bytes();
        // Where the range lies in the title's data file (chunk i at i * chunk size): a
        // package's file k starts at its first chunk, so at `base`.
        let (data_start, data_end, data_len) = (base + start, base + end, base + len);
        let chunks = if body_len == 0 { 0..0 } else { (data_start / cs) as u32..(data_end / cs) as u32 + 1 };
        if !self.source.holds(&title, chunks.clone()) {
            self.metrics.content_misses.inc();
            return self.simple(
                StatusCode::SERVICE_UNAVAILABLE,
                "not held here yet\n",
                &[("retry-after", "1"), ("etag", etag.as_str())],
            );
        }
        // The first chunk is read, and verified, before the status is sent: a chunk found
        // damaged is dropped by the read and the range answered as not held.
        let mut first = None;
        if method == Method::GET && !chunks.is_empty() {
            let part = in_part(chunks.start, data_start, data_end, cs, data_len);
            match self.read(title, chunks.start, part).await {
                Some(bytes) => first = Some(bytes),
                None => {
                    self.metrics.content_misses.inc();
                    return self.simple(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not held here\n",
                        &[("retry-after", "1"), ("etag", etag.as_str())],
                    );
                }
            }
        }
        let mut response = self
            .head(status)
            .header("content-length", body_len)
            .header("content-type", content_type)
            .header("etag", &etag)
            .header("accept-ranges", "bytes")
            .header("cache-control", "public, max-age=31536000, immutable");
        if status == StatusCode::PARTIAL_CONTENT {
            response = response.header("content-range", format!("bytes {start}-{end}/{len}"));
        }
        let body = if method == Method::HEAD || chunks.is_empty() {
            Body::Empty
        } else {
            Body::Title(TitleBody {
                title,
                chunks,
                start: data_start,
                end: data_end,
                chunk_size: cs,
                first,
                len: data_len,
                ahead: None,
                rest: None,
                received,
                _slot: slot,
            })
        };
        (response.body(()).unwrap_or_default(), body)
    }

    /// The bytes of a body, piece by piece: a title's chunks are read (and verified) one at a
    /// time through the rate buckets. The first chunk found damaged (and dropped by its read)
    /// ends the body with [`Truncated`]. Each piece is made inside `span` (the request's).
    pub(crate) fn pieces(
        self,
        body: Body,
        span: tracing::Span,
    ) -> impl futures_util::Stream<Item = Result<Bytes, Truncated>> + Send {
        futures_util::stream::unfold((self, Some(body)), move |(server, body)| {
            Self::piece(server, body).instrument(span.clone())
        })
    }

    /// The next piece of [`Self::pieces`], with what is left of the body.
    async fn piece(
        server: Self,
        body: Option<Body>,
    ) -> Option<(Result<Bytes, Truncated>, (Self, Option<Body>))> {
        match body? {
            Body::Empty => None,
            Body::Full(bytes) => Some((Ok(bytes), (server, None))),
            Body::Title(mut t) => {
                let piece = match t.rest.take() {
                    Some(rest) => rest,
                    None => {
                        let index = t.chunks.next()?;
                        let read = match (t.first.take(), t.ahead.take()) {
                            (Some(bytes), _) => Some(bytes),
                            (None, Some(reading)) => Self::finish_read(t.title, index, reading).await,
                            (None, None) => server.read(t.title, index, t.in_part(index)).await,
                        };
                        let Some(bytes) = read else {
                            return Some((Err(Truncated), (server, None)));
                        };
                        let offset = u64::from(index) * t.chunk_size;
                        let from = t.start.saturating_sub(offset) as usize;
                        let to = ((t.end + 1 - offset) as usize).min(bytes.len());
                        if offset <= t.start {
                            server.metrics.ttfb.observe(t.received.elapsed().as_secs_f64());
                        }
                        bytes.slice(from.min(to)..to)
                    }
                };
                // A chunk goes out in slices, and the next chunk is read and verified while
                // the last of them are sent: otherwise the stream waits for each read and its
                // hash (about 0.25 ms per MiB of BLAKE3 here, far more for a read that reaches
                // the disk) before it can send on. Not sooner: a paced player drains a chunk
                // in seconds, and a chunk read ahead at once doubled what each request held
                // (1,000 players at 4 Mbit/s: 2 GB resident with 1 MiB chunks).
                let (now, rest) = if piece.len() > SLICE {
                    (piece.slice(..SLICE), Some(piece.slice(SLICE..)))
                } else {
                    (piece, None)
                };
                let left = rest.as_ref().map_or(0, Bytes::len);
                if left <= READ_AHEAD_AT && t.ahead.is_none() && !t.chunks.is_empty() {
                    t.ahead = Some(server.start_read(t.title, t.chunks.start, t.in_part(t.chunks.start)));
                }
                t.rest = rest;
                server.rates.player(now.len() as u64).await;
                server.metrics.bytes.inc_by(now.len() as u64);
                Some((Ok(now), (server, Some(Body::Title(t)))))
            }
        }
    }

    /// A held chunk's bytes, verified; `None` if it cannot be read or failed verification
    /// (then dropped by the store, which says so). `part`: only part of it is served.
    async fn read(&self, title: TitleId, index: u32, part: bool) -> Option<Bytes> {
        Self::finish_read(title, index, self.start_read(title, index, part)).await
    }

    /// Starts reading (and verifying) a held chunk on the blocking pool.
    fn start_read(&self, title: TitleId, index: u32, part: bool) -> JoinHandle<Result<Bytes, StoreError>> {
        let source = self.source.clone();
        // In the request's span, so that what the store logs (damage found) names the request.
        let span = tracing::Span::current();
        self.reads.spawn(move || {
            span.in_scope(|| {
                if part {
                    source.read_chunk_part(&title, index)
                } else {
                    source.read_chunk(&title, index)
                }
            })
        })
    }

    /// The bytes of a read started by [`Self::start_read`], as [`Self::read`] gives them.
    async fn finish_read(
        title: TitleId,
        index: u32,
        reading: JoinHandle<Result<Bytes, StoreError>>,
    ) -> Option<Bytes> {
        match reading.await {
            Ok(Ok(bytes)) => Some(bytes),
            Ok(Err(e)) => {
                debug!(%title, index, "chunk not served: {}", Chain(&e));
                None
            }
            Err(e) => {
                debug!(%title, index, "chunk read task failed: {e}");
                None
            }
        }
    }
}
