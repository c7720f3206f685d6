//! The decoder's memory follows the bytes that arrived, never the lengths a peer claims: a
//! counting allocator measures the peak while decoding arbitrary and hostile inputs.
//!
//! One `#[test]` only: the allocator counts for the whole process, so nothing may run beside it.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use fillmesh_protocol::frame::{decode_body, decode_frame, Message};
use fillmesh_protocol::messages::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(now, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated beyond what was live before `f` ran.
fn peak_of(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    f();
    PEAK.load(Relaxed) - base
}

/// What decoding `input` may allocate: a small multiple of its size (decoded structs are
/// larger than their wire form) plus a constant; never the bound of a claimed length.
fn allowance(input: usize) -> usize {
    32 * input + 4096
}

fn check<M: Message>(input: &[u8]) -> Result<(), TestCaseError> {
    let body = peak_of(|| drop(decode_body::<M>(input)));
    prop_assert!(
        body <= allowance(input.len()),
        "{}: {} bytes allocated for {} input bytes",
        M::NAME,
        body,
        input.len()
    );
    prop_assert!(body <= M::MAX_BODY.max(allowance(0)));
    let framed = peak_of(|| drop(decode_frame::<M>(input)));
    prop_assert!(
        framed <= allowance(input.len()),
        "{}: {} bytes allocated for a {}-byte frame",
        M::NAME,
        framed,
        input.len()
    );
    Ok(())
}

fn check_all(input: &[u8]) -> Result<(), TestCaseError> {
    check::<MeshRequest>(input)?;
    check::<MeshResponse>(input)?;
    check::<TrackerRequest>(input)?;
    check::<TrackerResponse>(input)
}

/// A postcard varint.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[test]
fn decoding_allocates_in_proportion_to_the_input() {
    let mut runner = TestRunner::new(Config { cases: 2000, failure_persistence: None, ..Config::default() });
    runner.run(&proptest::collection::vec(any::<u8>(), 0..2048), |bytes| check_all(&bytes)).unwrap();

    // Hostile inputs: tiny frames that claim long sequences (element counts just under and
    // far over each field's limit, and absurd ones) with no elements behind them.
    // A variant's tag is its position: take the catalog's from an encoded one.
    let catalog_tag = postcard::to_allocvec(&TrackerResponse::Catalog { titles: Vec::new() }).unwrap()[0];
    for claim in [60u64, 63, 64, 1000, 8191, 8192, 8193, 1 << 20, 1 << 31, u64::MAX >> 1] {
        let mut catalog = vec![catalog_tag]; // TrackerResponse::Catalog
        catalog.extend(varint(claim));
        let mut held = vec![3u8]; // MeshResponse::Held
        held.extend([7u8; 32]);
        held.extend(varint(claim.saturating_mul(8)));
        held.extend(varint(claim));
        let mut manifest = vec![1u8]; // MeshResponse::Manifest
        manifest.extend([7u8; 32]);
        manifest.extend(varint(claim.saturating_mul(1024)));
        manifest.extend(varint(1024));
        manifest.extend(varint(claim));
        let mut register = vec![1u8, 0, 0, 127, 0, 0, 1, 1, 1, b's', 1, b'r']; // Register
        register.extend(varint(claim));
        for mut input in [catalog, held, manifest, register] {
            check_all(&input).unwrap();
            // Padding behind the claim: a decoder that preallocates min(claim, bytes left)
            // elements would still reserve many times the input.
            input.extend([0u8; 2048]);
            check_all(&input).unwrap();
            let mut framed = (input.len() as u32).to_be_bytes().to_vec();
            framed.extend(&input);
            check_all(&framed).unwrap();
        }
    }
}
