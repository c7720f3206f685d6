//! The origin's two sides of `fillmesh seed`: the ingest API it serves ([`ingest`]) and the
//! client that hands it a file ([`seed()`]).

pub mod ingest;
pub mod package;
pub mod seed;

pub use ingest::{router, TITLE_HEADER};
pub use seed::{seed, seed_with, SeedError, Seeded};
