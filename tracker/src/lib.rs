//! The tracker: who holds what, who fills which chunk from whom, and where players go.
//!
//! `core` (the pure, deterministic planner that the simulator also drives) and `server` (its
//! QUIC/HTTP shell) arrive with the tracker issue; this crate exists now so the workspace has
//! its final shape.
