//! `fillmesh fetch`: one title, verified, from named nodes, written to a file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use fillmesh_net::{identity, MeshEndpoint, TlsIdentity, TransportLimits};

use super::{is_stdout, report};
use fillmesh_protocol::TitleId;
use libp2p_identity::PeerId;

use crate::fill::{fetch_title, FetchError, FetchOptions, FetchReport, Source, SourceReport};
use crate::store::{Exported, Store};

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
    /// `-` (standard output; the report then goes to standard error), a pipe or a device.
    #[arg(long)]
    pub out: PathBuf,
    /// Keep identity and chunks here (resumable); otherwise both are temporary.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Chunk requests in flight per source.
    #[arg(long, default_value_t = 4)]
    pub per_source: usize,
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
    let temp;
    let (key, data) = match &args.data {
        Some(dir) => (identity::load_or_create(dir)?, dir.clone()),
        None => {
            // Beside --out, on its filesystem: the finished title is then linked into place
            // rather than copied (see `Store::export`), so its bytes are written once.
            let special = to_stdout || std::fs::metadata(&args.out).is_ok_and(|m| !m.is_file());
            let beside = match args.out.parent() {
                _ if special => std::env::temp_dir(),
                Some(p) if p.as_os_str().is_empty() => ".".into(),
                Some(p) => p.to_path_buf(),
                None => std::env::temp_dir(),
            };
            temp = tempfile::Builder::new()
                .prefix(".fillmesh-fetch-")
                .tempdir_in(&beside)
                .with_context(|| format!("creating a temporary store in {}", beside.display()))?;
            (identity::ephemeral(), temp.path().to_path_buf())
        }
    };
    let tls = TlsIdentity::new(&key)?;
    tracing::info!(peer = %tls.peer_id(), "fetching as");
    let bind_ip = if sources[0].addr.is_ipv4() { "0.0.0.0" } else { "::" }.parse()?;
    let endpoint = MeshEndpoint::client(bind_ip, tls, TransportLimits::default())?;
    let store_dir = data.clone();
    let store = Arc::new(tokio::task::spawn_blocking(move || Store::open(&store_dir)).await??);
    let opts = FetchOptions { per_source: args.per_source.max(1), ..FetchOptions::default() };
    let result = fetch_title(&endpoint, store.clone(), args.title, &sources, opts).await;
    let report = match result {
        Ok(r) => r,
        Err(FetchError::Incomplete { report, .. }) => {
            print_report(&report, to_stdout);
            anyhow::bail!(
                "incomplete: {} of {} chunks could not be fetched",
                report.chunks - report.already_held - report.fetched.len() as u32,
                report.chunks
            );
        }
        Err(e) => return Err(e.into()),
    };
    let out = args.out.clone();
    let title = args.title;
    if to_stdout {
        tokio::task::spawn_blocking(move || {
            store.export_to(&title, &mut std::io::stdout().lock(), "standard output")
        })
        .await??;
    } else {
        let shown = out.display().to_string();
        match tokio::task::spawn_blocking(move || store.export(&title, &out)).await?? {
            Exported::Linked => tracing::info!(out = %shown, "linked into place: the title is on disk once"),
            Exported::Copied => tracing::info!(out = %shown, "copied into place (another filesystem)"),
            Exported::Streamed => tracing::info!(out = %shown, "written into"),
        }
    }
    print_report(&report, to_stdout);
    endpoint.close();
    Ok(())
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
