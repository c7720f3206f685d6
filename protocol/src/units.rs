//! Sizes, rates and durations as people write them, on the command line and in scenario
//! files, and the short text reports print them as.
//!
//! - A size is a byte count: `4096`, `64KiB`, `1.5G`, `10 MB`, `1_048_576`. Decimal units
//!   (`k`, `M`, `G`, `T`, with or without `B`) are powers of 1000, binary ones (`Ki`, `Mi`,
//!   `Gi`, `Ti`, with or without `B`) powers of 1024. A trailing `/s` is allowed, since the
//!   command line gives byte rates as sizes (`--upload-rate 10MB/s`).
//! - A rate is in bytes per second: a size per second (`125MB/s`, `1GiB/s`, a bare number),
//!   or bits per second (`bps`, `Kbps`, `Mbps`, `Gbps`, `Tbps`, also `Mbit/s`).
//! - A duration is a number of seconds, or a number with a unit: `90s`, `15m`, `1.5h`, `7d`.
//!
//! Units are case-insensitive, spaces may separate the number from its unit, and `_` may
//! separate digits. Nothing negative, not-a-number or too large for its type parses.

use std::fmt;
use std::time::Duration;

/// What a text was meant to be, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// A byte count ([`parse_size`]).
    Size,
    /// Bytes per second ([`parse_rate`]).
    Rate,
    /// A length of time ([`parse_duration`]).
    Duration,
}

impl Quantity {
    fn examples(self) -> &'static str {
        match self {
            Quantity::Size => "64KiB, 10MB or 4096",
            Quantity::Rate => "100Mbps, 10MB/s or 1GiB/s",
            Quantity::Duration => "90s, 15m or 24h",
        }
    }

    fn units(self) -> &'static str {
        match self {
            Quantity::Size => "B, KB, MB, GB, TB, KiB, MiB, GiB or TiB",
            Quantity::Rate => "bps, Kbps, Mbps, Gbps, Tbps, or a size per second such as MB/s or MiB/s",
            Quantity::Duration => "s, m, h or d",
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quantity::Size => "size",
            Quantity::Rate => "rate",
            Quantity::Duration => "duration",
        })
    }
}

/// Why a text is not a size, a rate or a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text does not start with a number (digits, `_` and at most one `.`, after
    /// leading spaces): it is empty, starts with a sign or a letter, or has a second `.`.
    #[error("{input:?} is not a {quantity} such as {}", quantity.examples())]
    Number {
        /// The text as given.
        input: String,
        /// What it was meant to be.
        quantity: Quantity,
    },
    /// The number is followed by a unit the quantity does not have.
    #[error("{input:?}: unknown unit {unit:?} for a {quantity} (use {})", quantity.units())]
    Unit {
        /// The text as given.
        input: String,
        /// Everything after the number, trimmed.
        unit: String,
        /// What it was meant to be.
        quantity: Quantity,
    },
    /// The value does not fit: a size over `u64::MAX` bytes, a number or a rate too large
    /// for a finite `f64`, a duration longer than `Duration` holds.
    #[error("{input:?} is out of range for a {quantity}")]
    Range {
        /// The text as given.
        input: String,
        /// What it was meant to be.
        quantity: Quantity,
    },
}

/// Parses a size into bytes, rounded to the nearest byte (`1.5KiB` is 1536, `0.0005KB` is 1).
/// The arithmetic is exact, in integers: `9007199254740993` is that many bytes (not the
/// nearest `f64`), and every unit multiplies exactly. Fraction digits past the 19th are
/// ignored.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let q = Quantity::Size;
    let (number, unit) = split(s);
    let digits = number.replace('_', "");
    let (whole, fraction) = digits.split_once('.').unwrap_or((&digits, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(UnitError::Number { input: s.to_owned(), quantity: q });
    }
    let lower = unit.to_ascii_lowercase();
    let mult = size_unit(lower.strip_suffix("/s").unwrap_or(&lower)).ok_or_else(|| UnitError::Unit {
        input: s.to_owned(),
        unit: unit.to_owned(),
        quantity: q,
    })?;
    let range = || UnitError::Range { input: s.to_owned(), quantity: q };
    let mut bytes: u128 = 0;
    for d in whole.bytes() {
        bytes = bytes.checked_mul(10).and_then(|b| b.checked_add(u128::from(d - b'0'))).ok_or_else(range)?;
    }
    bytes = bytes.checked_mul(u128::from(mult)).ok_or_else(range)?;
    // At most 19 digits: below 10^19, so the product with a unit (at most 2^40) fits in u128.
    let fraction = &fraction[..fraction.len().min(19)];
    if !fraction.is_empty() {
        let scale = 10u128.pow(fraction.len() as u32);
        let numerator: u128 = fraction.bytes().fold(0, |n, d| n * 10 + u128::from(d - b'0'));
        bytes = bytes.checked_add((numerator * u128::from(mult) + scale / 2) / scale).ok_or_else(range)?;
    }
    u64::try_from(bytes).map_err(|_| range())
}

/// Parses a rate into bytes per second (see the module's grammar). Bits are divided by 8.
pub fn parse_rate(s: &str) -> Result<f64, UnitError> {
    let q = Quantity::Rate;
    let (number, unit) = split(s);
    let v = float(number, s, q)?;
    let lower = unit.to_ascii_lowercase();
    // Bytes per second of one unit; dividing bits by 8 is exact in binary floating point.
    let mult = match lower.as_str() {
        "bps" | "bit/s" => 1.0 / 8.0,
        "kbps" | "kbit/s" => 1e3 / 8.0,
        "mbps" | "mbit/s" => 1e6 / 8.0,
        "gbps" | "gbit/s" => 1e9 / 8.0,
        "tbps" | "tbit/s" => 1e12 / 8.0,
        per => match size_unit(per.strip_suffix("/s").unwrap_or(per)) {
            Some(bytes) => bytes as f64,
            None => return Err(UnitError::Unit { input: s.to_owned(), unit: unit.to_owned(), quantity: q }),
        },
    };
    let rate = v * mult;
    if rate.is_finite() {
        Ok(rate)
    } else {
        Err(UnitError::Range { input: s.to_owned(), quantity: q })
    }
}

/// Parses a duration: seconds, or a number with `s`, `m` (minutes), `h` or `d` (days), also
/// spelt `sec`, `min`, `hour`, `day` and their plurals.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let q = Quantity::Duration;
    let (number, unit) = split(s);
    let v = float(number, s, q)?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        _ => return Err(UnitError::Unit { input: s.to_owned(), unit: unit.to_owned(), quantity: q }),
    };
    Duration::try_from_secs_f64(v * mult).map_err(|_| UnitError::Range { input: s.to_owned(), quantity: q })
}

/// "1.5GiB"-style text of a byte count, for reports: whole numbers of the largest binary
/// unit it reaches exactly, else two decimals.
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

/// "1Gbps"-style text of a rate in bytes per second, in bits, to two decimals at most.
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

/// The number at the front of `s` (digits, `.` and `_`) and the unit after it, both trimmed.
fn split(s: &str) -> (&str, &str) {
    let s = s.trim();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_')).unwrap_or(s.len());
    (&s[..end], s[end..].trim())
}

/// The bytes of a size unit, lower case, without `/s`.
fn size_unit(unit: &str) -> Option<u64> {
    Some(match unit {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return None,
    })
}

/// The number of a rate or a duration (never negative: `split` takes no sign).
fn float(number: &str, input: &str, quantity: Quantity) -> Result<f64, UnitError> {
    let v: f64 = number
        .replace('_', "")
        .parse()
        .map_err(|_| UnitError::Number { input: input.to_owned(), quantity })?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(UnitError::Range { input: input.to_owned(), quantity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64kib"), Ok(64 << 10));
        assert_eq!(parse_size("10MB/s"), Ok(10_000_000));
        assert_eq!(parse_size("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1 MB"), Ok(1_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1_048_576"), Ok(1 << 20));
        assert_eq!(parse_size("2Ki"), Ok(2048));
        assert_eq!(parse_size(".5KiB"), Ok(512));
        assert_eq!(parse_size("5."), Ok(5));
        // Rounded to the nearest byte, exactly (in f64, 1.001 * 1000 is 1000.9999...).
        assert_eq!(parse_size("1.001KB"), Ok(1001));
        assert_eq!(parse_size("1.5"), Ok(2));
        assert_eq!(parse_size("0.4"), Ok(0));
        assert_eq!(parse_size("9007199254740993"), Ok(9_007_199_254_740_993));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert!(matches!(parse_size("18446744073709551616"), Err(UnitError::Range { .. })));
        assert!(matches!(parse_size("16777216TiB"), Err(UnitError::Range { .. })));
        assert!(matches!(parse_size("ten"), Err(UnitError::Number { .. })));
        assert!(matches!(parse_size("5 parsecs"), Err(UnitError::Unit { .. })));
        assert!(matches!(parse_size("3 parsecs"), Err(UnitError::Unit { .. })));
        assert!(matches!(parse_size(""), Err(UnitError::Number { .. })));
        assert!(matches!(parse_size("."), Err(UnitError::Number { .. })));
        assert!(matches!(parse_size("1.2.3"), Err(UnitError::Number { .. })));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("NaN").is_err());
        assert!(parse_size("1e3").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1Gbps"), Ok(125e6));
        assert_eq!(parse_rate("100 Mbps"), Ok(12.5e6));
        assert_eq!(parse_rate("100Mbps"), Ok(12.5e6));
        assert_eq!(parse_rate("50Mbit/s"), Ok(6.25e6));
        assert_eq!(parse_rate("125MB/s"), Ok(125e6));
        assert_eq!(parse_rate("1MiB/s"), Ok(1048576.0));
        assert_eq!(parse_rate("10MB"), Ok(10e6));
        assert_eq!(parse_rate("4096"), Ok(4096.0));
        assert!(matches!(parse_rate("fast"), Err(UnitError::Number { .. })));
        assert!(matches!(parse_rate("5 furlongs/s"), Err(UnitError::Unit { .. })));
        assert!(matches!(parse_rate(&format!("{}Tbps", "9".repeat(400))), Err(UnitError::Range { .. })));
        assert!(parse_rate("-1Mbps").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("inf").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("2 days"), Ok(Duration::from_secs(2 * 86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(matches!(parse_duration("soon"), Err(UnitError::Number { .. })));
        assert!(matches!(parse_duration("3 fortnights"), Err(UnitError::Unit { .. })));
        assert!(matches!(parse_duration(""), Err(UnitError::Number { .. })));
        assert!(parse_duration("1e400h").is_err());
        assert!(matches!(parse_duration("99999999999999999999999d"), Err(UnitError::Range { .. })));
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("NaN").is_err());
    }

    #[test]
    fn report_text() {
        assert_eq!(fmt_size(1 << 30), "1GiB");
        assert_eq!(fmt_size(1536 << 10), "1.50MiB");
        assert_eq!(fmt_size(1000), "1000B");
        assert_eq!(fmt_rate(125e6), "1Gbps");
        assert_eq!(fmt_rate(12.5e6), "100Mbps");
        assert_eq!(fmt_rate(1e3), "8Kbps");
    }

    #[test]
    fn errors_name_the_input_and_the_units() {
        let e = parse_size("5 parsecs").unwrap_err().to_string();
        assert!(e.contains("\"5 parsecs\"") && e.contains("KiB"), "{e}");
        let e = parse_duration("soon").unwrap_err().to_string();
        assert!(e.contains("\"soon\"") && e.contains("90s"), "{e}");
    }
}
