//! `fillmesh play`: a player that trusts nothing but the title id.
//!
//! It asks the tracker where to go, fetches the manifest from the first appliance and checks
//! it against the id, then streams the title in order over HTTP/3 with a window of chunk-sized
//! range requests in flight, verifying every chunk before a byte of it is written. Each chunk
//! is asked of the nearest target first; one that answers 503 (a range it does not hold yet,
//! as a partial holder does while the title fills) is passed over for that chunk only, so the
//! player moves down the list and comes back with the next chunk. An appliance that errors,
//! stalls or sends a bad chunk is dropped for the rest of the play. A chunk that fails
//! verification is also reported to the tracker (`POST /report`), which counts this player
//! toward the appliance's corrupt-chunk quorum.
//!
//! Each steering answer with targets is kept (see [`super::steer_cache`]); when the tracker
//! cannot be reached (no connection, a timeout, a 5xx), the player plays from the answer kept
//! for the title, if it is recent enough, and says so on standard error. A tracker that
//! answers, even with no targets ("unknown title"), is believed: the cache is not used.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bytes::{Buf, Bytes, BytesMut};
use clap::Args;
use fillmesh_protocol::steering::{PlayerReport, SteerAnswer, SteerEntry};
use fillmesh_protocol::{Manifest, TitleId};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use fillmesh_net::tls::{player_client_config, SERVER_NAME};

use super::steer_cache::{human, SteerCache};
use super::{is_stdout, report, units};
use crate::rate::TokenBucket;

/// How to play.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// The trackers' HTTP URLs, tried in turn (several: trackers of one fleet).
    pub tracker_http: Vec<String>,
    pub client_ip: Option<IpAddr>,
    pub out: Option<PathBuf>,
    /// Chunk requests in flight.
    pub window: usize,
    /// An appliance that delivers nothing for this long is dropped.
    pub stall: Duration,
    /// Consume at most this many bytes per second, as a player at a bitrate does.
    pub rate: Option<u64>,
    /// The local address to reach the tracker and the appliances from (any, if `None`).
    pub bind: Option<IpAddr>,
    /// Where steering answers are kept, to play from when the tracker cannot be reached.
    pub steer_cache: Option<SteerCache>,
}

/// What a play did.
#[derive(Debug, Clone)]
pub struct PlaySummary {
    pub title: TitleId,
    pub bytes: u64,
    pub time_to_first_byte: Duration,
    pub total: Duration,
    /// (peer id, site, region, bytes) per appliance that sent chunks, in the order first used.
    pub appliances: Vec<(String, String, String, u64)>,
    /// Targets dropped for an error, a stall or a bad chunk.
    pub failovers: u32,
    /// Chunk requests answered 503 (not held there yet) and asked of the next target.
    pub misses: u32,
}

type Target = SteerEntry;

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// One appliance's HTTP/3 session.
struct Session {
    send: SendRequest,
    endpoint: quinn::Endpoint,
}

impl Session {
    async fn open(target: &Target, local: Option<IpAddr>) -> anyhow::Result<Self> {
        let pin = target
            .cert_pin()
            .with_context(|| format!("steering gave no certificate fingerprint for {}", target.peer_id))?;
        let authority = target
            .url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.as_str().to_owned()))
            .with_context(|| format!("bad appliance URL {}", target.url))?;
        let addr: SocketAddr = authority.parse().with_context(|| format!("appliance address {authority}"))?;
        let any: IpAddr = if addr.is_ipv4() { [0u8; 4].into() } else { [0u16; 8].into() };
        let bind = SocketAddr::new(local.unwrap_or(any), 0);
        let mut endpoint = quinn::Endpoint::client(bind)?;
        let tls = quinn::crypto::rustls::QuicClientConfig::try_from(player_client_config(pin)?)?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(tls)));
        let conn = tokio::time::timeout(Duration::from_secs(5), endpoint.connect(addr, SERVER_NAME)?)
            .await
            .context("connecting timed out")??;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn)).await?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(Self { send, endpoint })
    }

    /// GET `path` (with an optional Range), returning status, headers and the body, refusing
    /// a body longer than `limit`.
    async fn get(
        &self,
        path: &str,
        range: Option<(u64, u64)>,
        limit: u64,
    ) -> anyhow::Result<(http::StatusCode, http::HeaderMap, Bytes)> {
        let mut request = http::Request::get(format!("https://{SERVER_NAME}{path}"));
        if let Some((start, end)) = range {
            request = request.header("range", format!("bytes={start}-{end}"));
        }
        let mut send = self.send.clone();
        let mut stream = send.send_request(request.body(())?).await?;
        stream.finish().await?;
        let response = stream.recv_response().await?;
        // Sized up front (a chunk's limit is its length): growing by doubling cost a copy
        // and fresh zeroed pages on every step, on the path to the first byte.
        let mut body = BytesMut::with_capacity(limit.min(16 << 20) as usize);
        while let Some(mut piece) = stream.recv_data().await? {
            anyhow::ensure!(
                body.len() as u64 + piece.remaining() as u64 <= limit,
                "response body longer than {limit} bytes"
            );
            while piece.has_remaining() {
                let part = piece.chunk();
                body.extend_from_slice(part);
                let n = part.len();
                piece.advance(n);
            }
        }
        Ok((response.status(), response.headers().clone(), body.freeze()))
    }
}

/// The HTTP client for the tracker, from `opts.bind` if given.
fn tracker_client(opts: &PlayOptions) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(3))
        .local_address(opts.bind)
        .build()?)
}

/// Why the tracker gave no steering answer to play from.
#[derive(Debug, thiserror::Error)]
enum SteerError {
    /// No answer: the connection was refused or broke, or the tracker took too long.
    #[error("cannot reach the tracker at {base}")]
    Unreachable {
        base: String,
        #[source]
        source: reqwest::Error,
    },
    /// An HTTP error status: a refusal (4xx), or the tracker failing (5xx).
    #[error("steering failed ({status}): {body}")]
    Status { status: reqwest::StatusCode, body: String },
    #[error("the tracker's steering answer is not JSON")]
    Malformed(#[source] serde_json::Error),
}

impl SteerError {
    /// The tracker could not be reached or could not answer: a kept answer may stand in.
    /// A refusal or an answer of any kind is the tracker's word and stands.
    fn tracker_unreachable(&self) -> bool {
        match self {
            SteerError::Unreachable { .. } => true,
            SteerError::Status { status, .. } => status.is_server_error(),
            SteerError::Malformed(_) => false,
        }
    }
}

impl PlayOptions {
    /// The trackers' base URLs, in the order given.
    fn trackers(&self) -> impl Iterator<Item = &str> {
        self.tracker_http.iter().map(|b| b.trim_end_matches('/'))
    }

    /// The first tracker's base URL: what the steering cache files answers under.
    fn first_tracker(&self) -> &str {
        self.trackers().next().unwrap_or_default()
    }
}

/// Asks the trackers where to play `title` from, in turn: the next one when one cannot be
/// reached or fails (5xx); a refusal or an answer stands.
async fn ask_tracker(title: &TitleId, opts: &PlayOptions) -> anyhow::Result<Result<SteerAnswer, SteerError>> {
    let mut last = None;
    for base in opts.trackers() {
        match ask_one(base, title, opts).await? {
            Err(e) if e.tracker_unreachable() => {
                debug!("{e}: trying the next tracker");
                last = Some(e);
            }
            answer => return Ok(answer),
        }
    }
    match last {
        Some(e) => Ok(Err(e)),
        None => anyhow::bail!("no --tracker-http given"),
    }
}

/// Asks the tracker at `base` where to play `title` from.
async fn ask_one(
    base: &str,
    title: &TitleId,
    opts: &PlayOptions,
) -> anyhow::Result<Result<SteerAnswer, SteerError>> {
    let mut url = format!("{base}/steer?title={title}");
    if let Some(ip) = opts.client_ip {
        url.push_str(&format!("&client_ip={ip}"));
    }
    let client = tracker_client(opts)?;
    let unreachable = |source| SteerError::Unreachable { base: base.to_owned(), source };
    let response = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) if e.is_builder() => return Err(anyhow::Error::new(e).context(format!("tracker URL {base}"))),
        Err(e) => return Ok(Err(unreachable(e))),
    };
    let status = response.status();
    let text = match response.text().await {
        Ok(t) => t,
        Err(e) => return Ok(Err(unreachable(e))),
    };
    if !status.is_success() {
        return Ok(Err(SteerError::Status { status, body: text.trim().to_owned() }));
    }
    Ok(serde_json::from_str(&text).map_err(SteerError::Malformed))
}

/// Where to play from, and the writing of the answer to the cache, under way.
struct Steered {
    targets: Vec<Target>,
    caching: Option<tokio::task::JoinHandle<()>>,
}

/// The steering list for `title`: the tracker's, kept in the cache as it is being played
/// from; or, when the tracker cannot be reached, the one the cache kept.
async fn steer(title: &TitleId, opts: &PlayOptions) -> anyhow::Result<Steered> {
    let base = opts.first_tracker();
    let failure = match ask_tracker(title, opts).await? {
        Ok(answer) => {
            anyhow::ensure!(!answer.targets.is_empty(), "no appliance can serve {title}: {}", answer.reason);
            // Written beside the play, off the path to the first byte.
            let caching = opts.steer_cache.clone().map(|cache| {
                let (title, base, answer) = (*title, base.to_owned(), answer.clone());
                tokio::task::spawn_blocking(move || {
                    match cache.store(&title, &base, &answer, SystemTime::now()) {
                        Ok(kept) => {
                            debug!(kept, path = %cache.path(&title).display(), "steering answer cached")
                        }
                        Err(e) => warn!("cannot cache the steering answer: {e}"),
                    }
                })
            });
            return Ok(Steered { targets: answer.targets, caching });
        }
        Err(e) if e.tracker_unreachable() => anyhow::Error::new(e),
        Err(e) => return Err(e.into()),
    };
    let Some(cache) = &opts.steer_cache else {
        return Err(failure.context(format!("no steering cache to fall back on for {title}")));
    };
    let now = SystemTime::now();
    match cache.load(title, base, now) {
        Ok(Some(kept)) => {
            eprintln!(
                "tracker unreachable: using the steering answer cached at {} ({} ago) for {title} ({failure:#})",
                kept.cached_at_utc(),
                human(kept.age(now)),
            );
            Ok(Steered { targets: kept.answer.targets, caching: None })
        }
        Ok(None) => Err(failure.context(format!(
            "no steering answer for {title} cached in {} to fall back on",
            cache.dir().display()
        ))),
        Err(e) => {
            warn!("ignoring the cached steering answer: {e}");
            Err(failure.context(format!("no usable steering answer for {title} cached to fall back on")))
        }
    }
}

/// Tells the tracker that `target` sent chunk `index` of `title` and it failed verification.
/// The play goes on whatever the answer: a report that fails is logged, not fatal.
async fn report_unverified(opts: &PlayOptions, title: &TitleId, target: &Target, index: u32) {
    let report = PlayerReport::new(title, &target.peer_id, index);
    let sent = async {
        // Any tracker of the fleet counts it; the first here.
        let base = opts.first_tracker();
        let response = tracker_client(opts)?
            .post(format!("{base}/report"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&report)?)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        anyhow::ensure!(status.is_success(), "answered {status}: {}", text.trim());
        anyhow::Ok(())
    };
    match sent.await {
        Ok(()) => {
            info!(appliance = %target.peer_id, chunk = index, "reported the chunk that failed verification")
        }
        Err(e) => {
            warn!(appliance = %target.peer_id, chunk = index, "the tracker did not take the report: {e:#}")
        }
    }
}

/// A chunk that arrived whole but failed verification: what the tracker hears of.
#[derive(Debug, thiserror::Error)]
#[error("chunk {0} failed verification")]
struct Unverified(u32);

/// A range the appliance does not hold (yet): 503. Not the appliance's fault: the player asks
/// the next target for this chunk and comes back for the next one.
#[derive(Debug, thiserror::Error)]
#[error("chunk {0} not held there (503)")]
struct NotHeld(u32);

/// Fetches and verifies the manifest from `session`.
async fn manifest(session: &Session, title: &TitleId) -> anyhow::Result<Manifest> {
    let limit = Manifest::MAX_CHUNKS * 32 + 1024;
    let (status, _, body) = session.get(&format!("/manifests/{title}"), None, limit).await?;
    anyhow::ensure!(status == http::StatusCode::OK, "manifest request answered {status}");
    let manifest: Manifest = postcard::from_bytes(&body).context("malformed manifest")?;
    manifest.verify(title)?;
    Ok(manifest)
}

/// Fetches chunk `index` and verifies it.
async fn chunk(session: &Session, title: TitleId, manifest: &Manifest, index: u32) -> anyhow::Result<Bytes> {
    let start = manifest.chunk_offset(index);
    let len = manifest.chunk_len(index).context("chunk out of range")?;
    let (status, headers, body) =
        session.get(&format!("/titles/{title}"), Some((start, start + len - 1)), len).await?;
    if status == http::StatusCode::SERVICE_UNAVAILABLE {
        return Err(NotHeld(index).into());
    }
    anyhow::ensure!(status == http::StatusCode::PARTIAL_CONTENT, "chunk {index}: answered {status}");
    let expected = format!("bytes {}-{}/{}", start, start + len - 1, manifest.len());
    anyhow::ensure!(
        headers.get("content-range").and_then(|v| v.to_str().ok()) == Some(expected.as_str()),
        "chunk {index}: wrong Content-Range"
    );
    if manifest.verify_chunk(index, &body).is_err() {
        return Err(Unverified(index).into());
    }
    Ok(body)
}

/// The steering list as a player works it: a session per target opened when first needed,
/// and the targets dropped for errors, stalls or bad chunks. Each chunk is asked of the first
/// target not dropped, then down the list while targets answer 503 (a range not held yet),
/// so the player comes back to the nearest target with the next chunk.
struct Targets<'a> {
    list: Vec<Target>,
    sessions: Vec<tokio::sync::OnceCell<Session>>,
    dropped: Vec<std::cell::Cell<bool>>,
    opts: &'a PlayOptions,
    title: TitleId,
    failovers: std::cell::Cell<u32>,
    misses: std::cell::Cell<u32>,
    last_error: std::cell::RefCell<Option<anyhow::Error>>,
}

impl<'a> Targets<'a> {
    fn new(list: Vec<Target>, opts: &'a PlayOptions, title: TitleId) -> Self {
        Self {
            sessions: list.iter().map(|_| tokio::sync::OnceCell::new()).collect(),
            dropped: list.iter().map(|_| std::cell::Cell::new(false)).collect(),
            list,
            opts,
            title,
            failovers: std::cell::Cell::new(0),
            misses: std::cell::Cell::new(0),
            last_error: std::cell::RefCell::new(None),
        }
    }

    /// Drops target `k` for good (once), for `error`.
    fn drop_target(&self, k: usize, error: anyhow::Error) {
        if !self.dropped[k].replace(true) {
            warn!(appliance = %self.list[k].peer_id, "failing over: {error:#}");
            self.failovers.set(self.failovers.get() + 1);
        }
        *self.last_error.borrow_mut() = Some(error);
    }

    /// The session of target `k`, opened on first use; `None` (and the target dropped) if it
    /// cannot be reached.
    async fn session(&self, k: usize) -> Option<&Session> {
        if self.dropped[k].get() {
            return None;
        }
        match self.sessions[k].get_or_try_init(|| Session::open(&self.list[k], self.opts.bind)).await {
            Ok(s) => Some(s),
            Err(e) => {
                self.drop_target(k, e.context("cannot connect"));
                None
            }
        }
    }

    /// The verified manifest, from the first target that gives one.
    async fn manifest(&self) -> anyhow::Result<Manifest> {
        for k in 0..self.list.len() {
            let Some(session) = self.session(k).await else { continue };
            match manifest_from(session, &self.title).await {
                Ok(m) => return Ok(m),
                Err(e) => self.drop_target(k, e.context("no manifest")),
            }
        }
        Err(self.error())
    }

    /// Chunk `index`, verified, and the target that sent it. Targets that answer 503 are
    /// passed over for this chunk only; when every target left answered 503, it waits a
    /// little and asks again, for at most the stall time.
    async fn chunk(&self, manifest: &Manifest, index: u32) -> anyhow::Result<(usize, Bytes)> {
        let give_up = Instant::now() + self.opts.stall;
        loop {
            for k in 0..self.list.len() {
                let Some(session) = self.session(k).await else { continue };
                let got =
                    tokio::time::timeout(self.opts.stall, chunk(session, self.title, manifest, index)).await;
                match got {
                    Ok(Ok(bytes)) => return Ok((k, bytes)),
                    Ok(Err(e)) if e.is::<NotHeld>() => {
                        debug!(appliance = %self.list[k].peer_id, chunk = index, "not held there: next target");
                        self.misses.set(self.misses.get() + 1);
                    }
                    Ok(Err(e)) => {
                        if let Some(Unverified(index)) = e.downcast_ref::<Unverified>() {
                            report_unverified(self.opts, &self.title, &self.list[k], *index).await;
                        }
                        self.drop_target(k, e);
                    }
                    Err(_) => self.drop_target(
                        k,
                        anyhow::anyhow!("stalled: nothing arrived for {:?}", self.opts.stall),
                    ),
                }
            }
            if self.dropped.iter().all(|d| d.get()) {
                return Err(self.error());
            }
            anyhow::ensure!(Instant::now() < give_up, "no target holds chunk {index}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn error(&self) -> anyhow::Error {
        self.last_error
            .borrow_mut()
            .take()
            .unwrap_or_else(|| anyhow::anyhow!("no appliance could serve {}", self.title))
    }

    fn close(&self) {
        for s in self.sessions.iter().filter_map(|c| c.get()) {
            s.endpoint.close(0u32.into(), b"done");
        }
    }
}

/// Plays `title` to completion or fails with the reason the last appliance gave.
pub async fn play(title: TitleId, opts: &PlayOptions) -> anyhow::Result<PlaySummary> {
    let started = Instant::now();
    let Steered { targets: list, caching } = steer(&title, opts).await?;
    let played = play_from(title, list, opts, started).await;
    if let Some(caching) = caching {
        if let Err(e) = caching.await {
            warn!("caching the steering answer failed: {e}");
        }
    }
    played
}

/// Plays `title` from the steering list `list`.
async fn play_from(
    title: TitleId,
    list: Vec<Target>,
    opts: &PlayOptions,
    started: Instant,
) -> anyhow::Result<PlaySummary> {
    tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, targets = list.len(), "steered");
    let bucket = opts.rate.map(TokenBucket::new);
    let mut out = match &opts.out {
        Some(path) => Some(Sink::open(path).await?),
        None => None,
    };
    let mut summary = PlaySummary {
        title,
        bytes: 0,
        time_to_first_byte: Duration::ZERO,
        total: Duration::ZERO,
        appliances: Vec::new(),
        failovers: 0,
        misses: 0,
    };
    let targets = Targets::new(list, opts, title);
    let mut next_write = 0u32;
    let result = async {
        let manifest = targets.manifest().await?;
        tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "manifest verified");
        stream(&targets, &manifest, bucket.as_ref(), &mut next_write, &mut out, &mut summary, started).await
    }
    .await;
    targets.close();
    summary.failovers = targets.failovers.get();
    summary.misses = targets.misses.get();
    result.with_context(|| format!("could not deliver {title} verified ({next_write} chunks written)"))?;
    if let Some(sink) = out.as_mut() {
        sink.finish().await?;
    }
    summary.total = started.elapsed();
    Ok(summary)
}

async fn manifest_from(session: &Session, title: &TitleId) -> anyhow::Result<Manifest> {
    tokio::time::timeout(Duration::from_secs(10), manifest(session, title)).await.context("timed out")?
}

/// Streams chunks `next_write..` from one appliance, writing each verified chunk in order.
/// Where a play's verified bytes go: a regular file (created or truncated, synced at the end),
/// or anything else writable: standard output for `-`, a pipe, a device such as `/dev/null`
/// (written as it is, never truncated or synced: `fsync` on `/dev/null` is EINVAL).
struct Sink {
    file: tokio::fs::File,
    /// A regular file: synced at the end.
    sync: bool,
    shown: String,
}

impl Sink {
    async fn open(path: &std::path::Path) -> anyhow::Result<Self> {
        if is_stdout(path) {
            use std::os::fd::AsFd;
            let fd = std::io::stdout().as_fd().try_clone_to_owned().context("opening standard output")?;
            let file = tokio::fs::File::from_std(std::fs::File::from(fd));
            return Ok(Sink { file, sync: false, shown: "standard output".into() });
        }
        let shown = path.display().to_string();
        let special = tokio::fs::metadata(path).await.is_ok_and(|m| !m.is_file() && !m.is_dir());
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true);
        if !special {
            options.create(true).truncate(true);
        }
        let file = options.open(path).await.with_context(|| format!("opening {shown} for writing"))?;
        Ok(Sink { file, sync: !special, shown })
    }

    async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.file.write_all(bytes).await.with_context(|| format!("writing to {}", self.shown))
    }

    /// Flushes, and syncs a regular file.
    async fn finish(&mut self) -> anyhow::Result<()> {
        self.file.flush().await.with_context(|| format!("flushing {}", self.shown))?;
        if self.sync {
            self.file.sync_all().await.with_context(|| format!("syncing {}", self.shown))?;
        }
        Ok(())
    }
}

/// Streams chunks `next_write..` in order, a window of them in flight, each from the
/// nearest target that holds it, writing each verified chunk in order.
async fn stream(
    targets: &Targets<'_>,
    manifest: &Manifest,
    bucket: Option<&TokenBucket>,
    next_write: &mut u32,
    out: &mut Option<Sink>,
    summary: &mut PlaySummary,
    started: Instant,
) -> anyhow::Result<()> {
    let n = manifest.chunk_count();
    let mut next_request = *next_write;
    let mut ready: BTreeMap<u32, (usize, Bytes)> = BTreeMap::new();
    let mut in_flight = FuturesUnordered::new();
    // The window opens from one request and doubles with each chunk that arrives: the first
    // chunk does not share the link with a full window, so the first byte comes sooner.
    let mut window = 1usize;
    while *next_write < n {
        while in_flight.len() < window && next_request < n {
            let index = next_request;
            next_request += 1;
            if let Some(b) = bucket {
                b.take(manifest.chunk_len(index).unwrap_or(0)).await;
            }
            in_flight.push(async move { (index, targets.chunk(manifest, index).await) });
        }
        let Some((index, result)) = in_flight.next().await else { anyhow::bail!("nothing in flight") };
        ready.insert(index, result?);
        window = (window * 2).min(targets.opts.window.max(1));
        while let Some((k, bytes)) = ready.remove(next_write) {
            if let Some(sink) = out.as_mut() {
                sink.write(&bytes).await?;
            }
            if summary.bytes == 0 {
                summary.time_to_first_byte = started.elapsed();
            }
            summary.bytes += bytes.len() as u64;
            let target = &targets.list[k];
            match summary.appliances.iter_mut().find(|a| a.0 == target.peer_id) {
                Some(a) => a.3 += bytes.len() as u64,
                None => summary.appliances.push((
                    target.peer_id.clone(),
                    target.site.clone(),
                    target.region.clone(),
                    bytes.len() as u64,
                )),
            }
            *next_write += 1;
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct PlayArgs {
    pub title: TitleId,
    /// The tracker's --http URL, e.g. http://127.0.0.1:8000. Repeat it for each tracker of
    /// a fleet: they are asked in turn until one answers.
    #[arg(long, required = true)]
    pub tracker_http: Vec<String>,
    /// Steer as this client address (default: the address the tracker sees).
    #[arg(long)]
    pub client_ip: Option<std::net::IpAddr>,
    /// Write the verified title here: a file (replaced), `-` (standard output; the summary
    /// then goes to standard error), a pipe or a device such as /dev/null.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Chunk requests in flight (the read-ahead window).
    #[arg(long, default_value_t = 4)]
    pub window: usize,
    /// Seconds without progress before failing over.
    #[arg(long, default_value_t = 5)]
    pub stall_secs: u64,
    /// Consume at most this many bytes per second, as a player at a bitrate (e.g. 8MB).
    #[arg(long, value_parser = units::parse_bytes)]
    pub rate: Option<u64>,
    /// The local address to connect from (to the tracker and the appliances), on a host
    /// with several.
    #[arg(long)]
    pub bind: Option<std::net::IpAddr>,
    /// Keep the tracker's last steering answer for each title (its appliances and their
    /// certificate pins) in this directory, and play from it when the tracker cannot be
    /// reached [default: $XDG_CACHE_HOME/fillmesh/steer, else $HOME/.cache/fillmesh/steer].
    #[arg(long, value_name = "DIR")]
    pub steer_cache: Option<PathBuf>,
    /// A cached steering answer older than this is not used (90s, 30m, 24h, 7d).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = units::parse_duration)]
    pub steer_cache_max_age: Duration,
}

/// The steering cache: `dir`, else the default directory; none when there is no default.
fn steer_cache(dir: Option<PathBuf>, max_age: Duration) -> Option<SteerCache> {
    match dir.or_else(SteerCache::default_dir) {
        Some(dir) => Some(SteerCache::new(dir, max_age)),
        None => {
            debug!("neither XDG_CACHE_HOME nor HOME is set: steering answers are not cached");
            None
        }
    }
}

/// Plays the title and prints the summary.
pub async fn run(args: PlayArgs) -> anyhow::Result<()> {
    let opts = PlayOptions {
        tracker_http: args.tracker_http,
        client_ip: args.client_ip,
        out: args.out,
        window: args.window.clamp(1, 64),
        stall: Duration::from_secs(args.stall_secs.max(1)),
        rate: args.rate,
        bind: args.bind,
        steer_cache: steer_cache(args.steer_cache, args.steer_cache_max_age),
    };
    // With the title on standard output, the summary goes to standard error.
    let on_stderr = opts.out.as_deref().is_some_and(is_stdout);
    let s = play(args.title, &opts).await?;
    let secs = s.total.as_secs_f64().max(1e-9);
    report(
        on_stderr,
        format_args!(
            "played {}: {} bytes in {:.3} s, {:.1} MB/s, time to first byte {:.1} ms, every byte verified",
            s.title,
            s.bytes,
            secs,
            s.bytes as f64 / secs / 1e6,
            s.time_to_first_byte.as_secs_f64() * 1e3
        ),
    );
    if let Some((peer, site, region, _)) = s.appliances.iter().find(|a| a.3 > 0) {
        report(on_stderr, format_args!("served by {peer} (site {site}, region {region})"));
    }
    for (peer, site, region, bytes) in &s.appliances {
        report(on_stderr, format_args!("appliance {peer} (site {site}, region {region}): {bytes} bytes"));
    }
    report(on_stderr, format_args!("failovers: {}", s.failovers));
    report(on_stderr, format_args!("content misses (503, asked further down the list): {}", s.misses));
    Ok(())
}
