//! Playing a package: an HLS ladder, adaptively.
//!
//! The player finds the multivariant playlist among the package's files (see
//! [`master_playlist`]), reads it and each variant's media playlist when it first needs it, and
//! plays the init segment and the segments in order: from the lowest variant, then the one
//! [`crate::abr`] picks after each segment by the throughput it measured (or the one pinned).
//! On a switch it plays the new variant's init segment, then its segments from the media time
//! reached. Every file is fetched by path (`/titles/<id>/<path>`) in chunk-sized ranges, each
//! chunk from the nearest target that holds it, verified against the manifest before a byte
//! of it is used: playlists as much as segments. The time a segment takes counts the pacing
//! of [`crate::PlayOptions::rate`], so a paced player adapts as it would over a link of that
//! rate.
//!
//! What goes to the output (`--out`) is the played rendition as a player's decoder is fed it
//! (Media Source Extensions' SourceBuffer): an init segment, its segments, and on a switch the
//! new init segment and the new variant's segments. Played from one variant it is a plain
//! fragmented MP4. With switches it holds several `moov` boxes: MSE takes each as a new
//! configuration, but ffmpeg (and ffprobe) keep the first and skip the others ("Found
//! duplicated MOOV Atom. Skipped it"), measured with Debian's ffmpeg 5.1: the duration reads right,
//! the stream's resolution is the first variant's, and frames after a switch to another
//! resolution do not decode in ffmpeg. Pin a variant (`--variant N`) for a file every tool
//! plays.

use std::time::Instant;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use fillmesh_net::rate::TokenBucket;
use fillmesh_protocol::Manifest;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tracing::{debug, info};

use crate::abr::{Abr, Reason};
use crate::hls::{self, ByteRange, Playlist};
use crate::sink::Sink;
use crate::targets::{Piece, Targets};
use crate::PlaySummary;

/// The largest init segment or media segment read: a segment is held in memory whole, and
/// 4 s of 4K video at 40 Mb/s is 20 MB.
pub const MAX_SEGMENT_BYTES: u64 = 256 << 20;

/// Names preferred for the multivariant playlist, in order, among the top-level ones.
const MASTER_NAMES: [&str; 4] = ["master", "index", "main", "playlist"];

/// The multivariant playlist of a package with files `paths`: a `.m3u8` as near the top as
/// any (fewest `/`), named `master`, `index`, `main` or `playlist` if one of those is there
/// (in that order), else the first in path order. `None` when there is no `.m3u8`.
pub fn master_playlist<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let playlists: Vec<&str> =
        paths.into_iter().filter(|p| p.to_ascii_lowercase().ends_with(".m3u8")).collect();
    let top = playlists.iter().map(|p| p.matches('/').count()).min()?;
    let mut top_level: Vec<&str> = playlists.into_iter().filter(|p| p.matches('/').count() == top).collect();
    top_level.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let stem = |p: &str| {
        let name = p.rsplit('/').next().unwrap_or(p);
        name[..name.len() - ".m3u8".len()].to_ascii_lowercase()
    };
    MASTER_NAMES
        .iter()
        .find_map(|want| top_level.iter().find(|p| stem(p) == *want))
        .or(top_level.first())
        .copied()
}

/// What the play of a package did.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderSummary {
    /// The playlist played from (the multivariant playlist, or a media playlist played as the
    /// only variant), its path in the package.
    pub playlist: String,
    /// The variants of the ladder, lowest bandwidth first (the order `--variant` counts in),
    /// with what was played of each.
    pub variants: Vec<VariantReport>,
    /// Each change of variant, in order.
    pub switches: Vec<Switch>,
    /// Segments played, all variants together.
    pub segments: usize,
    /// Media time played: the played segments' durations added up, in seconds.
    pub duration: f64,
}

impl LadderSummary {
    /// The variants at least one segment was played from.
    pub fn played(&self) -> impl Iterator<Item = &VariantReport> {
        self.variants.iter().filter(|v| v.segments > 0)
    }
}

/// One variant of the ladder, and what was played of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantReport {
    /// Its place in the ladder, lowest bandwidth first (what `--variant` takes).
    pub index: usize,
    /// Its media playlist's path in the package.
    pub playlist: String,
    /// `BANDWIDTH`, bits per second (0 for a media playlist played alone).
    pub bandwidth: u64,
    /// `RESOLUTION`, if the playlist gives it.
    pub resolution: Option<(u32, u32)>,
    /// Segments played from it.
    pub segments: usize,
    /// Bytes of it written in order: its init segments and segments.
    pub bytes: u64,
}

/// A change of variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Switch {
    /// The place in the play (from 0) of the first segment of the new variant.
    pub at_segment: usize,
    /// The media time it starts at, in seconds.
    pub at_time: f64,
    /// The variant played before (index in [`LadderSummary::variants`]).
    pub from: usize,
    /// The variant played from then on.
    pub to: usize,
    /// Why: up (the throughput allows more) or down (it fell below the current variant's).
    pub reason: Reason,
    /// The smoothed throughput it was decided on, in bits per second.
    pub throughput: f64,
}

/// A file of the package, or bytes of it: its index in the manifest's files and the range.
#[derive(Debug, Clone, Copy)]
struct Part {
    file: usize,
    range: Option<ByteRange>,
}

/// A variant's media playlist, read and resolved to the package's files.
struct Loaded {
    maps: Vec<Part>,
    /// Each segment: where, its media start time and duration, and its init section.
    segments: Vec<(Part, f64, f64, Option<usize>)>,
}

impl Loaded {
    /// The segment that plays at media time `t`: the first that ends after it (a millisecond
    /// of slack for durations rounded in the playlists); `len` when `t` is past the end.
    fn segment_at(&self, t: f64) -> usize {
        self.segments.partition_point(|(_, start, duration, _)| start + duration <= t + 0.001)
    }
}

/// The state of one ladder play.
struct Ladder<'t, 'a> {
    targets: &'t Targets<'a>,
    manifest: &'t Manifest,
    bucket: Option<&'t TokenBucket>,
    /// The variants' media playlist paths, lowest bandwidth first.
    paths: Vec<String>,
    loaded: Vec<Option<Loaded>>,
}

/// Plays the package `manifest` describes (see the module), writing to `out`.
pub(crate) async fn play(
    targets: &Targets<'_>,
    manifest: &Manifest,
    bucket: Option<&TokenBucket>,
    out: &mut Option<Sink>,
    summary: &mut PlaySummary,
    started: Instant,
) -> anyhow::Result<()> {
    let files = manifest.files().context("not a package")?;
    let opts = targets.opts;
    let top = match &opts.playlist {
        Some(p) => {
            manifest.file(p).with_context(|| format!("--playlist {p:?} is not a file of the package"))?;
            p.clone()
        }
        None => master_playlist(files.iter().map(|f| f.path.as_str()))
            .context("the package has no .m3u8 playlist to play (only HLS ladders are played)")?
            .to_owned(),
    };
    let mut ladder = Ladder { targets, manifest, bucket, paths: Vec::new(), loaded: Vec::new() };
    let text = ladder.playlist_text(&top, summary).await?;
    let parsed = hls::parse(&text).with_context(|| format!("playlist {top}"))?;
    let mut variants: Vec<VariantReport> = Vec::new();
    match parsed {
        Playlist::Master(list) => {
            let mut list: Vec<_> = list.into_iter().collect();
            // Lowest first; the playlist's order among equals.
            list.sort_by_key(|v| v.bandwidth);
            for (index, v) in list.into_iter().enumerate() {
                let path = hls::resolve(&top, &v.uri).with_context(|| format!("playlist {top}"))?;
                manifest
                    .file(&path)
                    .with_context(|| format!("playlist {top} names {path}, not in the package"))?;
                variants.push(VariantReport {
                    index,
                    playlist: path.clone(),
                    bandwidth: v.bandwidth,
                    resolution: v.resolution,
                    segments: 0,
                    bytes: 0,
                });
                ladder.paths.push(path);
                ladder.loaded.push(None);
            }
        }
        Playlist::Media(media) => {
            variants.push(VariantReport {
                index: 0,
                playlist: top.clone(),
                bandwidth: 0,
                resolution: None,
                segments: 0,
                bytes: 0,
            });
            ladder.loaded.push(Some(ladder.resolve(&top, media)?));
            ladder.paths.push(top.clone());
        }
    }
    if let Some(n) = opts.variant {
        anyhow::ensure!(
            n < variants.len(),
            "--variant {n}: the ladder has {} variant(s), 0 to {}",
            variants.len(),
            variants.len() - 1
        );
    }
    info!(playlist = %top, variants = variants.len(), "ladder");
    let mut abr = Abr::new(variants.iter().map(|v| v.bandwidth).collect(), opts.variant);
    let mut report =
        LadderSummary { playlist: top, variants, switches: Vec::new(), segments: 0, duration: 0.0 };
    let result = ladder.run(&mut abr, out, summary, &mut report, started).await;
    summary.ladder = Some(report);
    result
}

impl Ladder<'_, '_> {
    /// A playlist's bytes, verified, within the playlist bound.
    async fn playlist_text(&self, path: &str, summary: &mut PlaySummary) -> anyhow::Result<Bytes> {
        let (k, file) = self.manifest.file(path).with_context(|| format!("{path} is not in the package"))?;
        anyhow::ensure!(
            file.len <= hls::MAX_PLAYLIST_BYTES,
            "playlist {path} is {} bytes, more than the limit of {}",
            file.len,
            hls::MAX_PLAYLIST_BYTES
        );
        self.read(Part { file: k, range: None }, summary).await.with_context(|| format!("reading {path}"))
    }

    /// Resolves a media playlist read from `path` to the package's files.
    fn resolve(&self, path: &str, media: hls::Media) -> anyhow::Result<Loaded> {
        let part = |r: &hls::Resource| -> anyhow::Result<Part> {
            let target = hls::resolve(path, &r.uri).with_context(|| format!("playlist {path}"))?;
            let (file, f) = self
                .manifest
                .file(&target)
                .with_context(|| format!("playlist {path} names {target}, not in the package"))?;
            if let Some(range) = r.range {
                anyhow::ensure!(
                    range.start + range.len <= f.len,
                    "playlist {path}: bytes {}..{} of {target}, which has {}",
                    range.start,
                    range.start + range.len,
                    f.len
                );
            }
            Ok(Part { file, range: r.range })
        };
        let maps = media.maps.iter().map(part).collect::<anyhow::Result<Vec<_>>>()?;
        let mut t = 0.0;
        let mut segments = Vec::with_capacity(media.segments.len());
        for s in &media.segments {
            segments.push((part(&s.resource)?, t, s.duration, s.map));
            t += s.duration;
        }
        if !media.ended {
            debug!(playlist = %path, "no #EXT-X-ENDLIST: played as it stands (a title does not change)");
        }
        Ok(Loaded { maps, segments })
    }

    /// Variant `v`'s media playlist, read on first use.
    async fn load(&mut self, v: usize, summary: &mut PlaySummary) -> anyhow::Result<&Loaded> {
        if self.loaded[v].is_none() {
            let path = self.paths[v].clone();
            let text = self.playlist_text(&path, summary).await?;
            let media = match hls::parse(&text).with_context(|| format!("playlist {path}"))? {
                Playlist::Media(m) => m,
                Playlist::Master(_) => {
                    anyhow::bail!("playlist {path}: a variant's playlist is itself multivariant")
                }
            };
            self.loaded[v] = Some(self.resolve(&path, media)?);
        }
        self.loaded[v].as_ref().context("loaded above")
    }

    /// Plays segments in order until the current variant has none left.
    async fn run(
        &mut self,
        abr: &mut Abr,
        out: &mut Option<Sink>,
        summary: &mut PlaySummary,
        report: &mut LadderSummary,
        started: Instant,
    ) -> anyhow::Result<()> {
        let mut next = 0usize;
        // The init section last written: (variant, map).
        let mut init: Option<(usize, usize)> = None;
        let mut time = 0.0f64;
        loop {
            let v = abr.current();
            let loaded = self.load(v, summary).await?;
            let Some(&(part, start, duration, map)) = loaded.segments.get(next) else { break };
            let map_part = map.and_then(|m| loaded.maps.get(m).copied());
            if let (Some(m), Some(map_part)) = (map, map_part) {
                if init != Some((v, m)) {
                    let bytes = self.read(part_checked(map_part, self.manifest)?, summary).await?;
                    write(out, &bytes, summary, started).await?;
                    report.variants[v].bytes += bytes.len() as u64;
                    init = Some((v, m));
                }
            }
            let began = Instant::now();
            let bytes = self.read(part_checked(part, self.manifest)?, summary).await?;
            let took = began.elapsed();
            write(out, &bytes, summary, started).await?;
            let played = &mut report.variants[v];
            played.segments += 1;
            played.bytes += bytes.len() as u64;
            report.segments += 1;
            report.duration += duration;
            time = time.max(start + duration);
            debug!(
                variant = v,
                segment = next,
                bytes = bytes.len(),
                ms = took.as_secs_f64() * 1e3,
                "segment"
            );
            match abr.sample(bytes.len() as u64, took) {
                None => next += 1,
                Some(d) => {
                    let switch = Switch {
                        at_segment: report.segments,
                        at_time: time,
                        from: d.from,
                        to: d.to,
                        reason: d.reason,
                        throughput: d.estimate,
                    };
                    info!(?switch, "switching variant");
                    report.switches.push(switch);
                    next = self.load(d.to, summary).await?.segment_at(time);
                }
            }
        }
        Ok(())
    }

    /// The bytes of `part`, fetched in chunks (a window of them in flight), each verified.
    async fn read(&self, part: Part, summary: &mut PlaySummary) -> anyhow::Result<Bytes> {
        let files = self.manifest.files().context("not a package")?;
        let file = files.get(part.file).context("no such file")?;
        let range = part.range.unwrap_or(ByteRange { start: 0, len: file.len });
        let end = range.start.checked_add(range.len).filter(|e| *e <= file.len).with_context(|| {
            format!(
                "bytes {}+{} are past the end of {} ({} bytes)",
                range.start, range.len, file.path, file.len
            )
        })?;
        if range.len == 0 {
            return Ok(Bytes::new());
        }
        let cs = self.manifest.chunk_size().bytes();
        let (first, last) = (range.start / cs, (end - 1) / cs);
        let count = usize::try_from(last - first + 1)?;
        let mut chunks: Vec<Option<Bytes>> = vec![None; count];
        let mut in_flight = FuturesUnordered::new();
        let mut next = 0usize;
        let window = self.targets.opts.window.max(1);
        let mut done = 0usize;
        while done < count {
            while in_flight.len() < window && next < count {
                let j = u32::try_from(first + next as u64)?;
                let piece = Piece::of_file(self.targets.title(), self.manifest, part.file, j)?;
                if let Some(b) = self.bucket {
                    b.take(piece.len).await;
                }
                let slot = next;
                next += 1;
                in_flight.push(async move { (slot, self.targets.piece(self.manifest, &piece).await) });
            }
            let Some((slot, result)) = in_flight.next().await else { anyhow::bail!("nothing in flight") };
            let (k, bytes) = result?;
            summary.account(&self.targets.list[k], bytes.len() as u64);
            chunks[slot] = Some(bytes);
            done += 1;
        }
        // One chunk whole (a segment within a chunk, the usual case): no copy.
        let skip = usize::try_from(range.start - first * cs)?;
        let len = usize::try_from(range.len)?;
        if let [Some(only)] = chunks.as_slice() {
            return Ok(only.slice(skip..skip + len));
        }
        let mut joined = BytesMut::with_capacity(count * cs as usize);
        for c in chunks {
            joined.extend_from_slice(&c.context("every chunk arrived")?);
        }
        Ok(joined.freeze().slice(skip..skip + len))
    }
}

/// `part`, checked against the segment size bound before anything is fetched.
fn part_checked(part: Part, manifest: &Manifest) -> anyhow::Result<Part> {
    let file = manifest.files().and_then(|f| f.get(part.file)).context("no such file")?;
    let len = part.range.map_or(file.len, |r| r.len);
    anyhow::ensure!(
        len <= MAX_SEGMENT_BYTES,
        "{}: a segment of {len} bytes, more than the limit of {MAX_SEGMENT_BYTES}",
        file.path
    );
    Ok(part)
}

/// Writes played bytes in order, counting them.
async fn write(
    out: &mut Option<Sink>,
    bytes: &[u8],
    summary: &mut PlaySummary,
    started: Instant,
) -> anyhow::Result<()> {
    if let Some(sink) = out.as_mut() {
        sink.write(bytes).await?;
    }
    if summary.bytes == 0 && !bytes.is_empty() {
        summary.time_to_first_byte = started.elapsed();
    }
    summary.bytes += bytes.len() as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_master_playlist_is_the_top_level_one_by_its_usual_name() {
        let ffmpeg = ["master.m3u8", "v0/index.m3u8", "v0/init_0.mp4", "v0/seg0.m4s", "v1/index.m3u8"];
        assert_eq!(master_playlist(ffmpeg), Some("master.m3u8"));
        // Fewest `/` first, then the usual names in order, then path order.
        assert_eq!(master_playlist(["a/b/master.m3u8", "x/other.m3u8"]), Some("x/other.m3u8"));
        assert_eq!(master_playlist(["main.m3u8", "index.m3u8", "zz.m3u8"]), Some("index.m3u8"));
        assert_eq!(master_playlist(["b.m3u8", "a.m3u8"]), Some("a.m3u8"));
        assert_eq!(master_playlist(["Playlist.M3U8", "a.m3u8"]), Some("Playlist.M3U8"));
        assert_eq!(master_playlist(["movie.mp4", "notes.txt"]), None);
        assert_eq!(master_playlist(Vec::<&str>::new()), None);
    }

    #[test]
    fn a_switch_lands_on_the_segment_playing_at_the_time_reached() {
        let seg = |start: f64, d: f64| (Part { file: 0, range: None }, start, d, None);
        let loaded = Loaded { maps: Vec::new(), segments: vec![seg(0.0, 4.0), seg(4.0, 4.0), seg(8.0, 3.5)] };
        assert_eq!(loaded.segment_at(0.0), 0);
        assert_eq!(loaded.segment_at(4.0), 1);
        assert_eq!(loaded.segment_at(3.9999), 1, "rounding in a playlist does not replay a segment");
        assert_eq!(loaded.segment_at(5.0), 1);
        assert_eq!(loaded.segment_at(8.0), 2);
        assert_eq!(loaded.segment_at(11.5), 3, "past the end");
    }
}
