//! Test media made by the machine's ffmpeg (Debian's `ffmpeg`, which `.ci/run` installs): an
//! adaptive-bitrate HLS ladder, the package the packages issue publishes, fills and plays.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One rendition of a [`Ladder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Its directory in the ladder (`v0`, `v1`, ...): every file of the rendition is under it.
    pub dir: String,
    /// Its media playlist, relative to the ladder's directory (`v0/index.m3u8`).
    pub playlist: String,
    /// Its init segment (`v0/init_0.mp4`).
    pub init: String,
    /// Its picture size.
    pub width: u32,
    pub height: u32,
    /// The video bitrate asked of the encoder, bits per second.
    pub video_bps: u32,
}

/// An HLS ladder written by [`ladder`].
#[derive(Debug, Clone)]
pub struct Ladder {
    /// The ladder's directory: what `fillmesh seed DIR` publishes.
    pub dir: PathBuf,
    /// The multivariant (master) playlist, relative to `dir`.
    pub master: String,
    /// The renditions, lowest bitrate first (the master playlist's order).
    pub variants: Vec<Variant>,
    /// The clip's length.
    pub seconds: u32,
    /// Each segment's length (the last may be shorter).
    pub segment_seconds: u32,
}

impl Ladder {
    /// Every file of the ladder, relative to `dir` with `/` separators, sorted by bytes.
    pub fn files(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("read the ladder's directory") {
                let path = entry.expect("directory entry").path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).expect("under the root");
                    out.push(rel.to_str().expect("utf-8 path").replace('\\', "/"));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir, &self.dir, &mut out);
        out.sort();
        out
    }

    /// The variant whose directory holds `path` (a path in the ladder, or a URL ending in one).
    pub fn variant_of(&self, path: &str) -> Option<&Variant> {
        self.variants
            .iter()
            .find(|v| path.contains(&format!("/{}/", v.dir)) || path.starts_with(&format!("{}/", v.dir)))
    }
}

/// The three renditions [`ladder`] makes: small pictures and low bitrates, so a test's package
/// is a few megabytes (about 8.5 MB for 30 s) and ffmpeg makes it in seconds.
const RUNGS: [(u32, u32, u32); 3] = [(320, 180, 300_000), (480, 270, 700_000), (640, 360, 1_500_000)];

/// Writes a 3-variant HLS ladder of a `seconds`-long test clip (ffmpeg's `testsrc` picture,
/// 25 frames a second, and a 440 Hz tone) into `dir`: H.264 + AAC in fragmented MP4 segments of
/// 4 s (`-hls_segment_type fmp4`), one directory per rendition (`v0/index.m3u8`,
/// `v0/init_0.mp4`, `v0/seg000.m4s`, ...), each with its own audio, and `master.m3u8` naming
/// them (`-var_stream_map`, `-master_pl_name`). A keyframe every 2 s (no scene-cut keyframes)
/// so every segment starts on one and lasts exactly 4 s. Panics (with the way to install it)
/// when ffmpeg is missing or fails.
pub fn ladder(dir: &Path, seconds: u32) -> Ladder {
    std::fs::create_dir_all(dir).expect("create the ladder's directory");
    let split: Vec<String> = (0..RUNGS.len()).map(|i| format!("[v{i}]")).collect();
    let scales: Vec<String> =
        RUNGS.iter().enumerate().map(|(i, (w, h, _))| format!("[v{i}]scale={w}:{h}[o{i}]")).collect();
    let filter = format!("[0:v]split={}{};{}", RUNGS.len(), split.concat(), scales.join(";"));
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size=640x360:rate=25:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        .args(["-filter_complex", &filter]);
    for i in 0..RUNGS.len() {
        cmd.args(["-map", &format!("[o{i}]")]);
    }
    for _ in 0..RUNGS.len() {
        cmd.args(["-map", "1:a"]);
    }
    cmd.args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]).args([
        "-g",
        "50",
        "-keyint_min",
        "50",
        "-sc_threshold",
        "0",
    ]);
    for (i, (_, _, bps)) in RUNGS.iter().enumerate() {
        cmd.args([format!("-b:v:{i}"), bps.to_string()]);
    }
    let map: Vec<String> = (0..RUNGS.len()).map(|i| format!("v:{i},a:{i}")).collect();
    cmd.args(["-c:a", "aac", "-b:a", "64k"])
        .args(["-f", "hls", "-hls_time", "4", "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4"])
        .args(["-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename"])
        .arg(dir.join("v%v").join("seg%03d.m4s"))
        .args(["-master_pl_name", "master.m3u8", "-var_stream_map", &map.join(" ")])
        .arg(dir.join("v%v").join("index.m3u8"));
    let out = cmd.output().expect("run ffmpeg (apt-get install ffmpeg)");
    assert!(out.status.success(), "ffmpeg failed: {}", String::from_utf8_lossy(&out.stderr));
    let variants: Vec<Variant> = RUNGS
        .iter()
        .enumerate()
        .map(|(i, &(width, height, video_bps))| Variant {
            dir: format!("v{i}"),
            playlist: format!("v{i}/index.m3u8"),
            init: format!("v{i}/init_{i}.mp4"),
            width,
            height,
            video_bps,
        })
        .collect();
    let ladder =
        Ladder { dir: dir.to_owned(), master: "master.m3u8".into(), variants, seconds, segment_seconds: 4 };
    let files = ladder.files();
    for v in &ladder.variants {
        for needed in [&v.playlist, &v.init] {
            assert!(files.contains(needed), "ffmpeg wrote no {needed}: {files:?}");
        }
    }
    let master = std::fs::read_to_string(dir.join(&ladder.master)).expect("ffmpeg wrote master.m3u8");
    assert!(ladder.variants.iter().all(|v| master.contains(&v.playlist)), "{master}");
    ladder
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 9 s ladder: per rendition a playlist, an init segment and segments of 4, 4 and 1 s,
    /// whose media ffprobe reads at the asked picture size.
    #[test]
    fn ladder_writes_three_renditions_of_four_second_fmp4_segments() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ladder = ladder(&dir.path().join("ladder"), 9);
        let files = ladder.files();
        assert_eq!(files.len(), 1 + 3 * 5, "{files:?}");
        for v in &ladder.variants {
            let playlist = std::fs::read_to_string(ladder.dir.join(&v.playlist)).expect("playlist");
            let durations: Vec<f64> = playlist
                .lines()
                .filter_map(|l| l.strip_prefix("#EXTINF:")?.trim_end_matches(',').parse().ok())
                .collect();
            assert_eq!(durations, [4.0, 4.0, 1.0], "{playlist}");
            assert!(playlist
                .contains(&format!("#EXT-X-MAP:URI=\"{}\"", v.init.rsplit('/').next().expect("name"))));
            let out = Command::new("ffprobe")
                .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height"])
                .args(["-of", "csv=p=0"])
                .arg(ladder.dir.join(&v.playlist))
                .output()
                .expect("run ffprobe");
            // ffprobe lists the stream once per program it finds in the playlist.
            let size = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_owned();
            assert_eq!(size, format!("{},{}", v.width, v.height));
        }
    }
}
