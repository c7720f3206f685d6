//! Serving the mesh protocol: manifests, verified chunks and held-chunk bitmaps, to trusted
//! peers only, within limits on streams, time and upload rate.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use fillmesh_protocol::messages::{
    ChunkHeader, ErrorCode, ErrorReply, Hello, MeshRequest, MeshResponse, Role, PROTOCOL_VERSION,
};
use fillmesh_protocol::{ChunkBitmap, Manifest, TitleId};
use libp2p_identity::PeerId;
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn, Instrument};

use crate::player::{PlayerLimits, PlayerServer};
use crate::rate::TokenBucket;
use crate::store::{Store, StoreError};
use crate::transport::{alpn, close, remote_peer, MeshEndpoint, H3_ALPN};
use crate::wire::{read_frame, write_bytes, write_frame, WireError};

/// What a node serves from. The store is the real one; tests put doubles here (a peer that
/// lies), which is why serving goes through a trait rather than a runtime switch.
pub trait ChunkSource: Send + Sync + 'static {
    fn manifest(&self, title: &TitleId) -> Option<Arc<Manifest>>;
    fn held(&self, title: &TitleId) -> Option<ChunkBitmap>;
    /// The bytes of a held chunk, verified.
    fn read_chunk(&self, title: &TitleId, index: u32) -> Result<Bytes, StoreError>;
    /// The title's name, where known (for a player's `Content-Type`).
    fn name(&self, _title: &TitleId) -> Option<String> {
        None
    }
}

impl ChunkSource for Store {
    fn manifest(&self, title: &TitleId) -> Option<Arc<Manifest>> {
        Store::manifest(self, title)
    }
    fn held(&self, title: &TitleId) -> Option<ChunkBitmap> {
        Store::held(self, title)
    }
    fn read_chunk(&self, title: &TitleId, index: u32) -> Result<Bytes, StoreError> {
        Store::read_chunk(self, title, index)
    }
    fn name(&self, title: &TitleId) -> Option<String> {
        self.info(title).map(|i| i.name).filter(|n| !n.is_empty())
    }
}

/// The peers a node serves. Shared and mutable, so that the tracker can vouch for members
/// later without a restart.
#[derive(Debug, Clone, Default)]
pub struct Trust(Arc<RwLock<HashSet<PeerId>>>);

impl Trust {
    pub fn new(peers: impl IntoIterator<Item = PeerId>) -> Self {
        Self(Arc::new(RwLock::new(peers.into_iter().collect())))
    }
    pub fn allows(&self, peer: &PeerId) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).contains(peer)
    }
    pub fn add(&self, peer: PeerId) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).insert(peer);
    }
}

/// Serving limits.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Requests served at once by the whole node (over all peers).
    pub max_requests: usize,
    /// How long a peer may take to send a request, and to take a response.
    pub io_timeout: Duration,
    /// How long a request may wait for a free slot before it is answered `Busy`.
    pub queue_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self { max_requests: 64, io_timeout: Duration::from_secs(10), queue_timeout: Duration::from_secs(5) }
    }
}

/// Counters of what this node served.
#[derive(Debug, Default)]
pub struct ServeStats {
    pub chunks: AtomicU64,
    pub bytes: AtomicU64,
    pub refused_untrusted: AtomicU64,
    pub bad_requests: AtomicU64,
}

/// A mesh server.
#[derive(Clone)]
pub struct Server {
    source: Arc<dyn ChunkSource>,
    trust: Trust,
    limits: ServeLimits,
    slots: Arc<Semaphore>,
    upload: Option<Arc<TokenBucket>>,
    role: Role,
    /// Serves connections that negotiated `h3`, if players are served here.
    player: Option<PlayerServer>,
    pub stats: Arc<ServeStats>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("limits", &self.limits).field("role", &self.role).finish()
    }
}

impl Server {
    pub fn new(
        source: Arc<dyn ChunkSource>,
        trust: Trust,
        limits: ServeLimits,
        upload_rate: Option<u64>,
        role: Role,
    ) -> Self {
        Self {
            source,
            trust,
            slots: Arc::new(Semaphore::new(limits.max_requests)),
            limits,
            upload: upload_rate.map(|r| Arc::new(TokenBucket::new(r))),
            role,
            player: None,
            stats: Arc::default(),
        }
    }

    /// Serves players over HTTP/3 on the same endpoint, sharing this server's upload bucket.
    pub fn with_players(mut self, source: Arc<dyn ChunkSource>, limits: PlayerLimits) -> Self {
        self.player = Some(PlayerServer::new(source, limits, self.upload.clone()));
        self
    }

    pub fn player(&self) -> Option<&PlayerServer> {
        self.player.as_ref()
    }

    /// Requests being served right now.
    pub fn in_flight(&self) -> u32 {
        (self.limits.max_requests - self.slots.available_permits()) as u32
    }

    /// The peers this server trusts (shared: adding to it takes effect at once).
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Accepts connections until the endpoint is closed.
    pub async fn run(self, endpoint: MeshEndpoint) {
        while let Some(incoming) = endpoint.inner().accept().await {
            let server = self.clone();
            let remote = incoming.remote_address();
            tokio::spawn(
                async move {
                    match incoming.await {
                        Ok(conn) if alpn(&conn).as_deref() == Some(H3_ALPN) => match server.player {
                            Some(player) => player.connection(conn).await,
                            None => conn.close(close::PROTOCOL, b"no players here"),
                        },
                        Ok(conn) => server.connection(conn).await,
                        Err(e) => debug!("handshake failed: {e}"),
                    }
                }
                .instrument(tracing::info_span!("conn", %remote)),
            );
        }
    }

    async fn connection(self, conn: Connection) {
        let Some(peer) = remote_peer(&conn) else {
            conn.close(close::PROTOCOL, b"no libp2p certificate");
            return;
        };
        if !self.trust.allows(&peer) {
            self.stats.refused_untrusted.fetch_add(1, Relaxed);
            warn!(%peer, "refusing untrusted peer");
            conn.close(close::UNTRUSTED, b"peer not trusted");
            return;
        }
        debug!(%peer, "peer connected");
        loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(streams) => streams,
                Err(e) => {
                    debug!(%peer, "connection ended: {e}");
                    return;
                }
            };
            let server = self.clone();
            tokio::spawn(
                async move { server.stream(send, recv).await }
                    .instrument(tracing::debug_span!("request", %peer)),
            );
        }
    }

    async fn stream(&self, mut send: SendStream, mut recv: RecvStream) {
        let io = self.limits.io_timeout;
        let request = match read_frame::<MeshRequest>(&mut recv, io).await {
            Ok(r) => r,
            Err(WireError::Frame(e)) => {
                self.stats.bad_requests.fetch_add(1, Relaxed);
                debug!("bad request: {e}");
                let _ = self.reply_error(&mut send, ErrorCode::BadRequest, e.to_string()).await;
                return;
            }
            Err(e) => {
                debug!("request not read: {e}");
                let _ = send.reset(close::PROTOCOL);
                return;
            }
        };
        let Ok(_slot) = tokio::time::timeout(self.limits.queue_timeout, self.slots.acquire()).await else {
            let _ = self.reply_error(&mut send, ErrorCode::Busy, "too many requests in flight".into()).await;
            return;
        };
        if let Err(e) = self.answer(&mut send, request).await {
            debug!("response not sent: {e}");
            let _ = send.reset(close::PROTOCOL);
        }
    }

    async fn answer(&self, send: &mut SendStream, request: MeshRequest) -> Result<(), WireError> {
        let io = self.limits.io_timeout;
        let response = match request {
            MeshRequest::Hello(hello) if hello.version != PROTOCOL_VERSION => {
                MeshResponse::Error(ErrorReply {
                    code: ErrorCode::VersionMismatch,
                    message: format!("this node speaks version {PROTOCOL_VERSION}, not {}", hello.version),
                })
            }
            MeshRequest::Hello(_) => MeshResponse::Hello(Hello {
                version: PROTOCOL_VERSION,
                role: self.role,
                agent: concat!("fillmesh/", env!("CARGO_PKG_VERSION")).into(),
            }),
            MeshRequest::Manifest { title } => match self.source.manifest(&title) {
                Some(m) => MeshResponse::Manifest { title, manifest: (*m).clone() },
                None => unknown(title),
            },
            MeshRequest::Held { title } => match self.source.held(&title) {
                Some(held) => MeshResponse::Held { title, held },
                None => unknown(title),
            },
            MeshRequest::Chunk { title, index } => return self.send_chunk(send, title, index).await,
        };
        write_frame(send, &response, io).await?;
        send.finish()?;
        Ok(())
    }

    async fn send_chunk(&self, send: &mut SendStream, title: TitleId, index: u32) -> Result<(), WireError> {
        let io = self.limits.io_timeout;
        let source = self.source.clone();
        let read = tokio::task::spawn_blocking(move || source.read_chunk(&title, index)).await;
        let bytes = match read {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(StoreError::UnknownTitle(_))) => return self.reply(send, unknown(title)).await,
            Ok(Err(e @ (StoreError::NotHeld { .. } | StoreError::CorruptOnDisk { .. }))) => {
                return self.reply(send, error(ErrorCode::NotHeld, e.to_string())).await;
            }
            Ok(Err(e)) => {
                warn!(%title, index, "cannot read chunk: {e}");
                return self.reply(send, error(ErrorCode::Internal, "cannot read chunk".into())).await;
            }
            Err(e) => {
                warn!(%title, index, "chunk read task failed: {e}");
                return self.reply(send, error(ErrorCode::Internal, "cannot read chunk".into())).await;
            }
        };
        if let Some(bucket) = &self.upload {
            bucket.take(bytes.len() as u64).await;
        }
        let header = MeshResponse::Chunk(ChunkHeader { title, index, len: bytes.len() as u32 });
        write_frame(send, &header, io).await?;
        // The body gets time in proportion to its size, at no less than 1 MB/s. Handing quinn
        // the `Bytes` itself spares a copy of every chunk.
        let len = bytes.len() as u64;
        write_bytes(send, bytes, io + Duration::from_micros(len)).await?;
        send.finish()?;
        self.stats.chunks.fetch_add(1, Relaxed);
        self.stats.bytes.fetch_add(len, Relaxed);
        debug!(%title, index, "served chunk");
        Ok(())
    }

    async fn reply(&self, send: &mut SendStream, response: MeshResponse) -> Result<(), WireError> {
        write_frame(send, &response, self.limits.io_timeout).await?;
        send.finish()?;
        Ok(())
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

fn error(code: ErrorCode, mut message: String) -> MeshResponse {
    let mut end = message.len().min(fillmesh_protocol::messages::MAX_TEXT);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    MeshResponse::Error(ErrorReply { code, message })
}

fn unknown(title: TitleId) -> MeshResponse {
    error(ErrorCode::UnknownTitle, format!("unknown title {title}"))
}
