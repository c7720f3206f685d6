//! Property tests of the content model: manifests agree with BLAKE3 for every shape of
//! title, and any altered chunk, chaining value, length or chunk size is caught.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::Read;

use fillmesh_protocol::{ChainingValue, ChunkSize, Manifest, TitleId};
use proptest::prelude::*;

mod common;
use common::bytes;

/// A chunk size (1 KiB .. 1 MiB) and a length around the interesting boundaries, at most ~4 MiB.
fn shape() -> impl Strategy<Value = (ChunkSize, usize)> {
    (10u32..=20).prop_flat_map(|exp| {
        let cs = 1usize << exp;
        let max_chunks = (4usize << 20) / cs;
        let len = prop_oneof![
            Just(0),
            Just(1),
            Just(1023),
            Just(1024),
            Just(1025),
            Just(cs - 1),
            Just(cs),
            Just(cs + 1),
            (2..=max_chunks.max(2), 0..cs).prop_map(move |(k, tail)| (k - 1) * cs + tail),
            0..(4usize << 20),
        ];
        (Just(ChunkSize::new(cs as u64).unwrap()), len)
    })
}

/// Everything a node checks before using a title: the manifest's shape, its root against the
/// id, and every chunk of `data` as the manifest cuts it.
fn accepts(len: u64, chunk_size: u64, cvs: Vec<ChainingValue>, id: &TitleId, data: &[u8]) -> bool {
    let Ok(cs) = ChunkSize::new(chunk_size) else { return false };
    let Ok(m) = Manifest::new(len, cs, cvs) else { return false };
    if m.verify(id).is_err() {
        return false;
    }
    (0..m.chunk_count()).all(|i| {
        let start = m.chunk_offset(i) as usize;
        let end = start + m.chunk_len(i).unwrap() as usize;
        data.get(start..end).is_some_and(|chunk| m.verify_chunk(i, chunk).is_ok())
    })
}

/// A reader that hands out bytes in uneven pieces, as sockets and pipes do.
struct Jagged<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Jagged<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.step = (self.step * 7 + 13) % 9001 + 1;
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn root_equals_blake3_and_every_chunk_verifies((cs, len) in shape(), seed in any::<u64>()) {
        let data = bytes(len, seed);
        let (id, m) = Manifest::from_bytes(&data, cs).unwrap();
        prop_assert_eq!(id, TitleId::from(blake3::hash(&data)));
        prop_assert_eq!(m.root(), id);
        prop_assert_eq!(m.len(), len as u64);
        prop_assert_eq!(u64::from(m.chunk_count()), cs.chunks_for(len as u64));
        prop_assert!(accepts(m.len(), cs.bytes(), m.chaining_values().to_vec(), &id, &data));
        let (id2, m2) = Manifest::from_reader(Jagged { data: &data, step: seed as usize % 5000 }, cs).unwrap();
        prop_assert_eq!(id2, id);
        prop_assert_eq!(m2, m);
    }

    #[test]
    fn a_flipped_chunk_bit_fails((cs, len) in shape(), seed in any::<u64>(), pick in any::<prop::sample::Index>()) {
        prop_assume!(len > 0);
        let data = bytes(len, seed);
        let (id, m) = Manifest::from_bytes(&data, cs).unwrap();
        let bit = pick.index(len * 8);
        let mut bad = data.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let index = (bit / 8 / cs.get() as usize) as u32;
        let start = m.chunk_offset(index) as usize;
        let end = start + m.chunk_len(index).unwrap() as usize;
        prop_assert!(m.verify_chunk(index, &bad[start..end]).is_err());
        prop_assert!(!accepts(m.len(), cs.bytes(), m.chaining_values().to_vec(), &id, &bad));
    }

    #[test]
    fn a_flipped_chaining_value_bit_fails((cs, len) in shape(), seed in any::<u64>(), pick in any::<prop::sample::Index>()) {
        prop_assume!(len > 0);
        let data = bytes(len, seed);
        let (id, m) = Manifest::from_bytes(&data, cs).unwrap();
        let mut cvs = m.chaining_values().to_vec();
        let bit = pick.index(cvs.len() * 256);
        cvs[bit / 256][(bit % 256) / 8] ^= 1 << (bit % 8);
        let altered = Manifest::new(m.len(), cs, cvs.clone()).unwrap();
        prop_assert!(altered.verify(&id).is_err());
        prop_assert!(!accepts(m.len(), cs.bytes(), cvs, &id, &data));
    }

    #[test]
    fn a_flipped_length_or_chunk_size_bit_fails((cs, len) in shape(), seed in any::<u64>(), bit in 0u32..64) {
        let data = bytes(len, seed);
        let (id, m) = Manifest::from_bytes(&data, cs).unwrap();
        let cvs = m.chaining_values().to_vec();
        prop_assert!(!accepts(m.len() ^ (1 << bit), cs.bytes(), cvs.clone(), &id, &data));
        prop_assert!(!accepts(m.len(), cs.bytes() ^ (1 << bit), cvs, &id, &data));
    }

    #[test]
    fn the_id_of_other_bytes_fails((cs, len) in shape(), seed in any::<u64>()) {
        let data = bytes(len, seed);
        let (_, m) = Manifest::from_bytes(&data, cs).unwrap();
        let other = TitleId::from(blake3::hash(&bytes(len + 1, seed)));
        prop_assert!(m.verify(&other).is_err());
    }
}
