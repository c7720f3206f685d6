//! Media for the tests, made and read by Debian's `ffmpeg` and `ffprobe` (which `.ci/run`
//! installs): an HLS ladder as a packager makes one, and what ffprobe reads of a file.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The ladder's rungs, lowest first: width, height, video bit rate. Small pictures so that
/// ffmpeg makes a ladder of 16 s in about two seconds on one core.
pub const RUNGS: [(u32, u32, &str); 3] = [(320, 180, "200k"), (480, 270, "500k"), (640, 360, "1000k")];

/// Frames per second of the ladder's video.
pub const FPS: u32 = 24;

/// An HLS ladder made by [`ladder`]: `master.m3u8` at the top, and per rung `v{i}/index.m3u8`,
/// `v{i}/init_{i}.mp4` and `v{i}/seg{n}.m4s` (fragmented MP4, H.264 and AAC in each segment).
#[derive(Debug, Clone)]
pub struct Ladder {
    /// The package's directory.
    pub dir: PathBuf,
    /// Seconds of media.
    pub seconds: u32,
    /// Seconds per segment (every segment but maybe the last).
    pub segment_secs: u32,
    /// Segments per variant.
    pub segments: usize,
}

impl Ladder {
    /// The multivariant playlist's path in the package.
    pub const MASTER: &'static str = "master.m3u8";

    /// Variant `v`'s media playlist's path in the package.
    pub fn playlist(v: usize) -> String {
        format!("v{v}/index.m3u8")
    }

    /// Variant `v`'s init segment's path in the package.
    pub fn init(v: usize) -> String {
        format!("v{v}/init_{v}.mp4")
    }

    /// Variant `v`'s segment `n`'s path in the package.
    pub fn segment(v: usize, n: usize) -> String {
        format!("v{v}/seg{n}.m4s")
    }

    /// The bytes of a file of the package.
    pub fn read(&self, path: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }
}

/// Makes a 3-variant ladder ([`RUNGS`]) of 16 s in 4 s segments into `dir` (created).
pub fn ladder(dir: &Path) -> Ladder {
    ladder_with(dir, 16, 4)
}

/// Makes a 3-variant ladder ([`RUNGS`]) of `seconds` of test picture and a 440 Hz tone, cut
/// into `segment_secs` segments (a key frame starts each, so the variants' segments are
/// aligned and a player may switch between any two), into `dir` (created).
pub fn ladder_with(dir: &Path, seconds: u32, segment_secs: u32) -> Ladder {
    std::fs::create_dir_all(dir).expect("ladder dir");
    let gop = (FPS * segment_secs).to_string();
    let mut split = format!("[0:v]split={}", RUNGS.len());
    for i in 0..RUNGS.len() {
        split.push_str(&format!("[s{i}]"));
    }
    for (i, (w, h, _)) in RUNGS.iter().enumerate() {
        split.push_str(&format!(";[s{i}]scale={w}:{h}[v{i}]"));
    }
    let mut cmd = Command::new("ffmpeg");
    cmd.current_dir(dir)
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size=640x360:rate={FPS}:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        .args(["-filter_complex", &split]);
    for i in 0..RUNGS.len() {
        cmd.args(["-map", &format!("[v{i}]"), "-map", "1:a"]);
    }
    cmd.args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]).args([
        "-g",
        &gop,
        "-keyint_min",
        &gop,
        "-sc_threshold",
        "0",
    ]);
    for (i, (_, _, rate)) in RUNGS.iter().enumerate() {
        cmd.args([format!("-b:v:{i}"), rate.to_string()]);
    }
    let stream_map: Vec<String> = (0..RUNGS.len()).map(|i| format!("v:{i},a:{i}")).collect();
    let status = cmd
        .args(["-c:a", "aac", "-b:a", "64k"])
        .args(["-f", "hls", "-hls_time", &segment_secs.to_string(), "-hls_playlist_type", "vod"])
        .args(["-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4"])
        .args(["-hls_segment_filename", "v%v/seg%d.m4s", "-master_pl_name", Ladder::MASTER])
        .args(["-var_stream_map", &stream_map.join(" ")])
        .arg("v%v/index.m3u8")
        .status()
        .expect("ffmpeg (apt-get install ffmpeg)");
    assert!(status.success(), "ffmpeg could not make the ladder");
    let segments = seconds.div_ceil(segment_secs) as usize;
    let ladder = Ladder { dir: dir.to_owned(), seconds, segment_secs, segments };
    for v in 0..RUNGS.len() {
        for path in [Ladder::playlist(v), Ladder::init(v)]
            .into_iter()
            .chain((0..segments).map(|n| Ladder::segment(v, n)))
        {
            assert!(dir.join(&path).is_file(), "ffmpeg did not write {path}");
        }
    }
    ladder
}

/// What `ffprobe -show_format -show_streams` reads of `file`, as JSON.
pub fn ffprobe(file: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams"])
        .arg(file)
        .output()
        .expect("ffprobe (apt-get install ffmpeg)");
    assert!(out.status.success(), "ffprobe {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ffprobe's JSON")
}

/// The duration ffprobe reads of `file`, in seconds.
pub fn ffprobe_duration(file: &Path) -> f64 {
    let probe = ffprobe(file);
    probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("ffprobe gives no duration for {}: {probe}", file.display()))
}

/// What ffmpeg says decoding every frame of `file` (its errors; empty when it decodes
/// cleanly).
pub fn decode_errors(file: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg (apt-get install ffmpeg)");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        text.push_str(&format!("\nffmpeg exited {}", out.status));
    }
    text
}
