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

/// The peers a node trusts: those its operator lists and those a tracker vouched for since.
/// Shared and mutable, so that a tracker can vouch for members later and the operator can
/// change the list, both without a restart.
#[derive(Debug, Clone, Default)]
pub struct Trust(Arc<RwLock<Peers>>);

#[derive(Debug, Default)]
struct Peers {
    listed: HashSet<PeerId>,
    vouched: HashSet<PeerId>,
}

impl Trust {
    /// A list that trusts exactly `peers`, until more are added.
    pub fn new(peers: impl IntoIterator<Item = PeerId>) -> Self {
        Self(Arc::new(RwLock::new(Peers { listed: peers.into_iter().collect(), vouched: HashSet::new() })))
    }
    /// Whether `peer` is trusted now.
    pub fn allows(&self, peer: &PeerId) -> bool {
        let peers = self.0.read_locked();
        peers.listed.contains(peer) || peers.vouched.contains(peer)
    }
    /// Trusts `peer` from now on, in every clone of this list (a peer a tracker vouched for:
    /// never removed).
    pub fn add(&self, peer: PeerId) {
        self.0.write_locked().vouched.insert(peer);
    }
    /// Replaces the operator's list (not the peers vouched for) with `peers`, in every clone;
    /// returns how many were added to it and how many removed from it. Connections already
    /// open stay; a removed peer's next connection is refused.
    pub fn relist(&self, peers: impl IntoIterator<Item = PeerId>) -> (usize, usize) {
        let new: HashSet<PeerId> = peers.into_iter().collect();
        let mut all = self.0.write_locked();
        let added = new.difference(&all.listed).count();
        let removed = all.listed.difference(&new).count();
        all.listed = new;
        (added, removed)
    }
    /// How many peers are trusted.
    pub fn len(&self) -> usize {
        let peers = self.0.read_locked();
        peers.listed.union(&peers.vouched).count()
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
