//! A node's persistent Ed25519 identity. Its PeerId is the node's name everywhere: trust
//! lists, the tracker's registry, logs and metrics. On the wire that name is a
//! [`NodeId`] (the PeerId's base58 text: the protocol crate knows no libp2p); [`node_id`] and
//! [`peer_of`] are the one conversion each way.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use fillmesh_protocol::{NodeId, NodeIdError};
use libp2p_identity::{Keypair, PeerId};

/// File under the data directory that holds the keypair (libp2p protobuf encoding).
pub const KEY_FILE: &str = "identity.key";

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading the key file or its permissions, creating the data directory, or writing a
    /// new key file failed.
    #[error("cannot read or write the identity in {path}")]
    Io {
        /// The key file's path, as shown.
        path: String,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The key file is not a keypair in libp2p's protobuf encoding (or a new key could not
    /// be encoded); the file is left as it is.
    #[error("{path} is not a valid identity key: {reason}")]
    Corrupt {
        /// The key file's path, as shown.
        path: String,
        /// libp2p's reason.
        reason: String,
    },
    /// The key file allows its group or others some access (Unix only); the key in it is
    /// not used.
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions {
        /// The key file's path, as shown.
        path: String,
        /// The file's permission bits (the low nine).
        mode: u32,
    },
}

/// Loads the node's keypair from `data_dir`, creating the directory and a fresh Ed25519 key
/// (readable by the owner only) on first start.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    let path = data_dir.join(KEY_FILE);
    let shown = path.display().to_string();
    let io_err = |source| IdentityError::Io { path: shown.clone(), source };
    match fs::read(&path) {
        Ok(bytes) => {
            check_private(&path).map_err(io_err)??;
            Keypair::from_protobuf_encoding(&bytes)
                .map_err(|e| IdentityError::Corrupt { path: shown.clone(), reason: e.to_string() })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir).map_err(io_err)?;
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| IdentityError::Corrupt { path: shown.clone(), reason: e.to_string() })?;
            write_private(&path, &bytes).map_err(io_err)?;
            Ok(key)
        }
        Err(e) => Err(io_err(e)),
    }
}

/// Writes a new key file with mode 0600 from the start (never world-readable, not even
/// briefly), durably, without replacing an existing one.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(unix)]
fn check_private(path: &Path) -> io::Result<Result<(), IdentityError>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    Ok(if mode & 0o077 != 0 {
        Err(IdentityError::Permissions { path: path.display().to_string(), mode })
    } else {
        Ok(())
    })
}

#[cfg(not(unix))]
fn check_private(_: &Path) -> io::Result<Result<(), IdentityError>> {
    Ok(Ok(()))
}

/// A fresh identity that lives only as long as the process (for one-shot tools).
pub fn ephemeral() -> Keypair {
    Keypair::generate_ed25519()
}

/// The PeerId of a keypair.
pub fn peer_id(key: &Keypair) -> PeerId {
    key.public().to_peer_id()
}

/// The node id of a PeerId: its base58 text. Every key's PeerId fits (an Ed25519 key's is 52
/// characters, the hash of a longer key 46); only a PeerId made by hand from a longer hash is
/// too long for a node id.
pub fn node_id(peer: &PeerId) -> Result<NodeId, NodeIdError> {
    NodeId::try_from(peer.to_base58())
}

/// The PeerId a node id spells, if it spells one (the protocol crate checks only its shape).
pub fn peer_of(node: &NodeId) -> Option<PeerId> {
    node.as_str().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node");
        let first = load_or_create(&data).unwrap();
        let again = load_or_create(&data).unwrap();
        assert_eq!(peer_id(&first), peer_id(&again));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(data.join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            fs::set_permissions(data.join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(load_or_create(&data), Err(IdentityError::Permissions { .. })));
        }
    }

    #[test]
    fn a_node_id_and_its_peer_id_convert_both_ways() {
        let peer = peer_id(&ephemeral());
        let node = node_id(&peer).unwrap();
        assert_eq!(node.as_str(), peer.to_string());
        assert_eq!(peer_of(&node), Some(peer));
        // Node ids that are not PeerIds: the protocol crate's shape check lets them through.
        assert_eq!(peer_of(&"origin".parse().unwrap()), None);
        assert_eq!(peer_of(&"12D3KooWpeer1".parse().unwrap()), None);
        // A SHA-256 multihash with a 64-byte digest is a PeerId of 90 characters.
        let long = PeerId::from_bytes(&[[0x12, 64].as_slice(), &[7; 64]].concat()).unwrap();
        assert!(matches!(node_id(&long), Err(NodeIdError::Length(90))));
    }

    #[test]
    fn a_corrupt_key_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        write_private(&dir.path().join(KEY_FILE), b"garbage").unwrap();
        assert!(matches!(load_or_create(dir.path()), Err(IdentityError::Corrupt { .. })));
    }
}
