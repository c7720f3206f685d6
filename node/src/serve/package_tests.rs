//! Serving a package by path, through the one answer both transports give
//! ([`PlayerServer::answer`]), from a real store on a temporary directory: the bytes of each
//! file where the data file keeps them, ranges, `HEAD`, content types, the listing, every
//! refused path form, 503 for a file not held, and damage on disk never served.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fillmesh_protocol::{ChunkSize, Manifest, PackageBuilder, TitleId};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::players::{PlayerLimits, PlayerMetrics, PlayerServer};
use crate::store::{Store, VerifiedChunk};

const CHUNK: u64 = 4096;

/// A package's files, in listing order (sorted by path bytes): a playlist, two renditions'
/// init and media segments (several chunks each, the last short), subtitles, an empty file.
fn files() -> Vec<(&'static str, Vec<u8>)> {
    let bytes =
        |len: usize, seed: u8| (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    vec![
        ("empty.txt", Vec::new()),
        ("master.m3u8", b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv0/index.m3u8\n".to_vec()),
        ("subs/en.vtt", b"WEBVTT\n\n00:00.000 --> 00:01.000\nhi\n".to_vec()),
        ("v0/init.mp4", bytes(700, 1)),
        ("v0/seg_1.m4s", bytes(3 * CHUNK as usize + 17, 2)),
        ("v0/seg_2.m4s", bytes(2 * CHUNK as usize, 3)),
        ("v1/seg_1.m4s", bytes(CHUNK as usize + 1, 4)),
    ]
}

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    server: PlayerServer,
    title: TitleId,
    manifest: Manifest,
    files: Vec<(&'static str, Vec<u8>)>,
    /// A one-file title next to the package.
    single: TitleId,
}

/// Lays `files` out as a node's data file does (each file at its first chunk), as the
/// origin's ingest would; returns the package's id, manifest and that file.
fn build(dir: &std::path::Path, files: &[(&str, Vec<u8>)]) -> (TitleId, Manifest, std::path::PathBuf) {
    let staging = dir.join("package.data");
    let out = std::fs::File::create(&staging).unwrap();
    let mut builder = PackageBuilder::new(ChunkSize::new(CHUNK).unwrap());
    for (path, bytes) in files {
        builder.start_file(path).unwrap();
        out.write_all_at(bytes, builder.data_offset()).unwrap();
        builder.update(bytes).unwrap();
        builder.finish_file().unwrap();
    }
    let (title, manifest) = builder.finish().unwrap();
    out.set_len(manifest.data_len()).unwrap();
    (title, manifest, staging)
}

/// The package held whole (or only the chunks `held` keeps), a one-file title held whole.
fn fixture(held: impl Fn(u32) -> bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
    let files = files();
    let (title, manifest, staging) = build(dir.path(), &files);
    if (0..manifest.chunk_count()).all(&held) {
        store.import_complete(title, "ladder", manifest.clone(), &staging).unwrap();
    } else {
        store.add_title(title, "ladder", manifest.clone()).unwrap();
        let data = std::fs::read(&staging).unwrap();
        let chunks: Vec<VerifiedChunk> = (0..manifest.chunk_count())
            .filter(|&i| held(i))
            .map(|i| {
                let at = manifest.chunk_offset(i) as usize;
                let bytes = Bytes::copy_from_slice(&data[at..at + manifest.chunk_len(i).unwrap() as usize]);
                VerifiedChunk::verify(title, &manifest, i, bytes).unwrap()
            })
            .collect();
        store.put_batch(&chunks).unwrap();
    }
    let one = b"one file, today's kind of title".repeat(500);
    let (single, single_manifest) = Manifest::from_bytes(&one, ChunkSize::new(CHUNK).unwrap()).unwrap();
    let single_staging = dir.path().join("single.data");
    std::fs::write(&single_staging, &one).unwrap();
    store.import_complete(single, "feature.mp4", single_manifest, &single_staging).unwrap();
    let server = PlayerServer::new(
        store.clone(),
        PlayerLimits::default(),
        Arc::new(crate::classes::Rates::uncapped()),
        Arc::new(PlayerMetrics::default()),
    );
    Fixture { dir, store, server, title, manifest, files, single }
}

/// An answer: its head, and its body (`None` if it was cut short).
async fn ask(
    server: &PlayerServer,
    method: Method,
    path: &str,
    range: Option<&str>,
) -> (Response<()>, Option<Vec<u8>>) {
    let mut headers = HeaderMap::new();
    if let Some(range) = range {
        headers.insert("range", HeaderValue::from_str(range).unwrap());
    }
    let (head, body) = server.answer(&method, path, &headers, [127, 0, 0, 1].into(), Instant::now()).await;
    let mut pieces = std::pin::pin!(server.clone().pieces(body, tracing::Span::none()));
    let mut out = Vec::new();
    while let Some(piece) = pieces.next().await {
        match piece {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(_) => return (head, None),
        }
    }
    (head, Some(out))
}

fn header<'a>(r: &'a Response<()>, name: &str) -> &'a str {
    r.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn every_file_of_a_package_is_served_whole_and_in_ranges_with_its_own_etag_and_type() {
    let f = fixture(|_| true);
    runtime().block_on(async {
        for (k, (path, bytes)) in f.files.iter().enumerate() {
            let url = format!("/titles/{}/{path}", f.title);
            let id = f.manifest.files().unwrap()[k].id;
            let (r, body) = ask(&f.server, Method::GET, &url, None).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(body.as_deref(), Some(&bytes[..]), "{path}");
            assert_eq!(header(&r, "etag"), format!("\"{id}\""), "{path}");
            assert_eq!(id, TitleId::of(bytes), "{path}: the ETag is the file's b3sum");
            assert_eq!(header(&r, "content-type"), fillmesh_protocol::package::content_type(path));
            assert_eq!(header(&r, "content-length"), bytes.len().to_string());
            assert_eq!(header(&r, "accept-ranges"), "bytes");
            assert_eq!(header(&r, "access-control-allow-origin"), "*");
            // HEAD: the same head, no body.
            let (h, body) = ask(&f.server, Method::HEAD, &url, None).await;
            assert_eq!(h.status(), StatusCode::OK);
            assert_eq!(body, Some(Vec::new()));
            assert_eq!(header(&h, "content-length"), bytes.len().to_string());
            assert_eq!(header(&h, "etag"), header(&r, "etag"));
            if bytes.is_empty() {
                continue;
            }
            // Ranges inside the file: first byte, last byte, across chunk boundaries, suffix,
            // open-ended; the Content-Range is the file's, not the data file's.
            let len = bytes.len() as u64;
            let cases = [
                (0, 0),
                (len - 1, len - 1),
                (CHUNK.saturating_sub(5).min(len - 1), (CHUNK + 5).min(len - 1)),
                (len / 3, len - 1),
                (1, len.saturating_sub(2).max(1)),
            ];
            for (a, b) in cases {
                let (r, body) = ask(&f.server, Method::GET, &url, Some(&format!("bytes={a}-{b}"))).await;
                assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{path} {a}-{b}");
                assert_eq!(header(&r, "content-range"), format!("bytes {a}-{b}/{len}"), "{path}");
                assert_eq!(body.as_deref(), Some(&bytes[a as usize..=b as usize]), "{path} {a}-{b}");
            }
            let (r, body) = ask(&f.server, Method::GET, &url, Some("bytes=-3")).await;
            assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
            assert_eq!(body.as_deref(), Some(&bytes[bytes.len().saturating_sub(3)..]), "{path}");
            let (r, _) = ask(&f.server, Method::GET, &url, Some(&format!("bytes={len}-"))).await;
            assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{path}");
            assert_eq!(header(&r, "content-range"), format!("bytes */{len}"));
        }
        // Content types a player needs.
        for (path, want) in [
            ("master.m3u8", "application/vnd.apple.mpegurl"),
            ("v0/seg_1.m4s", "video/iso.segment"),
            ("v0/init.mp4", "video/mp4"),
            ("subs/en.vtt", "text/vtt"),
        ] {
            let (r, _) = ask(&f.server, Method::HEAD, &format!("/titles/{}/{path}", f.title), None).await;
            assert_eq!(header(&r, "content-type"), want, "{path}");
        }
    });
}

#[test]
fn the_listing_is_answered_with_and_without_the_slash_and_hashes_to_the_package_id() {
    let f = fixture(|_| true);
    runtime().block_on(async {
        let listing = f.manifest.listing().unwrap();
        for url in [format!("/titles/{}/", f.title), format!("/titles/{}", f.title)] {
            let (r, body) = ask(&f.server, Method::GET, &url, None).await;
            assert_eq!(r.status(), StatusCode::OK, "{url}");
            assert_eq!(header(&r, "content-type"), "text/plain; charset=utf-8");
            assert_eq!(header(&r, "etag"), format!("\"{}\"", f.title));
            let body = body.unwrap();
            assert_eq!(String::from_utf8(body.clone()).unwrap(), listing);
            assert_eq!(TitleId::of(&body), f.title);
            let (h, body) = ask(&f.server, Method::HEAD, &url, None).await;
            assert_eq!(header(&h, "content-length"), listing.len().to_string());
            assert_eq!(body, Some(Vec::new()));
            let (r, body) = ask(&f.server, Method::GET, &url, Some("bytes=0-63")).await;
            assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
            assert_eq!(body.unwrap(), listing.as_bytes()[..64]);
        }
        // A one-file title is as it was: its bytes at /titles/<id>, nothing under it.
        let (r, body) = ask(&f.server, Method::GET, &format!("/titles/{}", f.single), None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(TitleId::of(&body.unwrap()), f.single);
        assert_eq!(header(&r, "content-type"), "video/mp4");
        for rest in ["", "x", "feature.mp4", "../x"] {
            let (r, _) = ask(&f.server, Method::GET, &format!("/titles/{}/{rest}", f.single), None).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{rest}");
        }
    });
}

#[test]
fn a_path_not_in_the_listing_or_no_package_may_hold_is_404_and_a_bad_escape_400() {
    let f = fixture(|_| true);
    // A file outside the package that a traversal would reach if a path were ever opened.
    std::fs::write(f.dir.path().join("secret"), b"outside").unwrap();
    runtime().block_on(async {
        let t = f.title;
        let not_found = [
            "v0/seg_9.m4s",
            "V0/seg_1.m4s",
            "v0",
            "v0/",
            "../secret",
            "../../secret",
            "v0/../master.m3u8",
            "./master.m3u8",
            "%2e%2e/secret",
            "%2E%2E%2Fsecret",
            ".%2e/secret",
            "v0%2F..%2Fmaster.m3u8",
            "v0/%2e%2e/master.m3u8",
            "..%5Csecret",
            "v0%5Cseg_1.m4s",
            "%2Fetc%2Fpasswd",
            "/etc/passwd",
            "//etc/passwd",
            "v0//seg_1.m4s",
            "master.m3u8%00",
            "master.m3u8%0A",
            "%00",
            "%252e%252e/secret",
        ];
        for rest in not_found {
            let (r, body) = ask(&f.server, Method::GET, &format!("/titles/{t}/{rest}"), None).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{rest}");
            let body = String::from_utf8(body.unwrap()).unwrap();
            assert!(body.ends_with('\n') && body.len() < 100, "{rest}: {body}");
            assert!(!body.contains("outside"));
        }
        for rest in ["%zz", "master.m3u8%", "%2", "%ff", "%C3"] {
            let (r, _) = ask(&f.server, Method::GET, &format!("/titles/{t}/{rest}"), None).await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{rest}");
        }
        // Longer than any escaped path: refused before decoding.
        let long = "a".repeat(fillmesh_protocol::package::MAX_PATH * 3 + 1);
        let (r, _) = ask(&f.server, Method::GET, &format!("/titles/{t}/{long}"), None).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        // Escapes that decode to a path in the listing name that file.
        let (r, body) = ask(&f.server, Method::GET, &format!("/titles/{t}/v0%2Fseg%5F1.m4s"), None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body.unwrap(), f.files[4].1);
        // An unknown title, with or without a path.
        for url in [format!("/titles/{}/master.m3u8", "0".repeat(64)), "/titles/nope/x".to_owned()] {
            let (r, _) = ask(&f.server, Method::GET, &url, None).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{url}");
        }
        // Other methods are not allowed.
        let (r, _) = ask(&f.server, Method::POST, &format!("/titles/{t}/master.m3u8"), None).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    });
}

#[test]
fn a_file_not_held_yet_is_503_while_a_held_one_is_served() {
    // Hold every chunk but those of v0/seg_1.m4s's second chunk on.
    let probe = fixture(|_| true);
    let seg = probe.manifest.file_chunks(4);
    let f = fixture(|i| !(seg.start + 1..seg.end).contains(&i));
    runtime().block_on(async {
        let url = format!("/titles/{}/v0/seg_1.m4s", f.title);
        let (r, _) = ask(&f.server, Method::GET, &url, None).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header(&r, "retry-after"), "1");
        // HEAD: the same status, and no body (one after a HEAD's head breaks HTTP/2 streams).
        let (r, body) = ask(&f.server, Method::HEAD, &url, None).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, Some(Vec::new()));
        let (r, body) = ask(&f.server, Method::HEAD, &format!("/titles/{}/../x", f.title), None).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(body, Some(Vec::new()));
        // Its first chunk is held: a range inside it is served.
        let (r, body) = ask(&f.server, Method::GET, &url, Some("bytes=10-99")).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(body.unwrap(), f.files[4].1[10..100]);
        let (r, _) = ask(&f.server, Method::GET, &url, Some(&format!("bytes={CHUNK}-"))).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        // The next file, held whole, is served.
        let (r, body) = ask(&f.server, Method::GET, &format!("/titles/{}/v0/seg_2.m4s", f.title), None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body.unwrap(), f.files[5].1);
    });
}

#[test]
fn a_damaged_byte_of_a_file_in_a_package_is_never_served() {
    let f = fixture(|_| true);
    // v0/seg_1.m4s: damage its second chunk on disk, in the data file.
    let seg = f.manifest.file_chunks(4);
    let path = f.store.data_path(&f.title);
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let at = f.manifest.chunk_offset(seg.start + 1) + 100;
    let mut was = [0u8; 1];
    file.read_exact_at(&mut was, at).unwrap();
    file.write_all_at(&[!was[0]], at).unwrap();
    runtime().block_on(async {
        let url = format!("/titles/{}/v0/seg_1.m4s", f.title);
        let bytes = &f.files[4].1;
        // The whole file: the first chunk goes out, the damaged one is found as it is read and
        // the body is cut short before it, never a wrong byte.
        let (r, body) = ask(&f.server, Method::GET, &url, None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body, None, "a body with a damaged chunk must be cut short");
        // Now dropped: a range in it is not held.
        let (r, _) =
            ask(&f.server, Method::GET, &url, Some(&format!("bytes={}-{}", CHUNK + 50, CHUNK + 150))).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!f.store.holds(&f.title, seg.start + 1..seg.start + 2));
        assert_eq!(f.store.damaged_chunks(), 1);
        // The rest of the file and the package are served as before.
        let (r, body) = ask(&f.server, Method::GET, &url, Some("bytes=0-99")).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(body.unwrap(), bytes[..100]);
    });
    // A range that starts in a damaged chunk, asked before any read found it: 503 at once, as
    // the first chunk of a range is verified before the head is sent.
    let g = fixture(|_| true);
    let seg = g.manifest.file_chunks(4);
    let file = std::fs::OpenOptions::new().read(true).write(true).open(g.store.data_path(&g.title)).unwrap();
    file.write_all_at(&[0xAA; 8], g.manifest.chunk_offset(seg.start + 2)).unwrap();
    runtime().block_on(async {
        let url = format!("/titles/{}/v0/seg_1.m4s", g.title);
        let (r, _) = ask(&g.server, Method::GET, &url, Some(&format!("bytes={}-", 2 * CHUNK))).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(g.store.damaged_chunks(), 1);
    });
}

/// With tokens required, every path of a package (listing, files, manifest) needs a token for
/// it, however the path is written; the token goes first in the path, and the relative paths
/// below it are served as without one. Paths that name no title (metrics) need none.
#[test]
fn with_tokens_every_path_of_a_package_needs_its_token_and_nothing_else_does() {
    use fillmesh_protocol::token::SigningKey;
    let f = fixture(|_| true);
    let key = SigningKey::generate().unwrap();
    let gate = Arc::new(super::Gate::under_trackers(1, f.dir.path()));
    gate.learn(0, true, vec![key.public()]);
    let server = f.server.clone().with_gate(gate);
    let later = fillmesh_protocol::token::unix_now() + 60;
    let token = key.sign(f.title, later, None).unwrap();
    let single_token = key.sign(f.single, later, None).unwrap();
    runtime().block_on(async {
        let t = f.title;
        let paths = [
            format!("/titles/{t}/"),
            format!("/titles/{t}"),
            format!("/titles/{t}/v0/seg_1.m4s"),
            format!("/titles/{t}/v0/../../x"),
            format!("/manifests/{t}"),
        ];
        for path in &paths {
            for (start, word) in
                [("", "missing"), ("/p/x", "signature"), (&*format!("/p/{single_token}"), "title")]
            {
                let (r, body) = ask(&server, Method::GET, &format!("{start}{path}"), None).await;
                assert_eq!(r.status(), StatusCode::FORBIDDEN, "{start}{path}");
                assert_eq!(header(&r, "x-fillmesh-refused"), word, "{start}{path}");
                assert_eq!(body.unwrap(), format!("{word}\n").as_bytes(), "{start}{path}");
            }
        }
        let under = |p: &str| format!("/p/{token}{p}");
        let (r, body) = ask(&server, Method::GET, &under(&paths[0]), None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(String::from_utf8(body.unwrap()).unwrap(), f.manifest.listing().unwrap());
        let (r, body) = ask(&server, Method::GET, &under(&paths[2]), None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let (_, seg) = f.files.iter().find(|(p, _)| *p == "v0/seg_1.m4s").unwrap();
        assert_eq!(body.unwrap(), *seg);
        // A path no package may hold is refused as without a token: 404.
        assert_eq!(
            ask(&server, Method::GET, &under(&paths[3]), None).await.0.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(ask(&server, Method::GET, &under(&paths[4]), None).await.0.status(), StatusCode::OK);
        // Players never see the node's operator views, with a token or without.
        for path in ["/metrics", &under("/metrics"), "/health"] {
            let (r, body) = ask(&server, Method::GET, path, None).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(body.unwrap(), b"not found\n", "{path}");
        }
    });
}
