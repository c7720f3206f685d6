//! The tracker: who holds what, who fills which chunk from whom, and where players go.
//!
//! [`core`] is the pure, deterministic planner (registry, catalog, held maps, fill plans,
//! steering) that the simulator drives too; `server` is its QUIC/HTTP shell.

#![warn(missing_docs)]
#![warn(unreachable_pub)]

pub mod core;
#[cfg(feature = "server")]
pub mod server;
