//! Framing: a 4-byte big-endian length prefix, then a postcard body. Every message type has a
//! hard maximum body size, checked on the prefix before a single body byte is read or
//! buffered, so a peer cannot make a node reserve more than that bound.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// A type that travels as one frame.
pub trait Message: Serialize + DeserializeOwned {
    /// Name used in errors and logs.
    const NAME: &'static str;
    /// The largest body a frame of this type may carry.
    const MAX_BODY: usize;
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The body is longer than the type's [`Message::MAX_BODY`]: on reading, seen on the
    /// length prefix before any body byte is read; on encoding, before anything is sent.
    #[error("{name} frame of {len} bytes exceeds its limit of {max} bytes")]
    TooLarge {
        /// The type's [`Message::NAME`].
        name: &'static str,
        /// Body bytes the prefix claims, or the encoded body has.
        len: u64,
        /// The type's [`Message::MAX_BODY`].
        max: usize,
    },
    /// The body is not a postcard encoding of the type, or a field in it breaks its bound or
    /// its check (a list over its maximum, a manifest of the wrong shape, an invalid id).
    #[error("malformed {name} frame")]
    Malformed {
        /// The type's [`Message::NAME`].
        name: &'static str,
        /// postcard's reason, which carries the failed check's.
        source: postcard::Error,
    },
    /// The body holds a whole message and more bytes after it: a frame holds exactly one.
    #[error("{name} frame has {extra} unexpected bytes after the message")]
    Trailing {
        /// The type's [`Message::NAME`].
        name: &'static str,
        /// Bytes left over after the message.
        extra: usize,
    },
    /// postcard could not serialise the message being sent.
    #[error("could not encode {name}")]
    Encode {
        /// The type's [`Message::NAME`].
        name: &'static str,
        /// postcard's reason.
        source: postcard::Error,
    },
}

/// Encodes `msg` as prefix + body. Refuses to produce a frame the other side would refuse.
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; PREFIX_LEN];
    out = postcard::to_extend(msg, out).map_err(|source| FrameError::Encode { name: M::NAME, source })?;
    let body = out.len() - PREFIX_LEN;
    if body > M::MAX_BODY {
        return Err(FrameError::TooLarge { name: M::NAME, len: body as u64, max: M::MAX_BODY });
    }
    out[..PREFIX_LEN].copy_from_slice(&(body as u32).to_be_bytes());
    Ok(out)
}

/// Reads the body length from a prefix and checks it against the bound for `M`. Stream
/// readers call this, then read exactly that many bytes, then [`decode_body`].
pub fn body_len<M: Message>(prefix: [u8; PREFIX_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > M::MAX_BODY {
        return Err(FrameError::TooLarge { name: M::NAME, len: len as u64, max: M::MAX_BODY });
    }
    Ok(len)
}

/// Decodes one body (without prefix). Bytes left over after the message are an error: a
/// frame holds exactly one message.
pub fn decode_body<M: Message>(body: &[u8]) -> Result<M, FrameError> {
    if body.len() > M::MAX_BODY {
        return Err(FrameError::TooLarge { name: M::NAME, len: body.len() as u64, max: M::MAX_BODY });
    }
    let (msg, rest) = postcard::take_from_bytes::<M>(body)
        .map_err(|source| FrameError::Malformed { name: M::NAME, source })?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing { name: M::NAME, extra: rest.len() });
    }
    Ok(msg)
}

/// Decodes the first frame in `buf`: `Ok(None)` if more bytes are needed, otherwise the
/// message and how many bytes it used. An oversized prefix is refused at once.
pub fn decode_frame<M: Message>(buf: &[u8]) -> Result<Option<(M, usize)>, FrameError> {
    let Some(prefix) = buf.first_chunk::<PREFIX_LEN>() else {
        return Ok(None);
    };
    let len = body_len::<M>(*prefix)?;
    let Some(body) = buf.get(PREFIX_LEN..PREFIX_LEN + len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, PREFIX_LEN + len)))
}
