//! `fillmesh play` with no tracker, with real processes: a player keeps the tracker's last
//! steering answer for a title (`--steer-cache`) and plays from it, verified, once the tracker
//! is gone; a tracker that answers (even "unknown title", or a 4xx) is believed over the
//! cache; and a player with nothing usable cached fails naming the tracker it could not reach.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use fillmesh_tests::file_id;
use fillmesh_tests::mesh::Mesh;
use serde_json::Value;

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The cache file of `title` in `dir`.
fn entry(dir: &Path, title: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("{title}.json"))).unwrap()).unwrap()
}

fn put_entry(dir: &Path, title: &str, entry: &Value) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{title}.json")), serde_json::to_vec(entry).unwrap()).unwrap();
}

/// A stand-in tracker that answers every request with `status_line` and a short body;
/// its URL.
fn fake_tracker(status_line: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = "the stand-in tracker says no\n";
            let _ = write!(
                stream,
                "HTTP/1.1 {status_line}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// `fillmesh play` of `title` from `tracker` as a client in the first site, into `out`,
/// keeping answers in `cache`.
fn play(title: &str, tracker: &str, cache: &Path, out: &Path, extra: &[&str]) -> Output {
    fillmesh_tests::fillmesh()
        .args(["play", title, "--tracker-http", tracker, "--client-ip", "127.0.11.7", "--out"])
        .arg(out)
        .arg("--steer-cache")
        .arg(cache)
        .args(extra)
        .env("XDG_CACHE_HOME", cache.join("unused-default"))
        .output()
        .unwrap()
}

fn assert_played(out: &Output, file: &Path, title: &str) {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("played {title}: ")), "{stdout}");
    assert!(stdout.contains("every byte verified"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("served by ")), "{stdout}");
    assert_eq!(file_id(file), title);
}

/// The scenario for players: a player steered while the tracker was up plays the title
/// again after the tracker is killed, from the answer it kept, and says so.
#[test]
fn a_player_plays_from_its_cached_steering_answer_once_the_tracker_is_gone() {
    let mut mesh = Mesh::start("mesh", "64MB", 2, 8 << 20);
    mesh.wait_complete(Duration::from_secs(120));
    let tracker = mesh.tracker_url();
    let cache = mesh.dir.path().join("steer-cache");
    let out = |n: usize| mesh.dir.path().join(format!("played-{n}.mp4"));

    // Played with the tracker up: its answer is kept whole, pins and all.
    let first = play(&mesh.title, &tracker, &cache, &out(1), &[]);
    assert_played(&first, &out(1), &mesh.title);
    assert!(!text(&first).1.contains("tracker unreachable"), "{}", text(&first).1);
    let kept = entry(&cache, &mesh.title);
    assert_eq!(kept["tracker"], tracker.as_str(), "{kept}");
    assert_eq!(kept["answer"]["title"], mesh.title.as_str(), "{kept}");
    let targets = kept["answer"]["targets"].as_array().unwrap();
    assert!(!targets.is_empty(), "{kept}");
    assert!(targets.iter().all(|t| t["cert_sha256"].as_str().is_some_and(|p| p.len() == 64)), "{kept}");
    let leftovers: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != &format!("{}.json", mesh.title))
        .collect();
    assert!(leftovers.is_empty(), "only the title's file: {leftovers:?}");

    // A tracker that answers "unknown title" is believed, even with an answer kept for it.
    let unknown = "ab".repeat(32);
    let mut planted = kept.clone();
    planted["answer"]["title"] = Value::from(unknown.as_str());
    put_entry(&cache, &unknown, &planted);
    let refused = play(&unknown, &tracker, &cache, &out(2), &[]);
    let (stdout, stderr) = text(&refused);
    assert!(!refused.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("unknown title"), "{stderr}");
    assert!(!stderr.contains("cached"), "the cache was not used: {stderr}");
    assert!(!out(2).exists());

    // The tracker is gone for good.
    mesh.tracker.child.kill();

    let second = play(&mesh.title, &tracker, &cache, &out(3), &[]);
    assert_played(&second, &out(3), &mesh.title);
    let stderr = text(&second).1;
    assert!(stderr.contains("tracker unreachable: using the steering answer cached at "), "{stderr}");
    let notice = stderr.lines().find(|l| l.starts_with("tracker unreachable: ")).unwrap();
    assert!(notice.contains(&format!("for {}", mesh.title)), "{notice}");
    assert!(notice.contains(&tracker), "names the tracker: {notice}");
    assert!(notice.contains(" UTC ("), "says when: {notice}");
    // A fallback does not rewrite the entry: its time stays that of the tracker's answer.
    assert_eq!(entry(&cache, &mesh.title), kept);

    // Nothing cached for the title: a clear failure naming the tracker.
    let empty = mesh.dir.path().join("empty-cache");
    let failed = play(&mesh.title, &tracker, &empty, &out(4), &[]);
    let (stdout, stderr) = text(&failed);
    assert!(!failed.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("cannot reach the tracker at {tracker}")), "{stderr}");
    assert!(stderr.contains("no steering answer"), "{stderr}");
    assert!(!out(4).exists());

    // An answer older than --steer-cache-max-age is not used.
    let old = mesh.dir.path().join("old-cache");
    let mut aged = kept.clone();
    aged["cached_at"] = Value::from(kept["cached_at"].as_u64().unwrap() - 2 * 86_400);
    put_entry(&old, &mesh.title, &aged);
    let expired = play(&mesh.title, &tracker, &old, &out(5), &[]);
    let (stdout, stderr) = text(&expired);
    assert!(!expired.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("--steer-cache-max-age"), "{stderr}");
    assert!(stderr.contains(&format!("cannot reach the tracker at {tracker}")), "{stderr}");
    // ... unless the operator allows that age.
    let allowed = play(&mesh.title, &tracker, &old, &out(6), &["--steer-cache-max-age", "3d"]);
    assert_played(&allowed, &out(6), &mesh.title);

    // A file that is not an answer is ignored with a warning, never a crash.
    let junk = mesh.dir.path().join("junk-cache");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join(format!("{}.json", mesh.title)), b"{\"cached_at\": \"yesterday\"").unwrap();
    let corrupt = play(&mesh.title, &tracker, &junk, &out(7), &[]);
    let (stdout, stderr) = text(&corrupt);
    assert!(!corrupt.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("not a cached steering answer"), "{stderr}");
    assert!(stderr.contains(&format!("cannot reach the tracker at {tracker}")), "{stderr}");
}

/// A tracker that fails (5xx) is as good as gone: the kept answer stands in. One that refuses
/// (4xx) is believed: no fallback.
#[test]
fn a_failing_tracker_falls_back_and_a_refusing_one_does_not() {
    let mesh = Mesh::start("mesh", "64MB", 2, 4 << 20);
    mesh.wait_complete(Duration::from_secs(120));
    let cache = mesh.dir.path().join("steer-cache");
    let out = |n: usize| mesh.dir.path().join(format!("played-{n}.mp4"));
    let first = play(&mesh.title, &mesh.tracker_url(), &cache, &out(1), &[]);
    assert_played(&first, &out(1), &mesh.title);
    let kept = entry(&cache, &mesh.title);

    for (status_line, falls_back) in
        [("503 Service Unavailable", true), ("500 Internal Server Error", true), ("400 Bad Request", false)]
    {
        let tracker = fake_tracker(status_line);
        let dir = mesh.dir.path().join(format!("cache-{}", &status_line[..3]));
        let mut moved = kept.clone();
        moved["tracker"] = Value::from(tracker.as_str());
        put_entry(&dir, &mesh.title, &moved);
        let n = if falls_back { 2 } else { 3 };
        let played = play(&mesh.title, &tracker, &dir, &out(n), &[]);
        let (stdout, stderr) = text(&played);
        if falls_back {
            assert_played(&played, &out(n), &mesh.title);
            assert!(stderr.contains("tracker unreachable: using the steering answer cached at"), "{stderr}");
            assert!(stderr.contains(&status_line[..3]), "says why: {stderr}");
        } else {
            assert!(!played.status.success(), "{status_line}: {stdout}\n{stderr}");
            assert!(stderr.contains("steering failed (400"), "{stderr}");
            assert!(!stderr.contains("cached"), "{stderr}");
        }
    }

    // An answer kept from another tracker is not used in place of this one's.
    let tracker = fake_tracker("503 Service Unavailable");
    let failed = play(&mesh.title, &tracker, &cache, &out(4), &[]);
    let (stdout, stderr) = text(&failed);
    assert!(!failed.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("not from this one"), "{stderr}");
}
