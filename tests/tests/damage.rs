//! Damage on an appliance's disk, as a failing disk or a stray write does it: never served to
//! a client that does not verify, dropped, counted, and filled again from the mesh; found by
//! the scrub where nobody asks for the title.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fillmesh_tests::mesh::{start_appliance_with, Mesh};
use fillmesh_tests::{file_id, http, wait_for};

const MIB: u64 = 1 << 20;
const TITLE_LEN: usize = 8 << 20;

/// Overwrites 4 bytes of a title's data file at `offset`, behind the node's back.
fn damage(data_dir: &Path, title: &str, offset: u64) {
    let path = data_dir.join("data").join(format!("{title}.data"));
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut was = [0u8; 4];
    file.read_exact_at(&mut was, offset).unwrap();
    file.write_all_at(&was.map(|b| !b), offset).unwrap();
}

/// A client that does not verify (Python's niquests over HTTP/3 only) asks for one range
/// once, then again every 200 ms for at most `deadline` seconds, reading the appliance's
/// `/metrics` (on its operator listener, plain HTTP) after each answer, until the appliance
/// has counted a damaged chunk, holds every chunk again and served the range right after that. Prints every answer's status and
/// whether its bytes were the title's, and how it ended.
const REREAD: &str = r#"
import hashlib, json, re, sys, time, warnings
warnings.filterwarnings("ignore")
import niquests
base, title, rng, want, chunks, deadline, metrics_url = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]), sys.argv[7]
s = niquests.Session(disable_http1=True, disable_http2=True)
operator = niquests.Session()
def metric(text, name):
    m = re.search("^" + re.escape(name) + r" (\d+)$", text, re.M)
    return int(m.group(1)) if m else None
answers, damaged, held, done = [], None, None, False
start = time.time()
while True:
    r = s.get(base + "/titles/" + title, headers={"Range": rng}, verify=False, timeout=20)
    right = hashlib.sha256(r.content or b"").hexdigest() == want
    answers.append({"status": r.status_code, "right": right, "retry_after": r.headers.get("retry-after")})
    text = operator.get(metrics_url, timeout=20).text
    damaged = metric(text, "fillmesh_store_chunks_damaged_total")
    held = metric(text, 'fillmesh_fill_chunks_held{title="%s"}' % title)
    if damaged and held == chunks and r.status_code == 206 and right and any(a["status"] == 503 for a in answers):
        done = True
        break
    if time.time() - start >= deadline:
        break
    time.sleep(0.2)
print(json.dumps({"answers": answers, "damaged": damaged, "held": held, "done": done}))
"#;

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn damage_on_disk_is_never_served_and_the_chunk_is_dropped_refilled_and_counted() {
    let mesh = Mesh::start("mesh", "64MB", 2, TITLE_LEN);
    mesh.wait_complete(Duration::from_secs(120));
    let (data_dir, appliance) = &mesh.appliances[0];
    let base = format!("https://{}{}", appliance.mesh, mesh.token_path(&mesh.title));
    let bytes = std::fs::read(&mesh.file).unwrap();
    let (start, end) = (3 * MIB + 1000, 3 * MIB + 50_000);
    let want = sha256_hex(&bytes[start as usize..=end as usize]);
    let range = format!("bytes={start}-{end}");
    let metrics_url = format!("http://{}/metrics", appliance.http.as_deref().unwrap());
    let reread = |deadline: &str| {
        let out = Command::new("python3")
            .args(["-c", REREAD, &base, &mesh.title, &range, &want, "8", deadline, &metrics_url])
            .output()
            .expect("python3 with niquests (installed by .ci/run: python3 -m pip install niquests)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // Read right once (the chunk verified, as every read does).
    let first = reread("0");
    assert_eq!(first["answers"][0]["status"], 206, "{first}");
    assert_eq!(first["answers"][0]["right"], true, "{first}");
    assert_eq!(first["damaged"], 0, "{first}");

    // 4 bytes of that chunk damaged on disk; the same range asked again and again.
    damage(data_dir, &mesh.title, 3 * MIB + 2000);
    let r = reread("60");
    let answers = r["answers"].as_array().unwrap();
    for a in answers {
        let served_right = a["status"] == 206 && a["right"] == true;
        let not_held = a["status"] == 503 && a["retry_after"].is_string();
        assert!(served_right || not_held, "damaged bytes or another answer: {a} in {r}");
    }
    assert_eq!(r["done"], true, "the chunk was not dropped and filled again within 60 s: {r}");
    assert_eq!(r["damaged"], 1, "{r}");
    assert_eq!(r["held"], 8, "{r}");
    // Refilled verified on disk, logged once, and the tracker sees the title whole there again.
    assert_eq!(file_id(&data_dir.join("data").join(format!("{}.data", mesh.title))), mesh.title);
    let log = appliance.log();
    assert_eq!(log.matches("chunk failed verification on disk").count(), 1, "{log}");
    mesh.wait_complete(Duration::from_secs(30));
}

#[test]
fn damage_in_a_title_nobody_plays_is_found_by_the_scrub_and_repaired() {
    let mut mesh = Mesh::start("mesh", "64MB", 2, TITLE_LEN);
    mesh.wait_complete(Duration::from_secs(120));
    // Appliance 0 again, scrubbing fast and often, with an HTTP port for its /metrics.
    let (data_dir, appliance) = &mut mesh.appliances[0];
    appliance.child.kill();
    let scrubbing = ["--scrub-rate", "40MB", "--scrub-interval-secs", "1", "--http", "127.0.0.11:0"];
    *appliance = start_appliance_with(data_dir, 0, &mesh.tracker, &scrubbing, &[]);
    let metrics_at = appliance.http.clone().unwrap();
    let metric = |name: &str| {
        let (code, text) = http(&metrics_at, "GET", "/metrics", &[], b"");
        assert_eq!(code, 200, "{text}");
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
    };
    let held = format!("fillmesh_fill_chunks_held{{title=\"{}\"}}", mesh.title);
    let scrubbed = format!("fillmesh_scrub_last_pass_timestamp_seconds{{title=\"{}\"}}", mesh.title);
    // A pass over the whole title first, so the damage comes while the node runs.
    wait_for(Duration::from_secs(30), || metric(&scrubbed)).expect("no scrub pass finished in 30 s");
    damage(data_dir, &mesh.title, 6 * MIB + 12_345);
    let repaired = wait_for(Duration::from_secs(60), || {
        (metric("fillmesh_store_chunks_damaged_total") == Some(1.0) && metric(&held) == Some(8.0))
            .then_some(())
    });
    assert!(repaired.is_some(), "not found and repaired in 60 s:\n{}", appliance.log());
    assert!(appliance.log().contains("found_by=\"scrub\"") || appliance.log().contains("found_by=scrub"));
    assert_eq!(file_id(&data_dir.join("data").join(format!("{}.data", mesh.title))), mesh.title);
    assert!(metric("fillmesh_scrub_bytes_total").unwrap_or(0.0) >= TITLE_LEN as f64);
}
