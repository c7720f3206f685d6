//! The steering document: what the tracker's `GET /steer?title=ID[&client_ip=IP]` answers in
//! JSON, and what players read. One definition for the tracker that writes it and every
//! player that reads it.

use serde::{Deserialize, Serialize};

use crate::messages::SteerTarget;

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
}

/// One appliance a player may stream from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteerEntry {
    pub peer_id: String,
    /// `https://ADDR/titles/ID`, served over HTTP/3.
    pub url: String,
    pub site: String,
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
            cert_sha256: t.cert_sha256.map(|c| c.iter().map(|b| format!("{b:02x}")).collect()),
        }
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
    }
}
