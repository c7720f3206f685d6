//! A file's path in a request (`/titles/<package id>/<path>`): bounded, percent-decoded once,
//! then checked by the package path rules ([`fillmesh_protocol::package::check_path`]) and
//! looked up in the package's manifest. Nothing is ever opened by a path from a request (the
//! bytes come from the title's data file, by the offsets the manifest gives), so a path that
//! escapes the package can name nothing; it is refused all the same, before any lookup.

use fillmesh_protocol::package::MAX_PATH;

/// Bytes a request's path inside a package may take before decoding: every byte of the
/// longest allowed path escaped as `%XX`.
pub(super) const MAX_RAW_PATH: usize = MAX_PATH * 3;

/// Why a request's path cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum DecodeError {
    /// Longer than [`MAX_RAW_PATH`]: it cannot decode to a path a package may hold.
    #[error("a path of {0} bytes, longer than any path in a package")]
    TooLong(usize),
    /// A `%` not followed by two hex digits.
    #[error("a `%` not followed by two hex digits")]
    BadEscape,
    /// The decoded bytes are not UTF-8 (no package path is).
    #[error("the decoded path is not UTF-8")]
    NotUtf8,
}

/// Decodes the percent-escapes of `raw` once (`%252e` is `%2e`, not `.`). `+` stays `+`: it
/// means a space only in a query.
pub(super) fn decode(raw: &str) -> Result<String, DecodeError> {
    if raw.len() > MAX_RAW_PATH {
        return Err(DecodeError::TooLong(raw.len()));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(DecodeError::BadEscape)?;
            let digit = |b: u8| (b as char).to_digit(16).ok_or(DecodeError::BadEscape);
            // Two hex digits: at most 0xff.
            out.push((digit(hex[0])? * 16 + digit(hex[1])?) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fillmesh_protocol::package::check_path;
    use proptest::prelude::*;

    #[test]
    fn escapes_decode_once() {
        assert_eq!(decode("v0/seg_1.m4s").unwrap(), "v0/seg_1.m4s");
        assert_eq!(decode("a%20b%2Fc").unwrap(), "a b/c");
        assert_eq!(decode("%2e%2E").unwrap(), "..");
        assert_eq!(decode("%252e%252e").unwrap(), "%2e%2e");
        assert_eq!(decode("a+b").unwrap(), "a+b");
        assert_eq!(decode("%C3%A9t%C3%A9").unwrap(), "été");
        assert_eq!(decode("").unwrap(), "");
        for bad in ["%", "%2", "a%zz", "%g0", "%+1", "%-1"] {
            assert_eq!(decode(bad), Err(DecodeError::BadEscape), "{bad}");
        }
        for bad in ["%ff", "%C3", "%80abc"] {
            assert_eq!(decode(bad), Err(DecodeError::NotUtf8), "{bad}");
        }
        assert_eq!(decode(&"a".repeat(MAX_RAW_PATH)).unwrap().len(), MAX_RAW_PATH);
        assert_eq!(decode(&"a".repeat(MAX_RAW_PATH + 1)), Err(DecodeError::TooLong(MAX_RAW_PATH + 1)));
    }

    #[test]
    fn every_traversal_form_decodes_to_a_refused_path() {
        for raw in [
            "..",
            "../x",
            "a/../../x",
            "%2e%2e/x",
            "%2E%2E%2Fx",
            ".%2e/x",
            "a%2F..%2F..%2Fx",
            "..%5Cx",
            "a%5C..%5Cx",
            "%2Fetc%2Fpasswd",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a/%2e/b",
            "a%00b",
            "a%0Ab",
            "%0D",
            "a/",
        ] {
            let decoded = decode(raw).unwrap();
            assert!(check_path(&decoded).is_err(), "{raw} decodes to {decoded:?}, which passes");
        }
    }

    /// Every byte escaped, as a client that escapes everything would send it.
    fn escape_all(s: &str) -> String {
        s.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    proptest! {
        #[test]
        fn escaping_then_decoding_gives_the_path_back(path in "\\PC{0,200}") {
            prop_assert_eq!(decode(&escape_all(&path)).unwrap(), path.clone());
            // Unescaped and partly escaped forms decode to the same path.
            if !path.contains('%') {
                prop_assert_eq!(decode(&path).unwrap(), path);
            }
        }

        #[test]
        fn decoding_never_panics_and_never_grows(raw in "(%[0-9a-fA-F]{0,2}|[^%]){0,300}") {
            if let Ok(decoded) = decode(&raw) {
                prop_assert!(decoded.len() <= raw.len());
            }
        }

        #[test]
        fn a_decoded_path_that_passes_the_rules_has_no_parent_or_root(raw in "([./\\\\a%]|%2[eEfF]|%5[cC]){0,40}") {
            if let Ok(decoded) = decode(&raw) {
                if check_path(&decoded).is_ok() {
                    prop_assert!(!decoded.starts_with('/') && !decoded.contains('\\'));
                    prop_assert!(decoded.split('/').all(|c| c != ".." && c != "." && !c.is_empty()));
                }
            }
        }
    }
}
