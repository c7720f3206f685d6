//! The simulator: runs the tracker's own planning code over thousands of simulated
//! appliances. It arrives with the simulator issue; the crate exists now so the workspace has
//! its final shape.
