//! Getting chunks into the store, one way for every fill:
//! - [`scheduler`]: the sans-IO decisions (which source fetches which chunk next, what each
//!   outcome means), with its own unit and property tests;
//! - [`driver`]: the one async driver running it over mesh connections (request, verify,
//!   commit behind bounded write slots, metrics), and the one mapping of a request's result to
//!   the scheduler's outcome and the tracker's failure kind;
//! - [`client`]: the mesh client's requests (a manifest, a chunk);
//! - [`fetch`]: `fillmesh fetch`'s fill of a title from the sources given;
//! - [`swarm`]: an appliance's fill of a title among the parents its tracker assigned (the
//!   I/O shell of `fillmesh-swarm`), which `member` starts from the tracker's fills.

mod client;
pub(crate) mod driver;
pub mod fetch;
pub mod scheduler;
pub(crate) mod swarm;

pub(crate) use client::{request_manifest, ManifestMiss};
pub use fetch::{fetch_title, FetchError, FetchOptions, FetchReport, Source, SourceReport};
