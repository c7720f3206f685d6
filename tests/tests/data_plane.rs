//! The appliance data plane end to end: real `fillmesh` processes on 127.0.0.1.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fillmesh_tests::{file_id, fillmesh, http, print_id, test_bytes, ChildGuard, NodeProcess};

/// 32 MiB and a tail that is not a multiple of anything.
const TITLE_LEN: usize = (32 << 20) + 12_345;

fn seed(file: &std::path::Path, origin: &NodeProcess) -> std::process::Output {
    let url = format!("http://{}", origin.http.as_deref().expect("origin http"));
    fillmesh().arg("seed").arg(file).args(["--origin", &url]).output().expect("run seed")
}

/// An origin on 127.0.0.1 (mesh and HTTP on free ports) that serves `peer` alone.
fn origin_trusting(dir: &std::path::Path, peer: &str) -> NodeProcess {
    NodeProcess::start(
        &dir.join("origin"),
        &["--origin", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--trust", peer],
    )
}

#[test]
fn origin_seeds_and_a_node_fetches_a_32mib_title_with_a_tail() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("title.bin");
    std::fs::write(&file, test_bytes(TITLE_LEN, 1)).unwrap();
    let id = file_id(&file);
    let fetcher = dir.path().join("fetcher");
    let fetcher_id = print_id(&fetcher);
    let origin = origin_trusting(dir.path(), &fetcher_id);

    let out = seed(&file, &origin);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);

    let output = dir.path().join("out.bin");
    let out = fillmesh()
        .args(["fetch", &id, "--from", &origin.mesh, "--peer", &origin.peer, "--out"])
        .arg(&output)
        .arg("--data")
        .arg(&fetcher)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(file_id(&output), id);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("33 chunks ({TITLE_LEN} bytes)")), "{stdout}");
    // The store and --out share one copy of the bytes.
    assert!(String::from_utf8_lossy(&out.stderr).contains("linked into place"));
}

#[test]
fn seeding_twice_is_idempotent_and_bytes_that_do_not_match_their_id_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.bin");
    std::fs::write(&file, test_bytes(3 << 20, 2)).unwrap();
    let id = file_id(&file);
    let origin = NodeProcess::start(
        &dir.path().join("origin"),
        &["--origin", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"],
    );
    let http_addr = origin.http.clone().unwrap();

    for _ in 0..2 {
        let out = seed(&file, &origin);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
    }
    assert!(String::from_utf8_lossy(&seed(&file, &origin).stderr).contains("already seeded"));

    // What a file that changed while it was read looks like to the origin: bytes that do not
    // hash to the id the client announced. Refused, and nothing stored under either id.
    let other = test_bytes(2 << 20, 3);
    let claimed = file_id(&file);
    let (status, body) =
        http(&http_addr, "POST", "/titles?name=changed", &[("x-fillmesh-title", &claimed)], &other);
    assert_eq!(status, 200, "an already-held id is answered before the body is read: {body}");
    let fake_id = "0".repeat(64);
    let (status, body) =
        http(&http_addr, "POST", "/titles?name=changed", &[("x-fillmesh-title", &fake_id)], &other);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("changed while it was read"), "{body}");
    let (status, _) = http(&http_addr, "GET", &format!("/titles/{fake_id}"), &[], b"");
    assert_eq!(status, 404);
    let staging = dir.path().join("origin").join("staging");
    let leftovers = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "a refused upload must leave no staging file");

    let (status, body) = http(&http_addr, "POST", "/titles", &[("x-fillmesh-title", "not-an-id")], b"x");
    assert_eq!(status, 400, "{body}");
    let (status, _) = http(&http_addr, "POST", "/titles", &[], b"x");
    assert_eq!(status, 400);
}

/// `fillmesh seed` returns once the tracker has the title, so a player asking at once finds
/// it; an origin whose tracker is away stores the title, and seed says the tracker has not
/// confirmed it yet rather than waiting for ever or failing.
#[test]
fn seed_returns_once_the_tracker_has_the_title_and_says_so_when_it_is_away() {
    let mesh = fillmesh_tests::mesh::Mesh::start("mesh", "64MB", 1, 1 << 20);
    // Mesh::start has just run `fillmesh seed`: the tracker knows the title already.
    let title = fillmesh_tests::mesh::title_status(&mesh.tracker, &mesh.title);
    assert!(title.is_some(), "{:?}", fillmesh_tests::mesh::status(&mesh.tracker));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.bin");
    std::fs::write(&file, test_bytes(1 << 20, 5)).unwrap();
    // A tracker address nothing listens on (a port just freed), and some identity for it.
    let away = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let away_id = print_id(&dir.path().join("away-tracker"));
    let origin = NodeProcess::start(
        &dir.path().join("origin"),
        &[
            "--origin",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--tracker",
            &away,
            "--tracker-id",
            &away_id,
        ],
    );
    let out = seed(&file, &origin);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), file_id(&file));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tracker has not confirmed"), "{err}");
    let (status, body) =
        http(origin.http.as_deref().unwrap(), "GET", &format!("/titles/{}", file_id(&file)), &[], b"");
    assert_eq!(status, 200, "stored at the origin all the same: {body}");
}

#[test]
fn a_wrong_pinned_peer_and_an_untrusted_client_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.bin");
    std::fs::write(&file, test_bytes(100_000, 4)).unwrap();
    let id = file_id(&file);
    let trusted = dir.path().join("trusted");
    let trusted_id = print_id(&trusted);
    let stranger = dir.path().join("stranger");
    let stranger_id = print_id(&stranger);
    let origin = origin_trusting(dir.path(), &trusted_id);
    assert!(seed(&file, &origin).status.success());

    let fetch = |data: &std::path::Path, peer: &str| {
        fillmesh()
            .args(["fetch", &id, "--from", &origin.mesh, "--peer", peer, "--out"])
            .arg(dir.path().join("out.bin"))
            .arg("--data")
            .arg(data)
            .output()
            .unwrap()
    };

    // The trusted client pins the wrong PeerId (the stranger's): the handshake fails.
    let out = fetch(&trusted, &stranger_id);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("handshake") || err.contains("certificate"), "{err}");

    // A stranger pinning the right PeerId gets through TLS and is then refused.
    let out = fetch(&stranger, &origin.peer);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not trusted"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !origin.log().contains("refusing untrusted peer") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        origin.log().contains(&format!("refusing untrusted peer peer={stranger_id}")),
        "{}",
        origin.log()
    );

    // And the trusted client pinning the right PeerId succeeds.
    let out = fetch(&trusted, &origin.peer);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `cmd` (a fetch logging each stored chunk at debug level), reads its log until `n`
/// chunks are reported stored (at most 60 s), then SIGKILLs it; the chunks it reported.
fn killed_after_storing(cmd: &mut std::process::Command, n: usize) -> Vec<u32> {
    let mut child = ChildGuard(cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();
    let mut stored = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stderr).lines() {
        stored.extend(stored_chunk(&line.unwrap()));
        if stored.len() >= n || Instant::now() > deadline {
            break;
        }
    }
    child.kill();
    stored
}

/// Indices from `stored chunk ... chunk=N` log lines.
fn stored_chunk(line: &str) -> Option<u32> {
    if !line.contains("stored chunk") {
        return None;
    }
    line.split_whitespace().find_map(|w| w.strip_prefix("chunk=")).and_then(|n| n.parse().ok())
}

/// A title of `len` test bytes seeded into an origin that serves one fetcher (whose identity
/// is kept in `fetcher`), started with `origin_args` besides.
struct Seeded {
    // Fields drop in order: the origin is stopped before its directory goes.
    origin: NodeProcess,
    bytes: Vec<u8>,
    id: String,
    fetcher: std::path::PathBuf,
    dir: tempfile::TempDir,
}

fn seeded(len: usize, seed_bytes: u64, origin_args: &[&str]) -> Seeded {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("title.bin");
    let bytes = test_bytes(len, seed_bytes);
    std::fs::write(&file, &bytes).unwrap();
    let id = file_id(&file);
    let fetcher = dir.path().join("fetcher");
    let fetcher_id = print_id(&fetcher);
    let mut args =
        vec!["--origin", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--trust", &fetcher_id];
    args.extend_from_slice(origin_args);
    let origin = NodeProcess::start(&dir.path().join("origin"), &args);
    assert!(seed(&file, &origin).status.success());
    Seeded { origin, bytes, id, fetcher, dir }
}

/// The 32 MiB title from an origin that uploads at 16 MB/s: its 33 chunks take about two
/// seconds, time to act while a fetch of it runs.
fn slow_title(seed_bytes: u64) -> Seeded {
    seeded(TITLE_LEN, seed_bytes, &["--upload-rate", "16MB"])
}

#[test]
fn a_fetch_killed_halfway_resumes_without_refetching_held_chunks() {
    let Seeded { origin, id, fetcher, dir, .. } = &slow_title(5);
    let output = dir.path().join("out.bin");
    let fetch_cmd = || {
        let mut cmd = fillmesh();
        cmd.args(["fetch", id, "--from", &origin.mesh, "--peer", &origin.peer, "--out"])
            .arg(&output)
            .arg("--data")
            .arg(fetcher)
            // Each stored chunk is logged at debug level.
            .env("FILLMESH_LOG", "info,fillmesh_node::fill=debug");
        cmd
    };

    // First run: read its log until 8 chunks are reported stored, then SIGKILL it.
    let before = killed_after_storing(&mut fetch_cmd(), 8);
    assert!(before.len() >= 8, "the first run stored only {before:?}");
    assert!(!output.exists(), "killed before the end, there must be no output yet");

    // Second run: resumes from the store.
    let out = fetch_cmd().output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    let after: Vec<u32> = log.lines().filter_map(stored_chunk).collect();
    let held_at_start: u32 = log
        .lines()
        .find(|l| l.contains("fetch starting"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("already_held=")))
        .and_then(|n| n.parse().ok())
        .expect("already_held in the log");
    for i in &before {
        assert!(!after.contains(i), "chunk {i} was reported stored before the kill and fetched again");
    }
    assert!(
        held_at_start as usize >= before.len(),
        "{held_at_start} held at restart, {} reported stored",
        before.len()
    );
    assert_eq!(held_at_start as usize + after.len(), 33, "every chunk fetched exactly once overall");
    assert_eq!(&file_id(&output), id);
}

#[test]
fn a_node_answers_hello_with_its_role_and_refuses_another_protocol_version() {
    use fillmesh_net::{identity, rpc, MeshEndpoint, TlsIdentity, TransportLimits};
    use fillmesh_protocol::messages::{ErrorCode, Hello, MeshRequest, MeshResponse, Role, PROTOCOL_VERSION};

    let dir = tempfile::tempdir().unwrap();
    let key = identity::ephemeral();
    let client_id = identity::peer_id(&key).to_string();
    let origin = origin_trusting(dir.path(), &client_id);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tls = TlsIdentity::new(&key).unwrap();
        let endpoint =
            MeshEndpoint::client("127.0.0.1".parse().unwrap(), tls, TransportLimits::default()).unwrap();
        let conn = endpoint
            .connect_within(
                origin.mesh.parse().unwrap(),
                origin.peer.parse().unwrap(),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        let timeout = Duration::from_secs(10);
        let ours = MeshRequest::Hello(Hello::ours(Role::Appliance));
        match rpc::call::<_, MeshResponse>(&conn, &ours, timeout).await.unwrap() {
            MeshResponse::Hello(h) => assert_eq!((h.version, h.role), (PROTOCOL_VERSION, Role::Origin)),
            other => panic!("expected a hello, got {other:?}"),
        }
        let future =
            MeshRequest::Hello(Hello { version: PROTOCOL_VERSION + 1, ..Hello::ours(Role::Appliance) });
        match rpc::call::<_, MeshResponse>(&conn, &future, timeout).await.unwrap() {
            MeshResponse::Error(e) => assert_eq!(e.code, ErrorCode::VersionMismatch, "{}", e.message),
            other => panic!("expected a version mismatch, got {other:?}"),
        }
        endpoint.close();
    });
}

#[test]
fn a_fetch_to_standard_output_writes_the_title_there_and_its_report_to_standard_error() {
    let len = (3 << 20) + 5;
    let Seeded { origin, id, fetcher, .. } = &seeded(len, 4, &[]);
    let out = fillmesh()
        .args(["fetch", id, "--from", &origin.mesh, "--peer", &origin.peer, "--out", "-", "--data"])
        .arg(fetcher)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(out.stdout.len(), len, "{stderr}");
    assert_eq!(blake3::hash(&out.stdout).to_hex().as_str(), id);
    assert!(stderr.contains(&format!("fetched {id}: 4 chunks")), "{stderr}");
}

/// Names in `dir`, sorted.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A tmpfs directory on another filesystem than `than`, when the machine has one (`/dev/shm`).
fn other_filesystem(than: &std::path::Path) -> Option<tempfile::TempDir> {
    use std::os::unix::fs::MetadataExt;
    let shm = std::path::Path::new("/dev/shm");
    let (a, b) = (std::fs::metadata(shm).ok()?, std::fs::metadata(than).ok()?);
    (a.dev() != b.dev()).then(|| tempfile::tempdir_in(shm).ok()).flatten()
}

#[test]
fn a_fetch_writes_out_once_on_its_own_filesystem_and_copies_to_another() {
    use std::os::unix::fs::MetadataExt;
    let Seeded { origin, id, fetcher, dir, .. } = &seeded((5 << 20) + 77, 6, &[]);
    let fetch = |out: &std::path::Path, keep: &str| {
        let out = fillmesh()
            .args(["fetch", id, "--from", &origin.mesh, "--peer", &origin.peer, "--out"])
            .arg(out)
            .arg(keep)
            .arg(fetcher)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // No store: the chunks land in the output file itself; nothing else is left beside it.
    let alone = dir.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    let log = fetch(&alone.join("out.bin"), "--identity");
    assert!(log.contains("written in place"), "{log}");
    assert_eq!(&file_id(&alone.join("out.bin")), id);
    assert_eq!(names_in(&alone), ["out.bin"]);
    assert!(!fetcher.join("data").exists(), "--identity keeps no chunks");

    // A store on the same filesystem: --out is a second name of its data file.
    let linked = dir.path().join("linked.bin");
    let log = fetch(&linked, "--data");
    assert!(log.contains("linked into place"), "{log}");
    assert_eq!(&file_id(&linked), id);
    assert_eq!(
        std::fs::metadata(&linked).unwrap().nlink(),
        2,
        "the store's data file and --out are one file"
    );

    // Another filesystem: the bytes are copied there, whole, from the store or straight in.
    let Some(tmpfs) = other_filesystem(dir.path()) else {
        eprintln!("no tmpfs on another filesystem here: checked one filesystem only");
        return;
    };
    let copied = tmpfs.path().join("copied.bin");
    let log = fetch(&copied, "--data");
    assert!(log.contains("copied into place"), "{log}");
    assert_eq!(&file_id(&copied), id);
    let direct = tmpfs.path().join("direct.bin");
    fetch(&direct, "--identity");
    assert_eq!(&file_id(&direct), id);
    assert_eq!(names_in(tmpfs.path()), ["copied.bin", "direct.bin"]);
}

#[test]
fn an_existing_out_is_replaced_only_by_a_whole_verified_title() {
    let Seeded { origin, id, fetcher, dir, .. } = &seeded((2 << 20) + 3, 7, &[]);
    let outdir = dir.path().join("outdir");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("out.bin");
    std::fs::write(&out, b"the previous version").unwrap();
    let fetch = |title: &str| {
        fillmesh()
            .args(["fetch", title, "--from", &origin.mesh, "--peer", &origin.peer, "--out"])
            .arg(&out)
            .arg("--identity")
            .arg(fetcher)
            .output()
            .unwrap()
    };

    // A title the source does not have: the fetch fails and --out is as it was.
    let unknown = "ab".repeat(32);
    let failed = fetch(&unknown);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("manifest"), "{failed:?}");
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous version");
    assert_eq!(names_in(&outdir), ["out.bin"]);

    let done = fetch(id);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(&file_id(&out), id);
    assert_eq!(names_in(&outdir), ["out.bin"]);
}

#[test]
fn a_fetch_killed_halfway_without_a_store_leaves_nothing_behind() {
    let Seeded { origin, id, fetcher, dir, .. } = &slow_title(8);
    let outdir = dir.path().join("outdir");
    std::fs::create_dir(&outdir).unwrap();
    let mut child = ChildGuard(
        fillmesh()
            .args(["fetch", id, "--from", &origin.mesh, "--peer", &origin.peer, "--out"])
            .arg(outdir.join("out.bin"))
            .arg("--identity")
            .arg(fetcher)
            .env("FILLMESH_LOG", "info,fillmesh_node::fill=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let stored =
        BufReader::new(stderr).lines().map_while(Result::ok).filter_map(|l| stored_chunk(&l)).take(8).count();
    assert_eq!(stored, 8, "the fetch ended before 8 chunks were stored");
    child.kill();
    assert!(names_in(&outdir).is_empty(), "left behind after SIGKILL: {:?}", names_in(&outdir));
}

#[test]
fn a_fetch_to_a_pipe_streams_the_title_while_it_is_still_fetching() {
    use std::io::Read;
    // About two seconds for the whole title, so its first chunk is out long before.
    let Seeded { origin, bytes, id, fetcher, .. } = &slow_title(9);
    let mut child = ChildGuard(
        fillmesh()
            .args(["fetch", id, "--from", &origin.mesh, "--peer", &origin.peer, "--out", "-", "--identity"])
            .arg(fetcher)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdout = child.0.stdout.take().unwrap();
    let mut first = vec![0u8; 1 << 20];
    stdout.read_exact(&mut first).unwrap();
    assert!(first == bytes[..1 << 20], "the first chunk differs");
    assert!(child.0.try_wait().unwrap().is_none(), "the fetch had ended before its first chunk was read");
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    assert!(child.0.wait().unwrap().success());
    assert!(rest == bytes[1 << 20..], "the rest differs ({} bytes)", rest.len());
}

/// The chunks of `id` held in the store at `dir` (no node may have it open).
fn held_chunks(dir: &std::path::Path, id: &str) -> std::collections::BTreeSet<u32> {
    let store = fillmesh_node::store::Store::open(dir).unwrap();
    store.held(&id.parse().unwrap()).map(|h| h.iter().collect()).unwrap_or_default()
}

#[test]
fn a_fetch_asks_a_partial_source_only_for_what_it_holds_and_completes_with_another() {
    // The second fetcher's identity first: the origin is started trusting it too.
    let other = tempfile::tempdir().unwrap();
    let second = other.path().join("second");
    let second_id = print_id(&second);
    let Seeded { origin, id, fetcher: partial, dir, .. } =
        &seeded(TITLE_LEN, 12, &["--upload-rate", "16MB", "--trust", &second_id]);
    let id = id.as_str();

    // A store with part of the title: a fetch killed once it stored 8 chunks or more.
    killed_after_storing(
        fillmesh()
            .args(["fetch", id, "--from", &origin.mesh, "--peer", &origin.peer, "--out"])
            .arg(dir.path().join("unused.bin"))
            .arg("--data")
            .arg(partial)
            .env("FILLMESH_LOG", "info,fillmesh_node::fill=debug"),
        8,
    );
    let held = held_chunks(partial, id);
    assert!(held.len() >= 8 && held.len() < 33, "the partial store holds {}", held.len());

    // That store served by a node: a fetch from it alone gets exactly what it holds, asks
    // for nothing else (its held bitmap says what it has), and fails naming what is missing.
    let source = NodeProcess::start(partial, &["--listen", "127.0.0.1:0", "--trust", &second_id]);
    let output = dir.path().join("out.bin");
    let fetch_from = |sources: &[(&str, &str)]| {
        let mut cmd = fillmesh();
        cmd.args(["fetch", id]);
        for (mesh, peer) in sources {
            cmd.args(["--from", mesh, "--peer", peer]);
        }
        cmd.arg("--out").arg(&output).arg("--data").arg(&second).output().unwrap()
    };
    let out = fetch_from(&[(&source.mesh, &source.peer)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    let missing = 33 - held.len();
    assert!(stderr.contains(&format!("incomplete: {missing} of 33 chunks could not be fetched")), "{stderr}");
    let line = stdout.lines().find(|l| l.contains(&source.peer)).unwrap();
    assert!(line.contains(&format!(": {} chunks", held.len())) && line.contains(" 0 failures"), "{line}");
    assert!(!output.exists(), "an incomplete fetch writes no output");
    drop(source);
    assert_eq!(held_chunks(&second, id), held, "what the source held, nothing else");

    // With the origin as well, the fetch resumes and completes, each chunk fetched once.
    let source = NodeProcess::start(partial, &["--listen", "127.0.0.1:0", "--trust", &second_id]);
    let out = fetch_from(&[(&source.mesh, &source.peer), (&origin.mesh, &origin.peer)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(file_id(&output), id);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("fetched {id}: {missing} chunks")), "{stdout}");
}
