//! The tracker's index in sled: the catalog (title: name and shape) and the registry (node:
//! registration), written through on each publish and registration and read back into the
//! core at start. Catalog records written by earlier versions (name and manifest) still load:
//! see [`CatalogRecord::decode`].

use std::path::Path;

use anyhow::Context;
use fillmesh_protocol::messages::Registration;
use fillmesh_protocol::{ChainingValue, ChunkSize, Manifest, NodeId, Shape, TitleId, VerifyError};
use serde::{Deserialize, Serialize};

use crate::core::{Millis, Tracker};

/// A published title as the catalog keeps it (postcard, in sled and in etcd): its name and
/// its shape, never its chunk hashes, so a record's size follows the file count (a few bytes
/// per file), not the chunk count.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CatalogRecord {
    pub(super) name: String,
    pub(super) shape: Shape,
}

/// What earlier versions wrote: the name and the whole manifest, as the manifest encodes
/// today (with the `files` field packages brought).
#[derive(Deserialize)]
struct ManifestRecord {
    name: String,
    manifest: Manifest,
}

/// What versions before packages wrote: the name and a manifest of length, chunk size and
/// chaining values (no `files` field).
#[derive(Deserialize)]
struct FileManifestRecord {
    name: String,
    len: u64,
    chunk_size: ChunkSize,
    cvs: Vec<ChainingValue>,
}

/// Why a stored catalog record was not read.
#[derive(Debug, thiserror::Error)]
pub(super) enum RecordError {
    /// Not a record of this version (name and shape) nor of an earlier one (name and manifest).
    #[error("neither a name and shape nor an earlier version's name and manifest")]
    Undecodable(#[source] postcard::Error),
    /// An earlier version's record whose manifest is malformed.
    #[error("an earlier version's record with a malformed manifest")]
    Manifest(#[source] fillmesh_protocol::ManifestError),
    /// An earlier version's record whose manifest is not its title's.
    #[error("an earlier version's record whose manifest is not its title's")]
    NotTheTitles(#[source] VerifyError),
}

/// `T` from all of `bytes`, nothing left over.
fn whole<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    match postcard::take_from_bytes(bytes)? {
        (value, []) => Ok(value),
        _ => Err(postcard::Error::DeserializeBadEncoding),
    }
}

impl CatalogRecord {
    /// Reads a catalog record of title `title`: this version's (name and shape), or an
    /// earlier version's (name and manifest, with or without the package field), whose
    /// manifest is checked against `title` and kept as its shape.
    ///
    /// The three never read as one another (each is read whole, nothing left over): an
    /// earlier record read as this one's puts the manifest's length where the chunk size
    /// goes and the first byte of its chunk size (a varint of at least 1,024, so 0x80 or
    /// more) where the package flag goes, which is 0 or 1; and the two manifest forms differ
    /// by the trailing `files` field.
    pub(super) fn decode(title: &TitleId, bytes: &[u8]) -> Result<Self, RecordError> {
        let first = match whole::<CatalogRecord>(bytes) {
            Ok(record) => return Ok(record),
            Err(e) => e,
        };
        let (name, manifest) = if let Ok(r) = whole::<ManifestRecord>(bytes) {
            (r.name, r.manifest)
        } else if let Ok(r) = whole::<FileManifestRecord>(bytes) {
            (r.name, Manifest::new(r.len, r.chunk_size, r.cvs).map_err(RecordError::Manifest)?)
        } else {
            return Err(RecordError::Undecodable(first));
        };
        manifest.verify(title).map_err(RecordError::NotTheTitles)?;
        Ok(Self { name, shape: manifest.shape() })
    }
}

/// Why a record was not written to the index.
#[derive(Debug, thiserror::Error)]
pub(super) enum IndexError {
    #[error("writing the tracker's index")]
    Write(#[from] sled::Error),
    #[error("the task writing the tracker's index ended")]
    Task(#[from] tokio::task::JoinError),
}

/// The sled database and its two trees.
pub(super) struct Index {
    db: sled::Db,
    pub(super) catalog: sled::Tree,
    pub(super) registry: sled::Tree,
    /// Titles published urgent: the title id, an empty value.
    pub(super) urgent: sled::Tree,
}

impl Index {
    /// Opens (or creates) the index in the tracker's data directory. Writes are flushed by
    /// [`Index::put`], not on a timer.
    pub(super) fn open(data: &Path) -> anyhow::Result<Self> {
        let db = sled::Config::new()
            .path(data.join("tracker-index"))
            .flush_every_ms(None)
            .open()
            .with_context(|| format!("opening the tracker's index in {}", data.display()))?;
        let catalog = db.open_tree("catalog")?;
        let registry = db.open_tree("registry")?;
        let urgent = db.open_tree("urgent")?;
        Ok(Self { db, catalog, registry, urgent })
    }

    /// Loads the persisted catalog and registry into the core, returning how many titles
    /// and nodes. Registered nodes come back unhealthy until they reconnect and heartbeat.
    pub(super) fn restore(&self, core: &mut Tracker, now: Millis) -> anyhow::Result<(usize, usize)> {
        let mut titles = 0;
        for entry in self.catalog.iter() {
            let (key, value) = entry?;
            let title =
                TitleId::from_bytes(key.as_ref().try_into().context("catalog key is not a title id")?);
            let record = CatalogRecord::decode(&title, &value)
                .with_context(|| format!("corrupt catalog record of {title}"))?;
            core.publish(now, title, record.name, &record.shape)?;
            titles += 1;
        }
        for entry in self.urgent.iter() {
            let (key, _) = entry?;
            let title = TitleId::from_bytes(key.as_ref().try_into().context("urgent key is not a title id")?);
            core.mark_urgent(now, &title).with_context(|| format!("urgent mark of {title}"))?;
        }
        let mut nodes = 0;
        for entry in self.registry.iter() {
            let (key, value) = entry?;
            let node: NodeId = std::str::from_utf8(&key)?.parse()?;
            let registration: Registration =
                postcard::from_bytes(&value).context("corrupt registry record")?;
            core.register(now, node.clone(), registration);
            core.lost(now, &node);
            nodes += 1;
        }
        Ok((titles, nodes))
    }

    /// Writes one record to `tree` and flushes the index (an fsync) on a blocking thread, off
    /// the async executor: a slow disk delays this one request, never the others.
    pub(super) async fn put(
        &self,
        tree: &sled::Tree,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), IndexError> {
        let (db, tree) = (self.db.clone(), tree.clone());
        tokio::task::spawn_blocking(move || tree.insert(key, value).and_then(|_| db.flush()).map(|_| ()))
            .await??;
        Ok(())
    }

    /// Flushes what is left, at shutdown.
    pub(super) fn flush(&self) -> anyhow::Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use fillmesh_protocol::PackageBuilder;
    use proptest::prelude::*;

    use super::*;
    use crate::core::Config;

    /// A record as versions before packages wrote it: `CatalogRecord { name, manifest }` with
    /// the manifest's fields of then (length, chunk size, chaining values).
    #[derive(Serialize)]
    struct BeforePackages<'a> {
        name: &'a str,
        len: u64,
        chunk_size: ChunkSize,
        cvs: &'a [ChainingValue],
    }

    /// A record as versions since packages and before shapes wrote it.
    #[derive(Serialize)]
    struct WithManifest<'a> {
        name: &'a str,
        manifest: &'a Manifest,
    }

    fn before_packages(name: &str, m: &Manifest) -> Vec<u8> {
        let record =
            BeforePackages { name, len: m.len(), chunk_size: m.chunk_size(), cvs: m.chaining_values() };
        postcard::to_allocvec(&record).unwrap()
    }

    fn with_manifest(name: &str, m: &Manifest) -> Vec<u8> {
        postcard::to_allocvec(&WithManifest { name, manifest: m }).unwrap()
    }

    fn file(len: usize, chunk: u64) -> (TitleId, Manifest) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        Manifest::from_bytes(&data, ChunkSize::new(chunk).unwrap()).unwrap()
    }

    fn package() -> (TitleId, Manifest) {
        let mut b = PackageBuilder::new(ChunkSize::new(1024).unwrap());
        for (path, len) in [("a.m3u8", 100), ("v0/init.mp4", 3000), ("v0/s1.m4s", 2048)] {
            b.start_file(path).unwrap();
            b.update(&vec![path.len() as u8; len]).unwrap();
            b.finish_file().unwrap();
        }
        b.finish().unwrap()
    }

    /// An index written by earlier versions (name and manifest, in both its forms) loads into
    /// the core with every title, each as its manifest's shape, beside this version's records;
    /// reopened, it loads the same again.
    #[test]
    fn earlier_records_load_as_their_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let (old, old_m) = file(5000, 1024);
        let (mid, mid_m) = file(70_000, 4096);
        let (pkg, pkg_m) = package();
        let (new, new_m) = file(3000, 1024);
        {
            let index = Index::open(dir.path()).unwrap();
            index.catalog.insert(old.as_bytes(), before_packages("old", &old_m)).unwrap();
            index.catalog.insert(mid.as_bytes(), with_manifest("mid", &mid_m)).unwrap();
            index.catalog.insert(pkg.as_bytes(), with_manifest("ladder", &pkg_m)).unwrap();
            let record = CatalogRecord { name: "new".into(), shape: new_m.shape() };
            index.catalog.insert(new.as_bytes(), postcard::to_allocvec(&record).unwrap()).unwrap();
            index.flush().unwrap();
        }
        for _ in 0..2 {
            let index = Index::open(dir.path()).unwrap();
            let mut core = Tracker::new(Config::default());
            assert_eq!(index.restore(&mut core, 0).unwrap(), (4, 0));
            for (id, m, name) in
                [(old, &old_m, "old"), (mid, &mid_m, "mid"), (pkg, &pkg_m, "ladder"), (new, &new_m, "new")]
            {
                assert_eq!(core.shape(&id), Some(&m.shape()), "{name}");
                assert!(core.catalog().iter().any(|e| e.title == id && e.name == name));
            }
            assert!(core.shape(&pkg).unwrap().is_package());
            assert_eq!(core.shape(&pkg).unwrap().file_count(), 3);
        }
    }

    /// An earlier record whose manifest is another title's is refused, and so is garbage; the
    /// index then does not load (as for any corrupt record), it does not take a wrong shape.
    #[test]
    fn bad_records_are_refused() {
        let (a, _) = file(5000, 1024);
        let (_, b_m) = file(6000, 1024);
        let refused = CatalogRecord::decode(&a, &before_packages("b", &b_m));
        assert!(matches!(refused, Err(RecordError::NotTheTitles(_))), "{refused:?}");
        let refused = CatalogRecord::decode(&a, &with_manifest("b", &b_m));
        assert!(matches!(refused, Err(RecordError::NotTheTitles(_))), "{refused:?}");
        let refused = CatalogRecord::decode(&a, &[3, b'a', b'b']);
        assert!(matches!(refused, Err(RecordError::Undecodable(_))), "{refused:?}");
        let mut long =
            postcard::to_allocvec(&CatalogRecord { name: "x".into(), shape: b_m.shape() }).unwrap();
        long.push(0);
        assert!(CatalogRecord::decode(&a, &long).is_err(), "trailing bytes");

        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        index.catalog.insert(a.as_bytes(), before_packages("b", &b_m)).unwrap();
        let error = index.restore(&mut Tracker::new(Config::default()), 0).unwrap_err();
        assert!(format!("{error:#}").contains("corrupt catalog record"), "{error:#}");
    }

    proptest! {
        /// Each form reads as what it was written from: a record of this version as itself,
        /// an earlier one (either form) as its manifest's shape, never one read as another.
        #[test]
        fn every_form_reads_as_written(
            log2 in 10u32..=26,
            chunks in 0u64..40,
            tail in 0u64..1024,
            seed in any::<u8>(),
            name in "[a-z ]{0,300}",
        ) {
            let cs = ChunkSize::new(1u64 << log2).unwrap();
            let len = (chunks * cs.bytes()).saturating_sub(tail).max(u64::from(chunks > 0));
            let n = cs.chunks_for(len) as usize;
            let cvs: Vec<ChainingValue> = (0..n).map(|i| [seed.wrapping_add(i as u8); 32]).collect();
            let m = Manifest::new(len, cs, cvs).unwrap();
            let id = m.root();
            let want = CatalogRecord { name: name.clone(), shape: m.shape() };
            let new = postcard::to_allocvec(&want).unwrap();
            prop_assert_eq!(&CatalogRecord::decode(&id, &new).unwrap(), &want);
            prop_assert_eq!(&CatalogRecord::decode(&id, &before_packages(&name, &m)).unwrap(), &want);
            prop_assert_eq!(&CatalogRecord::decode(&id, &with_manifest(&name, &m)).unwrap(), &want);
            // The forms are told apart by their bytes, not by the id check.
            prop_assert!(whole::<CatalogRecord>(&before_packages(&name, &m)).is_err());
            prop_assert!(whole::<CatalogRecord>(&with_manifest(&name, &m)).is_err());
            prop_assert!(whole::<ManifestRecord>(&before_packages(&name, &m)).is_err());
            prop_assert!(whole::<FileManifestRecord>(&with_manifest(&name, &m)).is_err());
        }
    }
}
