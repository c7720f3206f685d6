//! Pieces of the player load benchmark (`tests/benches/players.rs`) that need no network:
//! the title's content as a function of the offset (so that a client checks every byte it
//! gets without holding the title), and what `/proc` says of a process (CPU seconds, peak and
//! current resident memory, descriptor limit) and of a UDP port (datagrams dropped).

use std::io::Write;
use std::path::Path;

/// The seed of the content: changing it changes every byte.
const SEED: u64 = 0x5eed_f111_3e5b;

/// The 8-byte word at word index `i` of the title (splitmix64 of the index): about 1 ns a
/// word, so a client verifies at several GB/s on one core.
pub fn word(i: u64) -> u64 {
    let mut z = i.wrapping_add(SEED).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The title's byte at `offset`.
pub fn byte_at(offset: u64) -> u8 {
    word(offset / 8).to_le_bytes()[(offset % 8) as usize]
}

/// Whether `data` is the title's bytes from `offset` on.
pub fn matches(offset: u64, data: &[u8]) -> bool {
    let head = (((8 - offset % 8) % 8) as usize).min(data.len());
    let (first, rest) = data.split_at(head);
    if first.iter().zip(offset..).any(|(b, o)| *b != byte_at(o)) {
        return false;
    }
    let mut index = (offset + head as u64) / 8;
    let mut words = rest.chunks_exact(8);
    // No early exit inside the words: the differences are or-ed, which the compiler keeps
    // branch-free.
    let mut diff = 0u64;
    for w in &mut words {
        diff |= u64::from_le_bytes(w.try_into().unwrap_or_default()) ^ word(index);
        index += 1;
    }
    diff == 0 && words.remainder().iter().zip(index * 8..).all(|(b, o)| *b == byte_at(o))
}

/// Writes a title of `len` bytes of this content to `path`, a MiB at a time.
pub fn write_title(path: &Path, len: u64) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < len {
        let n = (len - offset).min(block.len() as u64) as usize;
        for (k, w) in block[..n].chunks_mut(8).enumerate() {
            let bytes = word(offset / 8 + k as u64).to_le_bytes();
            w.copy_from_slice(&bytes[..w.len()]);
        }
        file.write_all(&block[..n])?;
        offset += n as u64;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times.
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of process `pid` (every thread), in seconds; `None` once it is gone.
pub fn cpu_seconds(pid: u32, ticks_per_s: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields after it are counted from its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are the 14th and 15th fields, the 12th and 13th after the name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / ticks_per_s)
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`: peak resident, `VmRSS`: resident), in MB.
pub fn status_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kb: f64 = line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024.0 / 1e6)
}

/// Sets the process's peak resident size (`VmHWM`) back to its current size, so that the
/// next reading is the peak since now (`clear_refs` 5; our own processes, or root). Whether
/// it could.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// The soft and hard limits on open files of process `pid` (`/proc/<pid>/limits`).
pub fn open_files_limit(pid: u32) -> Option<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
}

/// Datagrams dropped on receive by the UDP sockets bound to local `port` (the last column of
/// `/proc/net/udp` and `/proc/net/udp6`, where the port is in hex after the address), summed
/// over them (several with `SO_REUSEPORT`); `None` if no socket has that port.
pub fn udp_drops(port: u16) -> Option<u64> {
    let wanted = format!(":{port:04X}");
    let mut found = None;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(1).is_some_and(|local| local.ends_with(&wanted)) {
                let drops: u64 = fields.last().and_then(|d| d.parse().ok()).unwrap_or(0);
                found = Some(found.unwrap_or(0) + drops);
            }
        }
    }
    found
}

/// The `p` quantile (0..=1) of `v` (sorted here), in the unit of `v` divided by `scale`; NaN
/// when empty.
pub fn quantile(v: &mut [u32], p: f64, scale: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    f64::from(v[((v.len() - 1) as f64 * p).round() as usize]) / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_at_any_offset_and_length() {
        let bytes: Vec<u8> = (0..200u64).map(byte_at).collect();
        for start in 0..20 {
            for end in start..200 {
                assert!(matches(start as u64, &bytes[start..end]));
            }
        }
        let mut bad = bytes.clone();
        bad[77] ^= 1;
        assert!(!matches(3, &bad[3..100]));
        assert!(!matches(77, &bad[77..78]));
        assert!(!matches(4, &bytes[3..50]));
    }

    #[test]
    fn the_written_title_is_the_content() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("t");
        write_title(&path, (3 << 20) + 5).unwrap_or_else(|e| panic!("{e}"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bytes.len(), (3 << 20) + 5);
        assert!(matches(0, &bytes));
    }
}
