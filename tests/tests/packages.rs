//! Packages end to end: a directory published as one title whose id anyone can recompute with
//! `b3sum`, filled through the mesh as one unit and fetched back as the same directory; and
//! every kind of bad package refused with nothing stored.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fillmesh_tests::mesh::{Mesh, Title};
use fillmesh_tests::{fillmesh, http, test_bytes, NodeProcess};

/// A small ladder-shaped package: playlists, init segments, segments (one of several chunks),
/// an empty subtitle file and a nested directory, with names in an order where byte order and
/// locale order differ (`Z` before `a`).
fn package(dir: &Path) {
    let files: &[(&str, usize)] = &[
        ("master.m3u8", 300),
        ("Z-notes.txt", 10),
        ("v0/init_0.mp4", 900),
        ("v0/seg_000.m4s", 3 << 20),
        ("v0/seg_001.m4s", 200_000),
        ("v0/stream.m3u8", 400),
        ("v1/init_1.mp4", 800),
        ("v1/seg_000.m4s", 90_000),
        ("v1/seg_001.m4s", 80_000),
        ("v1/stream.m3u8", 400),
        ("subs/en/empty.vtt", 0),
    ];
    for (i, (path, len)) in files.iter().enumerate() {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, test_bytes(*len, i as u64 + 1)).unwrap();
    }
}

/// The package id by the recipe README.md gives, with standard tools only.
fn b3sum_recipe(dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' b3sum | b3sum")
        .current_dir(dir)
        .output()
        .expect("run the b3sum recipe (b3sum is installed by .ci/run)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// Every regular file under `dir`, by path, with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push((p.strip_prefix(root).unwrap().to_owned(), std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn a_package_is_named_as_b3sum_would_filled_as_one_title_and_fetched_back_whole() {
    let src = tempfile::tempdir().unwrap();
    package(src.path());

    // The id: `fillmesh id DIR`, the b3sum recipe, and the listing `b3sum --check` accepts.
    let out = fillmesh().arg("id").arg(src.path()).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).unwrap()[..64].to_owned();
    assert_eq!(id, b3sum_recipe(src.path()), "fillmesh id DIR is the b3sum recipe's id");
    let listing = src.path().parent().unwrap().join(format!("{id}.b3"));
    let out = fillmesh().arg("id").arg(src.path()).arg("--listing").arg(&listing).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&listing).unwrap();
    assert_eq!(text.lines().count(), 11);
    assert!(text.lines().next().unwrap().ends_with("  Z-notes.txt"), "sorted by bytes: {text}");
    let check = Command::new("b3sum").arg("--check").arg(&listing).current_dir(src.path()).output().unwrap();
    assert!(check.status.success(), "b3sum --check takes the listing: {check:?}");
    let out = Command::new("b3sum").arg("--no-names").arg(&listing).output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), id, "the listing hashes to the id");
    std::fs::remove_file(&listing).unwrap();

    // Published as one title, filled by two appliances through the mesh.
    // `fillmesh fetch` from an appliance, as an identity the appliances are told to trust.
    let fetcher = tempfile::tempdir().unwrap();
    let fetcher_id = fillmesh_tests::print_id(fetcher.path());
    let trust = ["--trust", fetcher_id.trim()];
    let mesh = Mesh::start_full("mesh", "16MB", 2, Title::File(src.path().to_owned()), 0, &trust);
    assert_eq!(mesh.title, id, "fillmesh seed DIR prints the package id");
    let t = mesh.wait_complete(Duration::from_secs(90));
    let total: u64 = tree(src.path()).iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(t["size"].as_u64(), Some(total), "the title's size is its files' together: {t}");
    // One title, whatever its file count: the tracker lists exactly one.
    let status = fillmesh_tests::mesh::status(&mesh.tracker).unwrap();
    assert_eq!(status["titles"].as_array().unwrap().len(), 1);

    // Fetched back from an appliance as the same directory, each file once.
    let (_, appliance) = &mesh.appliances[1];
    let out_dir = mesh.dir.path().join("fetched");
    let fetch = |out: &Path| {
        fillmesh()
            .args(["fetch", &id, "--from", &appliance.mesh, "--peer", &appliance.peer, "--out"])
            .arg(out)
            .arg("--identity")
            .arg(fetcher.path())
            .output()
            .unwrap()
    };
    let out = fetch(&out_dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(tree(&out_dir) == tree(src.path()), "the fetched directory differs from the source");
    assert!(!out_dir.with_extension("fillmesh-part").exists(), "no partial directory is left");

    // A package cannot go to standard output, and an existing non-empty directory is kept.
    let out = fetch(Path::new("-"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a package"), "{out:?}");
    let out = fetch(&out_dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"), "{out:?}");
}

/// A standalone origin for refusals.
fn origin(dir: &Path) -> NodeProcess {
    NodeProcess::start(dir, &["--origin", "--listen", "127.0.0.52:0", "--http", "127.0.0.52:0"])
}

/// Title data files the origin stores, and files left in its staging directory.
fn stored(data: &Path) -> (usize, usize) {
    let count = |d: PathBuf| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
    (count(data.join("data")), count(data.join("staging")))
}

fn seed(origin: &NodeProcess, dir: &Path) -> std::process::Output {
    let url = format!("http://{}", origin.http.as_deref().unwrap());
    fillmesh().arg("seed").arg(dir).args(["--origin", &url]).output().unwrap()
}

/// Makes one kind of bad package in a directory.
type Make = dyn Fn(&Path);

#[test]
fn bad_packages_are_refused_with_the_reason_and_nothing_is_stored() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("origin");
    let origin = origin(&data);

    let cases: Vec<(&str, Box<Make>, &str)> = vec![
        (
            "a symbolic link",
            Box::new(|d: &Path| std::os::unix::fs::symlink("/etc/hostname", d.join("link.m3u8")).unwrap()),
            "symbolic link",
        ),
        (
            "a named pipe",
            Box::new(|d: &Path| {
                let st = Command::new("mkfifo").arg(d.join("pipe")).status().unwrap();
                assert!(st.success());
            }),
            "not a regular file",
        ),
        ("a backslash", Box::new(|d: &Path| std::fs::write(d.join("a\\b.m4s"), b"x").unwrap()), "backslash"),
        ("a newline", Box::new(|d: &Path| std::fs::write(d.join("a\nb.m4s"), b"x").unwrap()), "newline"),
        (
            "a path over 1,024 bytes",
            Box::new(|d: &Path| {
                let deep =
                    d.join("d".repeat(250)).join("e".repeat(250)).join("f".repeat(250)).join("g".repeat(250));
                std::fs::create_dir_all(&deep).unwrap();
                std::fs::write(deep.join("h".repeat(100)), b"x").unwrap();
            }),
            "more than the limit of 1024",
        ),
        (
            "more than 100,000 files",
            Box::new(|d: &Path| {
                for i in 0..=100_000 {
                    std::fs::File::create(d.join(format!("{i}"))).unwrap();
                }
            }),
            "more than the limit of 100000",
        ),
        ("an empty directory", Box::new(|_: &Path| {}), "no files"),
    ];
    for (what, make, reason) in cases {
        let dir = work.path().join("pkg");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("master.m3u8"), b"#EXTM3U\n").unwrap();
        if what == "an empty directory" {
            std::fs::remove_file(dir.join("master.m3u8")).unwrap();
        }
        make(&dir);
        let out = seed(&origin, &dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: seeded anyway");
        assert!(err.contains(reason), "{what}: expected {reason:?} in {err}");
        let out = fillmesh().arg("id").arg(&dir).output().unwrap();
        assert!(!out.status.success(), "{what}: fillmesh id named it");
        assert_eq!(stored(&data), (0, 0), "{what}: something was stored");
    }
    let _ = std::fs::remove_dir_all(work.path().join("pkg"));

    // Bodies no honest seeder sends, straight to the ingest API.
    let addr = origin.http.as_deref().unwrap();
    let a = b"#EXTM3U\n".to_vec();
    let a_id = blake3::hash(&a).to_hex().to_string();
    let listing = format!("{a_id}  master.m3u8\n");
    let id = blake3::hash(listing.as_bytes()).to_hex().to_string();
    let body = |listing: &str, files: &[&[u8]]| {
        let mut b = format!("{}\n{listing}", listing.len()).into_bytes();
        for f in files {
            b.extend_from_slice(format!("{}\n", f.len()).as_bytes());
            b.extend_from_slice(f);
        }
        b
    };
    let post = |id: &str, body: &[u8]| {
        http(addr, "POST", "/titles?name=x&package=true", &[("x-fillmesh-title", id)], body)
    };
    // The listing does not hash to the announced id.
    let other = blake3::hash(b"another package").to_hex().to_string();
    let (code, text) = post(&other, &body(&listing, &[&a]));
    assert_eq!(code, 409, "{text}");
    assert!(text.contains("listing"), "{text}");
    // A file's bytes are not those its line names.
    let (code, text) = post(&id, &body(&listing, &[b"#EXTM3U\n#changed\n"]));
    assert_eq!(code, 409, "{text}");
    assert!(text.contains("master.m3u8"), "{text}");
    // A file that is not in the listing.
    let (code, text) = post(&id, &body(&listing, &[&a, b"extra"]));
    assert_eq!(code, 400, "{text}");
    // A listing naming a path outside the package, hashed honestly.
    let evil = format!("{a_id}  ../evil.m3u8\n");
    let evil_id = blake3::hash(evil.as_bytes()).to_hex().to_string();
    let (code, text) = post(&evil_id, &body(&evil, &[&a]));
    assert_eq!(code, 400, "{text}");
    assert!(text.contains(".."), "{text}");
    assert!(!work.path().join("evil.m3u8").exists() && !data.join("evil.m3u8").exists());
    assert_eq!(stored(&data), (0, 0), "a refused upload stored something");
    // The honest body is taken.
    let (code, text) = post(&id, &body(&listing, &[&a]));
    assert_eq!(code, 201, "{text}");
    assert_eq!(stored(&data), (1, 0));
}

/// HEAD of `path` under `base` over HTTPS on TCP: the status.
fn head(base: &str, path: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-sk", "--http1.1", "-I", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"])
        .arg(format!("{base}{path}"))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// The start of playback first: an appliance filling a ladder from a slow origin serves the
/// master playlist, the lowest variant's playlist, its init segment and its first segment
/// while it holds only a small part of the package (the rest comes rarest first after).
#[test]
fn an_appliance_fills_the_start_of_playback_first() {
    use fillmesh_tests::media::{self, Ladder};
    let media_dir = tempfile::tempdir().unwrap();
    let ladder = media::ladder_with(&media_dir.path().join("ladder"), 48, 4);
    // A large file that sorts before everything (as the data file lays it out first): in
    // index order it would come first; it is no part of starting playback.
    let ladder_bytes: u64 =
        std::fs::read_dir(ladder.dir.join("v2")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    std::fs::write(ladder.dir.join("a-poster.jpg"), test_bytes(ladder_bytes as usize, 9)).unwrap();
    let files: Vec<(String, u64)> = {
        let out = fillmesh().arg("id").arg(&ladder.dir).arg("--listing").arg("-").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let path = l[66..].to_owned();
                let len = std::fs::metadata(ladder.dir.join(&path)).unwrap().len();
                (path, len)
            })
            .collect()
    };
    let total: u64 = files.iter().map(|(_, l)| l).sum();
    // An origin slow enough that the fill takes many seconds: the order shows.
    let rate = (total / 20).max(50_000).to_string();
    let mesh = Mesh::start_full("mesh", &rate, 1, Title::File(ladder.dir.clone()), 0, &[]);
    let (_, appliance) = &mesh.appliances[0];
    let base = format!("https://{}{}/titles/{}/", appliance.mesh, mesh.token_path(&mesh.title), mesh.title);
    let start = [Ladder::MASTER.to_owned(), Ladder::playlist(0), Ladder::init(0), Ladder::segment(0, 0)];
    fillmesh_tests::wait_for(Duration::from_secs(120), || {
        start.iter().all(|p| head(&base, p) == 200).then_some(())
    })
    .expect("the appliance never served the start of playback");
    let held: u64 = files.iter().filter(|(p, _)| head(&base, p) == 200).map(|(_, l)| l).sum();
    let fraction = held as f64 / total as f64;
    println!(
        "start of playback served while holding {held} of {total} bytes ({:.1}%), {} files, origin at {rate} B/s",
        100.0 * fraction,
        files.len()
    );
    assert!(fraction < 0.10, "the start of playback came only after {:.0}% of the package", 100.0 * fraction);
    mesh.wait_complete(Duration::from_secs(180));
}
