//! Held deltas as runs: `bitmap::runs` covers exactly the chunks given, in the fewest runs,
//! and `ChunkBitmap::insert_runs` adds exactly them, or nothing when a run is out of range.

use fillmesh_protocol::bitmap::runs;
use fillmesh_protocol::ChunkBitmap;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn runs_cover_exactly_the_chunks_in_the_fewest_runs(chunks in proptest::collection::vec(0u32..5000, 0..300)) {
        let r = runs(&chunks);
        let mut want = chunks.clone();
        want.sort_unstable();
        want.dedup();
        let got: Vec<u32> = r.iter().flat_map(|r| r.clone()).collect();
        prop_assert_eq!(&got, &want);
        // Increasing, non-empty, and never touching (else two runs would be one).
        for w in r.windows(2) {
            prop_assert!(w[0].end < w[1].start);
        }
        prop_assert!(r.iter().all(|r| r.start < r.end));
    }

    #[test]
    fn inserting_runs_adds_exactly_them_or_nothing(len in 1u32..3000, chunks in proptest::collection::vec(0u32..3500, 0..200)) {
        let mut held = ChunkBitmap::new(len).unwrap();
        let r = runs(&chunks);
        let result = held.insert_runs(&r);
        if chunks.iter().any(|&c| c >= len) {
            prop_assert!(result.is_err());
            prop_assert_eq!(held.count(), 0);
        } else {
            prop_assert!(result.is_ok());
            let mut want = chunks.clone();
            want.sort_unstable();
            want.dedup();
            prop_assert_eq!(held.iter().collect::<Vec<_>>(), want);
        }
    }
}
