//! Packages: a title made of many files (an HLS or DASH ladder: playlists, init segments,
//! segments, audio, subtitles), named by the BLAKE3 of its **listing**.
//!
//! The listing is exactly what `b3sum` prints for the package's files: one line per file,
//! `<64 hex>  <path>\n`, the path relative to the package's directory with `/` separators,
//! lines sorted by the path's bytes. So anyone can recompute a package id with standard tools
//! (`find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' b3sum | b3sum`) and check a
//! copy with `b3sum --check`. Each file is chunked and verified as a one-file title is; its id
//! is its own `b3sum`.
//!
//! What a path may be is checked here, once, for the seeder, the origin, the manifest that
//! arrives from a peer and the request a player makes: relative, `/`-separated, no empty, `.`
//! or `..` component, no backslash, newline or other control character (`b3sum` escapes the
//! first two, so such a line would not be what it prints), at most [`MAX_PATH`] bytes.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::title::TitleId;

/// Files a package may hold.
pub const MAX_FILES: usize = 100_000;

/// Bytes a path inside a package may take.
pub const MAX_PATH: usize = 1024;

/// Bytes a listing may take: 32 MiB, 100,000 files with paths of 250 bytes. Why a bound of its
/// own: the file and path bounds alone allow 100,000 paths of 1,024 bytes (107 MB), which a
/// node would have to take from a peer before it could check anything.
pub const MAX_LISTING_BYTES: usize = 32 << 20;

/// Why a path cannot name a file in a package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("an empty path")]
    Empty,
    /// The path is longer than [`MAX_PATH`] bytes.
    #[error("a path of {0} bytes, more than the limit of {MAX_PATH}")]
    TooLong(usize),
    /// The path starts with `/`.
    #[error("an absolute path")]
    Absolute,
    /// A component is `..`.
    #[error("a `..` component")]
    Parent,
    /// A component is empty (`a//b`, a trailing `/`) or `.`.
    #[error("an empty or `.` component")]
    EmptyComponent,
    /// A backslash: `b3sum` escapes it, so the listing would not be what it prints.
    #[error("a backslash in the name")]
    Backslash,
    /// A newline or another control character.
    #[error("a newline or control character in the name")]
    Control,
}

/// Checks that `path` may name a file inside a package (see the module).
pub fn check_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong(path.len()));
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::Control);
    }
    for part in path.split('/') {
        match part {
            ".." => return Err(PathError::Parent),
            "" | "." => return Err(PathError::EmptyComponent),
            _ => {}
        }
    }
    Ok(())
}

/// One file of a package: where it sits, its id (its `b3sum`) and its length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageFile {
    /// The path relative to the package, `/`-separated (see [`check_path`]).
    #[serde(deserialize_with = "crate::bounded::string::<_, MAX_PATH>")]
    pub path: String,
    /// The BLAKE3 of the file's bytes.
    pub id: TitleId,
    /// The file's length in bytes.
    pub len: u64,
}

/// Why a listing (or a package's file list) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    /// A package has at least one file.
    #[error("a package has no files")]
    Empty,
    /// More than [`MAX_FILES`] files.
    #[error("{0} files, more than the limit of {MAX_FILES}")]
    TooManyFiles(usize),
    /// The listing would take more than [`MAX_LISTING_BYTES`].
    #[error("a listing of {0} bytes, more than the limit of {MAX_LISTING_BYTES}")]
    TooLong(usize),
    /// A path is not allowed; carries it (escaped) and why.
    #[error("path {path:?}: {why}")]
    Path {
        /// The path, as given.
        path: String,
        /// Why it is refused.
        why: PathError,
    },
    /// Paths are not in strictly increasing byte order (a duplicate, or out of order).
    #[error("path {0:?} is out of order or repeated: a listing is sorted by path bytes, each path once")]
    Order(String),
    /// A line is not `<64 hex>  <path>`; carries its number from 1.
    #[error("line {0} is not `<64 hex digits>  <path>`")]
    Line(usize),
    /// The text does not end with a newline.
    #[error("the listing does not end with a newline")]
    NoFinalNewline,
    /// The listing's BLAKE3 is not the package id asked for.
    #[error("the listing hashes to {computed}, not to the package id {expected}")]
    Mismatch {
        /// The id asked for.
        expected: TitleId,
        /// What the listing hashes to.
        computed: TitleId,
    },
}

/// Checks a package's file list: at least one and at most [`MAX_FILES`] files, every path
/// allowed, sorted by bytes with no repeat, the listing within [`MAX_LISTING_BYTES`].
pub fn check_files<'a>(paths: impl ExactSizeIterator<Item = &'a str>) -> Result<(), ListingError> {
    let count = paths.len();
    if count == 0 {
        return Err(ListingError::Empty);
    }
    if count > MAX_FILES {
        return Err(ListingError::TooManyFiles(count));
    }
    let mut bytes = 0usize;
    let mut last: Option<&str> = None;
    for path in paths {
        check_path(path).map_err(|why| ListingError::Path { path: path.to_owned(), why })?;
        if last.is_some_and(|l| l.as_bytes() >= path.as_bytes()) {
            return Err(ListingError::Order(path.to_owned()));
        }
        last = Some(path);
        bytes += LINE_OVERHEAD + path.len();
        if bytes > MAX_LISTING_BYTES {
            return Err(ListingError::TooLong(bytes));
        }
    }
    Ok(())
}

/// 64 hex digits, two spaces, a newline.
const LINE_OVERHEAD: usize = 67;

/// The listing of `files` (already checked, in order): what `b3sum` prints for them.
pub fn listing<'a>(files: impl IntoIterator<Item = (&'a TitleId, &'a str)>) -> String {
    let mut out = String::new();
    for (id, path) in files {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{id}  {path}");
    }
    out
}

/// The package id of a listing: its BLAKE3.
pub fn package_id(listing: &str) -> TitleId {
    TitleId::of(listing.as_bytes())
}

/// Parses a listing (what `b3sum` printed) into (id, path) pairs, checking every rule of
/// [`check_files`]. With `expected`, the listing must also hash to it.
pub fn parse_listing(text: &str, expected: Option<&TitleId>) -> Result<Vec<(TitleId, String)>, ListingError> {
    if text.len() > MAX_LISTING_BYTES {
        return Err(ListingError::TooLong(text.len()));
    }
    if let Some(expected) = expected {
        let computed = package_id(text);
        if computed != *expected {
            return Err(ListingError::Mismatch { expected: *expected, computed });
        }
    }
    if text.is_empty() {
        return Err(ListingError::Empty);
    }
    let Some(body) = text.strip_suffix('\n') else {
        return Err(ListingError::NoFinalNewline);
    };
    let mut out = Vec::new();
    for (n, line) in body.split('\n').enumerate() {
        if out.len() == MAX_FILES {
            return Err(ListingError::TooManyFiles(MAX_FILES + 1));
        }
        let (hex, path) = line
            .split_at_checked(64)
            .and_then(|(hex, rest)| Some((hex, rest.strip_prefix("  ")?)))
            .ok_or(ListingError::Line(n + 1))?;
        let id: TitleId = hex.parse().map_err(|_| ListingError::Line(n + 1))?;
        out.push((id, path.to_owned()));
    }
    check_files(out.iter().map(|(_, p)| p.as_str()))?;
    Ok(out)
}

/// The `Content-Type` a file of a package is served with, by its extension.
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "m3u8" | "m3u" => "application/vnd.apple.mpegurl",
        "mpd" => "application/dash+xml",
        "m4s" | "cmfv" | "cmfa" => "video/iso.segment",
        "mp4" | "m4v" | "cmf" => "video/mp4",
        "m4a" => "audio/mp4",
        "ts" => "video/mp2t",
        "aac" => "audio/aac",
        "mp3" => "audio/mpeg",
        "webm" => "video/webm",
        "vtt" => "text/vtt",
        "ttml" | "dfxp" => "application/ttml+xml",
        "json" => "application/json",
        "xml" => "application/xml",
        "txt" => "text/plain; charset=utf-8",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

/// What a file is to a player starting playback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    /// A playlist or manifest: read before anything else.
    Playlist,
    /// An initialisation segment.
    Init,
    /// A media segment.
    Media,
    /// Anything else (a poster, notes): no part of starting playback.
    Other,
}

fn role(path: &str) -> Role {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    if matches!(ext, "m3u8" | "m3u" | "mpd") {
        Role::Playlist
    } else if name.contains("init") {
        Role::Init
    } else if matches!(
        ext,
        "m4s" | "mp4" | "m4v" | "m4a" | "ts" | "aac" | "mp3" | "vtt" | "webm" | "cmfv" | "cmfa" | "cmft"
    ) {
        Role::Media
    } else {
        Role::Other
    }
}

/// A media file's rendition and place in it: its path with the last number in its name
/// replaced by `%` (`v2/seg_%.m4s`, `stream_2_%.m4s`), and that number (`17`).
fn rendition_key(path: &str) -> (String, u64) {
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    // The number is in the stem: `m4s` and `mp4` carry digits of their own.
    let stem_end = path[name_start..].rfind('.').map_or(path.len(), |i| name_start + i);
    let bytes = path.as_bytes();
    let Some(end) =
        bytes[name_start..stem_end].iter().rposition(u8::is_ascii_digit).map(|i| name_start + i + 1)
    else {
        return (path.to_owned(), 0);
    };
    let start = bytes[name_start..end]
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(name_start, |i| name_start + i + 1);
    let number = path[start..end].parse::<u64>().unwrap_or(u64::MAX);
    (format!("{}%{}", &path[..start], &path[end..]), number)
}

/// Media segments per rendition that count as the start of playback: two 4 s segments are
/// what players buffer before they start (hls.js starts after the first; Safari wants about
/// two).
const START_SEGMENTS: usize = 2;

/// The files a player needs to start, in the order it needs them: every playlist and manifest,
/// then every init segment, then the first two media segments of each rendition,
/// renditions in increasing total size (a proxy for bitrate: lowest first, where players
/// start). Indices into `files`, which is a package's file list (each path with its length).
pub fn startup_files<'a>(files: impl IntoIterator<Item = (&'a str, u64)>) -> Vec<usize> {
    let mut playlists = Vec::new();
    let mut inits = Vec::new();
    // rendition key -> (total bytes, (number, index) of its segments)
    let mut renditions: std::collections::BTreeMap<String, (u64, Vec<(u64, usize)>)> =
        std::collections::BTreeMap::new();
    for (i, (path, len)) in files.into_iter().enumerate() {
        match role(path) {
            Role::Playlist => playlists.push(i),
            Role::Init => inits.push(i),
            Role::Media => {
                let (key, n) = rendition_key(path);
                let r = renditions.entry(key).or_default();
                r.0 = r.0.saturating_add(len);
                r.1.push((n, i));
            }
            Role::Other => {}
        }
    }
    let mut renditions: Vec<(u64, Vec<(u64, usize)>)> = renditions.into_values().collect();
    renditions.sort_by_key(|(bytes, _)| *bytes);
    let mut out = playlists;
    out.extend(inits);
    for (_, mut segments) in renditions {
        segments.sort_unstable();
        out.extend(segments.iter().take(START_SEGMENTS).map(|&(_, i)| i));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_refused_for_each_reason() {
        assert_eq!(check_path(""), Err(PathError::Empty));
        assert_eq!(check_path("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(check_path("a/../b"), Err(PathError::Parent));
        assert_eq!(check_path(".."), Err(PathError::Parent));
        assert_eq!(check_path("a//b"), Err(PathError::EmptyComponent));
        assert_eq!(check_path("a/"), Err(PathError::EmptyComponent));
        assert_eq!(check_path("./a"), Err(PathError::EmptyComponent));
        assert_eq!(check_path("a\\b"), Err(PathError::Backslash));
        assert_eq!(check_path("a\nb"), Err(PathError::Control));
        assert_eq!(check_path(&"x".repeat(MAX_PATH + 1)), Err(PathError::TooLong(MAX_PATH + 1)));
        assert_eq!(check_path(&"x".repeat(MAX_PATH)), Ok(()));
        assert_eq!(check_path("v0/seg_001.m4s"), Ok(()));
        assert_eq!(check_path("a..b/..c"), Ok(()));
    }

    #[test]
    fn a_listing_is_what_b3sum_prints_and_parses_back() {
        let a = TitleId::of(b"a");
        let b = TitleId::of(b"b");
        let text = listing([(&a, "index.m3u8"), (&b, "v0/seg 1.m4s")]);
        assert_eq!(text, format!("{a}  index.m3u8\n{b}  v0/seg 1.m4s\n"));
        let parsed = parse_listing(&text, Some(&package_id(&text))).unwrap();
        assert_eq!(parsed, vec![(a, "index.m3u8".to_owned()), (b, "v0/seg 1.m4s".to_owned())]);
    }

    #[test]
    fn bad_listings_are_refused() {
        let a = TitleId::of(b"a");
        let other = TitleId::of(b"other");
        let good = listing([(&a, "x")]);
        assert!(matches!(parse_listing(&good, Some(&other)), Err(ListingError::Mismatch { .. })));
        assert_eq!(parse_listing("", None), Err(ListingError::Empty));
        assert_eq!(parse_listing(good.trim_end(), None), Err(ListingError::NoFinalNewline));
        assert_eq!(parse_listing(&format!("{a} x\n"), None), Err(ListingError::Line(1)));
        assert_eq!(
            parse_listing(&listing([(&a, "b"), (&a, "a")]), None),
            Err(ListingError::Order("a".into()))
        );
        assert_eq!(
            parse_listing(&listing([(&a, "a"), (&a, "a")]), None),
            Err(ListingError::Order("a".into()))
        );
        assert!(matches!(parse_listing(&listing([(&a, "../x")]), None), Err(ListingError::Path { .. })));
    }

    #[test]
    fn startup_puts_playlists_inits_then_first_segments_lowest_rendition_first() {
        let files = [
            ("master.m3u8", 500),
            ("v0/init.mp4", 800),
            ("v0/seg_000.m4s", 100),
            ("v0/seg_001.m4s", 100),
            ("v0/seg_002.m4s", 100),
            ("v0/stream.m3u8", 300),
            ("v1/init.mp4", 800),
            ("v1/seg_000.m4s", 10),
            ("v1/seg_001.m4s", 10),
            ("v1/seg_002.m4s", 10),
            ("v1/stream.m3u8", 300),
            ("a-poster.jpg", 90_000),
        ];
        let order = startup_files(files.iter().map(|&(p, l)| (p, l)));
        let names: Vec<&str> = order.iter().map(|&i| files[i].0).collect();
        assert_eq!(
            names,
            [
                "master.m3u8",
                "v0/stream.m3u8",
                "v1/stream.m3u8",
                "v0/init.mp4",
                "v1/init.mp4",
                "v1/seg_000.m4s",
                "v1/seg_001.m4s",
                "v0/seg_000.m4s",
                "v0/seg_001.m4s",
            ]
        );
    }

    #[test]
    fn renditions_are_told_apart_by_all_but_the_last_number() {
        assert_eq!(rendition_key("v0/seg_017.m4s"), ("v0/seg_%.m4s".to_owned(), 17));
        assert_eq!(rendition_key("stream_2_005.m4s"), ("stream_2_%.m4s".to_owned(), 5));
        assert_eq!(rendition_key("v1/data.m4s"), ("v1/data.m4s".to_owned(), 0));
        assert_eq!(rendition_key("seg9"), ("seg%".to_owned(), 9));
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("a/master.m3u8"), "application/vnd.apple.mpegurl");
        assert_eq!(content_type("x.MPD"), "application/dash+xml");
        assert_eq!(content_type("v/seg.m4s"), "video/iso.segment");
        assert_eq!(content_type("s.ts"), "video/mp2t");
        assert_eq!(content_type("sub.vtt"), "text/vtt");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
