//! The fillmesh appliance and origin, by role, and the `fillmesh` command line.
//!
//! - [`store`]: one sparse data file per title, the sled index, the group-commit writer.
//! - [`fill`]: getting chunks: the one fill among parents (the swarm's I/O shell), the mesh
//!   client, `fillmesh fetch`.
//! - [`serve`]: giving chunks: the mesh server (trusted peers) and the HTTP/3 player server.
//! - [`origin`]: the origin's ingest API and `fillmesh seed`, its client.
//! - [`member`]: life under a tracker: register, heartbeat, fill by its plans, evict.
//! - [`daemon`]: `fillmesh node`, which puts the roles together on one endpoint.
//! - [`metrics`]: the node's Prometheus registry.
//! - [`cli`]: the other commands: `id`, `fetch`, `play` (the player client), `status`,
//!   `demo`, `testbed`.
//! - [`testbed`]: network namespaces, shaped links and the delay element of `fillmesh testbed`.

#![warn(unreachable_pub)]

pub mod cli;
pub mod daemon;
pub mod fill;
pub mod member;
pub mod metrics;
pub mod origin;
mod rate;
pub mod serve;
pub mod store;
pub mod testbed;
