//! The steering list as a player works it: sessions opened when first needed, each chunk
//! asked of the nearest target that holds it and verified, targets dropped for good on an
//! error, a stall or a bad chunk.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use fillmesh_protocol::{Manifest, TitleId};
use tracing::{debug, warn};

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

/// Fetches and verifies the manifest from `session`.
pub(crate) async fn manifest(session: &Session, title: &TitleId) -> anyhow::Result<Manifest> {
    // Chaining values, and a package's files: each file's entry (its path, 32 bytes of id, a
    // length of at most 10 and a path length of 2) is shorter than its listing line (the path,
    // 64 hex digits and 3 bytes), so the listing's bound bounds them.
    let limit = Manifest::MAX_CHUNKS * 32 + fillmesh_protocol::package::MAX_LISTING_BYTES as u64 + 1024;
    let (status, _, body) = session.get(&format!("/manifests/{title}"), None, limit).await?;
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

/// Fetches `piece` and verifies it.
pub(crate) async fn chunk(session: &Session, manifest: &Manifest, piece: &Piece) -> anyhow::Result<Bytes> {
    let Piece { index, start, len, total, .. } = *piece;
    let end = start + len - 1;
    let (status, headers, body) = session.get(&piece.path, Some((start, end)), len).await?;
    if status == http::StatusCode::SERVICE_UNAVAILABLE {
        return Err(NotHeld(index).into());
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
    sessions: Vec<tokio::sync::OnceCell<Session>>,
    dropped: Vec<std::cell::Cell<bool>>,
    pub(crate) opts: &'a PlayOptions,
    title: TitleId,
    /// When the play started: the phases' marks in the debug log count from it.
    started: Instant,
    /// The first session's `connected` mark has been logged.
    logged_connect: std::cell::Cell<bool>,
    pub(crate) failovers: std::cell::Cell<u32>,
    pub(crate) misses: std::cell::Cell<u32>,
    last_error: std::cell::RefCell<Option<anyhow::Error>>,
}

impl<'a> Targets<'a> {
    pub(crate) fn new(list: Vec<Target>, opts: &'a PlayOptions, title: TitleId, started: Instant) -> Self {
        Self {
            sessions: list.iter().map(|_| tokio::sync::OnceCell::new()).collect(),
            dropped: list.iter().map(|_| std::cell::Cell::new(false)).collect(),
            list,
            opts,
            title,
            started,
            logged_connect: std::cell::Cell::new(false),
            failovers: std::cell::Cell::new(0),
            misses: std::cell::Cell::new(0),
            last_error: std::cell::RefCell::new(None),
        }
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

    /// The session of target `k`, opened on first use; `None` (and the target dropped) if it
    /// cannot be reached.
    async fn session(&self, k: usize) -> Option<&Session> {
        if self.dropped[k].get() {
            return None;
        }
        match self.sessions[k].get_or_try_init(|| Session::open(&self.list[k], self.opts.bind)).await {
            Ok(s) => {
                // The ttfb benchmark reads this phase's mark (the first `connected`).
                if !self.logged_connect.replace(true) {
                    debug!(ms = self.started.elapsed().as_secs_f64() * 1e3, appliance = %self.list[k].peer_id, "connected");
                }
                Some(s)
            }
            Err(e) => {
                self.drop_target(k, e.context("cannot connect"));
                None
            }
        }
    }

    /// The verified manifest, from the first target that gives one.
    pub(crate) async fn manifest(&self) -> anyhow::Result<Manifest> {
        for k in 0..self.list.len() {
            let Some(session) = self.session(k).await else { continue };
            match manifest_from(session, &self.title).await {
                Ok(m) => return Ok(m),
                Err(e) => self.drop_target(k, e.context("no manifest")),
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
        loop {
            for k in 0..self.list.len() {
                let Some(session) = self.session(k).await else { continue };
                let got = tokio::time::timeout(self.opts.stall, chunk(session, manifest, piece)).await;
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

    pub(crate) fn close(&self) {
        for s in self.sessions.iter().filter_map(|c| c.get()) {
            s.endpoint.close(0u32.into(), b"done");
        }
    }
}

async fn manifest_from(session: &Session, title: &TitleId) -> anyhow::Result<Manifest> {
    tokio::time::timeout(Duration::from_secs(10), manifest(session, title)).await.context("timed out")?
}
