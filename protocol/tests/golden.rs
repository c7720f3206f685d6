//! Golden frames: one encoded frame for every variant of every mesh and tracker message of
//! protocol version 1, kept in `tests/golden/v1.frames` (a line per frame: its name and its
//! bytes in hex). Any change to what goes on the wire (a field added, moved or retyped, a
//! variant inserted before another) changes a frame and fails [`this_build_encodes_the_golden_frames`];
//! such a change must bump `PROTOCOL_VERSION` and keep a decoder for the previous version, whose
//! frames stay here and must still decode ([`every_kept_version_decodes`]). Variants added at
//! the end of an enum keep the others' frames: their new frames are added to the file
//! (`FILLMESH_BLESS=1 cargo test -p fillmesh-protocol --test golden` writes it; review the diff).
//!
//! Every message is named by an exhaustive `match` (no wildcard arm), so a new variant does not
//! compile here until it has a name, and [`every_variant_has_a_golden_frame`] checks that the
//! instances below cover every name.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use fillmesh_protocol::frame::{decode_frame, encode, Message};
use fillmesh_protocol::messages::*;
use fillmesh_protocol::token::{KeyId, PublicKey};
use fillmesh_protocol::{ChunkBitmap, ChunkSize, IpPrefix, Manifest, NodeId, TitleId};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");

fn title(n: u8) -> TitleId {
    TitleId::from_bytes(std::array::from_fn(|i| n.wrapping_add(i as u8)))
}

fn node(s: &str) -> NodeId {
    s.parse().unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn hello(role: Role) -> Hello {
    Hello { version: 1, role, agent: "fillmesh/golden".into() }
}

fn manifest() -> Manifest {
    let bytes: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
    Manifest::from_bytes(&bytes, ChunkSize::new(1024).unwrap()).unwrap().1
}

fn bitmap() -> ChunkBitmap {
    let mut held = ChunkBitmap::new(11).unwrap();
    for i in [0, 3, 10] {
        held.insert(i);
    }
    held
}

fn mesh_requests() -> Vec<MeshRequest> {
    vec![
        MeshRequest::Hello(hello(Role::Appliance)),
        MeshRequest::Manifest { title: title(1) },
        MeshRequest::Chunk { title: title(2), index: 7 },
        MeshRequest::Held { title: title(3) },
        MeshRequest::Subscribe { title: title(4) },
    ]
}

fn mesh_name(m: &MeshRequest) -> &'static str {
    match m {
        MeshRequest::Hello(_) => "MeshRequest::Hello",
        MeshRequest::Manifest { .. } => "MeshRequest::Manifest",
        MeshRequest::Chunk { .. } => "MeshRequest::Chunk",
        MeshRequest::Held { .. } => "MeshRequest::Held",
        MeshRequest::Subscribe { .. } => "MeshRequest::Subscribe",
    }
}

fn mesh_responses() -> Vec<MeshResponse> {
    vec![
        MeshResponse::Hello(hello(Role::Origin)),
        MeshResponse::Manifest { title: title(1), manifest: manifest() },
        MeshResponse::Chunk(ChunkHeader { title: title(2), index: 7, len: 1024 }),
        MeshResponse::Held { title: title(3), held: bitmap() },
        MeshResponse::Error(ErrorReply::new(ErrorCode::Busy, "busy: retry".into())),
        MeshResponse::Have { title: title(4), chunks: vec![1, 2, 65_536] },
    ]
}

fn mesh_response_name(m: &MeshResponse) -> &'static str {
    match m {
        MeshResponse::Hello(_) => "MeshResponse::Hello",
        MeshResponse::Manifest { .. } => "MeshResponse::Manifest",
        MeshResponse::Chunk(_) => "MeshResponse::Chunk",
        MeshResponse::Held { .. } => "MeshResponse::Held",
        MeshResponse::Error(_) => "MeshResponse::Error",
        MeshResponse::Have { .. } => "MeshResponse::Have",
    }
}

fn tracker_requests() -> Vec<TrackerRequest> {
    vec![
        TrackerRequest::Hello(hello(Role::Appliance)),
        TrackerRequest::Register(Registration {
            role: Role::Appliance,
            mesh_addr: addr("127.0.0.11:4433"),
            site: "s0".into(),
            region: "r0".into(),
            prefixes: vec![
                IpPrefix::new("127.0.11.0".parse::<IpAddr>().unwrap(), 24).unwrap(),
                IpPrefix::new("2001:db8::".parse::<IpAddr>().unwrap(), 48).unwrap(),
            ],
            upload_bps: 125_000_000,
            disk_bytes: 1 << 40,
            cert_sha256: Some([0xab; 32]),
        }),
        TrackerRequest::Heartbeat(Heartbeat {
            healthy: true,
            uploads_in_flight: 3,
            upload_bps_used: 0,
            player_sessions: 12,
            disk_used: 5 << 30,
        }),
        TrackerRequest::ReportHeld {
            title: title(5),
            held: bitmap(),
            fetched: vec![Fetched { chunk: 3, source: node("12D3KooWParent") }],
        },
        TrackerRequest::ReportFailure {
            title: title(6),
            chunk: 9,
            source: node("12D3KooWLiar"),
            kind: FailureKind::Corrupt,
        },
        TrackerRequest::Steer { title: title(7), client_ip: "127.1.0.42".parse().unwrap() },
        TrackerRequest::Catalog,
        TrackerRequest::Members,
        TrackerRequest::Publish { title: title(8), name: "feature.mp4".into(), manifest: manifest() },
        TrackerRequest::Fills,
        TrackerRequest::FillSummary { title: title(9), gained: vec![0..4, 10..11], bytes: [1, 2, 3, 4] },
        TrackerRequest::Trackers,
        TrackerRequest::PlaybackKeys,
    ]
}

fn tracker_name(m: &TrackerRequest) -> &'static str {
    match m {
        TrackerRequest::Hello(_) => "TrackerRequest::Hello",
        TrackerRequest::Register(_) => "TrackerRequest::Register",
        TrackerRequest::Heartbeat(_) => "TrackerRequest::Heartbeat",
        TrackerRequest::ReportHeld { .. } => "TrackerRequest::ReportHeld",
        TrackerRequest::ReportFailure { .. } => "TrackerRequest::ReportFailure",
        TrackerRequest::Steer { .. } => "TrackerRequest::Steer",
        TrackerRequest::Catalog => "TrackerRequest::Catalog",
        TrackerRequest::Members => "TrackerRequest::Members",
        TrackerRequest::Publish { .. } => "TrackerRequest::Publish",
        TrackerRequest::Fills => "TrackerRequest::Fills",
        TrackerRequest::FillSummary { .. } => "TrackerRequest::FillSummary",
        TrackerRequest::Trackers => "TrackerRequest::Trackers",
        TrackerRequest::PlaybackKeys => "TrackerRequest::PlaybackKeys",
    }
}

fn tracker_responses() -> Vec<TrackerResponse> {
    vec![
        TrackerResponse::Hello(hello(Role::Tracker)),
        TrackerResponse::Registered { heartbeat_interval_ms: 1000 },
        TrackerResponse::Ack,
        TrackerResponse::Steer {
            targets: vec![SteerTarget {
                node: node("12D3KooWNear"),
                url: "https://127.0.0.11:4433/titles/x".into(),
                cert_sha256: Some([0xcd; 32]),
                site: "s0".into(),
                region: "r0".into(),
            }],
            reason: String::new(),
        },
        TrackerResponse::Catalog {
            titles: vec![CatalogEntry {
                title: title(10),
                name: "feature.mp4".into(),
                len: 2500,
                chunk_size: ChunkSize::new(1024).unwrap(),
            }],
        },
        TrackerResponse::Members { nodes: vec![node("12D3KooWA"), node("12D3KooWB")] },
        TrackerResponse::Error(ErrorReply::new(ErrorCode::NotRegistered, "register again".into())),
        TrackerResponse::Fills {
            plans: vec![FillPlan {
                title: title(11),
                parents: vec![
                    Parent {
                        node: node("12D3KooWSite"),
                        addr: addr("127.0.0.12:4433"),
                        class: SourceClass::SameSite,
                    },
                    Parent {
                        node: node("12D3KooWSource"),
                        addr: addr("127.0.0.10:4433"),
                        class: SourceClass::Origin,
                    },
                ],
                origin: vec![0..2, 5..6],
                import: vec![2..3, 7..8],
                epoch: 41,
            }],
            evict: vec![title(12)],
            epoch: 42,
        },
        TrackerResponse::Epoch(43),
        TrackerResponse::Trackers { live: vec![node("12D3KooWTracker")] },
        TrackerResponse::PlaybackKeys {
            required: true,
            keys: vec![PublicKey { id: KeyId([1, 2, 3, 4, 5, 6, 7, 8]), key: [0x5a; 32] }],
        },
    ]
}

fn tracker_response_name(m: &TrackerResponse) -> &'static str {
    match m {
        TrackerResponse::Hello(_) => "TrackerResponse::Hello",
        TrackerResponse::Registered { .. } => "TrackerResponse::Registered",
        TrackerResponse::Ack => "TrackerResponse::Ack",
        TrackerResponse::Steer { .. } => "TrackerResponse::Steer",
        TrackerResponse::Catalog { .. } => "TrackerResponse::Catalog",
        TrackerResponse::Members { .. } => "TrackerResponse::Members",
        TrackerResponse::Error(_) => "TrackerResponse::Error",
        TrackerResponse::Fills { .. } => "TrackerResponse::Fills",
        TrackerResponse::Epoch(_) => "TrackerResponse::Epoch",
        TrackerResponse::Trackers { .. } => "TrackerResponse::Trackers",
        TrackerResponse::PlaybackKeys { .. } => "TrackerResponse::PlaybackKeys",
    }
}

/// Every variant's name, in the order of the enums' declarations: what the instances must cover.
const NAMES: [&str; 35] = [
    "MeshRequest::Hello",
    "MeshRequest::Manifest",
    "MeshRequest::Chunk",
    "MeshRequest::Held",
    "MeshRequest::Subscribe",
    "MeshResponse::Hello",
    "MeshResponse::Manifest",
    "MeshResponse::Chunk",
    "MeshResponse::Held",
    "MeshResponse::Error",
    "MeshResponse::Have",
    "TrackerRequest::Hello",
    "TrackerRequest::Register",
    "TrackerRequest::Heartbeat",
    "TrackerRequest::ReportHeld",
    "TrackerRequest::ReportFailure",
    "TrackerRequest::Steer",
    "TrackerRequest::Catalog",
    "TrackerRequest::Members",
    "TrackerRequest::Publish",
    "TrackerRequest::Fills",
    "TrackerRequest::FillSummary",
    "TrackerRequest::Trackers",
    "TrackerRequest::PlaybackKeys",
    "TrackerResponse::Hello",
    "TrackerResponse::Registered",
    "TrackerResponse::Ack",
    "TrackerResponse::Steer",
    "TrackerResponse::Catalog",
    "TrackerResponse::Members",
    "TrackerResponse::Error",
    "TrackerResponse::Fills",
    "TrackerResponse::Epoch",
    "TrackerResponse::Trackers",
    "TrackerResponse::PlaybackKeys",
];

fn frames_of<M: Message>(messages: Vec<M>, name: fn(&M) -> &'static str) -> Vec<(&'static str, Vec<u8>)> {
    messages.iter().map(|m| (name(m), encode(m).unwrap())).collect()
}

/// This build's frame of every variant, by name.
fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let mut all = frames_of(mesh_requests(), mesh_name);
    all.extend(frames_of(mesh_responses(), mesh_response_name));
    all.extend(frames_of(tracker_requests(), tracker_name));
    all.extend(frames_of(tracker_responses(), tracker_response_name));
    all
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

/// The frames kept in `file`, by name.
fn kept(file: &str) -> BTreeMap<String, Vec<u8>> {
    let text = std::fs::read_to_string(format!("{GOLDEN}/{file}")).unwrap();
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, bytes) = l.split_once(' ').unwrap();
            (name.to_owned(), unhex(bytes))
        })
        .collect()
}

#[test]
fn every_variant_has_a_golden_frame() {
    let names: Vec<&str> = frames().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, NAMES);
}

#[test]
fn this_build_encodes_the_golden_frames() {
    let file = format!("v{PROTOCOL_VERSION}.frames");
    let ours = frames();
    if std::env::var_os("FILLMESH_BLESS").is_some() {
        let mut text = format!(
            "# Golden frames of protocol version {PROTOCOL_VERSION}: name, then the frame (length prefix and\n\
             # postcard body) in hex. Written by FILLMESH_BLESS=1; see tests/golden.rs.\n"
        );
        for (name, bytes) in &ours {
            text.push_str(&format!("{name} {}\n", hex(bytes)));
        }
        std::fs::write(format!("{GOLDEN}/{file}"), text).unwrap();
    }
    let golden = kept(&file);
    for (name, bytes) in &ours {
        let kept = golden.get(*name).unwrap_or_else(|| panic!("no golden frame for {name} in {file}"));
        assert_eq!(
            hex(bytes),
            hex(kept),
            "{name}: the wire changed; bump PROTOCOL_VERSION (tests/golden.rs)"
        );
    }
    assert_eq!(golden.len(), ours.len(), "{file} has frames for variants this build does not have");
}

/// Decodes `bytes` as `M` and checks it reads back as the instance of that name.
fn decodes_to<M: Message + PartialEq + std::fmt::Debug>(
    name: &str,
    bytes: &[u8],
    ours: Vec<M>,
    name_of: fn(&M) -> &'static str,
) -> bool {
    let Some(expected) = ours.into_iter().find(|m| name_of(m) == name) else { return false };
    let (decoded, used) = decode_frame::<M>(bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len(), "{name}");
    assert_eq!(decoded, expected, "{name}");
    true
}

/// The rule between versions: a node of version N keeps a decoder for version N-1, so every
/// frame of every version kept here decodes with this build. Today only version 1 exists, read
/// by this build's own types; a version 2 reads `v1.frames` with the decoder it keeps for 1.
#[test]
fn every_kept_version_decodes() {
    if std::env::var_os("FILLMESH_BLESS").is_some() {
        // The file is being written by the test beside this one: read it in the next run.
        return;
    }
    for entry in std::fs::read_dir(GOLDEN).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        for (name, bytes) in kept(&file) {
            let found = decodes_to(&name, &bytes, mesh_requests(), mesh_name)
                || decodes_to(&name, &bytes, mesh_responses(), mesh_response_name)
                || decodes_to(&name, &bytes, tracker_requests(), tracker_name)
                || decodes_to(&name, &bytes, tracker_responses(), tracker_response_name);
            assert!(found, "{file}: {name} is no message this build knows");
        }
    }
}

/// The N-1 rule: a build accepts its own version and the one before, and keeps the golden
/// frames of each (so that their decoding is tested here); nothing newer, nothing before 1.
#[test]
fn every_accepted_version_keeps_its_golden_frames() {
    assert!(accepts_version(PROTOCOL_VERSION));
    assert!(!accepts_version(PROTOCOL_VERSION + 1));
    assert!(!accepts_version(0));
    assert_eq!(accepts_version(PROTOCOL_VERSION - 1), PROTOCOL_VERSION > 1);
    for version in OLDEST_ACCEPTED_VERSION..=PROTOCOL_VERSION {
        let file = format!("{GOLDEN}/v{version}.frames");
        assert!(
            std::path::Path::new(&file).exists(),
            "version {version} is accepted: its golden frames must stay in {file}"
        );
        assert!(!kept(&format!("v{version}.frames")).is_empty(), "{file} is empty");
    }
}
