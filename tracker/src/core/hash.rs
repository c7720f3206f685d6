//! The only randomness the core has: the protocol crate's keyed mix (shared with the fleet's
//! ownership rule, which appliances compute too).

pub(crate) use fillmesh_protocol::hash::{bytes, mix};
