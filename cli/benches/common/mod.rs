//! What more than one bench of this crate uses.

pub mod steer;
