//! The mesh client's two requests, on the one request layer ([`fillmesh_net::rpc`]): a
//! title's manifest, and one chunk's bytes, with what each outcome says of the source.

use std::time::Duration;

use bytes::BytesMut;
use fillmesh_net::rpc::{self, CallError};
use fillmesh_protocol::messages::{ErrorCode, Hello, MeshRequest, MeshResponse, Role, PROTOCOL_VERSION};
use fillmesh_protocol::{Manifest, TitleId};
use quinn::Connection;

use crate::store::chunk_buffer;

/// How a chunk request failed.
#[derive(Debug)]
pub(crate) enum ChunkError {
    /// The connection is gone.
    Lost(String),
    /// The source answered that it does not hold the chunk.
    NotHeld(String),
    /// The source could not or would not answer (busy, a timeout, a stream reset).
    Refused(String),
    /// The source broke the protocol or sent what was not asked for.
    Lied(String),
}

impl From<CallError> for ChunkError {
    fn from(e: CallError) -> Self {
        if e.is_connection_lost() {
            ChunkError::Lost(e.to_string())
        } else if e.is_malformed() {
            ChunkError::Lied(e.to_string())
        } else {
            ChunkError::Refused(e.to_string())
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
) -> Result<BytesMut, ChunkError> {
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
                    Ok(None) => {
                        return Err(ChunkError::Lied(format!(
                            "chunk {index} ended after {} of {expected} bytes",
                            buf.len()
                        )))
                    }
                    Err(quinn::ReadError::ConnectionLost(e)) => return Err(ChunkError::Lost(e.to_string())),
                    Err(e) => return Err(ChunkError::Refused(format!("chunk body: {e}"))),
                }
            }
            Ok(buf)
        }
        MeshResponse::Chunk(h) => Err(ChunkError::Lied(format!(
            "asked for chunk {index} ({expected} bytes) of {title}, got chunk {} ({} bytes) of {}",
            h.index, h.len, h.title
        ))),
        MeshResponse::Error(e) if e.code == ErrorCode::NotHeld => Err(ChunkError::NotHeld(e.message)),
        MeshResponse::Error(e) => Err(ChunkError::Refused(format!("{:?}: {}", e.code, e.message))),
        other => Err(ChunkError::Lied(format!("answered a chunk request with {}", kind(&other)))),
    }
}

/// Why a source gave no manifest to use.
#[derive(Debug)]
pub(crate) enum ManifestMiss {
    /// It could not or would not answer with one.
    Unavailable(String),
    /// It sent one that does not hash to the title id: it lies or its index is damaged.
    False(String),
}

/// Asks for the manifest of `title` and verifies it against the id.
pub(crate) async fn request_manifest(
    conn: &Connection,
    title: TitleId,
    timeout: Duration,
) -> Result<Manifest, ManifestMiss> {
    let call = rpc::call(conn, &MeshRequest::Manifest { title }, timeout).await;
    let manifest = match call.map_err(|e| ManifestMiss::Unavailable(e.to_string()))? {
        MeshResponse::Manifest { title: t, manifest } if t == title => manifest,
        MeshResponse::Error(e) => {
            return Err(ManifestMiss::Unavailable(format!("{:?}: {}", e.code, e.message)))
        }
        other => {
            return Err(ManifestMiss::Unavailable(format!(
                "answered a manifest request with {}",
                kind(&other)
            )))
        }
    };
    manifest.verify(&title).map_err(|e| ManifestMiss::False(e.to_string()))?;
    Ok(manifest)
}

/// Says hello as `role` and checks that the peer speaks our protocol version.
pub(crate) async fn hello(conn: &Connection, role: Role, timeout: Duration) -> Result<Hello, String> {
    match rpc::call(conn, &MeshRequest::Hello(Hello::ours(role)), timeout).await.map_err(|e| e.to_string())? {
        MeshResponse::Hello(h) if h.version == PROTOCOL_VERSION => Ok(h),
        MeshResponse::Hello(h) => {
            Err(format!("it speaks protocol version {}, this node {PROTOCOL_VERSION}", h.version))
        }
        MeshResponse::Error(e) => Err(format!("{:?}: {}", e.code, e.message)),
        other => Err(format!("answered a hello with {}", kind(&other))),
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
