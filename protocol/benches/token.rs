//! The cost of a playback token on each side, in µs per operation (medians of runs of many):
//! the tracker's signature (one per steering answer), an appliance's full check (decode, then
//! Ed25519 verify) and its parts. `cargo bench -p fillmesh-protocol --bench token [-- RUNS]`.
//! An appliance checks a token once and keeps the verdict (see the node's serving code, and
//! the cached verdict's cost in the serve benchmark), so the full check is paid once per
//! token and connection-independent, the signature once per answer.

use std::hint::black_box;
use std::time::Instant;

use fillmesh_protocol::token::{Decoded, KeySet, SigningKey};
use fillmesh_protocol::{IpPrefix, TitleId};

/// Operations per timed run.
const OPS: u32 = 2000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// µs per call of `f`: the median of `runs` runs of [`OPS`] calls, after one of warm-up.
fn micros<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    let mut run = || {
        let start = Instant::now();
        for _ in 0..OPS {
            black_box(f());
        }
        start.elapsed().as_secs_f64() * 1e6 / f64::from(OPS)
    };
    run();
    median((0..runs).map(|_| run()).collect())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(9)
        .max(1);
    let key = SigningKey::from_seed(&[7; 32])?;
    // A fleet's key set: the signer among a few others, as after rotations.
    let others = (1..4u8)
        .map(|i| SigningKey::from_seed(&[i; 32]).map(|k| k.public()))
        .collect::<Result<Vec<_>, _>>()?;
    let keys = KeySet::new(others.into_iter().chain([key.public()]));
    let title = TitleId::of(b"fillmesh token bench");
    let prefix: IpPrefix = "192.0.2.0/24".parse()?;
    let expires = 4_000_000_000;
    let now = 1_800_000_000;
    let token = key.sign(title, expires, Some(prefix))?;
    keys.verify(&token, now)?;

    println!(
        "{runs} runs of {OPS} operations, medians; token of {} characters, 4 keys in the set",
        token.len()
    );
    let sign = micros(runs, || key.sign(title, expires, Some(prefix)));
    println!("sign (tracker, one per steering answer)      {sign:>7.2} µs");
    let check = micros(runs, || keys.verify(&token, now));
    println!("full check: decode + Ed25519 verify          {check:>7.2} µs");
    let decode = micros(runs, || Decoded::from_text(&token));
    println!("  of which decode (base64url, layout)        {decode:>7.2} µs");
    let decoded = Decoded::from_text(&token)?;
    let verify = micros(runs, || keys.verify_decoded(&decoded));
    println!("  of which verify (Ed25519)                  {verify:>7.2} µs");
    Ok(())
}
