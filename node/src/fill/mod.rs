//! Getting chunks into the store, one way for every fill:
//! - [`scheduler`]: the sans-IO decisions (which source fetches which chunk next, what each
//!   outcome means), with its own unit and property tests;
//! - [`driver`]: the one async driver running it over mesh connections (request, verify,
//!   commit behind bounded write slots, metrics), and the one mapping of a request's result to
//!   the scheduler's outcome and the tracker's failure kind;
//! - [`client`]: the mesh client's requests (a manifest, a chunk);
//! - [`fetch`]: `fillmesh fetch`'s fill of a title from the sources given. The tracker's
//!   assignments are the other user of the driver (`member`).

mod client;
pub(crate) mod driver;
pub mod fetch;
pub mod scheduler;

pub(crate) use client::{request_manifest, ChunkError, ManifestMiss};
pub use fetch::{fetch_title, FetchError, FetchOptions, FetchReport, Source, SourceReport};
