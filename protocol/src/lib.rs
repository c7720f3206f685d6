//! fillmesh's content model and wire protocol, with no I/O: title ids, chunking, manifests and
//! their verification, the messages nodes exchange, and their bounded framing. Everything a
//! node believes about content it checks here against the title id alone. Also: the units sizes,
//! rates and durations are written in ([`units`]).

#![warn(missing_docs)]
#![warn(unreachable_pub)]

pub mod bitmap;
mod bounded;
pub mod chunk;
pub mod frame;
pub mod hash;
pub mod manifest;
pub mod messages;
pub mod ownership;
pub mod package;
pub mod peer;
pub mod shape;
pub mod steering;
pub mod title;
pub mod token;
pub mod units;

pub use bitmap::{BitmapError, ChunkBitmap};
pub use chunk::{ChunkSize, ChunkSizeError};
pub use frame::{FrameError, Message};
pub use manifest::{ChainingValue, Manifest, ManifestBuilder, ManifestError, PackageBuilder, VerifyError};
pub use package::{ListingError, PackageFile, PathError};
pub use peer::{IpPrefix, NodeId, NodeIdError, PrefixError};
pub use shape::{Shape, ShapeError};
pub use title::{TitleId, TitleIdError};

/// The ALPN of the mesh protocol. The number is the protocol's major version: a node never
/// negotiates a version it does not speak.
pub const ALPN: &[u8] = b"fillmesh/1";
