//! The mesh client's requests, on the one request layer ([`fillmesh_net::rpc`]): a hello, a
//! title's manifest, and one chunk's bytes, with what each failure says of the source
//! ([`ClientError`]).

use std::time::Duration;

use bytes::BytesMut;
use fillmesh_net::rpc::{self, CallError};
use fillmesh_net::TransportError;
use fillmesh_protocol::messages::{
    accepts_version, ErrorCode, Hello, MeshRequest, MeshResponse, Role, PROTOCOL_VERSION,
};
use fillmesh_protocol::{Manifest, TitleId, VerifyError};
use quinn::Connection;

use crate::store::chunk_buffer;

/// How a request to a source failed (its hello, a manifest, a chunk, its subscription), by
/// what that says of the source: unreachable or gone, too slow, refusing, not holding the
/// chunk, or lying. The fill matches the variants to decide what to do with the source.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// No connection to it could be made.
    #[error(transparent)]
    Unreachable(TransportError),
    /// The connection is gone (before the exchange, or during it).
    #[error(transparent)]
    Lost(CallError),
    /// The connection went while the chunk's bytes were coming.
    #[error(transparent)]
    LostInBody(quinn::ConnectionError),
    /// No answer within the time allowed.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    /// The exchange failed on its stream (reset or stopped): it would not answer.
    #[error(transparent)]
    Failed(CallError),
    /// The chunk's bytes could not be read to the end (the stream was reset, say).
    #[error("chunk body")]
    Body(#[source] quinn::ReadError),
    /// It answered with an error.
    #[error("{code:?}: {message}")]
    Refused { code: ErrorCode, message: String },
    /// It is too busy to take a subscription.
    #[error("busy")]
    Busy,
    /// It still did not know the title after the fill's patience.
    #[error("does not know the title: {0}")]
    UnknownTitle(String),
    /// It speaks another protocol version.
    #[error("it speaks protocol version {0}, this node {PROTOCOL_VERSION}")]
    Version(u16),
    /// It does not hold the chunk (its message).
    #[error("{0}")]
    NotHeld(String),
    /// Its answer could not be decoded: a malformed or oversized frame.
    #[error(transparent)]
    Malformed(CallError),
    /// It answered a request with something else.
    #[error("answered {asked} with {got}")]
    Unexpected { asked: &'static str, got: &'static str },
    /// It sent another chunk than the one asked for.
    #[error("asked for chunk {index} ({expected} bytes) of {title}, got chunk {got} ({got_len} bytes) of {got_title}")]
    WrongChunk { title: TitleId, index: u32, expected: u64, got_title: TitleId, got: u32, got_len: u32 },
    /// The chunk's bytes ended before its length.
    #[error("chunk {index} ended after {got} of {expected} bytes")]
    Short { index: u32, got: usize, expected: usize },
    /// Its manifest does not hash to the title id: it lies or its index is damaged.
    #[error(transparent)]
    FalseManifest(VerifyError),
}

impl From<CallError> for ClientError {
    fn from(e: CallError) -> Self {
        if let CallError::Timeout(after) = e {
            ClientError::TimedOut(after)
        } else if e.is_connection_lost() {
            ClientError::Lost(e)
        } else if e.is_malformed() {
            ClientError::Malformed(e)
        } else {
            ClientError::Failed(e)
        }
    }
}

impl ClientError {
    /// An error answer: not held, or a refusal of another kind.
    fn answered(code: ErrorCode, message: String) -> Self {
        match code {
            ErrorCode::NotHeld => ClientError::NotHeld(message),
            code => ClientError::Refused { code, message },
        }
    }
}

/// Asks for chunk `index` of `title`, whose length by our manifest is `expected`, and reads
/// its bytes (unverified: the caller verifies).
pub(crate) async fn request_chunk(
    conn: &Connection,
    title: TitleId,
    index: u32,
    expected: u64,
    timeout: Duration,
) -> Result<BytesMut, ClientError> {
    let (response, mut recv) =
        rpc::open::<_, MeshResponse>(conn, &MeshRequest::Chunk { title, index }, timeout).await?;
    match response {
        MeshResponse::Chunk(h) if h.title == title && h.index == index && u64::from(h.len) == expected => {
            // The length comes from our manifest, never from the peer's header. Pieces are
            // appended as quinn hands them over: no zero-filled buffer to overwrite.
            let expected = expected as usize;
            let mut buf = chunk_buffer(expected);
            while buf.len() < expected {
                match recv.read_chunk(expected - buf.len(), true).await {
                    Ok(Some(piece)) => buf.extend_from_slice(&piece.bytes),
                    Ok(None) => return Err(ClientError::Short { index, got: buf.len(), expected }),
                    Err(quinn::ReadError::ConnectionLost(e)) => return Err(ClientError::LostInBody(e)),
                    Err(e) => return Err(ClientError::Body(e)),
                }
            }
            Ok(buf)
        }
        MeshResponse::Chunk(h) => Err(ClientError::WrongChunk {
            title,
            index,
            expected,
            got_title: h.title,
            got: h.index,
            got_len: h.len,
        }),
        MeshResponse::Error(e) => Err(ClientError::answered(e.code, e.message)),
        other => Err(ClientError::Unexpected { asked: "a chunk request", got: kind(&other) }),
    }
}

/// Asks for the manifest of `title` and verifies it against the id.
pub(crate) async fn request_manifest(
    conn: &Connection,
    title: TitleId,
    timeout: Duration,
) -> Result<Manifest, ClientError> {
    let manifest = match rpc::call(conn, &MeshRequest::Manifest { title }, timeout).await? {
        MeshResponse::Manifest { title: t, manifest } if t == title => manifest,
        MeshResponse::Error(e) => return Err(ClientError::Refused { code: e.code, message: e.message }),
        other => return Err(ClientError::Unexpected { asked: "a manifest request", got: kind(&other) }),
    };
    manifest.verify(&title).map_err(ClientError::FalseManifest)?;
    Ok(manifest)
}

/// Says hello as `role` and checks that the peer speaks our protocol version.
pub(crate) async fn hello(conn: &Connection, role: Role, timeout: Duration) -> Result<Hello, ClientError> {
    match rpc::call(conn, &MeshRequest::Hello(Hello::ours(role)), timeout).await? {
        MeshResponse::Hello(h) if accepts_version(h.version) => Ok(h),
        MeshResponse::Hello(h) => Err(ClientError::Version(h.version)),
        MeshResponse::Error(e) => Err(ClientError::Refused { code: e.code, message: e.message }),
        other => Err(ClientError::Unexpected { asked: "a hello", got: kind(&other) }),
    }
}

fn kind(r: &MeshResponse) -> &'static str {
    match r {
        MeshResponse::Hello(_) => "a hello",
        MeshResponse::Manifest { .. } => "a manifest",
        MeshResponse::Chunk(_) => "a chunk",
        MeshResponse::Held { .. } => "a bitmap",
        MeshResponse::Have { .. } => "a HAVE",
        MeshResponse::Error(_) => "an error",
    }
}
