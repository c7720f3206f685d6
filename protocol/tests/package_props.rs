//! Property tests of packages: a package's id is the BLAKE3 of the listing `b3sum` prints for
//! its files, every chunk of every file verifies against the manifest where the data file puts
//! it, the manifest survives the wire, and any altered byte, chaining value, path or length is
//! caught.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use fillmesh_protocol::package::{self, parse_listing};
use fillmesh_protocol::{ChunkSize, Manifest, PackageBuilder, TitleId, VerifyError};
use proptest::prelude::*;

mod common;
use common::bytes;

/// 1 to 12 files of 0 to ~5 chunks each, at 1 KiB or 4 KiB chunks, with distinct sorted paths.
fn package() -> impl Strategy<Value = (ChunkSize, Vec<(String, Vec<u8>)>)> {
    (
        prop_oneof![Just(1024u64), Just(4096)],
        prop::collection::btree_map("[a-z]{1,3}(/[a-z0-9_.]{1,6}){0,2}", (0usize..5000, any::<u64>()), 1..12),
    )
        .prop_map(|(cs, files)| {
            let files: Vec<(String, Vec<u8>)> =
                files.into_iter().map(|(p, (len, seed))| (p, bytes(len, seed))).collect();
            (ChunkSize::new(cs).unwrap(), files)
        })
        .prop_filter("paths must be allowed", |(_, files)| {
            files.iter().all(|(p, _)| package::check_path(p).is_ok())
        })
}

/// Builds the manifest, feeding each file in two pieces, and the data file the way a node lays
/// it out (each file at a chunk boundary).
fn build(cs: ChunkSize, files: &[(String, Vec<u8>)]) -> (TitleId, Manifest, Vec<u8>) {
    let mut b = PackageBuilder::new(cs);
    let mut data = Vec::new();
    for (path, body) in files {
        b.start_file(path).unwrap();
        let at = b.data_offset() as usize;
        data.resize(at, 0);
        let (x, y) = body.split_at(body.len() / 2);
        b.update(x).unwrap();
        b.update(y).unwrap();
        data.extend_from_slice(body);
        b.finish_file().unwrap();
    }
    let (id, m) = b.finish().unwrap();
    (id, m, data)
}

fn chunk<'a>(m: &Manifest, data: &'a [u8], i: u32) -> &'a [u8] {
    let start = m.chunk_offset(i) as usize;
    &data[start..start + m.chunk_len(i).unwrap() as usize]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_id_is_the_hash_of_what_b3sum_prints((cs, files) in package()) {
        let (id, m, data) = build(cs, &files);
        let b3sum: String = files.iter().map(|(p, body)| format!("{}  {p}\n", TitleId::of(body))).collect();
        prop_assert_eq!(id, TitleId::of(b3sum.as_bytes()));
        prop_assert_eq!(m.listing().unwrap(), b3sum.clone());
        prop_assert_eq!(parse_listing(&b3sum, Some(&id)).unwrap().len(), files.len());
        prop_assert!(m.verify(&id).is_ok());
        prop_assert_eq!(m.len(), files.iter().map(|(_, b)| b.len() as u64).sum::<u64>());
        prop_assert_eq!(m.data_len(), data.len() as u64);
        for i in 0..m.chunk_count() {
            prop_assert!(m.verify_chunk(i, chunk(&m, &data, i)).is_ok());
        }
        // Every file's bytes are where its chunks say.
        for (k, (path, body)) in files.iter().enumerate() {
            let (found, f) = m.file(path).unwrap();
            prop_assert_eq!(found, k);
            prop_assert_eq!(f.len, body.len() as u64);
            let r = m.file_chunks(k);
            let start = r.start as usize * cs.bytes() as usize;
            prop_assert_eq!(&data[start..start + body.len()], &body[..]);
        }
        let shape = m.shape();
        prop_assert_eq!(shape.chunk_count(), m.chunk_count());
        for i in 0..=m.chunk_count() {
            prop_assert_eq!(shape.chunk_len(i), m.chunk_len(i));
        }
    }

    #[test]
    fn the_manifest_survives_the_wire((cs, files) in package()) {
        let (id, m, _) = build(cs, &files);
        let wire = postcard::to_allocvec(&m).unwrap();
        let back: Manifest = postcard::from_bytes(&wire).unwrap();
        prop_assert!(back.verify(&id).is_ok());
        prop_assert_eq!(back, m);
    }

    #[test]
    fn a_flipped_bit_in_a_chunk_fails((cs, files) in package(), pick in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (_, m, data) = build(cs, &files);
        prop_assume!(m.chunk_count() > 0);
        let i = pick.index(m.chunk_count() as usize) as u32;
        let mut bad = chunk(&m, &data, i).to_vec();
        let at = bit as usize % bad.len();
        bad[at] ^= 1 << bit;
        prop_assert_eq!(m.verify_chunk(i, &bad), Err(VerifyError::ChunkHash { index: i }));
    }

    #[test]
    fn a_chunk_of_another_file_fails((cs, files) in package()) {
        let (_, m, data) = build(cs, &files);
        // Chunk i's bytes offered as chunk j, where they differ.
        for i in 0..m.chunk_count() {
            for j in 0..m.chunk_count() {
                if i != j && chunk(&m, &data, i) != chunk(&m, &data, j) {
                    prop_assert!(m.verify_chunk(j, chunk(&m, &data, i)).is_err());
                }
            }
        }
    }

    #[test]
    fn an_altered_manifest_is_not_the_package((cs, files) in package(), pick in any::<prop::sample::Index>(), byte in any::<prop::sample::Index>()) {
        let (id, m, _) = build(cs, &files);
        let mut wire = postcard::to_allocvec(&m).unwrap();
        let at = byte.index(wire.len());
        wire[at] ^= 1 << (pick.index(8) as u8);
        // Either it no longer parses, or it parses to a manifest that does not verify, or the
        // flip hit nothing the manifest binds (it must then be the same manifest).
        if let Ok(altered) = postcard::from_bytes::<Manifest>(&wire) {
            if altered.verify(&id).is_ok() {
                prop_assert_eq!(altered.listing(), m.listing());
                prop_assert_eq!(altered.chaining_values(), m.chaining_values());
            }
        }
    }
}

#[test]
fn packages_break_no_rule() {
    let cs = ChunkSize::new(1024).unwrap();
    let mut b = PackageBuilder::new(cs);
    b.start_file("b").unwrap();
    b.finish_file().unwrap();
    assert!(b.start_file("a").is_err(), "out of order");
    assert!(b.start_file("b").is_err(), "repeated");
    assert!(b.start_file("../x").is_err(), "parent");
    assert!(b.start_file("/x").is_err(), "absolute");
    assert!(PackageBuilder::new(cs).finish().is_err(), "no file");
}
