//! The line a long-running process prints on stdout once it serves:
//! `fillmesh <node|tracker> <peer id> mesh <addr>[ http <addr>][ admin <addr>]`. Scripts, the
//! demo and the tests wait for it; this is its one definition, for the side that prints it and
//! the sides that read it.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// What is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessKind {
    /// A node: an appliance or the origin (`fillmesh node`).
    Node,
    /// A tracker (`fillmesh tracker`).
    Tracker,
}

impl ProcessKind {
    fn as_str(self) -> &'static str {
        match self {
            ProcessKind::Node => "node",
            ProcessKind::Tracker => "tracker",
        }
    }
}

/// A ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// What kind of process is ready.
    pub kind: ProcessKind,
    /// The process's PeerId, as text.
    pub peer: String,
    /// Where its QUIC endpoint listens (mesh, and `h3` for a node's players).
    pub mesh: SocketAddr,
    /// Where its HTTP server listens: always for a tracker (viewers: `/steer`, `/watch`), for
    /// a node only when it was given one (the node's operator surface: `/metrics`, ingest).
    pub http: Option<SocketAddr>,
    /// Where a tracker's operator listener (`--admin-http`: `/status`, `/metrics`, the fleet
    /// page) listens; `None` for a node.
    pub admin: Option<SocketAddr>,
}

impl fmt::Display for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fillmesh {} {} mesh {}", self.kind.as_str(), self.peer, self.mesh)?;
        if let Some(http) = self.http {
            write!(f, " http {http}")?;
        }
        if let Some(admin) = self.admin {
            write!(f, " admin {admin}")?;
        }
        Ok(())
    }
}

/// A line that is not a ready line.
#[derive(Debug, thiserror::Error)]
#[error("not a fillmesh ready line: {0:?}")]
pub struct NotReady(String);

impl FromStr for Ready {
    type Err = NotReady;

    fn from_str(line: &str) -> Result<Self, NotReady> {
        let bad = || NotReady(line.chars().take(200).collect());
        let words: Vec<&str> = line.split_whitespace().collect();
        let kind = match words.as_slice() {
            ["fillmesh", "node", _, "mesh", _, ..] => ProcessKind::Node,
            ["fillmesh", "tracker", _, "mesh", _, ..] => ProcessKind::Tracker,
            _ => return Err(bad()),
        };
        let addr = |word: &str| word.parse::<SocketAddr>().map_err(|_| bad());
        let (http, admin) = match &words[5..] {
            [] => (None, None),
            ["http", h] => (Some(addr(h)?), None),
            ["admin", a] => (None, Some(addr(a)?)),
            ["http", h, "admin", a] => (Some(addr(h)?), Some(addr(a)?)),
            _ => return Err(bad()),
        };
        Ok(Ready { kind, peer: words[2].to_owned(), mesh: addr(words[4])?, http, admin })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_line_reads_back_as_written() {
        let addrs = [None, Some("127.0.0.1:8080".parse().unwrap())];
        for (http, admin) in addrs.iter().flat_map(|h| addrs.iter().map(move |a| (*h, *a))) {
            for kind in [ProcessKind::Node, ProcessKind::Tracker] {
                let mesh = "127.0.0.2:4433".parse().unwrap();
                let ready = Ready { kind, peer: "12D3KooWabc".into(), mesh, http, admin };
                assert_eq!(ready.to_string().parse::<Ready>().unwrap(), ready);
            }
        }
    }

    #[test]
    fn other_lines_are_refused() {
        for line in [
            "",
            "fillmesh node x",
            "fillmesh node p mesh nowhere",
            "fillmesh seed p mesh 1.2.3.4:5",
            "fillmesh node p mesh 1.2.3.4:5 http",
            "fillmesh node p mesh 1.2.3.4:5 extra 1.2.3.4:6",
            "fillmesh tracker p mesh 1.2.3.4:5 admin 1.2.3.4:6 http 1.2.3.4:7",
            "fillmesh tracker p mesh 1.2.3.4:5 http 1.2.3.4:6 admin",
        ] {
            assert!(line.parse::<Ready>().is_err(), "{line}");
        }
    }
}
