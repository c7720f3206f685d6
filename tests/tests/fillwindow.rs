//! Fill windows and urgent titles with real processes: appliances whose fill window opens at
//! the next whole minute (in their own time zone) take no fill of a title seeded before it
//! opens, while a title seeded `--urgent` fills at once; once the window opens, the first
//! title fills too.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fillmesh_tests::mesh::{start_appliance_with, start_origin, status, title_status};
use fillmesh_tests::{file_id, fillmesh, print_id, test_bytes, wait_for, NodeProcess};

/// The appliances' time zone, not the host's: their window is in their local time, and the
/// tracker compares it in UTC. India is 5:30 ahead of UTC all year (no daylight saving).
const TZ: &str = "Asia/Kolkata";
const TZ_OFFSET_MINUTES: u64 = 330;

fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

fn seed(origin: &NodeProcess, file: &Path, urgent: bool) -> String {
    let url = format!("http://{}", origin.http.as_deref().unwrap());
    let mut cmd = fillmesh();
    cmd.arg("seed").arg(file).args(["--origin", &url]);
    if urgent {
        cmd.arg("--urgent");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn complete(tracker: &NodeProcess, title: &str) -> u64 {
    title_status(tracker, title).and_then(|t| t["complete_appliances"].as_u64()).unwrap_or(0)
}

#[test]
fn a_fill_window_keeps_a_title_out_until_it_opens_while_an_urgent_title_fills_at_once() {
    assert!(
        Path::new("/usr/share/zoneinfo").join(TZ).exists(),
        "no time zone database for {TZ}: install tzdata (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let origin_dir = dir.path().join("origin");
    let appliance_dirs: Vec<_> = (0..2).map(|i| dir.path().join(format!("appliance-{i}"))).collect();
    let mut trusted = vec![print_id(&origin_dir)];
    trusted.extend(appliance_dirs.iter().map(|d| print_id(d)));
    let trust_file = dir.path().join("trusted.txt");
    std::fs::write(&trust_file, trusted.join("\n")).unwrap();
    let trust = trust_file.display().to_string();
    // (After `print_id`, which brings the binary up to date: a build takes a minute.)
    // The window opens at the start of the next minute, or of the one after when the next is
    // less than 30 s away (the urgent title is to fill and the other be seen held back before
    // it opens, on a loaded host too), and lasts an hour.
    let now = since_epoch().as_secs();
    let opens = now / 60 + if now % 60 < 30 { 1 } else { 2 };
    let local = (opens + TZ_OFFSET_MINUTES) % 1440;
    let end = (local + 60) % 1440;
    let window = format!("{:02}:{:02}-{:02}:{:02}", local / 60, local % 60, end / 60, end % 60);

    let tracker = NodeProcess::start_tracker(
        &dir.path().join("tracker"),
        &["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--trust-file", &trust],
    );
    let origin = start_origin(&origin_dir, &tracker, &[]);
    let appliances: Vec<NodeProcess> = appliance_dirs
        .iter()
        .enumerate()
        .map(|(i, d)| start_appliance_with(d, i, &tracker, &["--fill-window", &window], &[("TZ", TZ)]))
        .collect();

    // The tracker knows both windows, in UTC, and that they are closed.
    let utc = (opens % 1440, (opens + 60) % 1440);
    let in_utc = format!("{:02}:{:02}-{:02}:{:02}", utc.0 / 60, utc.0 % 60, utc.1 / 60, utc.1 % 60);
    wait_for(Duration::from_secs(15), || {
        let s = status(&tracker)?;
        let all = s["appliances"].as_array()?;
        appliances
            .iter()
            .all(|p| {
                all.iter().any(|a| {
                    a["peer_id"] == p.peer.as_str()
                        && a["fill_window"] == serde_json::json!([in_utc])
                        && a["fill_window_open"] == false
                })
            })
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!("the tracker does not know the windows ({in_utc} UTC): {:?}", status(&tracker))
    });

    let later = dir.path().join("later.mp4");
    std::fs::write(&later, test_bytes(3 << 20, 7)).unwrap();
    let urgent = dir.path().join("urgent.mp4");
    std::fs::write(&urgent, test_bytes(3 << 20, 8)).unwrap();
    let later_id = seed(&origin, &later, false);
    let urgent_id = seed(&origin, &urgent, true);
    assert_eq!(title_status(&tracker, &urgent_id).unwrap()["urgent"], true);

    // The urgent title fills at once, windows closed.
    wait_for(Duration::from_secs(30), || (complete(&tracker, &urgent_id) == 2).then_some(())).unwrap_or_else(
        || panic!("the urgent title did not fill: {:?}\n{}", status(&tracker), tracker.log()),
    );
    // In one snapshot of the tracker: the windows still closed, and not a chunk of the other
    // title on either appliance (it was planned nowhere; nothing was fetched).
    let s = status(&tracker).unwrap();
    for a in s["appliances"].as_array().unwrap().iter().filter(|a| a["role"] == "appliance") {
        if a["fill_window_open"] == true {
            panic!(
                "the window opened before the urgent title filled: the test cannot tell (a slow host?): {s}"
            );
        }
        assert!(a["held_chunks"].get(&later_id).is_none(), "filled outside its window: {s}");
    }
    for d in &appliance_dirs {
        assert!(!d.join("data").join(format!("{later_id}.data")).exists(), "a data file outside the window");
        assert_eq!(file_id(&d.join("data").join(format!("{urgent_id}.data"))), urgent_id);
    }

    // The window opens at the minute: the other title fills then.
    let opens_in = Duration::from_secs(opens * 60).saturating_sub(since_epoch());
    wait_for(opens_in + Duration::from_secs(45), || (complete(&tracker, &later_id) == 2).then_some(()))
        .unwrap_or_else(|| {
            panic!("the title did not fill once the window opened: {:?}\n{}", status(&tracker), tracker.log())
        });
    for d in &appliance_dirs {
        assert_eq!(file_id(&d.join("data").join(format!("{later_id}.data"))), later_id);
    }
    assert!(tracker.log().contains("fill windows opened or closed"), "{}", tracker.log());
    drop(appliances);
    drop(origin);
}
