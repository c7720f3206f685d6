//! A package on disk: the regular files under a directory, as `fillmesh seed DIR` publishes
//! them and `fillmesh id DIR` names them. Walks the directory (refusing what a package cannot
//! hold, before anything is hashed or sent), hashes each file and makes the listing whose
//! BLAKE3 is the package id.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fillmesh_protocol::package::{self, ListingError, MAX_FILES};
use fillmesh_protocol::TitleId;

/// Why a directory cannot be a package.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A file or directory could not be read.
    #[error("{path}")]
    Io {
        /// The path, as shown to the user.
        path: String,
        /// What the filesystem said.
        source: std::io::Error,
    },
    /// A symbolic link: a package holds regular files only (a link could lead out of it).
    #[error("{0} is a symbolic link: a package holds regular files only")]
    Symlink(String),
    /// A device, pipe or socket.
    #[error("{0} is not a regular file or a directory")]
    Special(String),
    /// A name that is not UTF-8.
    #[error("{0} has a name that is not UTF-8")]
    NotUtf8(String),
    /// A path a package cannot hold (too long, a backslash or newline), or too many files.
    #[error(transparent)]
    Listing(#[from] ListingError),
}

/// One file found under the package's directory.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its path inside the package, `/`-separated.
    pub path: String,
    /// Where it is on disk.
    pub disk: PathBuf,
    /// Its length when it was found.
    pub len: u64,
    /// Its modification time when it was found.
    pub modified: Option<SystemTime>,
}

/// Every regular file under `dir`, sorted by path bytes, checked against the package rules.
/// Nothing is read but directory entries and metadata.
pub fn scan(dir: &Path) -> Result<Vec<Found>, PackageError> {
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    package::check_files(out.iter().map(|f| f.path.as_str()))?;
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<Found>) -> Result<(), PackageError> {
    let shown = |p: &Path| p.display().to_string();
    let io = |p: &Path| {
        let path = shown(p);
        move |source| PackageError::Io { path, source }
    };
    let mut entries: Vec<fs::DirEntry> =
        fs::read_dir(dir).map_err(io(dir))?.collect::<Result<_, _>>().map_err(io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let disk = entry.path();
        let name = entry.file_name().into_string().map_err(|_| PackageError::NotUtf8(shown(&disk)))?;
        let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        package::check_path(&path).map_err(|why| ListingError::Path { path: path.clone(), why })?;
        let meta = fs::symlink_metadata(&disk).map_err(io(&disk))?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            return Err(PackageError::Symlink(shown(&disk)));
        } else if kind.is_dir() {
            walk(&disk, &path, out)?;
        } else if kind.is_file() {
            if out.len() >= MAX_FILES {
                return Err(ListingError::TooManyFiles(out.len() + 1).into());
            }
            out.push(Found { path, disk, len: meta.len(), modified: meta.modified().ok() });
        } else {
            return Err(PackageError::Special(shown(&disk)));
        }
    }
    Ok(())
}

/// Hashes every file found (in constant memory each): their ids in order, the listing and the
/// package id.
pub fn hash(files: &[Found]) -> Result<(Vec<TitleId>, String, TitleId), PackageError> {
    let mut ids = Vec::with_capacity(files.len());
    for f in files {
        let id = fs::File::open(&f.disk)
            .and_then(TitleId::of_reader)
            .map_err(|source| PackageError::Io { path: f.disk.display().to_string(), source })?;
        ids.push(id);
    }
    let listing = package::listing(ids.iter().zip(files.iter().map(|f| f.path.as_str())));
    let id = package::package_id(&listing);
    Ok((ids, listing, id))
}

/// Whether a file is no longer as it was found (length or modification time).
pub fn changed(f: &Found) -> bool {
    match fs::metadata(&f.disk) {
        Ok(m) => m.len() != f.len || m.modified().ok() != f.modified,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_sorts_by_bytes_and_refuses_links_and_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("v1")).unwrap();
        fs::write(dir.path().join("v1/b.m4s"), b"b").unwrap();
        fs::write(dir.path().join("Z.m3u8"), b"z").unwrap();
        fs::write(dir.path().join("a.m3u8"), b"a").unwrap();
        let found = scan(dir.path()).unwrap();
        let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["Z.m3u8", "a.m3u8", "v1/b.m4s"]);

        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("v1/link")).unwrap();
        assert!(matches!(scan(dir.path()), Err(PackageError::Symlink(_))));
        fs::remove_file(dir.path().join("v1/link")).unwrap();

        fs::write(dir.path().join("a\\b"), b"x").unwrap();
        assert!(matches!(scan(dir.path()), Err(PackageError::Listing(ListingError::Path { .. }))));
        fs::remove_file(dir.path().join("a\\b")).unwrap();
        fs::write(dir.path().join("a\nb"), b"x").unwrap();
        assert!(matches!(scan(dir.path()), Err(PackageError::Listing(ListingError::Path { .. }))));
    }

    #[test]
    fn an_empty_directory_is_not_a_package() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(scan(dir.path()), Err(PackageError::Listing(ListingError::Empty))));
    }
}
