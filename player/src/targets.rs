//! The steering list as a player works it: sessions opened when first needed, each chunk
//! asked of the nearest target that holds it and verified, targets dropped for good on an
//! error, a stall or a bad chunk.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use fillmesh_protocol::{Manifest, TitleId};
use tracing::{debug, info, warn};

use crate::session::Session;
use crate::steer::report_unverified;
use crate::{PlayOptions, Target};

/// A chunk that arrived whole but failed verification: what the tracker hears of.
#[derive(Debug, thiserror::Error)]
#[error("chunk {0} failed verification")]
pub(crate) struct Unverified(pub(crate) u32);

/// A range the appliance does not hold (yet): 503. Not the appliance's fault: the player asks
/// the next target for this chunk and comes back for the next one.
#[derive(Debug, thiserror::Error)]
#[error("chunk {0} not held there (503)")]
pub(crate) struct NotHeld(pub(crate) u32);

/// The appliance refused the request for its playback token (403): the one word it gave
/// (`expired`, `missing`, ...). Not the appliance's fault: the player asks steering for a
/// fresh token and asks again.
#[derive(Debug, thiserror::Error)]
#[error("refused for its playback token ({0})")]
pub(crate) struct Forbidden(pub(crate) String);

impl Forbidden {
    /// The refusal of a 403 answer: the appliance's header, else its body's first word.
    fn of(headers: &http::HeaderMap, body: &[u8]) -> Self {
        let word = headers
            .get("x-fillmesh-refused")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(32)]).trim().to_owned());
        Forbidden(word)
    }
}

/// The start of the path every request to the appliances takes: the part of a steering URL's
/// path before `/titles/`, `/p/<token>` with playback tokens, empty without.
pub(crate) fn base_of(url: &str) -> String {
    let path = url.parse::<http::Uri>().map(|u| u.path().to_owned()).unwrap_or_default();
    match path.find("/titles/") {
        Some(at) => path[..at].to_owned(),
        None => String::new(),
    }
}

/// Fetches and verifies the manifest from `session`, asking under `base` (see [`base_of`]).
pub(crate) async fn manifest(session: &Session, title: &TitleId, base: &str) -> anyhow::Result<Manifest> {
    // Chaining values, and a package's files: each file's entry (its path, 32 bytes of id, a
    // length of at most 10 and a path length of 2) is shorter than its listing line (the path,
    // 64 hex digits and 3 bytes), so the listing's bound bounds them.
    let limit = Manifest::MAX_CHUNKS * 32 + fillmesh_protocol::package::MAX_LISTING_BYTES as u64 + 1024;
    let (status, headers, body) = session.get(&format!("{base}/manifests/{title}"), None, limit).await?;
    if status == http::StatusCode::FORBIDDEN {
        return Err(Forbidden::of(&headers, &body).into());
    }
    anyhow::ensure!(status == http::StatusCode::OK, "manifest request answered {status}");
    let manifest: Manifest = postcard::from_bytes(&body).context("malformed manifest")?;
    manifest.verify(title)?;
    Ok(manifest)
}

/// One chunk as a request asks for it: where (the title, or a package's file, by path), which
/// bytes of that resource, and which chunk of the manifest verifies them.
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    /// The chunk's index in the manifest (for a package, counted across its files).
    pub(crate) index: u32,
    /// The request's path: `/titles/<id>` or `/titles/<id>/<file path, escaped>`.
    pub(crate) path: String,
    /// The chunk's first byte in the resource.
    pub(crate) start: u64,
    /// The chunk's length.
    pub(crate) len: u64,
    /// The resource's length, as `Content-Range` must state it.
    pub(crate) total: u64,
}

impl Piece {
    /// Chunk `index` of a one-file title.
    pub(crate) fn of_title(title: &TitleId, manifest: &Manifest, index: u32) -> anyhow::Result<Self> {
        let len = manifest.chunk_len(index).context("chunk out of range")?;
        Ok(Piece {
            index,
            path: format!("/titles/{title}"),
            start: manifest.chunk_offset(index),
            len,
            total: manifest.len(),
        })
    }

    /// Chunk `j` of file `k` of a package (its bytes `j * chunk size ..`).
    pub(crate) fn of_file(title: &TitleId, manifest: &Manifest, k: usize, j: u32) -> anyhow::Result<Self> {
        let file = manifest.files().and_then(|f| f.get(k)).context("no such file")?;
        let chunks = manifest.file_chunks(k);
        let index = chunks.start.checked_add(j).filter(|i| *i < chunks.end).context("chunk out of range")?;
        let len = manifest.chunk_len(index).context("chunk out of range")?;
        Ok(Piece {
            index,
            path: format!("/titles/{title}/{}", crate::hls::percent_encode_path(&file.path)),
            start: u64::from(j) * manifest.chunk_size().bytes(),
            len,
            total: file.len,
        })
    }
}

/// Fetches `piece` under `base` and verifies it.
pub(crate) async fn chunk(
    session: &Session,
    manifest: &Manifest,
    piece: &Piece,
    base: &str,
) -> anyhow::Result<Bytes> {
    let Piece { index, start, len, total, .. } = *piece;
    let end = start + len - 1;
    let (status, headers, body) =
        session.get(&format!("{base}{}", piece.path), Some((start, end)), len).await?;
    if status == http::StatusCode::SERVICE_UNAVAILABLE {
        return Err(NotHeld(index).into());
    }
    if status == http::StatusCode::FORBIDDEN {
        return Err(Forbidden::of(&headers, &body).into());
    }
    anyhow::ensure!(status == http::StatusCode::PARTIAL_CONTENT, "chunk {index}: answered {status}");
    let expected = format!("bytes {start}-{end}/{total}");
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
pub(crate) struct Targets<'a> {
    pub(crate) list: Vec<Target>,
    /// Each target's session, opened on first use; replaced when a dropped target is revived
    /// (see [`Targets::revive`]).
    sessions: Vec<std::cell::RefCell<std::rc::Rc<tokio::sync::OnceCell<Session>>>>,
    dropped: Vec<std::cell::Cell<bool>>,
    /// Times every target was dropped and steering named some of them again.
    pub(crate) revivals: std::cell::Cell<u32>,
    pub(crate) opts: &'a PlayOptions,
    title: TitleId,
    /// When the play started: the phases' marks in the debug log count from it.
    started: Instant,
    /// The first session's `connected` mark has been logged.
    logged_connect: std::cell::Cell<bool>,
    pub(crate) failovers: std::cell::Cell<u32>,
    pub(crate) misses: std::cell::Cell<u32>,
    last_error: std::cell::RefCell<Option<anyhow::Error>>,
    /// Where every request's path starts (the playback token, see [`base_of`]); renewed by
    /// steering again when an appliance refuses the token.
    base: std::cell::RefCell<String>,
    /// Moves with each renewal: a refusal of a request sent under an older base needs no
    /// renewal of its own.
    generation: std::cell::Cell<u32>,
    /// One renewal at a time: the requests in flight when a token expires all get 403, and
    /// cost one steering request between them.
    renewing: tokio::sync::Mutex<()>,
    /// Times steering was asked again for a fresh token.
    pub(crate) resteers: std::cell::Cell<u32>,
}

/// How many times one request may be refused for its token (and the token renewed) before
/// the appliance is dropped: a token steering just signed that is refused again is not going
/// to be admitted (another fleet's appliance, keys not yet known there).
const MAX_RENEWALS_PER_REQUEST: u32 = 2;

/// How many times a play may find every target dropped and steer again: a rolling restart of
/// a site's appliances takes each away in turn, and a long play may meet all of them.
const MAX_REVIVALS: u32 = 8;

impl<'a> Targets<'a> {
    pub(crate) fn new(list: Vec<Target>, opts: &'a PlayOptions, title: TitleId, started: Instant) -> Self {
        let base = list.first().map(|t| base_of(&t.url)).unwrap_or_default();
        Self {
            sessions: list.iter().map(|_| Default::default()).collect(),
            revivals: std::cell::Cell::new(0),
            dropped: list.iter().map(|_| std::cell::Cell::new(false)).collect(),
            list,
            opts,
            title,
            started,
            logged_connect: std::cell::Cell::new(false),
            failovers: std::cell::Cell::new(0),
            misses: std::cell::Cell::new(0),
            last_error: std::cell::RefCell::new(None),
            base: std::cell::RefCell::new(base),
            generation: std::cell::Cell::new(0),
            renewing: tokio::sync::Mutex::new(()),
            resteers: std::cell::Cell::new(0),
        }
    }

    /// The playback token requests carry now, if any (what reports name the player by).
    pub(crate) fn token(&self) -> Option<String> {
        self.base.borrow().strip_prefix("/p/").map(str::to_owned)
    }

    /// A fresh token, from steering again, unless one was fetched since `generation` (by the
    /// request that was refused first).
    async fn renew(&self, generation: u32, why: &Forbidden) -> anyhow::Result<()> {
        let _one = self.renewing.lock().await;
        if self.generation.get() != generation {
            return Ok(());
        }
        info!(reason = %why.0, "an appliance refused the playback token: asking steering for a fresh one");
        let steered =
            crate::steer::steer(&self.title, self.opts).await.context("renewing the playback token")?;
        if let Some(caching) = steered.caching {
            let _ = caching.await;
        }
        let base = steered.targets.first().map(|t| base_of(&t.url)).unwrap_or_default();
        *self.base.borrow_mut() = base;
        self.generation.set(generation + 1);
        self.resteers.set(self.resteers.get() + 1);
        Ok(())
    }

    /// The title played.
    pub(crate) fn title(&self) -> &TitleId {
        &self.title
    }

    /// Drops target `k` for good (once), for `error`.
    fn drop_target(&self, k: usize, error: anyhow::Error) {
        if !self.dropped[k].replace(true) {
            warn!(appliance = %self.list[k].peer_id, "failing over: {error:#}");
            self.failovers.set(self.failovers.get() + 1);
        }
        *self.last_error.borrow_mut() = Some(error);
    }

    /// When every target is dropped: steering is asked again and the targets it names are
    /// tried again, each with a new session (an appliance restarted since, or one that
    /// drained while this player used it). At most [`MAX_REVIVALS`] times a play; whether
    /// any target is back.
    async fn revive(&self) -> anyhow::Result<bool> {
        if self.revivals.get() >= MAX_REVIVALS {
            return Ok(false);
        }
        self.revivals.set(self.revivals.get() + 1);
        let _one = self.renewing.lock().await;
        if !self.dropped.iter().all(|d| d.get()) {
            // Another request revived them meanwhile.
            return Ok(true);
        }
        let steered = crate::steer::steer(&self.title, self.opts).await.context("steering again")?;
        if let Some(caching) = steered.caching {
            let _ = caching.await;
        }
        let mut back = 0;
        for (k, target) in self.list.iter().enumerate() {
            if steered.targets.iter().any(|t| t.peer_id == target.peer_id) {
                *self.sessions[k].borrow_mut() = Default::default();
                self.dropped[k].set(false);
                back += 1;
            }
        }
        if let Some(first) = steered.targets.first() {
            *self.base.borrow_mut() = base_of(&first.url);
            self.generation.set(self.generation.get() + 1);
        }
        info!(back, "every appliance was dropped: steering named {back} of them again");
        Ok(back > 0)
    }

    /// The session of target `k`, opened on first use; `None` (and the target dropped) if it
    /// cannot be reached.
    async fn session(&self, k: usize) -> Option<std::rc::Rc<tokio::sync::OnceCell<Session>>> {
        if self.dropped[k].get() {
            return None;
        }
        let cell = self.sessions[k].borrow().clone();
        match cell.get_or_try_init(|| Session::open(&self.list[k], self.opts.bind)).await {
            Ok(_) => {
                // The ttfb benchmark reads this phase's mark (the first `connected`).
                if !self.logged_connect.replace(true) {
                    debug!(ms = self.started.elapsed().as_secs_f64() * 1e3, appliance = %self.list[k].peer_id, "connected");
                }
                Some(cell)
            }
            Err(e) => {
                self.drop_target(k, e.context("cannot connect"));
                None
            }
        }
    }

    /// Whether `error` is a refusal of the token that a fresh one may cure: then the token is
    /// renewed (at most [`MAX_RENEWALS_PER_REQUEST`] times per request, counted in
    /// `renewals`) and the request is to be asked again.
    async fn renewed(
        &self,
        error: &anyhow::Error,
        generation: u32,
        renewals: &mut u32,
    ) -> anyhow::Result<bool> {
        match error.downcast_ref::<Forbidden>() {
            Some(why) if *renewals < MAX_RENEWALS_PER_REQUEST => {
                *renewals += 1;
                self.renew(generation, why).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The verified manifest, from the first target that gives one.
    pub(crate) async fn manifest(&self) -> anyhow::Result<Manifest> {
        let mut renewals = 0;
        let mut k = 0;
        while k < self.list.len() {
            let Some(cell) = self.session(k).await else {
                k += 1;
                if k == self.list.len() && self.revive().await? {
                    k = 0;
                }
                continue;
            };
            let Some(session) = cell.get() else {
                k += 1;
                continue;
            };
            let (generation, base) = (self.generation.get(), self.base.borrow().clone());
            match manifest_from(session, &self.title, &base).await {
                Ok(m) => return Ok(m),
                Err(e) if self.renewed(&e, generation, &mut renewals).await? => {}
                Err(e) => {
                    self.drop_target(k, e.context("no manifest"));
                    k += 1;
                }
            }
        }
        Err(self.error())
    }

    /// Chunk `index` of a one-file title, verified, and the target that sent it (see
    /// [`Targets::piece`]).
    pub(crate) async fn chunk(&self, manifest: &Manifest, index: u32) -> anyhow::Result<(usize, Bytes)> {
        self.piece(manifest, &Piece::of_title(&self.title, manifest, index)?).await
    }

    /// `piece`, verified, and the target that sent it. Targets that answer 503 are passed
    /// over for this chunk only; when every target left answered 503, it waits a little and
    /// asks again, for at most the stall time.
    pub(crate) async fn piece(&self, manifest: &Manifest, piece: &Piece) -> anyhow::Result<(usize, Bytes)> {
        let index = piece.index;
        let give_up = Instant::now() + self.opts.stall;
        let mut renewals = 0;
        loop {
            let mut k = 0;
            while k < self.list.len() {
                let Some(cell) = self.session(k).await else {
                    k += 1;
                    continue;
                };
                let Some(session) = cell.get() else {
                    k += 1;
                    continue;
                };
                let (generation, base) = (self.generation.get(), self.base.borrow().clone());
                let got = tokio::time::timeout(self.opts.stall, chunk(session, manifest, piece, &base)).await;
                if let Ok(Err(e)) = &got {
                    if self.renewed(e, generation, &mut renewals).await? {
                        // The same target again, with a fresh token.
                        continue;
                    }
                }
                k += 1;
                match got {
                    Ok(Ok(bytes)) => return Ok((k - 1, bytes)),
                    Ok(Err(e)) if e.is::<NotHeld>() => {
                        debug!(appliance = %self.list[k - 1].peer_id, chunk = index, "not held there: next target");
                        self.misses.set(self.misses.get() + 1);
                    }
                    Ok(Err(e)) => {
                        if let Some(Unverified(index)) = e.downcast_ref::<Unverified>() {
                            report_unverified(
                                self.opts,
                                &self.title,
                                &self.list[k - 1],
                                *index,
                                self.token(),
                            )
                            .await;
                        }
                        self.drop_target(k - 1, e);
                    }
                    Err(_) => self.drop_target(
                        k - 1,
                        anyhow::anyhow!("stalled: nothing arrived for {:?}", self.opts.stall),
                    ),
                }
            }
            if self.dropped.iter().all(|d| d.get()) && !self.revive().await? {
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

    pub(crate) fn close(&self) {
        for cell in &self.sessions {
            let cell = cell.borrow().clone();
            let Some(s) = cell.get() else { continue };
            s.endpoint.close(0u32.into(), b"done");
        }
    }
}

async fn manifest_from(session: &Session, title: &TitleId, base: &str) -> anyhow::Result<Manifest> {
    tokio::time::timeout(Duration::from_secs(10), manifest(session, title, base))
        .await
        .context("timed out")?
}

#[cfg(test)]
mod tests {
    use super::base_of;

    #[test]
    fn requests_start_with_the_path_before_titles() {
        assert_eq!(base_of("https://127.0.0.11:4433/p/AbC-_9/titles/x/"), "/p/AbC-_9");
        assert_eq!(base_of("https://127.0.0.11:4433/p/AbC-_9/titles/x"), "/p/AbC-_9");
        assert_eq!(base_of("https://127.0.0.11:4433/titles/x"), "");
        assert_eq!(base_of("https://[::1]:4433/titles/x/"), "");
        assert_eq!(base_of("not a url"), "");
    }
}
