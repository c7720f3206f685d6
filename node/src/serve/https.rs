//! Players over HTTPS on TCP (HTTP/1.1 and HTTP/2, rustls), on the same port number as the
//! node's QUIC endpoint: browsers start here and move to HTTP/3 when `Alt-Svc` says so. Every
//! request is answered by `PlayerServer::answer`, as on HTTP/3: same routes, ranges,
//! statuses and headers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fillmesh_net::rate::Arrivals;
use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, Instrument};

use super::players::{request_span, PlayerServer, Truncated};

/// A TLS handshake or a request head that takes longer than this closes the connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many players' TCP connections are held, and how many TLS handshakes run, at once, and
/// how many new ones are taken a second. Past any, a new connection is closed as soon as it
/// is accepted: its player sees the connection end within a round trip and goes to another
/// appliance, where a connection left in the kernel's backlog would wait out its own timeout.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Connections at once.
    pub connections: usize,
    /// TLS handshakes at once.
    pub handshakes: usize,
    /// New connections a second; 0: no limit.
    pub rate: u32,
}

impl From<&fillmesh_net::TransportLimits> for TcpLimits {
    fn from(limits: &fillmesh_net::TransportLimits) -> Self {
        Self {
            connections: limits.max_connections,
            handshakes: limits.max_handshakes,
            rate: limits.connection_rate,
        }
    }
}

/// Serves players on `listener` until the task is dropped.
pub async fn serve(
    server: PlayerServer,
    listener: TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    limits: TcpLimits,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let connections = Arc::new(Semaphore::new(limits.connections.max(1)));
    let handshakes = Arc::new(Semaphore::new(limits.handshakes.max(1)));
    let arrivals = Arrivals::new(limits.rate);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or similar: wait rather than spin.
                debug!("accepting a player connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The rate counts only a connection the limits before it would take.
        let taken = match (connections.clone().try_acquire_owned(), handshakes.clone().try_acquire_owned()) {
            (Ok(permit), Ok(shake)) if arrivals.admit() => Ok((permit, shake)),
            (Ok(_), Ok(_)) => Err("past the node's connection rate"),
            _ => Err("at the node's limits"),
        };
        let (permit, shake) = match taken {
            Ok(permits) => permits,
            Err(why) => {
                server.metrics().tcp_refused.inc();
                debug!(%remote, "refusing a player's TCP connection: {why}");
                refuse(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let server = server.clone();
        tokio::spawn(
            async move {
                let _permit = permit;
                let _session = server.metrics().session();
                let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(shake);
                let tls = match tls {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return debug!("TLS handshake failed: {e}"),
                    Err(_) => return debug!("TLS handshake timed out"),
                };
                let service = hyper::service::service_fn(move |request| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.http(request, remote.ip()).await) }
                });
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http1().timer(TokioTimer::new()).header_read_timeout(HANDSHAKE_TIMEOUT);
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(100)
                    .keep_alive_interval(Some(Duration::from_secs(20)));
                if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                    debug!("HTTPS connection ended: {e}");
                }
            }
            .instrument(tracing::debug_span!("player", %remote, transport = "tcp")),
        );
    }
}

/// Closes a connection refused at the limits at once. Lingering off with a zero timeout
/// makes the close a reset: the client's pending handshake fails with "connection reset"
/// at once, where a plain close after its unread ClientHello would do the same less surely.
fn refuse(tcp: tokio::net::TcpStream) {
    let _ = tcp.set_zero_linger();
    drop(tcp);
}

impl PlayerServer {
    /// One HTTPS request: the same answer as on HTTP/3, its body streamed; a body cut short
    /// by a damaged chunk is an error that aborts the response (a truncated body).
    async fn http(
        self,
        request: hyper::Request<Incoming>,
        client: std::net::IpAddr,
    ) -> hyper::Response<axum::body::Body> {
        let (parts, _body) = request.into_parts();
        // Counted until hyper has sent the last byte of the body (or dropped it).
        let in_flight = self.in_flight();
        let span = request_span(&parts.method, parts.uri.path());
        let (head, body) = self
            .answer(&parts.method, parts.uri.path(), &parts.headers, client, Instant::now())
            .instrument(span.clone())
            .await;
        // hyper polls the body outside this future: the pieces carry the span themselves.
        let stream = self.pieces(body, span).map(move |piece| {
            let _ = &in_flight;
            piece.map_err(|Truncated| std::io::Error::other(Truncated))
        });
        head.map(|()| axum::body::Body::from_stream(stream))
    }
}
