//! Running fillmesh as an operator does: config files and their layers, `config check`, a
//! reload on SIGHUP, and a rolling restart (SIGTERM, drain, start again from the same file)
//! of every appliance while players stream from them. Real processes on 127.0.0.0/8.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fillmesh_tests::mesh::{status, title_status, Mesh};
use fillmesh_tests::{
    file_id, fillmesh, http, metric, print_id, test_bytes, wait_for, ChildGuard, NodeProcess,
};
use nix::sys::signal::Signal;

/// A UDP port on `ip` whose TCP twin is free too (a node listens on both), for a config file
/// that names a fixed port, as an operator's does: the node comes back at the same address.
fn free_port(ip: &str) -> u16 {
    for _ in 0..64 {
        let udp = std::net::UdpSocket::bind((ip, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair on {ip}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn settings_come_from_the_command_line_then_the_environment_then_the_file_then_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    write(
        &config,
        "data = \"/srv/fillmesh\"\nupload_rate = \"5MB\"\nsite = \"from-file\"\nregion = \"from-file\"\n\
         max_requests = 10\ntrust = [\"12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE\"]\n",
    );
    let out = fillmesh()
        .args(["node", "--config"])
        .arg(&config)
        .args(["--site", "from-line", "--print-config"])
        .env("FILLMESH_SITE", "from-env")
        .env("FILLMESH_REGION", "from-env")
        .env("FILLMESH_MAX_REQUESTS", "20")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str| {
        printed
            .lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in\n{printed}"))
            .to_owned()
    };
    // The command line over the environment over the file.
    assert!(line("site").starts_with("site = \"from-line\"") && line("site").ends_with("# command line"));
    // The environment over the file.
    assert!(line("region").contains("\"from-env\"") && line("region").contains("FILLMESH_REGION"));
    assert!(line("max_requests").starts_with("max_requests = 20"), "{}", line("max_requests"));
    // The file over the defaults.
    assert!(line("upload_rate").contains("\"5MB\"") && line("upload_rate").ends_with("# file"));
    assert!(line("trust").contains("12D3KooW") && line("trust").ends_with("# file"));
    // The defaults.
    assert!(line("drain_secs").starts_with("drain_secs = 30") && line("drain_secs").ends_with("# default"));

    // What it prints is itself a config file that reads back as the same settings.
    let again = dir.path().join("printed.toml");
    write(&again, &printed);
    let out = fillmesh().args(["node", "--config"]).arg(&again).arg("--print-config").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let reread = String::from_utf8_lossy(&out.stdout);
    let values = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" # ").next().unwrap().trim().to_owned())
            .collect()
    };
    assert_eq!(values(&printed), values(&reread));
}

/// `fillmesh config check FILE`: the problems it names (standard error) and its status.
fn check(dir: &Path, name: &str, text: &str, extra: &[&str]) -> (bool, String) {
    let path = dir.join(name);
    write(&path, text);
    let out = fillmesh().args(["config", "check"]).arg(&path).args(extra).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

#[test]
fn config_check_names_every_kind_of_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = d.join("cert.pem");
    write(&cert, "not checked here");

    let (ok, said) = check(
        d,
        "good.toml",
        &format!("data = \"/srv/a\"\nlisten = \"0.0.0.0:4433\"\ntls_cert = {cert:?}\ntls_key = {cert:?}\n"),
        &[],
    );
    assert!(ok, "{said}");
    assert!(said.contains("a valid `fillmesh node` configuration (4 keys set)"), "{said}");

    // Not TOML at all: the line of the syntax error.
    let (ok, said) = check(d, "syntax.toml", "data = \"/srv/a\"\n[oops\n", &[]);
    assert!(!ok);
    assert!(said.contains("syntax.toml:2: not valid TOML"), "{said}");

    // An unknown key, with the nearest known one; a value its flag's parser refuses; a value
    // of the wrong type; a list for a single value: each at its line, all at once.
    let (ok, said) = check(
        d,
        "values.toml",
        "data = \"/srv/a\"\nupload_rat = \"5MB\"\ndisk_quota = \"12XB\"\norigin = \"yes\"\nsite = [\"a\", \"b\"]\n",
        &[],
    );
    assert!(!ok);
    assert!(said.contains("values.toml:2: unknown key `upload_rat`; did you mean `upload_rate`?"), "{said}");
    assert!(said.contains("values.toml:3: `disk_quota = \"12XB\"`"), "{said}");
    assert!(said.contains("unknown unit \"XB\""), "{said}");
    assert!(said.contains("values.toml:4: `origin` is true or false, not text"), "{said}");
    assert!(said.contains("values.toml:5: `site` takes one value, not a list"), "{said}");
    assert!(said.contains("4 problems"), "{said}");

    // A key with no default missing.
    let (ok, said) = check(d, "missing.toml", "listen = \"127.0.0.1:4433\"\n", &[]);
    assert!(!ok);
    assert!(said.contains("missing key `data`"), "{said}");

    // Conflicting and impossible settings, each named with the keys' lines.
    let (ok, said) = check(
        d,
        "conflicts.toml",
        "data = \"/srv/a\"\nlisten = \"127.0.0.1:4500\"\nhttp = \"127.0.0.1:4500\"\n\
         tracker = [\"127.0.0.1:4400\", \"127.0.0.1:4401\"]\n\
         tracker_id = [\"12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE\"]\nsite = \"\"\n\
         tls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"\n",
        &[],
    );
    assert!(!ok);
    assert!(said.contains("give one --tracker-id per --tracker"), "{said}");
    assert!(said.contains("`tracker` at line 4, `tracker_id` at line 5"), "{said}");
    assert!(said.contains("take the same TCP port"), "{said}");
    assert!(said.contains("`listen` at line 2, `http` at line 3"), "{said}");
    assert!(said.contains("conflicts.toml:6: --site must be 1 to 64 bytes"), "{said}");
    assert!(said.contains("conflicts.toml:7: --tls-cert /nonexistent/cert.pem"), "{said}");

    // A tracker's file is told apart by its keys, and checked as a tracker's.
    let (ok, said) = check(
        d,
        "tracker.toml",
        "data = \"/srv/t\"\nno_tokens = true\ntoken_bind = \"seen\"\ntoken_ttl = 600\n",
        &[],
    );
    assert!(!ok);
    assert!(said.contains("--no-tokens turns them off"), "{said}");
    assert!(said.contains("as a `fillmesh tracker` configuration"), "{said}");

    // And the same checks stop a start, before anything listens.
    let out = fillmesh().args(["node", "--config"]).arg(d.join("values.toml")).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("values.toml:2: unknown key `upload_rat`"), "{err}");
}

#[test]
fn the_example_config_files_pass_config_check() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    for (name, role) in [("appliance.toml", "node"), ("origin.toml", "node"), ("tracker.toml", "tracker")] {
        let out = fillmesh().args(["config", "check"]).arg(examples.join(name)).output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(said.contains(&format!("a valid `fillmesh {role}` configuration")), "{name}: {said}");
    }
}

#[test]
fn sighup_changes_the_trust_list_and_the_upload_rate_of_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("title.bin");
    // 1 MiB: at 256 KB/s at least 4 s to send, less the burst of a quarter second.
    let len = 1 << 20;
    std::fs::write(&file, test_bytes(len, 7)).unwrap();
    let id = file_id(&file);
    let client = dir.path().join("client");
    let client_id = print_id(&client);
    let config = dir.path().join("origin.toml");
    let settings = |trust: &str, rate: &str| {
        format!(
            "data = {:?}\norigin = true\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\ntrust = [{trust}]\n\
             upload_rate = \"{rate}\"\n",
            dir.path().join("origin")
        )
    };
    write(&config, &settings("", "100MB"));
    let mut origin = NodeProcess::start_config("node", &config, &dir.path().join("origin.log"), &[]);
    let url = format!("http://{}", origin.http.as_deref().unwrap());
    let seeded = fillmesh().arg("seed").arg(&file).args(["--origin", &url]).output().unwrap();
    assert!(seeded.status.success(), "{seeded:?}");

    let fetch = || {
        let started = Instant::now();
        let out = fillmesh()
            .args(["fetch", &id, "--from", &origin.mesh, "--peer", &origin.peer, "--out"])
            .arg(dir.path().join("out.bin"))
            .arg("--identity")
            .arg(&client)
            .output()
            .unwrap();
        (out, started.elapsed())
    };
    let (out, _) = fetch();
    assert!(!out.status.success(), "an unlisted client was served");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not trusted"), "{out:?}");

    // The operator lists the client and lowers the rate, then reloads: no restart.
    write(&config, &settings(&format!("\"{client_id}\""), "256KB"));
    origin.child.signal(Signal::SIGHUP);
    let applied = wait_for(Duration::from_secs(20), || {
        let log = origin.log();
        (log.contains("reload: trust list changed") && log.contains("reload: upload rate changed"))
            .then_some(())
    });
    assert!(applied.is_some(), "{}", origin.log());
    let (out, took) = fetch();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(file_id(&dir.path().join("out.bin")), id);
    // The new cap paces what the node sends: 1 MiB at 256 KB/s, less a quarter second saved.
    assert!(took >= Duration::from_millis(3_500), "1 MiB at 256 KB/s took only {took:?}");

    // A setting that cannot change live is named, and the node goes on; a broken file is
    // refused whole and changes nothing.
    write(
        &config,
        &settings(&format!("\"{client_id}\""), "256KB").replace("127.0.0.1:0\"\nhttp", "127.0.0.1:1\"\nhttp"),
    );
    origin.child.signal(Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(20), || origin
            .log()
            .contains("listen cannot change while the node runs")
            .then_some(()))
        .is_some(),
        "{}",
        origin.log()
    );
    write(&config, "data = [\n");
    origin.child.signal(Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(20), || origin.log().contains("settings not applied").then_some(()))
            .is_some(),
        "{}",
        origin.log()
    );
    let (out, _) = fetch();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // SIGTERM drains and exits 0.
    let exited = origin.child.terminate(Duration::from_secs(60)).expect("the origin exits on SIGTERM");
    assert!(exited.success(), "{exited:?}\n{}", origin.log());
    assert!(origin.log().contains("drained"), "{}", origin.log());
}

#[test]
fn sighup_changes_a_lone_trackers_trust_list_live() {
    let dir = tempfile::tempdir().unwrap();
    let appliance = dir.path().join("appliance");
    let appliance_id = print_id(&appliance);
    let config = dir.path().join("tracker.toml");
    let settings = |trust: &str| {
        format!(
            "data = {:?}\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nadmin_http = \"127.0.0.1:0\"\ntrust = [{trust}]\n",
            dir.path().join("tracker")
        )
    };
    write(&config, &settings(""));
    let tracker = NodeProcess::start_config("tracker", &config, &dir.path().join("tracker.log"), &[]);
    let node = NodeProcess::start(
        &appliance,
        &["--listen", "127.0.0.1:0", "--tracker", &tracker.mesh, "--tracker-id", &tracker.peer],
    );
    let registered = |tracker: &NodeProcess| {
        status(tracker)?["appliances"]
            .as_array()?
            .iter()
            .any(|a| a["peer_id"] == appliance_id.as_str())
            .then_some(())
    };
    assert!(
        wait_for(Duration::from_secs(20), || tracker.log().contains("refusing untrusted").then_some(()))
            .is_some(),
        "{}",
        tracker.log()
    );
    assert!(registered(&tracker).is_none());

    write(&config, &settings(&format!("\"{appliance_id}\"")));
    tracker.child.signal(Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(30), || registered(&tracker)).is_some(),
        "the appliance did not register after the reload\n{}\n{}",
        tracker.log(),
        node.log()
    );
    assert!(tracker.log().contains("reload: trust list changed"), "{}", tracker.log());
}

/// Appliances in the rolling restart, and players on them.
const APPLIANCES: usize = 8;
const PLAYERS: usize = 20;

#[test]
fn a_rolling_restart_under_twenty_players_costs_no_player_an_error() {
    // 24 MiB at 512 KB/s: each player plays for about 50 s, across the whole rolling restart.
    let len = 24 << 20;
    let mesh = Mesh::start_with_spares("mesh", "100MB", 0, len, APPLIANCES);
    let dir = mesh.dir.path();
    let tracker = &mesh.tracker;
    let mut configs = Vec::new();
    let mut appliances: Vec<NodeProcess> = Vec::new();
    for (i, data) in mesh.spare.iter().enumerate() {
        let ip = format!("127.0.0.{}", 21 + i);
        let config = dir.join(format!("appliance-{i}.toml"));
        write(
            &config,
            &format!(
                "# appliance {i}, as an operator writes it\ndata = {data:?}\nlisten = \"{ip}:{}\"\n\
                 http = \"{ip}:0\"\ntracker = [\"{}\"]\ntracker_id = [\"{}\"]\nsite = \"s0\"\nregion = \"r0\"\n\
                 serve_prefix = [\"127.0.50.0/24\"]\ndrain_secs = 20\n",
                free_port(&ip),
                tracker.mesh,
                tracker.peer,
            ),
        );
        appliances.push(NodeProcess::start_config(
            "node",
            &config,
            &dir.join(format!("appliance-{i}.log")),
            &[],
        ));
        configs.push(config);
    }
    let title = title_status(tracker, &mesh.title).unwrap();
    let chunks = title["chunks"].as_f64().unwrap();
    wait_for(Duration::from_secs(120), || {
        let t = title_status(tracker, &mesh.title)?;
        (t["complete_appliances"].as_u64()? >= APPLIANCES as u64).then_some(())
    })
    .expect("the appliances fill the title");

    // Twenty players, paced, each verifying every chunk.
    let mut players: Vec<(ChildGuard, PathBuf, PathBuf)> = (0..PLAYERS)
        .map(|p| {
            let out = dir.join(format!("player-{p}.bin"));
            let report = dir.join(format!("player-{p}.txt"));
            let child = mesh
                .play_command(&format!("127.0.50.{}", 10 + p), &out)
                .args(["--rate", "512KB", "--stall-secs", "10"])
                .stdout(std::fs::File::create(&report).unwrap())
                .stderr(std::fs::File::create(report.with_extension("log")).unwrap())
                .spawn()
                .unwrap();
            (ChildGuard(child), out, report)
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));

    // Each appliance in turn: SIGTERM, drained exit, started again from the same file, back
    // in steering with the whole title before the next one goes.
    for i in 0..APPLIANCES {
        let page = http(appliances[i].http.as_deref().unwrap(), "GET", "/metrics", &[], b"").1;
        let filled = metric(&page, "fillmesh_chunks_verified_total").unwrap_or(0.0);
        assert_eq!(filled, chunks, "appliance {i} filled each chunk once before its restart");
        let exited = appliances[i].child.terminate(Duration::from_secs(60)).expect("exits on SIGTERM");
        assert!(exited.success(), "appliance {i}: {exited:?}\n{}", appliances[i].log());
        assert!(
            appliances[i].log().contains("told the tracker this node is draining"),
            "{}",
            appliances[i].log()
        );
        appliances[i] =
            NodeProcess::start_config("node", &configs[i], &dir.join(format!("appliance-{i}.log")), &[]);
        let peer = appliances[i].peer.clone();
        wait_for(Duration::from_secs(60), || {
            let s = status(tracker)?;
            let a = s["appliances"].as_array()?.iter().find(|a| a["peer_id"] == peer.as_str())?.clone();
            (a["healthy"] == true && a["held_bytes"].as_u64()? >= len as u64).then_some(())
        })
        .unwrap_or_else(|| panic!("appliance {i} is not back: {:?}", status(tracker)));
    }

    // Every player finishes, every byte verified, no error.
    let deadline = Instant::now() + Duration::from_secs(240);
    let (mut failovers, mut revivals) = (0, 0);
    for (p, (child, out, report)) in players.iter_mut().enumerate() {
        let status = wait_for(deadline.saturating_duration_since(Instant::now()), || {
            child.0.try_wait().ok().flatten()
        })
        .unwrap_or_else(|| panic!("player {p} did not finish"));
        let said = std::fs::read_to_string(&*report).unwrap();
        let errors = std::fs::read_to_string(report.with_extension("log")).unwrap_or_default();
        assert!(status.success(), "player {p}: {status:?}\n{said}\n{errors}");
        assert_eq!(file_id(out), mesh.title, "player {p}");
        let count = |prefix: &str| {
            said.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|n| n.trim().parse::<u32>().ok())
                .unwrap()
        };
        failovers += count("failovers: ");
        revivals += count("revivals (steered again with every appliance dropped): ");
    }
    println!(
        "{PLAYERS} players through a rolling restart of {APPLIANCES} appliances: {failovers} failovers, \
         {revivals} revivals, no error"
    );

    // No chunk was filled twice: the restarted appliances held everything and fetched nothing.
    for (i, appliance) in appliances.iter().enumerate() {
        let page = http(appliance.http.as_deref().unwrap(), "GET", "/metrics", &[], b"").1;
        assert_eq!(
            metric(&page, "fillmesh_chunks_verified_total").unwrap_or(0.0),
            0.0,
            "appliance {i} filled again"
        );
    }
}
