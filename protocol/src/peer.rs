//! Names and places on the wire: a node's id (the text form of its libp2p PeerId, so logs,
//! trust lists and messages spell a node the same way) and client address prefixes.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node's PeerId in its base58 text form. The protocol crate checks only its shape; the
/// node crate parses it into a real `PeerId` where identity matters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

/// Why a string is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    /// Empty, or longer than [`NodeId::MAX_LEN`]; carries the length in bytes.
    #[error("a node id is 1 to {max} base58 characters, got {0}", max = NodeId::MAX_LEN)]
    Length(usize),
    /// The first character outside base58's alphabet (ASCII letters and digits but `0`,
    /// `O`, `I` and `l`).
    #[error("a node id is base58; {0:?} is not a base58 character")]
    Character(char),
}

impl NodeId {
    /// Ed25519 PeerIds are 52 characters; 64 leaves room without inviting abuse.
    pub const MAX_LEN: usize = 64;

    /// The base58 text, as checked, sent and logged.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = NodeIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(NodeIdError::Length(s.len()));
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_alphanumeric() || matches!(c, '0' | 'O' | 'I' | 'l'))
        {
            return Err(NodeIdError::Character(c));
        }
        Ok(Self(s))
    }
}

impl FromStr for NodeId {
    type Err = NodeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s.to_owned())
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> Self {
        id.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.0)
    }
}

/// A CIDR prefix of client addresses an appliance serves, e.g. `127.0.1.0/24`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "(IpAddr, u8)", into = "(IpAddr, u8)")]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The length is more bits than the address has.
    #[error("prefix length {len} is too long for {addr} (at most {max})")]
    Length {
        /// The address as given.
        addr: IpAddr,
        /// The length as given, in bits.
        len: u8,
        /// The address's bits: 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// The text is not `ADDRESS/LENGTH` with an IP address and a decimal length; carries at
    /// most the text's first 64 characters.
    #[error("{0:?} is not a prefix: expected ADDRESS/LENGTH such as 127.0.1.0/24")]
    Syntax(String),
}

impl IpPrefix {
    /// A prefix with the host bits cleared, so equal prefixes compare equal.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PrefixError::Length { addr, len, max });
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(len)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(len)).into()),
        };
        Ok(Self { addr, len })
    }

    /// The network address, its host bits cleared.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits: at most 32 for IPv4, 128 for IPv6.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether the length is 0: a prefix that contains every address of its family.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` is in this prefix; an address of the other family never is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => u32::from(ip) & mask32(self.len) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(ip)) => u128::from(ip) & mask128(self.len) == u128::from(net),
            _ => false,
        }
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl TryFrom<(IpAddr, u8)> for IpPrefix {
    type Error = PrefixError;
    fn try_from((addr, len): (IpAddr, u8)) -> Result<Self, Self::Error> {
        Self::new(addr, len)
    }
}

impl From<IpPrefix> for (IpAddr, u8) {
    fn from(p: IpPrefix) -> Self {
        (p.addr, p.len)
    }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PrefixError::Syntax(s.chars().take(64).collect());
        let (addr, len) = s.split_once('/').ok_or_else(syntax)?;
        Self::new(addr.parse().map_err(|_| syntax())?, len.parse().map_err(|_| syntax())?)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Debug for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpPrefix({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_normalise_and_match() {
        let p: IpPrefix = "127.0.1.77/24".parse().unwrap();
        assert_eq!(p.to_string(), "127.0.1.0/24");
        assert!(p.contains("127.0.1.200".parse().unwrap()));
        assert!(!p.contains("127.0.2.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let all: IpPrefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("10.1.2.3".parse().unwrap()));
        let host: IpPrefix = "::1/128".parse().unwrap();
        assert!(host.contains("::1".parse().unwrap()));
        assert!("127.0.0.1/33".parse::<IpPrefix>().is_err());
        assert!("127.0.0.1".parse::<IpPrefix>().is_err());
        assert!("nonsense/8".parse::<IpPrefix>().is_err());
    }

    #[test]
    fn node_ids_are_checked() {
        let ok = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        assert_eq!(ok.parse::<NodeId>().unwrap().as_str(), ok);
        assert_eq!("".parse::<NodeId>(), Err(NodeIdError::Length(0)));
        assert_eq!("12D3Koo0".parse::<NodeId>(), Err(NodeIdError::Character('0')));
        assert!("x".repeat(65).parse::<NodeId>().is_err());
    }
}
