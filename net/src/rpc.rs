//! The one request/response layer: one request per bidirectional stream, each side one
//! bounded frame (a chunk's raw bytes may follow its response frame).
//!
//! Client side: [`call`] (a whole exchange), [`open`] (the response frame, then the stream
//! for a body) or [`subscribe`] (a stream of response frames until the caller ends it). Server side: [`serve`] runs each stream of a connection as its own task, and
//! [`reply`] answers on it.

use std::future::Future;
use std::time::Duration;

use fillmesh_protocol::frame::Message;
use quinn::{Connection, ConnectionError, RecvStream, SendStream};
use tracing::{debug, Instrument};

use crate::frame::{read_frame, write_frame, WireError};

/// Why an exchange failed. Its text, like every error's here, leaves the cause it wraps to
/// the chain (see [`crate::chain`]): a connection that went away is shown with its own
/// reason (an untrusted node's close reason, say) as the last cause.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No stream could be opened: the connection is gone (closed by either side, or lost).
    #[error("cannot open a stream")]
    Open(#[from] ConnectionError),
    /// Writing the request or reading the response failed, or the response frame was
    /// refused.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Opening the stream took longer than the exchange's timeout; carries the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl CallError {
    /// The connection itself is gone (as opposed to this one exchange failing).
    pub fn is_connection_lost(&self) -> bool {
        use quinn::{ReadError, ReadExactError, WriteError};
        matches!(
            self,
            CallError::Open(_)
                | CallError::Wire(WireError::Read(ReadExactError::ReadError(ReadError::ConnectionLost(_))))
                | CallError::Wire(WireError::Write(WriteError::ConnectionLost(_)))
        )
    }

    /// The peer's answer could not be decoded: a malformed or oversized frame.
    pub fn is_malformed(&self) -> bool {
        matches!(self, CallError::Wire(WireError::Frame(_)))
    }
}

/// Sends `request` on a new stream and reads one response frame, each step within `timeout`;
/// returns the response and the stream, for a body that follows it.
pub async fn open<Req: Message, Resp: Message>(
    conn: &Connection,
    request: &Req,
    timeout: Duration,
) -> Result<(Resp, RecvStream), CallError> {
    let (mut send, mut recv) =
        tokio::time::timeout(timeout, conn.open_bi()).await.map_err(|_| CallError::Timeout(timeout))??;
    write_frame(&mut send, request, timeout).await?;
    let _ = send.finish();
    let response = read_frame::<Resp>(&mut recv, timeout).await?;
    Ok((response, recv))
}

/// A long-lived exchange (a subscription): sends `request` on a new stream and reads the
/// first response frame, each step within `timeout`, and keeps both directions open: more
/// frames follow on the stream, and the caller ends it by finishing or resetting `send`.
pub async fn subscribe<Req: Message, Resp: Message>(
    conn: &Connection,
    request: &Req,
    timeout: Duration,
) -> Result<(Resp, SendStream, RecvStream), CallError> {
    let (mut send, mut recv) =
        tokio::time::timeout(timeout, conn.open_bi()).await.map_err(|_| CallError::Timeout(timeout))??;
    write_frame(&mut send, request, timeout).await?;
    let response = read_frame::<Resp>(&mut recv, timeout).await?;
    Ok((response, send, recv))
}

/// One whole exchange: `request` out, one response frame back.
pub async fn call<Req: Message, Resp: Message>(
    conn: &Connection,
    request: &Req,
    timeout: Duration,
) -> Result<Resp, CallError> {
    open(conn, request, timeout).await.map(|(response, _)| response)
}

/// Accepts the streams of `conn` until it ends, running `handler` on each as its own task
/// (in a `request` span): one slow request never holds up the next.
pub async fn serve<H, F>(conn: &Connection, handler: H)
where
    H: Fn(SendStream, RecvStream) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(handler(send, recv).instrument(tracing::debug_span!("request")));
            }
            Err(e) => {
                debug!("connection ended: {e}");
                return;
            }
        }
    }
}

/// Writes `response` as the stream's one frame and finishes the stream.
pub async fn reply<M: Message>(
    send: &mut SendStream,
    response: &M,
    timeout: Duration,
) -> Result<(), WireError> {
    write_frame(send, response, timeout).await?;
    send.finish()?;
    Ok(())
}
