//! The fillmesh appliance and origin (chunk store, fill engine, peer and player serving, as
//! the data-plane issue adds them) and the pieces of the `fillmesh` command line worth testing
//! on their own.

pub mod id;
