//! Serving players over HTTP/3 (ALPN `h3`) on the mesh's UDP port.
//!
//! `GET`/`HEAD /titles/<id>` with single-range support, `GET /manifests/<id>` (the postcard
//! manifest, so a player can verify what it gets), `GET /metrics` (the node's whole registry,
//! as on its HTTP port). Only verified chunks leave the node: a range not yet held whole, or
//! whose first chunk the store finds damaged as it reads (and drops), is answered 503 with
//! `Retry-After`. Bytes go from disk to the stream one chunk at a time
//! through the node's upload bucket, never buffered whole.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fillmesh_protocol::TitleId;
use h3::server::RequestStream;
use http::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use quinn::Connection;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{debug, Instrument};

use super::range::{self, RangeRequest};
use super::ChunkSource;
use crate::rate::TokenBucket;
use crate::store::StoreError;

type Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

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
        }
    }
}

impl PlayerMetrics {
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
            "fillmesh_player_ttfb_seconds",
            "Time from request to first body byte",
            self.ttfb.clone(),
        );
    }
}

/// Limits of player serving.
#[derive(Debug, Clone)]
pub struct PlayerLimits {
    /// Requests served at once by the whole appliance.
    pub max_requests: usize,
    /// A connection with no request for this long is closed.
    pub idle: Duration,
}

impl Default for PlayerLimits {
    fn default() -> Self {
        Self { max_requests: 256, idle: Duration::from_secs(30) }
    }
}

/// The HTTP/3 side of an appliance.
#[derive(Clone)]
pub struct PlayerServer {
    source: Arc<dyn ChunkSource>,
    slots: Arc<Semaphore>,
    limits: PlayerLimits,
    upload: Option<Arc<TokenBucket>>,
    metrics: Arc<PlayerMetrics>,
    /// The node's registry, which `GET /metrics` shows whole.
    registry: Arc<Registry>,
}

impl std::fmt::Debug for PlayerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlayerServer").field("limits", &self.limits).finish()
    }
}

impl PlayerServer {
    /// A player server counting into `metrics`, which `registry` (the node's, shown at
    /// `GET /metrics`) holds.
    pub fn new(
        source: Arc<dyn ChunkSource>,
        limits: PlayerLimits,
        upload: Option<Arc<TokenBucket>>,
        metrics: Arc<PlayerMetrics>,
        registry: Arc<Registry>,
    ) -> Self {
        Self {
            source,
            slots: Arc::new(Semaphore::new(limits.max_requests)),
            limits,
            upload,
            metrics,
            registry,
        }
    }

    /// Serves one player connection until it closes or idles out.
    pub async fn connection(self, conn: Connection) {
        let remote = conn.remote_address();
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
                    server.request(request, stream).await;
                }
                .instrument(tracing::debug_span!("player", %remote)),
            );
        }
    }

    async fn request(&self, request: Request<()>, mut stream: Stream) {
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
        if !matches!(drained, Ok(true)) {
            let _ = self
                .simple(&mut stream, StatusCode::PAYLOAD_TOO_LARGE, "requests carry no body\n", &[])
                .await;
            return;
        }
        let Ok(_slot) = self.slots.try_acquire() else {
            self.metrics.health_misses.inc();
            let _ = self
                .simple(&mut stream, StatusCode::SERVICE_UNAVAILABLE, "busy\n", &[("retry-after", "1")])
                .await;
            return;
        };
        let path = request.uri().path().to_owned();
        let result = match (request.method(), path.split('/').collect::<Vec<_>>().as_slice()) {
            (m, ["", "titles", id]) if m == Method::GET || m == Method::HEAD => {
                self.title(&request, &mut stream, id, received).await
            }
            (&Method::GET, ["", "manifests", id]) => self.manifest(&mut stream, id).await,
            (&Method::GET, ["", "metrics"]) => {
                let (headers, body) = fillmesh_net::metrics::page(&self.registry);
                self.simple(&mut stream, StatusCode::OK, &body, &headers).await
            }
            (m, _) if m != Method::GET && m != Method::HEAD => {
                self.simple(
                    &mut stream,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "GET or HEAD\n",
                    &[("allow", "GET, HEAD")],
                )
                .await
            }
            _ => self.simple(&mut stream, StatusCode::NOT_FOUND, "not found\n", &[]).await,
        };
        if let Err(e) = result {
            debug!(%path, "response aborted: {e}");
        }
    }

    async fn simple(
        &self,
        stream: &mut Stream,
        status: StatusCode,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), h3::error::StreamError> {
        self.metrics.count(status);
        let mut response = Response::builder().status(status).header("content-length", body.len());
        for (k, v) in headers {
            response = response.header(*k, *v);
        }
        stream.send_response(response.body(()).unwrap_or_default()).await?;
        if !body.is_empty() {
            stream.send_data(Bytes::copy_from_slice(body.as_bytes())).await?;
        }
        stream.finish().await
    }

    async fn manifest(&self, stream: &mut Stream, id: &str) -> Result<(), h3::error::StreamError> {
        let Some(manifest) = id.parse::<TitleId>().ok().and_then(|t| self.source.manifest(&t)) else {
            return self.simple(stream, StatusCode::NOT_FOUND, "unknown title\n", &[]).await;
        };
        let body = postcard::to_allocvec(&*manifest).unwrap_or_default();
        self.metrics.count(StatusCode::OK);
        let response = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/x-fillmesh-manifest")
            .header("content-length", body.len())
            .body(())
            .unwrap_or_default();
        stream.send_response(response).await?;
        stream.send_data(Bytes::from(body)).await?;
        stream.finish().await
    }

    async fn title(
        &self,
        request: &Request<()>,
        stream: &mut Stream,
        id: &str,
        received: Instant,
    ) -> Result<(), h3::error::StreamError> {
        let Some((title, manifest)) =
            id.parse::<TitleId>().ok().and_then(|t| self.source.manifest(&t).map(|m| (t, m)))
        else {
            self.metrics.content_misses.inc();
            return self.simple(stream, StatusCode::NOT_FOUND, "unknown title\n", &[]).await;
        };
        let len = manifest.len();
        let etag = format!("\"{title}\"");
        let content_type = self
            .source
            .name(&title)
            .and_then(|n| mime_guess::from_path(n).first_raw())
            .unwrap_or("application/octet-stream");
        let header = request.headers().get("range").and_then(|v| v.to_str().ok());
        let (status, start, end) = match range::parse(header, len) {
            RangeRequest::Full if len == 0 => (StatusCode::OK, 0, 0),
            RangeRequest::Full => (StatusCode::OK, 0, len - 1),
            RangeRequest::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
            RangeRequest::Unsatisfiable => {
                let range = format!("bytes */{len}");
                return self
                    .simple(
                        stream,
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "",
                        &[("content-range", &range), ("etag", &etag)],
                    )
                    .await;
            }
        };
        let body_len = if len == 0 { 0 } else { end - start + 1 };
        let cs = manifest.chunk_size().bytes();
        let chunks = if body_len == 0 { 0..0 } else { (start / cs) as u32..(end / cs) as u32 + 1 };
        let not_held = |server: &Self| {
            server.metrics.content_misses.inc();
            [("retry-after", "1"), ("etag", etag.as_str())]
        };
        if !self.source.holds(&title, chunks.clone()) {
            let headers = not_held(self);
            return self
                .simple(stream, StatusCode::SERVICE_UNAVAILABLE, "not held here yet\n", &headers)
                .await;
        }
        // The first chunk is read, and verified, before the status is sent: a chunk found
        // damaged is dropped by the read and the range answered as not held.
        let mut first_chunk = None;
        if request.method() == Method::GET && !chunks.is_empty() {
            match self.read(title, chunks.start).await {
                Some(bytes) => first_chunk = Some(bytes),
                None => {
                    let headers = not_held(self);
                    return self
                        .simple(stream, StatusCode::SERVICE_UNAVAILABLE, "not held here\n", &headers)
                        .await;
                }
            }
        }
        self.metrics.count(status);
        let mut response = Response::builder()
            .status(status)
            .header("content-length", body_len)
            .header("content-type", content_type)
            .header("etag", &etag)
            .header("accept-ranges", "bytes")
            .header("cache-control", "public, max-age=31536000, immutable");
        if status == StatusCode::PARTIAL_CONTENT {
            response = response.header("content-range", format!("bytes {start}-{end}/{len}"));
        }
        stream.send_response(response.body(()).unwrap_or_default()).await?;
        if request.method() == Method::HEAD {
            return stream.finish().await;
        }
        let mut first = true;
        let mut ahead = None;
        for index in chunks.clone() {
            let read = match (first_chunk.take(), ahead.take()) {
                (Some(bytes), _) => Some(bytes),
                (None, Some(reading)) => Self::finish_read(title, index, reading).await,
                (None, None) => self.read(title, index).await,
            };
            // A later chunk found damaged (and dropped) by its read: the player sees a
            // truncated body and fails over; never a wrong byte.
            let Some(bytes) = read else {
                stream.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return Ok(());
            };
            // The next chunk is read and verified while this one is sent: otherwise the
            // stream waits for each read and its hash (about 0.25 ms per MiB of BLAKE3 here,
            // far more for a read that reaches the disk) before it can send on.
            if index + 1 < chunks.end {
                ahead = Some(self.start_read(title, index + 1));
            }
            let offset = u64::from(index) * cs;
            let from = start.saturating_sub(offset) as usize;
            let to = ((end + 1 - offset) as usize).min(bytes.len());
            let piece = bytes.slice(from..to);
            if let Some(bucket) = &self.upload {
                bucket.take(piece.len() as u64).await;
            }
            let n = piece.len() as u64;
            stream.send_data(piece).await?;
            self.metrics.bytes.inc_by(n);
            if first {
                first = false;
                self.metrics.ttfb.observe(received.elapsed().as_secs_f64());
            }
        }
        stream.finish().await
    }

    /// A held chunk's bytes, verified; `None` if it cannot be read or failed verification
    /// (then dropped by the store, which says so).
    async fn read(&self, title: TitleId, index: u32) -> Option<Bytes> {
        Self::finish_read(title, index, self.start_read(title, index)).await
    }

    /// Starts reading (and verifying) a held chunk on the blocking pool.
    fn start_read(&self, title: TitleId, index: u32) -> JoinHandle<Result<Bytes, StoreError>> {
        let source = self.source.clone();
        tokio::task::spawn_blocking(move || source.read_chunk(&title, index))
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
                debug!(%title, index, "chunk not served: {e}");
                None
            }
            Err(e) => {
                debug!(%title, index, "chunk read task failed: {e}");
                None
            }
        }
    }
}
