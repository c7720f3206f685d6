//! A lying peer next to an honest origin: the fetch completes with the right bytes, nothing
//! corrupt is stored, and the liar is marked bad. The liar is a test double built from the
//! node library (its store behind a `ChunkSource` that flips bits), never a switch in the
//! release binary.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::sync::Arc;

use fillmesh_net::TlsIdentity;
use fillmesh_net::Trust;
use fillmesh_net::{MeshEndpoint, TransportLimits};
use fillmesh_node::serve::{ServeLimits, Server};
use fillmesh_node::store::Store;
use fillmesh_protocol::messages::Role;
use fillmesh_protocol::{ChunkSize, Manifest, TitleId};
use fillmesh_tests::doubles::{Lie, Lying};
use fillmesh_tests::{file_id, fillmesh, print_id, test_bytes, NodeProcess};

/// Starts a lying node holding the whole title, trusting `fetcher`. Returns its address and id.
fn start_liar(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    data: &[u8],
    fetcher: &str,
    lie: Lie,
) -> (String, String) {
    let store = Store::open(dir).unwrap();
    let (id, manifest) = Manifest::from_bytes(data, ChunkSize::DEFAULT).unwrap();
    let staging = dir.join("import.bin");
    std::fs::write(&staging, data).unwrap();
    store.import_complete(id, "liar", manifest, &staging).unwrap();
    let key = fillmesh_net::identity::ephemeral();
    let tls = TlsIdentity::new(&key).unwrap();
    let peer = tls.peer_id().to_string();
    let _guard = rt.enter();
    let endpoint =
        MeshEndpoint::bind("127.0.0.1:0".parse().unwrap(), tls, TransportLimits::default()).unwrap();
    let addr = endpoint.local_addr().unwrap().to_string();
    let trust = Trust::new([fetcher.parse().unwrap()]);
    let server = Server::new(
        Lying::source(Arc::new(store), lie),
        trust,
        ServeLimits::default(),
        None,
        Role::Appliance,
    );
    rt.spawn(server.run(endpoint));
    (addr, peer)
}

/// Every chunk the store holds verifies against the manifest, read raw from its data file.
fn assert_store_clean(data_dir: &Path, title: &TitleId) -> u32 {
    let store = Store::open(data_dir).unwrap();
    let info = store.info(title).unwrap();
    let raw = std::fs::read(store.data_path(title)).unwrap();
    for i in info.held.iter() {
        let start = info.manifest.chunk_offset(i) as usize;
        let end = start + info.manifest.chunk_len(i).unwrap() as usize;
        assert!(info.manifest.verify_chunk(i, &raw[start..end]).is_ok(), "chunk {i} is held but corrupt");
    }
    info.held.count()
}

#[test]
fn a_lying_peer_is_caught_and_the_fetch_completes_from_the_honest_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = test_bytes((8 << 20) + 4321, 9);
    let file = dir.path().join("title.bin");
    std::fs::write(&file, &data).unwrap();
    let id = file_id(&file);
    let title: TitleId = id.parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    for (n, lie) in [Lie::ChunkBit, Lie::Manifest].into_iter().enumerate() {
        let fetcher = dir.path().join(format!("fetcher-{n}"));
        let fetcher_id = print_id(&fetcher);
        let origin = NodeProcess::start(
            &dir.path().join(format!("origin-{n}")),
            &["--origin", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--trust", &fetcher_id],
        );
        let url = format!("http://{}", origin.http.as_deref().unwrap());
        assert!(fillmesh().arg("seed").arg(&file).args(["--origin", &url]).status().unwrap().success());
        let (liar_addr, liar_peer) =
            start_liar(&rt, &dir.path().join(format!("liar-{n}")), &data, &fetcher_id, lie);

        let output = dir.path().join(format!("out-{n}.bin"));
        // The liar is listed first, so it is asked first.
        let out = fillmesh()
            .args([
                "fetch",
                &id,
                "--from",
                &liar_addr,
                "--peer",
                &liar_peer,
                "--from",
                &origin.mesh,
                "--peer",
                &origin.peer,
            ])
            .arg("--out")
            .arg(&output)
            .arg("--data")
            .arg(&fetcher)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{lie:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(file_id(&output), id, "{lie:?}");
        let liar_line = stdout.lines().find(|l| l.contains(&liar_peer)).unwrap();
        let origin_line = stdout.lines().find(|l| l.contains(&origin.peer)).unwrap();
        assert!(
            liar_line.contains("marked bad") && !liar_line.contains(" 0 corrupt"),
            "{lie:?}: {liar_line}"
        );
        assert!(liar_line.contains(": 0 chunks"), "the liar contributed nothing: {liar_line}");
        assert!(!origin_line.contains("marked bad") && origin_line.contains(": 9 chunks"), "{origin_line}");
        assert_eq!(assert_store_clean(&fetcher, &title), 9, "{lie:?}");
    }
}
