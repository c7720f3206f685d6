//! Frames on quinn streams: every read is bounded by its message type and by a timeout.

use std::time::Duration;

use fillmesh_protocol::frame::{self, FrameError, Message, PREFIX_LEN};
use quinn::{RecvStream, SendStream};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The read or the write did not finish within its timeout; carries the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The stream ended, was reset or lost its connection before the whole frame arrived.
    #[error("stream read failed")]
    Read(#[from] quinn::ReadExactError),
    /// The peer stopped the stream, or the connection was lost, during a write.
    #[error("stream write failed")]
    Write(#[from] quinn::WriteError),
    /// The stream was finished or reset already when it was to be finished
    /// (by `rpc::reply`, the layer above).
    #[error("stream closed")]
    Closed(#[from] quinn::ClosedStream),
    /// The frame was refused: oversized (on its prefix, before the body is read), malformed,
    /// with trailing bytes, or not encodable.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads one frame of type `M`, refusing an oversized prefix before reading the body.
pub async fn read_frame<M: Message>(recv: &mut RecvStream, timeout: Duration) -> Result<M, WireError> {
    tokio::time::timeout(timeout, async {
        let mut prefix = [0u8; PREFIX_LEN];
        recv.read_exact(&mut prefix).await?;
        let len = frame::body_len::<M>(prefix)?;
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body).await?;
        Ok(frame::decode_body::<M>(&body)?)
    })
    .await
    .map_err(|_| WireError::Timeout(timeout))?
}

/// Writes one frame.
pub async fn write_frame<M: Message>(
    send: &mut SendStream,
    msg: &M,
    timeout: Duration,
) -> Result<(), WireError> {
    let bytes = frame::encode(msg)?;
    write_all(send, &bytes, timeout).await
}

/// Writes raw bytes within `timeout`.
pub async fn write_all(send: &mut SendStream, bytes: &[u8], timeout: Duration) -> Result<(), WireError> {
    tokio::time::timeout(timeout, send.write_all(bytes)).await.map_err(|_| WireError::Timeout(timeout))??;
    Ok(())
}

/// Writes owned bytes within `timeout`, without copying them into the stream's buffer.
pub async fn write_bytes(
    send: &mut SendStream,
    bytes: bytes::Bytes,
    timeout: Duration,
) -> Result<(), WireError> {
    tokio::time::timeout(timeout, send.write_chunk(bytes))
        .await
        .map_err(|_| WireError::Timeout(timeout))??;
    Ok(())
}
