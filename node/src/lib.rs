//! The fillmesh appliance and origin, by role: the library `fillmesh node` runs. The command
//! line (`fillmesh-cli`) and the player client (`fillmesh-player`) are crates of their own.
//!
//! - [`store`]: one sparse data file per title, the sled index, the group-commit writer.
//! - [`fill`]: getting chunks: the one fill among parents (the swarm's I/O shell), the mesh
//!   client, `fillmesh fetch`.
//! - [`serve`]: giving chunks: the mesh server (trusted peers) and the HTTP/3 player server.
//! - [`origin`]: the origin's ingest API and `fillmesh seed`, its client.
//! - [`member`]: life under a tracker: register, heartbeat, fill by its plans, evict.
//! - [`daemon`]: `fillmesh node`, which puts the roles together on one endpoint.
//! - [`metrics`]: the node's Prometheus registry.
//! - [`window`]: fill windows (local hours of fill traffic); [`classes`]: rate classes
//!   (players, fill upload, fill download, total) and what of them a reload changes.

#![warn(unreachable_pub)]
#![warn(missing_docs)]

pub mod classes;
pub mod daemon;
pub mod fill;
pub mod member;
pub mod metrics;
pub mod origin;
pub mod serve;
pub mod store;
pub mod window;
