//! Rate classes: what a node sends and receives, capped per class, players first.
//!
//! - `serve`: bytes sent to players (HTTP/3 and HTTPS on TCP), `--serve-rate`.
//! - `fill_upload`: chunk bytes sent to peers filling from this node, `--fill-upload-rate`.
//! - `fill_download`: chunk bytes this node's fills ask of its parents, `--fill-download-rate`.
//! - `total`: everything sent, players and peers together, `--upload-rate` (as before).
//!
//! A byte to a player passes its class's cap and then the total; a byte to a peer passes its
//! class's cap and then the total *behind* the players: it is reserved only once the total
//! bucket is out of debt, in pieces of [`TokenBucket::LOW_PIECE`], and the players never wait
//! for the debt such a piece runs up (it is paid after theirs), so under contention the
//! players' bytes go first while fill takes what they leave of the total. Every cap can change while the node runs ([`Rates::set`], for a reload), and
//! [`FillLive`] keeps the handles a reload sets: the caps and the fill window.

use std::sync::Arc;

use fillmesh_net::rate::TokenBucket;

use crate::window::FillWindows;

/// The caps, bytes per second; `None`: uncapped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateCaps {
    /// Everything sent, players and peers together (`--upload-rate`).
    pub upload: Option<u64>,
    /// Chunk bytes sent to peers filling from this node (`--fill-upload-rate`).
    pub fill_upload: Option<u64>,
    /// Chunk bytes this node's fills fetch (`--fill-download-rate`).
    pub fill_download: Option<u64>,
    /// Bytes sent to players (`--serve-rate`).
    pub serve: Option<u64>,
}

impl RateCaps {
    /// The upload a node registers with its trackers, which its share of fill layouts
    /// follows: what it may send peers (the lower of the fill upload and total caps), or
    /// 1 GB/s with neither.
    pub fn stated_upload(&self) -> u64 {
        match (self.fill_upload, self.upload) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => 1_000_000_000,
        }
    }
}

/// The node's rate buckets, one per class and one for the total.
#[derive(Debug)]
pub struct Rates {
    total: TokenBucket,
    serve: TokenBucket,
    fill_upload: TokenBucket,
    fill_download: TokenBucket,
}

impl Rates {
    /// Buckets at `caps`.
    pub fn new(caps: &RateCaps) -> Self {
        Self {
            total: TokenBucket::with_rate(caps.upload),
            serve: TokenBucket::with_rate(caps.serve),
            fill_upload: TokenBucket::with_rate(caps.fill_upload),
            fill_download: TokenBucket::with_rate(caps.fill_download),
        }
    }

    /// Every class uncapped.
    pub fn uncapped() -> Self {
        Self::new(&RateCaps::default())
    }

    /// The caps from now on (a reload).
    pub fn set(&self, caps: &RateCaps) {
        self.total.set_rate(caps.upload);
        self.serve.set_rate(caps.serve);
        self.fill_upload.set_rate(caps.fill_upload);
        self.fill_download.set_rate(caps.fill_download);
    }

    /// The caps in force.
    pub fn caps(&self) -> RateCaps {
        RateCaps {
            upload: self.total.rate(),
            fill_upload: self.fill_upload.rate(),
            fill_download: self.fill_download.rate(),
            serve: self.serve.rate(),
        }
    }

    /// Waits until `n` bytes may be sent to a player.
    pub async fn player(&self, n: u64) {
        self.serve.take(n).await;
        self.total.take(n).await;
    }

    /// Waits until `n` bytes may be sent to a peer filling from this node: its class's cap,
    /// then the total behind the players, a piece at a time.
    pub async fn fill_upload(&self, n: u64) {
        self.fill_upload.take(n).await;
        if self.total.rate().is_none() {
            return;
        }
        let piece = TokenBucket::LOW_PIECE as u64;
        let mut left = n;
        // Bounded: `n` over the piece size passes.
        while left > 0 {
            let take = left.min(piece);
            self.total.take_low(take).await;
            left -= take;
        }
    }

    /// Waits until `n` bytes may be fetched by a fill.
    pub async fn fill_download(&self, n: u64) {
        self.fill_download.take(n).await;
    }
}

/// What of a node's fill and rates a reload may change while it runs: the daemon keeps one
/// (the rate buckets the servers and fills share, and the fill window the tracker sessions
/// watch and send on).
#[derive(Debug)]
pub struct FillLive {
    /// The rate buckets.
    pub rates: Arc<Rates>,
    /// The fill window: sessions with trackers send it again when it changes.
    pub windows: tokio::sync::watch::Sender<FillWindows>,
}

impl FillLive {
    /// At `caps` and `windows`.
    pub fn new(caps: &RateCaps, windows: FillWindows) -> Self {
        Self { rates: Arc::new(Rates::new(caps)), windows: tokio::sync::watch::Sender::new(windows) }
    }

    /// Takes new caps and a new fill window (a reload): the caps at once, the window sent to
    /// every tracker. Says what changed, for the log (empty: nothing).
    pub fn apply(&self, caps: &RateCaps, windows: FillWindows) -> Vec<String> {
        let before = self.rates.caps();
        self.rates.set(caps);
        let mut changed: Vec<String> = [
            ("upload", before.upload, caps.upload),
            ("fill upload", before.fill_upload, caps.fill_upload),
            ("fill download", before.fill_download, caps.fill_download),
            ("serve", before.serve, caps.serve),
        ]
        .into_iter()
        .filter(|(_, from, to)| from != to)
        .map(|(class, from, to)| {
            let shown = |r: Option<u64>| r.map_or_else(|| "uncapped".to_owned(), |r| format!("{r} B/s"));
            format!("{class} rate changed ({} -> {})", shown(from), shown(to))
        })
        .collect();
        let window = windows.to_string();
        if self.windows.send_if_modified(|w| {
            let moved = *w != windows;
            *w = windows;
            moved
        }) {
            changed.push(format!("fill window -> {window}"));
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_change_live_and_the_stated_upload_is_what_peers_may_get() {
        let caps = RateCaps { upload: Some(100), fill_upload: Some(40), ..RateCaps::default() };
        assert_eq!(caps.stated_upload(), 40);
        assert_eq!(RateCaps { upload: Some(30), ..caps }.stated_upload(), 30);
        assert_eq!(RateCaps::default().stated_upload(), 1_000_000_000);
        let live = FillLive::new(&caps, FillWindows::always());
        assert_eq!(live.rates.caps(), caps);
        let window = FillWindows::parse(&["02:00-14:00"]).unwrap();
        let mut seen = live.windows.subscribe();
        let new = RateCaps { serve: Some(7), fill_download: Some(9), ..caps };
        let said = live.apply(&new, window.clone());
        assert_eq!(said.len(), 3, "{said:?}");
        assert_eq!(said[0], "fill download rate changed (uncapped -> 9 B/s)");
        assert_eq!(live.rates.caps(), new);
        assert!(seen.has_changed().unwrap());
        assert_eq!(*seen.borrow_and_update(), window);
        assert!(live.apply(&new, window).is_empty(), "the same again changes nothing");
        assert!(!seen.has_changed().unwrap());
    }
}
