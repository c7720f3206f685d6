//! Deserializers for variable-length fields that refuse more than a fixed number of elements
//! and never preallocate from a length the peer claims: allocation follows the bytes that
//! actually arrived, so a small frame cannot make a node reserve megabytes.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

/// Preallocate at most this many elements whatever the claimed length.
const PREALLOC: usize = 64;

/// A `Vec<T>` of at most `MAX` elements.
pub(crate) fn vec<'de, D, T, const MAX: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T, const MAX: usize>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for V<T, MAX> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a sequence of at most {MAX} elements")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            if let Some(claimed) = seq.size_hint() {
                if claimed > MAX {
                    return Err(A::Error::invalid_length(claimed, &self));
                }
            }
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(PREALLOC));
            while let Some(item) = seq.next_element()? {
                if out.len() == MAX {
                    return Err(A::Error::invalid_length(MAX + 1, &self));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(V::<T, MAX>(PhantomData))
}

/// A `String` of at most `MAX` bytes.
pub(crate) fn string<'de, D, const MAX: usize>(deserializer: D) -> Result<String, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<const MAX: usize>;
    impl<'v, const MAX: usize> Visitor<'v> for V<MAX> {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a string of at most {MAX} bytes")
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<String, E> {
            if v.len() > MAX {
                return Err(E::invalid_length(v.len(), &self));
            }
            Ok(v.to_owned())
        }
    }
    deserializer.deserialize_str(V::<MAX>)
}
