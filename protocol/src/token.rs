//! Playback tokens: what steering hands a player so that an appliance serves it a title.
//!
//! A token names one title (a package: every file in it), an expiry, optionally the client's
//! prefix, a random token id and the id of the key that signed it; it is signed with Ed25519
//! by a tracker and checked by appliances that hold only public keys, so an appliance can
//! check tokens and cannot mint them. It travels as base64url text (no padding) in the path
//! of the player's URLs, `/p/<token>/titles/<id>/...`, so the relative URLs of a package's
//! playlists carry it with no rewriting.
//!
//! The signed bytes, version 1 (all integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version, 1 |
//! | 8 | key id: the first 8 bytes of the BLAKE3 of the signing key's public key |
//! | 16 | token id, random |
//! | 32 | title id |
//! | 8 | expiry, Unix seconds |
//! | 1 | prefix: 0 none, 4 IPv4, 6 IPv6 |
//! | 0, or 1 + 4, or 1 + 16 | the prefix's length in bits, then its network address |
//!
//! then 64 bytes of signature over all of the above: 130 to 147 bytes, 174 to 196 characters
//! of text. A check takes the steps in this order, and the first that fails is the reason
//! ([`Refusal`]): the text decodes to a token (else `signature`: it is not one we signed), its
//! key is known (`key`), the signature holds (`signature`), it has not expired (`expired`),
//! it names the title asked for (`title`), the client is inside its prefix (`prefix`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::{IpPrefix, TitleId};

/// The version byte of the tokens this build signs and reads.
pub const TOKEN_VERSION: u8 = 1;
/// The longest token text read; a longer one is refused before it is decoded.
pub const MAX_TOKEN_TEXT: usize = 200;
/// Bytes of a signature.
const SIGNATURE: usize = 64;
/// Bytes before the prefix field: version, key id, token id, title, expiry.
const FIXED: usize = 1 + 8 + 16 + 32 + 8;
/// The most public keys a key set carries (signing keys and keys kept until their tokens
/// expire); on the wire and in the files that hold them.
pub const MAX_KEYS: usize = 16;

/// A signing key's id: the first 8 bytes of the BLAKE3 of its public key, 16 hex digits as
/// text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of the Ed25519 public key `public`.
    pub fn of(public: &[u8; 32]) -> Self {
        let hash = blake3::hash(public);
        let mut id = [0u8; 8];
        id.copy_from_slice(&hash.as_bytes()[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Why a text is not a key id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key id is 16 lowercase hex digits")]
pub struct KeyIdError;

impl FromStr for KeyId {
    type Err = KeyIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(KeyIdError);
        }
        let mut id = [0u8; 8];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| KeyIdError)?;
        }
        Ok(KeyId(id))
    }
}

/// A public key appliances check tokens with, as trackers hand it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    /// Its id ([`KeyId::of`] the key; a key set refuses an entry whose id does not match).
    pub id: KeyId,
    /// The Ed25519 public key.
    pub key: [u8; 32],
}

/// What a token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// The key that signed it.
    pub key: KeyId,
    /// Random: a player's reports are counted by it.
    pub token_id: [u8; 16],
    /// The title it opens (a package: every file of it).
    pub title: TitleId,
    /// Unix seconds after which it is refused.
    pub expires: u64,
    /// The client addresses it is good for, if bound.
    pub prefix: Option<IpPrefix>,
}

/// Why a request's token does not open what it asks for: the one word an appliance answers
/// with its 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum Refusal {
    /// No token in the request.
    #[error("missing")]
    Missing,
    /// Past its expiry.
    #[error("expired")]
    Expired,
    /// Not a token, or its signature does not hold.
    #[error("signature")]
    Signature,
    /// Another title's token.
    #[error("title")]
    Title,
    /// Bound to a prefix the client is not in.
    #[error("prefix")]
    Prefix,
    /// Signed by a key not (or no longer) accepted.
    #[error("key")]
    Key,
}

impl Refusal {
    /// Every reason, for metrics that show each from the start.
    pub const ALL: [Refusal; 6] = [
        Refusal::Missing,
        Refusal::Expired,
        Refusal::Signature,
        Refusal::Title,
        Refusal::Prefix,
        Refusal::Key,
    ];

    /// The reason's word (what the 403's body and the metric's label say).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Expired => "expired",
            Refusal::Signature => "signature",
            Refusal::Title => "title",
            Refusal::Prefix => "prefix",
            Refusal::Key => "key",
        }
    }
}

impl Claims {
    /// The signed bytes of these claims.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED + 18 + SIGNATURE);
        out.push(TOKEN_VERSION);
        out.extend_from_slice(&self.key.0);
        out.extend_from_slice(&self.token_id);
        out.extend_from_slice(self.title.as_bytes());
        out.extend_from_slice(&self.expires.to_be_bytes());
        match self.prefix.map(|p| (p.addr(), p.len())) {
            None => out.push(0),
            Some((IpAddr::V4(a), len)) => {
                out.extend_from_slice(&[4, len]);
                out.extend_from_slice(&a.octets());
            }
            Some((IpAddr::V6(a), len)) => {
                out.extend_from_slice(&[6, len]);
                out.extend_from_slice(&a.octets());
            }
        }
        out
    }

    /// Reads signed bytes: the claims, or `None` for anything but exactly one version-1
    /// encoding.
    fn decode(bytes: &[u8]) -> Option<Self> {
        let fixed = bytes.get(..FIXED)?;
        if fixed[0] != TOKEN_VERSION {
            return None;
        }
        let key = KeyId(fixed[1..9].try_into().ok()?);
        let token_id = fixed[9..25].try_into().ok()?;
        let title = TitleId::from_bytes(fixed[25..57].try_into().ok()?);
        let expires = u64::from_be_bytes(fixed[57..65].try_into().ok()?);
        let rest = &bytes[FIXED..];
        let prefix = match rest {
            [0] => None,
            [4, len, a @ ..] if a.len() == 4 => {
                let addr: [u8; 4] = a.try_into().ok()?;
                Some(IpPrefix::new(IpAddr::from(addr), *len).ok()?)
            }
            [6, len, a @ ..] if a.len() == 16 => {
                let addr: [u8; 16] = a.try_into().ok()?;
                Some(IpPrefix::new(IpAddr::from(addr), *len).ok()?)
            }
            _ => return None,
        };
        // Host bits set: not what a signer writes (IpPrefix::new clears them).
        if let Some(p) = prefix {
            let written = match rest[2..].len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(&rest[2..]).ok()?),
                _ => IpAddr::from(<[u8; 16]>::try_from(&rest[2..]).ok()?),
            };
            if written != p.addr() {
                return None;
            }
        }
        Some(Claims { key, token_id, title, expires, prefix })
    }

    /// Whether these claims open `title` for a client at `client` at Unix second `now`; the
    /// signature is checked elsewhere ([`KeySet::verify`]).
    pub fn admits(&self, title: &TitleId, client: IpAddr, now: u64) -> Result<(), Refusal> {
        if now > self.expires {
            return Err(Refusal::Expired);
        }
        if self.title != *title {
            return Err(Refusal::Title);
        }
        match self.prefix {
            Some(p) if !p.contains(canonical(client)) => Err(Refusal::Prefix),
            _ => Ok(()),
        }
    }
}

/// The Unix second now, by this machine's clock: what expiries are written in and checked
/// against (signers and checkers alike; keep clocks in NTP).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An IPv4 address mapped into IPv6 as the IPv4 address it is (a dual-stack socket reports
/// IPv4 clients so).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why a signing key could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The system's random source failed.
    #[error("no randomness for a new key")]
    Random,
    /// The 32 bytes are not an Ed25519 seed the library takes.
    #[error("not an Ed25519 key")]
    Rejected,
}

/// A tracker's signing key (an Ed25519 key pair, from a 32-byte seed).
pub struct SigningKey {
    seed: [u8; 32],
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the seed.
        f.debug_struct("SigningKey").field("id", &self.public.id).finish()
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        aws_lc_rs::rand::fill(&mut seed).map_err(|_| KeyError::Random)?;
        Self::from_seed(&seed)
    }

    /// The key of a 32-byte seed (as kept in a tracker's key file or the fleet's etcd).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| KeyError::Rejected)?;
        let key: [u8; 32] = pair.public_key().as_ref().try_into().map_err(|_| KeyError::Rejected)?;
        Ok(Self { seed: *seed, pair, public: PublicKey { id: KeyId::of(&key), key } })
    }

    /// The seed, to be kept secret by whoever holds the key.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The public half, which appliances check with.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// A token for `title`, good until Unix second `expires`, for clients in `prefix` if
    /// given, with a random token id.
    pub fn sign(&self, title: TitleId, expires: u64, prefix: Option<IpPrefix>) -> Result<String, KeyError> {
        let mut token_id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut token_id).map_err(|_| KeyError::Random)?;
        Ok(self.sign_claims(&Claims { key: self.public.id, token_id, title, expires, prefix }))
    }

    /// The token of `claims`, whose key id must be this key's (it is replaced if not).
    pub fn sign_claims(&self, claims: &Claims) -> String {
        let mut bytes = Claims { key: self.public.id, ..*claims }.encode();
        let signature = self.pair.sign(&bytes);
        bytes.extend_from_slice(signature.as_ref());
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// A token's parts once decoded: the claims, the signed bytes and the signature.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// What it says (not yet believed).
    pub claims: Claims,
    bytes: Vec<u8>,
}

impl Decoded {
    /// Decodes a token's text: the claims, or [`Refusal::Signature`] for anything that is not
    /// one token of this version (too long, not base64url, a wrong layout).
    pub fn from_text(text: &str) -> Result<Self, Refusal> {
        if text.is_empty() || text.len() > MAX_TOKEN_TEXT {
            return Err(Refusal::Signature);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| Refusal::Signature)?;
        let body = bytes.len().checked_sub(SIGNATURE).ok_or(Refusal::Signature)?;
        let claims = Claims::decode(&bytes[..body]).ok_or(Refusal::Signature)?;
        Ok(Decoded { claims, bytes })
    }

    fn signed(&self) -> (&[u8], &[u8]) {
        self.bytes.split_at(self.bytes.len() - SIGNATURE)
    }
}

/// The public keys an appliance (or a tracker, for reports) accepts tokens of.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<PublicKey>,
}

impl KeySet {
    /// The keys given, at most [`MAX_KEYS`] (more are ignored), each whose id does not match
    /// its key dropped.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut set = Vec::new();
        for k in keys {
            if set.len() < MAX_KEYS && KeyId::of(&k.key) == k.id && !set.contains(&k) {
                set.push(k);
            }
        }
        KeySet { keys: set }
    }

    /// The keys, in the order given.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Whether a key of id `id` is in the set.
    pub fn has(&self, id: &KeyId) -> bool {
        self.keys.iter().any(|k| k.id == *id)
    }

    /// The claims of `text` if one of these keys signed it and it has not expired at Unix
    /// second `now`; which of them apply to a request is [`Claims::admits`]'s to say.
    pub fn verify(&self, text: &str, now: u64) -> Result<Claims, Refusal> {
        let decoded = Decoded::from_text(text)?;
        let claims = self.verify_decoded(&decoded)?;
        if now > claims.expires {
            return Err(Refusal::Expired);
        }
        Ok(claims)
    }

    /// The claims of a decoded token if one of these keys signed it (expiry not checked).
    pub fn verify_decoded(&self, decoded: &Decoded) -> Result<Claims, Refusal> {
        let key = self.keys.iter().find(|k| k.id == decoded.claims.key).ok_or(Refusal::Key)?;
        let (signed, signature) = decoded.signed();
        UnparsedPublicKey::new(&ED25519, &key.key)
            .verify(signed, signature)
            .map_err(|_| Refusal::Signature)?;
        Ok(decoded.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn title(n: u8) -> TitleId {
        TitleId::from_bytes([n; 32])
    }

    #[test]
    fn a_token_is_a_few_hundred_bytes_at_most() {
        let key = SigningKey::generate().unwrap();
        let v6 = IpPrefix::new("2001:db8::1".parse().unwrap(), 48).unwrap();
        let long = key.sign(title(1), u64::MAX, Some(v6)).unwrap();
        let short = key.sign(title(1), 0, None).unwrap();
        assert_eq!(long.len(), 196);
        assert_eq!(short.len(), 174);
        assert!(long.len() <= MAX_TOKEN_TEXT);
        assert!(long.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn each_check_fails_with_its_own_reason() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let keys = KeySet::new([key.public()]);
        let client: IpAddr = "192.0.2.9".parse().unwrap();
        let prefix = IpPrefix::new(client, 24).unwrap();
        let good = key.sign(title(1), 100, Some(prefix)).unwrap();
        let claims = keys.verify(&good, 50).unwrap();
        assert_eq!(claims.admits(&title(1), client, 50), Ok(()));
        assert_eq!(claims.admits(&title(1), "::ffff:192.0.2.200".parse().unwrap(), 50), Ok(()));
        assert_eq!(keys.verify(&good, 101), Err(Refusal::Expired));
        assert_eq!(claims.admits(&title(1), client, 101), Err(Refusal::Expired));
        assert_eq!(claims.admits(&title(2), client, 50), Err(Refusal::Title));
        assert_eq!(claims.admits(&title(1), "192.0.3.9".parse().unwrap(), 50), Err(Refusal::Prefix));
        assert_eq!(claims.admits(&title(1), "2001:db8::1".parse().unwrap(), 50), Err(Refusal::Prefix));
        let foreign = other.sign(title(1), 100, None).unwrap();
        assert_eq!(keys.verify(&foreign, 50), Err(Refusal::Key));
        // The other key's signature under this key's id.
        let forged = other.sign_claims(&Claims { key: key.public().id, ..claims });
        let mut bytes = URL_SAFE_NO_PAD.decode(&forged).unwrap();
        bytes[1..9].copy_from_slice(&key.public().id.0);
        assert_eq!(keys.verify(&URL_SAFE_NO_PAD.encode(&bytes), 50), Err(Refusal::Signature));
        for junk in ["", "a", "!!!!", &"A".repeat(MAX_TOKEN_TEXT + 1)] {
            assert_eq!(keys.verify(junk, 50), Err(Refusal::Signature), "{junk:?}");
        }
    }

    #[test]
    fn key_ids_read_back_and_refuse_anything_else() {
        let key = SigningKey::generate().unwrap();
        let id = key.public().id;
        assert_eq!(id.to_string().parse::<KeyId>(), Ok(id));
        for bad in ["", "0123", "0123456789ABCDEF", "0123456789abcdeg", "0123456789abcdef0"] {
            assert_eq!(bad.parse::<KeyId>(), Err(KeyIdError), "{bad}");
        }
        // A set drops an entry whose id is not its key's.
        let lying = PublicKey { id: KeyId([0; 8]), key: key.public().key };
        assert!(KeySet::new([lying]).keys().is_empty());
        assert_eq!(SigningKey::from_seed(key.seed()).unwrap().public(), key.public());
    }

    fn prefix() -> impl Strategy<Value = Option<IpPrefix>> {
        prop_oneof![
            Just(None),
            (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| IpPrefix::new(IpAddr::from(a), l).ok()),
            (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, l)| IpPrefix::new(IpAddr::from(a), l).ok()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// What is signed reads back whole under the signer's key.
        #[test]
        fn a_signed_token_verifies_to_its_claims(t in any::<[u8; 32]>(), expires in any::<u64>(), id in any::<[u8; 16]>(), p in prefix()) {
            let key = SigningKey::from_seed(&[7; 32]).unwrap();
            let claims = Claims { key: key.public().id, token_id: id, title: TitleId::from_bytes(t), expires, prefix: p };
            let text = key.sign_claims(&claims);
            prop_assert!(text.len() <= MAX_TOKEN_TEXT);
            prop_assert_eq!(KeySet::new([key.public()]).verify(&text, 0).unwrap(), claims);
        }

        /// Any change to a token's bytes makes it refused (never admitted, never a panic).
        #[test]
        fn a_tampered_token_is_refused(at in any::<prop::sample::Index>(), flip in 1u8..=255, p in prefix()) {
            let key = SigningKey::from_seed(&[9; 32]).unwrap();
            let text = key.sign(TitleId::from_bytes([1; 32]), u64::MAX, p).unwrap();
            let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
            let tampered = URL_SAFE_NO_PAD.encode(&bytes);
            let refused = KeySet::new([key.public()]).verify(&tampered, 0);
            prop_assert!(matches!(refused, Err(Refusal::Signature | Refusal::Key)), "{:?}", refused);
        }

        /// Arbitrary text: a refusal or claims, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in "[A-Za-z0-9_-]{0,220}") {
            let key = SigningKey::from_seed(&[3; 32]).unwrap();
            let _ = KeySet::new([key.public()]).verify(&text, 0);
        }
    }
}
