//! fillmesh-sims: a deterministic discrete-event simulator that fills a title over thousands
//! of appliances as the node does (`fillmesh`: the tracker's own fill layouts from
//! [`fillmesh_tracker::core::Tracker`], driven through its public API, and each appliance's
//! `fillmesh_swarm::Swarm`), next to the `origin`, `tiered` and retired `per-chunk`
//! strategies, on a flow-level max-min fair network model, and measures each against the
//! Kumar-Ross and cut-set bounds.

#![warn(missing_docs)]

pub mod bounds;
pub mod job;
pub mod net;
pub mod queue;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod sim;

pub use scenario::Scenario;
pub use sim::{run, Options, Outcome, Strategy, StrategyError};
