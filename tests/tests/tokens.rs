//! Playback tokens with real processes: appliances serve a title only to a request carrying a
//! token steering signed for it, over HTTP/3 (niquests) and HTTPS on TCP (curl, HTTP/2 and
//! HTTP/1.1). Each way of being wrong is refused with its own word and no byte of content;
//! keys rotate (the old key's tokens play until retired, new tokens carry the new key); no
//! appliance ever holds a signing key; reports are counted by token; `fillmesh play` plays
//! across a token's expiry with one renewal per expiry and no error.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fillmesh_protocol::token::{unix_now as now, Decoded, SigningKey};
use fillmesh_protocol::{IpPrefix, TitleId};
use fillmesh_tests::clients::{curl, every_transport, Answer};
use fillmesh_tests::mesh::{Mesh, Title};
use fillmesh_tests::{fillmesh, http, metric, test_bytes, wait_for};

const MIB: usize = 1 << 20;

/// The tracker's keys as its key file keeps them: (id, signing key, accepted until).
fn tracker_keys(mesh: &Mesh) -> Vec<(String, SigningKey, Option<u64>)> {
    let text = std::fs::read_to_string(mesh.dir.path().join("tracker/playback-keys.json")).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    file["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let seed: [u8; 32] =
                URL_SAFE_NO_PAD.decode(k["seed"].as_str().unwrap()).unwrap().try_into().unwrap();
            (
                k["id"].as_str().unwrap().to_owned(),
                SigningKey::from_seed(&seed).unwrap(),
                k["accepted_until"].as_u64(),
            )
        })
        .collect()
}

/// The key id a token names.
fn key_of(token_path: &str) -> String {
    let token = token_path.strip_prefix("/p/").unwrap();
    Decoded::from_text(token).unwrap().claims.key.to_string()
}

/// Every answer a refusal: 403, its one word (body and header), no content.
fn assert_refused(answers: &[(&str, Vec<Answer>)], word: &str, what: &str) {
    for (transport, list) in answers {
        for a in list {
            assert_eq!(a.status, 403, "{what} over {transport}: {a:?}");
            assert_eq!(a.text(), format!("{word}\n"), "{what} over {transport}");
            assert_eq!(a.header("x-fillmesh-refused"), word, "{what} over {transport}");
        }
    }
}

/// A request for the title's first MiB and one for its manifest, under `base` + `start`.
fn ask(base: &str, start: &str, title: &str) -> Vec<(&'static str, Vec<Answer>)> {
    let title_path = format!("{start}/titles/{title}");
    let manifest_path = format!("{start}/manifests/{title}");
    every_transport(
        base,
        &[("GET", title_path.as_str(), Some("bytes=0-1048575")), ("GET", manifest_path.as_str(), None)],
    )
}

/// A token signed by `key` with these claims, as the start of a path.
fn minted(key: &SigningKey, title: &str, expires: u64, prefix: Option<IpPrefix>) -> String {
    format!("/p/{}", key.sign(title.parse().unwrap(), expires, prefix).unwrap())
}

#[test]
fn an_appliance_serves_a_title_only_with_a_token_good_for_it() {
    let mesh =
        Mesh::start_tracked("mesh", "50MB", 1, Title::Sample(3 * MIB), 0, &[], &["--token-bind", "given"]);
    mesh.wait_complete(Duration::from_secs(60));
    let bytes = std::fs::read(&mesh.file).unwrap();
    let other = mesh.seed(&{
        let f = mesh.dir.path().join("other.bin");
        std::fs::write(&f, test_bytes(MIB, 9)).unwrap();
        f
    });
    let appliance = &mesh.appliances[0].1;
    let base = format!("https://{}", appliance.mesh);
    let title = mesh.title.clone();

    // A valid token: the bytes, verified against the title's manifest, over every transport.
    let good = mesh.token_path(&title);
    for (transport, answers) in ask(&base, &good, &title) {
        assert_eq!(answers[0].status, 206, "{transport}: {:?}", answers[0]);
        assert_eq!(answers[0].body, bytes[..MIB], "{transport}");
        assert_eq!(answers[1].status, 200, "{transport}");
        let manifest: fillmesh_protocol::Manifest = postcard::from_bytes(&answers[1].body).unwrap();
        manifest.verify(&title.parse::<TitleId>().unwrap()).unwrap();
        manifest.verify_chunk(0, &answers[0].body).unwrap();
    }

    // No token.
    assert_refused(&ask(&base, "", &title), "missing", "no token");
    // A token for another title.
    assert_refused(&ask(&base, &mesh.token_path(&other), &title), "title", "another title's token");
    // A tampered token: one character of its signature changed.
    let mut tampered = good.clone().into_bytes();
    let at = tampered.len() - 20;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    assert_refused(&ask(&base, std::str::from_utf8(&tampered).unwrap(), &title), "signature", "tampered");
    // Not a token at all.
    assert_refused(&ask(&base, "/p/not-a-token", &title), "signature", "not a token");
    // Expired: signed by the tracker's own key, a minute ago.
    let keys = tracker_keys(&mesh);
    assert_eq!(keys.len(), 1, "the tracker made one key at its first start");
    let expired = minted(&keys[0].1, &title, now() - 60, None);
    assert_refused(&ask(&base, &expired, &title), "expired", "expired");
    // Bound to another client prefix, by steering itself (`--token-bind given`): the client
    // asked for is in 10.9.9.0/24, the request comes from 127.0.0.1.
    let steered = mesh.steer("10.9.9.9");
    let bound = format!("/p/{}", steered["token"].as_str().unwrap());
    let claims = Decoded::from_text(steered["token"].as_str().unwrap()).unwrap().claims;
    assert_eq!(claims.prefix, Some(IpPrefix::new("10.9.9.0".parse::<IpAddr>().unwrap(), 24).unwrap()));
    assert!(steered["targets"][0]["url"].as_str().unwrap().contains(&bound), "{steered}");
    assert_refused(&ask(&base, &bound, &title), "prefix", "another prefix");
    // A key no tracker handed out.
    let stranger = minted(&SigningKey::generate().unwrap(), &title, now() + 600, None);
    assert_refused(&ask(&base, &stranger, &title), "key", "unknown key");

    // Each refusal counted by its reason (three transports, two requests each).
    let page = appliance.metrics();
    for word in ["missing", "title", "expired", "prefix", "key"] {
        let name = format!("fillmesh_player_refused_total{{reason=\"{word}\"}}");
        assert_eq!(metric(&page, &name), Some(6.0), "{name} in\n{page}");
    }
    assert_eq!(metric(&page, "fillmesh_player_refused_total{reason=\"signature\"}"), Some(12.0));

    // No appliance (nor the origin) holds a signing key: only public halves, kept.
    let seed = URL_SAFE_NO_PAD.encode(keys[0].1.seed());
    for dir in [mesh.dir.path().join("origin"), mesh.appliances[0].0.clone()] {
        assert!(!dir.join("playback-keys.json").exists());
        let kept = std::fs::read_to_string(dir.join("playback-keys.pub.json")).unwrap();
        assert!(kept.contains(&keys[0].0), "{kept}");
        assert_no_file_holds(&dir, &seed);
    }
}

/// No file under `dir` contains `secret`.
fn assert_no_file_holds(dir: &Path, secret: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_no_file_holds(&path, secret);
        } else if let Ok(bytes) = std::fs::read(&path) {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{} holds a signing key", path.display());
        }
    }
}

#[test]
fn a_new_key_signs_and_the_old_one_plays_until_it_is_retired() {
    let mesh = Mesh::start("mesh", "50MB", 1, 2 * MIB);
    mesh.wait_complete(Duration::from_secs(60));
    let base = format!("https://{}", mesh.appliances[0].1.mesh);
    let title = mesh.title.clone();
    let plays =
        |start: &str| curl(&base, "--http2", "GET", &format!("{start}/titles/{title}"), Some("bytes=0-9"));
    let old = mesh.token_path(&title);
    let first = key_of(&old);
    assert_eq!(plays(&old).status, 206);

    // Rotation: the new key signs from now on; the old one's tokens still play.
    let tracker = mesh.dir.path().join("tracker");
    let out = fillmesh().args(["keys", "add", "--data"]).arg(&tracker).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let second = wait_for(Duration::from_secs(20), || {
        let key = key_of(&mesh.token_path(&title));
        (key != first).then_some(key)
    })
    .expect("steering signs with the new key");
    let new = mesh.token_path(&title);
    assert_eq!(key_of(&new), second);
    let keys = tracker_keys(&mesh);
    assert!(keys.iter().any(|(id, _, until)| *id == first && until.is_some_and(|u| u > now() + 3600)));
    // The appliance learns the new key with the tracker's next epoch.
    assert!(wait_for(Duration::from_secs(20), || (plays(&new).status == 206).then_some(())).is_some());
    assert_eq!(plays(&old).status, 206, "the old key's tokens play until they expire");
    let listed = fillmesh().args(["keys", "list", "--data"]).arg(&tracker).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains(&format!("{second}  created")) && listed.contains("signs"), "{listed}");

    // Retired: its tokens are refused, the new key's still play.
    let out = fillmesh().args(["keys", "retire", &first, "--data"]).arg(&tracker).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let refused = wait_for(Duration::from_secs(20), || {
        let a = plays(&old);
        (a.status == 403).then_some(a)
    })
    .expect("the retired key's tokens are refused");
    assert_eq!(refused.text(), "key\n");
    // Over every transport, for the title and its manifest.
    assert_refused(&ask(&base, &old, &title), "key", "a retired key");
    assert_eq!(plays(&new).status, 206);
    // The last key that signs cannot be retired.
    let out = fillmesh().args(["keys", "retire", &second, "--data"]).arg(&tracker).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only key that can sign"), "{out:?}");
}

#[test]
fn reports_count_once_per_token_and_twice_for_two_tokens_from_one_address() {
    let mesh = Mesh::start("mesh", "50MB", 1, 2 * MIB);
    mesh.wait_complete(Duration::from_secs(60));
    let tracker = mesh.tracker.http.clone().unwrap();
    let appliance = mesh.appliances[0].1.peer.clone();
    let title = mesh.title.clone();
    let report = |token: Option<&str>, about: &str| {
        let mut doc = serde_json::json!({ "title": about, "peer_id": appliance, "chunk": 0 });
        if let Some(t) = token {
            doc["token"] = t.into();
        }
        http(&tracker, "POST", "/report", &[("content-type", "application/json")], doc.to_string().as_bytes())
    };
    let reports = || mesh.appliance_status(&appliance).unwrap()["corrupt_reports"].as_u64().unwrap();
    let token = |start: String| start.strip_prefix("/p/").unwrap().to_owned();
    let one = token(mesh.token_path(&title));
    let two = token(mesh.token_path(&title));

    // Without a token, or with another title's, a report is refused and counts nothing.
    assert_eq!(report(None, &title), (403, "missing\n".into()));
    let other = mesh.seed(&{
        let f = mesh.dir.path().join("other.bin");
        std::fs::write(&f, test_bytes(MIB, 4)).unwrap();
        f
    });
    assert_eq!(report(Some(&token(mesh.token_path(&other))), &title).0, 403);
    assert_eq!(reports(), 0);
    // One token twice: one reporter.
    assert_eq!(report(Some(&one), &title).0, 204);
    assert_eq!(report(Some(&one), &title).0, 204);
    assert_eq!(reports(), 1);
    // A second token from the same address: a second reporter (the quorum of 2: bad).
    assert_eq!(report(Some(&two), &title).0, 204);
    assert_eq!(reports(), 2);
    assert_eq!(mesh.appliance_status(&appliance).unwrap()["bad"], true);
}

#[test]
fn play_goes_on_across_a_token_expiry_with_one_renewal_each() {
    let mesh = Mesh::start_tracked("mesh", "50MB", 1, Title::Sample(8 * MIB), 0, &[], &["--token-ttl", "2"]);
    mesh.wait_complete(Duration::from_secs(60));
    let out_file = mesh.dir.path().join("played.bin");
    // 8 MiB at 1.6 MB/s: about 5 s of play, across two or three expiries of 2 s tokens.
    let started = std::time::Instant::now();
    let out = mesh.play("127.0.0.1", &out_file, &["--rate", "1600KB"]);
    let took = started.elapsed().as_secs_f64();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert_eq!(std::fs::read(&out_file).unwrap(), std::fs::read(&mesh.file).unwrap());
    let renewals: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("token renewals (steered again after a 403): "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no renewal count in {text}"));
    eprintln!("{renewals} token renewals in a play of {took:.1} s with 2 s tokens");
    // At least one expiry was crossed; one renewal per expiry (a 2 s token, so at most one
    // every 2 s), not one per request in flight.
    assert!(renewals >= 1, "{text}");
    assert!(renewals as f64 <= took / 2.0 + 1.0, "{renewals} renewals in {took:.1} s: {text}");
    assert!(!text.contains("failing over"), "{text}");
}

#[test]
fn under_etcd_a_token_of_any_tracker_plays_on_every_appliance() {
    let Some(fleet) = fillmesh_tests::fleet::Fleet::start(2, 2, "50MB") else { return };
    let file = fleet.dir.path().join("title.bin");
    std::fs::write(&file, test_bytes(2 * MIB, 21)).unwrap();
    let title = fleet.seed(&file);
    fleet.wait_filled(&title, Duration::from_secs(60));
    let bytes = std::fs::read(&file).unwrap();
    let mut keys = Vec::new();
    for t in 0..2 {
        let (code, answer) = fleet.steer(t, &title, "127.0.0.1").unwrap();
        assert_eq!(code, 200, "{answer}");
        let token = answer["token"].as_str().unwrap_or_else(|| panic!("tracker {t}: {answer}")).to_owned();
        keys.push(key_of(&format!("/p/{token}")));
        for (_, appliance) in &fleet.appliances {
            let base = format!("https://{}", appliance.mesh);
            let path = format!("/p/{token}/titles/{title}");
            let got = wait_for(Duration::from_secs(20), || {
                let a = curl(&base, "--http2", "GET", &path, Some("bytes=0-1048575"));
                (a.status == 206).then_some(a)
            })
            .unwrap_or_else(|| panic!("tracker {t}'s token on {}", appliance.mesh));
            assert_eq!(got.body, bytes[..MIB]);
            assert_eq!(curl(&base, "--http2", "GET", &format!("/titles/{title}"), None).status, 403);
        }
    }
    // One key for the fleet, kept in etcd: no tracker's data directory holds one.
    assert_eq!(keys[0], keys[1]);
    for t in &fleet.trackers {
        assert!(!t.data.join("playback-keys.json").exists());
    }
}

#[test]
fn steering_may_require_the_operators_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("steer.key");
    std::fs::write(&key_file, "front-end-secret-0123456789\n").unwrap();
    let tracker = fillmesh_tests::NodeProcess::start_tracker(
        &dir.path().join("tracker"),
        &["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--steer-key-file", key_file.to_str().unwrap()],
    );
    let addr = tracker.http.clone().unwrap();
    let path = format!("/steer?title={}", "0".repeat(64));
    let (code, body) = http(&addr, "GET", &path, &[], b"");
    assert_eq!(code, 401, "{body}");
    let (code, _) = http(&addr, "GET", &path, &[("authorization", "Bearer front-end-secret-012345678")], b"");
    assert_eq!(code, 401);
    let (code, body) =
        http(&addr, "GET", &path, &[("authorization", "Bearer front-end-secret-0123456789")], b"");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("unknown title"), "{body}");
    // A key file too short to be a secret is refused at start, with the reason.
    std::fs::write(&key_file, "short\n").unwrap();
    let out = fillmesh()
        .args(["tracker", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("other"))
        .arg("--steer-key-file")
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("16 to 256 printable characters"), "{out:?}");
}

#[test]
fn an_open_fleet_serves_anyone() {
    let mesh = Mesh::start_tracked("mesh", "50MB", 1, Title::Sample(2 * MIB), 0, &[], &["--no-tokens"]);
    mesh.wait_complete(Duration::from_secs(60));
    let answer = mesh.steer_title(&mesh.title);
    assert!(answer.get("token").is_none(), "{answer}");
    let url = answer["targets"][0]["url"].as_str().unwrap();
    assert!(!url.contains("/p/"), "{url}");
    let base = format!("https://{}", mesh.appliances[0].1.mesh);
    let bytes = std::fs::read(&mesh.file).unwrap();
    // The appliance learns from the tracker that tokens are off (it fails closed until then).
    let got = wait_for(Duration::from_secs(20), || {
        let a = curl(&base, "--http2", "GET", &format!("/titles/{}", mesh.title), Some("bytes=0-1048575"));
        (a.status == 206).then_some(a)
    })
    .expect("an open fleet's appliance serves without a token");
    assert_eq!(got.body, bytes[..MIB]);
    // No key was made: there is nothing to sign with.
    assert!(!mesh.dir.path().join("tracker/playback-keys.json").exists());
}
