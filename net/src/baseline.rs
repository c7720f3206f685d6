//! A raw quinn transfer over the mesh's own endpoint (the same TLS and transport limits): one
//! stream, bytes written as fast as quinn takes them. The fill benchmark and the testbed's long
//! path measure `fillmesh fetch` against it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;

use crate::endpoint::{MeshEndpoint, TransportError};

/// Why a raw transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The time given ran out: the sender's `accept_within` before a connection was
    /// accepted and its handshake done; the receiver's `limit` before the connection was
    /// made or the last byte read. Carries that time.
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// The sender's endpoint closed before a connection came.
    #[error("the endpoint closed")]
    EndpointClosed,
    /// The receiver could not dial the sender.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The connection failed: the handshake of the accepted one, or opening or accepting its
    /// stream.
    #[error("connection")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing to the stream failed: the bytes (sender) or the go (receiver).
    #[error("writing")]
    Write(#[from] quinn::WriteError),
    /// Reading the bytes failed (receiver).
    #[error("reading")]
    Read(#[from] quinn::ReadError),
    /// Reading the receiver's two-byte go failed (sender).
    #[error("reading the go")]
    ReadGo(#[from] quinn::ReadExactError),
    /// Finishing the stream failed: it was already finished or reset.
    #[error("finishing the stream")]
    Finish(#[from] quinn::ClosedStream),
    /// The stream ended before every byte arrived.
    #[error("received {got} of {want} bytes")]
    Short {
        /// Bytes received.
        got: u64,
        /// Bytes the transfer was to carry (`len`).
        want: u64,
    },
}

/// The sender: accepts one connection on `endpoint` (handshake included, within
/// `accept_within`), waits for the receiver's go on the stream it opens, writes `len` bytes
/// on it, and waits up to `linger` for the receiver to close the connection.
pub async fn send(
    endpoint: &MeshEndpoint,
    len: u64,
    accept_within: Duration,
    linger: Duration,
) -> Result<(), BaselineError> {
    let timeout = |_| BaselineError::Timeout(accept_within);
    let conn = tokio::time::timeout(accept_within, async {
        let incoming = endpoint.inner().accept().await.ok_or(BaselineError::EndpointClosed)?;
        Ok::<_, BaselineError>(incoming.await?)
    })
    .await
    .map_err(timeout)??;
    let (mut send, mut recv) = conn.accept_bi().await?;
    let mut go = [0u8; 2];
    recv.read_exact(&mut go).await?;
    let buf = vec![0x5au8; 1 << 20];
    let mut sent = 0u64;
    // Bounded: each pass writes at least one byte more towards `len`.
    while sent < len {
        let n = (len - sent).min(buf.len() as u64) as usize;
        send.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    send.finish()?;
    let _ = tokio::time::timeout(linger, conn.closed()).await;
    Ok(())
}

/// The receiver: connects to the sender at `addr` (`peer`), says go, and reads the stream to
/// its end, all within `limit`. Returns MB/s from the connect to the last byte.
pub async fn receive(
    endpoint: &MeshEndpoint,
    addr: SocketAddr,
    peer: PeerId,
    len: u64,
    limit: Duration,
) -> Result<f64, BaselineError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    let timeout = |_| BaselineError::Timeout(limit);
    let conn = tokio::time::timeout_at(deadline, endpoint.connect(addr, peer)).await.map_err(timeout)??;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(b"go").await?;
    send.finish()?;
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while let Some(n) = tokio::time::timeout_at(deadline, recv.read(&mut buf)).await.map_err(timeout)?? {
        total += n as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    if total != len {
        return Err(BaselineError::Short { got: total, want: len });
    }
    conn.close(0u32.into(), b"done");
    Ok(len as f64 / secs / 1e6)
}
