//! Title ids: the name of a title is the plain BLAKE3 hash of its bytes, so anyone can check
//! it with `b3sum` and nobody (tracker, peer or origin) has to be trusted about content.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The BLAKE3 hash of a title's bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TitleId([u8; 32]);

/// Why a string is not a title id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TitleIdError {
    /// The text is not 64 single-byte characters long; carries its length in characters.
    #[error("a title id is 64 lowercase hex digits, got {0} characters")]
    Length(usize),
    /// A character is not a lowercase hex digit (uppercase ones included).
    #[error("a title id is 64 lowercase hex digits, found {found:?} at position {position}")]
    Digit {
        /// Where the first such character is, in characters from 0.
        position: usize,
        /// That character.
        found: char,
    },
}

impl TitleId {
    /// The id whose hash is `bytes`, taken as given (nothing is hashed or checked).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes of the hash.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The id of an in-memory byte string (for tests and small inputs; files go through
    /// [`crate::Manifest::from_reader`] or a streaming hasher).
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The id of everything `reader` yields, hashed in constant memory: what `b3sum` prints
    /// for a file.
    pub fn of_reader(reader: impl std::io::Read) -> std::io::Result<Self> {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(reader)?;
        Ok(hasher.finalize().into())
    }
}

impl From<blake3::Hash> for TitleId {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl fmt::Display for TitleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(hex32(&self.0).as_str())
    }
}

/// The 64 lowercase hex digits of 32 bytes (a title id, a certificate's SHA-256), made in one
/// piece. A steering answer writes a title id four times and a pin per target: written a
/// byte at a time (`write!("{b:02x}")`, and an allocation per byte for the pins) they took
/// about 11 µs of the 24 µs an answer with 3 targets cost the tracker. `tools/bench-steer.sh`
/// (medians of 3-5 rounds, machine otherwise idle): tokens off from 42,000 answers per
/// tracker CPU-second to 77,000, tokens on from 24,500 to 34,000.
pub(crate) fn hex32(bytes: &[u8; 32]) -> Hex64 {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    Hex64(out)
}

/// 64 lowercase hex digits, from [`hex32`].
pub(crate) struct Hex64([u8; 64]);

impl Hex64 {
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for TitleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TitleId({self})")
    }
}

impl FromStr for TitleId {
    type Err = TitleIdError;

    /// Accepts exactly what [`fmt::Display`] prints: uppercase is refused so that one title
    /// has one spelling in logs, URLs and trust lists.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let count = s.chars().count();
        if count != 64 || s.len() != 64 {
            return Err(TitleIdError::Length(count));
        }
        let mut out = [0u8; 32];
        for (position, c) in s.chars().enumerate() {
            let nibble = match c {
                '0'..='9' => c as u8 - b'0',
                'a'..='f' => c as u8 - b'a' + 10,
                found => return Err(TitleIdError::Digit { position, found }),
            };
            out[position / 2] |= if position % 2 == 0 { nibble << 4 } else { nibble };
        }
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_the_published_blake3_vector() {
        assert_eq!(
            TitleId::of(b"").to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn hex_is_each_byte_in_two_lowercase_digits() {
        for first in (0..=255u8).step_by(32) {
            let bytes: [u8; 32] = std::array::from_fn(|i| first.wrapping_add(i as u8));
            let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex32(&bytes).as_str(), expected);
        }
    }

    #[test]
    fn display_parses_back() {
        let id = TitleId::of(b"fillmesh");
        assert_eq!(id.to_string().parse::<TitleId>(), Ok(id));
    }

    #[test]
    fn bad_strings_are_refused_with_the_reason() {
        let good = TitleId::of(b"x").to_string();
        assert_eq!("".parse::<TitleId>(), Err(TitleIdError::Length(0)));
        assert_eq!(good[..63].parse::<TitleId>(), Err(TitleIdError::Length(63)));
        let upper = good.to_uppercase();
        assert!(matches!(upper.parse::<TitleId>(), Err(TitleIdError::Digit { .. })));
        let mut bad = good.clone();
        bad.replace_range(10..11, "g");
        assert_eq!(bad.parse::<TitleId>(), Err(TitleIdError::Digit { position: 10, found: 'g' }));
        // 64 bytes but fewer characters: multi-byte UTF-8 must not slip through.
        let multibyte = format!("é{}", &good[..62]);
        assert!(multibyte.parse::<TitleId>().is_err());
    }
}
