//! The mesh under faults, with real processes: an appliance killed mid-fill, an appliance
//! lying to its peers, garbage on every port, and a small disk that a newer title evicts an
//! older one from.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::Duration;

use fillmesh_net::TlsIdentity;
use fillmesh_net::{MeshEndpoint, TransportLimits};
use fillmesh_node::store::Store;
use fillmesh_protocol::frame;
use fillmesh_protocol::messages::{
    MeshRequest, MeshResponse, Registration, Role, TrackerRequest, TrackerResponse,
};
use fillmesh_protocol::TitleId;
use fillmesh_tests::doubles::{Lie, LyingNode};
use fillmesh_tests::mesh::{start_appliance_with, status, Mesh};
use fillmesh_tests::{file_id, test_bytes, wait_for};

const TITLE_LEN: usize = (24 << 20) + 4321;

#[test]
fn an_appliance_killed_mid_fill_resumes_without_refetching_and_the_others_complete() {
    let mut mesh = Mesh::start("mesh", "8MB", 4, TITLE_LEN);
    let victim_peer = mesh.appliances[0].1.peer.clone();
    wait_for(Duration::from_secs(60), || {
        let held = mesh.appliance_status(&victim_peer)?["held_bytes"].as_u64()?;
        (held >= 4 << 20 && held < TITLE_LEN as u64).then_some(())
    })
    .expect("appliance 0 never got halfway");
    mesh.appliances[0].1.child.kill();
    mesh.wait_complete_count(3, Duration::from_secs(120));

    // What it holds after the crash, straight from its store.
    let title: TitleId = mesh.title.parse().unwrap();
    let dir = mesh.appliances[0].0.clone();
    let held_before: BTreeSet<u32> = {
        let store = Store::open(&dir).unwrap();
        store.held(&title).unwrap().iter().collect()
    };
    assert!(!held_before.is_empty());
    mesh.appliances[0].1 = start_appliance_with(
        &dir,
        0,
        &mesh.tracker,
        &[],
        &[("FILLMESH_LOG", "info,fillmesh_node::fill=debug")],
    );
    mesh.wait_complete(Duration::from_secs(120));
    mesh.assert_bytes();
    let log = mesh.appliances[0].1.log();
    let fetched: Vec<u32> = log
        .lines()
        .filter(|l| l.contains("stored chunk"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("chunk=")))
        .filter_map(|n| n.parse().ok())
        .collect();
    for c in &fetched {
        assert!(!held_before.contains(c), "chunk {c} was held before the crash and fetched again");
    }
    let chunks = TITLE_LEN.div_ceil(1 << 20);
    assert_eq!(held_before.len() + fetched.len(), chunks, "held {held_before:?}, fetched {fetched:?}");
}

#[test]
fn a_lying_appliance_is_reported_excluded_and_harms_no_one() {
    let mesh = Mesh::start_with_spares("mesh", "4MB", 3, TITLE_LEN, 1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // The liar states ten times the others' upload: the tracker's layout then gives it most
    // of the title to bring from the origin and spread, so every honest appliance has it as a
    // parent and asks it for chunks nobody else has yet (else the first to catch it, given
    // the liar's share from the origin, spreads it on, and a quorum of two may never meet it).
    let mut liar_config = mesh.spare_node(0, "127.0.0.60:0", "127.0.60.0/24");
    liar_config.upload_rate = Some(10_000_000_000);
    let liar = LyingNode::start(&rt, liar_config, Lie::ChunkBit);
    // Not a count: the liar is an appliance too, and counting it let the test look at an
    // honest appliance's file before it was whole (a flake seen 3 times in 18 runs).
    mesh.wait_own_complete(Duration::from_secs(180));
    mesh.assert_bytes();
    let s = status(&mesh.tracker).unwrap();
    let liar_status =
        s["appliances"].as_array().unwrap().iter().find(|a| a["site"] == "liars").cloned().unwrap();
    assert_eq!(liar_status["bad"], true, "the liar was not reported: {s}");
    // Excluded from steering, even for clients in its own prefix.
    let steering = mesh.steer("127.0.60.5");
    assert!(steering["targets"].as_array().unwrap().iter().all(|t| t["site"] != "liars"), "{steering}");
    // And a player in its prefix gets the right bytes from someone else.
    let out_file = mesh.dir.path().join("played.bin");
    let out = mesh.play("127.0.60.5", &out_file, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(file_id(&out_file), mesh.title);
    liar.stop(&rt);
}

/// One bidirectional stream: send `bytes`, read whatever comes back (bounded).
async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Vec<u8> {
    let Ok((mut send, mut recv)) = conn.open_bi().await else { return Vec::new() };
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    tokio::time::timeout(Duration::from_secs(15), recv.read_to_end(1 << 20))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

#[test]
fn garbage_on_every_port_gets_errors_and_changes_nothing() {
    let mut mesh = Mesh::start_with_spares("mesh", "64MB", 1, 3 << 20, 1);
    mesh.wait_complete(Duration::from_secs(60));
    let (_, appliance) = &mesh.appliances[0];
    // The token first: steering marks the title wanted, which the status shows.
    let token = mesh.token_path(&mesh.title);
    let before = status(&mesh.tracker).unwrap();

    // Random datagrams at both UDP ports.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let junk = test_bytes(1 << 20, 77);
    for i in 0..400usize {
        let len = 1 + (i * 7919) % 1400;
        let at = (i * 104_729) % (junk.len() - len);
        udp.send_to(&junk[at..at + len], &appliance.mesh).unwrap();
        udp.send_to(&junk[at..at + len], &mesh.tracker.mesh).unwrap();
    }

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let key = fillmesh_net::identity::load_or_create(&mesh.spare[0]).unwrap();
        let endpoint = MeshEndpoint::client(
            "127.0.0.1".parse().unwrap(),
            TlsIdentity::new(&key).unwrap(),
            TransportLimits::default(),
        )
        .unwrap();
        let tracker = endpoint
            .connect(mesh.tracker.mesh.parse().unwrap(), mesh.tracker.peer.parse().unwrap())
            .await
            .unwrap();
        let mut hostile: Vec<Vec<u8>> = vec![
            u32::MAX.to_be_bytes().to_vec(),                        // absurd length
            [&(1u32 << 30).to_be_bytes()[..], &[0u8; 64]].concat(), // oversized, with a body
            [&16u32.to_be_bytes()[..], &[0xffu8; 16]].concat(),     // right length, garbage body
            [&4u32.to_be_bytes()[..], &[9u8, 9, 9, 9]].concat(),    // unknown variant
            vec![0, 0],                                             // a truncated prefix
        ];
        for i in 0..20 {
            hostile.push(test_bytes(1 + i * 97, i as u64));
        }
        for h in &hostile {
            let reply = exchange(&tracker, h).await;
            if let Ok(Some((TrackerResponse::Error(e), _))) = frame::decode_frame::<TrackerResponse>(&reply) {
                assert_eq!(e.code, fillmesh_protocol::messages::ErrorCode::BadRequest, "{e:?}");
            }
        }
        // The tracker still answers properly on the same connection: register, so the
        // appliance will serve this identity as a member, and read the catalog.
        let register = TrackerRequest::Register(Registration {
            role: Role::Tool,
            mesh_addr: "127.0.0.1:9".parse().unwrap(),
            site: "test".into(),
            region: "test".into(),
            prefixes: vec![],
            upload_bps: 1,
            disk_bytes: 0,
            cert_sha256: None,
        });
        let reply = exchange(&tracker, &frame::encode(&register).unwrap()).await;
        assert!(matches!(
            frame::decode_frame::<TrackerResponse>(&reply),
            Ok(Some((TrackerResponse::Registered { .. }, _)))
        ));

        // Wait for the appliance to learn the new member, then throw the same at it.
        let appliance_conn = wait_for_member(&endpoint, &appliance.mesh, &appliance.peer).await;
        for h in &hostile {
            let reply = exchange(&appliance_conn, h).await;
            if let Ok(Some((MeshResponse::Error(e), _))) = frame::decode_frame::<MeshResponse>(&reply) {
                assert_eq!(e.code, fillmesh_protocol::messages::ErrorCode::BadRequest, "{e:?}");
            }
        }
        let title: TitleId = mesh.title.parse().unwrap();
        let reply = exchange(&appliance_conn, &frame::encode(&MeshRequest::Held { title }).unwrap()).await;
        assert!(matches!(
            frame::decode_frame::<MeshResponse>(&reply),
            Ok(Some((MeshResponse::Held { .. }, _)))
        ));
    });

    // Garbage HTTP/3 from a standard client.
    let script = r#"
import sys, warnings
warnings.filterwarnings("ignore")
import niquests
base, title = sys.argv[1], sys.argv[2]
s = niquests.Session(disable_http1=True, disable_http2=True)
codes = []
for method, path, headers in [("POST", "/titles/" + title, {}), ("DELETE", "/titles/" + title, {}),
        ("GET", "/titles/" + "z" * 64, {}), ("GET", "/../../etc/passwd", {}), ("GET", "/" + "a" * 8000, {}),
        ("GET", "/titles/" + title, {"Range": "bytes=" + "9" * 400 + "-"}), ("GET", "/manifests/nope", {}),
        ("GET", "/titles/" + title + "/extra", {})]:
    try:
        codes.append(s.request(method, base + path, headers=headers, verify=False, timeout=10).status_code)
    except Exception as e:
        codes.append(0)
print(" ".join(map(str, codes)))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &format!("https://{}{token}", appliance.mesh), &mesh.title])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let codes = String::from_utf8_lossy(&out.stdout);
    for code in codes.split_whitespace() {
        let code: u16 = code.parse().unwrap();
        assert!(code == 0 || (400..500).contains(&code) || code == 200, "{codes}");
    }

    // Nothing changed but the one registration, and both still serve.
    let after = status(&mesh.tracker).unwrap();
    assert_eq!(before["titles"], after["titles"]);
    let out_file = mesh.dir.path().join("played.bin");
    let out = mesh.play("127.0.11.1", &out_file, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(file_id(&out_file), mesh.title);
    let store_dir = mesh.appliances[0].0.clone();
    mesh.appliances[0].1.child.kill();
    let store = Store::open(&store_dir).unwrap();
    assert_eq!(store.titles().len(), 1, "the appliance stored nothing but the title");
    assert!(store.held(&mesh.title.parse().unwrap()).unwrap().is_full());
}

/// Connects to the appliance until it serves us (it learns members at its next heartbeat).
async fn wait_for_member(endpoint: &MeshEndpoint, addr: &str, peer: &str) -> quinn::Connection {
    for _ in 0..50 {
        let conn = endpoint.connect(addr.parse().unwrap(), peer.parse().unwrap()).await.unwrap();
        let reply =
            exchange(&conn, &frame::encode(&MeshRequest::Held { title: TitleId::of(b"probe") }).unwrap())
                .await;
        if !reply.is_empty() {
            return conn;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the appliance never accepted the registered member");
}

/// A small appliance (a 20 MiB disk, so 18 MiB under the planner's 90% watermark) holds the
/// first 16 MiB title; a second one is published and nobody has asked for either since, so
/// the tracker's planner has it evict the first to fill the second. The planner stays under
/// the watermark, so the store's quota is never hit (what a full store does is covered in
/// node: the store's quota test and tests/disk_full.rs on a real full disk).
#[test]
fn a_newer_title_evicts_an_older_one_from_a_small_appliance() {
    let mesh = Mesh::start_with_spares("mesh", "64MB", 1, 16 << 20, 1);
    mesh.wait_complete(Duration::from_secs(60));
    let small = start_appliance_with(
        &mesh.spare[0],
        2,
        &mesh.tracker,
        &["--disk-quota", "20MiB", "--http", "127.0.0.13:0"],
        &[],
    );
    mesh.wait_complete_count(2, Duration::from_secs(60));
    let first_file = mesh.spare[0].join("data").join(format!("{}.data", mesh.title));
    assert!(first_file.exists(), "{}", first_file.display());
    let second = mesh.dir.path().join("second.mp4");
    std::fs::write(&second, test_bytes(16 << 20, 9)).unwrap();
    let second_id = mesh.seed(&second);
    // No player may ask for the first title until the small appliance holds the second: that
    // would make the first the more recently wanted, which is not to be evicted.
    wait_for(Duration::from_secs(60), || {
        let a = mesh.appliance_status(&small.peer)?;
        let t = fillmesh_tests::mesh::title_status(&mesh.tracker, &second_id)?;
        (a["held_bytes"].as_u64()? == 16 << 20 && t["complete_appliances"].as_u64()? >= 2).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the small appliance never held the second title: {:?}\n{}",
            mesh.appliance_status(&small.peer),
            small.log()
        )
    });
    let log = small.log();
    assert!(log.contains("evicted at the tracker's word"), "{log}");
    assert!(!log.contains("disk quota"), "the planner let the store's quota be reached:\n{log}");
    assert!(!first_file.exists(), "the evicted title's data file is still there");
    let second_file = mesh.spare[0].join("data").join(format!("{second_id}.data"));
    assert_eq!(file_id(&second_file), second_id);
    let (code, metrics) = fillmesh_tests::http(small.http.as_deref().unwrap(), "GET", "/metrics", &[], b"");
    assert_eq!(code, 200);
    assert!(metrics.contains("fillmesh_evicted_titles_total 1\n"), "{metrics}");
    assert!(metrics.contains(&format!("fillmesh_evicted_bytes_total {}\n", 16 << 20)), "{metrics}");
    // A player of the second title in its prefix (appliance 2 serves 127.0.12.0/24) gets it
    // from the small appliance.
    let out_file = mesh.dir.path().join("second-played.mp4");
    let out = mesh.play_title_command(&second_id, "127.0.12.3", &out_file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("served by {}", small.peer)), "{stdout}");
    assert_eq!(file_id(&out_file), second_id);
    // Its metrics: what it verified, what it holds of each title, what players got.
    let (code, metrics) = fillmesh_tests::http(small.http.as_deref().unwrap(), "GET", "/metrics", &[], b"");
    assert_eq!(code, 200);
    let value = |line_start: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line_start} missing:\n{metrics}"))
    };
    assert!(value("fillmesh_chunks_verified_total ") >= 32, "{metrics}");
    assert_eq!(value(&format!("fillmesh_fill_chunks_held{{title=\"{second_id}\"}}")), 16);
    assert!(value("fillmesh_store_held_bytes ") <= 20 << 20);
    assert!(value("fillmesh_player_bytes_total ") >= 16 << 20);
    assert_eq!(value("fillmesh_cache_misses_total{kind=\"health\"} "), 0);
    // Steering for the first title no longer names it, and a player there gets the first
    // title's bytes from the big appliance. (Asking makes the first title the more recently
    // wanted, so the small appliance may swap back afterwards: nothing is checked after.)
    let steering = mesh.steer("127.0.12.3");
    let targets = steering["targets"].as_array().unwrap();
    assert!(!targets.is_empty() && targets.iter().all(|t| t["peer_id"] != small.peer), "{steering}");
    let out_file = mesh.dir.path().join("first-played.mp4");
    let out = mesh.play("127.0.12.3", &out_file, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("served by {}", mesh.appliances[0].1.peer)), "{stdout}");
    assert_eq!(file_id(&out_file), mesh.title);
}
