//! Sizes, rates and durations: every unit multiplies exactly, report text parses back to the
//! value it was made from (where the formatter is exact), and no text makes a parser panic.

use std::time::Duration;

use fillmesh_protocol::units::{fmt_rate, fmt_size, parse_duration, parse_rate, parse_size};
use proptest::prelude::*;

/// Every size unit as written (in several cases) and the bytes it stands for.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("B", 1),
    ("k", 1_000),
    ("KB", 1_000),
    ("M", 1_000_000),
    ("mb", 1_000_000),
    ("G", 1_000_000_000),
    ("GB", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("tB", 1_000_000_000_000),
    ("Ki", 1 << 10),
    ("KiB", 1 << 10),
    ("kib", 1 << 10),
    ("Mi", 1 << 20),
    ("MiB", 1 << 20),
    ("Gi", 1 << 30),
    ("GiB", 1 << 30),
    ("Ti", 1 << 40),
    ("TiB", 1 << 40),
];

/// A number written with `_` between some of its digits.
fn with_separators(n: u64, every: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(every) {
            out.push('_');
        }
        out.push(c);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_size_unit_multiplies_exactly(n in prop_oneof![0u64..10_000, any::<u64>()], u in 0..SIZE_UNITS.len(), space in any::<bool>(), every in 1usize..5) {
        let (unit, mult) = SIZE_UNITS[u];
        let gap = if space { " " } else { "" };
        let want = n.checked_mul(mult);
        for text in [format!("{n}{gap}{unit}"), format!("{}{gap}{unit}", with_separators(n, every)), format!("{n}{gap}{unit}/s")] {
            match want {
                Some(bytes) => prop_assert_eq!(parse_size(&text), Ok(bytes), "{}", text),
                None => prop_assert!(parse_size(&text).is_err(), "{} overflows", text),
            }
        }
    }

    #[test]
    fn a_decimal_fraction_of_a_unit_is_exact(n in 0u64..1 << 40, hundredths in 0u64..100, u in 0..SIZE_UNITS.len()) {
        // Rounded to the nearest byte, half up, in integers: an f64 would be off here.
        let (unit, mult) = SIZE_UNITS[u];
        let text = format!("{n}.{hundredths:02}{unit}");
        let want = (u128::from(n) * 100 + u128::from(hundredths)) * u128::from(mult);
        let want = (want + 50) / 100;
        match u64::try_from(want) {
            Ok(bytes) => prop_assert_eq!(parse_size(&text), Ok(bytes), "{}", text),
            Err(_) => prop_assert!(parse_size(&text).is_err(), "{} overflows", text),
        }
    }

    #[test]
    fn report_sizes_parse_back(b in prop_oneof![
        (0u64..1024, 0u32..5).prop_map(|(n, i)| n << (10 * i)),
        0u64..1 << 53,
    ]) {
        // Whole numbers of a unit are exact; two decimals are within half a hundredth of it.
        let text = fmt_size(b);
        let back = parse_size(&text);
        prop_assert!(back.is_ok(), "{} from {}: {:?}", text, b, back);
        let back = back.unwrap_or_default();
        if text.contains('.') {
            let unit = 1u64 << (10 * (b.ilog2() / 10).min(4));
            prop_assert!(back.abs_diff(b) <= unit / 200 + 1, "{} is {} for {}", text, back, b);
        } else {
            prop_assert_eq!(back, b, "{}", text);
        }
    }

    #[test]
    fn report_rates_parse_back((n, k) in prop_oneof![(1u64..1000, 0usize..3), (1u64..1_000_000, Just(2))]) {
        // Whole Kbps, Mbps and Gbps, as the reports print them, are exact.
        let bytes_per_sec = n as f64 * [1e3, 1e6, 1e9][k] / 8.0;
        let text = fmt_rate(bytes_per_sec);
        prop_assert_eq!(parse_rate(&text), Ok(bytes_per_sec), "{}", text);
    }

    #[test]
    fn whole_durations_are_exact(n in 0u64..1 << 32, u in 0usize..4, space in any::<bool>()) {
        let (unit, secs) = [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)][u];
        let gap = if space { " " } else { "" };
        prop_assert_eq!(parse_duration(&format!("{n}{gap}{unit}")), Ok(Duration::from_secs(n * secs)));
        if u == 0 {
            prop_assert_eq!(parse_duration(&n.to_string()), Ok(Duration::from_secs(n)));
        }
    }

    #[test]
    fn no_text_makes_a_parser_panic(s in prop_oneof![
        any::<String>(),
        "[-+]?[0-9._]{0,40}[eE]?[0-9]{0,4} {0,2}[a-zA-Z/]{0,7}",
    ]) {
        let _ = parse_size(&s);
        let _ = parse_duration(&s);
        if let Ok(r) = parse_rate(&s) {
            prop_assert!(r.is_finite() && r >= 0.0, "{} gave {}", s, r);
        }
    }
}
