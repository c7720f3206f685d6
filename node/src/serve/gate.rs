//! Playback authorization on the player servers: which requests for a title's bytes (and its
//! manifest) an appliance answers.
//!
//! Under a tracker that requires tokens (the default), a request must carry a token steering
//! signed ([`fillmesh_protocol::token`]) in its path, `/p/<token>/titles/<id>/...`, good for
//! that title, not expired, from the client's prefix if bound, signed by a key the trackers
//! hand out. Anything else is refused with one word ([`Refusal`]), counted by reason. A node
//! with no tracker serves anyone, as does a fleet whose trackers say tokens are off.
//!
//! The appliance holds only public keys, learnt from its trackers over the mesh
//! (`TrackerRequest::PlaybackKeys`, asked again whenever a tracker's epoch moves) and kept in
//! its data directory ([`KEY_FILE`]) so that it goes on checking tokens across a restart with
//! its trackers away. Until a tracker has answered, a node under trackers refuses what the
//! kept keys do not admit: it fails closed.
//!
//! A token is checked once: the verdict (its claims, once the signature held) is kept in a
//! bounded cache by the token's hash, so the hundreds of range requests of one play cost one
//! Ed25519 verification (41 us here) and then a hash and a lookup each. A cached verdict is
//! still checked for expiry, title, prefix and whether its key is still accepted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fillmesh_net::sync::LockExt;
use fillmesh_protocol::token::{unix_now, Claims, Decoded, KeyId, KeySet, PublicKey, Refusal, MAX_KEYS};
use fillmesh_protocol::TitleId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// The file in a node's data directory that keeps the public keys it learnt.
pub const KEY_FILE: &str = "playback-keys.pub.json";
/// Verdicts kept per generation; two generations are kept, so between this many and twice
/// as many recent tokens are checked without a signature (a verdict is ~100 bytes: 3 MiB at
/// most).
const CACHE_GENERATION: usize = 16_384;

/// What the player servers admit.
#[derive(Debug)]
pub struct Gate {
    state: RwLock<Arc<State>>,
    /// What each tracker said last (`None`: not yet heard), in the order of the node's
    /// trackers; the state is made of them.
    links: Mutex<Vec<Option<Said>>>,
    cache: Mutex<Cache>,
    /// Where the learnt keys are kept (none for an open node).
    file: Option<PathBuf>,
    metrics: GateMetrics,
}

/// What one tracker said: whether tokens are required, and the keys it hands out.
type Said = (bool, Vec<PublicKey>);

#[derive(Debug, Default)]
struct State {
    required: bool,
    keys: KeySet,
}

/// Verdicts by the BLAKE3 of the token's text, in two generations: when the current one is
/// full it becomes the previous one (the oldest verdicts go), so the cache stays bounded with
/// no bookkeeping per hit.
#[derive(Debug, Default)]
struct Cache {
    current: HashMap<[u8; 32], Claims>,
    previous: HashMap<[u8; 32], Claims>,
}

impl Cache {
    fn get(&mut self, hash: &[u8; 32]) -> Option<Claims> {
        if let Some(c) = self.current.get(hash) {
            return Some(*c);
        }
        let claims = self.previous.remove(hash)?;
        self.insert(*hash, claims);
        Some(claims)
    }

    fn insert(&mut self, hash: [u8; 32], claims: Claims) {
        if self.current.len() >= CACHE_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(hash, claims);
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// Refusals by reason, and how checks were answered.
#[derive(Debug)]
struct GateMetrics {
    refused: Family<[(&'static str, &'static str); 1], Counter>,
    checks: Family<[(&'static str, &'static str); 1], Counter>,
    /// Tokens checked by their signature (first sight).
    signature: Counter,
    /// Tokens admitted from the cache.
    cached: Counter,
}

impl Default for GateMetrics {
    fn default() -> Self {
        let refused = Family::<[(&'static str, &'static str); 1], Counter>::default();
        // Every reason from the start, so that a scrape shows a 0 rather than nothing.
        for why in Refusal::ALL {
            let _ = refused.get_or_create_owned(&[("reason", why.as_str())]);
        }
        let checks = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let signature = checks.get_or_create_owned(&[("kind", "signature")]);
        let cached = checks.get_or_create_owned(&[("kind", "cached")]);
        GateMetrics { refused, checks, signature, cached }
    }
}

/// A public key as kept in the node's key file: its id in hex, the key in base64url.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeptKey {
    id: String,
    key: String,
}

impl Gate {
    /// A node on its own: every request is served.
    pub fn open() -> Self {
        Gate {
            state: RwLock::new(Arc::new(State::default())),
            links: Mutex::new(Vec::new()),
            cache: Mutex::new(Cache::default()),
            file: None,
            metrics: GateMetrics::default(),
        }
    }

    /// A node under `trackers` trackers, keeping its keys in `data`: tokens required until the
    /// trackers say otherwise, checked with the keys kept there until they say which.
    pub fn under_trackers(trackers: usize, data: &Path) -> Self {
        let file = data.join(KEY_FILE);
        let keys = match read_keys(&file) {
            Ok(keys) => keys,
            Err(e) => {
                warn!("the kept playback keys are not read ({e}): none until a tracker answers");
                Vec::new()
            }
        };
        if !keys.is_empty() {
            info!(keys = keys.len(), "playback keys kept from an earlier run");
        }
        Gate {
            state: RwLock::new(Arc::new(State { required: true, keys: KeySet::new(keys) })),
            links: Mutex::new(vec![None; trackers]),
            cache: Mutex::new(Cache::default()),
            file: Some(file),
            metrics: GateMetrics::default(),
        }
    }

    fn state(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether requests need a token now.
    pub fn required(&self) -> bool {
        self.state().required
    }

    /// What tracker `link` says: whether tokens are required, and the keys to accept. Tokens
    /// are required if any tracker that answered requires them; the keys are all those the
    /// trackers hand out (a fleet's trackers hand out the same ones).
    pub fn learn(&self, link: usize, required: bool, keys: Vec<PublicKey>) {
        let (required, keys) = {
            let mut links = self.links.locked();
            if let Some(slot) = links.get_mut(link) {
                *slot = Some((required, keys));
            }
            let heard: Vec<&Said> = links.iter().flatten().collect();
            let required = heard.is_empty() || heard.iter().any(|(r, _)| *r);
            let keys = KeySet::new(heard.iter().flat_map(|(_, k)| k.iter().copied()));
            (required, keys)
        };
        let before = self.state();
        if before.required == required && before.keys.keys() == keys.keys() {
            return;
        }
        info!(
            required,
            keys = ?keys.keys().iter().map(|k| k.id.to_string()).collect::<Vec<_>>(),
            "playback tokens"
        );
        if let Some(file) = &self.file {
            if let Err(e) = write_keys(file, keys.keys()) {
                warn!("cannot keep the playback keys in {}: {e}", file.display());
            }
        }
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(State { required, keys });
    }

    /// Whether a request for `title` from `client` carrying `token` (the path's, if any) is
    /// served; the refusal's reason if not (counted).
    pub fn check(&self, token: Option<&str>, title: &TitleId, client: IpAddr) -> Result<(), Refusal> {
        let state = self.state();
        if !state.required {
            return Ok(());
        }
        let verdict = self.verdict(&state, token, title, client, unix_now());
        if let Err(why) = verdict {
            self.metrics.refused.get_or_create(&[("reason", why.as_str())]).inc();
        }
        verdict
    }

    fn verdict(
        &self,
        state: &State,
        token: Option<&str>,
        title: &TitleId,
        client: IpAddr,
        now: u64,
    ) -> Result<(), Refusal> {
        let token = token.ok_or(Refusal::Missing)?;
        if token.len() > fillmesh_protocol::token::MAX_TOKEN_TEXT {
            return Err(Refusal::Signature);
        }
        let hash = *blake3::hash(token.as_bytes()).as_bytes();
        let cached = self.cache.locked().get(&hash);
        let claims = match cached {
            // A key retired since: its tokens are refused at once, cached or not.
            Some(claims) if !state.keys.has(&claims.key) => return Err(Refusal::Key),
            Some(claims) => {
                self.metrics.cached.inc();
                claims
            }
            None => {
                self.metrics.signature.inc();
                let claims = state.keys.verify_decoded(&Decoded::from_text(token)?)?;
                self.cache.locked().insert(hash, claims);
                claims
            }
        };
        claims.admits(title, client, now)
    }

    /// Verdicts cached now.
    pub fn cached(&self) -> usize {
        self.cache.locked().len()
    }

    /// Registers the refusals and checks in the node's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "fillmesh_player_refused",
            "Player requests refused for their playback token, by reason (missing, expired, signature, title, prefix, key)",
            self.metrics.refused.clone(),
        );
        registry.register(
            "fillmesh_player_token_checks",
            "Playback tokens checked: by signature (first sight) or from the cache of verdicts",
            self.metrics.checks.clone(),
        );
    }
}

/// The keys kept in `file` (none if there is no file).
fn read_keys(file: &Path) -> Result<Vec<PublicKey>, String> {
    let text = match std::fs::read(file) {
        Ok(t) if t.len() <= 64 << 10 => t,
        Ok(t) => return Err(format!("{} bytes", t.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let kept: Vec<KeptKey> = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    for k in kept.into_iter().take(MAX_KEYS) {
        let id: KeyId = k.id.parse().map_err(|e| format!("{e}"))?;
        let key: [u8; 32] = URL_SAFE_NO_PAD
            .decode(&k.key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("key {id}: not 32 bytes of base64url"))?;
        keys.push(PublicKey { id, key });
    }
    Ok(keys)
}

/// Writes the keys to `file` (a new file renamed over the old one).
fn write_keys(file: &Path, keys: &[PublicKey]) -> std::io::Result<()> {
    let kept: Vec<KeptKey> =
        keys.iter().map(|k| KeptKey { id: k.id.to_string(), key: URL_SAFE_NO_PAD.encode(k.key) }).collect();
    let text = serde_json::to_vec_pretty(&kept).map_err(std::io::Error::other)?;
    let tmp = file.with_extension("new");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fillmesh_protocol::token::SigningKey;
    use fillmesh_protocol::IpPrefix;

    fn title(n: u8) -> TitleId {
        TitleId::from_bytes([n; 32])
    }

    #[test]
    fn an_open_node_serves_anyone_and_a_node_under_trackers_fails_closed() {
        let client: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(Gate::open().check(None, &title(1), client), Ok(()));
        let dir = tempfile::tempdir().unwrap();
        let gate = Gate::under_trackers(2, dir.path());
        assert_eq!(gate.check(None, &title(1), client), Err(Refusal::Missing));
        let key = SigningKey::generate().unwrap();
        let token = key.sign(title(1), unix_now() + 60, None).unwrap();
        // No tracker heard yet, no key kept: refused for its key.
        assert_eq!(gate.check(Some(&token), &title(1), client), Err(Refusal::Key));
        // One tracker says tokens are off, the other has not answered: off.
        gate.learn(0, false, Vec::new());
        assert_eq!(gate.check(None, &title(1), client), Ok(()));
        // The other requires them, with its key.
        gate.learn(1, true, vec![key.public()]);
        assert_eq!(gate.check(None, &title(1), client), Err(Refusal::Missing));
        assert_eq!(gate.check(Some(&token), &title(1), client), Ok(()));
        assert_eq!(gate.check(Some(&token), &title(2), client), Err(Refusal::Title));
    }

    #[test]
    fn a_verdict_is_cached_and_still_checked_for_each_request() {
        let dir = tempfile::tempdir().unwrap();
        let gate = Gate::under_trackers(1, dir.path());
        let key = SigningKey::generate().unwrap();
        gate.learn(0, true, vec![key.public()]);
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let prefix = IpPrefix::new(client, 24).unwrap();
        let token = key.sign(title(1), unix_now() + 60, Some(prefix)).unwrap();
        for _ in 0..3 {
            assert_eq!(gate.check(Some(&token), &title(1), client), Ok(()));
        }
        assert_eq!(gate.cached(), 1);
        assert_eq!((gate.metrics.signature.get(), gate.metrics.cached.get()), (1, 2));
        // Cached, yet still bound to its title and prefix.
        assert_eq!(gate.check(Some(&token), &title(2), client), Err(Refusal::Title));
        assert_eq!(gate.check(Some(&token), &title(1), "192.0.3.7".parse().unwrap()), Err(Refusal::Prefix));
        // Its key retired: refused at once, though cached.
        gate.learn(0, true, vec![SigningKey::generate().unwrap().public()]);
        assert_eq!(gate.check(Some(&token), &title(1), client), Err(Refusal::Key));
        let refused = |why: &'static str| gate.metrics.refused.get_or_create(&[("reason", why)]).get();
        assert_eq!((refused("title"), refused("prefix"), refused("key")), (1, 1, 1));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut cache = Cache::default();
        let claims =
            Claims { key: KeyId([0; 8]), token_id: [0; 16], title: title(1), expires: 0, prefix: None };
        for i in 0..(3 * CACHE_GENERATION as u32) {
            let mut hash = [0u8; 32];
            hash[..4].copy_from_slice(&i.to_be_bytes());
            cache.insert(hash, claims);
            assert!(cache.len() <= 2 * CACHE_GENERATION);
        }
    }

    #[test]
    fn learnt_keys_are_kept_and_only_public_halves() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        Gate::under_trackers(1, dir.path()).learn(0, true, vec![key.public()]);
        let text = std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
        assert!(!text.contains(&URL_SAFE_NO_PAD.encode(key.seed())));
        // A restart with the trackers away checks tokens with the kept keys.
        let again = Gate::under_trackers(1, dir.path());
        let token = key.sign(title(1), unix_now() + 60, None).unwrap();
        assert_eq!(again.check(Some(&token), &title(1), "127.0.0.1".parse().unwrap()), Ok(()));
    }
}
