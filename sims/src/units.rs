//! Sizes ("10GiB", "512MiB", "1GB", "4096") and rates ("1Gbps", "100Mbps", "125MB/s").

use anyhow::{bail, Context};

fn split(s: &str) -> (&str, &str) {
    let s = s.trim();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_')).unwrap_or(s.len());
    (&s[..end], s[end..].trim())
}

fn number(n: &str, what: &str) -> anyhow::Result<f64> {
    let n = n.replace('_', "");
    let v: f64 = n.parse().with_context(|| format!("{what}: {n:?} is not a number"))?;
    if !v.is_finite() || v < 0.0 {
        bail!("{what}: {n:?} is not a non-negative number");
    }
    Ok(v)
}

/// A byte count: a number with an optional unit B, KB/MB/GB/TB (powers of 1000) or
/// KiB/MiB/GiB/TiB (powers of 1024); case-insensitive.
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let (n, unit) = split(s);
    let v = number(n, s)?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0f64.powi(4),
        u => bail!("size {s:?}: unknown unit {u:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"),
    };
    Ok((v * mult).round() as u64)
}

/// A rate in bytes per second: bits per second with bps/Kbps/Mbps/Gbps/Tbps, or bytes per
/// second with B/s, KB/s, MB/s, GB/s, KiB/s, MiB/s, GiB/s. A bare number is bytes per second.
pub fn parse_rate(s: &str) -> anyhow::Result<f64> {
    let (n, unit) = split(s);
    let v = number(n, s)?;
    let u = unit.to_ascii_lowercase();
    let bits = |m: f64| v * m / 8.0;
    Ok(match u.as_str() {
        "bps" | "bit/s" => bits(1.0),
        "kbps" | "kbit/s" => bits(1e3),
        "mbps" | "mbit/s" => bits(1e6),
        "gbps" | "gbit/s" => bits(1e9),
        "tbps" | "tbit/s" => bits(1e12),
        _ => {
            let per = u.strip_suffix("/s").unwrap_or(&u);
            v * match per {
                "" | "b" => 1.0,
                "kb" => 1e3,
                "mb" => 1e6,
                "gb" => 1e9,
                "kib" => 1024.0,
                "mib" => 1024.0 * 1024.0,
                "gib" => 1024.0 * 1024.0 * 1024.0,
                _ => bail!("rate {s:?}: unknown unit {unit:?} (use Mbps, Gbps, MB/s, MiB/s ...)"),
            }
        }
    })
}

/// "1.5 GiB"-style text for reports.
pub fn fmt_size(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if v.fract() == 0.0 {
        format!("{v}{}", units[i])
    } else {
        format!("{v:.2}{}", units[i])
    }
}

/// "1 Gbps"-style text for a rate in bytes per second.
pub fn fmt_rate(bytes_per_sec: f64) -> String {
    let bits = bytes_per_sec * 8.0;
    let (v, u) = if bits >= 1e9 {
        (bits / 1e9, "Gbps")
    } else if bits >= 1e6 {
        (bits / 1e6, "Mbps")
    } else {
        (bits / 1e3, "Kbps")
    };
    format!("{}{u}", (v * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_rates() {
        assert_eq!(parse_size("1GiB").ok(), Some(1 << 30));
        assert_eq!(parse_size("10GiB").ok(), Some(10 << 30));
        assert_eq!(parse_size("512MiB").ok(), Some(512 << 20));
        assert_eq!(parse_size("1 MB").ok(), Some(1_000_000));
        assert_eq!(parse_size("4096").ok(), Some(4096));
        assert!(parse_size("3 parsecs").is_err());
        assert_eq!(parse_rate("1Gbps").ok(), Some(125e6));
        assert_eq!(parse_rate("100 Mbps").ok(), Some(12.5e6));
        assert_eq!(parse_rate("125MB/s").ok(), Some(125e6));
        assert!(parse_rate("fast").is_err());
        assert_eq!(fmt_size(1 << 30), "1GiB");
        assert_eq!(fmt_rate(125e6), "1Gbps");
    }
}
