//! The fillmesh appliance and origin: identity, mutual-TLS QUIC transport, the chunk store,
//! mesh serving and the fetch engine, origin ingest; and the pieces of the `fillmesh` command
//! line worth testing on their own.

pub mod console;
pub mod daemon;
pub mod datafile;
pub mod demo;
pub mod fetch;
pub mod id;
pub mod identity;
pub mod member;
pub mod metrics;
pub mod origin;
pub mod play;
pub mod player;
pub mod range;
pub mod rate;
pub mod serve;
pub mod store;
pub mod tls;
pub mod tracker_server;
pub mod transport;
pub mod units;
pub mod wire;
