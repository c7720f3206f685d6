//! Getting chunks into the store: the mesh client's requests ([`client`]) and the fetch
//! engine ([`fetch`]) that fills a title from several sources at once.

mod client;
pub mod fetch;

pub(crate) use client::{request_chunk, request_manifest, ChunkError};
pub use fetch::{fetch_title, FetchError, FetchOptions, FetchReport, Source, SourceReport};
