//! proptest strategies for every wire message, shared by the frame tests.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

use fillmesh_protocol::messages::*;
use fillmesh_protocol::*;
use proptest::collection::vec;
use proptest::prelude::*;

/// Deterministic pseudo-random bytes: proptest picks the seed, the bytes come cheap.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

pub fn title() -> impl Strategy<Value = TitleId> {
    any::<[u8; 32]>().prop_map(TitleId::from_bytes)
}

pub fn node_id() -> impl Strategy<Value = NodeId> {
    "[1-9A-HJ-NP-Za-km-z]{1,64}".prop_map(|s| s.parse().unwrap())
}

pub fn text(max: usize) -> impl Strategy<Value = String> {
    // Multi-byte characters included; the bound is in bytes.
    proptest::string::string_regex(&format!(".{{0,{max}}}")).unwrap().prop_map(move |mut s| {
        while s.len() > max {
            s.pop();
        }
        s
    })
}

pub fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Appliance), Just(Role::Origin), Just(Role::Tracker), Just(Role::Tool)]
}

pub fn socket() -> impl Strategy<Value = SocketAddr> {
    (any::<IpAddr>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

pub fn prefix() -> impl Strategy<Value = IpPrefix> {
    any::<IpAddr>().prop_flat_map(|ip| {
        let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
        (0..=max).prop_map(move |len| IpPrefix::new(ip, len).unwrap())
    })
}

pub fn manifest() -> impl Strategy<Value = Manifest> {
    (10u32..=16, 0u64..(1 << 17), vec(any::<[u8; 32]>(), 200)).prop_map(|(exp, len, pool)| {
        let cs = ChunkSize::new(1 << exp).unwrap();
        let n = cs.chunks_for(len) as usize;
        Manifest::new(len, cs, pool.into_iter().cycle().take(n).collect()).unwrap()
    })
}

pub fn bitmap() -> impl Strategy<Value = ChunkBitmap> {
    (0u32..2000, vec(any::<u32>(), 0..50)).prop_map(|(len, picks)| {
        let mut m = ChunkBitmap::new(len).unwrap();
        for p in picks {
            if len > 0 {
                m.insert(p % len);
            }
        }
        m
    })
}

pub fn hello() -> impl Strategy<Value = Hello> {
    (any::<u16>(), role(), text(MAX_LABEL)).prop_map(|(version, role, agent)| Hello { version, role, agent })
}

pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::NotHeld),
        Just(ErrorCode::UnknownTitle),
        Just(ErrorCode::BadRequest),
        Just(ErrorCode::Busy),
        Just(ErrorCode::Unauthorized),
        Just(ErrorCode::VersionMismatch),
        Just(ErrorCode::Internal),
        Just(ErrorCode::NotRegistered),
    ]
}

pub fn error_reply() -> impl Strategy<Value = ErrorReply> {
    (error_code(), text(MAX_TEXT)).prop_map(|(code, message)| ErrorReply { code, message })
}

pub fn mesh_request() -> impl Strategy<Value = MeshRequest> {
    prop_oneof![
        hello().prop_map(MeshRequest::Hello),
        title().prop_map(|title| MeshRequest::Manifest { title }),
        (title(), any::<u32>()).prop_map(|(title, index)| MeshRequest::Chunk { title, index }),
        title().prop_map(|title| MeshRequest::Held { title }),
        title().prop_map(|title| MeshRequest::Subscribe { title }),
    ]
}

pub fn mesh_response() -> impl Strategy<Value = MeshResponse> {
    prop_oneof![
        hello().prop_map(MeshResponse::Hello),
        (title(), manifest()).prop_map(|(title, manifest)| MeshResponse::Manifest { title, manifest }),
        (title(), any::<u32>(), any::<u32>())
            .prop_map(|(title, index, len)| MeshResponse::Chunk(ChunkHeader { title, index, len })),
        (title(), bitmap()).prop_map(|(title, held)| MeshResponse::Held { title, held }),
        error_reply().prop_map(MeshResponse::Error),
        (title(), vec(any::<u32>(), 0..100)).prop_map(|(title, chunks)| MeshResponse::Have { title, chunks }),
    ]
}

pub fn ranges() -> impl Strategy<Value = Vec<std::ops::Range<u32>>> {
    vec((any::<u32>(), any::<u32>()).prop_map(|(a, b)| a.min(b)..a.max(b)), 0..20)
}

pub fn source_class() -> impl Strategy<Value = SourceClass> {
    prop_oneof![
        Just(SourceClass::SameSite),
        Just(SourceClass::SameRegion),
        Just(SourceClass::CrossRegion),
        Just(SourceClass::Origin)
    ]
}

pub fn fill_plan() -> impl Strategy<Value = FillPlan> {
    (
        title(),
        vec(
            (node_id(), socket(), source_class()).prop_map(|(node, addr, class)| Parent {
                node,
                addr,
                class,
            }),
            0..=MAX_PARENTS,
        ),
        ranges(),
        ranges(),
        any::<u64>(),
    )
        .prop_map(|(title, parents, origin, import, epoch)| FillPlan {
            title,
            parents,
            origin,
            import,
            epoch,
        })
}

pub fn registration() -> impl Strategy<Value = Registration> {
    (
        role(),
        socket(),
        text(MAX_LABEL),
        text(MAX_LABEL),
        vec(prefix(), 0..=MAX_PREFIXES),
        any::<u64>(),
        any::<u64>(),
        any::<Option<[u8; 32]>>(),
    )
        .prop_map(|(role, mesh_addr, site, region, prefixes, upload_bps, disk_bytes, cert_sha256)| {
            Registration { role, mesh_addr, site, region, prefixes, upload_bps, disk_bytes, cert_sha256 }
        })
}

pub fn failure_kind() -> impl Strategy<Value = FailureKind> {
    prop_oneof![
        Just(FailureKind::Corrupt),
        Just(FailureKind::Timeout),
        Just(FailureKind::Refused),
        Just(FailureKind::NotHeld)
    ]
}

pub fn tracker_request() -> impl Strategy<Value = TrackerRequest> {
    prop_oneof![
        hello().prop_map(TrackerRequest::Hello),
        registration().prop_map(TrackerRequest::Register),
        (any::<bool>(), any::<u32>(), any::<u64>(), any::<u32>(), any::<u64>()).prop_map(
            |(healthy, uploads_in_flight, upload_bps_used, player_sessions, disk_used)| {
                TrackerRequest::Heartbeat(Heartbeat {
                    healthy,
                    uploads_in_flight,
                    upload_bps_used,
                    player_sessions,
                    disk_used,
                })
            }
        ),
        (
            title(),
            bitmap(),
            vec((any::<u32>(), node_id()).prop_map(|(chunk, source)| Fetched { chunk, source }), 0..20)
        )
            .prop_map(|(title, held, fetched)| TrackerRequest::ReportHeld { title, held, fetched }),
        Just(TrackerRequest::Members),
        (title(), any::<u32>(), node_id(), failure_kind()).prop_map(|(title, chunk, source, kind)| {
            TrackerRequest::ReportFailure { title, chunk, source, kind }
        }),
        (title(), any::<IpAddr>()).prop_map(|(title, client_ip)| TrackerRequest::Steer { title, client_ip }),
        Just(TrackerRequest::Catalog),
        (title(), text(MAX_TEXT), manifest()).prop_map(|(title, name, manifest)| TrackerRequest::Publish {
            title,
            name,
            manifest
        }),
        Just(TrackerRequest::Fills),
        (title(), ranges(), any::<[u64; 4]>())
            .prop_map(|(title, gained, bytes)| TrackerRequest::FillSummary { title, gained, bytes }),
        Just(TrackerRequest::Trackers),
    ]
}

pub fn steer_target() -> impl Strategy<Value = SteerTarget> {
    (node_id(), text(MAX_TEXT), any::<Option<[u8; 32]>>(), text(MAX_LABEL), text(MAX_LABEL)).prop_map(
        |(node, url, cert_sha256, site, region)| SteerTarget { node, url, cert_sha256, site, region },
    )
}

pub fn tracker_response() -> impl Strategy<Value = TrackerResponse> {
    prop_oneof![
        hello().prop_map(TrackerResponse::Hello),
        any::<u32>().prop_map(|heartbeat_interval_ms| TrackerResponse::Registered { heartbeat_interval_ms }),
        Just(TrackerResponse::Ack),
        (vec(steer_target(), 0..=MAX_TARGETS), text(MAX_TEXT))
            .prop_map(|(targets, reason)| TrackerResponse::Steer { targets, reason }),
        vec(
            (title(), text(MAX_TEXT), any::<u64>(), 10u32..=26).prop_map(|(title, name, len, exp)| {
                CatalogEntry { title, name, len, chunk_size: ChunkSize::new(1 << exp).unwrap() }
            }),
            0..20
        )
        .prop_map(|titles| TrackerResponse::Catalog { titles }),
        vec(node_id(), 0..50).prop_map(|nodes| TrackerResponse::Members { nodes }),
        error_reply().prop_map(TrackerResponse::Error),
        (vec(fill_plan(), 0..4), vec(title(), 0..=MAX_EVICT), any::<u64>())
            .prop_map(|(plans, evict, epoch)| TrackerResponse::Fills { plans, evict, epoch }),
        any::<u64>().prop_map(TrackerResponse::Epoch),
        vec(node_id(), 0..=MAX_TRACKERS).prop_map(|live| TrackerResponse::Trackers { live }),
    ]
}
