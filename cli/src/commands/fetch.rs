//! `fillmesh fetch`: one title, verified, from named nodes, written to a file; a package is
//! written as its directory, each file once.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use fillmesh_net::sync::LockExt;
use fillmesh_net::{identity, MeshEndpoint, TlsIdentity, TransportLimits};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{is_stdout, report};
use fillmesh_protocol::{ChunkBitmap, Manifest, TitleId};
use libp2p_identity::PeerId;

use fillmesh_node::fill::fetch::{Destination, Observer};
use fillmesh_node::fill::{fetch_title, FetchError, FetchOptions, FetchReport, Source, SourceReport};
use fillmesh_node::store::{Exported, OutFile, Store, StoreError};

#[derive(Debug, Args)]
pub struct FetchArgs {
    pub title: TitleId,
    /// A source's mesh address (repeatable; pairs with --peer in order).
    #[arg(long = "from", value_name = "ADDR", required = true)]
    pub from: Vec<SocketAddr>,
    /// A source's PeerId (repeatable; pairs with --from in order).
    #[arg(long = "peer", value_name = "PEERID", required = true)]
    pub peer: Vec<PeerId>,
    /// Where to write the verified title: a file (replaced only once every chunk is verified),
    /// `-` (standard output; the report then goes to standard error), a pipe or a device. For
    /// a package: a directory not there yet (or empty), named into place once every file is
    /// written.
    #[arg(long)]
    pub out: PathBuf,
    /// Keep identity and chunks here (resumable); otherwise both are temporary.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Fetch as the identity kept in this directory (the PeerId `fillmesh node --print-id
    /// --data DIR` shows, which sources must trust), keeping no chunks there.
    #[arg(long, value_name = "DIR", conflicts_with = "data")]
    pub identity: Option<PathBuf>,
    /// Chunk requests in flight per source.
    #[arg(long, default_value_t = 4)]
    pub per_source: usize,
}

/// Where `--out` points.
enum Output {
    /// A regular file, or a path with nothing there yet: replaced once the title is whole.
    File(PathBuf),
    /// Standard output, a pipe or a device: written into, in order, as chunks arrive.
    Stream(PathBuf),
    /// An empty directory: only a package can go there.
    Dir(PathBuf),
}

impl Output {
    fn of(out: &Path) -> anyhow::Result<Self> {
        if is_stdout(out) {
            return Ok(Output::Stream(out.to_path_buf()));
        }
        match std::fs::metadata(out) {
            Ok(m) if m.is_dir() => {
                let empty = std::fs::read_dir(out)
                    .with_context(|| format!("--out {}", out.display()))?
                    .next()
                    .is_none();
                anyhow::ensure!(
                    empty,
                    "--out {} is a directory that is not empty; name a file (or, for a package, a new directory)",
                    out.display()
                );
                Ok(Output::Dir(out.to_path_buf()))
            }
            Ok(m) if !m.is_file() => Ok(Output::Stream(out.to_path_buf())),
            _ => Ok(Output::File(out.to_path_buf())),
        }
    }
}

/// Writes a package's files under `out` (a directory not there yet, or empty): into a sibling
/// `<out>.fillmesh-part` directory first, each file synced, then renamed into place, so nothing
/// named `out` holds a partial package. `read` gives each chunk verified.
async fn write_package(
    manifest: Arc<Manifest>,
    read: impl Fn(u32) -> Result<Bytes, StoreError> + Send + 'static,
    out: PathBuf,
) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        let files = manifest.files().context("not a package")?;
        let part = PathBuf::from(format!("{}.fillmesh-part", out.display()));
        if part.exists() {
            std::fs::remove_dir_all(&part)
                .with_context(|| format!("removing the leftover {}", part.display()))?;
        }
        for (k, f) in files.iter().enumerate() {
            // Paths were checked against the package rules when the manifest was accepted:
            // relative, no `..`, so every file lands inside `part`.
            let path = part.join(&f.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            let mut file =
                std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            for i in manifest.file_chunks(k) {
                let bytes = read(i).with_context(|| format!("reading chunk {i} back for {}", f.path))?;
                file.write_all(&bytes).with_context(|| format!("writing {}", path.display()))?;
            }
            file.sync_all().with_context(|| format!("syncing {}", path.display()))?;
        }
        if out.is_dir() {
            std::fs::remove_dir(&out).with_context(|| format!("replacing the empty {}", out.display()))?;
        }
        std::fs::rename(&part, &out).with_context(|| format!("naming {} into place", out.display()))?;
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent).and_then(|d| d.sync_all()).ok();
        }
        tracing::info!(out = %out.display(), files = files.len(), "package written");
        Ok(())
    })
    .await?
}

/// The runtime a fetch runs on: one worker thread (the chunk writer and the blocking pool
/// have their own threads).
///
/// Why: with a worker per core, quinn's receive buffers (one allocation per datagram batch,
/// up to 64 KB with GRO) were allocated on one worker and freed on another, as were the chunk
/// buffers; the allocator reuses memory freed by another thread only later, so it held more
/// pages. Measured on a 1 GiB `fetch --data` on 2 cores (`/usr/bin/time`, alternated with
/// two workers, load 4-4.5, 6 runs each): peak resident 37.0-40.2 MB (median 38.4) with one
/// worker against 41.9-44.3 MB (median 43.2) with two; user and system CPU (0.7-0.9 s,
/// 0.3-0.4 s) and transfer times (2.4-3.5 s against 2.6-3.2 s on that loaded machine) alike.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?)
}

/// Fetches, verifies, writes `--out`, and prints what each source did.
pub async fn run(args: FetchArgs) -> anyhow::Result<()> {
    let to_stdout = is_stdout(&args.out);
    anyhow::ensure!(
        args.from.len() == args.peer.len(),
        "give one --peer PEERID for each --from ADDR ({} addresses, {} peers)",
        args.from.len(),
        args.peer.len()
    );
    let sources: Vec<Source> =
        args.from.iter().zip(&args.peer).map(|(&addr, &peer)| Source { addr, peer }).collect();
    let output = Output::of(&args.out)?;
    let key = match args.data.as_ref().or(args.identity.as_ref()) {
        Some(dir) => identity::load_or_create(dir)?,
        None => identity::ephemeral(),
    };
    let tls = TlsIdentity::new(&key)?;
    tracing::info!(peer = %tls.peer_id(), "fetching as");
    let bind_ip = if sources[0].addr.is_ipv4() { "0.0.0.0" } else { "::" }.parse()?;
    let endpoint = MeshEndpoint::client(bind_ip, tls, TransportLimits::default())?;
    let bar = progress_bar(sources.len());
    let fetch = Fetch {
        endpoint: &endpoint,
        title: args.title,
        sources: &sources,
        per_source: args.per_source,
        bar: &bar,
    };
    // An existing (empty) directory takes only a package; a new path takes either.
    let into_dir = matches!(output, Output::Dir(_));
    let one_file_into_dir = |out: &Path| {
        anyhow::anyhow!("--out {} is a directory and {} is one file: name a file", out.display(), args.title)
    };
    let result = match (&args.data, output) {
        // The store is the source of truth (resumable); `--out` is linked to its data file
        // where the filesystem allows (see `Store::export`). A package's files go into their
        // directory, read back verified.
        (Some(dir), Output::File(out) | Output::Dir(out)) => {
            async {
                let store = open_store(dir).await?;
                let report = fetch.run(store.clone(), None).await;
                bar.finish_and_clear();
                let report = report?;
                let title = args.title;
                if let Some(m) = store.manifest(&title).filter(|m| m.is_package()) {
                    write_package(m, move |i| store.read_chunk(&title, i), out).await?;
                    return Ok(report);
                }
                if into_dir {
                    return Err(one_file_into_dir(&out).into());
                }
                let shown = out.display().to_string();
                match tokio::task::spawn_blocking(move || store.export(&title, &out)).await?? {
                    Exported::Linked => {
                        tracing::info!(out = %shown, "linked into place: the title is on disk once")
                    }
                    Exported::Copied => {
                        tracing::info!(out = %shown, "copied into place (another filesystem)")
                    }
                    Exported::Streamed => tracing::info!(out = %shown, "written into"),
                }
                Ok(report)
            }
            .await
        }
        (Some(dir), Output::Stream(out)) => {
            async {
                let store = open_store(dir).await?;
                let title = args.title;
                let read = {
                    let store = store.clone();
                    move |i| store.read_chunk(&title, i)
                };
                fetch.streamed(store, read, out).await
            }
            .await
        }
        // No store: the chunks land in the output file itself, named into place when whole
        // (a package's files are written from it into their directory).
        (None, Output::File(out) | Output::Dir(out)) => {
            async {
                let dir = match out.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let file = Arc::new(OutFile::create_in(&dir)?);
                let report = fetch.run(file.clone(), None).await;
                bar.finish_and_clear();
                let report = report?;
                if let Some((m, _)) = file.adopted(&args.title).filter(|(m, _)| m.is_package()) {
                    write_package(m, move |i| file.read_chunk(i), out).await?;
                    return Ok(report);
                }
                if into_dir {
                    return Err(one_file_into_dir(&out).into());
                }
                let shown = out.display().to_string();
                tokio::task::spawn_blocking(move || file.persist(&out)).await??;
                tracing::info!(out = %shown, "written in place: the title is on disk once");
                Ok(report)
            }
            .await
        }
        (None, Output::Stream(out)) => {
            async {
                // An unnamed file in the temporary directory holds what arrives out of order.
                let file = Arc::new(OutFile::create_in(&std::env::temp_dir())?);
                let read = {
                    let file = file.clone();
                    move |i| file.read_chunk(i)
                };
                fetch.streamed(file, read, out).await
            }
            .await
        }
    };
    let report = match result {
        Ok(r) => r,
        Err(FetchFailed::Incomplete(report)) => {
            print_report(&report, to_stdout);
            anyhow::bail!(
                "incomplete: {} of {} chunks could not be fetched",
                report.chunks - report.already_held - report.fetched.len() as u32,
                report.chunks
            );
        }
        Err(FetchFailed::Other(e)) => return Err(e),
    };
    print_report(&report, to_stdout);
    endpoint.close();
    Ok(())
}

/// Why `fillmesh fetch` failed: incomplete (with what each source did), or anything else.
enum FetchFailed {
    Incomplete(Box<FetchReport>),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for FetchFailed {
    fn from(e: E) -> Self {
        FetchFailed::Other(e.into())
    }
}

async fn open_store(dir: &Path) -> anyhow::Result<Arc<Store>> {
    let dir = dir.to_path_buf();
    Ok(Arc::new(tokio::task::spawn_blocking(move || Store::open(&dir)).await??))
}

/// One fetch's settings, whatever its destination.
struct Fetch<'a> {
    endpoint: &'a MeshEndpoint,
    title: TitleId,
    sources: &'a [Source],
    per_source: usize,
    bar: &'a ProgressBar,
}

impl Fetch<'_> {
    async fn run<D: Destination>(
        &self,
        into: Arc<D>,
        events: Option<std::sync::mpsc::Sender<Event>>,
    ) -> Result<FetchReport, FetchFailed> {
        let observer = Arc::new(Watch { bar: self.bar.clone(), events: events.map(Mutex::new) });
        let opts = FetchOptions {
            per_source: self.per_source.max(1),
            observer: Some(observer),
            ..FetchOptions::default()
        };
        match fetch_title(self.endpoint, into, self.title, self.sources, opts).await {
            Ok(report) => Ok(report),
            Err(FetchError::Incomplete { report, .. }) => Err(FetchFailed::Incomplete(report)),
            Err(e) => Err(e.into()),
        }
    }

    /// Fetches into `into` while a thread writes the title to `out` in order, each chunk as
    /// soon as every chunk before it is in (read back with `read`).
    async fn streamed<D: Destination>(
        &self,
        into: Arc<D>,
        read: impl Fn(u32) -> Result<Bytes, StoreError> + Send + 'static,
        out: PathBuf,
    ) -> Result<FetchReport, FetchFailed> {
        let (events, received) = std::sync::mpsc::channel();
        let mut writer = tokio::task::spawn_blocking(move || stream_in_order(&received, read, &out));
        let fetch = self.run(into, Some(events));
        tokio::pin!(fetch);
        // The writer ends first only when it fails (standard output closed, say): the fetch
        // is then dropped, which stops it.
        let written = tokio::select! {
            report = &mut fetch => {
                self.bar.finish_and_clear();
                let report = report?;
                (&mut writer).await??;
                return Ok(report);
            }
            written = &mut writer => written?,
        };
        written?;
        let report = fetch.await;
        self.bar.finish_and_clear();
        report
    }
}

/// What the stream writer is told.
enum Event {
    Started { chunks: u32, held: ChunkBitmap, package: bool },
    Stored(u32),
}

/// The fetch's observer: moves the progress bar and tells the stream writer.
struct Watch {
    bar: ProgressBar,
    events: Option<Mutex<std::sync::mpsc::Sender<Event>>>,
}

impl Watch {
    fn send(&self, event: Event) {
        if let Some(events) = &self.events {
            // A writer that is gone has failed, and says so itself.
            let _ = events.locked().send(event);
        }
    }
}

impl Observer for Watch {
    fn started(&self, manifest: &Manifest, held: &ChunkBitmap) {
        self.bar.set_length(manifest.len());
        self.bar.set_position(held.iter().filter_map(|i| manifest.chunk_len(i)).sum());
        self.bar.reset_eta();
        self.send(Event::Started {
            chunks: manifest.chunk_count(),
            held: held.clone(),
            package: manifest.is_package(),
        });
    }
    fn stored(&self, index: u32, bytes: u64) {
        self.bar.inc(bytes);
        self.send(Event::Stored(index));
    }
}

/// A bar on standard error when it is a terminal (bytes, rate, sources, ETA); hidden
/// otherwise, where the summary lines say it all.
fn progress_bar(sources: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        // Within 80 columns.
        "{spinner} {bar:20} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(format!("{sources} source{}", if sources == 1 { "" } else { "s" }));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Writes the title to `out` (`-` for standard output) in order as its chunks arrive: each
/// chunk goes out as soon as every chunk before it is in. Bounded by the title's chunk count:
/// every event received either starts it or adds a chunk; it ends when the title is out or
/// the fetch stops sending.
fn stream_in_order(
    events: &std::sync::mpsc::Receiver<Event>,
    read: impl Fn(u32) -> Result<Bytes, StoreError>,
    out: &Path,
) -> anyhow::Result<u64> {
    let shown = if is_stdout(out) { "standard output".to_string() } else { out.display().to_string() };
    let mut sink: Box<dyn Write> = if is_stdout(out) {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::OpenOptions::new()
                .write(true)
                .open(out)
                .with_context(|| format!("opening {shown} for writing"))?,
        )
    };
    let (mut have, mut chunks) = (None::<ChunkBitmap>, 0u32);
    let (mut next, mut written) = (0u32, 0u64);
    loop {
        if let Some(have) = &have {
            while next < chunks && have.contains(next) {
                let bytes = read(next).with_context(|| format!("reading chunk {next} back"))?;
                sink.write_all(&bytes).with_context(|| format!("writing to {shown}"))?;
                written += bytes.len() as u64;
                next += 1;
            }
            if next == chunks {
                sink.flush().with_context(|| format!("writing to {shown}"))?;
                return Ok(written);
            }
        }
        match events.recv() {
            Ok(Event::Started { package: true, .. }) => anyhow::bail!(
                "the title is a package (a directory of files): --out must name a new or empty directory, not {shown}"
            ),
            Ok(Event::Started { chunks: n, held, .. }) => (have, chunks) = (Some(held), n),
            Ok(Event::Stored(i)) => {
                if let Some(have) = &mut have {
                    have.insert(i);
                }
            }
            // The fetch stopped before the title was whole: it says why.
            Err(_) => return Ok(written),
        }
    }
}

/// The fetch's report: on standard output, or on standard error when the title went there.
fn print_report(r: &FetchReport, on_stderr: bool) {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    report(
        on_stderr,
        format_args!(
            "fetched {}: {} chunks ({} bytes) in {:.3} s, {:.1} MB/s; {} of {} chunks already held",
            r.title,
            r.fetched.len(),
            r.bytes,
            secs,
            r.bytes as f64 / secs / 1e6,
            r.already_held,
            r.chunks
        ),
    );
    for SourceReport { source, tally: s } in &r.sources {
        report(
            on_stderr,
            format_args!(
                "source {} at {}: {} chunks, {} bytes, {} failures, {} corrupt{}{}",
                source.peer,
                source.addr,
                s.chunks,
                s.bytes,
                s.failures,
                s.corrupt,
                if s.bad { ", marked bad" } else { "" },
                s.error.as_deref().map(|e| format!(", unusable: {e}")).unwrap_or_default()
            ),
        );
    }
}
