//! Property tests of the wire: every message round-trips through its frame, the largest legal
//! message of each type fits its bound, and arbitrary bytes never panic the decoder.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::fmt::Debug;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use common::*;
use fillmesh_protocol::frame::{self, decode_body, decode_frame, FrameError, Message, PREFIX_LEN};
use fillmesh_protocol::messages::*;
use fillmesh_protocol::*;
use proptest::prelude::*;

fn round_trip<M: Message + PartialEq + Debug>(msg: &M) -> Result<(), TestCaseError> {
    let bytes = frame::encode(msg).unwrap();
    prop_assert!(bytes.len() - PREFIX_LEN <= M::MAX_BODY);
    let (back, used) = decode_frame::<M>(&bytes).unwrap().expect("a whole frame");
    prop_assert_eq!(used, bytes.len());
    prop_assert_eq!(&back, msg);
    // Every strict prefix of the frame is "need more bytes", never an error or a message.
    for cut in [0, 1, PREFIX_LEN, bytes.len() / 2, bytes.len() - 1] {
        if cut < bytes.len() {
            prop_assert!(matches!(decode_frame::<M>(&bytes[..cut]), Ok(None)));
        }
    }
    Ok(())
}

/// Arbitrary bytes as a body and as a frame: an error or a message, never a panic; a decoded
/// message re-encodes within its bound.
fn garbage<M: Message + Debug>(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(msg) = decode_body::<M>(bytes) {
        prop_assert!(frame::encode(&msg).is_ok());
    }
    let _ = decode_frame::<M>(bytes);
    Ok(())
}

/// Cases per property: 256 in CI; `FILLMESH_FUZZ_CASES=1000000` turns the decoder properties
/// into a long fuzzing run (see the README).
fn fuzz_cases() -> u32 {
    std::env::var("FILLMESH_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

/// Mutates a valid frame: flips bytes, truncates or extends it, rewrites its length prefix.
fn mutate(mut bytes: Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
    for (at, op, value) in edits {
        let i = at.index(bytes.len().max(1));
        match op % 4 {
            0 if i < bytes.len() => bytes[i] ^= value | 1,
            1 => bytes.truncate(i),
            2 => bytes.insert(i.min(bytes.len()), *value),
            _ if bytes.len() >= PREFIX_LEN => {
                let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                let len = len.wrapping_add(u32::from(*value)).wrapping_sub(128);
                bytes[..PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
            }
            _ => {}
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    proptest::collection::vec(any::<(prop::sample::Index, u8, u8)>(), 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

    #[test]
    fn mutated_mesh_requests_never_panic(msg in mesh_request(), e in edits()) {
        garbage::<MeshRequest>(&mutate(frame::encode(&msg).unwrap(), &e))?;
    }
    #[test]
    fn mutated_mesh_responses_never_panic(msg in mesh_response(), e in edits()) {
        garbage::<MeshResponse>(&mutate(frame::encode(&msg).unwrap(), &e))?;
    }
    #[test]
    fn mutated_tracker_requests_never_panic(msg in tracker_request(), e in edits()) {
        garbage::<TrackerRequest>(&mutate(frame::encode(&msg).unwrap(), &e))?;
    }
    #[test]
    fn mutated_tracker_responses_never_panic(msg in tracker_response(), e in edits()) {
        garbage::<TrackerResponse>(&mutate(frame::encode(&msg).unwrap(), &e))?;
    }
    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        garbage::<MeshRequest>(&bytes)?;
        garbage::<MeshResponse>(&bytes)?;
        garbage::<TrackerRequest>(&bytes)?;
        garbage::<TrackerResponse>(&bytes)?;
        let _ = postcard::from_bytes::<Manifest>(&bytes);
        let _ = postcard::from_bytes::<ChunkBitmap>(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mesh_requests_round_trip(msg in mesh_request()) { round_trip(&msg)?; }
    #[test]
    fn mesh_responses_round_trip(msg in mesh_response()) { round_trip(&msg)?; }
    #[test]
    fn tracker_requests_round_trip(msg in tracker_request()) { round_trip(&msg)?; }
    #[test]
    fn tracker_responses_round_trip(msg in tracker_response()) { round_trip(&msg)?; }

    #[test]
    fn oversized_prefixes_are_refused_before_the_body(len in any::<u32>()) {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let verdict = decode_frame::<MeshRequest>(&bytes);
        if len as usize > MeshRequest::MAX_BODY {
            let refused = matches!(verdict, Err(FrameError::TooLarge { .. }));
            prop_assert!(refused);
        } else {
            let too_large = matches!(verdict, Err(FrameError::TooLarge { .. }));
            prop_assert!(!too_large);
        }
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = frame::encode(&MeshRequest::Held { title: TitleId::of(b"t") }).unwrap();
    bytes.push(0);
    let len = (bytes.len() - PREFIX_LEN) as u32;
    bytes[..PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    assert!(matches!(decode_frame::<MeshRequest>(&bytes), Err(FrameError::Trailing { extra: 1, .. })));
}

#[test]
fn inconsistent_manifests_and_bitmaps_are_refused_on_decode() {
    // A manifest claiming two chunks of 1 KiB for a 1 KiB title.
    #[derive(serde::Serialize)]
    enum Fake {
        _Hello,
        Manifest { title: TitleId, manifest: (u64, u32, Vec<[u8; 32]>) },
        _Chunk,
        Held { title: TitleId, held: (u32, Vec<u8>) },
    }
    let title = TitleId::of(b"x");
    let m =
        postcard::to_allocvec(&Fake::Manifest { title, manifest: (1024, 1024, vec![[0; 32]; 2]) }).unwrap();
    assert!(matches!(decode_body::<MeshResponse>(&m), Err(FrameError::Malformed { .. })));
    let m =
        postcard::to_allocvec(&Fake::Manifest { title, manifest: (1024, 1000, vec![[0; 32]; 1]) }).unwrap();
    assert!(matches!(decode_body::<MeshResponse>(&m), Err(FrameError::Malformed { .. })));
    let h = postcard::to_allocvec(&Fake::Held { title, held: (3, vec![0xff]) }).unwrap();
    assert!(matches!(decode_body::<MeshResponse>(&h), Err(FrameError::Malformed { .. })));
    let h = postcard::to_allocvec(&Fake::Held { title, held: (3, vec![0b101]) }).unwrap();
    assert!(decode_body::<MeshResponse>(&h).is_ok());
}

#[test]
fn the_largest_legal_messages_fit_their_bounds() {
    let long = |n: usize| "é".repeat(n / 2);
    let node: NodeId = "z".repeat(NodeId::MAX_LEN).parse().unwrap();
    let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), u16::MAX);
    let cs = ChunkSize::MIN;
    let manifest =
        Manifest::new(Manifest::MAX_CHUNKS * cs.bytes(), cs, vec![[0xff; 32]; Manifest::MAX_CHUNKS as usize])
            .unwrap();
    let held = ChunkBitmap::full(Manifest::MAX_CHUNKS as u32).unwrap();
    let title = TitleId::from_bytes([0xff; 32]);
    frame::encode(&MeshResponse::Manifest { title, manifest: manifest.clone() }).unwrap();
    frame::encode(&MeshResponse::Held { title, held: held.clone() }).unwrap();
    frame::encode(&MeshRequest::Hello(Hello { version: u16::MAX, role: Role::Tool, agent: long(MAX_LABEL) }))
        .unwrap();
    frame::encode(&TrackerRequest::Publish { title, name: long(MAX_TEXT), manifest }).unwrap();
    let fetched = vec![Fetched { chunk: u32::MAX, source: node.clone() }; MAX_FETCHED];
    frame::encode(&TrackerRequest::ReportHeld { title, held, fetched }).unwrap();
    frame::encode(&TrackerResponse::Members { nodes: vec![node.clone(); MAX_MEMBERS] }).unwrap();
    frame::encode(&TrackerResponse::Trackers { live: vec![node.clone(); MAX_TRACKERS] }).unwrap();
    frame::encode(&TrackerRequest::Register(Registration {
        role: Role::Appliance,
        mesh_addr: addr,
        site: long(MAX_LABEL),
        region: long(MAX_LABEL),
        prefixes: vec![IpPrefix::new(addr.ip(), 128).unwrap(); MAX_PREFIXES],
        upload_bps: u64::MAX,
        disk_bytes: u64::MAX,
        cert_sha256: Some([0xff; 32]),
    }))
    .unwrap();
    frame::encode(&MeshResponse::Have { title, chunks: vec![u32::MAX; MAX_HAVES] }).unwrap();
    frame::encode(&TrackerRequest::FillSummary {
        title,
        gained: vec![u32::MAX..u32::MAX; MAX_GAINED],
        bytes: [u64::MAX; 4],
    })
    .unwrap();
    let parent = Parent { node: node.clone(), addr, class: SourceClass::CrossRegion };
    let plan = FillPlan {
        title,
        parents: vec![parent; MAX_PARENTS],
        origin: vec![u32::MAX..u32::MAX; MAX_RANGES],
        import: vec![u32::MAX..u32::MAX; MAX_RANGES],
        epoch: u64::MAX,
    };
    frame::encode(&TrackerResponse::Fills {
        plans: vec![plan; MAX_FILLS],
        evict: vec![title; MAX_EVICT],
        epoch: u64::MAX,
    })
    .unwrap();
    let target = SteerTarget {
        node,
        url: long(MAX_TEXT),
        cert_sha256: Some([0xff; 32]),
        site: long(MAX_LABEL),
        region: long(MAX_LABEL),
    };
    frame::encode(&TrackerResponse::Steer { targets: vec![target; MAX_TARGETS], reason: long(MAX_TEXT) })
        .unwrap();
    let entry = CatalogEntry { title, name: long(MAX_TEXT), len: u64::MAX, chunk_size: ChunkSize::MAX };
    frame::encode(&TrackerResponse::Catalog { titles: vec![entry; MAX_CATALOG] }).unwrap();
}

#[test]
fn over_long_fields_are_refused() {
    let hello = MeshRequest::Hello(Hello { version: 1, role: Role::Tool, agent: "a".repeat(MAX_LABEL + 1) });
    let body = postcard::to_allocvec(&hello).unwrap();
    assert!(matches!(decode_body::<MeshRequest>(&body), Err(FrameError::Malformed { .. })));
    let reg = TrackerRequest::Register(Registration {
        role: Role::Appliance,
        mesh_addr: "127.0.0.1:1".parse().unwrap(),
        site: "s".into(),
        region: "r".into(),
        prefixes: vec!["10.0.0.0/8".parse().unwrap(); MAX_PREFIXES + 1],
        upload_bps: 1,
        disk_bytes: 1,
        cert_sha256: None,
    });
    let body = postcard::to_allocvec(&reg).unwrap();
    assert!(matches!(decode_body::<TrackerRequest>(&body), Err(FrameError::Malformed { .. })));
    let fills = TrackerResponse::Fills {
        plans: Vec::new(),
        evict: vec![TitleId::from_bytes([1; 32]); MAX_EVICT + 1],
        epoch: 0,
    };
    let body = postcard::to_allocvec(&fills).unwrap();
    assert!(matches!(decode_body::<TrackerResponse>(&body), Err(FrameError::Malformed { .. })));
}

proptest! {
    /// An error answer built from any reason, however long or wherever its multi-byte
    /// characters fall, still decodes on the other side, carrying the reason's start.
    #[test]
    fn an_error_reply_from_any_reason_decodes(reason in "\\PC{0,1500}") {
        let reply = ErrorReply::new(ErrorCode::Internal, reason.clone());
        prop_assert!(reply.message.len() <= MAX_TEXT);
        prop_assert!(reason.starts_with(&reply.message));
        prop_assert!(reason.len() <= MAX_TEXT || reply.message.len() + 4 > MAX_TEXT);
        let bytes = frame::encode(&MeshResponse::Error(reply.clone())).unwrap();
        let (back, _) = decode_frame::<MeshResponse>(&bytes).unwrap().expect("a whole frame");
        prop_assert_eq!(back, MeshResponse::Error(reply));
    }
}
