//! `fillmesh id FILE|DIR`: a title id as `b3sum` prints it, so operators can check ids with a
//! standard tool. A directory is a package: its id is the BLAKE3 of its listing, the text
//! `b3sum` prints for its files sorted by path (`--listing FILE` writes that text), so
//! `cd DIR && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' b3sum | b3sum`
//! prints the same id.

use std::fs::File;
use std::io;
use std::path::Path;

use anyhow::Context;
use fillmesh_net::say;
use fillmesh_node::origin::package;
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

/// `fillmesh id FILE|DIR...`.
#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// Files (each a one-file title) or directories (each a package).
    #[arg(required = true)]
    pub files: Vec<std::path::PathBuf>,
    /// Write the package's listing (what `b3sum` prints for its files; `b3sum --check` takes
    /// it) to this file, `-` for standard output. Only with a single directory.
    #[arg(long, value_name = "FILE")]
    pub listing: Option<std::path::PathBuf>,
}

/// The package id of the directory at `dir`, and its listing.
pub fn package_id_of_dir(dir: &Path) -> anyhow::Result<(TitleId, String)> {
    let files = package::scan(dir)?;
    let (_, listing, id) = package::hash(&files)?;
    Ok((id, listing))
}

/// Prints one `b3sum` line per file or package; fails if any could not be read.
pub fn run(args: IdArgs) -> anyhow::Result<()> {
    let mut failed = 0usize;
    let files = &args.files;
    if let Some(out) = &args.listing {
        let [dir] = files.as_slice() else {
            anyhow::bail!("--listing takes exactly one directory, got {} paths", files.len());
        };
        anyhow::ensure!(dir.is_dir(), "--listing: {} is not a directory", dir.display());
        let (id, listing) = package_id_of_dir(dir).with_context(|| format!("{}", dir.display()))?;
        if out.as_os_str() == "-" {
            print!("{listing}");
        } else {
            std::fs::write(out, &listing)
                .with_context(|| format!("writing the listing to {}", out.display()))?;
            say!("{}", b3sum_line(&id, &dir.to_string_lossy()));
        }
        return Ok(());
    }
    for path in files {
        let id = if path.is_dir() {
            package_id_of_dir(path).map(|(id, _)| id)
        } else {
            title_id_of_file(path).map_err(anyhow::Error::from)
        };
        match id.with_context(|| format!("{}", path.display())) {
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
