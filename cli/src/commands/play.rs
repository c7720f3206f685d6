//! `fillmesh play`: the player client ([`fillmesh_player`]) from the command line, and its
//! report.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use fillmesh_player::abr::{Reason, SAFETY};
use fillmesh_player::{play, LadderSummary, PlayOptions, SteerCache};
use fillmesh_protocol::{units, TitleId};
use tracing::debug;

use super::{is_stdout, report};

/// The arguments of `fillmesh play`.
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
    /// then goes to standard error), a pipe or a device such as /dev/null. For a package,
    /// the played rendition as a player's decoder is fed it: the init segment, then the
    /// segments in order, and on each switch the new variant's init segment before its
    /// segments (a fragmented MP4). ffmpeg and ffprobe read its duration right but keep the
    /// first init segment's codec settings (they skip a second `moov`), so frames after a
    /// switch to another resolution do not decode in them; with --variant N the file is one
    /// rendition that every tool plays.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A package: play only this variant (0 is the lowest bandwidth; the report lists them)
    /// instead of adapting to the throughput measured.
    #[arg(long, value_name = "N")]
    pub variant: Option<usize>,
    /// A package: play this playlist (its path in the package) instead of the top-level
    /// .m3u8 found (master, index, main or playlist first).
    #[arg(long, value_name = "PATH")]
    pub playlist: Option<String>,
    /// Chunk requests in flight (the read-ahead window).
    #[arg(long, default_value_t = 4)]
    pub window: usize,
    /// Seconds without progress before failing over.
    #[arg(long, default_value_t = 5)]
    pub stall_secs: u64,
    /// Consume at most this many bytes per second, as a player at a bitrate (e.g. 8MB). A
    /// package's variant is chosen by the throughput measured with this pacing in it: a way to
    /// play as over a slower link.
    #[arg(long, value_parser = units::parse_size)]
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
        variant: args.variant,
        playlist: args.playlist,
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
    if let Some(ladder) = &s.ladder {
        report_ladder(on_stderr, ladder);
    }
    report(on_stderr, format_args!("failovers: {}", s.failovers));
    report(on_stderr, format_args!("content misses (503, asked further down the list): {}", s.misses));
    report(on_stderr, format_args!("token renewals (steered again after a 403): {}", s.resteers));
    report(on_stderr, format_args!("revivals (steered again with every appliance dropped): {}", s.revivals));
    Ok(())
}

/// The ladder part of the report: the variants played and each switch.
fn report_ladder(on_stderr: bool, l: &LadderSummary) {
    report(
        on_stderr,
        format_args!(
            "ladder {}: {} variant(s), {} segments played, {:.3} s of media",
            l.playlist,
            l.variants.len(),
            l.segments,
            l.duration
        ),
    );
    for v in l.played() {
        let resolution = v.resolution.map(|(w, h)| format!("{w}x{h}")).unwrap_or_else(|| "-".into());
        report(
            on_stderr,
            format_args!(
                "variant {} ({}): bandwidth {} b/s, resolution {resolution}, {} segments, {} bytes",
                v.index, v.playlist, v.bandwidth, v.segments, v.bytes
            ),
        );
    }
    let bandwidth = |v: usize| l.variants.get(v).map_or(0, |v| v.bandwidth);
    for w in &l.switches {
        let why = match w.reason {
            Reason::Up => {
                format!("up: {SAFETY} of the throughput fits variant {}'s {} b/s", w.to, bandwidth(w.to))
            }
            Reason::Down => format!("down: below variant {}'s {} b/s", w.from, bandwidth(w.from)),
        };
        report(
            on_stderr,
            format_args!(
                "switch at segment {} ({:.3} s): variant {} -> {}, throughput {:.0} b/s ({why})",
                w.at_segment, w.at_time, w.from, w.to, w.throughput
            ),
        );
    }
    report(on_stderr, format_args!("switches: {}", l.switches.len()));
}
