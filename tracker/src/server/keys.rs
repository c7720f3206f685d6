//! Playback keys: the Ed25519 keys a tracker signs players' tokens with
//! ([`fillmesh_protocol::token`]), where they are kept, and the commands that add and retire
//! them.
//!
//! A lone tracker keeps them in its data directory, `playback-keys.json` (mode 0600), and
//! creates the first one when it first starts with tokens on. Trackers of a fleet keep them
//! in etcd, `P/keys/<key id>` (the fleet's store is the operator's: whoever reads it can sign),
//! and the first tracker to find none creates one. Either way a record is a seed, when it was
//! made, and until when it is still accepted:
//! - the newest key with no end signs;
//! - `fillmesh keys add` makes a new key, which signs from then on, and gives every other key
//!   an end (by default the tokens' longest life, 12 h, from now): their tokens still play
//!   until they expire, and then the keys drop out by themselves;
//! - `fillmesh keys retire ID` removes a key at once: its tokens are refused (`key`) as soon as
//!   appliances hear of it (the tracker's epoch moves; they ask again).
//!
//! The running tracker reads the file again when it changes (within 2 s); appliances
//! learn the public halves over the mesh (`TrackerRequest::PlaybackKeys`) and never see a
//! seed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fillmesh_protocol::token::{KeyError, KeyId, KeySet, PublicKey, SigningKey, MAX_KEYS};
use fillmesh_protocol::{IpPrefix, TitleId};
use serde::{Deserialize, Serialize};

/// The key file's name in a lone tracker's data directory.
pub const KEY_FILE: &str = "playback-keys.json";
/// How often a running tracker looks at its key file (and drops keys past their end).
pub(super) const RELOAD: Duration = Duration::from_secs(2);
/// The longest key file or etcd record read.
const MAX_RECORD_BYTES: u64 = 64 << 10;
/// How long `keys add` keeps the keys it supersedes accepted by default: the tokens'
/// default life.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(12 * 3600);

pub use fillmesh_protocol::token::unix_now;

/// One key as kept (in the file, or as an etcd value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// The key's id (16 hex digits), checked against the seed when read.
    pub id: String,
    /// The Ed25519 seed, base64url: the secret.
    pub seed: String,
    /// When it was made, Unix seconds: the newest key with no end signs.
    pub created: u64,
    /// Until when its tokens are still accepted, Unix seconds; none: it may sign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_until: Option<u64>,
}

/// The whole key file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    keys: Vec<KeyRecord>,
}

/// Why keys could not be read, written or changed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Reading or writing the key file.
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
    /// The key file or an etcd record is not what this tracker writes.
    #[error("{0}: {1}")]
    Malformed(String, String),
    /// A key could not be made or read.
    #[error("the key")]
    Key(#[from] KeyError),
    /// No key has this id.
    #[error("no key {0}")]
    NoSuchKey(String),
    /// Retiring it would leave no key to sign with.
    #[error("{0} is the only key that can sign: add a key first (`fillmesh keys add`)")]
    LastKey(String),
    /// More keys than a set holds.
    #[error("already {MAX_KEYS} keys: retire one first")]
    Full,
}

impl KeyRecord {
    /// A record of `key`, made at `created`.
    pub fn new(key: &SigningKey, created: u64) -> Self {
        KeyRecord {
            id: key.public().id.to_string(),
            seed: URL_SAFE_NO_PAD.encode(key.seed()),
            created,
            accepted_until: None,
        }
    }

    /// A new random key's record, made at `created`.
    pub fn generate(created: u64) -> Result<Self, KeysError> {
        Ok(Self::new(&SigningKey::generate()?, created))
    }

    /// The key, checked against its id.
    pub fn key(&self) -> Result<SigningKey, KeysError> {
        let bad = |why: &str| KeysError::Malformed(format!("key {}", self.id), why.to_owned());
        let seed: [u8; 32] = URL_SAFE_NO_PAD
            .decode(&self.seed)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("the seed is not 32 bytes of base64url"))?;
        let key = SigningKey::from_seed(&seed)?;
        if key.public().id.to_string() != self.id {
            return Err(bad("the id is not the seed's"));
        }
        Ok(key)
    }

    /// Decodes an etcd value (one record, JSON) within bounds.
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, KeysError> {
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Err(KeysError::Malformed("a key record".into(), format!("{} bytes", bytes.len())));
        }
        serde_json::from_slice(bytes).map_err(|e| KeysError::Malformed("a key record".into(), e.to_string()))
    }
}

/// The keys a tracker holds now: which one signs, and the public halves appliances accept.
#[derive(Debug, Default)]
pub(super) struct Ring {
    signer: Option<SigningKey>,
    public: KeySet,
    /// (id, accepted until) of every key held, for dropping keys past their end.
    ends: Vec<(KeyId, Option<u64>)>,
}

impl Ring {
    /// The ring of `records` as of Unix second `now`: a record past its end, or malformed
    /// (logged), is left out.
    pub(super) fn of(records: &[KeyRecord], now: u64) -> Self {
        let mut keys: Vec<(&KeyRecord, SigningKey)> = Vec::new();
        for record in records {
            if record.accepted_until.is_some_and(|until| until < now) {
                continue;
            }
            match record.key() {
                Ok(key) => keys.push((record, key)),
                Err(e) => tracing::warn!("playback key left out: {}", fillmesh_net::Chain(&e)),
            }
        }
        keys.sort_by_key(|(r, _)| std::cmp::Reverse(r.created));
        keys.truncate(MAX_KEYS);
        let public = KeySet::new(keys.iter().map(|(_, k)| k.public()));
        let ends = keys.iter().map(|(r, k)| (k.public().id, r.accepted_until)).collect();
        let signer = keys.into_iter().find(|(r, _)| r.accepted_until.is_none()).map(|(_, k)| k);
        Ring { signer, public, ends }
    }

    /// Whether a key of the ring has passed its end by `now` (the ring is then made again).
    fn lapsed(&self, now: u64) -> bool {
        self.ends.iter().any(|(_, until)| until.is_some_and(|u| u < now))
    }
}

/// Whether the fleet requires tokens, for how long steering makes them, and the keys.
pub(super) struct Tokens {
    /// Tokens on: steering signs, appliances enforce (they ask [`Tokens::public`]).
    pub(super) required: bool,
    /// The life of a token from steering.
    pub(super) ttl: Duration,
    ring: RwLock<Arc<Ring>>,
    /// The records the ring was made of (the file's, or etcd's by key).
    records: std::sync::Mutex<Vec<KeyRecord>>,
    /// Moves whenever the public keys change: added to the epoch appliances see, so they ask
    /// for the keys again.
    version: AtomicU64,
    /// The key file's last length and modification time, to read it only when it changed.
    seen: std::sync::Mutex<Option<(u64, SystemTime)>>,
    /// The ring has no signer yet (etcd not read): logged once.
    warned: AtomicBool,
}

/// A token and when it expires.
pub(super) struct Issued {
    pub(super) token: String,
    pub(super) expires: u64,
}

impl Tokens {
    pub(super) fn new(required: bool, ttl: Duration) -> Self {
        Tokens {
            required,
            ttl,
            ring: RwLock::new(Arc::new(Ring::default())),
            records: std::sync::Mutex::new(Vec::new()),
            version: AtomicU64::new(0),
            seen: std::sync::Mutex::new(None),
            warned: AtomicBool::new(false),
        }
    }

    fn ring(&self) -> Arc<Ring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What the epoch gains from the keys: moves when the public keys change.
    pub(super) fn version(&self) -> u64 {
        self.version.load(Relaxed)
    }

    /// The public keys appliances accept.
    pub(super) fn public(&self) -> Vec<PublicKey> {
        self.ring().public.keys().to_vec()
    }

    /// The public keys as a set (to check players' reports).
    pub(super) fn key_set(&self) -> KeySet {
        self.ring().public.clone()
    }

    /// A token for `title`, bound to `prefix` if given; `None` when tokens are off, or no key
    /// signs yet (logged once).
    pub(super) fn issue(&self, title: TitleId, prefix: Option<IpPrefix>) -> Option<Issued> {
        if !self.required {
            return None;
        }
        let ring = self.ring();
        let Some(signer) = ring.signer.as_ref() else {
            if !self.warned.swap(true, Relaxed) {
                tracing::warn!("no playback key to sign with yet: steering answers carry no token, and appliances refuse them");
            }
            return None;
        };
        let expires = unix_now().saturating_add(self.ttl.as_secs().max(1));
        match signer.sign(title, expires, prefix) {
            Ok(token) => Some(Issued { token, expires }),
            Err(e) => {
                tracing::warn!("cannot sign a token: {e}");
                None
            }
        }
    }

    /// Takes `records` as the keys (the file's whole content, or etcd's): the ring is made
    /// again, and the version moves if the public keys changed.
    pub(super) fn set(&self, records: Vec<KeyRecord>) {
        let ring = Ring::of(&records, unix_now());
        *self.records.lock().unwrap_or_else(|e| e.into_inner()) = records;
        self.install(ring);
    }

    fn install(&self, ring: Ring) {
        let before = self.ring();
        if before.public.keys() != ring.public.keys() {
            let ids: Vec<String> = ring.public.keys().iter().map(|k| k.id.to_string()).collect();
            let signer = ring.signer.as_ref().map(|k| k.public().id.to_string());
            tracing::info!(keys = ?ids, signer = ?signer, "playback keys");
            self.version.fetch_add(1, Relaxed);
        }
        if ring.signer.is_some() {
            self.warned.store(false, Relaxed);
        }
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
    }

    /// One record learnt from etcd (put) or gone from it (`None`: deleted), by id.
    pub(super) fn upsert(&self, id: &str, record: Option<KeyRecord>) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner()).clone();
        records.retain(|r| r.id != id);
        records.extend(record);
        self.set(records);
    }

    /// Whether any key is held (read or created).
    pub(super) fn has_keys(&self) -> bool {
        !self.records.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Reads the key file in `dir` again if it changed since last read, and drops keys past
    /// their end: called every [`RELOAD`].
    pub(super) fn refresh_file(&self, dir: &Path) {
        let path = dir.join(KEY_FILE);
        let stamp = std::fs::metadata(&path).ok().map(|m| (m.len(), m.modified().unwrap_or(UNIX_EPOCH)));
        let changed = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let changed = *seen != stamp;
            *seen = stamp;
            changed
        };
        if changed {
            match read_file(dir) {
                Ok(records) => return self.set(records),
                Err(e) => tracing::warn!("playback keys not read again: {}", fillmesh_net::Chain(&e)),
            }
        }
        self.drop_lapsed();
    }

    /// Makes the ring again if a key passed its end.
    pub(super) fn drop_lapsed(&self) {
        let now = unix_now();
        if self.ring().lapsed(now) {
            let records = self.records.lock().unwrap_or_else(|e| e.into_inner()).clone();
            self.install(Ring::of(&records, now));
        }
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> KeysError {
    move |e| KeysError::Io(what, e)
}

/// The records of the key file in `dir` (none if there is no file).
pub fn read_file(dir: &Path) -> Result<Vec<KeyRecord>, KeysError> {
    let path = dir.join(KEY_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_RECORD_BYTES + 1), &mut text)
        .map_err(io(format!("reading {}", path.display())))?;
    if text.len() as u64 > MAX_RECORD_BYTES {
        return Err(KeysError::Malformed(path.display().to_string(), "longer than 64 KiB".into()));
    }
    let file: KeyFile = serde_json::from_str(&text)
        .map_err(|e| KeysError::Malformed(path.display().to_string(), e.to_string()))?;
    Ok(file.keys)
}

/// Writes `records` as the key file in `dir`, readable by its owner only, replacing the old
/// one at once (a new file renamed over it, synced).
pub fn write_file(dir: &Path, records: &[KeyRecord]) -> Result<(), KeysError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(KEY_FILE);
    let tmp: PathBuf = dir.join(format!("{KEY_FILE}.new"));
    let text = serde_json::to_vec_pretty(&KeyFile { keys: records.to_vec() })
        .map_err(|e| KeysError::Malformed("the key file".into(), e.to_string()))?;
    let what = format!("writing {}", tmp.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(what.clone()))?;
    file.write_all(&text).map_err(io(what.clone()))?;
    file.sync_all().map_err(io(what))?;
    std::fs::rename(&tmp, &path).map_err(io(format!("replacing {}", path.display())))?;
    Ok(())
}

/// What `fillmesh keys` does to a key set.
#[derive(Debug, Clone)]
pub enum KeyOp {
    /// A new key that signs from now on; the others kept for `keep`, then dropped.
    Add {
        /// How long the superseded keys stay accepted.
        keep: Duration,
    },
    /// Removes the key of this id at once.
    Retire(String),
}

/// Applies `op` to `records` as of Unix second `now`: the records to keep, and a line for the
/// operator. Keys past their end are dropped on the way.
pub fn apply(
    op: &KeyOp,
    mut records: Vec<KeyRecord>,
    now: u64,
) -> Result<(Vec<KeyRecord>, String), KeysError> {
    records.retain(|r| r.accepted_until.is_none_or(|u| u >= now));
    match op {
        KeyOp::Add { keep } => {
            if records.len() >= MAX_KEYS {
                return Err(KeysError::Full);
            }
            let until = now.saturating_add(keep.as_secs());
            for r in records.iter_mut().filter(|r| r.accepted_until.is_none()) {
                r.accepted_until = Some(until);
            }
            let record = KeyRecord::generate(now)?;
            let line = format!(
                "added {}: it signs from now on; older keys are accepted until {until} (Unix seconds)",
                record.id
            );
            records.push(record);
            Ok((records, line))
        }
        KeyOp::Retire(id) => {
            let Some(at) = records.iter().position(|r| r.id == *id) else {
                return Err(KeysError::NoSuchKey(id.clone()));
            };
            let signers = records.iter().filter(|r| r.accepted_until.is_none()).count();
            if records[at].accepted_until.is_none() && signers == 1 {
                return Err(KeysError::LastKey(id.clone()));
            }
            records.remove(at);
            Ok((records, format!("retired {id}: its tokens are refused from now on")))
        }
    }
}

/// One line per key, for `fillmesh keys list`.
pub fn describe(records: &[KeyRecord], now: u64) -> Vec<String> {
    let signer = Ring::of(records, now).signer.map(|k| k.public().id.to_string());
    let mut records = records.to_vec();
    records.sort_by_key(|r| std::cmp::Reverse(r.created));
    records
        .iter()
        .map(|r| {
            let state = match r.accepted_until {
                _ if signer.as_deref() == Some(r.id.as_str()) => "signs".to_owned(),
                None => "accepted".to_owned(),
                Some(u) if u < now => "lapsed".to_owned(),
                Some(u) => format!("accepted for {} s more", u - now),
            };
            format!("{}  created {}  {state}", r.id, r.created)
        })
        .collect()
}

/// Where `fillmesh keys` finds the keys: a lone tracker's data directory, or a fleet's etcd.
#[derive(Debug, Clone)]
pub enum KeyStore {
    /// The data directory of a lone tracker (it reads the file again within 2 s).
    Dir(PathBuf),
    /// The fleet's etcd (every tracker watches it).
    Etcd {
        /// etcd's client URLs.
        endpoints: Vec<String>,
        /// The fleet's key prefix, ending with `/`.
        prefix: String,
    },
}

/// Why `fillmesh keys` failed against etcd or the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The keys themselves.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// etcd refused or could not be reached.
    #[error("etcd")]
    Etcd(#[from] etcd_client::Error),
}

impl KeyStore {
    /// The records kept there.
    pub async fn read(&self) -> Result<Vec<KeyRecord>, KeyStoreError> {
        match self {
            KeyStore::Dir(dir) => Ok(read_file(dir)?),
            KeyStore::Etcd { endpoints, prefix } => {
                let mut client = etcd_client::Client::connect(endpoints, None).await?;
                let answer = client
                    .get(
                        format!("{prefix}keys/"),
                        Some(etcd_client::GetOptions::new().with_prefix().with_limit(MAX_KEYS as i64 * 4)),
                    )
                    .await?;
                answer.kvs().iter().map(|kv| Ok(KeyRecord::decode(kv.value())?)).collect()
            }
        }
    }

    /// Applies `op` there; the operator's line.
    pub async fn change(&self, op: &KeyOp) -> Result<String, KeyStoreError> {
        let before = self.read().await?;
        let (after, line) = apply(op, before.clone(), unix_now())?;
        match self {
            KeyStore::Dir(dir) => write_file(dir, &after)?,
            KeyStore::Etcd { endpoints, prefix } => {
                let mut client = etcd_client::Client::connect(endpoints, None).await?;
                for record in &after {
                    if !before.contains(record) {
                        let value = serde_json::to_vec(record)
                            .map_err(|e| KeysError::Malformed("a key record".into(), e.to_string()))?;
                        client.put(format!("{prefix}keys/{}", record.id), value, None).await?;
                    }
                }
                for record in before.iter().filter(|r| !after.iter().any(|a| a.id == r.id)) {
                    client.delete(format!("{prefix}keys/{}", record.id), None).await?;
                }
            }
        }
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_signs_with_the_new_key_and_keeps_the_old_until_its_end() {
        let (records, _) = apply(&KeyOp::Add { keep: DEFAULT_KEEP }, Vec::new(), 1000).unwrap();
        let first = records[0].id.clone();
        let (records, _) = apply(&KeyOp::Add { keep: Duration::from_secs(60) }, records, 2000).unwrap();
        let second = records[1].id.clone();
        let ring = Ring::of(&records, 2000);
        assert_eq!(ring.signer.as_ref().unwrap().public().id.to_string(), second);
        assert_eq!(ring.public.keys().len(), 2);
        // Past the old key's end, only the new one is accepted.
        let later = Ring::of(&records, 2061);
        assert_eq!(later.public.keys().len(), 1);
        assert_eq!(later.public.keys()[0].id.to_string(), second);
        // The signer cannot be retired while it is the only one; the kept one can.
        assert!(matches!(
            apply(&KeyOp::Retire(second.clone()), records.clone(), 2000),
            Err(KeysError::LastKey(_))
        ));
        let (left, _) = apply(&KeyOp::Retire(first), records.clone(), 2000).unwrap();
        assert_eq!(left.len(), 1);
        assert!(matches!(apply(&KeyOp::Retire("0".repeat(16)), records, 2000), Err(KeysError::NoSuchKey(_))));
    }

    #[test]
    fn the_key_file_is_private_and_reads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(read_file(dir.path()).unwrap().is_empty());
        let (records, _) = apply(&KeyOp::Add { keep: DEFAULT_KEEP }, Vec::new(), 5).unwrap();
        write_file(dir.path(), &records).unwrap();
        assert_eq!(read_file(dir.path()).unwrap(), records);
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A record whose id is not its seed's is left out of the ring.
        let mut lying = records.clone();
        lying[0].id = "0".repeat(16);
        assert!(Ring::of(&lying, 5).signer.is_none());
        std::fs::write(dir.path().join(KEY_FILE), b"{\"keys\": 3}").unwrap();
        assert!(matches!(read_file(dir.path()), Err(KeysError::Malformed(..))));
    }
}
