//! Players over HTTP/3: steering to the nearest appliance, verification, failover, a lying
//! appliance, a standard HTTP/3 client, and the edge cases of `Range`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::{Command, Output};
use std::time::Duration;

use fillmesh_node::daemon::{self};
use fillmesh_tests::doubles::{Lie, Lying};
use fillmesh_tests::mesh::Mesh;
use fillmesh_tests::{file_id, wait_for};

const TITLE_LEN: usize = (24 << 20) + 777;

fn play(mesh: &Mesh, client_ip: &str, out: &std::path::Path, extra: &[&str]) -> Output {
    mesh.play(client_ip, out, extra)
}

fn served_by(stdout: &str) -> String {
    stdout.lines().find_map(|l| l.strip_prefix("served by ")).unwrap_or_default().to_owned()
}

#[test]
fn a_player_is_served_by_an_appliance_in_its_site_and_gets_verified_bytes() {
    let mesh = Mesh::start("mesh", "64MB", 4, TITLE_LEN);
    mesh.wait_complete(Duration::from_secs(120));
    // 127.0.12.0/24 is served by appliances 2 and 3, site s1.
    let out_file = mesh.dir.path().join("played.mp4");
    let out = play(&mesh, "127.0.12.7", &out_file, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(served_by(&stdout).contains("(site s1,"), "{stdout}");
    assert!(stdout.contains("every byte verified") && stdout.contains("failovers: 0"), "{stdout}");
    assert_eq!(file_id(&out_file), mesh.title);
    // And one in site s0's prefix goes to site s0.
    let out = play(&mesh, "127.0.11.200", &out_file, &[]);
    assert!(served_by(&String::from_utf8_lossy(&out.stdout)).contains("(site s0,"));
}

#[test]
fn killing_the_serving_appliance_mid_stream_fails_over_to_another() {
    let mut mesh = Mesh::start("mesh", "64MB", 4, TITLE_LEN);
    mesh.wait_complete(Duration::from_secs(120));
    let out_file = mesh.dir.path().join("played.mp4");
    // At 4 MB/s the 24 MiB title takes about six seconds: time to kill its appliance, the one
    // whose heartbeat reports the player's session. Not the first of a steering answer asked
    // here: steering counts each answer as a player on its first target until that
    // appliance's next heartbeat, so the player, steered right after, goes to another one.
    let mut player = mesh
        .play_command("127.0.11.7", &out_file)
        .args(["--rate", "4MB"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let first = wait_for(Duration::from_secs(10), || {
        let s = fillmesh_tests::mesh::status(&mesh.tracker)?;
        let a =
            s["appliances"].as_array()?.iter().find(|a| a["player_sessions"].as_u64() == Some(1))?.clone();
        Some(a["peer_id"].as_str()?.to_owned())
    })
    .expect("no heartbeat reported the player's session");
    let victim = mesh.appliances.iter_mut().find(|(_, p)| p.peer == first).unwrap();
    victim.1.child.kill();
    let out = wait_for(Duration::from_secs(60), || player.try_wait().unwrap().map(|_| ()))
        .map(|_| player.wait_with_output().unwrap())
        .expect("the player did not finish");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("failovers: 0"), "{stdout}");
    // The appliance it failed over from is the one killed, and another one sent chunks.
    assert!(stderr.lines().any(|l| l.contains("failing over") && l.contains(&first)), "{stderr}");
    let others: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("appliance "))
        .filter(|l| !l.starts_with(&first) && !l.ends_with(": 0 bytes"))
        .collect();
    assert!(!others.is_empty(), "{stdout}");
    assert_eq!(file_id(&out_file), mesh.title);
}

/// An appliance in this process (the mesh's spare identity 0, site `liars`, serving
/// 127.0.50.0/24), honest to the mesh (so it fills and is steered to) and lying to players.
struct PlayerLiar {
    rt: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl PlayerLiar {
    /// Starts it and waits until it and the mesh's `appliances` hold the title; returns it
    /// with its peer id, first in the steering of 127.0.50.9.
    fn start(mesh: &Mesh, appliances: usize) -> (Self, String) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let config = mesh.spare_node(0, "127.0.0.50:0", "127.0.50.0/24");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = daemon::run_with(
            config,
            async {
                let _ = stopped.await;
            },
            |store| daemon::Sources { mesh: store.clone(), players: Lying::source(store, Lie::ChunkBit) },
        );
        let task = rt.spawn(async move { run.await.map_err(|e| format!("{e:#}")) });
        mesh.wait_complete_count(appliances + 1, Duration::from_secs(120));
        let steering = mesh.steer("127.0.50.9");
        assert_eq!(steering["targets"][0]["site"], "liars", "{steering}");
        let id = steering["targets"][0]["peer_id"].as_str().unwrap().to_owned();
        (Self { rt, stop, task }, id)
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.rt.block_on(self.task).unwrap().unwrap();
    }
}

#[test]
fn a_player_rejects_a_lying_appliance_and_fails_over() {
    let mesh = Mesh::start_with_spares("mesh", "64MB", 2, TITLE_LEN, 1);
    let (liar, _) = PlayerLiar::start(&mesh, 2);
    let out_file = mesh.dir.path().join("played.mp4");
    let out = play(&mesh, "127.0.50.9", &out_file, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("failed verification"), "{stderr}");
    assert!(!stdout.contains("failovers: 0"), "{stdout}");
    assert!(!served_by(&stdout).contains("site liars"), "{stdout}");
    assert_eq!(file_id(&out_file), mesh.title);
    liar.stop();
}

/// A standard HTTP client this project did not write (Python's niquests), held to one
/// version (`h3`, `h2` or `h1`, the last two over TLS on TCP), through the edge cases of
/// `Range`. `.ci/run` installs it.
const NIQUESTS: &str = r#"
import json, sys, hashlib, warnings
warnings.filterwarnings("ignore")
import niquests
base, title, chunk, version = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = niquests.Session(disable_http1=version != "h1", disable_http2=version != "h2", disable_http3=version != "h3")
def get(path, rng=None, method="GET", extra=None):
    h = {} if rng is None else {"Range": rng}
    h.update(extra or {})
    r = s.request(method, base + path, headers=h, verify=False, timeout=20)
    return {"status": r.status_code, "version": r.http_version, "range": r.headers.get("content-range"),
            "etag": r.headers.get("etag"), "type": r.headers.get("content-type"),
            "length": r.headers.get("content-length"), "body": hashlib.sha256(r.content or b"").hexdigest(),
            "size": len(r.content or b""), "alt_svc": r.headers.get("alt-svc"),
            "cors": r.headers.get("access-control-allow-origin"),
            "expose": r.headers.get("access-control-expose-headers"),
            "allow_headers": r.headers.get("access-control-allow-headers"),
            "allow_methods": r.headers.get("access-control-allow-methods")}
out = {
  "first": get(f"/titles/{title}", "bytes=0-0"),
  "last": get(f"/titles/{title}", "bytes=-1"),
  "across": get(f"/titles/{title}", f"bytes={chunk-10}-{chunk+9}"),
  "suffix": get(f"/titles/{title}", "bytes=-1000"),
  "open": get(f"/titles/{title}", f"bytes={chunk*2}-"),
  "unsatisfiable": get(f"/titles/{title}", "bytes=999999999-"),
  "malformed": get(f"/titles/{title}", "bytes=banana"),
  "unknown": get("/titles/" + "0" * 64),
  "head": get(f"/titles/{title}", None, "HEAD"),
  "preflight": get(f"/titles/{title}", None, "OPTIONS",
                   {"Origin": "http://page.example", "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "range"}),
}
# The node's operator views are not on the players' port.
out["metrics"] = get("/metrics")
print(json.dumps(out))
"#;

/// Runs [`NIQUESTS`] against the mesh's first appliance with one HTTP version and checks
/// every range case, and the `Alt-Svc` and CORS headers, whatever the version; returns what
/// the script printed.
fn range_cases(mesh: &Mesh, version: &str) -> serde_json::Value {
    let (_, appliance) = &mesh.appliances[0];
    // Under the token steering signs (tokens are on under a tracker).
    let base = format!("https://{}{}", appliance.mesh, mesh.token_path(&mesh.title));
    let chunk = 1usize << 20;
    let out = Command::new("python3")
        .args(["-c", NIQUESTS, &base, &mesh.title, &chunk.to_string(), version])
        .output()
        .expect("python3 with niquests (installed by .ci/run: python3 -m pip install niquests)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = std::fs::read(&mesh.file).unwrap();
    let len = data.len();
    let sha = |b: &[u8]| {
        use std::fmt::Write;
        let d = sha256(b);
        d.iter().fold(String::new(), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
    };
    let etag = format!("\"{}\"", mesh.title);
    let wire = match version {
        "h3" => 30,
        "h2" => 20,
        _ => 11,
    };
    let port = appliance.mesh.rsplit(':').next().unwrap();
    let alt_svc = format!("h3=\":{port}\"; ma=86400");
    let check = |name: &str, status: u64, range: Option<String>, body: Option<&[u8]>| {
        let v = &r[name];
        assert_eq!(v["version"], wire, "{name}: not {version}: {v}");
        assert_eq!(v["status"], status, "{name}: {v}");
        assert_eq!(v["alt_svc"], alt_svc.as_str(), "{name}: {v}");
        assert_eq!(v["cors"], "*", "{name}: {v}");
        assert_eq!(
            v["expose"], "content-range, content-length, etag, accept-ranges, x-fillmesh-refused",
            "{name}: {v}"
        );
        if let Some(range) = range {
            assert_eq!(v["range"], range.as_str(), "{name}: {v}");
        }
        if let Some(body) = body {
            assert_eq!(v["body"], sha(body).as_str(), "{name}: {v}");
            assert_eq!(v["etag"], etag.as_str(), "{name}: {v}");
            assert_eq!(v["type"], "video/mp4", "{name}: {v}");
        }
    };
    check("first", 206, Some(format!("bytes 0-0/{len}")), Some(&data[..1]));
    check("last", 206, Some(format!("bytes {}-{}/{len}", len - 1, len - 1)), Some(&data[len - 1..]));
    check(
        "across",
        206,
        Some(format!("bytes {}-{}/{len}", chunk - 10, chunk + 9)),
        Some(&data[chunk - 10..chunk + 10]),
    );
    check("suffix", 206, Some(format!("bytes {}-{}/{len}", len - 1000, len - 1)), Some(&data[len - 1000..]));
    check("open", 206, Some(format!("bytes {}-{}/{len}", 2 * chunk, len - 1)), Some(&data[2 * chunk..]));
    check("unsatisfiable", 416, Some(format!("bytes */{len}")), None);
    // A malformed Range is ignored (RFC 9110 §14.2): the whole title, 200.
    check("malformed", 200, None, Some(&data));
    // Another title than the token's: refused for the token before the title is looked up.
    check("unknown", 403, None, None);
    assert_eq!(r["unknown"]["body"], sha(b"title\n").as_str(), "{}", r["unknown"]);
    check("head", 200, None, None);
    assert_eq!(r["head"]["length"], len.to_string().as_str());
    assert_eq!(r["head"]["size"], 0);
    // A CORS preflight for a `Range` request from a page on another origin.
    check("preflight", 204, None, None);
    assert_eq!(r["preflight"]["allow_headers"], "range");
    assert_eq!(r["preflight"]["allow_methods"], "GET, HEAD, OPTIONS");
    // Players never see the node's operator views: `/metrics` is only on its `--http`.
    check("metrics", 404, None, None);
    assert_eq!(r["metrics"]["body"], sha(b"not found\n").as_str(), "{}", r["metrics"]);
    r
}

#[test]
fn a_standard_http3_client_gets_ranges_with_the_right_status_headers_and_bytes() {
    let mesh = Mesh::start("mesh", "64MB", 1, TITLE_LEN);
    mesh.wait_complete(Duration::from_secs(120));
    range_cases(&mesh, "h3");
    let len = TITLE_LEN;
    let chunk = 1usize << 20;
    // What the appliance counted, on its operator listener (`--http`).
    let text = mesh.appliances[0].1.metrics();
    let text = text.as_str();
    for line in [
        "fillmesh_player_requests_total{status=\"206\"} 5",
        "fillmesh_player_requests_total{status=\"416\"} 1",
        // `/metrics` asked on the players' port.
        "fillmesh_player_requests_total{status=\"404\"} 1",
        "fillmesh_player_ttfb_seconds_count 6",
        // The unknown title: refused for the token (another title's) before it is looked up.
        "fillmesh_player_refused_total{reason=\"title\"} 1",
        // Nine requests with one token: its signature checked once, the verdict cached after.
        "fillmesh_player_token_checks_total{kind=\"signature\"} 1",
        "fillmesh_player_token_checks_total{kind=\"cached\"} 8",
        &format!("fillmesh_fill_chunks_held{{title=\"{}\"}} {}", mesh.title, len.div_ceil(chunk)),
    ] {
        assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
    }
    assert!(text.contains("\n# TYPE fillmesh_player_ttfb_seconds histogram\n"), "{text}");
    assert!(text.contains("\n# TYPE fillmesh_mesh_served_chunks_total counter\n"), "{text}");
}

/// The same routes over HTTPS on TCP, on the appliance's QUIC port number: HTTP/2 and
/// HTTP/1.1 answer every range case as HTTP/3 does, with `Alt-Svc` pointing at HTTP/3.
#[test]
fn https_on_tcp_answers_the_range_cases_as_http3_does() {
    let mesh = Mesh::start("mesh", "64MB", 1, TITLE_LEN);
    mesh.wait_complete(Duration::from_secs(120));
    for version in ["h2", "h1"] {
        range_cases(&mesh, version);
    }
    let text = mesh.appliances[0].1.metrics();
    assert!(text.lines().any(|l| l.starts_with("fillmesh_player_sessions ")), "{text}");
}

fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

#[test]
fn a_play_writes_to_a_device_and_to_standard_output() {
    let mesh = Mesh::start("mesh", "64MB", 1, TITLE_LEN);
    mesh.wait_complete(Duration::from_secs(120));
    // A device: no truncation, no sync (fsync on /dev/null is EINVAL, which used to end the play).
    let out = play(&mesh, "127.0.11.9", std::path::Path::new("/dev/null"), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains(&format!("{TITLE_LEN} bytes")) && stdout.contains("every byte verified"),
        "{stdout}"
    );
    // `-`: the verified title on standard output, the summary on standard error.
    let out = play(&mesh, "127.0.11.9", std::path::Path::new("-"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(out.stdout.len(), TITLE_LEN, "{stderr}");
    assert_eq!(blake3::hash(&out.stdout).to_hex().as_str(), mesh.title);
    assert!(stderr.contains("every byte verified"), "{stderr}");
    // A path that cannot be written is named in the error.
    let out = play(&mesh, "127.0.11.9", &mesh.dir.path().join("no/such/dir/out"), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("opening") && stderr.contains("no/such/dir/out"), "{stderr}");
}

#[test]
fn a_players_verification_report_reaches_the_tracker_and_a_second_reporter_marks_the_appliance_bad() {
    let mesh = Mesh::start_with_spares("mesh", "64MB", 1, 8 << 20, 1);
    let (liar, liar_id) = PlayerLiar::start(&mesh, 1);
    let reports = || {
        let a = mesh.appliance_status(&liar_id).unwrap();
        (a["corrupt_reports"].as_u64().unwrap(), a["bad"].as_bool().unwrap())
    };
    let out_file = mesh.dir.path().join("played.mp4");
    // A play reports the chunk with its playback token: one reporter.
    let out = play(&mesh, "127.0.50.9", &out_file, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("reported the chunk that failed verification"), "{stderr}");
    assert_eq!(file_id(&out_file), mesh.title);
    assert_eq!(reports(), (1, false));
    // A report that does not hold together is refused with its reason and changes nothing
    // (each with a valid token: a report without one is refused for that, `tokens.rs`).
    let tracker_http = mesh.tracker.http.clone().unwrap();
    let token = mesh.token_path(&mesh.title).trim_start_matches("/p/").to_owned();
    for (body, reason) in [
        (
            format!(r#"{{"title":"{}","peer_id":"{}","chunk":8,"token":"{token}"}}"#, mesh.title, liar_id),
            "chunk 8",
        ),
        (
            format!(
                r#"{{"title":"{}","peer_id":"{}","chunk":0,"token":"{token}"}}"#,
                mesh.title, mesh.origin.peer
            ),
            "no appliance",
        ),
        (format!(r#"{{"title":"nope","peer_id":"{liar_id}","chunk":0}}"#), "title"),
        ("{\"title\":1}".to_owned(), "invalid type"),
    ] {
        let (code, answer) = fillmesh_tests::http(&tracker_http, "POST", "/report", &[], body.as_bytes());
        assert_eq!(code, 400, "{body}: {answer}");
        assert!(answer.contains(reason), "{body}: {answer}");
    }
    let long = format!(
        r#"{{"title":"{}","peer_id":"{}","chunk":0,"pad":"{}"}}"#,
        mesh.title,
        liar_id,
        "x".repeat(2000)
    );
    assert_eq!(fillmesh_tests::http(&tracker_http, "POST", "/report", &[], long.as_bytes()).0, 413);
    assert_eq!(reports(), (1, false));
    // A second play, with a token of its own (from the same address: a player is its token,
    // not its address): the quorum. The liar is steered to no more.
    let out = play(&mesh, "127.0.50.9", &out_file, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(reports(), (2, true));
    let steering = mesh.steer("127.0.50.9");
    let targets = steering["targets"].as_array().unwrap();
    assert!(!targets.is_empty() && targets.iter().all(|t| t["peer_id"] != liar_id.as_str()), "{steering}");
    liar.stop();
}
