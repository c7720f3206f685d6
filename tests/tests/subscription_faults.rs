//! Parents that break the subscription's rules, with real processes: one that advertises
//! chunks it does not serve, one that floods HAVEs, one that floods keepalives, one that
//! sends a bitmap longer than the title. Each is dropped by the appliances it is a parent of, reported, and harms no one:
//! every honest appliance ends with the whole title, verified.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use fillmesh_tests::doubles::{Lie, LyingNode};
use fillmesh_tests::mesh::Mesh;

/// 32 chunks; two honest appliances in site s0 and the liar in site `liars` of the same
/// region. The liar states ten times their upload, so the tracker's layout makes it a parent
/// of both and gives it most of the title to bring from the origin.
fn a_lying_parent_is_dropped_and_harms_no_one(lie: Lie, reason: &str) {
    let mesh = Mesh::start_with_spares("mesh", "16MB", 2, 32 << 20, 1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut config = mesh.spare_node(0, "127.0.0.60:0", "127.0.60.0/24");
    config.upload_rate = Some(10_000_000_000);
    let liar = LyingNode::start(&rt, config, lie);
    mesh.wait_own_complete(Duration::from_secs(180));
    mesh.assert_bytes();
    let logs: Vec<String> = mesh.appliances.iter().map(|(_, a)| a.log()).collect();
    assert!(
        logs.iter().any(|l| l.contains("parent dropped") && l.contains(reason)),
        "no appliance dropped the liar for {reason:?}:\n{}",
        logs.join("\n----\n")
    );
    liar.stop(&rt);
}

#[test]
fn a_parent_that_advertises_chunks_it_does_not_serve_is_dropped() {
    a_lying_parent_is_dropped_and_harms_no_one(Lie::AdvertisesAll, "advertised chunks it did not serve");
}

#[test]
fn a_parent_that_floods_haves_is_dropped() {
    a_lying_parent_is_dropped_and_harms_no_one(Lie::FloodsHaves, "sent more HAVEs than the title has chunks");
}

#[test]
fn a_parent_that_floods_keepalives_is_dropped() {
    a_lying_parent_is_dropped_and_harms_no_one(Lie::FloodsKeepalives, "keepalives in");
}

#[test]
fn a_parent_that_sends_an_oversized_bitmap_is_dropped() {
    a_lying_parent_is_dropped_and_harms_no_one(Lie::OversizedBitmap, "sent a held bitmap of 33 chunks");
}
