//! A full disk is reported as such and leaves the index consistent: the chunks stored before
//! it stay held, the one that did not fit is not. Needs root (it mounts a 2 MiB tmpfs), which
//! CI has; elsewhere it says so and does nothing.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::Command;

use bytes::Bytes;
use fillmesh_node::store::{Store, StoreError, VerifiedChunk};
use fillmesh_protocol::{ChunkSize, Manifest};

struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_loses_no_held_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let mounted =
        Command::new("mount").args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"]).arg(dir.path()).status();
    if !matches!(mounted, Ok(s) if s.success()) {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let _mount = Mount(dir.path().to_path_buf());
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    let cs = ChunkSize::new(256 << 10).unwrap();
    let (id, manifest) = Manifest::from_bytes(&data, cs).unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.add_title(id, "big", manifest.clone()).unwrap();

    let mut stored = Vec::new();
    let mut full = None;
    for i in 0..manifest.chunk_count() {
        let start = manifest.chunk_offset(i) as usize;
        let bytes = Bytes::copy_from_slice(&data[start..start + cs.get() as usize]);
        match store.put_chunk(&VerifiedChunk::verify(id, &manifest, i, bytes).unwrap()) {
            Ok(_) => stored.push(i),
            Err(e) => {
                full = Some((i, e));
                break;
            }
        }
    }
    let (failed, err) = full.expect("a 4 MiB title cannot fit on a 2 MiB disk");
    eprintln!("chunk {failed}: {err}");
    assert!(matches!(err, StoreError::DiskFull { .. } | StoreError::Index(_)), "{err}");
    assert!(err.to_string().contains("full") || err.to_string().contains("space"), "{err}");
    let held: Vec<u32> = store.held(&id).unwrap().iter().collect();
    assert_eq!(held, stored, "exactly the chunks stored before the disk filled are held");
    assert!(!held.contains(&failed));
    for &i in &held {
        assert!(store.read_chunk(&id, i).is_ok());
    }
}
