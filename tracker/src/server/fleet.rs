//! Several trackers, one fleet: the catalog, the trust list and the tracker membership in
//! etcd, under one key prefix (so that two fleets can share a cluster):
//!
//! - `P/titles/<title id>`: a title's name and shape (postcard: chunk size and file lengths,
//!   never its chunk hashes), written on publish. Manifests travel over the mesh, between
//!   appliances, each verified against the title id; an earlier version's record (name and
//!   manifest) is still read, its manifest checked against the id and kept as its shape.
//! - `P/trust/<peer id>`: a PeerId allowed to register (each tracker adds its `--trust`).
//! - `P/trackers/<peer id>`: a tracker's record (JSON: `peer_id`, `addr`, `http`, `admin`)
//!   under its lease, kept alive while it runs; a tracker whose lease expires is out.
//! - `P/keys/<key id>`: a playback key (JSON: `id`, `seed`, `created`, `accepted_until`), the
//!   fleet's signing keys for players' tokens (`super::keys`): any tracker signs, every
//!   appliance accepts.
//!
//! This shell feeds the core what it reads (titles published, the live trackers) the way the
//! sled index does at start; the core never sees etcd. Everything read is input: its size is
//! bounded and it is validated, and a malformed value is logged and skipped. With etcd lost
//! the tracker keeps coordinating on what it knows (the last live set, the catalog it has),
//! says so in its log and in `fillmesh_tracker_etcd_up`, and resynchronises (a fresh lease,
//! a full read, a new watch) when etcd is back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use fillmesh_net::{identity, Chain};
use fillmesh_protocol::messages::{TrackerRequest, TrackerResponse, MAX_TEXT};
use fillmesh_protocol::{NodeId, NodeIdError, TitleId, TitleIdError};
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::keys::{KeyRecord, KeysError};
use super::persist::{CatalogRecord, RecordError};
use super::Shared;
use crate::core::fleet::MAX_TRACKERS;
use crate::core::TrackerInfo;

/// The longest value written or read under the prefix (etcd's own request limit is 1.5 MiB).
/// A catalog record is a name and a shape, whatever the title's chunk count (up to
/// `Manifest::MAX_CHUNKS`, 262,144): a varint per file length for at most 100,000 files
/// (`package::MAX_FILES`), and a name of at most `MAX_TEXT` bytes. The most the bounds allow
/// is 454,314 bytes (the test `the_largest_catalog_record_fits`), so every title's record
/// fits. Earlier versions kept the manifest here, 32 bytes a chunk, which refused a title of
/// more than 32,767 chunks (a 32 GiB file at 1 MiB chunks).
pub(super) const MAX_VALUE: usize = 1 << 20;
/// The longest tracker record.
const MAX_TRACKER_RECORD: usize = 1024;
/// Most keys read under the prefix in one full read.
const MAX_KEYS: usize = 100_000;
/// Keys per page of that read: with values of etcd's largest (1.5 MiB), a page stays under
/// [`MAX_MESSAGE`].
const PAGE: i64 = 32;
/// The largest answer decoded from etcd (a page of the read, a batch of watch events).
const MAX_MESSAGE: usize = 64 << 20;
/// Time allowed for one etcd request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the fleet's store refused or failed: etcd not reached at start (`Unreachable`), a
/// request to it failed (`Etcd`), a value this tracker would write is refused before it is
/// sent (`TooLarge`, the encodings), or the session ended (the lease, the keepalive, the
/// watch).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// At start, connecting to etcd or the first read under the prefix failed.
    #[error("cannot reach etcd at {endpoints}")]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The etcd client's error.
        source: etcd_client::Error,
    },
    /// A request to etcd failed once connected: a put, the lease, the read or the watch.
    #[error("etcd")]
    Etcd(#[from] etcd_client::Error),
    /// A title's catalog record encodes to more than `MAX_VALUE` (1 MiB), the most this
    /// tracker writes to etcd: the title and the record's size in bytes. Nothing was sent.
    #[error("the catalog record of {0} is {1} bytes, more than etcd takes ({MAX_VALUE})")]
    TooLarge(TitleId, usize),
    /// A title's catalog record could not be encoded (postcard). Nothing was sent.
    #[error("encoding the catalog record")]
    EncodeCatalog(#[source] postcard::Error),
    /// This tracker's own record could not be encoded (JSON).
    #[error("encoding the tracker record")]
    EncodeTracker(#[source] serde_json::Error),
    /// The keepalive answers said the lease is gone (a TTL of 0), or their stream ended.
    #[error("the lease expired")]
    LeaseExpired,
    /// A keepalive could not be sent within `REQUEST_TIMEOUT` (3 s).
    #[error("the keepalive was not sent within {REQUEST_TIMEOUT:?}")]
    KeepaliveNotSent,
    /// No keepalive answer came within the lease's length plus 3 s.
    #[error("no keepalive answer")]
    NoKeepaliveAnswer,
    /// etcd ended the watch's stream.
    #[error("the watch was closed by etcd")]
    WatchClosed,
    /// etcd canceled the watch. With etcd's reason.
    #[error("the watch was canceled: {0}")]
    WatchCanceled(String),
}

/// Why a key read under the prefix is skipped: what it is not.
#[derive(Debug, thiserror::Error)]
enum Malformed {
    #[error("the key is not UTF-8")]
    KeyNotUtf8,
    #[error("outside the prefix")]
    OutsidePrefix,
    #[error("no kind/name")]
    NoKind,
    #[error("unknown kind {0:?}")]
    UnknownKind(String),
    #[error("title id")]
    TitleId(#[source] TitleIdError),
    #[error("peer id")]
    PeerId(#[source] libp2p_identity::ParseError),
    #[error("tracker id")]
    TrackerId(#[source] NodeIdError),
    #[error("playback key")]
    Key(#[source] KeysError),
    #[error("{len} bytes, more than {max}")]
    TooLong { len: usize, max: usize },
    #[error("the name is too long")]
    NameTooLong,
    #[error("the catalog record")]
    Record(#[source] RecordError),
    #[error("the tracker record")]
    TrackerRecord(#[source] serde_json::Error),
    #[error("the record names {0}")]
    OtherTracker(String),
}

/// Where the fleet's store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// etcd's client URLs, e.g. `http://127.0.0.1:2379`; with none, connecting fails
    /// ([`FleetError::Unreachable`]).
    pub endpoints: Vec<String>,
    /// Key prefix, e.g. `/fillmesh/`.
    pub prefix: String,
    /// The tracker's lease, in seconds: out of the fleet this long after its last keepalive.
    pub lease_secs: u64,
}

/// A tracker's record in etcd.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrackerRecord {
    peer_id: String,
    addr: SocketAddr,
    http: SocketAddr,
    /// The operators' listener; absent in a record written before there were two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    admin: Option<SocketAddr>,
}

/// What one key under the prefix is, once read and validated.
#[derive(Debug)]
enum Entry {
    Title(TitleId, CatalogRecord),
    Trust(PeerId),
    Tracker(TrackerInfo),
    Key(KeyRecord),
    /// A title published urgent (`urgent/<title>`, an empty value): trackers of earlier
    /// builds skip the kind as unknown.
    Urgent(TitleId),
}

/// The etcd client and what this tracker writes.
pub(super) struct Fleet {
    client: Client,
    config: EtcdConfig,
    me: TrackerInfo,
    /// The lease held now (0: none yet).
    lease: AtomicI64,
}

impl Fleet {
    /// Connects and reads the prefix once: etcd unreachable is an error that names the
    /// endpoints.
    pub(super) async fn connect(config: EtcdConfig, me: TrackerInfo) -> Result<Self, FleetError> {
        let endpoints = config.endpoints.join(",");
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), REQUEST_TIMEOUT);
        let unreachable = |source| FleetError::Unreachable { endpoints: endpoints.clone(), source };
        let mut client = Client::connect(&config.endpoints, Some(options)).await.map_err(unreachable)?;
        client
            .get(config.prefix.as_bytes(), Some(GetOptions::new().with_prefix().with_count_only()))
            .await
            .map_err(unreachable)?;
        Ok(Self { client, config, me, lease: AtomicI64::new(0) })
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}/{name}", self.config.prefix)
    }

    /// Leaves the fleet at once (the lease revoked: the others take this tracker's titles now,
    /// not when the lease would have expired), at shutdown.
    pub(super) async fn leave(&self) {
        let lease = self.lease.swap(0, Relaxed);
        if lease != 0 {
            let mut client = self.client.clone();
            match tokio::time::timeout(REQUEST_TIMEOUT, client.lease_revoke(lease)).await {
                Ok(Ok(_)) => info!("left the fleet"),
                Ok(Err(e)) => warn!("cannot leave the fleet at once ({}): the lease will expire", Chain(&e)),
                Err(_) => {
                    warn!("cannot leave the fleet at once (etcd did not answer): the lease will expire")
                }
            }
        }
    }

    /// Writes a title to the catalog; answered once etcd has it.
    pub(super) async fn publish(&self, title: TitleId, record: &CatalogRecord) -> Result<(), FleetError> {
        let bytes = postcard::to_allocvec(record).map_err(FleetError::EncodeCatalog)?;
        if bytes.len() > MAX_VALUE {
            return Err(FleetError::TooLarge(title, bytes.len()));
        }
        self.client.clone().put(self.key("titles", &title.to_string()), bytes, None).await?;
        Ok(())
    }

    /// Marks a title urgent in the fleet (after its catalog record); answered once etcd has it.
    pub(super) async fn mark_urgent(&self, title: TitleId) -> Result<(), FleetError> {
        self.client.clone().put(self.key("urgent", &title.to_string()), Vec::new(), None).await?;
        Ok(())
    }

    /// Writes a playback key to the fleet's key set.
    pub(super) async fn put_key(&self, record: &KeyRecord) -> Result<(), FleetError> {
        let value = serde_json::to_vec(record).map_err(FleetError::EncodeTracker)?;
        self.client.clone().put(self.key("keys", &record.id), value, None).await?;
        Ok(())
    }

    /// Adds PeerIds to the fleet's trust list.
    pub(super) async fn trust(&self, peers: &[PeerId]) -> Result<(), FleetError> {
        let mut client = self.client.clone();
        for peer in peers {
            client.put(self.key("trust", &peer.to_string()), Vec::new(), None).await?;
        }
        Ok(())
    }

    /// Reads one key: what it is, or why it is skipped.
    fn parse(&self, key: &[u8], value: &[u8]) -> Result<Entry, Malformed> {
        let key = std::str::from_utf8(key).map_err(|_| Malformed::KeyNotUtf8)?;
        let rest = key.strip_prefix(self.config.prefix.as_str()).ok_or(Malformed::OutsidePrefix)?;
        let (kind, name) = rest.split_once('/').ok_or(Malformed::NoKind)?;
        match kind {
            "titles" => {
                let title: TitleId = name.parse().map_err(Malformed::TitleId)?;
                if value.len() > MAX_VALUE {
                    return Err(Malformed::TooLong { len: value.len(), max: MAX_VALUE });
                }
                let record = CatalogRecord::decode(&title, value).map_err(Malformed::Record)?;
                if record.name.len() > MAX_TEXT {
                    return Err(Malformed::NameTooLong);
                }
                Ok(Entry::Title(title, record))
            }
            "trust" => Ok(Entry::Trust(name.parse().map_err(Malformed::PeerId)?)),
            "urgent" => Ok(Entry::Urgent(name.parse().map_err(Malformed::TitleId)?)),
            "trackers" => {
                if value.len() > MAX_TRACKER_RECORD {
                    return Err(Malformed::TooLong { len: value.len(), max: MAX_TRACKER_RECORD });
                }
                let record: TrackerRecord =
                    serde_json::from_slice(value).map_err(Malformed::TrackerRecord)?;
                if record.peer_id != name {
                    return Err(Malformed::OtherTracker(record.peer_id));
                }
                let peer_id: NodeId = name.parse().map_err(Malformed::TrackerId)?;
                Ok(Entry::Tracker(TrackerInfo {
                    peer_id,
                    addr: record.addr,
                    http: record.http,
                    admin: record.admin,
                }))
            }
            "keys" => {
                let record = KeyRecord::decode(value).map_err(Malformed::Key)?;
                if record.id != name {
                    return Err(Malformed::Key(KeysError::Malformed(
                        name.to_owned(),
                        "another key's record".into(),
                    )));
                }
                Ok(Entry::Key(record))
            }
            other => Err(Malformed::UnknownKind(other.to_owned())),
        }
    }
}

/// What the shell has read under the prefix: the live trackers by key (titles and trust
/// entries go to the core and the trust gate as they are read; neither is ever removed).
#[derive(Default)]
struct View {
    trackers: BTreeMap<Vec<u8>, TrackerInfo>,
    /// The playback keys, by etcd key: the whole set, given to the signer at each apply.
    keys: BTreeMap<Vec<u8>, KeyRecord>,
    /// A key was put or deleted since the last apply.
    keys_moved: bool,
}

impl View {
    /// Applies one key's value; a malformed one is logged and skipped.
    fn put(&mut self, fleet: &Fleet, shared: &Shared, key: &[u8], value: &[u8]) {
        match fleet.parse(key, value) {
            Ok(Entry::Title(title, record)) => {
                let now = shared.now();
                let known = shared.core().shape(&title).is_some();
                if !known {
                    match shared.core().publish(now, title, record.name, &record.shape) {
                        Ok(()) => info!(%title, "title learnt from the fleet's catalog"),
                        Err(e) => warn!(%title, "catalog entry not taken: {}", Chain(&e)),
                    }
                }
            }
            Ok(Entry::Trust(peer)) => shared.trust.add(peer),
            Ok(Entry::Urgent(title)) => {
                // Read after the title's record (`titles/` sorts before `urgent/`, and the
                // origin writes the mark after publishing).
                let now = shared.now();
                let fresh = !shared.core().is_urgent(&title);
                if fresh {
                    match shared.core().mark_urgent(now, &title) {
                        Ok(()) => info!(%title, "title marked urgent in the fleet's catalog"),
                        Err(e) => warn!(%title, "urgent mark not taken: {}", Chain(&e)),
                    }
                }
            }
            Ok(Entry::Tracker(info)) => {
                if let Some(peer) = identity::peer_of(&info.peer_id) {
                    // Trackers ask one another (steering for a title another one owns).
                    shared.trust.add(peer);
                }
                if self.trackers.len() < MAX_TRACKERS || self.trackers.contains_key(key) {
                    self.trackers.insert(key.to_vec(), info);
                } else {
                    warn!("more than {MAX_TRACKERS} trackers in the fleet: one ignored");
                }
            }
            Ok(Entry::Key(record)) => {
                if self.keys.len() < fillmesh_protocol::token::MAX_KEYS || self.keys.contains_key(key) {
                    self.keys.insert(key.to_vec(), record);
                    self.keys_moved = true;
                } else {
                    warn!(
                        "more than {} playback keys in the fleet: one ignored",
                        fillmesh_protocol::token::MAX_KEYS
                    );
                }
            }
            Err(e) => {
                warn!(key = %String::from_utf8_lossy(&key[..key.len().min(200)]), "skipped a malformed entry in etcd: {}", Chain(&e))
            }
        }
    }

    fn delete(&mut self, key: &[u8]) {
        self.trackers.remove(key);
        if self.keys.remove(key).is_some() {
            self.keys_moved = true;
        }
    }

    /// Tells the core the live set as read, and the signer the keys.
    fn apply(&mut self, fleet: &Fleet, shared: &Shared) {
        if std::mem::take(&mut self.keys_moved) {
            shared.tokens.set(self.keys.values().cloned().collect());
        }
        let live: Vec<TrackerInfo> = self.trackers.values().cloned().collect();
        let before = shared.core().live_trackers();
        shared.core().set_fleet(fleet.me.peer_id.clone(), live);
        let after = shared.core().live_trackers();
        if before != after {
            info!(live = ?after.iter().map(|t| t.as_str()).collect::<Vec<_>>(), "the fleet's live trackers changed");
        }
        shared.wake.notify_one();
    }
}

/// Keeps this tracker in the fleet until the process ends: a lease and its record, a full
/// read of the prefix, then the watch; on any failure, says so, waits and starts again.
/// `read` is answered once the prefix has been read and applied the first time.
pub(super) async fn run(fleet: Arc<Fleet>, shared: Arc<Shared>, read: oneshot::Sender<()>) {
    let mut backoff = Duration::from_millis(250);
    let mut read = Some(read);
    let lease = Duration::from_secs(fleet.config.lease_secs.max(1));
    let mut lost_at = tokio::time::Instant::now();
    let mut checked_at = None;
    loop {
        let error = session(&fleet, &shared, &mut read).await;
        if shared.etcd_up.get() != 0 {
            warn!("lost etcd ({}): coordinating on what is known until it is back", Chain(&error));
            lost_at = tokio::time::Instant::now();
            checked_at = None;
            backoff = Duration::from_millis(250);
        }
        shared.etcd_up.set(0);
        // Cut off for longer than a lease: this tracker's lease may have expired while the
        // others still read etcd and took its titles. It asks them.
        let due = checked_at.is_none_or(|at: tokio::time::Instant| at.elapsed() >= lease / 2);
        if lost_at.elapsed() >= lease && due {
            step_down_if_out(&fleet, &shared).await;
            checked_at = Some(tokio::time::Instant::now());
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// With etcd lost, asks the other trackers of the last known fleet for their live set: one
/// that still reads etcd and no longer counts this tracker (its lease expired) has taken its
/// titles, so this tracker adopts that set and stops coordinating them. Trackers that lost
/// etcd too answer the set they last read, which still counts this one: then nothing
/// changes, and every tracker goes on with the same view (etcd down for all: leases do not
/// expire while no member runs). So two trackers coordinate one title at once for about a
/// lease interval at most, not for the whole partition.
async fn step_down_if_out(fleet: &Fleet, shared: &Shared) {
    let Some(pool) = &shared.peers else { return };
    let me = &fleet.me.peer_id;
    let others: Vec<TrackerInfo> = {
        let core = shared.core();
        let live = core.live_trackers();
        if !live.contains(me) {
            return;
        }
        live.iter().filter(|t| *t != me).filter_map(|t| core.tracker_info(t).cloned()).collect()
    };
    for other in others {
        let live = match super::ask_tracker(pool, &other, &TrackerRequest::Trackers).await {
            Ok(TrackerResponse::Trackers { live }) => live,
            _ => continue,
        };
        if live.contains(me) {
            continue;
        }
        let mut core = shared.core();
        let infos: Vec<TrackerInfo> = live.iter().filter_map(|t| core.tracker_info(t).cloned()).collect();
        core.set_fleet(me.clone(), infos);
        drop(core);
        shared.wake.notify_one();
        warn!(told_by = %other.peer_id, "cut off from etcd and out of the fleet (its lease expired): this tracker coordinates no title until etcd is back");
        return;
    }
}

/// Reads every key under the prefix into `view`, in pages all at the revision of the first
/// (one consistent snapshot); returns that revision, which the watch starts after.
async fn read_prefix(fleet: &Fleet, shared: &Shared, view: &mut View) -> Result<i64, FleetError> {
    let mut kv = fleet.client.kv_client().max_decoding_message_size(MAX_MESSAGE);
    let prefix = fleet.config.prefix.as_bytes();
    // The first key past the prefix: its last byte plus one (the prefix ends with '/').
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last = last.saturating_add(1);
    }
    let (mut from, mut revision, mut read) = (prefix.to_vec(), 0, 0);
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision != 0 {
            options = options.with_revision(revision);
        }
        let page = kv.get(from.clone(), Some(options)).await?;
        if revision == 0 {
            revision = page.header().map_or(0, |h| h.revision());
        }
        for entry in page.kvs() {
            view.put(fleet, shared, entry.key(), entry.value());
        }
        read += page.kvs().len();
        let Some(last) = page.kvs().last() else { break };
        if !page.more() {
            break;
        }
        if read >= MAX_KEYS {
            warn!("more than {MAX_KEYS} keys under the prefix: the rest is not read");
            break;
        }
        from = last.key().to_vec();
        from.push(0);
    }
    Ok(revision)
}

async fn session(fleet: &Fleet, shared: &Shared, read: &mut Option<oneshot::Sender<()>>) -> FleetError {
    match try_session(fleet, shared, read).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn try_session(
    fleet: &Fleet,
    shared: &Shared,
    read: &mut Option<oneshot::Sender<()>>,
) -> Result<std::convert::Infallible, FleetError> {
    let mut client = fleet.client.clone();
    let ttl = i64::try_from(fleet.config.lease_secs.max(1)).unwrap_or(60);
    let lease = client.lease_grant(ttl, None).await?.id();
    fleet.lease.store(lease, Relaxed);
    let record = TrackerRecord {
        peer_id: fleet.me.peer_id.to_string(),
        addr: fleet.me.addr,
        http: fleet.me.http,
        admin: fleet.me.admin,
    };
    let value = serde_json::to_vec(&record).map_err(FleetError::EncodeTracker)?;
    let key = fleet.key("trackers", fleet.me.peer_id.as_str());
    let (mut keeper, mut kept) = client.lease_keep_alive(lease).await?;
    // A full read gives the whole key set (keys deleted while etcd was away included).
    let mut view = View { keys_moved: true, ..View::default() };
    let revision = read_prefix(fleet, shared, &mut view).await?;
    view.apply(fleet, shared);
    if let Some(read) = read.take() {
        let _ = read.send(());
    }
    let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let (_watcher, mut watch) = client
        .watch_client()
        .max_decoding_message_size(MAX_MESSAGE)
        .watch(fleet.config.prefix.as_bytes(), Some(options))
        .await?;
    if shared.etcd_up.get() == 0 {
        info!(lease, revision, "in the fleet: lease held, catalog read, watching");
    }
    shared.etcd_up.set(1);
    let mut renew = tokio::time::interval(Duration::from_millis((ttl as u64 * 1000 / 3).max(100)));
    let mut announced = false;
    loop {
        tokio::select! {
            _ = renew.tick() => {
                tokio::time::timeout(REQUEST_TIMEOUT, keeper.keep_alive())
                    .await
                    .map_err(|_| FleetError::KeepaliveNotSent)??;
                // Live (an owner of titles) only once warm: see `Shared::warm`.
                if !announced && shared.warm() {
                    client.put(key.as_str(), value.clone(), Some(PutOptions::new().with_lease(lease))).await?;
                    info!("live in the fleet: this tracker now owns its share of the titles");
                    announced = true;
                }
            }
            answer = tokio::time::timeout(Duration::from_secs(ttl as u64 + 3), kept.message()) => {
                match answer {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                    Ok(Ok(_)) => return Err(FleetError::LeaseExpired),
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => return Err(FleetError::NoKeepaliveAnswer),
                }
            }
            message = watch.message() => {
                let Some(response) = message? else {
                    return Err(FleetError::WatchClosed);
                };
                if response.canceled() {
                    return Err(FleetError::WatchCanceled(response.cancel_reason().to_owned()));
                }
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    match event.event_type() {
                        EventType::Put => view.put(fleet, shared, kv.key(), kv.value()),
                        EventType::Delete => view.delete(kv.key()),
                    }
                }
                view.apply(fleet, shared);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use fillmesh_protocol::{ChunkSize, Manifest, Shape};

    use super::*;

    /// The largest catalog record the bounds allow fits one etcd value. Its shape's file
    /// lengths are varints: a file of 2^28 bytes or more takes 5 bytes and 4 chunks of the
    /// largest size (64 MiB), a file of 2^21 to 2^26 bytes 4 bytes and one chunk, anything
    /// longer than 5 bytes needs 512 chunks. So the most bytes are as many 5-byte files as the
    /// chunk limit leaves room for, the rest 4-byte ones, with the longest name.
    #[test]
    fn the_largest_catalog_record_fits() {
        let files = fillmesh_protocol::package::MAX_FILES as u64;
        let five = (Manifest::MAX_CHUNKS - files) / 3;
        let mut lens = vec![1u64 << 28; five as usize];
        lens.resize(files as usize, 1 << 21);
        let shape = Shape::new(ChunkSize::MAX, true, lens).unwrap();
        assert_eq!(shape.chunk_count() as u64, files - five + 4 * five);
        let record = CatalogRecord { name: "n".repeat(MAX_TEXT), shape };
        let bytes = postcard::to_allocvec(&record).unwrap();
        assert_eq!(bytes.len(), 454_314, "the figure in MAX_VALUE's doc");
        assert!(bytes.len() <= MAX_VALUE);
    }

    /// The binary prints the error `run` returns with its causes (anyhow's `{:#}`), the log
    /// prints one with `chain`: a cause that its wrapper's own text repeated showed twice.
    #[test]
    fn a_failure_and_its_cause_each_show_once() {
        let cause = || etcd_client::Error::InvalidArgs("no endpoint".into());
        let unreachable =
            || FleetError::Unreachable { endpoints: "http://127.0.0.1:1".into(), source: cause() };
        let text = "cannot reach etcd at http://127.0.0.1:1: invalid arguments: no endpoint";
        assert_eq!(format!("{:#}", anyhow::Error::from(unreachable())), text);
        assert_eq!(Chain(&unreachable()).to_string(), text);
        assert_eq!(Chain(&FleetError::from(cause())).to_string(), "etcd: invalid arguments: no endpoint");
    }
}
