//! The peers a node serves, and the gate that keeps everyone else out.
//!
//! The gate wraps a connection handler (see [`crate::router`]): the handler only ever sees
//! connections from a peer that proved a trusted PeerId during the TLS handshake.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, RwLock};

use libp2p_identity::PeerId;
use prometheus_client::metrics::counter::Counter;
use quinn::Connection;
use tracing::{debug, warn};

use crate::endpoint::{close, remote_peer};
use crate::sync::RwLockExt;

/// The peers a node trusts. Shared and mutable, so that a tracker can vouch for members later
/// without a restart.
#[derive(Debug, Clone, Default)]
pub struct Trust(Arc<RwLock<HashSet<PeerId>>>);

impl Trust {
    /// A list that trusts exactly `peers`, until more are added.
    pub fn new(peers: impl IntoIterator<Item = PeerId>) -> Self {
        Self(Arc::new(RwLock::new(peers.into_iter().collect())))
    }
    /// Whether `peer` is trusted now.
    pub fn allows(&self, peer: &PeerId) -> bool {
        self.0.read_locked().contains(peer)
    }
    /// Trusts `peer` from now on, in every clone of this list. Nothing is ever removed.
    pub fn add(&self, peer: PeerId) {
        self.0.write_locked().insert(peer);
    }
    /// How many peers are trusted.
    pub fn len(&self) -> usize {
        self.0.read_locked().len()
    }
    /// Whether no peer is trusted: then the gate lets no connection through.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Lets a connection through to `handler` only if its peer proved a PeerId that `trust`
/// allows. Others are closed with [`close::UNTRUSTED`] (counted in `refused`) or, without a
/// libp2p certificate at all, [`close::PROTOCOL`]. `noun` names the peer in the refusal's
/// log line (`refusing untrusted node`, for the tracker's appliances).
pub fn gate<H, F>(
    trust: Trust,
    refused: Counter,
    noun: &'static str,
    handler: H,
) -> impl Fn(Connection) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static
where
    H: Fn(Connection, PeerId) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    move |conn: Connection| {
        let (trust, refused, handler) = (trust.clone(), refused.clone(), handler.clone());
        Box::pin(async move {
            let Some(peer) = remote_peer(&conn) else {
                debug!("no libp2p certificate");
                conn.close(close::PROTOCOL, b"no libp2p certificate");
                return;
            };
            if !trust.allows(&peer) {
                refused.inc();
                warn!(%peer, "refusing untrusted {noun}");
                conn.close(close::UNTRUSTED, b"peer not trusted");
                return;
            }
            handler(conn, peer).await
        })
    }
}
