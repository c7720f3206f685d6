//! fillmesh networking, shared by the appliance, the origin and the tracker's server.
//!
//! Layers, bottom up (after rust-libp2p's transport / swarm / behaviours):
//! - [`identity`]: a node's persistent Ed25519 key; its PeerId names the node everywhere.
//! - [`tls`]: rustls configs with libp2p certificates and our own verifiers (each side pins
//!   the other's PeerId; players pin an SPKI hash), aws-lc-rs only, AES-GCM first.
//! - [`socket`]: the UDP socket beneath an endpoint, its buffers sized and the sizes granted
//!   reported.
//! - [`endpoint`]: one quinn endpoint per node (mesh and `h3` on one UDP port), transport
//!   limits, close codes, and dialling with a timeout.
//! - [`frame`]: length-prefixed postcard frames on quinn streams, bounded before any body
//!   byte is read, every read and write timed out.
//! - [`rpc`]: the one request/response layer: [`rpc::call`] on the client side,
//!   [`rpc::serve`] (each request its own task) on the server side.
//! - [`router`]: the accept loop, one handler per ALPN; [`trust`] gates a handler to the
//!   peers a node trusts, as a wrapper around it.
//! - [`pool`]: one connection per (address, PeerId), reused, re-dialled when closed.
//! - [`ready`]: the line a process prints when it is ready, written and parsed in one place.
//! - [`notify`]: systemd's readiness, watchdog and status notifications.
//! - [`console`]: report lines on stdout that survive a closed pipe (`say!`).
//! - [`metrics`]: one Prometheus registry per process and the one `/metrics` page of it.
//! - [`rate`]: the token bucket that caps a node's upload and a player's consumption.
//! - [`sync`]: taking a lock that a panic poisoned, in one place and with the reason.
//! - [`chain`]: an error with its causes, each once, for log lines and reasons kept as text.

#![warn(missing_docs)]
#![warn(unreachable_pub)]

pub mod baseline;
pub mod chain;
pub mod console;
pub mod endpoint;
pub mod frame;
pub mod identity;
pub mod metrics;
pub mod notify;
pub mod pool;
pub mod rate;
pub mod ready;
pub mod router;
pub mod rpc;
pub mod socket;
pub mod sync;
pub mod tls;
pub mod trust;

pub use chain::Chain;
pub use endpoint::{close, MeshEndpoint, TransportError, TransportLimits, H3_ALPN};
pub use pool::Pool;
pub use ready::Ready;
pub use router::Router;
pub use rpc::CallError;
pub use tls::TlsIdentity;
pub use trust::Trust;
