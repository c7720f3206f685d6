//! The shipped service files and the Debian package, checked with the tools an operator's host
//! has: `systemd-analyze verify` and `systemd-analyze security --offline=true` (exposure at most
//! 3.0, "OK") on packaging/systemd/*.service, and `cargo deb` + `dpkg-deb` on the package
//! (binary, units, configs as conffiles, the system user made by its postinst). A missing
//! tool fails the test with what to install (`.ci/run` installs them).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fillmesh_tests::fillmesh_bin;

const UNITS: [&str; 2] = ["fillmesh-node.service", "fillmesh-tracker.service"];

/// The highest exposure `systemd-analyze security` may give a shipped unit (its "OK" band).
const MAX_EXPOSURE: f64 = 3.0;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs a tool, failing plainly when it is not installed.
fn run(cmd: &mut Command, install: &str) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.output().unwrap_or_else(|e| panic!("cannot run {program} ({e}): install {install} (.ci/run does)"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The overall exposure in `systemd-analyze security` output:
/// `→ Overall exposure level for fillmesh-node.service: 1.4 OK 🙂`.
fn exposure(report: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level for"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    let after = line.rsplit_once(": ").unwrap_or_else(|| panic!("unexpected line {line:?}")).1;
    let number = after.split_whitespace().next().unwrap();
    number.parse().unwrap_or_else(|e| panic!("exposure {number:?} in {line:?}: {e}"))
}

#[test]
fn the_units_pass_systemd_analyze_security_and_verify() {
    let units = repo().join("packaging/systemd");
    for unit in UNITS {
        let out = run(
            Command::new("systemd-analyze")
                .args(["security", "--offline=true", "--no-pager"])
                .arg(units.join(unit)),
            "systemd",
        );
        let report = text(&out.stdout);
        assert!(out.status.success(), "systemd-analyze security {unit}: {}\n{report}", text(&out.stderr));
        let level = exposure(&report);
        assert!(level <= MAX_EXPOSURE, "{unit}: exposure {level} > {MAX_EXPOSURE}:\n{report}");
        println!("{unit}: exposure {level}");
    }

    // `verify` checks that ExecStart's program exists, so it runs on a root that holds the
    // package's layout: this build's binary at /usr/bin/fillmesh, /bin/kill (ExecReload), the
    // shipped units, and this host's own units for the targets they name.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for dir in ["usr/bin", "usr/lib/systemd", "etc/systemd/system"] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
    std::fs::copy(fillmesh_bin(), r.join("usr/bin/fillmesh")).unwrap();
    std::fs::copy("/bin/kill", r.join("usr/bin/kill")).expect("/bin/kill: install procps");
    let copied = run(
        Command::new("cp").arg("-a").arg("/usr/lib/systemd/system").arg(r.join("usr/lib/systemd")),
        "coreutils",
    );
    assert!(
        copied.status.success(),
        "copying /usr/lib/systemd/system (install systemd): {}",
        text(&copied.stderr)
    );
    for unit in UNITS {
        std::fs::copy(units.join(unit), r.join("etc/systemd/system").join(unit)).unwrap();
    }
    // verify exits 0 on keys it ignores ("Unknown key ..., ignoring"): any output is a failure.
    let verify = |names: &[&str]| {
        let out = run(
            Command::new("systemd-analyze").arg("verify").arg(format!("--root={}", r.display())).args(names),
            "systemd",
        );
        (out.status.success(), format!("{}{}", text(&out.stdout), text(&out.stderr)))
    };
    let (ok, said) = verify(&UNITS);
    assert!(ok && said.trim().is_empty(), "systemd-analyze verify: {said}");

    // The same check sees a misspelt key in a unit of this root (it does read them).
    let node = std::fs::read_to_string(units.join(UNITS[0])).unwrap();
    let broken = node.replace("WatchdogSec=", "WatchdogSecs=");
    std::fs::write(r.join("etc/systemd/system/fillmesh-broken.service"), broken).unwrap();
    let (_, said) = verify(&["fillmesh-broken.service"]);
    assert!(said.contains("WatchdogSecs"), "a misspelt key went unnoticed: {said:?}");
}

#[test]
fn the_package_holds_the_binary_units_configs_and_makes_the_user() {
    let bin = fillmesh_bin();
    // The binary the tests built, packaged as it is: `--profile dev` for a debug build
    // (target/debug), the profile directory's own name otherwise.
    let profile = match bin.parent().unwrap().file_name().unwrap().to_str().unwrap() {
        "debug" => "dev".to_owned(),
        other => other.to_owned(),
    };
    let out_dir = tempfile::tempdir().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = run(
        Command::new(&cargo)
            .current_dir(repo())
            .args([
                "deb",
                "-p",
                "fillmesh-cli",
                "--no-build",
                "--strip",
                "--fast",
                "--profile",
                &profile,
                "-o",
            ])
            .arg(out_dir.path()),
        "cargo-deb (`cargo install cargo-deb --version 3.8.0 --locked`)",
    );
    assert!(built.status.success(), "cargo deb failed (is cargo-deb installed?): {}", text(&built.stderr));
    let deb = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("cargo deb wrote no .deb");

    let listed = run(Command::new("dpkg-deb").arg("-c").arg(&deb), "dpkg");
    assert!(listed.status.success(), "dpkg-deb -c: {}", text(&listed.stderr));
    let listing = text(&listed.stdout);
    let paths: Vec<&str> = listing.lines().filter_map(|l| l.split_whitespace().last()).collect();
    for want in [
        "./usr/bin/fillmesh",
        "./usr/lib/systemd/system/fillmesh-node.service",
        "./usr/lib/systemd/system/fillmesh-tracker.service",
        "./etc/fillmesh/node.toml",
        "./etc/fillmesh/tracker.toml",
        "./usr/lib/sysusers.d/fillmesh.conf",
        "./usr/lib/sysctl.d/60-fillmesh.conf",
        "./usr/share/doc/fillmesh/examples/appliance.toml",
        "./usr/share/doc/fillmesh/examples/origin.toml",
        "./usr/share/doc/fillmesh/examples/tracker.toml",
    ] {
        assert!(paths.contains(&want), "{want} not in the package:\n{listing}");
    }
    assert!(
        listing.lines().any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("./usr/bin/fillmesh")),
        "the binary is not executable:\n{listing}"
    );

    // Maintainer scripts and conffiles.
    let control = tempfile::tempdir().unwrap();
    let c = control.path().join("DEBIAN");
    let extracted = run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&c), "dpkg");
    assert!(extracted.status.success(), "dpkg-deb -e: {}", text(&extracted.stderr));
    let postinst = std::fs::read_to_string(c.join("postinst")).expect("the package has no postinst");
    assert!(postinst.contains("systemd-sysusers") && postinst.contains("fillmesh.conf"), "{postinst}");
    let conffiles = std::fs::read_to_string(c.join("conffiles")).unwrap();
    for conf in ["/etc/fillmesh/node.toml", "/etc/fillmesh/tracker.toml"] {
        assert!(conffiles.lines().any(|l| l == conf), "{conf} is not a conffile: {conffiles}");
    }
    let control_file = std::fs::read_to_string(c.join("control")).unwrap();
    assert!(control_file.contains("Package: fillmesh\n"), "{control_file}");

    // The files: units as shipped, a binary that runs, and the user the postinst's command
    // makes (run here on the unpacked tree as its root).
    let tree = tempfile::tempdir().unwrap();
    let t = tree.path();
    let unpacked = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(t), "dpkg");
    assert!(unpacked.status.success(), "dpkg-deb -x: {}", text(&unpacked.stderr));
    for unit in UNITS {
        assert_eq!(
            std::fs::read(t.join("usr/lib/systemd/system").join(unit)).unwrap(),
            std::fs::read(repo().join("packaging/systemd").join(unit)).unwrap(),
            "{unit} differs from packaging/systemd"
        );
    }
    // Every example names the state directory of the unit that runs it (the only place the
    // sandbox lets it write).
    for (example, data) in [
        ("appliance", "/var/lib/fillmesh/node"),
        ("origin", "/var/lib/fillmesh/node"),
        ("tracker", "/var/lib/fillmesh/tracker"),
    ] {
        let conf = std::fs::read_to_string(t.join(format!("usr/share/doc/fillmesh/examples/{example}.toml")))
            .unwrap();
        assert!(
            conf.lines().any(|l| l == format!("data = \"{data}\"")),
            "{example}.toml: data is not {data}"
        );
    }
    let version = run(Command::new(t.join("usr/bin/fillmesh")).arg("--version"), "the package's binary");
    assert!(version.status.success() && text(&version.stdout).starts_with("fillmesh "), "{version:?}");
    // The units' configs are the repository's examples, valid for the commands the units run.
    for (kind, example) in [("node", "appliance"), ("tracker", "tracker")] {
        let conf = t.join(format!("etc/fillmesh/{kind}.toml"));
        assert_eq!(
            std::fs::read(&conf).unwrap(),
            std::fs::read(repo().join(format!("examples/config/{example}.toml"))).unwrap(),
            "/etc/fillmesh/{kind}.toml is not examples/config/{example}.toml"
        );
        let checked = run(
            Command::new(t.join("usr/bin/fillmesh")).args(["config", "check", "--for", kind]).arg(&conf),
            "the package's binary",
        );
        assert!(checked.status.success(), "{kind}.toml: {}{}", text(&checked.stdout), text(&checked.stderr));
    }
    let sysusers = run(
        Command::new("systemd-sysusers").arg(format!("--root={}", t.display())).arg("fillmesh.conf"),
        "systemd",
    );
    assert!(sysusers.status.success(), "systemd-sysusers: {}", text(&sysusers.stderr));
    let passwd = std::fs::read_to_string(t.join("etc/passwd")).unwrap();
    let user =
        passwd.lines().find(|l| l.starts_with("fillmesh:")).unwrap_or_else(|| panic!("no user: {passwd}"));
    let fields: Vec<&str> = user.split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "not a system user: {user}");
    assert!(fields[6].ends_with("nologin"), "the user can log in: {user}");
}
