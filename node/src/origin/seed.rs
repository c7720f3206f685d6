//! `fillmesh seed`'s side of the ingest API ([`super::ingest`]): hash the file, ask the
//! origin whether it holds the title already, else stream the bytes with the id in a header.

use std::path::Path;
use std::time::Duration;

use fillmesh_protocol::{ChunkSize, TitleId};

use super::ingest::TITLE_HEADER;

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
    /// The path names a directory, a device, a pipe or the like (given as shown).
    #[error("{0} is not a regular file")]
    NotAFile(String),
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
    ChunkSize::new(chunk_size)?;
    let shown = file.display().to_string();
    let file_err = |source| SeedError::File { path: shown.clone(), source };
    let before = std::fs::metadata(file).map_err(file_err)?;
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
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|source| SeedError::Unreachable { base: base.clone(), source })?;
    let probe = client
        .get(format!("{base}/titles/{id}"))
        .send()
        .await
        .map_err(|source| SeedError::Unreachable { base: base.clone(), source })?;
    if probe.status().is_success() {
        return Ok(Seeded::AlreadyHeld(id));
    }
    let name = name
        .unwrap_or_else(|| file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let reader = tokio::fs::File::open(file).await.map_err(file_err)?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(reader, 1 << 20));
    let response = client
        .post(format!("{base}/titles"))
        .query(&[("name", name.as_str()), ("chunk_size", &chunk_size.to_string())])
        .header(TITLE_HEADER, id.to_string())
        .header(reqwest::header::CONTENT_LENGTH, before.len())
        .body(body)
        .send()
        .await
        .map_err(|source| SeedError::Upload { base: base.clone(), source })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(SeedError::Refused { status, body: text.trim().to_owned() });
    }
    let after = std::fs::metadata(file).map_err(file_err)?;
    if after.len() != before.len() || after.modified().ok() != before.modified().ok() {
        return Err(SeedError::Changed(shown));
    }
    if status == reqwest::StatusCode::ACCEPTED {
        return Ok(Seeded::Stored(id));
    }
    Ok(Seeded::Sent(id))
}
