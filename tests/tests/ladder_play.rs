//! `fillmesh play <package>`: the adaptive player against a mesh of real processes. An HLS
//! ladder made by ffmpeg (three variants, fragmented MP4) is seeded as one package and filled;
//! the player reads the multivariant playlist, starts on the lowest variant and climbs by the
//! throughput it measures (on loopback, far above every variant), verifies every byte, and
//! writes the rendition it played; ffprobe reads it. `--variant N` plays one variant only.
//! Paced slower than the second variant needs, it stays on the lowest and fails over per
//! request when the appliance serving it is killed.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use fillmesh_tests::media::{self, Ladder, RUNGS};
use fillmesh_tests::mesh::{Mesh, Title};

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A mesh of two appliances holding a 16 s ladder in 4 s segments, filled; the package id.
/// With `chunk_size`, the ladder is seeded in chunks of that size (beside a small first title),
/// so that a segment spans several chunks.
fn mesh_with_ladder(chunk_size: Option<&str>) -> (Mesh, Ladder, String, tempfile::TempDir) {
    let media_dir = tempfile::tempdir().unwrap();
    let ladder = media::ladder(&media_dir.path().join("ladder"));
    let Some(chunk_size) = chunk_size else {
        let mesh = Mesh::start_full("mesh", "64MB", 2, Title::File(ladder.dir.clone()), 0, &[]);
        mesh.wait_complete(Duration::from_secs(120));
        let id = mesh.title.clone();
        return (mesh, ladder, id, media_dir);
    };
    let mesh = Mesh::start("mesh", "64MB", 2, 4096);
    let origin = format!("http://{}", mesh.origin.http.as_deref().unwrap());
    let out = fillmesh_tests::fillmesh()
        .arg("seed")
        .arg(&ladder.dir)
        .args(["--origin", &origin, "--chunk-size", chunk_size])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    fillmesh_tests::wait_for(Duration::from_secs(120), || {
        let t = fillmesh_tests::mesh::title_status(&mesh.tracker, &id)?;
        (t["complete_appliances"].as_u64()? >= 2).then_some(())
    })
    .unwrap_or_else(|| {
        panic!("the ladder did not fill: {:?}", fillmesh_tests::mesh::title_status(&mesh.tracker, &id))
    });
    (mesh, ladder, id, media_dir)
}

/// The variant each segment was played from, in play order, by the report's switch lines
/// (`switch at segment N (...): variant A -> B, ...`), starting from `first`.
fn variant_per_segment(stdout: &str, first: usize, segments: usize) -> Vec<usize> {
    let mut switches: Vec<(usize, usize, usize)> = stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("switch at segment ")?;
            let (at, rest) = rest.split_once(' ')?;
            let (_, rest) = rest.split_once("variant ")?;
            let (from, rest) = rest.split_once(" -> ")?;
            let to = rest.split(',').next()?;
            Some((at.parse().ok()?, from.parse().ok()?, to.parse().ok()?))
        })
        .collect();
    switches.sort_unstable();
    let mut current = first;
    let mut out = Vec::new();
    for n in 0..segments {
        for &(at, from, to) in &switches {
            if at == n {
                assert_eq!(from, current, "a switch from the variant being played: {stdout}");
                current = to;
            }
        }
        out.push(current);
    }
    out
}

/// What a player that played segment n from variant `variants[n]` writes: the variant's init
/// segment whenever the variant changes (and first), then the segment.
fn rendition(ladder: &Ladder, variants: &[usize]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut last = None;
    for (n, &v) in variants.iter().enumerate() {
        if last != Some(v) {
            bytes.extend(ladder.read(&Ladder::init(v)));
            last = Some(v);
        }
        bytes.extend(ladder.read(&Ladder::segment(v, n)));
    }
    bytes
}

fn assert_duration(file: &Path, ladder: &Ladder) {
    let duration = media::ffprobe_duration(file);
    let expected = f64::from(ladder.seconds);
    assert!(
        (duration - expected).abs() < f64::from(ladder.segment_secs),
        "ffprobe reads {duration} s of {}, {expected} s expected (within a segment)",
        file.display()
    );
}

#[test]
fn the_player_climbs_the_ladder_verifies_every_byte_and_writes_a_rendition_ffprobe_reads() {
    let (mesh, ladder, id, _media) = mesh_with_ladder(None);
    let out_file = mesh.dir.path().join("played.mp4");
    let out = mesh.play("127.0.11.7", &out_file, &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("played {id}: ")), "{stdout}");
    assert!(stdout.contains("every byte verified"), "{stdout}");
    let segments = ladder.segments;
    assert!(
        stdout.contains(&format!(
            "ladder {}: {} variant(s), {segments} segments played, {}.000 s of media",
            Ladder::MASTER,
            RUNGS.len(),
            ladder.seconds
        )),
        "{stdout}"
    );
    // It started on the lowest variant and climbed: on loopback the first segment's
    // throughput is far above every variant's bandwidth.
    let played = variant_per_segment(&stdout, 0, segments);
    assert_eq!(played[0], 0, "{stdout}");
    assert!(played.iter().any(|&v| v > 0), "it climbed: {played:?}\n{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("switch at segment 1 ") && l.contains("(up: ")), "{stdout}");
    assert!(stdout
        .lines()
        .any(|l| l.starts_with("variant 0 (v0/index.m3u8): ") && l.contains(", 1 segments, ")));
    // The file is every played byte in order, each as the ladder has it: the init segment of
    // each variant played, then its segments.
    let written = std::fs::read(&out_file).unwrap();
    assert!(written == rendition(&ladder, &played), "the played rendition differs from {played:?}\n{stdout}");
    assert!(stdout.contains(&format!("played {id}: {} bytes", written.len())), "{stdout}");
    assert_duration(&out_file, &ladder);
}

#[test]
fn a_pinned_variant_or_playlist_plays_only_that_rendition_into_a_file_ffmpeg_decodes_whole() {
    let (mesh, ladder, _id, _media) = mesh_with_ladder(None);
    let out_file = mesh.dir.path().join("variant-2.mp4");
    let out = mesh.play("127.0.11.7", &out_file, &["--variant", "2"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("switches: 0"), "{stdout}");
    let variants: Vec<&str> = stdout.lines().filter(|l| l.starts_with("variant ")).collect();
    assert_eq!(variants.len(), 1, "{stdout}");
    let (w, h, _) = RUNGS[2];
    assert!(
        variants[0].starts_with(&format!("variant 2 ({}): ", Ladder::playlist(2)))
            && variants[0].contains(&format!("resolution {w}x{h}, {} segments, ", ladder.segments)),
        "{stdout}"
    );
    let written = std::fs::read(&out_file).unwrap();
    assert!(written == rendition(&ladder, &vec![2; ladder.segments]), "not variant 2's init and segments");
    assert_duration(&out_file, &ladder);
    let probe = media::ffprobe(&out_file);
    let video =
        probe["streams"].as_array().unwrap().iter().find(|s| s["codec_type"] == "video").unwrap().clone();
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(u64::from(w)), Some(u64::from(h))));
    let errors = media::decode_errors(&out_file);
    assert!(errors.trim().is_empty(), "ffmpeg could not decode it all: {errors}");

    // A media playlist named with --playlist is played as the only variant.
    let out_file = mesh.dir.path().join("playlist-1.mp4");
    let out = mesh.play("127.0.11.7", &out_file, &["--playlist", &Ladder::playlist(1)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!(
        "ladder {}: 1 variant(s), {} segments",
        Ladder::playlist(1),
        ladder.segments
    )));
    assert!(std::fs::read(&out_file).unwrap() == rendition(&ladder, &vec![1; ladder.segments]));

    // A variant the ladder does not have is refused, naming what it has.
    let out = mesh.play("127.0.11.7", &mesh.dir.path().join("none.mp4"), &["--variant", "3"]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("--variant 3: the ladder has 3 variant(s), 0 to 2"), "{stderr}");
}

#[test]
fn over_a_slow_link_the_player_stays_low_and_fails_over_per_request_when_its_appliance_dies() {
    // In chunks of 16 KiB: a segment of the lowest variant spans eight or nine of them, read
    // with a window of requests in flight and cut from them.
    let (mut mesh, ladder, id, _media) = mesh_with_ladder(Some("16KiB"));
    let out_file = mesh.dir.path().join("slow.mp4");
    // Paced at 60 kB/s (with a quarter of a second of burst), a segment of the lowest variant
    // (about 130 kB) takes at least 1.8 s: at most about 550 kb/s measured, of which 0.7 fits
    // no variant but the lowest (the next needs 886 kb/s). The play takes about 9 s: time to
    // kill the appliance serving it, the one whose heartbeat reports the player's session.
    let mut player = mesh
        .play_title_command(&id, "127.0.11.7", &out_file)
        .args(["--rate", "60kB"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let serving = fillmesh_tests::wait_for(Duration::from_secs(10), || {
        let s = fillmesh_tests::mesh::status(&mesh.tracker)?;
        let a =
            s["appliances"].as_array()?.iter().find(|a| a["player_sessions"].as_u64() == Some(1))?.clone();
        Some(a["peer_id"].as_str()?.to_owned())
    })
    .expect("no heartbeat reported the player's session");
    mesh.appliances.iter_mut().find(|(_, p)| p.peer == serving).unwrap().1.child.kill();
    let out = fillmesh_tests::wait_for(Duration::from_secs(90), || player.try_wait().unwrap().map(|_| ()))
        .map(|_| player.wait_with_output().unwrap())
        .expect("the player did not finish");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("switches: 0"), "{stdout}");
    let variants: Vec<&str> = stdout.lines().filter(|l| l.starts_with("variant ")).collect();
    assert_eq!(variants.len(), 1, "{stdout}");
    assert!(variants[0].starts_with("variant 0 "), "{stdout}");
    // The appliance failed over from is the one killed; the other one sent the rest.
    assert!(!stdout.contains("failovers: 0"), "{stdout}");
    assert!(stderr.lines().any(|l| l.contains("failing over") && l.contains(&serving)), "{stderr}");
    assert!(
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix("appliance "))
            .any(|l| !l.starts_with(&serving) && !l.ends_with(": 0 bytes")),
        "{stdout}"
    );
    // Every byte as the ladder has it, whichever appliance sent it.
    let written = std::fs::read(&out_file).unwrap();
    assert!(written == rendition(&ladder, &vec![0; ladder.segments]), "not variant 0's init and segments");
}
