//! `Range` headers (RFC 9110 §14): a single byte range, resolved against a length.

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RangeRequest {
    /// No usable Range header: the whole body (an invalid or multi-range header is ignored,
    /// as the RFC requires of a server that does not support it).
    Full,
    /// Bytes `start..=end`, both within the representation.
    Partial { start: u64, end: u64 },
    /// A valid range that selects nothing in this representation: 416.
    Unsatisfiable,
}

/// Resolves `header` against `len`.
pub(super) fn parse(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(header) = header else { return RangeRequest::Full };
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return RangeRequest::Full };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeRequest::Full };
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) if digits(last) => match last.parse::<u64>() {
            Ok(0) | Err(_) => RangeRequest::Unsatisfiable,
            Ok(_) if len == 0 => RangeRequest::Unsatisfiable,
            Ok(n) => RangeRequest::Partial { start: len.saturating_sub(n), end: len - 1 },
        },
        // bytes=A-: from A to the end.
        (false, true) if digits(first) => match first.parse::<u64>() {
            Ok(a) if a < len => RangeRequest::Partial { start: a, end: len - 1 },
            Ok(_) => RangeRequest::Unsatisfiable,
            Err(_) => RangeRequest::Full,
        },
        // bytes=A-B
        (false, false) if digits(first) && digits(last) => {
            match (first.parse::<u64>(), last.parse::<u64>()) {
                (Ok(a), Ok(b)) if a > b => RangeRequest::Full,
                (Ok(a), Ok(_)) if a >= len => RangeRequest::Unsatisfiable,
                (Ok(a), Ok(b)) => RangeRequest::Partial { start: a, end: b.min(len - 1) },
                _ => RangeRequest::Full,
            }
        }
        _ => RangeRequest::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_forms_of_a_single_range() {
        use RangeRequest::*;
        assert_eq!(parse(None, 100), Full);
        assert_eq!(parse(Some("bytes=0-0"), 100), Partial { start: 0, end: 0 });
        assert_eq!(parse(Some("bytes=99-99"), 100), Partial { start: 99, end: 99 });
        assert_eq!(parse(Some("bytes=90-"), 100), Partial { start: 90, end: 99 });
        assert_eq!(parse(Some("bytes=-10"), 100), Partial { start: 90, end: 99 });
        assert_eq!(parse(Some("bytes=-1000"), 100), Partial { start: 0, end: 99 });
        assert_eq!(parse(Some("bytes=50-1000"), 100), Partial { start: 50, end: 99 });
        assert_eq!(parse(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse(Some("bytes=100-200"), 100), Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-0"), 0), Unsatisfiable);
        // Malformed or unsupported: ignored.
        assert_eq!(parse(Some("bytes=5-2"), 100), Full);
        assert_eq!(parse(Some("bytes=0-1,5-6"), 100), Full);
        assert_eq!(parse(Some("items=0-1"), 100), Full);
        assert_eq!(parse(Some("bytes=x-1"), 100), Full);
        assert_eq!(parse(Some("bytes=-"), 100), Full);
        assert_eq!(parse(Some("bytes=99999999999999999999999-"), 100), Full);
    }

    proptest! {
        #[test]
        fn a_partial_range_is_always_inside_the_body(header in ".{0,40}", len in 0u64..10_000) {
            if let RangeRequest::Partial { start, end } = parse(Some(&header), len) {
                prop_assert!(start <= end && end < len);
            }
        }

        #[test]
        fn well_formed_ranges_resolve_as_the_rfc_says(a in 0u64..2000, b in 0u64..2000, len in 1u64..1000) {
            let got = parse(Some(&format!("bytes={a}-{b}")), len);
            let want = if a > b {
                RangeRequest::Full
            } else if a >= len {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial { start: a, end: b.min(len - 1) }
            };
            prop_assert_eq!(got, want);
        }
    }
}
