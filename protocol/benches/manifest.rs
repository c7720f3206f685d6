//! Manifest construction throughput against a plain `blake3::hash` of the same buffer, in the
//! same run. `cargo bench -p fillmesh-protocol --bench manifest [-- SIZE_MIB RUNS]`.

use std::hint::black_box;
use std::io::Cursor;
use std::time::{Duration, Instant};

use fillmesh_protocol::{ChunkSize, Manifest, TitleId};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    // One warm-up run so page faults and frequency ramp-up hit nobody's figure.
    black_box(f());
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                black_box(f());
                start.elapsed()
            })
            .collect(),
    )
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let len = mib << 20;
    // Deterministic, incompressible-looking bytes (xorshift64).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let buf: Vec<u8> = (0..len / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();

    let expected = TitleId::from(blake3::hash(&buf));
    let plain = time(runs, || blake3::hash(&buf));
    println!("buffer: {mib} MiB, {runs} runs, medians");
    println!("blake3::hash (baseline)        {:>8.0} MB/s", mbps(len, plain));
    for chunk in [1u64 << 20, 64 << 10, 4 << 20] {
        let cs = ChunkSize::new(chunk).expect("valid chunk size");
        let (id, _) = Manifest::from_bytes(&buf, cs).expect("manifest");
        assert_eq!(id, expected, "manifest root must equal blake3::hash");
        let from_bytes = time(runs, || Manifest::from_bytes(&buf, cs));
        let from_reader = time(runs, || Manifest::from_reader(Cursor::new(&buf), cs));
        println!(
            "manifest, {:>4} KiB chunks: from_bytes {:>8.0} MB/s (ratio {:.3}), from_reader {:>8.0} MB/s (ratio {:.3})",
            chunk >> 10,
            mbps(len, from_bytes),
            plain.as_secs_f64() / from_bytes.as_secs_f64(),
            mbps(len, from_reader),
            plain.as_secs_f64() / from_reader.as_secs_f64(),
        );
    }
    let (_, m) = Manifest::from_bytes(&buf, ChunkSize::DEFAULT).expect("manifest");
    let verify = time(runs, || m.verify(&expected));
    println!("manifest verify (merge {} CVs): {:?}", m.chunk_count(), verify);
}
