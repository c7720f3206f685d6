//! Lines for standard output that survive a reader going away.
//!
//! `println!` panics when stdout is a closed pipe (`fillmesh fetch ... | head -1` printed a
//! panic and a backtrace once the fetch was done). A command's report is not worth a crash:
//! a closed pipe drops the line; any other write error is said once on stderr.

use std::io::Write;

/// Writes one line to stdout; see the module doc for what happens when that fails.
pub fn say_line(line: std::fmt::Arguments<'_>) {
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("fillmesh: cannot write to standard output: {e}");
        }
    }
}

/// `println!` for reports: see [`say_line`].
#[macro_export]
macro_rules! say {
    () => { $crate::console::say_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::console::say_line(format_args!($($arg)*)) };
}
