//! fillmesh-sims: a deterministic discrete-event simulator that fills a title over thousands
//! of appliances with the tracker's own planner ([`fillmesh_tracker::core::Tracker`], driven
//! through its public API), next to the `origin` and `tiered` strategies, on a flow-level
//! max-min fair network model, and measures each against the Kumar-Ross and cut-set bounds.

pub mod bounds;
pub mod cli;
pub mod net;
pub mod queue;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod sim;

pub use scenario::Scenario;
pub use sim::{run, Options, Outcome, Strategy};
