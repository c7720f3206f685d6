//! The fillmesh player client: a player that trusts nothing but the title id (`fillmesh play`,
//! the demo and the tests use it as a library).
//!
//! It asks the tracker where to go, fetches the manifest from the first appliance and checks
//! it against the id, then streams the title in order over HTTP/3 with a window of chunk-sized
//! range requests in flight, verifying every chunk before a byte of it is written. Each chunk
//! is asked of the nearest target first; one that answers 503 (a range it does not hold yet,
//! as a partial holder does while the title fills) is passed over for that chunk only, so the
//! player moves down the list and comes back with the next chunk. An appliance that errors,
//! stalls or sends a bad chunk is dropped for the rest of the play. A chunk that fails
//! verification is also reported to the tracker (`POST /report`), which counts this player
//! toward the appliance's corrupt-chunk quorum.
//!
//! With playback tokens, steering's URLs carry a token in their path (`/p/<token>/titles/..`)
//! and every request is asked under it. An appliance that refuses it (403: it expired, say)
//! costs one more steering request for a fresh token, and the play goes on from where it was.
//!
//! Each steering answer with targets is kept (see [`cache`]); when the tracker
//! cannot be reached (no connection, a timeout, a 5xx), the player plays from the answer kept
//! for the title, if it is recent enough, and says so on standard error. A tracker that
//! answers, even with no targets ("unknown title"), is believed: the cache is not used.
//!
//! A package (a title of many files) is played as an HLS ladder, adaptively: see [`ladder`];
//! its playlists are read by [`hls`] and the variant chosen by [`abr`].
//!
//! - `steer`: asking the trackers where to play from, in turn; reporting bad chunks.
//! - [`cache`]: the steering answers kept on disk, to play from when no tracker answers.
//! - `session`: one appliance's HTTP/3 session.
//! - `targets`: the steering list as the player works it: failover, 503 misses, verification.
//! - `sink`: where the verified bytes go.
//! - [`ladder`]: playing a package: the multivariant playlist, variants, switches.
//! - [`hls`]: reading HLS playlists, strictly and within bounds.
//! - [`abr`]: which variant next, by the throughput measured.

#![warn(unreachable_pub)]
#![warn(missing_docs)]

pub mod abr;
pub mod cache;
pub mod hls;
pub mod ladder;
mod session;
mod sink;
mod steer;
mod targets;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use fillmesh_net::rate::TokenBucket;
use fillmesh_protocol::{Manifest, TitleId};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tracing::warn;

pub use cache::SteerCache;
pub use ladder::LadderSummary;
pub use sink::is_stdout;
use sink::Sink;
pub use steer::SteerError;
use steer::{steer, Steered};
use targets::Targets;

/// One appliance of the steering list.
type Target = fillmesh_protocol::steering::SteerEntry;

/// How to play.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// The trackers' HTTP URLs, tried in turn (several: trackers of one fleet).
    pub tracker_http: Vec<String>,
    /// The address the trackers steer for, sent as `client_ip`; `None` lets each tracker
    /// steer for the address it sees the request come from.
    pub client_ip: Option<IpAddr>,
    /// Where the verified title is written: a regular file (created or truncated, synced at
    /// the end), `-` for standard output, or a pipe or device written as it is; `None`
    /// verifies and counts the bytes without writing them anywhere.
    pub out: Option<PathBuf>,
    /// Chunk requests in flight, at most; the window opens from one and doubles with each
    /// chunk that arrives up to this (zero counts as one).
    pub window: usize,
    /// An appliance that delivers nothing for this long is dropped; also how long the player
    /// keeps asking for a chunk that every target left answers 503 for before it fails.
    pub stall: Duration,
    /// Consume at most this many bytes per second, as a player at a bitrate does (for a
    /// package, the throughput the variant is chosen by counts this pacing).
    pub rate: Option<u64>,
    /// The local address to reach the tracker and the appliances from (any, if `None`).
    pub bind: Option<IpAddr>,
    /// Where steering answers are kept, to play from when the tracker cannot be reached.
    pub steer_cache: Option<SteerCache>,
    /// A package: play only this variant of the ladder (0 is the lowest bandwidth) instead of
    /// adapting. Refused for a one-file title.
    pub variant: Option<usize>,
    /// A package: play this playlist (a path in the package) instead of the one found (see
    /// [`ladder::master_playlist`]). Refused for a one-file title.
    pub playlist: Option<String>,
}

/// What a play did.
#[derive(Debug, Clone)]
pub struct PlaySummary {
    /// The title played, as asked.
    pub title: TitleId,
    /// Verified bytes delivered in order: a one-file title's whole length, since a summary is
    /// only returned for a play that completed; for a package, the played rendition's (init
    /// segments and segments; not the playlists).
    pub bytes: u64,
    /// From the start of the play (before steering) to the first verified bytes delivered
    /// in order.
    pub time_to_first_byte: Duration,
    /// From the start of the play (before steering) to the last chunk delivered and the
    /// output synced.
    pub total: Duration,
    /// (peer id, site, region, bytes) per appliance that sent chunks, in the order first used
    /// (for a package: every verified chunk, playlists included).
    pub appliances: Vec<(String, String, String, u64)>,
    /// Targets dropped for an error, a stall or a bad chunk.
    pub failovers: u32,
    /// Chunk requests answered 503 (not held there yet) and asked of the next target.
    pub misses: u32,
    /// For a package: the ladder played, its variants and switches; `None` for one file.
    pub ladder: Option<LadderSummary>,
    /// Times steering was asked again for a fresh playback token (an appliance refused the
    /// one the play had: it expired, say). One per refusal, however many requests were in
    /// flight.
    pub resteers: u32,
    /// Times every appliance of the list was dropped and steering named some again (an
    /// appliance restarted meanwhile).
    pub revivals: u32,
}

impl PlaySummary {
    /// Counts `bytes` verified from `target`.
    fn account(&mut self, target: &Target, bytes: u64) {
        match self.appliances.iter_mut().find(|a| a.0 == target.peer_id) {
            Some(a) => a.3 += bytes,
            None => self.appliances.push((
                target.peer_id.clone(),
                target.site.clone(),
                target.region.clone(),
                bytes,
            )),
        }
    }
}

/// Plays `title` to completion or fails with the reason the last appliance gave.
pub async fn play(title: TitleId, opts: &PlayOptions) -> anyhow::Result<PlaySummary> {
    let started = Instant::now();
    let Steered { targets: list, caching } = steer(&title, opts).await?;
    let played = play_from(title, list, opts, started).await;
    if let Some(caching) = caching {
        if let Err(e) = caching.await {
            warn!("caching the steering answer failed: {e}");
        }
    }
    played
}

/// Plays `title` from the steering list `list`.
async fn play_from(
    title: TitleId,
    list: Vec<Target>,
    opts: &PlayOptions,
    started: Instant,
) -> anyhow::Result<PlaySummary> {
    tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, targets = list.len(), "steered");
    let bucket = opts.rate.map(TokenBucket::new);
    let mut out = match &opts.out {
        Some(path) => Some(Sink::open(path).await?),
        None => None,
    };
    let mut summary = PlaySummary {
        title,
        bytes: 0,
        time_to_first_byte: Duration::ZERO,
        total: Duration::ZERO,
        appliances: Vec::new(),
        failovers: 0,
        misses: 0,
        ladder: None,
        resteers: 0,
        revivals: 0,
    };
    let targets = Targets::new(list, opts, title, started);
    let mut next_write = 0u32;
    let result = async {
        let manifest = targets.manifest().await?;
        tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "manifest verified");
        if manifest.is_package() {
            return ladder::play(&targets, &manifest, bucket.as_ref(), &mut out, &mut summary, started).await;
        }
        anyhow::ensure!(
            opts.variant.is_none() && opts.playlist.is_none(),
            "{title} is one file, not a package: --variant and --playlist are for packages"
        );
        stream(&targets, &manifest, bucket.as_ref(), &mut next_write, &mut out, &mut summary, started).await
    }
    .await;
    targets.close();
    summary.failovers = targets.failovers.get();
    summary.misses = targets.misses.get();
    summary.resteers = targets.resteers.get();
    summary.revivals = targets.revivals.get();
    result.with_context(|| match &summary.ladder {
        Some(l) => format!(
            "could not deliver {title} verified ({} segments written, {} bytes)",
            l.segments, summary.bytes
        ),
        None => format!("could not deliver {title} verified ({next_write} chunks written)"),
    })?;
    if let Some(sink) = out.as_mut() {
        sink.finish().await?;
    }
    summary.total = started.elapsed();
    Ok(summary)
}

/// Streams chunks `next_write..` in order, a window of them in flight, each from the
/// nearest target that holds it, writing each verified chunk in order.
async fn stream(
    targets: &Targets<'_>,
    manifest: &Manifest,
    bucket: Option<&TokenBucket>,
    next_write: &mut u32,
    out: &mut Option<Sink>,
    summary: &mut PlaySummary,
    started: Instant,
) -> anyhow::Result<()> {
    let n = manifest.chunk_count();
    let mut next_request = *next_write;
    let mut ready: BTreeMap<u32, (usize, Bytes)> = BTreeMap::new();
    let mut in_flight = FuturesUnordered::new();
    // The window opens from one request and doubles with each chunk that arrives: the first
    // chunk does not share the link with a full window, so the first byte comes sooner.
    let mut window = 1usize;
    while *next_write < n {
        while in_flight.len() < window && next_request < n {
            let index = next_request;
            next_request += 1;
            if let Some(b) = bucket {
                b.take(manifest.chunk_len(index).unwrap_or(0)).await;
            }
            in_flight.push(async move { (index, targets.chunk(manifest, index).await) });
        }
        let Some((index, result)) = in_flight.next().await else { anyhow::bail!("nothing in flight") };
        ready.insert(index, result?);
        window = (window * 2).min(targets.opts.window.max(1));
        while let Some((k, bytes)) = ready.remove(next_write) {
            if let Some(sink) = out.as_mut() {
                sink.write(&bytes).await?;
            }
            if summary.bytes == 0 {
                summary.time_to_first_byte = started.elapsed();
            }
            summary.bytes += bytes.len() as u64;
            summary.account(&targets.list[k], bytes.len() as u64);
            *next_write += 1;
        }
    }
    Ok(())
}
