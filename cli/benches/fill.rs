//! One node fills a title from another across two processes on loopback, against a raw quinn
//! transfer of the same size between two processes, in the same run.
//!
//! `cargo bench -p fillmesh-cli --bench fill [-- SIZE_MIB RUNS IN_FLIGHT]` (defaults: 1024 MiB,
//! 3 runs, 4 chunks in flight: `fillmesh fetch`'s default). `-- raw SIZE_MIB RUNS` times only
//! the raw transfers (to profile the baseline alone).
//! The fill is `fillmesh fetch` from a `fillmesh node --origin`: TLS, framing, verification of
//! every chunk, positioned writes and their syncs (group commits) included. The raw transfer is one
//! QUIC stream carrying the same number of bytes with the same TLS and transport settings,
//! received into memory and dropped. The bench re-runs itself as the raw sender.
//! Then appliance to appliance (README.md, "Performance targets"): the node that did the last
//! fill serves the title to new fetchers, once from disk (its chunks were written around the
//! page cache) and then from a warm cache; their median and the first are reported.
//! Last, whole `fillmesh fetch --out FILE` processes as a user runs them: wall time from start
//! to exit against the transfer part of their own report (what comes after the last chunk:
//! the sync and the naming of `--out`), and their peak resident memory, cold page cache when
//! the bench may drop it; without a store and with one, alternated.
//! Each fill and raw transfer also reports the CPU seconds per GiB of both its processes (the
//! source node's and the sender's from `/proc/PID/stat`, the fetch's from `getrusage` of its
//! parent, the raw receiver's, this process, from its own): where the raw transfer already
//! fills the cores, raw CPU / fill CPU bounds the fill's ratio. A last line gives the cores
//! each kept busy and the least a fill adds to raw's CPU per GiB (BLAKE3 and one copy per
//! side, timed on one core in the same run): the ratio a fill could reach on raw's cores.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fillmesh_net::TlsIdentity;
use fillmesh_net::{baseline, MeshEndpoint, TransportLimits};

/// The same allocator as the `fillmesh` binary, so the baseline differs only in what it skips.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROLE_ENV: &str = "FILLMESH_BENCH_RAW_SENDER";
/// The bench re-run as the parent of one timed command: it prints the command's output, then
/// `timed <wall seconds> <peak RSS KiB>` (its only child, so the rusage of children is that one).
const TIMER_ENV: &str = "FILLMESH_BENCH_TIMER";

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    if let Ok(bytes) = std::env::var(ROLE_ENV) {
        return raw_sender(bytes.parse()?);
    }
    if std::env::var_os(TIMER_ENV).is_some() {
        return timer(std::env::args_os().skip(1).collect());
    }
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-')).peekable();
    if args.peek().map(String::as_str) == Some("raw") {
        // Only the baseline, for profiling it alone: `-- raw SIZE_MIB RUNS`.
        args.next();
        let mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
        let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
        for run in 0..runs {
            sync();
            println!("run {run}: raw quinn {:.0} MB/s", raw_transfer(mib << 20)?.mb_s);
        }
        return Ok(());
    }
    let mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3).max(1);
    let per_source: String = args.next().unwrap_or_else(|| "4".into());
    let len = mib << 20;
    let dir = tempfile::tempdir()?;
    let bin = env!("CARGO_BIN_EXE_fillmesh");

    // The title: deterministic bytes, written in 1 MiB pieces.
    let file = dir.path().join("title.bin");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for word in buf.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            out.write_all(&buf)?;
        }
        out.flush()?;
    }

    let fetchers = (0..runs).map(|r| format!("fetcher-{r}")).collect::<Vec<_>>();
    let warm_up = format!("fetcher-{runs}");
    let whole = "whole-fetcher".to_string();
    let (origin, words) = spawn_node(
        Command::new(bin)
            .args(["node", "--origin", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("origin"))
            .args(trust_args(bin, dir.path(), fetchers.iter().chain([&warm_up, &whole]))?),
    )?;
    let (peer, mesh, http) = (words[2].clone(), words[4].clone(), words[6].clone());
    let seeded =
        Command::new(bin).arg("seed").arg(&file).args(["--origin", &format!("http://{http}")]).output()?;
    anyhow::ensure!(seeded.status.success(), "seed failed: {}", String::from_utf8_lossy(&seeded.stderr));
    let id = String::from_utf8(seeded.stdout)?.trim().to_owned();

    // One discarded fill first: the origin's allocator and page cache warm up on it.
    let fills = Fetcher { bin, dir: dir.path(), id: &id, per_source: &per_source, len };
    fills.fill(&mesh, &peer, origin.0.id(), &warm_up, false)?;
    println!("title: {mib} MiB, 1 MiB chunks, {per_source} chunks in flight, {runs} runs each, two processes on 127.0.0.1, medians");
    // The last fill's node is kept: it is the source of the next part.
    let (fill, raw) = fills.alternate_with_raw((&mesh, &peer, origin.0.id()), &fetchers, true, "fill")?;
    let whole_runs = fills.whole_process(&mesh, &peer, &whole, runs)?;
    drop(origin);

    // Appliance to appliance: the node that filled last serves the title to new fetchers.
    // Its chunks were written around the page cache, so its first serving reads them from
    // disk; later ones find them cached. Every serving verifies each chunk it reads.
    let relay_fetchers = (0..runs).map(|k| format!("relay-fetcher-{k}")).collect::<Vec<_>>();
    let (relay, words) = spawn_node(
        Command::new(bin)
            .args(["node", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join(&fetchers[runs - 1]))
            .args(trust_args(bin, dir.path(), &relay_fetchers)?),
    )?;
    let (relayed, raw_relay) = fills.alternate_with_raw(
        (&words[4], &words[2], relay.0.id()),
        &relay_fetchers,
        false,
        "fill from an appliance",
    )?;
    let first = relayed[0].mb_s / raw_relay[0].mb_s;
    let speed = |v: &[Measured]| median(v.iter().map(|m| m.mb_s).collect());
    let cpu = |v: &[Measured]| median(v.iter().map(|m| m.cpu_per_gib(len)).collect());
    let (f, r) = (speed(&fill), speed(&raw));
    let (a, ar) = (speed(&relayed), speed(&raw_relay));
    println!("fill (verify + write + sync):           {f:.0} MB/s");
    println!("raw quinn, one stream:                  {r:.0} MB/s");
    println!("ratio fill / raw: {:.3}", f / r);
    println!(
        "appliance to appliance: {a:.0} MB/s, raw quinn {ar:.0} MB/s, ratio {:.3}; first run (from disk): ratio {first:.3}",
        a / ar
    );
    // What each costs, both processes together: on a machine whose cores the raw transfer
    // already fills, the fill's ratio cannot pass raw CPU / fill CPU.
    let (fc, rc, ac, arc) = (cpu(&fill), cpu(&raw), cpu(&relayed), cpu(&raw_relay));
    println!(
        "CPU s/GiB, both sides (medians): fill {fc:.2}, raw {rc:.2} (raw / fill {:.3}); appliance to \
         appliance {ac:.2}, raw {arc:.2} (raw / fill {:.3})",
        rc / fc,
        arc / ac
    );
    // Where the cores bound both: a fill that used raw's cores and added only what it cannot
    // skip (each side hashes every chunk, and copies it once: the source from the page cache,
    // the fetcher out of quinn's packets into an aligned buffer) still reaches only
    // raw / (raw + that).
    let cores = |v: &[Measured]| median(v.iter().map(|m| m.cores(len)).collect());
    let (hash, copy) = floor_per_gib();
    let least = 2.0 * (hash + copy);
    println!(
        "cores busy (medians): fill {:.2}, raw {:.2}; one core here: BLAKE3 {hash:.2} s/GiB, a copy \
         {copy:.2} s/GiB; a fill adds at least {least:.2} s/GiB (both per side), so at raw's cores \
         its ratio is at most {:.3}",
        cores(&fill),
        cores(&raw),
        rc / (rc + least)
    );
    for (what, timed) in &whole_runs {
        let wall = median(timed.iter().map(|t| t.wall).collect());
        let transfer = median(timed.iter().map(|t| t.transfer).collect());
        let ratio = median(timed.iter().map(|t| t.wall / t.transfer).collect());
        let rss = median(timed.iter().map(|t| t.peak_rss_mb).collect());
        println!(
            "fetch {what}: wall {wall:.2} s, transfer {transfer:.2} s, wall / transfer {ratio:.3}, peak RSS {rss:.0} MB"
        );
    }
    Ok(())
}

/// One `fillmesh fetch` process timed from start to exit.
struct Timed {
    wall: f64,
    /// The transfer part, from the fetch's own report.
    transfer: f64,
    peak_rss_mb: f64,
}

/// Runs the command given as its parent, so that its wall time and peak resident memory are
/// its own (`getrusage` of the children of a process whose only child it is).
fn timer(command: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    let (program, args) = command.split_first().ok_or_else(|| anyhow::anyhow!("no command to time"))?;
    let start = Instant::now();
    let out = Command::new(program).args(args).output()?;
    let wall = start.elapsed().as_secs_f64();
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    anyhow::ensure!(out.status.success(), "the timed command failed");
    // ru_maxrss is in KiB on Linux.
    println!("timed {wall} {}", usage.max_rss());
    Ok(())
}

/// Starts a `fillmesh node` (logging warnings only); returns it and the words of its ready
/// line (`fillmesh node <peer> mesh <addr> [http <addr>]`).
fn spawn_node(cmd: &mut Command) -> anyhow::Result<(Guard, Vec<String>)> {
    let mut node = Guard(cmd.env("FILLMESH_LOG", "warn").stdout(Stdio::piped()).spawn()?);
    let words = first_line(&mut node.0)?.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    anyhow::ensure!(words.len() >= 5, "unexpected ready line {words:?}");
    Ok((node, words))
}

/// `fillmesh fetch` of one title from one source, each time with a fresh store.
struct Fetcher<'a> {
    bin: &'a str,
    dir: &'a Path,
    id: &'a str,
    per_source: &'a str,
    len: u64,
}

impl Fetcher<'_> {
    /// One raw transfer, then one fill as each of `names` in turn, `sync` before each: drift
    /// on a shared machine hits both alike, and no run pays for the previous one's dirty
    /// pages. Unless `keep_last`, every fill's chunks are dropped afterwards. Returns the
    /// fills' and the raw transfers' MB/s.
    fn alternate_with_raw(
        &self,
        (mesh, peer, source_pid): (&str, &str, u32),
        names: &[String],
        keep_last: bool,
        what: &str,
    ) -> anyhow::Result<(Vec<Measured>, Vec<Measured>)> {
        let (mut fill, mut raw) = (Vec::new(), Vec::new());
        for (run, name) in names.iter().enumerate() {
            sync();
            let r = raw_transfer(self.len)?;
            sync();
            let f = self.fill(mesh, peer, source_pid, name, keep_last && run + 1 == names.len())?;
            println!(
                "run {run}: {what} {:.0} MB/s, raw quinn {:.0} MB/s; CPU s/GiB {what} {:.2} \
                 (source {:.2} + fetcher {:.2}), raw {:.2} (sender {:.2} + receiver {:.2})",
                f.mb_s,
                r.mb_s,
                f.cpu_per_gib(self.len),
                f.source_cpu / gib(self.len),
                f.sink_cpu / gib(self.len),
                r.cpu_per_gib(self.len),
                r.source_cpu / gib(self.len),
                r.sink_cpu / gib(self.len),
            );
            fill.push(f);
            raw.push(r);
        }
        Ok((fill, raw))
    }

    /// Whole `fillmesh fetch --out FILE` processes as a user runs them, timed from start to
    /// exit against the transfer part of their own report, cold page cache where it can be
    /// dropped: without a store (`--identity`: the chunks land in FILE itself) and with one
    /// (`--data`: FILE linked to the store's data file), alternated.
    fn whole_process(
        &self,
        mesh: &str,
        peer: &str,
        name: &str,
        runs: usize,
    ) -> anyhow::Result<Vec<(String, Vec<Timed>)>> {
        let data = self.dir.join(name);
        let out = self.dir.join(format!("{name}.out"));
        let kinds = ["--identity", "--data"];
        let mut timed: Vec<Vec<Timed>> = kinds.iter().map(|_| Vec::new()).collect();
        let mut cold = true;
        for run in 0..runs {
            for (k, keep) in kinds.iter().enumerate() {
                cold &= sync_and_drop_caches();
                let result = Command::new(std::env::current_exe()?)
                    .env(TIMER_ENV, "1")
                    .arg(self.bin)
                    .args(["fetch", self.id, "--from", mesh, "--peer", peer, "--out"])
                    .arg(&out)
                    .arg(keep)
                    .arg(&data)
                    .args(["--per-source", self.per_source])
                    .env("FILLMESH_LOG", "warn")
                    .output()?;
                anyhow::ensure!(
                    result.status.success(),
                    "fetch failed: {}",
                    String::from_utf8_lossy(&result.stderr)
                );
                let stdout = String::from_utf8(result.stdout)?;
                let t = parse_timed(&stdout).ok_or_else(|| anyhow::anyhow!("no timing in {stdout}"))?;
                println!(
                    "run {run}: fetch --out FILE {keep}: wall {:.2} s, transfer {:.2} s, peak RSS {:.0} MB",
                    t.wall, t.transfer, t.peak_rss_mb
                );
                timed[k].push(t);
                let _ = std::fs::remove_dir_all(data.join("data"));
                let _ = std::fs::remove_dir_all(data.join("index"));
                std::fs::remove_file(&out)?;
            }
        }
        let page_cache = if cold { "cold page cache" } else { "warm page cache (not root: cannot drop it)" };
        Ok(kinds
            .iter()
            .zip(timed)
            .map(|(keep, t)| (format!("--out FILE {keep} ({page_cache}, medians)"), t))
            .collect())
    }

    /// One fetch as the identity in directory `name` (trusted by the source, the process
    /// `source_pid`); returns its MB/s and the CPU seconds of the source and of the fetch
    /// process. Unless `keep`, the chunks are dropped afterwards (the identity stays).
    fn fill(
        &self,
        mesh: &str,
        peer: &str,
        source_pid: u32,
        name: &str,
        keep: bool,
    ) -> anyhow::Result<Measured> {
        let data = self.dir.join(name);
        let out = self.dir.join(format!("{name}.out"));
        let (source_cpu0, children_cpu0) =
            (cpu_of(source_pid), cpu_used(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?);
        let result = Command::new(self.bin)
            .args(["fetch", self.id, "--from", mesh, "--peer", peer, "--out"])
            .arg(&out)
            .arg("--data")
            .arg(&data)
            .args(["--per-source", self.per_source])
            .env("FILLMESH_LOG", "warn")
            .output()?;
        // The fetch is the only child that ends meanwhile (the nodes run on).
        let fetcher_cpu = cpu_used(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)? - children_cpu0;
        let source_cpu = cpu_of(source_pid).zip(source_cpu0).map_or(f64::NAN, |(b, a)| b - a);
        anyhow::ensure!(result.status.success(), "fetch failed: {}", String::from_utf8_lossy(&result.stderr));
        // "fetched <id>: N chunks (B bytes) in S s, ..." : the fill itself, connect to last sync.
        let stdout = String::from_utf8(result.stdout)?;
        let secs: f64 = stdout
            .split(" in ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no timing in {stdout}"))?;
        if !keep {
            let _ = std::fs::remove_dir_all(data.join("data"));
            let _ = std::fs::remove_dir_all(data.join("index"));
        }
        std::fs::remove_file(&out)?;
        Ok(Measured { mb_s: self.len as f64 / secs / 1e6, source_cpu, sink_cpu: fetcher_cpu })
    }
}

/// `sync`, then the page cache dropped where this process may (root): the next run reads
/// the title from disk. Returns whether the cache was dropped.
fn sync_and_drop_caches() -> bool {
    sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn sync() {
    let _ = Command::new("sync").status();
}

/// The fetch's "... in S s ..." and the timer's "timed WALL RSS_KIB" from a timed run's output.
fn parse_timed(stdout: &str) -> Option<Timed> {
    let transfer = stdout.split(" in ").nth(1)?.split_whitespace().next()?.parse().ok()?;
    let timed = stdout.lines().find_map(|l| l.strip_prefix("timed "))?;
    let mut words = timed.split_whitespace();
    let wall = words.next()?.parse().ok()?;
    let rss_kib: f64 = words.next()?.parse().ok()?;
    Some(Timed { wall, transfer, peak_rss_mb: rss_kib * 1024.0 / 1e6 })
}

/// Creates an identity in each of `names` (directories under `dir`) and returns `--trust`
/// arguments for all of them.
fn trust_args<'n>(
    bin: &str,
    dir: &Path,
    names: impl IntoIterator<Item = &'n String>,
) -> anyhow::Result<Vec<String>> {
    let mut args = Vec::new();
    for name in names {
        let out = Command::new(bin).args(["node", "--print-id", "--data"]).arg(dir.join(name)).output()?;
        anyhow::ensure!(out.status.success(), "print-id failed");
        args.push("--trust".to_owned());
        args.push(String::from_utf8(out.stdout)?.trim().to_owned());
    }
    Ok(args)
}

fn first_line(child: &mut Child) -> anyhow::Result<String> {
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().ok_or_else(|| anyhow::anyhow!("child exited before its ready line"))??;
    std::thread::spawn(move || for _ in lines {});
    Ok(line)
}

/// Receives `len` bytes on one stream from a sender process; returns its MB/s and the CPU
/// seconds both sides spent (this process's while receiving, the sender's up to then).
fn raw_transfer(len: u64) -> anyhow::Result<Measured> {
    let exe = std::env::current_exe()?;
    let mut sender = Guard(Command::new(exe).env(ROLE_ENV, len.to_string()).stdout(Stdio::piped()).spawn()?);
    let line = first_line(&mut sender.0)?;
    let mut words = line.split_whitespace();
    let addr = words.next().ok_or_else(|| anyhow::anyhow!("no address"))?.parse()?;
    let peer = words.next().ok_or_else(|| anyhow::anyhow!("no peer"))?.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (sender_cpu0, own_cpu0) =
        (cpu_of(sender.0.id()), cpu_used(nix::sys::resource::UsageWho::RUSAGE_SELF)?);
    let mb_s = rt.block_on(async move {
        let tls = TlsIdentity::new(&fillmesh_net::identity::ephemeral())?;
        let endpoint = MeshEndpoint::client("127.0.0.1".parse()?, tls, TransportLimits::default())?;
        // A whole transfer's bound: generous for any size this bench is given.
        anyhow::Ok(baseline::receive(&endpoint, addr, peer, len, Duration::from_secs(600)).await?)
    })?;
    let receiver = cpu_used(nix::sys::resource::UsageWho::RUSAGE_SELF)? - own_cpu0;
    let sender = cpu_of(sender.0.id()).zip(sender_cpu0).map_or(f64::NAN, |(b, a)| b - a);
    Ok(Measured { mb_s, source_cpu: sender, sink_cpu: receiver })
}

/// One transfer: its MB/s and the CPU seconds of the side sending and of the side receiving.
#[derive(Debug, Clone, Copy)]
struct Measured {
    mb_s: f64,
    source_cpu: f64,
    sink_cpu: f64,
}

impl Measured {
    /// Both sides' CPU seconds per GiB moved.
    fn cpu_per_gib(&self, len: u64) -> f64 {
        (self.source_cpu + self.sink_cpu) / gib(len)
    }

    /// Cores both sides kept busy on average: their CPU seconds over the transfer's seconds.
    fn cores(&self, len: u64) -> f64 {
        (self.source_cpu + self.sink_cpu) * self.mb_s * 1e6 / len as f64
    }
}

/// `bytes` in GiB.
fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

/// CPU seconds per GiB, on one core of this machine, of hashing 1 MiB chunks with BLAKE3 and
/// of copying them into fresh buffers: the two things a fill adds per side that no fill can
/// skip. Medians of 5 passes over 128 MiB.
fn floor_per_gib() -> (f64, f64) {
    let data: Vec<u8> = (0u32..128 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let per_gib = |elapsed: Duration| elapsed.as_secs_f64() / gib(data.len() as u64);
    let (mut hash, mut copy) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let started = Instant::now();
        for piece in data.chunks(1 << 20) {
            std::hint::black_box(blake3::hash(piece));
        }
        hash.push(per_gib(started.elapsed()));
        let started = Instant::now();
        for piece in data.chunks(1 << 20) {
            std::hint::black_box(piece.to_vec());
        }
        copy.push(per_gib(started.elapsed()));
    }
    (median(hash), median(copy))
}

/// CPU seconds (user + system) a running process has used, from `/proc/PID/stat`, whose
/// times are in USER_HZ (100 a second on Linux).
fn cpu_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields counted from after its closing ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds (user + system) used by this process (`RUSAGE_SELF`), or by its children that
/// have ended and been waited for (`RUSAGE_CHILDREN`).
fn cpu_used(who: nix::sys::resource::UsageWho) -> anyhow::Result<f64> {
    let u = nix::sys::resource::getrusage(who)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(u.user_time()) + secs(u.system_time()))
}

/// The sender process: accepts one connection and writes `len` bytes on the stream it opens.
fn raw_sender(len: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let tls = TlsIdentity::new(&fillmesh_net::identity::ephemeral())?;
        let peer = tls.peer_id();
        let endpoint = MeshEndpoint::bind("127.0.0.1:0".parse()?, tls, TransportLimits::default())?;
        println!("{} {peer}", endpoint.local_addr()?);
        baseline::send(&endpoint, len, Duration::from_secs(30), Duration::from_secs(30)).await?;
        Ok(())
    })
}
