//! `fillmesh seed`'s side of the ingest API ([`super::ingest`]): hash the file, ask the
//! origin whether it holds the title already, else stream the bytes with the id in a header.
//! A directory is a package: its files are found and hashed first, the listing names it, and
//! the listing and the files go in one body (see [`super::ingest`]).

use std::path::Path;
use std::time::Duration;

use fillmesh_protocol::{ChunkSize, TitleId};

use futures_util::{StreamExt, TryStreamExt};
use tokio::io::AsyncReadExt;

use super::ingest::{frame_len, TITLE_HEADER};
use super::package;

/// Why a seed failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The file could not be inspected, opened or read (to hash it, or to send it).
    #[error("{path}")]
    File {
        /// The file, as given.
        path: String,
        /// What the filesystem said.
        source: std::io::Error,
    },
    /// The path names a device, a pipe or the like (given as shown).
    #[error("{0} is not a regular file or a directory")]
    NotAFile(String),
    /// The directory cannot be a package (a link, a special file, a bad name, too many files).
    #[error("{dir} cannot be seeded as a package")]
    Package {
        /// The directory, as given.
        dir: String,
        /// Why.
        source: super::package::PackageError,
    },
    /// The chunk size asked for is not one a title may have; checked before the file is
    /// touched.
    #[error(transparent)]
    ChunkSize(#[from] fillmesh_protocol::ChunkSizeError),
    /// Asking the origin whether it holds the title failed: no connection within 10 s, or
    /// the exchange broke off.
    #[error("cannot reach the origin at {base}")]
    Unreachable {
        /// The origin's URL, without a trailing `/`.
        base: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// The upload broke off before the origin answered it.
    #[error("uploading to {base}")]
    Upload {
        /// The origin's URL, without a trailing `/`.
        base: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// The origin answered the upload with an error status: 409 when the bytes did not
    /// hash to the id (the file changed while it was read, or damage in transit), 413 for a
    /// title larger than a manifest can describe, 503 with too many uploads at once, 507
    /// when it could not store them, 400 for a request it would not take.
    #[error("the origin refused the title ({status}): {body}")]
    Refused {
        /// The status the origin answered.
        status: reqwest::StatusCode,
        /// The body of the answer, trimmed: the origin's reason.
        body: String,
    },
    /// The origin took the bytes, but the file's length or modification time is no longer
    /// what it was before it was hashed: what was sent may not be the file as it is now.
    #[error("{0} changed while it was being seeded; seed it again once it is stable")]
    Changed(String),
    /// The blocking task hashing the file panicked or was cancelled.
    #[error("the hashing task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// What a seed did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeded {
    /// The bytes were sent, the origin adopted them and the tracker has the title.
    Sent(TitleId),
    /// The bytes were sent and the origin adopted them; its tracker had not confirmed the
    /// title within the origin's wait (the origin publishes it when it reaches the tracker).
    Stored(TitleId),
    /// The origin held the title already: nothing was sent.
    AlreadyHeld(TitleId),
}

/// Hands `file` to the origin whose `--http` URL is `origin`, under `name` (default: the file
/// name), cut into `chunk_size` chunks.
pub async fn seed(
    file: &Path,
    origin: &str,
    name: Option<String>,
    chunk_size: u64,
) -> Result<Seeded, SeedError> {
    seed_with(file, origin, name, chunk_size, false).await
}

/// [`seed()`], and with `urgent` the title is published urgent: appliances fill it at once,
/// whatever their fill windows. A title the origin already holds is marked urgent without
/// sending its bytes again.
pub async fn seed_with(
    file: &Path,
    origin: &str,
    name: Option<String>,
    chunk_size: u64,
    urgent: bool,
) -> Result<Seeded, SeedError> {
    ChunkSize::new(chunk_size)?;
    let shown = file.display().to_string();
    let file_err = |source| SeedError::File { path: shown.clone(), source };
    let before = std::fs::metadata(file).map_err(file_err)?;
    if before.is_dir() {
        return seed_package(file, origin, name, chunk_size, urgent).await;
    }
    if !before.is_file() {
        return Err(SeedError::NotAFile(shown));
    }
    let hash_path = file.to_path_buf();
    let id =
        tokio::task::spawn_blocking(move || std::fs::File::open(&hash_path).and_then(TitleId::of_reader))
            .await
            .map_err(SeedError::Task)?
            .map_err(file_err)?;
    let base = origin.trim_end_matches('/').to_owned();
    let Some(client) = probe(&base, &id).await? else {
        return already_held(&base, id, urgent).await;
    };
    let name = name
        .unwrap_or_else(|| file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let urgent = if urgent { "true" } else { "false" };
    let reader = tokio::fs::File::open(file).await.map_err(file_err)?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(reader, 1 << 20));
    let response = client
        .post(format!("{base}/titles"))
        .query(&[("name", name.as_str()), ("chunk_size", &chunk_size.to_string()), ("urgent", urgent)])
        .header(TITLE_HEADER, id.to_string())
        .header(reqwest::header::CONTENT_LENGTH, before.len())
        .body(body)
        .send()
        .await
        .map_err(|source| SeedError::Upload { base: base.clone(), source })?;
    let status = answered(response).await?;
    let after = std::fs::metadata(file).map_err(file_err)?;
    if after.len() != before.len() || after.modified().ok() != before.modified().ok() {
        return Err(SeedError::Changed(shown));
    }
    Ok(sent(status, id))
}

/// The origin holds `id` whole already: nothing to send, but with `urgent` it is marked so
/// (`POST /titles/<id>/urgent`).
async fn already_held(base: &str, id: TitleId, urgent: bool) -> Result<Seeded, SeedError> {
    if !urgent {
        return Ok(Seeded::AlreadyHeld(id));
    }
    let unreachable = |source| SeedError::Unreachable { base: base.to_owned(), source };
    let client =
        reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build().map_err(unreachable)?;
    let response = client.post(format!("{base}/titles/{id}/urgent")).send().await.map_err(unreachable)?;
    answered(response).await?;
    Ok(Seeded::AlreadyHeld(id))
}

/// Asks the origin whether it holds `id` whole: `None` if it does, else a client to upload
/// with.
async fn probe(base: &str, id: &TitleId) -> Result<Option<reqwest::Client>, SeedError> {
    let unreachable = |source| SeedError::Unreachable { base: base.to_owned(), source };
    let client =
        reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build().map_err(unreachable)?;
    let probe = client.get(format!("{base}/titles/{id}")).send().await.map_err(unreachable)?;
    Ok((!probe.status().is_success()).then_some(client))
}

/// The upload's answer: its status if the origin took the title, else why not.
async fn answered(response: reqwest::Response) -> Result<reqwest::StatusCode, SeedError> {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(SeedError::Refused { status, body: text.trim().to_owned() });
    }
    Ok(status)
}

fn sent(status: reqwest::StatusCode, id: TitleId) -> Seeded {
    if status == reqwest::StatusCode::ACCEPTED {
        Seeded::Stored(id)
    } else {
        Seeded::Sent(id)
    }
}

/// Seeds the directory `dir` as one package (see the module).
async fn seed_package(
    dir: &Path,
    origin: &str,
    name: Option<String>,
    chunk_size: u64,
    urgent: bool,
) -> Result<Seeded, SeedError> {
    let shown = dir.display().to_string();
    let package_err = |source| SeedError::Package { dir: shown.clone(), source };
    let walk = dir.to_path_buf();
    let (files, listing, id) = tokio::task::spawn_blocking(move || {
        let files = package::scan(&walk)?;
        let (_, listing, id) = package::hash(&files)?;
        Ok::<_, package::PackageError>((files, listing, id))
    })
    .await
    .map_err(SeedError::Task)?
    .map_err(package_err)?;
    let base = origin.trim_end_matches('/').to_owned();
    let Some(client) = probe(&base, &id).await? else {
        return already_held(&base, id, urgent).await;
    };
    let name = name.unwrap_or_else(|| {
        std::fs::canonicalize(dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default()
    });
    let total = files.iter().fold(0u64, |sum, f| sum + frame_len(f.len).len() as u64 + f.len)
        + frame_len(listing.len() as u64).len() as u64
        + listing.len() as u64;
    let head = futures_util::stream::iter([
        Ok::<_, std::io::Error>(frame_len(listing.len() as u64)),
        Ok(bytes::Bytes::from(listing)),
    ]);
    let parts = futures_util::stream::iter(files.clone()).flat_map(|f| {
        let open = async move {
            let reader = tokio::fs::File::open(&f.disk).await?;
            // Exactly the length announced: a file that grew is caught by its hash at the
            // origin and by the check after the upload.
            Ok::<_, std::io::Error>(tokio_util::io::ReaderStream::with_capacity(reader.take(f.len), 1 << 20))
        };
        futures_util::stream::once(async move { Ok(frame_len(f.len)) })
            .chain(futures_util::stream::once(open).try_flatten())
    });
    let body = reqwest::Body::wrap_stream(head.chain(parts));
    let response = client
        .post(format!("{base}/titles"))
        .query(&[
            ("name", name.as_str()),
            ("chunk_size", &chunk_size.to_string()),
            ("package", "true"),
            ("urgent", if urgent { "true" } else { "false" }),
        ])
        .header(TITLE_HEADER, id.to_string())
        .header(reqwest::header::CONTENT_LENGTH, total)
        .body(body)
        .send()
        .await
        .map_err(|source| SeedError::Upload { base: base.clone(), source })?;
    let status = answered(response).await?;
    if let Some(f) = files.iter().find(|f| package::changed(f)) {
        return Err(SeedError::Changed(f.disk.display().to_string()));
    }
    Ok(sent(status, id))
}
