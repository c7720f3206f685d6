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
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    #[error("the endpoint closed")]
    EndpointClosed,
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("connection")]
    Connection(#[from] quinn::ConnectionError),
    #[error("writing")]
    Write(#[from] quinn::WriteError),
    #[error("reading")]
    Read(#[from] quinn::ReadError),
    #[error("reading the go")]
    ReadGo(#[from] quinn::ReadExactError),
    #[error("finishing the stream")]
    Finish(#[from] quinn::ClosedStream),
    #[error("received {got} of {want} bytes")]
    Short { got: u64, want: u64 },
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
