//! Several trackers, one fleet, with real processes: etcd (started and stopped here, on
//! loopback ports, data in a temporary directory), 3 trackers sharing its catalog, an origin
//! and 8 appliances that know every tracker. Skipped, with a message, without `etcd`.
//!
//! - A title fills with 3 trackers; the tracker that owns it is killed with SIGKILL mid-fill:
//!   the fill completes, steering for the title answers at every poll through the kill, a
//!   title published while that tracker is down is filled, and the tracker restarted takes
//!   its titles back (one of them mid-fill) without a fill starting again from zero.
//! - etcd killed with SIGKILL and restarted mid-fill: the trackers say so in `/metrics`,
//!   the fill completes, no catalog entry is lost; a malformed value under the prefix is
//!   skipped.
//! - A title of more than 100,000 chunks, whose manifest is more than one etcd value holds,
//!   publishes with two trackers (etcd keeps its name and shape) and fills an appliance.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::{Duration, Instant};

use fillmesh_protocol::ownership::owner;
use fillmesh_protocol::{NodeId, TitleId};
use fillmesh_tests::fleet::{Etcd, Fleet, LEASE_SECS, PREFIX};
use fillmesh_tests::mesh::status_at;
use fillmesh_tests::{file_id, fillmesh, http, metric, test_bytes, wait_for, NodeProcess};

/// 48 chunks; the origin at 8 MB/s sends one copy in about 6 s.
const TITLE_LEN: usize = 48 << 20;
/// The title published while a tracker is down.
const SECOND_LEN: usize = 24 << 20;

fn wait_all_live(fleet: &Fleet, running: &[usize], count: usize) {
    wait_for(Duration::from_secs(60), || {
        running.iter().all(|&t| fleet.live_trackers(t) == Some(count)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!("the trackers did not all see {count} live trackers: {:?}", fleet.status(running[0]))
    });
}

/// Bytes (seeded by `seed` upwards) whose title the tracker `want` owns among `trackers`.
fn bytes_owned_by(len: usize, seed: u64, trackers: &[NodeId], want: &NodeId) -> Vec<u8> {
    (seed..seed + 200)
        .map(|s| test_bytes(len, s))
        .find(|bytes| {
            let title = TitleId::from_bytes(*blake3::hash(bytes).as_bytes());
            owner(&title, trackers) == Some(want)
        })
        .expect("one title in 200 is this tracker's")
}

/// The PeerId the tracker whose operator listener is `admin_addr` names as `title`'s owner.
fn owner_at(admin_addr: &str, title: &str) -> Option<String> {
    let status = status_at(admin_addr)?;
    let entry = status["titles"].as_array()?.iter().find(|e| e["id"] == title)?;
    entry["owner"].as_str().map(str::to_owned)
}

fn etcd_up(fleet: &Fleet, t: usize) -> Option<f64> {
    let (code, page) = http(&fleet.trackers[t].admin, "GET", "/metrics", &[], b"");
    (code == 200).then(|| metric(&page, "fillmesh_tracker_etcd_up")).flatten()
}

/// Appliances of the fleet that started filling `title`.
fn filling(fleet: &Fleet, title: &str) -> usize {
    fleet
        .appliances
        .iter()
        .filter(|(_, a)| {
            a.log().lines().any(|l| l.contains(title) && l.contains("filling by the tracker's plan"))
        })
        .count()
}

#[test]
fn a_tracker_whose_etcd_cannot_be_reached_says_which_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 on loopback: nothing listens (discard is never run here).
    let out = fillmesh()
        .args(["tracker", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--etcd", "http://127.0.0.1:9"])
        .args(["--admin-http", "127.0.0.1:0"])
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach etcd at http://127.0.0.1:9"), "{stderr}");
}

#[test]
fn three_trackers_fill_through_the_owners_kill_and_return() {
    let Some(mut fleet) = Fleet::start(3, 8, "8MB") else { return };
    wait_all_live(&fleet, &[0, 1, 2], 3);
    // What the watch page falls back to: every live tracker's viewer address, on the viewers'
    // listener, and no operator address.
    // The tests' leases are short (LEASE_SECS), so a tracker's liveness can lapse for a moment
    // on a loaded machine when a keepalive is late (CI once listed two of three right after all
    // three were seen live): wait until all three are listed again.
    let all_listed = |listed: &str| fleet.trackers.iter().all(|t| listed.contains(&t.http));
    let listed = wait_for(Duration::from_secs(30), || {
        let (code, listed) = http(&fleet.trackers[1].http, "GET", "/trackers", &[], b"");
        (code == 200 && all_listed(&listed)).then_some(listed)
    })
    .unwrap_or_else(|| http(&fleet.trackers[1].http, "GET", "/trackers", &[], b"").1);
    assert!(all_listed(&listed), "{listed}");
    for t in &fleet.trackers {
        assert!(!listed.contains(&t.admin), "{listed}");
    }
    // The fleet page of one tracker (on its admin listener) may read another's status; a page
    // from anywhere else may not.
    for (origin, allowed) in
        [(format!("http://{}", fleet.trackers[0].admin), true), ("http://x.example".into(), false)]
    {
        let (code, head, _) = fillmesh_tests::http_with_head(
            &fleet.trackers[1].admin,
            "GET",
            "/status",
            &[("origin", &origin)],
            b"",
        );
        assert_eq!(code, 200);
        let allow = format!("access-control-allow-origin: {origin}");
        assert_eq!(head.to_ascii_lowercase().contains(&allow), allowed, "{origin}: {head}");
    }
    let file = fleet.dir.path().join("feature.mp4");
    std::fs::write(&file, test_bytes(TITLE_LEN, 42)).unwrap();
    let title = fleet.seed(&file);
    // Every tracker names the same owner.
    let killed = wait_for(Duration::from_secs(30), || {
        let o = fleet.owner(0, &title)?;
        (fleet.owner(1, &title) == Some(o) && fleet.owner(2, &title) == Some(o)).then_some(o)
    })
    .expect("the trackers did not agree on the title's owner");
    let survivor = (killed + 1) % 3;
    let running: Vec<usize> = (0..3).filter(|&t| t != killed).collect();

    // Mid-fill: every appliance has its plan, not every one is done.
    wait_for(Duration::from_secs(60), || (filling(&fleet, &title) == 8).then_some(()))
        .expect("not every appliance got its plan within 60 s");
    assert!(fleet.completed(&title) < 8, "the fill was over before the owner was killed");
    // From another thread, the moment a surviving tracker names another owner, asked every
    // 20 ms (the loop below is slower: a steering call waits up to 1 s on the dead owner).
    let (survivor_admin, killed_peer) =
        (fleet.trackers[survivor].admin.clone(), fleet.trackers[killed].peer.clone());
    let watched = title.clone();
    fleet.kill_tracker(killed);
    let killed_at = Instant::now();
    let handover_watch = std::thread::spawn(move || {
        let deadline = killed_at + Duration::from_secs(60);
        while Instant::now() < deadline {
            if owner_at(&survivor_admin, &watched).is_some_and(|o| o != killed_peer) {
                return Some(killed_at.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    });

    // Steering answers at every poll through the kill, from a surviving tracker; the title
    // gets a live owner again.
    let mut handed_over = false;
    let mut polls = 0;
    wait_for(Duration::from_secs(180), || {
        let (code, answer) =
            fleet.steer(survivor, &title, "127.0.11.7").expect("a surviving tracker answers");
        assert_eq!(code, 200, "{answer}");
        assert!(answer["targets"].as_array().is_some_and(|t| !t.is_empty()), "{answer}");
        polls += 1;
        handed_over = handed_over || fleet.owner(survivor, &title).is_some_and(|o| o != killed);
        (fleet.completed(&title) == 8 && handed_over).then_some(())
    })
    .unwrap_or_else(|| {
        panic!("{} of 8 appliances completed after the owner's kill", fleet.completed(&title))
    });
    fleet.wait_filled(&title, Duration::from_secs(10));
    // Every surviving tracker counts the appliances that hold it whole, owner or not.
    wait_for(Duration::from_secs(30), || {
        running
            .iter()
            .all(|&t| {
                fleet.title_status(t, &title).and_then(|s| s["complete_appliances"].as_u64()) == Some(8)
            })
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!("{:?}", running.iter().map(|&t| fleet.title_status(t, &title)).collect::<Vec<_>>())
    });
    let handover =
        handover_watch.join().unwrap().expect("no surviving tracker named a new owner within 60 s");
    // A player given the dead tracker first is steered by the next one.
    let out = fleet.dir.path().join("played.mp4");
    let dead = format!("http://{}", fleet.trackers[killed].http);
    let alive = format!("http://{}", fleet.trackers[survivor].http);
    let played = fillmesh()
        .args([
            "play",
            &title,
            "--tracker-http",
            &dead,
            "--tracker-http",
            &alive,
            "--client-ip",
            "127.0.11.7",
        ])
        .arg("--out")
        .arg(&out)
        .env("XDG_CACHE_HOME", fleet.dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(played.status.success(), "{}", String::from_utf8_lossy(&played.stderr));
    assert_eq!(file_id(&out), title);
    // `fillmesh status` at any tracker: each title's owner and the fleet, the dead tracker
    // listed as not live.
    let alive_admin = format!("http://{}", fleet.trackers[survivor].admin);
    let printed = fillmesh().args(["status", "--tracker-admin", &alive_admin]).output().unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let status: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    let trackers = status["trackers"].as_array().unwrap();
    assert_eq!(trackers.len(), 3, "{status}");
    for (t, tracker) in fleet.trackers.iter().enumerate() {
        let entry = trackers.iter().find(|e| e["peer_id"] == tracker.peer.as_str()).unwrap();
        assert_eq!(entry["addr"], tracker.mesh.as_str());
        assert_eq!(entry["http"], tracker.http.as_str());
        assert_eq!(entry["admin"], tracker.admin.as_str());
        assert_eq!(entry["live"], t != killed, "{entry}");
    }
    let entry = status["titles"].as_array().unwrap().iter().find(|e| e["id"] == title.as_str()).unwrap();
    assert!(entry["owner"].as_str().is_some_and(|o| o != fleet.trackers[killed].peer), "{entry}");
    // At the running tracker that does not own the title, `fillmesh status` gives the
    // owner's figures for it (only the owner hears the fill's summaries).
    let owner = fleet.owner(survivor, &title).unwrap();
    let other = running.iter().copied().find(|&t| t != owner).unwrap();
    let printed = fillmesh()
        .args(["status", "--tracker-admin", &format!("http://{}", fleet.trackers[other].admin)])
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let merged: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    let theirs = fleet.status(owner).unwrap();
    let of = |s: &serde_json::Value| {
        s["titles"].as_array().unwrap().iter().find(|e| e["id"] == title.as_str()).cloned().unwrap()
    };
    for field in ["peer_bytes", "origin_bytes", "bytes_by_class", "complete_appliances"] {
        assert_eq!(
            of(&merged)[field],
            of(&theirs)[field],
            "{field} at tracker {other} against the owner {owner}"
        );
    }
    assert!(of(&merged)["peer_bytes"].as_u64().unwrap() > 0, "{merged}");
    let held = |s: &serde_json::Value| -> std::collections::BTreeMap<String, serde_json::Value> {
        s["appliances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["peer_id"].to_string(), a["held_chunks"][title.as_str()].clone()))
            .collect()
    };
    assert_eq!(held(&merged), held(&theirs));
    let served_first = fleet.origin_served();
    eprintln!("origin served {:.3} x the first title by its end", served_first / TITLE_LEN as f64);
    eprintln!(
        "the owner was killed; {title} had no live coordinator for {:.2} s (seen from another tracker, lease {LEASE_SECS} s); {polls} steering polls answered",
        handover.as_secs_f64()
    );

    // A title published while that tracker is down, and owned by it once it is back: its fill
    // starts under a surviving tracker and is taken back mid-fill.
    let ids: Vec<NodeId> = fleet.trackers.iter().map(|t| t.peer.parse().unwrap()).collect();
    let second_file = fleet.dir.path().join("second.mp4");
    std::fs::write(&second_file, bytes_owned_by(SECOND_LEN, 100, &ids, &ids[killed])).unwrap();
    let second = fleet.seed(&second_file);
    assert!(running.iter().all(|&t| fleet.owner(t, &second) != Some(killed)));
    wait_for(Duration::from_secs(60), || (filling(&fleet, &second) > 0).then_some(()))
        .expect("no appliance started filling the title published while a tracker was down");
    let mid_fill = fleet.completed(&second) < 8;
    fleet.start_tracker(killed);
    wait_all_live(&fleet, &[0, 1, 2], 3);
    wait_for(Duration::from_secs(30), || {
        (0..3)
            .all(|t| fleet.owner(t, &title) == Some(killed) && fleet.owner(t, &second) == Some(killed))
            .then_some(())
    })
    .expect("the restarted tracker did not take its titles back");
    fleet.wait_filled(&second, Duration::from_secs(180));
    // The returning owner rebuilt the holdings from the appliances' reports.
    wait_for(Duration::from_secs(30), || {
        (fleet.title_status(killed, &title)?["complete_appliances"].as_u64()? == 8).then_some(())
    })
    .unwrap_or_else(|| panic!("the restarted owner's view: {:?}", fleet.title_status(killed, &title)));
    // No fill started again from zero: the origin sent about one copy of each title.
    let served = fleet.origin_served();
    let titles = (TITLE_LEN + SECOND_LEN) as f64;
    eprintln!(
        "origin served {:.3} x the titles; the second title was {} when its owner came back",
        served / titles,
        if mid_fill { "mid-fill" } else { "already whole" }
    );
    assert!(served <= 1.05 * titles, "the origin served {:.3} x the titles", served / titles);
}

#[test]
fn etcd_killed_and_restarted_loses_no_title_and_the_fill_completes() {
    let Some(mut fleet) = Fleet::start(3, 8, "8MB") else { return };
    wait_all_live(&fleet, &[0, 1, 2], 3);
    // Malformed values under the prefix are skipped, never a crash.
    fleet.etcd.put_raw(&format!("{PREFIX}titles/not-a-title"), b"nonsense");
    fleet.etcd.put_raw(&format!("{PREFIX}titles/{}", "ab".repeat(32)), &[0xff; 64]);
    fleet.etcd.put_raw(&format!("{PREFIX}trackers/12D3KooWNotATracker"), b"{");
    // More keys than one page of a tracker's read, sorted before the catalog.
    for n in 0..40 {
        fleet.etcd.put_raw(&format!("{PREFIX}0junk/{n}"), b"x");
    }
    wait_for(Duration::from_secs(30), || {
        (0..3)
            .all(|t| {
                fleet.trackers[t]
                    .process
                    .as_ref()
                    .unwrap()
                    .log()
                    .contains("skipped a malformed entry in etcd")
            })
            .then_some(())
    })
    .expect("a tracker did not log the malformed entries");
    wait_all_live(&fleet, &[0, 1, 2], 3);

    let file = fleet.dir.path().join("feature.mp4");
    std::fs::write(&file, test_bytes(TITLE_LEN, 7)).unwrap();
    let title = fleet.seed(&file);
    // Two small titles more in the catalog.
    let mut catalog = vec![title.clone()];
    for seed in [8, 9] {
        let small = fleet.dir.path().join(format!("small-{seed}.mp4"));
        std::fs::write(&small, test_bytes(1 << 20, seed)).unwrap();
        catalog.push(fleet.seed(&small));
    }
    wait_for(Duration::from_secs(60), || (filling(&fleet, &title) == 8).then_some(()))
        .expect("not every appliance got its plan within 60 s");
    assert!(fleet.completed(&title) < 8, "the fill was over before etcd was killed");
    fleet.etcd.kill();
    wait_for(Duration::from_secs(60), || (0..3).all(|t| etcd_up(&fleet, t) == Some(0.0)).then_some(()))
        .expect("a tracker did not say it lost etcd");
    fleet.etcd.restart();
    wait_for(Duration::from_secs(60), || (0..3).all(|t| etcd_up(&fleet, t) == Some(1.0)).then_some(()))
        .expect("a tracker did not get back into the fleet");
    fleet.wait_filled(&title, Duration::from_secs(180));
    // Nothing lost: every tracker lists every title, and etcd holds each.
    let mut lost = 0;
    for id in &catalog {
        for t in 0..3 {
            assert!(fleet.title_status(t, id).is_some(), "tracker {t} lost {id}");
        }
        if !etcd_has(&fleet.etcd, &format!("{PREFIX}titles/{id}")) {
            lost += 1;
        }
    }
    eprintln!("catalog entries lost after etcd's kill and restart: {lost} of {}", catalog.len());
    assert_eq!(lost, 0);
    // A tracker new to the fleet reads the whole catalog from etcd (past the junk).
    let url = fleet.etcd.url();
    let args = ["--listen", "127.0.0.5:0", "--http", "127.0.0.5:0", "--etcd", &url, "--etcd-prefix", PREFIX];
    let newcomer = NodeProcess::start_tracker(&fleet.dir.path().join("newcomer"), &args);
    let status = fillmesh_tests::mesh::status(&newcomer).unwrap();
    let titles = status["titles"].as_array().unwrap();
    for id in &catalog {
        assert!(titles.iter().any(|t| t["id"] == id.as_str()), "a new tracker does not know {id}: {status}");
    }
}

/// Whether etcd holds `key` (its JSON gateway).
fn etcd_has(etcd: &Etcd, key: &str) -> bool {
    etcd_get(etcd, key).is_some()
}

/// The value etcd holds under `key` (its JSON gateway), if any.
fn etcd_get(etcd: &Etcd, key: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = format!(r#"{{"key":"{}"}}"#, b64.encode(key));
    let url = etcd.url();
    let (code, answer) = http(
        url.trim_start_matches("http://"),
        "POST",
        "/v3/kv/range",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    if code != 200 {
        return None;
    }
    let answer: serde_json::Value = serde_json::from_str(&answer).ok()?;
    // The gateway leaves an empty value out.
    let value = answer["kvs"].as_array()?.first()?.get("value").and_then(|v| v.as_str()).unwrap_or("");
    b64.decode(value).ok()
}

#[test]
fn a_tracker_cut_off_from_etcd_steps_down_and_the_others_take_its_titles() {
    let Some(fleet) = Fleet::start_with(3, 2, "100MB", &[0]) else { return };
    wait_all_live(&fleet, &[0, 1, 2], 3);
    let ids: Vec<NodeId> = fleet.trackers.iter().map(|t| t.peer.parse().unwrap()).collect();
    let file = fleet.dir.path().join("small.mp4");
    std::fs::write(&file, bytes_owned_by(1 << 20, 500, &ids, &ids[0])).unwrap();
    let title = fleet.seed(&file);
    wait_for(Duration::from_secs(30), || (0..3).all(|t| fleet.owner(t, &title) == Some(0)).then_some(()))
        .expect("tracker 0 does not own the title everywhere");

    fleet.trackers[0].proxy.as_ref().unwrap().cut();
    let cut_at = Instant::now();
    // The others drop it when its lease expires and take the title.
    let new_owner = wait_for(Duration::from_secs(60), || {
        let o = fleet.owner(1, &title).filter(|&o| o != 0)?;
        (fleet.owner(2, &title) == Some(o)).then_some(o)
    })
    .expect("the others did not take the title of the tracker cut off from etcd");
    // The one cut off says so, learns from them that it is out, and stops coordinating it.
    wait_for(Duration::from_secs(60), || (fleet.owner(0, &title) == Some(new_owner)).then_some(()))
        .unwrap_or_else(|| panic!("the tracker cut off still says: {:?}", fleet.title_status(0, &title)));
    let both = cut_at.elapsed();
    assert_eq!(etcd_up(&fleet, 0), Some(0.0));
    let me = fleet.status(0).unwrap()["trackers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["peer_id"] == fleet.trackers[0].peer.as_str())
        .cloned()
        .unwrap();
    assert_eq!(me["live"], false, "{me}");
    eprintln!(
        "a tracker cut off from etcd stepped down {:.1} s after the cut (lease {LEASE_SECS} s)",
        both.as_secs_f64()
    );
}

/// 100 MiB at 1 KiB chunks: 102,400 chunks, a manifest of 3.2 MiB of chunk hashes, which no
/// etcd value holds (the trackers write at most 1 MiB, etcd takes 1.5 MiB).
const LARGE_LEN: usize = 100 << 20;

#[test]
fn a_title_of_more_than_100000_chunks_publishes_and_fills_under_etcd() {
    let Some(fleet) = Fleet::start(2, 1, "1GB") else { return };
    wait_all_live(&fleet, &[0, 1], 2);
    let file = fleet.dir.path().join("large.mp4");
    std::fs::write(&file, test_bytes(LARGE_LEN, 77)).unwrap();
    let started = Instant::now();
    let url = format!("http://{}", fleet.origin.http.as_deref().unwrap());
    let out =
        fillmesh().arg("seed").arg(&file).args(["--origin", &url, "--chunk-size", "1KiB"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let title = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(title, file_id(&file));
    let seeded = started.elapsed();
    // Both trackers have it, at 102,400 chunks.
    wait_for(Duration::from_secs(30), || {
        (0..2)
            .all(|t| fleet.title_status(t, &title).is_some_and(|s| s["chunks"] == 102_400 && s["files"] == 1))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not both trackers know the title: {:?}", fleet.title_status(0, &title)));
    // etcd holds a name and a shape (a chunk size and one length), never the chunk hashes.
    let record = etcd_get(&fleet.etcd, &format!("{PREFIX}titles/{title}")).expect("the catalog record");
    assert!(record.len() < 64, "{} bytes in etcd for the title", record.len());
    assert!(record.windows(9).any(|w| w == b"large.mp4"), "the record names the title");

    fleet.wait_filled(&title, Duration::from_secs(240));
    let filled = started.elapsed();
    eprintln!(
        "102,400 chunks of 1 KiB: seeded in {:.1} s, filled (one appliance from the origin) {:.1} s after \
         the seed began; {} bytes in etcd for the title",
        seeded.as_secs_f64(),
        filled.as_secs_f64(),
        record.len()
    );
}
