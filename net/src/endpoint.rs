//! One quinn endpoint per node: it accepts connections (mesh and players, told apart by ALPN
//! by the router above it) and dials other nodes, with the same transport limits both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fillmesh_protocol::ALPN;
use libp2p_identity::PeerId;
use prometheus_client::metrics::counter::Counter;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, TokioRuntime, TransportConfig, VarInt};

use crate::socket::{self, SocketReport};
use crate::tls::{peer_id_of_chain, TlsError, TlsIdentity, SERVER_NAME};

/// HTTP/3, for players, on the same port as the mesh.
pub const H3_ALPN: &[u8] = b"h3";

/// The ALPN a connection negotiated.
pub fn alpn(conn: &Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}

/// Application close codes on mesh connections.
pub mod close {
    use quinn::VarInt;
    /// The peer is not in the trust list.
    pub const UNTRUSTED: VarInt = VarInt::from_u32(0x10);
    /// The node is shutting down.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(0x11);
    /// The peer broke the protocol (a malformed or oversized frame).
    pub const PROTOCOL: VarInt = VarInt::from_u32(0x12);
}

/// Ack-eliciting packets a peer receives per ACK it sends, where it supports the ACK-frequency
/// extension (see [`TransportLimits::transport_config`]).
const ACK_EVERY: u32 = 10;

/// The largest UDP payload MTU discovery probes for. Ten of them (quinn's largest GSO batch)
/// must fit one 64 KiB UDP send, or the kernel refuses the batch (EMSGSIZE, which quinn-udp
/// drops silently as it expects it of probes alone).
pub const MTU_UPPER_BOUND: u16 = 6500;

/// Transport limits shared by both directions.
#[derive(Debug, Clone)]
pub struct TransportLimits {
    /// Bidirectional streams one peer may have open at once (one request each).
    pub max_streams_per_connection: u32,
    /// A connection with no traffic for this long is closed (QUIC's max idle timeout: the
    /// shorter of the two sides' applies); each side sends a keepalive every third of it, so
    /// an open connection that is merely quiet stays up.
    pub idle_timeout: Duration,
    /// Flow-control window of one stream: large enough for a whole 1 MiB chunk plus framing,
    /// so one request never stalls on window updates over a fast link.
    pub stream_window: u32,
    /// Receive and send buffer of the endpoint's UDP socket, in bytes (as far as the kernel
    /// allows: [`crate::socket`]).
    pub udp_buffer: usize,
    /// Connections (players and peers, handshakes included) an accepting endpoint holds at
    /// once; one more is refused at once (QUIC `CONNECTION_REFUSED`), so that its client goes
    /// elsewhere instead of waiting for a handshake that would time out.
    pub max_connections: usize,
    /// Handshakes an accepting endpoint runs at once; more are refused likewise (each costs a
    /// signature and a certificate: a flood of them must not starve the connections served).
    pub max_handshakes: usize,
    /// New connections an accepting endpoint takes a second (a second's worth at once); more
    /// are refused likewise ([`crate::rate::Arrivals`]). 0: no limit.
    pub connection_rate: u32,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            max_streams_per_connection: 16,
            idle_timeout: Duration::from_secs(30),
            stream_window: 4 << 20,
            udp_buffer: DEFAULT_UDP_BUFFER,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            connection_rate: 0,
        }
    }
}

/// The UDP socket buffers asked for by default. Why: 1,000 players at once overflowed the
/// kernel's default 208 KiB (hundreds of thousands of drops a run); the kernel's default cap
/// here is 4 MiB, which a node asks past (and says so) when it may.
pub const DEFAULT_UDP_BUFFER: usize = 16 << 20;
/// Connections at once by default (see [`TransportLimits::max_connections`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Handshakes at once by default (see [`TransportLimits::max_handshakes`]).
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;

impl TransportLimits {
    fn transport_config(&self) -> Arc<TransportConfig> {
        let mut t = TransportConfig::default();
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_streams_per_connection));
        // HTTP/3 needs unidirectional streams (control and QPACK); the mesh never accepts any.
        t.max_concurrent_uni_streams(VarInt::from_u32(8));
        t.stream_receive_window(VarInt::from_u32(self.stream_window));
        t.receive_window(VarInt::from_u32(self.stream_window.saturating_mul(4)));
        t.send_window(u64::from(self.stream_window) * 4);
        t.max_idle_timeout(Some(
            self.idle_timeout.try_into().unwrap_or(quinn::IdleTimeout::from(VarInt::MAX)),
        ));
        t.keep_alive_interval(Some(self.idle_timeout / 3));
        // Fewer ACKs from peers that support the ACK-frequency extension (every quinn peer:
        // our players and fetchers; ignored by one that does not): one per ACK_EVERY
        // ack-eliciting packets rather than one per two, within the peer's max_ack_delay.
        // A sender spends much of its cost per byte on ACKs received: before this, an
        // appliance serving HTTP/3 spent 9% of its CPU in handling ACKs (perf, `cost`
        // bench), two thirds of them per packet sent.
        let mut acks = quinn::AckFrequencyConfig::default();
        acks.ack_eliciting_threshold(VarInt::from_u32(ACK_EVERY - 1));
        t.ack_frequency_config(Some(acks));
        // MTU discovery probes up to MTU_UPPER_BOUND rather than quinn's 1452, so that a path
        // that carries larger datagrams (jumbo frames, loopback) gets them, with fewer packets
        // (each with its own encryption, header and ACK bookkeeping) per byte; on a 1500-byte
        // path the probes above it are lost (or refused by the kernel at once) and it stays at
        // 1452. Only where the peer allows it too (its max_udp_payload_size: quinn's default
        // is 1472; our players raise it).
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(MTU_UPPER_BOUND);
        t.mtu_discovery_config(Some(mtu));
        Arc::new(t)
    }
}

/// The endpoint's own settings: datagrams up to [`MTU_UPPER_BOUND`] accepted (quinn's default
/// of 1472 would keep a peer's MTU discovery at that on any path, appliances filling one
/// another included).
fn endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    // In quinn's range (1200..=65527): never refused.
    let _ = config.max_udp_payload_size(MTU_UPPER_BOUND);
    config
}

/// Why an endpoint could not be created or a connection made.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TLS configuration for binding or for a dial could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for (port 0 for a client endpoint).
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// quinn refused the TLS configuration for QUIC (which needs TLS 1.3 and a suite for its
    /// initial packets); carries quinn's reason.
    #[error("QUIC configuration: {0}")]
    Config(String),
    /// quinn could not start the dial (the endpoint is stopping, the address is invalid).
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address dialled.
        addr: SocketAddr,
        /// quinn's reason.
        source: quinn::ConnectError,
    },
    /// The connection failed before its handshake completed: no answer within the idle
    /// timeout, a refused handshake, or a peer that did not prove `peer`.
    #[error("handshake with {peer} at {addr} failed")]
    Handshake {
        /// The address dialled.
        addr: SocketAddr,
        /// The PeerId the other side had to prove.
        peer: PeerId,
        /// quinn's reason (boxed: it is large).
        source: Box<quinn::ConnectionError>,
    },
    /// [`MeshEndpoint::connect_within`] gave up before the handshake completed.
    #[error("no answer from {addr} within {after:?}")]
    Timeout {
        /// The address dialled.
        addr: SocketAddr,
        /// The time it was given.
        after: Duration,
    },
}

/// A node's QUIC endpoint and the identity it proves.
#[derive(Debug, Clone)]
pub struct MeshEndpoint {
    endpoint: Endpoint,
    tls: Arc<TlsIdentity>,
    limits: TransportLimits,
    socket: SocketReport,
    refused: Counter,
}

impl MeshEndpoint {
    /// Binds `addr`, accepting mesh connections (ALPN `fillmesh/1`) and able to dial.
    pub fn bind(addr: SocketAddr, tls: TlsIdentity, limits: TransportLimits) -> Result<Self, TransportError> {
        let server_tls = tls.server_config(&[ALPN, H3_ALPN])?;
        let quic =
            QuicServerConfig::try_from(server_tls).map_err(|e| TransportError::Config(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server.transport_config(limits.transport_config());
        // quinn refuses by itself past this many handshakes not yet taken by the router.
        server.max_incoming(limits.max_handshakes.max(1));
        let (udp, socket) = Self::socket(addr, &limits)?;
        let endpoint = Endpoint::new(endpoint_config(), Some(server), udp, Arc::new(TokioRuntime))
            .map_err(|source| TransportError::Bind { addr, source })?;
        Ok(Self { endpoint, tls: Arc::new(tls), limits, socket, refused: Counter::default() })
    }

    fn socket(
        addr: SocketAddr,
        limits: &TransportLimits,
    ) -> Result<(std::net::UdpSocket, SocketReport), TransportError> {
        socket::bind(addr, limits.udp_buffer).map_err(|source| TransportError::Bind { addr, source })
    }

    /// A client-only endpoint on an ephemeral port (for one-shot tools).
    pub fn client(
        bind_ip: std::net::IpAddr,
        tls: TlsIdentity,
        limits: TransportLimits,
    ) -> Result<Self, TransportError> {
        let addr = SocketAddr::new(bind_ip, 0);
        let (udp, socket) = Self::socket(addr, &limits)?;
        let endpoint = Endpoint::new(endpoint_config(), None, udp, Arc::new(TokioRuntime))
            .map_err(|source| TransportError::Bind { addr, source })?;
        Ok(Self { endpoint, tls: Arc::new(tls), limits, socket, refused: Counter::default() })
    }

    /// The buffers and offloads the endpoint's UDP socket was given.
    pub fn socket_report(&self) -> SocketReport {
        self.socket
    }

    /// The limits the endpoint was made with.
    pub fn limits(&self) -> &TransportLimits {
        &self.limits
    }

    /// Connections refused so far because the endpoint held as many as its limits allow (a
    /// counter shared with every clone of the endpoint, for a metrics registry).
    pub fn refused(&self) -> Counter {
        self.refused.clone()
    }

    pub(crate) fn count_refused(&self) {
        self.refused.inc();
    }

    /// The UDP address the endpoint is bound to, with the port the system chose for port 0.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The PeerId this endpoint proves to the peers it dials and that dial it.
    pub fn peer_id(&self) -> PeerId {
        self.tls.peer_id()
    }

    /// The TLS identity the endpoint was made with.
    pub fn tls(&self) -> &TlsIdentity {
        &self.tls
    }

    /// The quinn endpoint beneath, for what this type does not wrap: accepting connections
    /// (the router, the baseline) and waiting for connections to drain at shutdown.
    pub fn inner(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Dials `addr`, which must prove it is `expected`.
    pub async fn connect(&self, addr: SocketAddr, expected: PeerId) -> Result<Connection, TransportError> {
        let client_tls = self.tls.client_config(expected, ALPN)?;
        let quic =
            QuicClientConfig::try_from(client_tls).map_err(|e| TransportError::Config(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(self.limits.transport_config());
        let connecting = self
            .endpoint
            .connect_with(config, addr, SERVER_NAME)
            .map_err(|source| TransportError::Connect { addr, source })?;
        connecting.await.map_err(|source| TransportError::Handshake {
            addr,
            peer: expected,
            source: Box::new(source),
        })
    }

    /// [`MeshEndpoint::connect`] within `timeout`.
    pub async fn connect_within(
        &self,
        addr: SocketAddr,
        expected: PeerId,
        timeout: Duration,
    ) -> Result<Connection, TransportError> {
        tokio::time::timeout(timeout, self.connect(addr, expected))
            .await
            .map_err(|_| TransportError::Timeout { addr, after: timeout })?
    }

    /// Stops accepting and closes every connection.
    pub fn close(&self) {
        self.endpoint.close(close::SHUTDOWN, b"shutting down");
    }
}

/// The PeerId the remote side proved during the handshake.
pub fn remote_peer(conn: &Connection) -> Option<PeerId> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    peer_id_of_chain(&chain)
}
