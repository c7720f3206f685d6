//! The commands of the `fillmesh` binary, one module each: its clap arguments and its `run`.
//! `main.rs` only parses and dispatches. The player client itself is `fillmesh_player`;
//! `play` here is its arguments and its report.

pub mod config;
pub mod demo;
pub mod fetch;
pub mod id;
pub mod keys;
pub mod node;
pub mod play;
pub mod seed;
pub mod sim;
pub mod status;
pub mod testbed;
pub mod tracker;

pub(crate) use fillmesh_player::is_stdout;

/// One line of a command's report: on standard output, or on standard error when the title
/// itself goes to standard output.
pub(crate) fn report(title_on_stdout: bool, line: std::fmt::Arguments<'_>) {
    if title_on_stdout {
        eprintln!("{line}");
    } else {
        fillmesh_net::console::say_line(line);
    }
}

/// The directory a command that starts nodes keeps their data and logs in: `keep` (created
/// if missing), or a fresh temporary one named `prefix...`, removed when the returned guard
/// is dropped.
pub(crate) fn work_dir(
    keep: Option<&std::path::Path>,
    prefix: &str,
) -> anyhow::Result<(Option<tempfile::TempDir>, std::path::PathBuf)> {
    match keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            Ok((None, d.to_path_buf()))
        }
        None => {
            let temp = tempfile::Builder::new().prefix(prefix).tempdir()?;
            let dir = temp.path().to_path_buf();
            Ok((Some(temp), dir))
        }
    }
}

/// A multi-threaded tokio runtime for a command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
