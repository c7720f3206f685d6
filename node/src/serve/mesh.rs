//! Serving the mesh protocol (ALPN `fillmesh/1`): manifests, verified chunks and held-chunk
//! bitmaps, to trusted peers only (the trust gate wraps [`Server::connection`]), within
//! limits on streams, time and upload rate.

use std::sync::Arc;
use std::time::Duration;

use fillmesh_protocol::messages::{
    accepts_version, ChunkHeader, ErrorCode, ErrorReply, Hello, MeshRequest, MeshResponse, Role,
    PROTOCOL_VERSION,
};
use fillmesh_protocol::TitleId;
use libp2p_identity::PeerId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn, Instrument};

use fillmesh_net::frame::{read_frame, write_bytes, write_frame, WireError};
use fillmesh_net::{close, rpc, trust, Chain, MeshEndpoint, Router, Trust};
use fillmesh_protocol::ALPN;

use super::reads::Reads;
use super::ChunkSource;
use crate::classes::{RateCaps, Rates};
use crate::store::StoreError;

/// Serving limits.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Requests served at once by the whole node (over all peers).
    pub max_requests: usize,
    /// How long a peer may take to send a request, and to take a response.
    pub io_timeout: Duration,
    /// How long a request may wait for a free slot before it is answered `Busy`.
    pub queue_timeout: Duration,
    /// Subscriptions (children) served at once; more are answered `Busy`.
    pub max_subscriptions: usize,
    /// An idle subscription gets an empty HAVE this often, so the child can tell a quiet
    /// parent from a dead one.
    pub keepalive: Duration,
    /// Chunk reads (a read and its verification) run at once for peers and players together,
    /// first come first served ([`Reads`]); the daemon shares one bound between its servers.
    pub chunk_reads: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_requests: 64,
            io_timeout: Duration::from_secs(10),
            queue_timeout: Duration::from_secs(5),
            max_subscriptions: 256,
            keepalive: Duration::from_secs(5),
            chunk_reads: Reads::default_at_once(),
        }
    }
}

/// Counters of what this node served.
#[derive(Debug, Default)]
pub struct ServeStats {
    /// Chunks sent whole to peers.
    pub chunks: Counter,
    /// The bytes of those chunks.
    pub bytes: Counter,
    /// Shared with the trust gate, which counts the connections it refuses.
    pub refused_untrusted: Counter,
    /// Requests that did not decode as a mesh request (answered `BadRequest`).
    pub bad_requests: Counter,
}

impl ServeStats {
    /// Registers these counters in the node's registry.
    pub fn register(&self, registry: &mut Registry) {
        for (name, help, counter) in [
            ("fillmesh_mesh_served_chunks", "Chunks served to peers", &self.chunks),
            ("fillmesh_mesh_served_bytes", "Chunk bytes served to peers", &self.bytes),
            (
                "fillmesh_mesh_refused",
                "Mesh connections refused because the peer is not trusted",
                &self.refused_untrusted,
            ),
            ("fillmesh_mesh_bad_requests", "Malformed mesh requests", &self.bad_requests),
        ] {
            registry.register(name, help, counter.clone());
        }
    }
}

/// A mesh server.
#[derive(Clone)]
pub struct Server {
    source: Arc<dyn ChunkSource>,
    trust: Trust,
    limits: ServeLimits,
    slots: Arc<Semaphore>,
    subscriptions: Arc<Semaphore>,
    /// The node's rate buckets: chunks to peers are fill upload (behind the players).
    rates: Arc<Rates>,
    role: Role,
    /// What this server sent and refused; shared with every clone, registered in the node's
    /// registry by the daemon.
    pub stats: Arc<ServeStats>,
    /// Chunk reads at once (the node's: its player server shares them).
    reads: Reads,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("limits", &self.limits).field("role", &self.role).finish()
    }
}

impl Server {
    /// A server of `source` to the peers in `trust`, within `limits`, sending chunks at most
    /// `upload_rate` bytes per second over all peers and the players that share its bucket
    /// (uncapped when `None`), and answering hellos as `role`.
    pub fn new(
        source: Arc<dyn ChunkSource>,
        trust: Trust,
        limits: ServeLimits,
        upload_rate: Option<u64>,
        role: Role,
    ) -> Self {
        let reads = Reads::new(limits.chunk_reads);
        Self {
            source,
            trust,
            slots: Arc::new(Semaphore::new(limits.max_requests)),
            subscriptions: Arc::new(Semaphore::new(limits.max_subscriptions)),
            limits,
            rates: Arc::new(Rates::new(&RateCaps { upload: upload_rate, ..RateCaps::default() })),
            role,
            stats: Arc::default(),
            reads,
        }
    }

    /// The bound on its chunk reads (`limits.chunk_reads`), for the node's player server to
    /// share.
    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// The same server sending by `rates` (the daemon's rate classes) instead of its own
    /// total cap.
    pub fn with_rates(mut self, rates: Arc<Rates>) -> Self {
        self.rates = rates;
        self
    }

    /// The rate buckets, for the player server to share.
    pub fn rates(&self) -> Arc<Rates> {
        self.rates.clone()
    }

    /// Requests being served right now.
    pub fn in_flight(&self) -> u32 {
        (self.limits.max_requests - self.slots.available_permits()) as u32
    }

    /// The peers this server trusts (shared: adding to it takes effect at once).
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// A router with this server on the mesh ALPN, behind the trust gate.
    pub fn router(&self) -> Router {
        let server = self.clone();
        Router::new().route(
            ALPN,
            trust::gate(
                self.trust.clone(),
                self.stats.refused_untrusted.clone(),
                "peer",
                move |conn, peer| server.clone().connection(conn, peer),
            ),
        )
    }

    /// Serves the mesh alone on `endpoint` until it is closed (players are refused).
    pub async fn run(self, endpoint: MeshEndpoint) {
        self.router().run(endpoint).await
    }

    /// Serves one trusted peer's connection, each request as its own task.
    pub async fn connection(self, conn: Connection, peer: PeerId) {
        debug!(%peer, "peer connected");
        rpc::serve(&conn, |send, recv| {
            let server = self.clone();
            async move { server.stream(send, recv).await }
        })
        .await;
        debug!(%peer, "peer gone");
    }

    async fn stream(&self, mut send: SendStream, mut recv: RecvStream) {
        let io = self.limits.io_timeout;
        let request = match read_frame::<MeshRequest>(&mut recv, io).await {
            Ok(r) => r,
            Err(WireError::Frame(e)) => {
                self.stats.bad_requests.inc();
                let e = Chain(&e).to_string();
                debug!("bad request: {e}");
                let _ = self.reply_error(&mut send, ErrorCode::BadRequest, e).await;
                return;
            }
            Err(e) => {
                debug!("request not read: {}", Chain(&e));
                let _ = send.reset(close::PROTOCOL);
                return;
            }
        };
        // A subscription lasts as long as the child wants it: it holds no request slot.
        if let MeshRequest::Subscribe { title } = request {
            if let Err(e) = self.subscription(&mut send, &mut recv, title).await {
                debug!(%title, "subscription ended: {}", Chain(&e));
                let _ = send.reset(close::PROTOCOL);
            }
            return;
        }
        let Ok(_slot) = tokio::time::timeout(self.limits.queue_timeout, self.slots.acquire()).await else {
            let _ = self.reply_error(&mut send, ErrorCode::Busy, "too many requests in flight".into()).await;
            return;
        };
        if let Err(e) = self.answer(&mut send, request).await {
            debug!("response not sent: {}", Chain(&e));
            let _ = send.reset(close::PROTOCOL);
        }
    }

    async fn answer(&self, send: &mut SendStream, request: MeshRequest) -> Result<(), WireError> {
        let io = self.limits.io_timeout;
        let response = match request {
            MeshRequest::Hello(hello) if !accepts_version(hello.version) => error(
                ErrorCode::VersionMismatch,
                format!("this node speaks version {PROTOCOL_VERSION}, not {}", hello.version),
            ),
            MeshRequest::Hello(_) => MeshResponse::Hello(Hello::ours(self.role)),
            MeshRequest::Manifest { title } => match self.source.manifest(&title) {
                Some(m) => MeshResponse::Manifest { title, manifest: (*m).clone() },
                None => unknown(title),
            },
            MeshRequest::Held { title } => match self.source.held(&title) {
                Some(held) => MeshResponse::Held { title, held },
                None => unknown(title),
            },
            MeshRequest::Chunk { title, index } => return self.send_chunk(send, title, index).await,
            // Answered in `stream`, without a request slot.
            MeshRequest::Subscribe { title } => unknown(title),
        };
        rpc::reply(send, &response, io).await
    }

    /// Serves a subscription to `title`: the held bitmap, then HAVEs as chunks are gained
    /// (coalesced: whatever arrived while the last one was sent goes in the next), an empty
    /// HAVE after [`ServeLimits::keepalive`] without one, the whole bitmap again should this
    /// subscriber fall behind the store's feed; until the child ends the stream, a write
    /// times out, or the title goes. Beyond [`ServeLimits::max_subscriptions`]: `Busy`.
    async fn subscription(
        &self,
        send: &mut SendStream,
        recv: &mut RecvStream,
        title: TitleId,
    ) -> Result<(), WireError> {
        let io = self.limits.io_timeout;
        let Ok(_sub) = self.subscriptions.clone().try_acquire_owned() else {
            return self.reply_error(send, ErrorCode::Busy, "too many subscriptions".into()).await;
        };
        // Subscribed before the bitmap is read: a chunk gained in between is in both, never
        // in neither.
        let mut gained = self.source.watch_gained();
        let Some(held) = self.source.held(&title) else { return self.reply(send, unknown(title)).await };
        let chunks = held.len();
        write_frame(send, &MeshResponse::Held { title, held }, io).await?;
        let span = tracing::debug_span!("subscriber", %title);
        async move {
            debug!("subscribed");
            let mut closed = [0u8; 1];
            // The keepalive is due this long after the last message sent, whatever else the
            // store gains meanwhile (chunks of other titles do not count: a child filling a
            // title whose parent is busy filling another must still hear from it).
            let mut last_sent = tokio::time::Instant::now();
            // Bounded by the child's interest: each pass sends one message or ends.
            loop {
                let next = async {
                    match gained.as_mut() {
                        Some(rx) => Some(rx.recv().await),
                        None => std::future::pending().await,
                    }
                };
                let mut have = tokio::select! {
                    // The child ends the subscription by finishing or resetting its side (it
                    // sends nothing else on it).
                    _ = recv.read(&mut closed) => return Ok(()),
                    () = tokio::time::sleep_until(last_sent + self.limits.keepalive) => Vec::new(),
                    got = next => match got {
                        Some(Ok((t, c))) if t == title && c < chunks => vec![c],
                        Some(Ok(_)) => continue,
                        Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                            let Some(held) = self.source.held(&title) else { return Ok(()) };
                            write_frame(send, &MeshResponse::Held { title, held }, io).await?;
                            last_sent = tokio::time::Instant::now();
                            continue;
                        }
                        Some(Err(tokio::sync::broadcast::error::RecvError::Closed)) | None => return Ok(()),
                    },
                };
                if let Some(rx) = gained.as_mut() {
                    while have.len() < fillmesh_protocol::messages::MAX_HAVES {
                        match rx.try_recv() {
                            Ok((t, c)) if t == title && c < chunks => have.push(c),
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                }
                if self.source.manifest(&title).is_none() {
                    // Evicted here: the child hears the stream end and looks elsewhere.
                    return Ok(());
                }
                write_frame(send, &MeshResponse::Have { title, chunks: have }, io).await?;
                last_sent = tokio::time::Instant::now();
            }
        }
        .instrument(span)
        .await
    }

    async fn send_chunk(&self, send: &mut SendStream, title: TitleId, index: u32) -> Result<(), WireError> {
        let io = self.limits.io_timeout;
        let source = self.source.clone();
        let read = self.reads.spawn(move || source.read_chunk(&title, index)).await;
        let bytes = match read {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(StoreError::UnknownTitle(_))) => return self.reply(send, unknown(title)).await,
            Ok(Err(e @ (StoreError::NotHeld { .. } | StoreError::CorruptOnDisk { .. }))) => {
                return self.reply(send, error(ErrorCode::NotHeld, e.to_string())).await;
            }
            Ok(Err(e)) => {
                warn!(%title, index, "cannot read chunk: {}", Chain(&e));
                return self.reply(send, error(ErrorCode::Internal, "cannot read chunk".into())).await;
            }
            Err(e) => {
                warn!(%title, index, "chunk read task failed: {e}");
                return self.reply(send, error(ErrorCode::Internal, "cannot read chunk".into())).await;
            }
        };
        self.rates.fill_upload(bytes.len() as u64).await;
        let header = MeshResponse::Chunk(ChunkHeader { title, index, len: bytes.len() as u32 });
        write_frame(send, &header, io).await?;
        // The body gets time in proportion to its size, at no less than 1 MB/s. Handing quinn
        // the `Bytes` itself spares a copy of every chunk.
        let len = bytes.len() as u64;
        write_bytes(send, bytes, io + Duration::from_micros(len)).await?;
        send.finish()?;
        self.stats.chunks.inc();
        self.stats.bytes.inc_by(len);
        debug!(%title, index, "served chunk");
        Ok(())
    }

    async fn reply(&self, send: &mut SendStream, response: MeshResponse) -> Result<(), WireError> {
        rpc::reply(send, &response, self.limits.io_timeout).await
    }

    async fn reply_error(
        &self,
        send: &mut SendStream,
        code: ErrorCode,
        message: String,
    ) -> Result<(), WireError> {
        self.reply(send, error(code, message)).await
    }
}

fn error(code: ErrorCode, message: String) -> MeshResponse {
    MeshResponse::Error(ErrorReply::new(code, message))
}

fn unknown(title: TitleId) -> MeshResponse {
    error(ErrorCode::UnknownTitle, format!("unknown title {title}"))
}
