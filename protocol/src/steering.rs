//! The players' documents on the tracker's HTTP API, in JSON: the steering answer (what
//! `GET /steer?title=ID[&client_ip=IP]` answers, players read) and the player's report of a
//! chunk that failed verification (what players send to `POST /report`). One definition for
//! the tracker and every player.

use serde::{Deserialize, Serialize};

use crate::messages::SteerTarget;
use crate::{NodeId, NodeIdError, TitleId, TitleIdError};

/// The answer to one steering request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteerAnswer {
    /// The title id, as asked.
    pub title: String,
    /// The client address steered for (the one given, else the one the tracker saw).
    pub client_ip: String,
    /// Where to play from, best first.
    pub targets: Vec<SteerEntry>,
    /// Why the list is empty or short.
    pub reason: String,
    /// The playback token every target's URL carries (`/p/<token>/titles/...`), when the
    /// fleet requires tokens: good on any appliance of the list, for this title, until
    /// `token_expires`. A player asks again for a fresh one when an appliance answers 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// When `token` expires, in Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires: Option<u64>,
}

/// One appliance a player may stream from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteerEntry {
    /// The appliance's PeerId, base58 text: what a [`PlayerReport`] names it by.
    pub peer_id: String,
    /// Where the title is served, over HTTPS on TCP and HTTP/3 on the same port. With
    /// playback tokens the path starts with the token, `https://ADDR/p/TOKEN/titles/ID`, and
    /// every path below is asked with that start. For a
    /// one-file title, the title itself: `https://ADDR/titles/ID`. For a package, its base
    /// URL with a trailing slash, `https://ADDR/titles/ID/`: a file of the package is the
    /// base joined with its path (`https://ADDR/titles/ID/v1/index.m3u8`), so the relative
    /// URLs inside a playlist or manifest resolve inside the package, and the base itself
    /// answers the package's listing.
    pub url: String,
    /// The site the appliance registered in.
    pub site: String,
    /// The region the appliance registered in.
    pub region: String,
    /// SHA-256 of the SubjectPublicKeyInfo of the certificate the appliance presents to
    /// players, 64 lowercase hex digits, for pinning.
    pub cert_sha256: Option<String>,
}

impl SteerEntry {
    /// The certificate pin as bytes, if present and well formed.
    pub fn cert_pin(&self) -> Option<[u8; 32]> {
        let hex = self.cert_sha256.as_deref()?;
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(out)
    }
}

impl From<SteerTarget> for SteerEntry {
    fn from(t: SteerTarget) -> Self {
        SteerEntry {
            peer_id: t.node.to_string(),
            url: t.url,
            site: t.site,
            region: t.region,
            cert_sha256: t.cert_sha256.map(|c| crate::title::hex32(&c).as_str().to_owned()),
        }
    }
}

/// A player's report to the tracker (`POST /report`, JSON): the appliance `peer_id` sent
/// chunk `chunk` of `title` and it failed verification. The tracker counts the player as one
/// reporter toward the appliance's corrupt-chunk quorum: with playback tokens, by its
/// `token` (one token is one reporter, however many addresses it comes from); without, by
/// the address of the connection, never by anything else in the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayerReport {
    /// The title id, 64 lowercase hex digits.
    pub title: String,
    /// The appliance, as the steering answer named it.
    pub peer_id: String,
    /// The chunk's index, from 0 (the tracker checks it against the title's chunk count).
    pub chunk: u32,
    /// The playback token the player was steered with, for a fleet that requires tokens
    /// (the tracker checks it is valid for `title`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Why a player's report is refused before the tracker looks at it. A field's own error is
/// the reason, named after the field, not a cause behind it: the whole text is the tracker's
/// answer to the player.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayerReportError {
    /// The body is longer than [`PlayerReport::MAX_BYTES`]; carries its length. (The
    /// tracker's HTTP server refuses such a body itself, before it is parsed.)
    #[error("a report is at most {max} bytes, got {0}", max = PlayerReport::MAX_BYTES)]
    TooLong(usize),
    /// `title` is not a title id.
    #[error("title: {0}")]
    Title(TitleIdError),
    /// `peer_id` is not a node id.
    #[error("peer_id: {0}")]
    PeerId(NodeIdError),
    /// `token` is longer than any token ([`crate::token::MAX_TOKEN_TEXT`]).
    #[error("token: longer than {} characters", crate::token::MAX_TOKEN_TEXT)]
    Token,
}

impl PlayerReport {
    /// The largest report body accepted (a well-formed one is under 200 bytes).
    pub const MAX_BYTES: usize = 1024;

    /// The report that chunk `chunk` of `title`, from the appliance `peer_id`, failed
    /// verification, from a player steered with `token` (if any).
    pub fn new(title: &TitleId, peer_id: &str, chunk: u32, token: Option<String>) -> Self {
        Self { title: title.to_string(), peer_id: peer_id.to_owned(), chunk, token }
    }

    /// The report's fields, each checked for shape (whether the title and the appliance exist
    /// is the tracker's to say).
    pub fn check(&self) -> Result<(TitleId, NodeId, u32), PlayerReportError> {
        let title = self.title.parse().map_err(PlayerReportError::Title)?;
        let peer_id = self.peer_id.parse().map_err(PlayerReportError::PeerId)?;
        if self.token.as_ref().is_some_and(|t| t.len() > crate::token::MAX_TOKEN_TEXT) {
            return Err(PlayerReportError::Token);
        }
        Ok((title, peer_id, self.chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_pin_written_by_the_tracker_reads_back_for_the_player(pin in any::<[u8; 32]>(), node in "[1-9A-HJ-NP-Za-km-z]{1,52}") {
            let target = SteerTarget {
                node: node.parse().unwrap(),
                url: "https://127.0.0.1:1/titles/x".into(),
                cert_sha256: Some(pin),
                site: "s".into(),
                region: "r".into(),
            };
            let entry = SteerEntry::from(target);
            prop_assert_eq!(entry.cert_pin(), Some(pin));
        }

        #[test]
        fn a_malformed_pin_is_none_never_a_panic(text in "\\PC{0,80}") {
            let entry = SteerEntry { peer_id: "p".into(), url: "u".into(), site: "s".into(), region: "r".into(), cert_sha256: Some(text.clone()) };
            let pin = entry.cert_pin();
            if let Some(bytes) = pin {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                prop_assert_eq!(hex, text.to_lowercase());
            }
        }

        /// A report a player writes reads back whole at the tracker; whatever the JSON
        /// carries instead is refused with a reason, never a panic, and what passes the
        /// check is exactly what was sent.
        #[test]
        fn a_player_report_round_trips_and_anything_else_is_refused(
            title in any::<[u8; 32]>(),
            peer in "[1-9A-HJ-NP-Za-km-z]{1,64}",
            chunk in any::<u32>(),
            junk_title in "\\PC{0,80}",
            junk_peer in "\\PC{0,80}",
        ) {
            let title = TitleId::from_bytes(title);
            let report = PlayerReport::new(&title, &peer, chunk, Some("t".repeat(crate::token::MAX_TOKEN_TEXT)));
            let json = serde_json::to_vec(&report).unwrap();
            prop_assert!(json.len() <= PlayerReport::MAX_BYTES);
            let back: PlayerReport = serde_json::from_slice(&json).unwrap();
            prop_assert_eq!(back.check(), Ok((title, peer.parse().unwrap(), chunk)));
            let junk = PlayerReport { title: junk_title.clone(), peer_id: junk_peer.clone(), chunk, token: None };
            match junk.check() {
                Ok((t, p, c)) => {
                    prop_assert_eq!(t.to_string(), junk_title);
                    prop_assert_eq!(p.as_str(), junk_peer.as_str());
                    prop_assert_eq!(c, chunk);
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        /// Arbitrary bytes as a report body: a decoding error or a report, never a panic.
        #[test]
        fn arbitrary_report_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(report) = serde_json::from_slice::<PlayerReport>(&body) {
                let _ = report.check();
            }
        }
    }
}
