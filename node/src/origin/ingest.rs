//! Origin ingest over HTTP: `fillmesh seed` streams a file here and the origin stores it as a
//! fully held title.
//!
//! The protocol: `GET /titles/<id>` answers 200 when the title is already held whole (so a
//! second seed sends nothing), 404 otherwise. `POST /titles?name=NAME[&chunk_size=N]` with the
//! header `x-fillmesh-title: <id>` streams the bytes; the origin hashes them as they arrive
//! into a staging file and adopts them only if they hash to the announced id. The seeding
//! client hashed the file before sending, so a file that changed while it was read arrives
//! with a different hash and is refused (409): nothing is stored.
//!
//! `&urgent=true` (`fillmesh seed --urgent`) publishes the title urgent: appliances fill it at
//! once, whatever their fill windows. `POST /titles/<id>/urgent` marks a title the origin
//! already holds whole (a second seed with `--urgent` sends no bytes), answered as an upload.
//!
//! A package (`fillmesh seed DIR`) goes the same way with `&package=true`, its body framed as
//! `<listing bytes>\n<listing>` then, for each file in listing order, `<file bytes>\n<bytes>`
//! (decimal lengths). The origin checks that the listing hashes to the announced id before it
//! takes any file byte, hashes each file as it arrives and lays it at a chunk boundary in the
//! staging data file; a file whose bytes do not hash to its listing line is refused (409).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fillmesh_net::Chain;
use fillmesh_protocol::package::{self, MAX_LISTING_BYTES};
use fillmesh_protocol::{ChunkSize, Manifest, ManifestBuilder, PackageBuilder, TitleId};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::member::ToPublish;
use crate::store::Store;

/// Header carrying the title id the client computed.
pub const TITLE_HEADER: &str = "x-fillmesh-title";

#[derive(Clone)]
struct Ingest {
    store: Arc<Store>,
    /// Told of every title ingested, so it can be published to the tracker.
    published: tokio::sync::mpsc::UnboundedSender<ToPublish>,
    /// Uploads at once: each holds a staging file and a hashing task.
    slots: Arc<Semaphore>,
}

/// The origin's HTTP API.
pub fn router(store: Arc<Store>, published: tokio::sync::mpsc::UnboundedSender<ToPublish>) -> Router {
    let state = Ingest { store, published, slots: Arc::new(Semaphore::new(2)) };
    Router::new()
        .route("/titles", axum::routing::post(upload))
        .route("/titles/{id}", get(status))
        .route("/titles/{id}/urgent", axum::routing::post(urgent))
        .with_state(state)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    body.push('\n');
    (status, body).into_response()
}

async fn status(State(ingest): State<Ingest>, Path(id): Path<String>) -> Response {
    let title: TitleId = match id.parse() {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match ingest.store.info(&title) {
        Some(info) if info.held.is_full() => text(
            StatusCode::OK,
            format!(
                "{title} {} bytes, {} chunks, complete, name {:?}",
                info.manifest.len(),
                info.manifest.chunk_count(),
                info.name
            ),
        ),
        Some(info) => text(
            StatusCode::NOT_FOUND,
            format!("{title} is {} of {} chunks", info.held.count(), info.manifest.chunk_count()),
        ),
        None => text(StatusCode::NOT_FOUND, format!("unknown title {title}")),
    }
}

#[derive(Deserialize)]
struct UploadParams {
    name: Option<String>,
    chunk_size: Option<u64>,
    /// The body is a package (a listing and its files), not one file's bytes.
    #[serde(default)]
    package: bool,
    /// Publish the title urgent (`fillmesh seed --urgent`).
    #[serde(default)]
    urgent: bool,
}

/// `POST /titles/<id>/urgent`: publishes a title held whole here as urgent (answered as an
/// upload is: 201 once the tracker has it, 202 if not yet), 404 for one not held whole.
async fn urgent(State(ingest): State<Ingest>, Path(id): Path<String>) -> Response {
    let title: TitleId = match id.parse() {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{id}: {e}")),
    };
    if !ingest.store.held(&title).is_some_and(|h| h.is_full()) {
        return text(StatusCode::NOT_FOUND, format!("{title} is not held whole here: seed it first"));
    }
    info!(%title, "marked urgent");
    publish(&ingest, title, true).await
}

async fn upload(
    State(ingest): State<Ingest>,
    Query(params): Query<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(expected) = headers.get(TITLE_HEADER).and_then(|v| v.to_str().ok()) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("missing header {TITLE_HEADER}: the title id of the bytes sent"),
        );
    };
    let expected: TitleId = match expected.parse() {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{TITLE_HEADER}: {e}")),
    };
    let chunk_size = match ChunkSize::new(params.chunk_size.unwrap_or(ChunkSize::DEFAULT.bytes())) {
        Ok(c) => c,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut name = params.name.unwrap_or_default();
    if name.len() > fillmesh_protocol::messages::MAX_TEXT || name.contains(['/', '\n', '\0']) {
        return text(StatusCode::BAD_REQUEST, "name: at most 256 bytes, no '/', newline or NUL");
    }
    if name.is_empty() {
        name = expected.to_string();
    }
    if ingest.store.held(&expected).is_some_and(|h| h.is_full()) {
        if params.urgent {
            return publish(&ingest, expected, true).await;
        }
        return text(StatusCode::OK, expected.to_string());
    }
    let Ok(_slot) = ingest.slots.clone().try_acquire_owned() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "too many uploads in progress; retry later");
    };
    let received = if params.package {
        receive_package(&ingest.store, body, chunk_size, &expected).await
    } else {
        receive(&ingest.store, body, chunk_size).await
    };
    match received {
        Ok((staging, id, manifest)) => {
            if id != expected {
                let _ = tokio::fs::remove_file(&staging).await;
                warn!(%expected, received = %id, "upload refused: bytes do not hash to the announced id");
                return text(
                    StatusCode::CONFLICT,
                    format!("the bytes received hash to {id}, not {expected}: the file changed while it was read, or was damaged in transit; nothing was stored"),
                );
            }
            let store = ingest.store.clone();
            let len = manifest.len();
            let adopted = tokio::task::spawn_blocking(move || {
                let result = store.import_complete(id, &name, manifest, &staging);
                if result.is_err() {
                    let _ = std::fs::remove_file(&staging);
                }
                result
            })
            .await;
            match adopted {
                Ok(Ok(())) => {
                    info!(title = %id, len, urgent = params.urgent, "title seeded");
                    publish(&ingest, id, params.urgent).await
                }
                Ok(Err(e)) => text(StatusCode::INSUFFICIENT_STORAGE, Chain(&e).to_string()),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        Err((status, msg)) => text(status, msg),
    }
}

/// How long an upload's answer waits for the tracker to confirm the title. A tracker on the
/// same network answers in milliseconds; an origin still (re)connecting to its tracker
/// publishes when it gets there, and the upload is answered `202` meanwhile.
const PUBLISH_WAIT: Duration = Duration::from_secs(10);

/// Hands a stored title to the tracker link and answers the upload: `201` once the tracker
/// has it (or when this origin has no tracker), `202` if the tracker has not confirmed it
/// within [`PUBLISH_WAIT`]. The first line of either body is the title id. `urgent` marks it
/// urgent at the tracker too.
async fn publish(ingest: &Ingest, id: TitleId, urgent: bool) -> Response {
    let (done, published) = tokio::sync::oneshot::channel();
    if ingest.published.send(ToPublish { title: id, urgent, done }).is_err() {
        // No tracker link: a standalone origin, with nobody to tell.
        return text(StatusCode::CREATED, id.to_string());
    }
    match tokio::time::timeout(PUBLISH_WAIT, published).await {
        Ok(Ok(())) => text(StatusCode::CREATED, id.to_string()),
        _ => text(
            StatusCode::ACCEPTED,
            format!("{id}
stored at the origin; the tracker has not confirmed it yet (the origin publishes it when it reaches the tracker)"),
        ),
    }
}

/// Streams the body into a staging file while building its manifest.
async fn receive(
    store: &Store,
    body: Body,
    chunk_size: ChunkSize,
) -> Result<(PathBuf, TitleId, Manifest), (StatusCode, String)> {
    let path = staging_path(store).await?;
    let result = async {
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| (StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
        let mut builder = ManifestBuilder::new(chunk_size);
        let mut stream = body.into_data_stream();
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| (StatusCode::BAD_REQUEST, format!("upload interrupted: {e}")))?;
            builder.update(&piece).map_err(|e| (StatusCode::PAYLOAD_TOO_LARGE, Chain(&e).to_string()))?;
            file.write_all(&piece)
                .await
                .map_err(|e| (StatusCode::INSUFFICIENT_STORAGE, format!("writing the upload: {e}")))?;
        }
        file.flush().await.map_err(|e| (StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
        let (id, manifest) = builder.finish();
        Ok((id, manifest))
    }
    .await;
    keep_or_remove(path, result).await
}

/// Streams a package's body (see the module) into a staging data file while building its
/// manifest, refusing it as soon as something is not what the listing says.
async fn receive_package(
    store: &Store,
    body: Body,
    chunk_size: ChunkSize,
    expected: &TitleId,
) -> Result<(PathBuf, TitleId, Manifest), (StatusCode, String)> {
    let path = staging_path(store).await?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut reader = tokio::io::BufReader::new(tokio_util::io::StreamReader::new(stream));
    let result = async {
        let listing_len = read_len(&mut reader, "the listing").await?;
        if listing_len > MAX_LISTING_BYTES as u64 {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a listing of {listing_len} bytes, more than the limit of {MAX_LISTING_BYTES}"),
            ));
        }
        let mut listing = vec![0u8; listing_len as usize];
        reader.read_exact(&mut listing).await.map_err(interrupted)?;
        let listing = String::from_utf8(listing)
            .map_err(|_| (StatusCode::BAD_REQUEST, "the listing is not UTF-8".to_owned()))?;
        let lines = package::parse_listing(&listing, Some(expected)).map_err(|e| {
            let status = match e {
                package::ListingError::Mismatch { .. } => StatusCode::CONFLICT,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, format!("the listing: {e}; nothing was stored"))
        })?;
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| (StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
        let mut builder = PackageBuilder::new(chunk_size);
        let mut buf = vec![0u8; 1 << 20];
        for (want, name) in &lines {
            let len = read_len(&mut reader, name).await?;
            builder.start_file(name).map_err(|e| (StatusCode::BAD_REQUEST, Chain(&e).to_string()))?;
            file.seek(std::io::SeekFrom::Start(builder.data_offset()))
                .await
                .map_err(|e| (StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
            let mut left = len;
            while left > 0 {
                let take = left.min(buf.len() as u64) as usize;
                let n = reader.read(&mut buf[..take]).await.map_err(interrupted)?;
                if n == 0 {
                    return Err((StatusCode::BAD_REQUEST, format!("upload interrupted in {name:?}")));
                }
                builder
                    .update(&buf[..n])
                    .map_err(|e| (StatusCode::PAYLOAD_TOO_LARGE, Chain(&e).to_string()))?;
                file.write_all(&buf[..n])
                    .await
                    .map_err(|e| (StatusCode::INSUFFICIENT_STORAGE, format!("writing the upload: {e}")))?;
                left -= n as u64;
            }
            let (got, _) = builder.finish_file().map_err(|e| (StatusCode::BAD_REQUEST, Chain(&e).to_string()))?;
            if got != *want {
                return Err((
                    StatusCode::CONFLICT,
                    format!("{name:?} hashes to {got}, not {want} as the listing says: the file changed while it was read, or was damaged in transit; nothing was stored"),
                ));
            }
        }
        let mut rest = [0u8; 1];
        if reader.read(&mut rest).await.map_err(interrupted)? != 0 {
            return Err((StatusCode::BAD_REQUEST, "bytes after the last file of the listing".to_owned()));
        }
        let (id, manifest) = builder.finish().map_err(|e| (StatusCode::BAD_REQUEST, Chain(&e).to_string()))?;
        file.set_len(manifest.data_len()).await.map_err(|e| (StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
        file.flush().await.map_err(|e| (StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
        Ok((id, manifest))
    }
    .await;
    keep_or_remove(path, result).await
}

/// A new staging file's path in the store's staging directory (created if need be).
async fn staging_path(store: &Store) -> Result<PathBuf, (StatusCode, String)> {
    let dir = store.dir().join("staging");
    tokio::fs::create_dir_all(&dir).await.map_err(|e| (StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
    Ok(dir.join(format!("upload-{}-{}.part", std::process::id(), unique())))
}

/// The staged upload with its staging file, or the error with the staging file removed.
async fn keep_or_remove(
    path: PathBuf,
    result: Result<(TitleId, Manifest), (StatusCode, String)>,
) -> Result<(PathBuf, TitleId, Manifest), (StatusCode, String)> {
    match result {
        Ok((id, manifest)) => Ok((path, id, manifest)),
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(e)
        }
    }
}

fn interrupted(e: std::io::Error) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, format!("upload interrupted: {e}"))
}

/// Reads a decimal length and its newline (at most 20 digits), the frame of a package's body.
async fn read_len(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    what: &str,
) -> Result<u64, (StatusCode, String)> {
    let mut line = Vec::with_capacity(21);
    let mut limited = reader.take(21);
    limited.read_until(b'\n', &mut line).await.map_err(interrupted)?;
    let text = line.strip_suffix(b"\n").and_then(|t| std::str::from_utf8(t).ok());
    text.and_then(|t| t.parse::<u64>().ok())
        .ok_or_else(|| (StatusCode::BAD_REQUEST, format!("a package body: expected the length of {what:?}")))
}

/// Writes the frame of a package body's part: its length and a newline (see the module).
pub fn frame_len(len: u64) -> bytes::Bytes {
    bytes::Bytes::from(format!("{len}\n"))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
