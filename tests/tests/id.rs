//! The `fillmesh id` process agrees with the protocol crate's manifests on a multi-chunk file.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::Command;

use fillmesh_protocol::{ChunkSize, Manifest};
use fillmesh_tests::fillmesh_bin;

#[test]
fn cli_id_equals_the_manifest_root_of_a_multi_chunk_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("title.bin");
    let data: Vec<u8> =
        (0..3 * (1 << 20) + 12345u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let (root, manifest) = Manifest::from_bytes(&data, ChunkSize::DEFAULT).unwrap();
    assert_eq!(manifest.chunk_count(), 4);
    let out = Command::new(fillmesh_bin()).arg("id").arg(&path).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{root}  {}\n", path.display()));
}
