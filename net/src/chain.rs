//! An error shown with its causes, where no `anyhow` does it: in log lines and in the
//! reasons a node keeps or sends as text.
//!
//! Each error's own text leaves out the error it wraps (its `source`), so that a chain shown
//! by `anyhow` (`{:#}`, causes joined by ": ") says each cause once. Shown alone (`{e}`) such
//! an error says only its own part: [`Chain`] shows it the way `anyhow` does.

use std::error::Error;
use std::fmt;

/// `e`, then each of its causes in turn, joined by ": ": `Chain(&e)` in a format string.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        // Bounded by the chain's length: each pass takes one step down it.
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read the index")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_once_in_order() {
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(Chain(&e).to_string(), "cannot read the index: disk on fire");
        let leaf = std::io::Error::other("alone");
        assert_eq!(Chain(&leaf).to_string(), "alone");
    }
}
