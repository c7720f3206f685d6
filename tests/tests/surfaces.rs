//! Viewer surfaces apart from operator surfaces, with real processes: the tracker's viewer
//! listener (`--http`) refuses the operator views (`/status`, `/metrics`, the fleet page) with
//! a 404 that carries none of their data, and its operator listener (`--admin-http`) serves
//! them; an appliance's players' port (HTTP/3 and HTTPS on TCP) refuses `/metrics` and
//! `/health`, which only its own `--http` serves.

use std::time::Duration;

use fillmesh_tests::clients::every_transport;
use fillmesh_tests::mesh::Mesh;
use fillmesh_tests::{fillmesh, http, http_with_head};

const MIB: usize = 1 << 20;

#[test]
fn operator_views_are_served_on_the_operator_listeners_and_refused_on_the_viewers() {
    let mesh = Mesh::start("mesh", "64MB", 1, 2 * MIB);
    mesh.wait_complete(Duration::from_secs(60));
    let viewer = mesh.tracker.http.clone().unwrap();
    let admin = mesh.tracker.admin.clone().unwrap();
    assert_ne!(viewer, admin);
    let appliance = &mesh.appliances[0].1;
    // What an operator view gives away and a viewer must not see: every appliance's PeerId and
    // address, and the holdings.
    let secrets = [appliance.peer.as_str(), appliance.mesh.as_str(), mesh.origin.peer.as_str()];

    // The operators' listener: the status names the appliance, the metrics count the nodes,
    // the fleet page is there.
    let (code, status) = http(&admin, "GET", "/status", &[], b"");
    assert_eq!(code, 200, "{status}");
    for secret in secrets {
        assert!(status.contains(secret), "{secret} not in the status: {status}");
    }
    let metrics = mesh.tracker.metrics();
    assert!(metrics.contains("fillmesh_tracker_nodes{state=\"healthy\"} 2"), "{metrics}");
    let (code, page) = http(&admin, "GET", "/", &[], b"");
    assert_eq!(code, 200);
    assert!(page.contains("/status"), "the fleet page polls /status: {page}");
    assert_eq!(http(&admin, "GET", "/health", &[], b"").0, 200);
    // No page from elsewhere may read the status in an operator's browser (only another
    // tracker's fleet page, see tests/tests/fleet.rs).
    let (code, head, _) =
        http_with_head(&admin, "GET", "/status", &[("origin", "http://pages.example")], b"");
    assert_eq!(code, 200);
    assert!(!head.to_ascii_lowercase().contains("access-control-allow-origin"), "{head}");

    // The viewers' listener: every operator path 404, with nothing of what they show.
    for path in ["/status", "/status/", "/metrics", "/", "/status?x=1", "/STATUS"] {
        for method in ["GET", "HEAD", "POST"] {
            let (code, body) = http(&viewer, method, path, &[], b"");
            assert_eq!(code, 404, "{method} {path}: {body}");
            assert!(body.len() < 200, "{method} {path}: {body}");
            for secret in secrets.iter().chain(&[mesh.title.as_str(), "fillmesh_", "<html"]) {
                assert!(!body.contains(secret), "{method} {path} shows {secret}: {body}");
            }
        }
    }
    let (_, body) = http(&viewer, "GET", "/status", &[], b"");
    assert!(body.contains("--admin-http"), "the refusal says where the view is: {body}");
    // What viewers need is still there: steering, the watch page, health and the fleet's
    // trackers (none: this tracker is alone).
    let steered = mesh.steer("127.0.11.7");
    assert_eq!(steered["targets"][0]["peer_id"], appliance.peer.as_str(), "{steered}");
    let (code, page) = http(&viewer, "GET", &format!("/watch/{}", mesh.title), &[], b"");
    assert_eq!(code, 200);
    assert!(page.contains("/steer"), "{page}");
    assert_eq!(http(&viewer, "GET", "/health", &[], b""), (200, "ok\n".to_owned()));
    assert_eq!(http(&viewer, "GET", "/trackers", &[], b""), (200, r#"{"trackers":[]}"#.to_owned()));
    // Steering is not an operator's view: the operators' listener does not serve it.
    assert_eq!(http(&admin, "GET", &format!("/steer?title={}", mesh.title), &[], b"").0, 404);

    // `fillmesh status` reads the operators' listener; pointed at the viewers' it says why not.
    let out = fillmesh().args(["status", "--tracker-admin", &mesh.tracker_admin_url()]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["appliances"].as_array().unwrap().len(), 2, "{printed}");
    let out = fillmesh().args(["status", "--tracker-http", &mesh.tracker_url()]).output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("answered 404") && stderr.contains("--admin-http"), "{stderr}");

    // The appliance's players' port, over HTTP/3, HTTP/2 and HTTP/1.1: no operator view, with
    // or without a token.
    let base = format!("https://{}", appliance.mesh);
    let token = mesh.token_path(&mesh.title);
    let metrics_with_token = format!("{token}/metrics");
    let asked =
        [("GET", "/metrics", None), ("GET", metrics_with_token.as_str(), None), ("GET", "/health", None)];
    for (transport, answers) in every_transport(&base, &asked) {
        for ((_, path, _), answer) in asked.iter().zip(&answers) {
            assert_eq!(answer.status, 404, "{transport} {path}: {answer:?}");
            assert_eq!(answer.text(), "not found\n", "{transport} {path}");
        }
    }
    // The appliance's own operator listener has them; the refusals were counted there.
    let page = appliance.metrics();
    assert_eq!(fillmesh_tests::metric(&page, "fillmesh_player_requests_total{status=\"404\"}"), Some(9.0));
    let (code, body) = http(appliance.http.as_deref().unwrap(), "GET", "/health", &[], b"");
    assert_eq!(code, 200, "{body}");
}

/// The operators' listener is on loopback unless the operator says otherwise, and the flags'
/// help says which surface is which.
#[test]
fn the_flags_say_which_surface_is_which() {
    let out = fillmesh().args(["tracker", "--help"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains("--admin-http <ADMIN_HTTP>"), "{help}");
    assert!(help.contains("[default: 127.0.0.1:8001]"), "{help}");
    assert!(help.contains("Operator views are never served here"), "{help}");
    let out = fillmesh().args(["node", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains("The node's operator HTTP address"), "{help}");
    assert!(help.contains("Players use the mesh port, which serves none of this"), "{help}");
}

/// Viewers and operators on one address is refused before anything listens, by `config check`
/// and at start.
#[test]
fn one_address_for_viewers_and_operators_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tracker.toml");
    let data = dir.path().join("t");
    std::fs::write(
        &file,
        format!("data = {:?}\nhttp = \"127.0.0.1:8555\"\nadmin_http = \"127.0.0.1:8555\"\n", data.display()),
    )
    .unwrap();
    let out = fillmesh().args(["config", "check"]).arg(&file).output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("--admin-http and --http are both 127.0.0.1:8555"), "{said}");
    let out = fillmesh().args(["tracker", "--config"]).arg(&file).output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("need a listener of their own"), "{out:?}");
}
