//! A package served by path (`/titles/<package id>/<path>`) by real nodes, over HTTP/3 (a
//! client this project did not write: Python's niquests) and HTTPS on TCP (curl, HTTP/2 and
//! HTTP/1.1): each file's bytes, ranges, `HEAD`, types and ETags; the listing is what `b3sum`
//! prints; every traversal form, raw and escaped, is 404 and reads nothing outside the
//! package; a file not held yet is 503; a damaged byte is never served.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use fillmesh_node::store::{Store, VerifiedChunk};
use fillmesh_protocol::{ChunkSize, Manifest, PackageBuilder, TitleId};
use fillmesh_tests::clients::{curl, every_transport, h3, Answer};
use fillmesh_tests::mesh::{Mesh, Title};
use fillmesh_tests::{test_bytes, NodeProcess};

const MIB: usize = 1 << 20;

/// A small HLS-shaped package: playlists, two renditions (init and media segments, some of
/// several 1 MiB chunks with a short last one), subtitles. `seed` varies the bytes.
fn ladder(dir: &Path, seed: u64) -> PathBuf {
    let files: [(&str, Vec<u8>); 8] = [
        ("master.m3u8", b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nv0/index.m3u8\n".to_vec()),
        ("subs/en.vtt", b"WEBVTT\n\n00:00.000 --> 00:04.000\nhello\n".to_vec()),
        ("v0/index.m3u8", b"#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4,\nseg_1.m4s\n".to_vec()),
        ("v0/init.mp4", test_bytes(1234, seed)),
        // In the middle of the package: its first byte sits at a chunk boundary well inside
        // the data file, its ranges cross chunk boundaries.
        ("v0/seg_1.m4s", test_bytes(2 * MIB + 4321, seed + 1)),
        ("v0/seg_2.m4s", test_bytes(MIB + 77, seed + 2)),
        ("v1/init.mp4", test_bytes(999, seed + 3)),
        ("v1/seg_1.m4s", test_bytes(2 * MIB + 5, seed + 4)),
    ];
    let root = dir.join(format!("ladder-{seed}"));
    for (path, bytes) in files {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    }
    root
}

/// What `b3sum` prints for the package's files, by the recipe of the issue.
fn b3sum_listing(dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' b3sum")
        .current_dir(dir)
        .output()
        .expect("sh, find, sort, xargs and b3sum (installed by .ci/run)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The paths that try to leave a package or name what no package may hold, raw and escaped.
/// `secret` is a file next to the package's directory (and so next to the node's data).
const TRAVERSALS: [&str; 16] = [
    "../secret",
    "../../secret",
    "v0/../../secret",
    "%2e%2e/secret",
    "%2E%2E%2Fsecret",
    ".%2e/%2e./secret",
    "v0%2F..%2F..%2Fsecret",
    "..%5Csecret",
    "..\\secret",
    "%2Fetc%2Fpasswd",
    "/etc/passwd",
    "v0//seg_1.m4s",
    "./master.m3u8",
    "master.m3u8%00",
    "%252e%252e/secret",
    "v0/seg_1.m4s/..",
];

/// An appliance filled from the origin serves the package by path, as the origin does:
/// bytes, ranges, HEAD, types, ETags, the listing, and 404 for every traversal form.
#[test]
fn an_appliance_serves_a_package_by_path_over_http3_and_tcp() {
    let work = tempfile::tempdir().unwrap();
    let dir = ladder(work.path(), 7);
    std::fs::write(work.path().join("secret"), b"outside the package").unwrap();
    let mesh = Mesh::start_full("mesh", "64MB", 1, Title::File(dir.clone()), 0, &[]);
    mesh.wait_complete(Duration::from_secs(120));
    let listing = b3sum_listing(&dir);
    assert_eq!(mesh.title, blake3::hash(listing.as_bytes()).to_hex().as_str(), "the package id is b3sum's");
    let t = &mesh.title;
    let seg = std::fs::read(dir.join("v0/seg_1.m4s")).unwrap();
    let seg_id = blake3::hash(&seg).to_hex().to_string();
    let len = seg.len();
    let seg_url = format!("/titles/{t}/v0/seg_1.m4s");
    let (listing_slash, listing_bare) = (format!("/titles/{t}/"), format!("/titles/{t}"));
    let types = [
        ("master.m3u8", "application/vnd.apple.mpegurl"),
        ("v0/seg_2.m4s", "video/iso.segment"),
        ("v1/init.mp4", "video/mp4"),
        ("subs/en.vtt", "text/vtt"),
    ];
    let type_urls: Vec<String> = types.iter().map(|(p, _)| format!("/titles/{t}/{p}")).collect();
    let traversal_urls: Vec<String> = TRAVERSALS.iter().map(|p| format!("/titles/{t}/{p}")).collect();
    let across = format!("bytes={}-{}", MIB - 10, MIB + 9);
    let mut requests: Vec<(&str, &str, Option<&str>)> = vec![
        ("GET", seg_url.as_str(), None),
        ("GET", seg_url.as_str(), Some(across.as_str())),
        ("GET", seg_url.as_str(), Some("bytes=-100")),
        ("HEAD", seg_url.as_str(), None),
        ("GET", listing_slash.as_str(), None),
        ("GET", listing_bare.as_str(), None),
    ];
    requests.extend(type_urls.iter().map(|u| ("GET", u.as_str(), None)));
    let missing = format!("/titles/{t}/v0/seg_3.m4s");
    requests.push(("GET", missing.as_str(), None));
    requests.extend(traversal_urls.iter().map(|u| ("GET", u.as_str(), None)));

    let token = mesh.token_path(&mesh.title);
    for base in [
        format!("https://{}{token}", mesh.appliances[0].1.mesh),
        format!("https://{}{token}", mesh.origin.mesh),
    ] {
        for (version, answers) in every_transport(&base, &requests) {
            let at = format!("{base} over {version}");
            let mut a = answers.iter();
            let whole = a.next().unwrap();
            assert_eq!(whole.status, 200, "{at}: {whole:?}");
            assert!(whole.body == seg && whole.whole, "{at}: the file's bytes");
            assert_eq!(whole.header("etag"), format!("\"{seg_id}\""), "{at}");
            assert_eq!(whole.header("content-type"), "video/iso.segment", "{at}");
            assert_eq!(whole.header("accept-ranges"), "bytes", "{at}");
            assert_eq!(whole.header("access-control-allow-origin"), "*", "{at}");
            let r = a.next().unwrap();
            assert_eq!(r.status, 206, "{at}: {r:?}");
            assert_eq!(r.header("content-range"), format!("bytes {}-{}/{len}", MIB - 10, MIB + 9), "{at}");
            assert_eq!(r.body, seg[MIB - 10..MIB + 10], "{at}: the range across a chunk boundary");
            let r = a.next().unwrap();
            assert_eq!(r.status, 206, "{at}: {r:?}");
            assert_eq!(r.header("content-range"), format!("bytes {}-{}/{len}", len - 100, len - 1), "{at}");
            assert_eq!(r.body, seg[len - 100..], "{at}: the file's last 100 bytes");
            let head = a.next().unwrap();
            assert_eq!(head.status, 200, "{at}: {head:?}");
            assert_eq!(head.header("content-length"), len.to_string(), "{at}");
            assert_eq!(head.header("etag"), format!("\"{seg_id}\""), "{at}");
            assert!(head.body.is_empty(), "{at}");
            for _ in 0..2 {
                let l = a.next().unwrap();
                assert_eq!(l.status, 200, "{at}: {l:?}");
                assert_eq!(l.text(), listing, "{at}: the listing is what b3sum prints");
                assert_eq!(l.header("content-type"), "text/plain; charset=utf-8", "{at}");
                assert_eq!(l.header("etag"), format!("\"{t}\""), "{at}");
            }
            for (path, want) in types {
                let r = a.next().unwrap();
                assert_eq!(r.status, 200, "{at} {path}: {r:?}");
                assert_eq!(r.header("content-type"), want, "{at} {path}");
                assert_eq!(r.body, std::fs::read(dir.join(path)).unwrap(), "{at} {path}");
            }
            let r = a.next().unwrap();
            assert_eq!(r.status, 404, "{at}: a path not in the listing: {r:?}");
            for path in TRAVERSALS {
                let r = a.next().unwrap();
                assert_eq!(r.status, 404, "{at} {path}: {r:?}");
                assert!(r.body.len() < 100 && !r.text().contains("outside"), "{at} {path}: {}", r.text());
            }
        }
        // Escapes that do not decode: 400 (curl sends them as they are).
        for path in ["%zz", "seg%2", "%ff"] {
            let r = curl(&base, "--http2", "GET", &format!("/titles/{t}/{path}"), None);
            assert_eq!(r.status, 400, "{path}: {r:?}");
        }
    }
    // Counted: the appliance's registry, at /metrics on its operator listener (`--http`).
    let metrics = mesh.appliances[0].1.metrics();
    let count = |kind: &str| {
        fillmesh_tests::metric(
            &metrics,
            &format!("fillmesh_player_package_requests_total{{kind=\"{kind}\"}}"),
        )
    };
    // Per transport: 15 of the traversals refused by the path rules (`%252e%252e/secret`
    // decodes once to `%2e%2e/secret`, a name the listing does not hold), and the 3 bad
    // escapes over HTTP/2.
    assert_eq!(count("refused"), Some(3.0 * 15.0 + 3.0), "{metrics}");
    assert_eq!(count("not_found"), Some(3.0 * 2.0), "{metrics}");
    assert_eq!(count("listing"), Some(6.0), "{metrics}");
}

/// Lays a package's files out as a node's data file does (each at its first chunk); returns
/// its id, manifest and data file.
fn data_file(dir: &Path, out: &Path) -> (TitleId, Manifest) {
    let listing = b3sum_listing(dir);
    let file = std::fs::File::create(out).unwrap();
    let mut builder = PackageBuilder::new(ChunkSize::DEFAULT);
    for line in listing.lines() {
        let path = &line[66..];
        let bytes = std::fs::read(dir.join(path)).unwrap();
        builder.start_file(path).unwrap();
        file.write_all_at(&bytes, builder.data_offset()).unwrap();
        builder.update(&bytes).unwrap();
        builder.finish_file().unwrap();
    }
    let (id, manifest) = builder.finish().unwrap();
    file.set_len(manifest.data_len()).unwrap();
    assert_eq!(id, TitleId::of(listing.as_bytes()));
    (id, manifest)
}

/// Flips a byte of a title's data file, behind the node's back.
fn damage(data: &Path, title: &TitleId, offset: u64) {
    let path = data.join("data").join(format!("{title}.data"));
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut was = [0u8; 1];
    file.read_exact_at(&mut was, offset).unwrap();
    file.write_all_at(&[!was[0]], offset).unwrap();
}

/// On an appliance that holds part of a package, a file not held yet is 503 with
/// `Retry-After` while a held one is served; in a package held whole, a byte damaged on disk
/// is never served: a body that reaches it is cut short, a range that starts in it is 503.
#[test]
fn a_file_not_held_yet_is_503_and_a_damaged_byte_is_never_served() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("appliance");
    let (partial, partial_manifest) = data_file(&ladder(work.path(), 1), &work.path().join("partial.data"));
    let (damaged_id, damaged_manifest) = data_file(&ladder(work.path(), 2), &work.path().join("whole.data"));
    let k = |m: &Manifest, path: &str| m.file(path).unwrap().0;
    {
        let store = Store::open(&data).unwrap();
        // The partial package: every chunk but those of v0/seg_1.m4s.
        store.add_title(partial, "partial", partial_manifest.clone()).unwrap();
        let raw = std::fs::read(work.path().join("partial.data")).unwrap();
        let missing = partial_manifest.file_chunks(k(&partial_manifest, "v0/seg_1.m4s"));
        let chunks: Vec<VerifiedChunk> = (0..partial_manifest.chunk_count())
            .filter(|i| !missing.contains(i))
            .map(|i| {
                let at = partial_manifest.chunk_offset(i) as usize;
                let len = partial_manifest.chunk_len(i).unwrap() as usize;
                VerifiedChunk::verify(
                    partial,
                    &partial_manifest,
                    i,
                    Bytes::copy_from_slice(&raw[at..at + len]),
                )
                .unwrap()
            })
            .collect();
        store.put_batch(&chunks).unwrap();
        store
            .import_complete(damaged_id, "whole", damaged_manifest.clone(), &work.path().join("whole.data"))
            .unwrap();
    }
    // Two files damaged in their second chunk (one for each kind of transport), before the
    // node starts: nothing has read them yet.
    let second = |path: &str| {
        damaged_manifest.chunk_offset(damaged_manifest.file_chunks(k(&damaged_manifest, path)).start + 1)
    };
    damage(&data, &damaged_id, second("v0/seg_1.m4s") + 12345);
    damage(&data, &damaged_id, second("v1/seg_1.m4s") + 6789);
    // No scrub: the damage is to be found by the reads that serve it.
    let node = NodeProcess::start(&data, &["--listen", "127.0.0.33:0", "--scrub-rate", "0"]);
    let base = format!("https://{}", node.mesh);

    let (held_url, missing_url) =
        (format!("/titles/{partial}/v0/seg_2.m4s"), format!("/titles/{partial}/v0/seg_1.m4s"));
    let held = std::fs::read(work.path().join("ladder-1/v0/seg_2.m4s")).unwrap();
    let requests = [
        ("GET", held_url.as_str(), None),
        ("GET", missing_url.as_str(), None),
        ("HEAD", missing_url.as_str(), None),
    ];
    for (version, answers) in every_transport(&base, &requests) {
        assert_eq!(answers[0].status, 200, "{version}: {:?}", answers[0]);
        assert_eq!(answers[0].body, held, "{version}");
        for a in &answers[1..] {
            assert_eq!(a.status, 503, "{version}: {a:?}");
            assert_eq!(a.header("retry-after"), "1", "{version}");
        }
    }

    // The damaged package: each damaged file asked whole, once over HTTP/3 and once over
    // HTTP/2: the first chunk goes out (verified), the body stops before the damaged one.
    let dir = work.path().join("ladder-2");
    let cut_short = |a: &Answer, path: &str, at: &str| {
        let right = std::fs::read(dir.join(path)).unwrap();
        assert_eq!(a.status, 200, "{at}: {a:?}");
        assert!(!a.whole, "{at}: the body was not cut short");
        assert!(a.body.len() <= MIB && right.starts_with(&a.body), "{at}: a damaged byte was served");
    };
    let v0 = format!("/titles/{damaged_id}/v0/seg_1.m4s");
    let v1 = format!("/titles/{damaged_id}/v1/seg_1.m4s");
    cut_short(&h3(&base, &[("GET", v0.as_str(), None)])[0], "v0/seg_1.m4s", "h3");
    cut_short(&curl(&base, "--http2", "GET", &v1, None), "v1/seg_1.m4s", "h2");
    // Dropped as they were found: a range in them is not held now, on any transport, while
    // the rest of the file is served.
    let in_damage = format!("bytes={}-{}", MIB + 10_000, MIB + 20_000);
    for url in [&v0, &v1] {
        let requests =
            [("GET", url.as_str(), Some(in_damage.as_str())), ("GET", url.as_str(), Some("bytes=0-999"))];
        for (version, answers) in every_transport(&base, &requests) {
            assert_eq!(answers[0].status, 503, "{version} {url}: {:?}", answers[0]);
            assert_eq!(answers[1].status, 206, "{version} {url}: {:?}", answers[1]);
            assert_eq!(answers[1].body.len(), 1000);
        }
    }
    let log = node.log();
    assert_eq!(log.matches("chunk failed verification on disk").count(), 2, "{log}");
}
