//! `fillmesh demo`: the main job. A whole mesh on this machine as real child processes — a
//! tracker, an origin and N appliances in 2 regions and N/2 sites on distinct 127.0.0.x
//! addresses — a title seeded, filled (with a progress bar per appliance), played from a
//! client address in one site, and a report of where the bytes came from. Every process it
//! starts is killed when it ends, also on Ctrl-C; its files go unless `--keep DIR`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use fillmesh_net::ready::Ready;
use fillmesh_net::say;
use fillmesh_protocol::units;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Appliances to start (in 2 regions, 2 per site).
    #[arg(long, default_value_t = 8)]
    pub appliances: usize,
    /// Size of the generated sample title.
    #[arg(long, value_parser = units::parse_size, default_value = "128MiB")]
    pub size: u64,
    /// Use this file as the title instead of a generated one.
    #[arg(long, conflicts_with = "dir")]
    pub file: Option<PathBuf>,
    /// Use this directory as the title: a package (an HLS ladder, say: see README.md), filled
    /// as one title and played by the adaptive player.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The origin's upload cap (bytes per second), so the mesh has something to prove.
    #[arg(long, value_parser = units::parse_size, default_value = "100MB")]
    pub upload_rate: u64,
    /// Keep every data directory and log here instead of removing them.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// After the report, keep the mesh up and print the tracker's two pages (the fleet, and
    /// a browser player for the title) until Ctrl-C.
    #[arg(long)]
    pub stay: bool,
    /// Stop after the fill and its report (no player): for timing fills alone.
    #[arg(long)]
    pub no_play: bool,
}

impl From<DemoArgs> for DemoOptions {
    fn from(args: DemoArgs) -> Self {
        DemoOptions {
            appliances: args.appliances,
            size: args.size,
            file: args.file.or(args.dir),
            origin_upload_rate: args.upload_rate,
            keep: args.keep,
            stay: args.stay,
            play: !args.no_play,
        }
    }
}

/// What the demo builds.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub appliances: usize,
    pub size: u64,
    /// The title: a file, or a directory (a package); generated when `None`.
    pub file: Option<PathBuf>,
    pub origin_upload_rate: u64,
    pub keep: Option<PathBuf>,
    /// Keep the mesh up after the report until Ctrl-C.
    pub stay: bool,
    /// Play the title after the fill.
    pub play: bool,
}

/// A started child: killed when dropped.
pub(crate) struct Proc {
    _child: Child,
    pub(crate) peer: String,
    pub(crate) mesh: String,
    pub(crate) http: Option<String>,
    /// A tracker's operator listener (`--admin-http`).
    pub(crate) admin: Option<String>,
}

/// Runs `fillmesh ARGS` to completion and returns its stdout.
pub(crate) async fn run_tool(exe: &Path, args: &[&str], log: &Path) -> anyhow::Result<String> {
    run_tool_with(Command::new(exe), args, log).await
}

/// Runs `CMD ARGS` (`CMD` being the fillmesh binary, maybe behind `ip netns exec NS`) to
/// completion and returns its stdout.
pub(crate) async fn run_tool_with(mut cmd: Command, args: &[&str], log: &Path) -> anyhow::Result<String> {
    let out = cmd.args(args).stdin(Stdio::null()).kill_on_drop(true).output().await?;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    std::io::Write::write_all(&mut file, &out.stderr)?;
    anyhow::ensure!(out.status.success(), "`fillmesh {}` failed; see {}", args.join(" "), log.display());
    Ok(String::from_utf8(out.stdout)?)
}

/// Starts `fillmesh KIND ARGS` and waits for its ready line.
async fn start(exe: &Path, kind: &str, args: &[String], log: &Path) -> anyhow::Result<Proc> {
    start_with(Command::new(exe), kind, args, log).await
}

/// Starts `CMD KIND ARGS` (`CMD` being the fillmesh binary, maybe behind `ip netns exec NS`)
/// and waits for its ready line.
pub(crate) async fn start_with(
    mut cmd: Command,
    kind: &str,
    args: &[String],
    log: &Path,
) -> anyhow::Result<Proc> {
    let err = std::fs::File::create(log)?;
    let mut child = cmd
        .arg(kind)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting fillmesh {kind}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .with_context(|| format!("{kind} did not start in 30 s; see {}", log.display()))??
        .with_context(|| format!("{kind} exited; see {}", log.display()))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let ready: Ready = line.parse().with_context(|| format!("from fillmesh {kind}"))?;
    Ok(Proc {
        _child: child,
        peer: ready.peer,
        mesh: ready.mesh.to_string(),
        http: ready.http.map(|a| a.to_string()),
        admin: ready.admin.map(|a| a.to_string()),
    })
}

/// Runs the demo; Ctrl-C stops it early (every child is killed on the way out).
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    tokio::select! {
        result = demo(opts) => result,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted: every process stopped"),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

async fn demo(opts: DemoOptions) -> anyhow::Result<()> {
    anyhow::ensure!((1..=200).contains(&opts.appliances), "--appliances must be 1 to 200");
    let exe = std::env::current_exe().context("locating the fillmesh binary")?;
    let (_temp, dir) = super::work_dir(opts.keep.as_deref(), "fillmesh-demo-")?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let started = Instant::now();
    say!(
        "fillmesh demo: a tracker, an origin and {} appliances on this machine ({})",
        opts.appliances,
        dir.display()
    );

    // Identities first, so everyone can be told whom to trust.
    let s = |p: &Path| p.display().to_string();
    let tracker_dir = dir.join("tracker");
    let origin_dir = dir.join("origin");
    let appliance_dirs: Vec<PathBuf> =
        (0..opts.appliances).map(|i| dir.join(format!("appliance-{i}"))).collect();
    let mut trusted =
        vec![run_tool(&exe, &["node", "--print-id", "--data", &s(&origin_dir)], &logs.join("id.log")).await?];
    for d in &appliance_dirs {
        trusted.push(run_tool(&exe, &["node", "--print-id", "--data", &s(d)], &logs.join("id.log")).await?);
    }
    let trust_file = dir.join("trusted.txt");
    std::fs::write(&trust_file, trusted.concat())?;

    let tracker = start(
        &exe,
        "tracker",
        &[
            "--data",
            &s(&tracker_dir),
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--admin-http",
            "127.0.0.1:0",
            "--trust-file",
            &s(&trust_file),
        ]
        .map(String::from),
        &logs.join("tracker.log"),
    )
    .await?;
    let tracker_http = format!("http://{}", tracker.http.as_deref().context("tracker http")?);
    let tracker_admin = format!("http://{}", tracker.admin.as_deref().context("tracker admin")?);
    let rate = opts.origin_upload_rate.to_string();
    let origin = start(
        &exe,
        "node",
        &[
            "--data",
            &s(&origin_dir),
            "--origin",
            "--listen",
            "127.0.0.10:0",
            "--http",
            "127.0.0.10:0",
            "--tracker",
            &tracker.mesh,
            "--tracker-id",
            &tracker.peer,
            "--site",
            "origin",
            "--region",
            "core",
            "--upload-rate",
            &rate,
        ]
        .map(String::from),
        &logs.join("origin.log"),
    )
    .await?;
    let mut appliances: Vec<(Proc, String, String)> = Vec::new();
    for (i, d) in appliance_dirs.iter().enumerate() {
        let (site, region) = (format!("s{}", i / 2), format!("r{}", i * 2 / opts.appliances.max(2)));
        let args = [
            "--data".into(),
            s(d),
            "--listen".into(),
            format!("127.0.0.{}:0", 11 + i),
            "--tracker".into(),
            tracker.mesh.clone(),
            "--tracker-id".into(),
            tracker.peer.clone(),
            "--site".into(),
            site.clone(),
            "--region".into(),
            region.clone(),
            "--serve-prefix".into(),
            format!("127.1.{}.0/24", i / 2),
        ];
        let p = start(&exe, "node", &args, &logs.join(format!("appliance-{i}.log"))).await?;
        appliances.push((p, site, region));
    }
    say!(
        "started in {:.1} s: tracker {}, origin {}",
        started.elapsed().as_secs_f64(),
        tracker.peer,
        origin.peer
    );

    // The title.
    let file = match &opts.file {
        Some(f) => f.clone(),
        None => {
            let f = dir.join("sample.mp4");
            write_sample(&f, opts.size)?;
            f
        }
    };
    let origin_url = format!("http://{}", origin.http.as_deref().context("origin http")?);
    let seeded = Instant::now();
    let title = run_tool(&exe, &["seed", &s(&file), "--origin", &origin_url], &logs.join("seed.log"))
        .await?
        .trim()
        .to_owned();
    let package = file.is_dir();
    let size = if package {
        let files = fillmesh_node::origin::package::scan(&file)?;
        say!("a package of {} files", files.len());
        files.iter().map(|f| f.len).sum()
    } else {
        std::fs::metadata(&file)?.len()
    };
    say!("seeded {} ({}) as {title}", file.display(), mib(size));

    // Fill, with a bar per appliance.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
    let style = ProgressStyle::with_template("{prefix:>28} [{bar:40}] {bytes}/{total_bytes}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bars: Vec<ProgressBar> = appliances
        .iter()
        .map(|(p, site, region)| {
            let bar = multi.add(ProgressBar::new(size));
            bar.set_style(style.clone());
            bar.set_prefix(format!("{} {site}/{region}", &p.peer[p.peer.len() - 8..]));
            bar
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    let title_status = loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the fill did not complete in 300 s; logs in {}",
            logs.display()
        );
        let body = client.get(format!("{tracker_admin}/status")).send().await?.text().await?;
        let status: Value = serde_json::from_str(&body).context("the tracker's status is not JSON")?;
        for ((p, _, _), bar) in appliances.iter().zip(&bars) {
            let held = status["appliances"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["peer_id"] == p.peer.as_str()))
                .and_then(|x| x["held_bytes"].as_u64())
                .unwrap_or(0);
            bar.set_position(held.min(size));
        }
        let t =
            status["titles"].as_array().and_then(|ts| ts.iter().find(|t| t["id"] == title.as_str()).cloned());
        if let Some(t) = t.filter(|t| t["complete_appliances"].as_u64() == Some(opts.appliances as u64)) {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let fill_time = seeded.elapsed();
    for bar in &bars {
        bar.finish();
    }

    // Play from a client address in the first site: steered for it, and from it (the token
    // steering signs is bound to its /24).
    let played_file = dir.join("played.mp4");
    let played = if !opts.play {
        String::new()
    } else {
        run_tool(
            &exe,
            &[
                "play",
                &title,
                "--tracker-http",
                &tracker_http,
                "--client-ip",
                "127.1.0.42",
                "--bind",
                "127.1.0.42",
                "--out",
                &s(&played_file),
                // The demo's mesh is gone after it: its steering answer is kept with it, not in
                // the home directory.
                "--steer-cache",
                &s(&dir.join("steer-cache")),
            ],
            &logs.join("play.log"),
        )
        .await?
    };
    // A package's player writes the rendition it played (init and segments), each byte
    // verified against the package as it arrived; a file's player writes the title itself.
    if opts.play && !package {
        let played_id = super::id::title_id_of_file(&played_file)?;
        anyhow::ensure!(played_id.to_string() == title, "the played file does not hash to the title id");
    }

    // The report.
    let origin_bytes = title_status["origin_bytes"].as_u64().unwrap_or(0);
    say!();
    say!("== fillmesh demo report ==");
    say!("title            {title} ({})", mib(size));
    say!("appliances       {} in {} sites, 2 regions", opts.appliances, opts.appliances.div_ceil(2));
    say!(
        "fill time        {:.2} s (seed to every appliance holding every chunk, verified)",
        fill_time.as_secs_f64()
    );
    say!(
        "origin bytes     {} = {:.3} x the title",
        mib(origin_bytes),
        origin_bytes as f64 / size.max(1) as f64
    );
    let classes = title_status["bytes_by_class"].as_object().cloned().unwrap_or_default();
    let total: u64 = classes.values().filter_map(Value::as_u64).sum();
    for class in ["same_site", "same_region", "cross_region", "origin"] {
        let b = classes.get(class).and_then(Value::as_u64).unwrap_or(0);
        say!("  {class:<14} {:>12} {:>5.1}%", mib(b), 100.0 * b as f64 / total.max(1) as f64);
    }
    for line in played.lines() {
        say!("player           {line}");
    }
    if !opts.play {
        say!("verified         every chunk by every appliance (no player: --no-play)");
    } else if package {
        say!("verified         every chunk by every appliance and every byte the player played");
    } else {
        say!("verified         every chunk by every appliance and by the player; played file BLAKE3 = title id");
    }
    if opts.stay {
        say!("total            {:.1} s; the mesh stays up until Ctrl-C", started.elapsed().as_secs_f64());
        say!("fleet            {tracker_admin}/");
        say!("watch            {tracker_http}/watch/{title}");
        super::shutdown_signal().await;
        say!("stopping every process");
    } else {
        say!("total            {:.1} s; stopping every process", started.elapsed().as_secs_f64());
    }
    drop(appliances);
    drop(origin);
    drop(tracker);
    if let Some(d) = &opts.keep {
        say!("kept {}", d.display());
    }
    Ok(())
}

/// A deterministic, incompressible sample title.
pub(crate) fn write_sample(path: &Path, size: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut left = size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}
