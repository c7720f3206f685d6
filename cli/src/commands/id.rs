//! `fillmesh id FILE`: a title id as `b3sum` prints it, so operators can check ids with a
//! standard tool.

use std::fs::File;
use std::io;
use std::path::Path;

use anyhow::Context;
use fillmesh_net::say;
use fillmesh_protocol::TitleId;

/// Hashes the file at `path` in constant memory.
pub fn title_id_of_file(path: &Path) -> io::Result<TitleId> {
    TitleId::of_reader(File::open(path)?)
}

/// One line of `b3sum` output for `path` (without the newline): `<hex>  <path>`. Like
/// `b3sum`, a name holding a backslash or a newline is escaped and the line starts with `\`,
/// so every line stays one line and parses back unambiguously.
pub fn b3sum_line(id: &TitleId, path: &str) -> String {
    if path.contains(['\\', '\n']) {
        let escaped = path.replace('\\', "\\\\").replace('\n', "\\n");
        format!("\\{id}  {escaped}")
    } else {
        format!("{id}  {path}")
    }
}

/// `fillmesh id FILE...`.
#[derive(Debug, clap::Args)]
pub struct IdArgs {
    #[arg(required = true)]
    pub files: Vec<std::path::PathBuf>,
}

/// Prints one `b3sum` line per file; fails if any file could not be read.
pub fn run(args: IdArgs) -> anyhow::Result<()> {
    let mut failed = 0usize;
    let files = &args.files;
    for path in files {
        match title_id_of_file(path).with_context(|| format!("{}", path.display())) {
            Ok(id) => say!("{}", b3sum_line(&id, &path.to_string_lossy())),
            Err(e) => {
                eprintln!("fillmesh: {e:#}");
                failed += 1;
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} of {} files could not be read", files.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_b3sum_format_for_the_abc_vector() {
        // `printf abc > abc.txt && b3sum abc.txt` prints exactly this line.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc.txt");
        std::fs::write(&path, b"abc").unwrap();
        let id = title_id_of_file(&path).unwrap();
        assert_eq!(
            b3sum_line(&id, "abc.txt"),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85  abc.txt"
        );
    }

    #[test]
    fn escapes_names_like_b3sum() {
        let id = TitleId::of(b"");
        assert_eq!(b3sum_line(&id, "a\\b\nc"), format!("\\{id}  a\\\\b\\nc"));
    }
}
