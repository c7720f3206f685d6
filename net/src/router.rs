//! The accept loop of an endpoint: each connection is handed, once its handshake is done, to
//! the handler of the ALPN it negotiated (as iroh's router does), inside a `conn` span.
//! A connection whose ALPN has no handler is closed with [`close::PROTOCOL`].
//!
//! Past the endpoint's limits ([`TransportLimits::max_connections`] connections or
//! [`TransportLimits::max_handshakes`] handshakes at once, or
//! [`TransportLimits::connection_rate`] new connections a second), a new connection is refused at
//! once (QUIC `CONNECTION_REFUSED` in answer to its first packet): its client learns within a
//! round trip that it must go elsewhere, where a connection left unanswered would cost it the
//! whole handshake timeout.
//!
//! [`TransportLimits::max_connections`]: crate::TransportLimits::max_connections
//! [`TransportLimits::max_handshakes`]: crate::TransportLimits::max_handshakes
//! [`TransportLimits::connection_rate`]: crate::TransportLimits::connection_rate

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use quinn::Connection;
use tracing::{debug, Instrument};

use crate::endpoint::{alpn, close, MeshEndpoint};
use crate::rate::Arrivals;

/// A boxed connection handler's future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type Handler = Arc<dyn Fn(Connection) -> HandlerFuture + Send + Sync>;

/// One handler per ALPN.
#[derive(Clone, Default)]
pub struct Router {
    handlers: Vec<(Vec<u8>, Handler)>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let alpns: Vec<String> =
            self.handlers.iter().map(|(a, _)| String::from_utf8_lossy(a).into()).collect();
        f.debug_struct("Router").field("alpns", &alpns).finish()
    }
}

impl Router {
    /// A router with no handler yet: a connection is closed with [`close::PROTOCOL`] unless
    /// a handler is routed for its ALPN.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connections that negotiate `alpn` go to `handler` (one task per connection).
    pub fn route<H, F>(mut self, alpn: &[u8], handler: H) -> Self
    where
        H: Fn(Connection) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        self.handlers.push((alpn.to_vec(), Arc::new(move |conn| Box::pin(handler(conn)) as HandlerFuture)));
        self
    }

    /// Accepts connections until the endpoint is closed.
    pub async fn run(self, endpoint: MeshEndpoint) {
        let handlers: Arc<[(Vec<u8>, Handler)]> = self.handlers.into();
        let handshaking = Arc::new(AtomicUsize::new(0));
        let (max_connections, max_handshakes) =
            (endpoint.limits().max_connections, endpoint.limits().max_handshakes);
        let arrivals = Arrivals::new(endpoint.limits().connection_rate);
        while let Some(incoming) = endpoint.inner().accept().await {
            let remote = incoming.remote_address();
            // Open connections include those still in their handshake.
            let open = endpoint.inner().open_connections();
            let shaking = handshaking.load(Ordering::Relaxed);
            // The rate counts only a connection the limits before it would take.
            let refusal = if open >= max_connections || shaking >= max_handshakes {
                Some("at the endpoint's limits")
            } else if !arrivals.admit() {
                Some("past the endpoint's connection rate")
            } else {
                None
            };
            if let Some(why) = refusal {
                endpoint.count_refused();
                debug!(%remote, open, handshaking = shaking, "refusing a connection: {why}");
                incoming.refuse();
                continue;
            }
            // Accepted here, not in the task: the connection is then in the endpoint's count
            // before the next one is checked against the limit. Accepted in its task, 10 to 12
            // of 12 connections made at once were taken at a limit of 3 (`tests/tests/edge.rs`).
            let connecting = match incoming.accept() {
                Ok(connecting) => connecting,
                Err(e) => {
                    debug!(%remote, "accepting a connection failed: {e}");
                    continue;
                }
            };
            let handlers = handlers.clone();
            let shake = Handshake::start(&handshaking);
            tokio::spawn(
                async move {
                    let conn = connecting.await;
                    drop(shake);
                    let conn = match conn {
                        Ok(conn) => conn,
                        Err(e) => {
                            debug!("handshake failed: {e}");
                            return;
                        }
                    };
                    let negotiated = alpn(&conn);
                    match handlers.iter().find(|(a, _)| Some(a) == negotiated.as_ref()) {
                        Some((_, handler)) => handler(conn).await,
                        None => conn.close(close::PROTOCOL, b"no handler for this ALPN"),
                    }
                }
                .instrument(tracing::info_span!("conn", %remote)),
            );
        }
    }
}

/// A handshake under way, counted until it ends either way.
struct Handshake(Arc<AtomicUsize>);

impl Handshake {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
