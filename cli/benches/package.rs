//! A package against one file of the same size, filled through a whole mesh (`fillmesh demo
//! --no-play`: a tracker, an origin and 8 appliances as real processes on loopback),
//! alternated in one run: the target is the package's fill within 1.10x of the file's,
//! origin bytes within 1.05x of the title.
//!
//! `cargo bench -p fillmesh-cli --bench package [-- SIZE_MIB FILES RUNS APPLIANCES]` (defaults:
//! 1024 MiB, 5,000 files, 2 runs each, 8 appliances). The package is laid out as a ladder:
//! `master.m3u8`, five renditions `v0`..`v4` each with a playlist, an init segment and its
//! share of the segments; its files together are as long as the file.

use std::path::Path;
use std::process::Command;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Deterministic incompressible bytes.
fn fill_bytes(buf: &mut [u8], state: &mut u64) {
    for word in buf.chunks_exact_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        word.copy_from_slice(&state.to_le_bytes());
    }
}

fn write_file(path: &Path, len: u64, state: &mut u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        fill_bytes(&mut buf, state);
        let n = left.min(buf.len() as u64) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

/// A ladder of `files` files totalling `len` bytes.
fn write_package(dir: &Path, len: u64, files: u64) -> anyhow::Result<()> {
    const RENDITIONS: u64 = 5;
    let mut state = 0x51_7cc1_b727_220au64;
    let small = 1024u64;
    let playlists = 1 + RENDITIONS;
    let inits = RENDITIONS;
    let segments = files.saturating_sub(playlists + inits).max(RENDITIONS);
    let segment_bytes = len.saturating_sub((playlists + inits) * small);
    std::fs::create_dir_all(dir)?;
    write_file(&dir.join("master.m3u8"), small, &mut state)?;
    let per_rendition = segments / RENDITIONS;
    let mut written = 0u64;
    for r in 0..RENDITIONS {
        let rd = dir.join(format!("v{r}"));
        std::fs::create_dir_all(&rd)?;
        write_file(&rd.join("stream.m3u8"), small, &mut state)?;
        write_file(&rd.join("init.mp4"), small, &mut state)?;
        let count = if r == RENDITIONS - 1 { segments - per_rendition * r } else { per_rendition };
        for i in 0..count {
            let k = r * per_rendition + i;
            // Lengths spread so they add up exactly.
            let end = segment_bytes * (k + 1) / segments;
            let start = segment_bytes * k / segments;
            write_file(&rd.join(format!("seg_{i:05}.m4s")), end - start, &mut state)?;
            written += end - start;
        }
    }
    anyhow::ensure!(written == segment_bytes);
    Ok(())
}

/// One demo run: (fill seconds, origin bytes as a multiple of the title).
fn demo(bin: &str, what: &str, path: &Path, appliances: &str) -> anyhow::Result<(f64, f64)> {
    let out = Command::new(bin)
        .args(["demo", "--no-play", "--appliances", appliances, what])
        .arg(path)
        .env("RUST_LOG", "warn")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "demo failed: {}\n{}", text, String::from_utf8_lossy(&out.stderr));
    let field = |name: &str, token: usize| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(token))
            .and_then(|t| t.parse::<f64>().ok())
    };
    let fill = field("fill time", 2).ok_or_else(|| anyhow::anyhow!("no fill time in {text}"))?;
    // "origin bytes     X MiB = Y x the title"
    let origin = field("origin bytes", 5).ok_or_else(|| anyhow::anyhow!("no origin bytes in {text}"))?;
    Ok((fill, origin))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let files: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2).max(1);
    let appliances: String = args.next().unwrap_or_else(|| "8".into());
    let len = mib << 20;
    let dir = tempfile::tempdir()?;
    let bin = env!("CARGO_BIN_EXE_fillmesh");
    let file = dir.path().join("title.bin");
    write_file(&file, len, &mut 0x2545_f491_4f6c_dd1du64)?;
    let package = dir.path().join("ladder");
    write_package(&package, len, files)?;
    println!("{mib} MiB: one file against a package of {files} files, {appliances} appliances, {runs} runs each, alternated");
    let (mut file_fill, mut pkg_fill, mut file_origin, mut pkg_origin) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        // Alternate which goes first, so neither always meets a warmer machine.
        let order: [(&str, &Path); 2] = if run % 2 == 0 {
            [("--file", &file), ("--dir", &package)]
        } else {
            [("--dir", &package), ("--file", &file)]
        };
        for (what, path) in order {
            let (fill, origin) = demo(bin, what, path, &appliances)?;
            println!(
                "run {run}: {:<8} fill {fill:.2} s, origin {origin:.3}x",
                if what == "--file" { "file" } else { "package" }
            );
            if what == "--file" {
                file_fill.push(fill);
                file_origin.push(origin);
            } else {
                pkg_fill.push(fill);
                pkg_origin.push(origin);
            }
        }
    }
    let (ff, pf) = (median(file_fill), median(pkg_fill));
    println!(
        "median fill: file {ff:.2} s, package {pf:.2} s: package/file {:.3}x (target <= 1.10x); origin bytes: file {:.3}x, package {:.3}x the title (target <= 1.05x)",
        pf / ff,
        median(file_origin),
        median(pkg_origin)
    );
    Ok(())
}
