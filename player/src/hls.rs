//! HLS playlists (RFC 8216): the part a player of a package needs, read strictly and within
//! bounds.
//!
//! A **multivariant** (master) playlist names variants: `#EXT-X-STREAM-INF` with its
//! `BANDWIDTH` (required) and `RESOLUTION`, then the URI of the variant's media playlist on the
//! next line. A **media** playlist names segments: `#EXTINF:<duration>,` then the segment's URI,
//! with `#EXT-X-MAP:URI=...` (the initialisation section, for fragmented MP4) applying to the
//! segments after it, `#EXT-X-BYTERANGE` for a segment that is part of a file, and
//! `#EXT-X-ENDLIST` closing a finished title. Alternative renditions (`#EXT-X-MEDIA`), I-frame
//! playlists, session data and other tags a player may ignore are ignored; encrypted segments
//! (`#EXT-X-KEY` with a method other than `NONE`) are refused.
//!
//! Why not a crate: `m3u8-rs` 6.0.1, the Rust crate most used, reads damaged playlists as
//! other ones without an error (checked here: a variant whose `BANDWIDTH=x` is dropped and the
//! next variant's URI given to the one before it; `#EXTINF:abc,` read as a duration of 0; a
//! broken `#EXT-X-MAP` line skipped; a line of control characters taken as a segment URI). A
//! player that verifies every byte should not guess what a playlist meant, so this reader
//! refuses all of those with the line number.
//!
//! Bounds, checked before the work they bound: [`MAX_PLAYLIST_BYTES`] per playlist,
//! [`MAX_LINE`] bytes per line, [`MAX_VARIANTS`] variants, [`MAX_SEGMENTS`] segments (and as
//! many `#EXT-X-MAP`s), segment durations up to [`MAX_SEGMENT_SECS`].
//!
//! URIs in a playlist are resolved against the playlist's own path inside the package by
//! [`resolve`]: relative references only; one that climbs out of the package, is absolute
//! (`https://...`, `//host/...`, `/path`) or does not name a valid package path is refused.

use fillmesh_protocol::package::{check_path, PathError};

/// The largest playlist read: 8 MiB, a media playlist of 100,000 segments at about 80 bytes a
/// segment (`#EXTINF:4.000000,` and a path of 60 bytes).
pub const MAX_PLAYLIST_BYTES: u64 = 8 << 20;

/// The longest line: a URI is at most a package path (1,024 bytes) before escaping; a variant's
/// attributes (codecs, groups) take a few hundred.
pub const MAX_LINE: usize = 4096;

/// Variants a multivariant playlist may name (real ladders have up to a dozen or two).
pub const MAX_VARIANTS: usize = 64;

/// Segments a media playlist may name (as many as a package may hold files; byte-range
/// segments of one file are bounded the same).
pub const MAX_SEGMENTS: usize = 100_000;

/// The longest segment duration believed: a day.
pub const MAX_SEGMENT_SECS: f64 = 86_400.0;

/// A playlist, as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Playlist {
    /// A multivariant playlist: its variants in playlist order.
    Master(Vec<Variant>),
    /// A media playlist.
    Media(Media),
}

/// One variant of a multivariant playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// The URI of its media playlist, as written (see [`resolve`]).
    pub uri: String,
    /// `BANDWIDTH`: its peak bit rate, in bits per second.
    pub bandwidth: u64,
    /// `RESOLUTION`: width and height in pixels, if given.
    pub resolution: Option<(u32, u32)>,
}

/// A media playlist: its segments in order and the initialisation sections they name.
#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    /// The `#EXT-X-MAP`s, in order.
    pub maps: Vec<Resource>,
    /// The segments, in order.
    pub segments: Vec<Segment>,
    /// `#EXT-X-ENDLIST`: no segment will be added.
    pub ended: bool,
}

impl Media {
    /// The playlist's duration: its segments' durations added up, in seconds.
    pub fn duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }
}

/// A file, or a range of one, named by a URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The URI, as written (see [`resolve`]).
    pub uri: String,
    /// The bytes of it, if not the whole file.
    pub range: Option<ByteRange>,
}

/// A byte range of a file: `len` bytes from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// The first byte's offset.
    pub start: u64,
    /// How many bytes (at least one).
    pub len: u64,
}

/// One media segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Where its bytes are.
    pub resource: Resource,
    /// `#EXTINF`: its duration, in seconds.
    pub duration: f64,
    /// The initialisation section it needs: an index into [`Media::maps`].
    pub map: Option<usize>,
}

/// Why a playlist cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlsError {
    /// More than [`MAX_PLAYLIST_BYTES`].
    #[error("a playlist of {0} bytes, more than the limit of {MAX_PLAYLIST_BYTES}")]
    TooLarge(u64),
    /// Not UTF-8 text.
    #[error("the playlist is not UTF-8 text")]
    NotUtf8,
    /// The first line is not `#EXTM3U`.
    #[error("the playlist does not start with #EXTM3U")]
    NoHeader,
    /// Neither a variant nor a segment.
    #[error("the playlist names no variant and no segment")]
    Empty,
    /// A line that cannot be read; its number counts from 1.
    #[error("line {line}: {why}")]
    Line {
        /// The line's number, from 1.
        line: usize,
        /// What is wrong with it.
        why: LineError,
    },
}

/// What is wrong with one line of a playlist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Longer than [`MAX_LINE`] bytes.
    #[error("{0} bytes, more than the limit of {MAX_LINE}")]
    TooLong(usize),
    /// A control character (other than the line's ending).
    #[error("a control character")]
    Control,
    /// A tag of a multivariant playlist in a media playlist, or the reverse.
    #[error("{0} does not belong in this kind of playlist (multivariant and media tags mixed)")]
    Mixed(String),
    /// An `#EXT-X-STREAM-INF` not followed by its URI.
    #[error("#EXT-X-STREAM-INF is not followed by a URI")]
    StreamInfWithoutUri,
    /// An `#EXTINF` not followed by its segment's URI.
    #[error("#EXTINF is not followed by a URI")]
    InfWithoutUri,
    /// A URI with no `#EXTINF` or `#EXT-X-STREAM-INF` before it.
    #[error("a URI with no #EXTINF or #EXT-X-STREAM-INF before it")]
    UriWithoutTag,
    /// An attribute list that does not parse.
    #[error("malformed attribute list: {0}")]
    Attributes(&'static str),
    /// A required attribute is missing.
    #[error("attribute {0} is missing")]
    Missing(&'static str),
    /// An attribute's value is not what it must be.
    #[error("attribute {0} has a bad value")]
    BadValue(&'static str),
    /// `#EXTINF`'s duration is not a decimal number of seconds up to [`MAX_SEGMENT_SECS`].
    #[error("a segment duration that is not a decimal number from 0 to {MAX_SEGMENT_SECS} s")]
    Duration,
    /// A byte range that is not `<length>[@<offset>]`, is empty or overflows.
    #[error("a byte range that is not <length>[@<offset>] (length at least 1)")]
    ByteRange,
    /// A byte range without an offset that does not follow a range of the same URI.
    #[error("a byte range without an offset, not following a range of the same URI")]
    ByteRangeOffset,
    /// Encrypted segments: not played.
    #[error("encrypted segments (#EXT-X-KEY METHOD={0}) are not supported")]
    Encrypted(String),
    /// More than [`MAX_VARIANTS`] variants.
    #[error("more than {MAX_VARIANTS} variants")]
    TooManyVariants,
    /// More than [`MAX_SEGMENTS`] segments or initialisation sections.
    #[error("more than {MAX_SEGMENTS} segments")]
    TooManySegments,
}

/// Which kind a playlist has shown itself to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Master,
    Media,
}

/// Reads a playlist (see the module).
pub fn parse(bytes: &[u8]) -> Result<Playlist, HlsError> {
    if bytes.len() as u64 > MAX_PLAYLIST_BYTES {
        return Err(HlsError::TooLarge(bytes.len() as u64));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| HlsError::NotUtf8)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).enumerate();
    match lines.next() {
        Some((_, "#EXTM3U")) => {}
        _ => return Err(HlsError::NoHeader),
    }
    let mut reader = Reader::default();
    for (n, line) in lines {
        reader.line_no = n + 1;
        reader.line(line).map_err(|why| HlsError::Line { line: n + 1, why })?;
    }
    reader.finish()
}

#[derive(Default)]
struct Reader {
    kind: Option<Kind>,
    /// An `#EXT-X-STREAM-INF` read, waiting for its URI: (line, bandwidth, resolution).
    pending_variant: Option<(u64, Option<(u32, u32)>)>,
    /// An `#EXTINF` read, waiting for its URI: the duration.
    pending_segment: Option<f64>,
    /// An `#EXT-X-BYTERANGE` read for the next segment: (length, offset).
    pending_range: Option<(u64, Option<u64>)>,
    /// The line of the pending tag, for the error at the end.
    pending_line: usize,
    /// The line being read, counted from 1.
    line_no: usize,
    variants: Vec<Variant>,
    maps: Vec<Resource>,
    segments: Vec<Segment>,
    ended: bool,
    /// The end of the last segment's byte range and its URI, for a range without an offset.
    last_range: Option<(String, u64)>,
}

impl Reader {
    fn kind(&mut self, kind: Kind, tag: &str) -> Result<(), LineError> {
        match self.kind {
            Some(k) if k != kind => Err(LineError::Mixed(tag.to_owned())),
            _ => {
                self.kind = Some(kind);
                Ok(())
            }
        }
    }

    fn line(&mut self, line: &str) -> Result<(), LineError> {
        if line.len() > MAX_LINE {
            return Err(LineError::TooLong(line.len()));
        }
        if line.chars().any(char::is_control) {
            return Err(LineError::Control);
        }
        if line.is_empty() {
            return Ok(());
        }
        if let Some(tag) = line.strip_prefix('#') {
            if !tag.starts_with("EXT") {
                return Ok(()); // a comment
            }
            return self.tag(line);
        }
        self.uri(line)
    }

    fn tag(&mut self, line: &str) -> Result<(), LineError> {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        if self.pending_variant.is_some() || self.pending_segment.is_some() {
            // Only a URI may follow these (an #EXT-X-BYTERANGE may sit between #EXTINF and it).
            let allowed = self.pending_segment.is_some() && name == "#EXT-X-BYTERANGE";
            if !allowed {
                return Err(if self.pending_variant.is_some() {
                    LineError::StreamInfWithoutUri
                } else {
                    LineError::InfWithoutUri
                });
            }
        }
        match name {
            "#EXT-X-STREAM-INF" => {
                self.kind(Kind::Master, name)?;
                let attrs = attributes(value)?;
                let bandwidth = get(&attrs, "BANDWIDTH")
                    .ok_or(LineError::Missing("BANDWIDTH"))
                    .and_then(|v| decimal(v.unquoted()?).ok_or(LineError::BadValue("BANDWIDTH")))?;
                let resolution = match get(&attrs, "RESOLUTION") {
                    None => None,
                    Some(v) => Some(resolution(v.unquoted()?).ok_or(LineError::BadValue("RESOLUTION"))?),
                };
                self.pending_variant = Some((bandwidth, resolution));
                self.pending_line = self.line_no;
            }
            // Alternative renditions, I-frame playlists, session data: not played.
            "#EXT-X-MEDIA" | "#EXT-X-I-FRAME-STREAM-INF" | "#EXT-X-SESSION-DATA" | "#EXT-X-SESSION-KEY" => {
                self.kind(Kind::Master, name)?;
            }
            "#EXTINF" => {
                self.kind(Kind::Media, name)?;
                let duration = value.split_once(',').map_or(value, |(d, _)| d);
                self.pending_segment = Some(seconds(duration).ok_or(LineError::Duration)?);
                self.pending_line = self.line_no;
            }
            "#EXT-X-BYTERANGE" => {
                self.kind(Kind::Media, name)?;
                self.pending_range = Some(byte_range(value).ok_or(LineError::ByteRange)?);
            }
            "#EXT-X-MAP" => {
                self.kind(Kind::Media, name)?;
                let attrs = attributes(value)?;
                let uri = get(&attrs, "URI").ok_or(LineError::Missing("URI"))?.quoted("URI")?;
                let range = match get(&attrs, "BYTERANGE") {
                    None => None,
                    Some(v) => {
                        let (len, start) = byte_range(v.quoted("BYTERANGE")?).ok_or(LineError::ByteRange)?;
                        Some(ByteRange { start: start.unwrap_or(0), len })
                    }
                };
                if self.maps.len() == MAX_SEGMENTS {
                    return Err(LineError::TooManySegments);
                }
                self.maps.push(Resource { uri: uri.to_owned(), range });
            }
            "#EXT-X-KEY" => {
                self.kind(Kind::Media, name)?;
                let attrs = attributes(value)?;
                let method = get(&attrs, "METHOD").ok_or(LineError::Missing("METHOD"))?.unquoted()?;
                if method != "NONE" {
                    return Err(LineError::Encrypted(method.to_owned()));
                }
            }
            "#EXT-X-ENDLIST" => {
                self.kind(Kind::Media, name)?;
                self.ended = true;
            }
            "#EXT-X-TARGETDURATION"
            | "#EXT-X-MEDIA-SEQUENCE"
            | "#EXT-X-DISCONTINUITY-SEQUENCE"
            | "#EXT-X-PLAYLIST-TYPE"
            | "#EXT-X-DISCONTINUITY"
            | "#EXT-X-PROGRAM-DATE-TIME"
            | "#EXT-X-I-FRAMES-ONLY" => {
                self.kind(Kind::Media, name)?;
            }
            // #EXT-X-VERSION, #EXT-X-INDEPENDENT-SEGMENTS, #EXT-X-START and tags unknown: ignored,
            // as the RFC asks of clients.
            _ => {}
        }
        Ok(())
    }

    fn uri(&mut self, uri: &str) -> Result<(), LineError> {
        if let Some((bandwidth, resolution)) = self.pending_variant.take() {
            if self.variants.len() == MAX_VARIANTS {
                return Err(LineError::TooManyVariants);
            }
            self.variants.push(Variant { uri: uri.to_owned(), bandwidth, resolution });
            return Ok(());
        }
        let Some(duration) = self.pending_segment.take() else {
            return Err(LineError::UriWithoutTag);
        };
        if self.segments.len() == MAX_SEGMENTS {
            return Err(LineError::TooManySegments);
        }
        let range = match self.pending_range.take() {
            None => None,
            Some((len, Some(start))) => Some(ByteRange { start, len }),
            Some((len, None)) => match &self.last_range {
                Some((last, end)) if last == uri => Some(ByteRange { start: *end, len }),
                _ => return Err(LineError::ByteRangeOffset),
            },
        };
        if let Some(r) = range {
            r.start.checked_add(r.len).ok_or(LineError::ByteRange)?;
        }
        self.last_range = range.map(|r| (uri.to_owned(), r.start + r.len));
        let map = self.maps.len().checked_sub(1);
        self.segments.push(Segment { resource: Resource { uri: uri.to_owned(), range }, duration, map });
        Ok(())
    }

    fn finish(self) -> Result<Playlist, HlsError> {
        if self.pending_variant.is_some() {
            return Err(HlsError::Line { line: self.pending_line, why: LineError::StreamInfWithoutUri });
        }
        if self.pending_segment.is_some() {
            return Err(HlsError::Line { line: self.pending_line, why: LineError::InfWithoutUri });
        }
        match self.kind {
            Some(Kind::Master) if !self.variants.is_empty() => Ok(Playlist::Master(self.variants)),
            Some(Kind::Media) if !self.segments.is_empty() => {
                Ok(Playlist::Media(Media { maps: self.maps, segments: self.segments, ended: self.ended }))
            }
            _ => Err(HlsError::Empty),
        }
    }
}

/// An attribute's value: a quoted string (without its quotes) or anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    Quoted(&'a str),
    Unquoted(&'a str),
}

impl<'a> Value<'a> {
    fn unquoted(self) -> Result<&'a str, LineError> {
        match self {
            Value::Unquoted(v) => Ok(v),
            Value::Quoted(_) => Err(LineError::Attributes("a quoted value where a bare one belongs")),
        }
    }

    fn quoted(self, name: &'static str) -> Result<&'a str, LineError> {
        match self {
            Value::Quoted(v) => Ok(v),
            Value::Unquoted(_) => Err(LineError::BadValue(name)),
        }
    }
}

/// An attribute list: `NAME=value,NAME="quoted, value",...` (RFC 8216 section 4.2).
fn attributes(mut s: &str) -> Result<Vec<(&str, Value<'_>)>, LineError> {
    let mut out: Vec<(&str, Value<'_>)> = Vec::new();
    while !s.is_empty() {
        let (name, rest) = s.split_once('=').ok_or(LineError::Attributes("a name without `=`"))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(LineError::Attributes("a name that is not A-Z, 0-9 and `-`"));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(LineError::Attributes("a name given twice"));
        }
        let (value, rest) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or(LineError::Attributes("an unclosed quote"))?;
            (Value::Quoted(&quoted[..end]), &quoted[end + 1..])
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            let value = &rest[..end];
            if value.is_empty() || value.contains('"') {
                return Err(LineError::Attributes("an empty or half-quoted value"));
            }
            (Value::Unquoted(value), &rest[end..])
        };
        out.push((name, value));
        s = match rest.strip_prefix(',') {
            Some(r) if !r.is_empty() => r,
            Some(_) => return Err(LineError::Attributes("a trailing comma")),
            None if rest.is_empty() => rest,
            None => return Err(LineError::Attributes("no comma after a value")),
        };
    }
    Ok(out)
}

fn get<'a>(attrs: &[(&str, Value<'a>)], name: &str) -> Option<Value<'a>> {
    attrs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// A decimal integer (RFC 8216's decimal-integer: digits only, fits 64 bits).
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `<width>x<height>`.
fn resolution(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once('x')?;
    Some((u32::try_from(decimal(w)?).ok()?, u32::try_from(decimal(h)?).ok()?))
}

/// A decimal-floating-point number of seconds, `digits[.digits]`, up to [`MAX_SEGMENT_SECS`].
fn seconds(s: &str) -> Option<f64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || int.len() > 20 || frac.len() > 20 || !digits(int) || !digits(frac) {
        return None;
    }
    if s.ends_with('.') {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && v <= MAX_SEGMENT_SECS).then_some(v)
}

/// `<length>[@<offset>]`, length at least 1.
fn byte_range(s: &str) -> Option<(u64, Option<u64>)> {
    let (len, offset) = match s.split_once('@') {
        Some((n, o)) => (decimal(n)?, Some(decimal(o)?)),
        None => (decimal(s)?, None),
    };
    if len == 0 {
        return None;
    }
    if let Some(o) = offset {
        o.checked_add(len)?;
    }
    Some((len, offset))
}

/// Why a URI in a playlist names no file of the package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// An absolute URI (`https://...`, `data:...`), a network-path reference (`//host/...`) or
    /// an absolute path (`/...`): a package's playlists name their files relatively.
    #[error(
        "{0:?} is not a relative reference: a package's playlists name their files relative to themselves"
    )]
    Absolute(String),
    /// `..` past the package's top.
    #[error("{0:?} leaves the package")]
    LeavesPackage(String),
    /// A `%` not followed by two hex digits, an escaped `/`, or bytes that are not UTF-8.
    #[error("{0:?} has a bad percent-escape")]
    Escape(String),
    /// What it resolves to cannot be a package path.
    #[error("{uri:?} resolves to {path:?}: {why}")]
    Path {
        /// The URI, as written.
        uri: String,
        /// What it resolved to.
        path: String,
        /// Why that is not a package path.
        why: PathError,
    },
}

/// The package path `uri` names, written in the playlist at package path `base`: resolved
/// against `base`'s directory (RFC 3986 section 5.2, for relative-path references), its query
/// and fragment dropped, percent-escapes decoded, `.` and `..` segments removed.
pub fn resolve(base: &str, uri: &str) -> Result<String, UriError> {
    // A scheme is what comes before the first `:` of a reference whose first segment has one
    // (a relative path with a `:` in its first segment must be written `./a:b`).
    let first_segment = uri.split(['/', '?', '#']).next().unwrap_or("");
    if first_segment.contains(':') || uri.starts_with('/') {
        return Err(UriError::Absolute(uri.to_owned()));
    }
    let path = uri.split(['?', '#']).next().unwrap_or("");
    let mut parts: Vec<String> = base.split('/').map(str::to_owned).collect();
    parts.pop(); // the playlist's own name
    let segments: Vec<&str> = path.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(UriError::LeavesPackage(uri.to_owned()));
                }
            }
            s => {
                let decoded = percent_decode(s).ok_or_else(|| UriError::Escape(uri.to_owned()))?;
                parts.push(decoded);
            }
        }
        // `a/.` and `a/..` name a directory, which is no file: keep an empty last segment so
        // that the path check refuses it.
        if last && matches!(*segment, "." | "..") {
            parts.push(String::new());
        }
    }
    let resolved = parts.join("/");
    check_path(&resolved).map_err(|why| UriError::Path {
        uri: uri.to_owned(),
        path: resolved.clone(),
        why,
    })?;
    Ok(resolved)
}

/// Decodes `%XX` escapes; `None` for a bad escape, an escaped `/` or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let b = u8::from_str_radix(hex, 16).ok()?;
            if b == b'/' || !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `path` as the path of a request: each byte outside RFC 3986's unreserved characters and
/// `/` percent-escaped, so a package path with spaces or `%` reaches the appliance intact.
pub fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:7\n\
        #EXT-X-STREAM-INF:BANDWIDTH=290400,RESOLUTION=320x180,CODECS=\"avc1.f4000c,mp4a.40.2\"\nv0/index.m3u8\n\n\
        #EXT-X-STREAM-INF:BANDWIDTH=620400,RESOLUTION=480x270,CODECS=\"avc1.f40015,mp4a.40.2\"\nv1/index.m3u8\n\n\
        #EXT-X-STREAM-INF:BANDWIDTH=1170400,RESOLUTION=640x360,CODECS=\"avc1.f4001e,mp4a.40.2\"\nv2/index.m3u8\n";

    const MEDIA: &str =
        "#EXTM3U\r\n#EXT-X-VERSION:7\r\n#EXT-X-TARGETDURATION:4\r\n#EXT-X-MEDIA-SEQUENCE:0\r\n\
        #EXT-X-PLAYLIST-TYPE:VOD\r\n#EXT-X-MAP:URI=\"init_0.mp4\"\r\n#EXTINF:4.000000,\r\nseg0.m4s\r\n\
        #EXTINF:4.000000,\r\nseg1.m4s\r\n# a comment\r\n#EXTINF:3.5,title\r\nseg2.m4s\r\n#EXT-X-ENDLIST\r\n";

    fn err(text: &str) -> HlsError {
        parse(text.as_bytes()).unwrap_err()
    }

    fn line_err(text: &str) -> (usize, LineError) {
        match err(text) {
            HlsError::Line { line, why } => (line, why),
            other => panic!("not a line error: {other}"),
        }
    }

    #[test]
    fn ffmpegs_multivariant_playlist_reads_as_written() {
        let Playlist::Master(variants) = parse(MASTER.as_bytes()).unwrap() else { panic!("not master") };
        assert_eq!(
            variants,
            vec![
                Variant { uri: "v0/index.m3u8".into(), bandwidth: 290_400, resolution: Some((320, 180)) },
                Variant { uri: "v1/index.m3u8".into(), bandwidth: 620_400, resolution: Some((480, 270)) },
                Variant { uri: "v2/index.m3u8".into(), bandwidth: 1_170_400, resolution: Some((640, 360)) },
            ]
        );
    }

    #[test]
    fn ffmpegs_media_playlist_reads_as_written() {
        let Playlist::Media(media) = parse(MEDIA.as_bytes()).unwrap() else { panic!("not media") };
        assert!(media.ended);
        assert_eq!(media.maps, vec![Resource { uri: "init_0.mp4".into(), range: None }]);
        let got: Vec<_> =
            media.segments.iter().map(|s| (s.resource.uri.as_str(), s.duration, s.map)).collect();
        assert_eq!(
            got,
            vec![("seg0.m4s", 4.0, Some(0)), ("seg1.m4s", 4.0, Some(0)), ("seg2.m4s", 3.5, Some(0))]
        );
        assert_eq!(media.duration(), 11.5);
    }

    #[test]
    fn byte_ranges_follow_on_within_one_file() {
        let text = "#EXTM3U\n#EXT-X-MAP:URI=\"all.mp4\",BYTERANGE=\"800@0\"\n\
            #EXTINF:2,\n#EXT-X-BYTERANGE:1000@800\nall.mp4\n\
            #EXTINF:2,\n#EXT-X-BYTERANGE:500\nall.mp4\n\
            #EXTINF:2,\nother.m4s\n#EXT-X-ENDLIST\n";
        let Playlist::Media(media) = parse(text.as_bytes()).unwrap() else { panic!() };
        assert_eq!(media.maps[0].range, Some(ByteRange { start: 0, len: 800 }));
        let ranges: Vec<_> = media.segments.iter().map(|s| s.resource.range).collect();
        assert_eq!(
            ranges,
            vec![Some(ByteRange { start: 800, len: 1000 }), Some(ByteRange { start: 1800, len: 500 }), None]
        );
        // No offset after a segment of another file (or none at all): nothing to follow on.
        let (line, why) = line_err("#EXTM3U\n#EXTINF:2,\na.m4s\n#EXTINF:2,\n#EXT-X-BYTERANGE:500\nb.m4s\n");
        assert_eq!((line, why), (6, LineError::ByteRangeOffset));
        assert_eq!(line_err("#EXTM3U\n#EXTINF:2,\n#EXT-X-BYTERANGE:0@0\na\n").1, LineError::ByteRange);
        let overflow = format!("#EXTM3U\n#EXTINF:2,\n#EXT-X-BYTERANGE:2@{}\na\n", u64::MAX);
        assert_eq!(line_err(&overflow).1, LineError::ByteRange);
    }

    #[test]
    fn what_m3u8_rs_misreads_is_refused_with_its_line() {
        // A bad BANDWIDTH: refused, not dropped with its URI given to the variant before.
        let text =
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nv0.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=x\nv1.m3u8\n";
        assert_eq!(line_err(text), (4, LineError::BadValue("BANDWIDTH")));
        assert_eq!(line_err("#EXTM3U\n#EXTINF:abc,\na.m4s\n"), (2, LineError::Duration));
        let broken_map = "#EXTM3U\n#EXTINF:4,\na.m4s\n#EXT-X-MAP:URI=\"x\n#EXTINF:4,\nb.m4s\n";
        assert_eq!(line_err(broken_map), (4, LineError::Attributes("an unclosed quote")));
        assert_eq!(line_err("#EXTM3U\n#EXTINF:4,\na\n\u{0}\u{1}garbage\n"), (4, LineError::Control));
    }

    #[test]
    fn malformed_playlists_are_refused() {
        assert_eq!(err(""), HlsError::NoHeader);
        assert_eq!(err("\u{feff}#EXTM3U\n#EXTINF:1,\na\n"), HlsError::NoHeader);
        assert_eq!(err("#EXTM3U\n"), HlsError::Empty);
        assert_eq!(err("#EXTM3U\n#EXT-X-ENDLIST\n"), HlsError::Empty);
        assert_eq!(parse(&[0xff, 0xfe]).unwrap_err(), HlsError::NotUtf8);
        assert_eq!(line_err("#EXTM3U\na.m4s\n"), (2, LineError::UriWithoutTag));
        assert_eq!(line_err("#EXTM3U\n#EXTINF:1,\n#EXTINF:1,\na\n"), (3, LineError::InfWithoutUri));
        assert_eq!(line_err("#EXTM3U\n#EXTINF:1,\n"), (2, LineError::InfWithoutUri));
        assert_eq!(line_err("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n"), (2, LineError::StreamInfWithoutUri));
        assert_eq!(
            line_err("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n#EXT-X-STREAM-INF:BANDWIDTH=2\nb\n"),
            (3, LineError::StreamInfWithoutUri)
        );
        assert_eq!(
            line_err("#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1x1\na\n").1,
            LineError::Missing("BANDWIDTH")
        );
        assert_eq!(
            line_err("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=big\na\n").1,
            LineError::BadValue("RESOLUTION")
        );
        assert_eq!(
            line_err("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,BANDWIDTH=2\na\n").1,
            LineError::Attributes("a name given twice")
        );
        assert_eq!(
            line_err("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=\"1\"\na\n").1,
            LineError::Attributes("a quoted value where a bare one belongs")
        );
        assert_eq!(line_err("#EXTM3U\n#EXT-X-MAP:URI=init.mp4\n").1, LineError::BadValue("URI"));
        assert_eq!(line_err("#EXTM3U\n#EXT-X-MAP:BYTERANGE=\"1@0\"\n").1, LineError::Missing("URI"));
        assert_eq!(
            line_err("#EXTM3U\n#EXTINF:1,\na\n#EXT-X-STREAM-INF:BANDWIDTH=1\nb\n"),
            (4, LineError::Mixed("#EXT-X-STREAM-INF".into()))
        );
        assert_eq!(
            line_err("#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n#EXTINF:1,\na\n").1,
            LineError::Encrypted("AES-128".into())
        );
        for bad in ["-1", "1e3", "inf", "NaN", ".5", "5.", "", "86400.5", "1.2.3"] {
            assert_eq!(line_err(&format!("#EXTM3U\n#EXTINF:{bad},\na\n")).1, LineError::Duration, "{bad}");
        }
        // No method, or NONE: clear segments.
        assert!(parse(b"#EXTM3U\n#EXT-X-KEY:METHOD=NONE\n#EXTINF:1,\na\n").is_ok());
    }

    #[test]
    fn every_bound_is_checked() {
        let huge = vec![b'#'; MAX_PLAYLIST_BYTES as usize + 1];
        assert_eq!(parse(&huge).unwrap_err(), HlsError::TooLarge(MAX_PLAYLIST_BYTES + 1));
        let long = format!("#EXTM3U\n#EXTINF:1,\n{}\n", "a".repeat(MAX_LINE + 1));
        assert_eq!(line_err(&long), (3, LineError::TooLong(MAX_LINE + 1)));
        let at_bound = format!("#EXTM3U\n#EXTINF:1,\n{}\n", "a".repeat(MAX_LINE));
        assert!(parse(at_bound.as_bytes()).is_ok());

        let mut text = String::from("#EXTM3U\n");
        for i in 0..MAX_SEGMENTS {
            text.push_str(&format!("#EXTINF:1,\n{i}\n"));
        }
        let Playlist::Media(m) = parse(text.as_bytes()).unwrap() else { panic!() };
        assert_eq!(m.segments.len(), MAX_SEGMENTS);
        text.push_str("#EXTINF:1,\nlast\n");
        assert_eq!(line_err(&text), (2 * MAX_SEGMENTS + 3, LineError::TooManySegments));

        let mut text = String::from("#EXTM3U\n");
        for i in 0..=MAX_VARIANTS {
            text.push_str(&format!("#EXT-X-STREAM-INF:BANDWIDTH={i}\nv{i}.m3u8\n"));
        }
        assert_eq!(line_err(&text).1, LineError::TooManyVariants);
    }

    #[test]
    fn uris_resolve_inside_the_package_only() {
        assert_eq!(resolve("master.m3u8", "v0/index.m3u8").unwrap(), "v0/index.m3u8");
        assert_eq!(resolve("v0/index.m3u8", "seg0.m4s").unwrap(), "v0/seg0.m4s");
        assert_eq!(resolve("a/b/index.m3u8", "../c/./seg.m4s").unwrap(), "a/c/seg.m4s");
        assert_eq!(resolve("v0/index.m3u8", "../v1/seg%201.m4s?token=x#t=3").unwrap(), "v1/seg 1.m4s");
        assert_eq!(resolve("index.m3u8", "./a:b.m4s").unwrap(), "a:b.m4s");
        for uri in
            ["https://elsewhere/x.m4s", "http://127.0.0.1/titles/x/a", "//host/a", "/titles/a", "data:x"]
        {
            assert!(matches!(resolve("v0/index.m3u8", uri), Err(UriError::Absolute(_))), "{uri}");
        }
        for uri in ["../../x.m4s", "../../../etc/passwd", "a/../../../x"] {
            assert!(matches!(resolve("v0/index.m3u8", uri), Err(UriError::LeavesPackage(_))), "{uri}");
        }
        for uri in ["a%2Fb", "a%zz", "a%", "%ff%fe"] {
            assert!(matches!(resolve("i.m3u8", uri), Err(UriError::Escape(_))), "{uri}");
        }
        for uri in ["", "a//b", "dir/", "..", ".", "a%5Cb", "a%0Ab"] {
            assert!(matches!(resolve("v/i.m3u8", uri), Err(UriError::Path { .. })), "{uri:?}");
        }
    }

    #[test]
    fn request_paths_escape_what_a_uri_cannot_carry() {
        assert_eq!(percent_encode_path("v0/seg0.m4s"), "v0/seg0.m4s");
        assert_eq!(percent_encode_path("a b/%x?#é"), "a%20b/%25x%3F%23%C3%A9");
        let back = resolve("i.m3u8", &percent_encode_path("d/a b%?#é.m4s")).unwrap();
        assert_eq!(back, "d/a b%?#é.m4s");
    }

    /// A media playlist's text, as a packager would write it.
    fn render_media(media: &Media) -> String {
        let mut text = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:10\n");
        let mut last_map = None;
        let mut last_end: Option<(String, u64)> = None;
        for s in &media.segments {
            if s.map != last_map {
                let m = &media.maps[s.map.unwrap()];
                text.push_str(&format!("#EXT-X-MAP:URI=\"{}\"", m.uri));
                if let Some(r) = m.range {
                    text.push_str(&format!(",BYTERANGE=\"{}@{}\"", r.len, r.start));
                }
                text.push('\n');
                last_map = s.map;
            }
            text.push_str(&format!("#EXTINF:{},\n", s.duration));
            if let Some(r) = s.resource.range {
                // Written without its offset where it follows on from the segment before.
                match &last_end {
                    Some((uri, end)) if *uri == s.resource.uri && *end == r.start => {
                        text.push_str(&format!("#EXT-X-BYTERANGE:{}\n", r.len))
                    }
                    _ => text.push_str(&format!("#EXT-X-BYTERANGE:{}@{}\n", r.len, r.start)),
                }
            }
            last_end = s.resource.range.map(|r| (s.resource.uri.clone(), r.start + r.len));
            text.push_str(&s.resource.uri);
            text.push('\n');
        }
        if media.ended {
            text.push_str("#EXT-X-ENDLIST\n");
        }
        text
    }

    fn uri() -> impl Strategy<Value = String> {
        "[a-z0-9_]{1,8}(/[a-z0-9_.]{1,8}){0,2}\\.m4s"
    }

    fn media() -> impl Strategy<Value = Media> {
        let segment =
            (uri(), 0u64..100_000, proptest::option::of((1u64..1 << 40, 0u64..1 << 40)), any::<bool>());
        (proptest::collection::vec(segment, 1..40), proptest::collection::vec(uri(), 0..3), any::<bool>())
            .prop_map(|(raw, map_uris, ended)| {
                let maps: Vec<Resource> =
                    map_uris.iter().map(|u| Resource { uri: u.clone(), range: None }).collect();
                let n = raw.len();
                let segments = raw
                    .into_iter()
                    .enumerate()
                    .map(|(i, (uri, millis, range, _))| Segment {
                        resource: Resource { uri, range: range.map(|(len, start)| ByteRange { start, len }) },
                        duration: millis as f64 / 1000.0,
                        // The maps apply in turn, each to a share of the segments.
                        map: (!maps.is_empty()).then(|| i * maps.len() / n),
                    })
                    .collect();
                Media { maps, segments, ended }
            })
            .prop_filter("every map is used", |m| {
                (0..m.maps.len()).all(|k| m.segments.iter().any(|s| s.map == Some(k)))
            })
    }

    fn variants() -> impl Strategy<Value = Vec<Variant>> {
        let variant = (uri(), any::<u64>(), proptest::option::of((any::<u32>(), any::<u32>())));
        proptest::collection::vec(variant, 1..MAX_VARIANTS).prop_map(|v| {
            v.into_iter()
                .map(|(uri, bandwidth, resolution)| Variant {
                    uri: uri.replace(".m4s", ".m3u8"),
                    bandwidth,
                    resolution,
                })
                .collect()
        })
    }

    fn render_master(variants: &[Variant]) -> String {
        let mut text = String::from("#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n");
        text.push_str("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio.m3u8\"\n");
        for v in variants {
            text.push_str(&format!(
                "#EXT-X-STREAM-INF:BANDWIDTH={},CODECS=\"avc1.64001f,mp4a.40.2\"",
                v.bandwidth
            ));
            if let Some((w, h)) = v.resolution {
                text.push_str(&format!(",RESOLUTION={w}x{h}"));
            }
            text.push_str(&format!("\n{}\n\n", v.uri));
        }
        text
    }

    /// Lines a playlist is made of, right and wrong, for the never-panics property.
    fn any_line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("#EXTM3U".to_owned()),
            Just("#EXT-X-ENDLIST".to_owned()),
            Just(String::new()),
            "#EXTINF:[0-9.a-z,-]{0,12}",
            "#EXT-X-BYTERANGE:[0-9@]{0,24}",
            "#EXT-X-MAP:[A-Z\"=,@0-9a-z.]{0,30}",
            "#EXT-X-STREAM-INF:[A-Z\"=,x0-9-]{0,40}",
            "#EXT-X-KEY:[A-Z=,\"0-9-]{0,20}",
            "[a-z0-9/.:%?#]{1,20}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn media_playlists_round_trip(media in media()) {
            let text = render_media(&media);
            prop_assert_eq!(parse(text.as_bytes()).unwrap(), Playlist::Media(media), "{}", text);
        }

        #[test]
        fn multivariant_playlists_round_trip(variants in variants()) {
            let text = render_master(&variants);
            prop_assert_eq!(parse(text.as_bytes()).unwrap(), Playlist::Master(variants), "{}", text);
        }

        #[test]
        fn any_text_is_read_or_refused_never_a_panic(
            lines in proptest::collection::vec(any_line(), 0..40),
            crlf in any::<bool>(),
        ) {
            let text = lines.join(if crlf { "\r\n" } else { "\n" });
            if let Ok(playlist) = parse(text.as_bytes()) {
                match playlist {
                    Playlist::Master(v) => {
                        prop_assert!(!v.is_empty() && v.len() <= MAX_VARIANTS);
                        prop_assert!(v.iter().all(|v| !v.uri.is_empty() && !v.uri.starts_with('#')));
                    }
                    Playlist::Media(m) => {
                        prop_assert!(!m.segments.is_empty() && m.segments.len() <= MAX_SEGMENTS);
                        for s in &m.segments {
                            prop_assert!(!s.resource.uri.is_empty() && !s.resource.uri.starts_with('#'));
                            prop_assert!(s.duration.is_finite() && (0.0..=MAX_SEGMENT_SECS).contains(&s.duration));
                            prop_assert!(s.map.is_none_or(|k| k < m.maps.len()));
                            if let Some(r) = s.resource.range {
                                prop_assert!(r.len >= 1 && r.start.checked_add(r.len).is_some());
                            }
                        }
                    }
                }
            }
        }

        #[test]
        fn any_bytes_are_read_or_refused_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut with_header = b"#EXTM3U\n".to_vec();
            with_header.extend_from_slice(&bytes);
            let _ = parse(&bytes);
            let _ = parse(&with_header);
        }

        #[test]
        fn a_resolved_uri_is_a_package_path_below_the_top(
            base in "([a-z0-9]{1,4}/){0,3}[a-z]{1,4}\\.m3u8",
            uri in "((\\.\\.|\\.|[a-z0-9%]{1,4})/){0,5}[a-z0-9%.]{1,6}",
        ) {
            if let Ok(path) = resolve(&base, &uri) {
                prop_assert!(check_path(&path).is_ok(), "{}", path);
                prop_assert!(!path.split('/').any(|p| p == ".." || p == "."), "{}", path);
                // Climbing counted: as many `..` as the base's depth and the URI's own names allow.
                let depth = base.matches('/').count() as i64;
                let ups = uri.split('/').filter(|p| *p == "..").count() as i64;
                let names = uri.split('/').filter(|p| *p != ".." && *p != ".").count() as i64;
                prop_assert!((path.matches('/').count() as i64) < depth + names);
                prop_assert!(ups <= depth + names);
            }
        }

        #[test]
        fn a_plain_relative_uri_lands_beside_its_playlist(
            dir in "([a-z0-9]{1,4}/){0,3}",
            name in "[a-z0-9_]{1,8}\\.m4s",
        ) {
            prop_assert_eq!(resolve(&format!("{dir}index.m3u8"), &name).unwrap(), format!("{dir}{name}"));
            prop_assert_eq!(resolve(&format!("{dir}index.m3u8"), &percent_encode_path(&name)).unwrap(), format!("{dir}{name}"));
        }
    }
}
