//! One connection per (address, PeerId), dialled on first use within a timeout, reused while
//! open, dialled again once closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use libp2p_identity::PeerId;
use quinn::Connection;

use crate::endpoint::{MeshEndpoint, TransportError};

/// Connections to other nodes, shared by every task of a node.
#[derive(Debug)]
pub struct Pool {
    endpoint: MeshEndpoint,
    connect_timeout: Duration,
    conns: tokio::sync::Mutex<HashMap<(SocketAddr, PeerId), Connection>>,
}

impl Pool {
    /// An empty pool that dials through `endpoint`, each dial (handshake included) within
    /// `connect_timeout`.
    pub fn new(endpoint: MeshEndpoint, connect_timeout: Duration) -> Self {
        Self { endpoint, connect_timeout, conns: tokio::sync::Mutex::new(HashMap::new()) }
    }

    /// An open connection to `peer` at `addr`: the pooled one, or a new one.
    pub async fn get(&self, addr: SocketAddr, peer: PeerId) -> Result<Connection, TransportError> {
        let mut conns = self.conns.lock().await;
        if let Some(conn) = conns.get(&(addr, peer)).filter(|c| c.close_reason().is_none()) {
            return Ok(conn.clone());
        }
        let conn = self.endpoint.connect_within(addr, peer, self.connect_timeout).await?;
        conns.insert((addr, peer), conn.clone());
        Ok(conn)
    }

    /// Drops the pooled connection to `peer` at `addr` (after an exchange failed on it), so
    /// the next [`Pool::get`] dials again.
    pub async fn forget(&self, addr: SocketAddr, peer: PeerId) {
        self.conns.lock().await.remove(&(addr, peer));
    }

    /// Closes every pooled connection.
    pub async fn close_all(&self, reason: &[u8]) {
        for (_, conn) in self.conns.lock().await.drain() {
            conn.close(0u32.into(), reason);
        }
    }
}
