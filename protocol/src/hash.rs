//! A keyed, seedless-by-default 64-bit mix: the one source of "randomness" the tracker's core
//! and the fleet's ownership rule have, so that ties break differently per seed, per
//! appliance and per chunk, yet identically on every run, in every process.

/// splitmix64's finaliser: a cheap bijection with good avalanche.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Mixes two words into one.
pub fn mix(a: u64, b: u64) -> u64 {
    splitmix(splitmix(a) ^ b)
}

/// A hash of `data` under `seed`.
pub fn bytes(seed: u64, data: &[u8]) -> u64 {
    let mut h = splitmix(seed ^ data.len() as u64);
    for word in data.chunks(8) {
        let mut buf = [0u8; 8];
        buf[..word.len()].copy_from_slice(word);
        h = mix(h, u64::from_le_bytes(buf));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_on_seed_and_every_byte() {
        assert_ne!(bytes(0, b"abc"), bytes(1, b"abc"));
        assert_ne!(bytes(0, b"abc"), bytes(0, b"abd"));
        assert_ne!(bytes(0, b"abc"), bytes(0, b"abc\0"));
        assert_eq!(bytes(7, b"same"), bytes(7, b"same"));
    }
}
