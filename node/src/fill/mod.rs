//! Getting chunks into the store, one way for every fill:
//! - `swarm`: the fill of a title among parents, the I/O shell of `fillmesh-swarm` (the
//!   sans-IO decisions: which parent is asked for which chunk next, what each answer means):
//!   subscriptions, requests, verification, commits behind bounded write slots, metrics. An
//!   appliance runs it on the plans its tracker gives (`member` starts it from the fills),
//!   `fillmesh fetch` with its sources as parents;
//! - `client`: the mesh client's requests (a manifest, a chunk);
//! - [`fetch`]: `fillmesh fetch`'s fill of a title from the sources given.

mod client;
pub mod fetch;
pub(crate) mod swarm;

pub(crate) use client::{request_manifest, ClientError};
pub use fetch::{fetch_title, FetchError, FetchOptions, FetchReport, Source, SourceReport, Tally};
