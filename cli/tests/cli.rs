//! The `fillmesh` binary as a user runs it.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::Command;

fn fillmesh() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fillmesh"))
}

#[test]
fn id_prints_what_b3sum_prints() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("abc.txt"), b"abc").unwrap();
    std::fs::write(dir.path().join("empty"), b"").unwrap();
    let out = fillmesh().args(["id", "abc.txt", "empty"]).current_dir(dir.path()).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85  abc.txt\n\
         af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262  empty\n"
    );
}

#[test]
fn id_of_a_missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = fillmesh().args(["id", "no-such-file"]).current_dir(dir.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no-such-file") && err.contains("No such file"), "{err}");
}

#[test]
fn id_of_a_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = fillmesh().args(["id", "."]).current_dir(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("fillmesh: ."), "{err}");
}

#[test]
fn a_report_into_a_closed_pipe_is_not_a_crash() {
    // `fillmesh fetch ... | head -1` once ended in a panic and a backtrace: the reader of
    // stdout went away before the last line. 2,000 lines overflow any pipe buffer, so some
    // write meets the closed pipe however the two processes are scheduled.
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut child = fillmesh()
        .arg("id")
        .args(std::iter::repeat_n(file.path(), 2000))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {:?}, stderr {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The first cause said twice in an error report on stderr, if any: on each line starting
/// with `fillmesh:` (ours) or `error:` (clap's), a segment between ": " of at least
/// `MIN_SEGMENT` characters that appears twice; or a non-empty line that appears twice.
fn repeated_cause(stderr: &str) -> Option<String> {
    const MIN_SEGMENT: usize = 6;
    let lines: Vec<&str> = stderr.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    for (i, line) in lines.iter().enumerate() {
        if lines[..i].contains(line) {
            return Some(format!("the line {line:?} twice"));
        }
        if !(line.starts_with("fillmesh:") || line.starts_with("error:")) {
            continue;
        }
        let segments: Vec<&str> = line.split(": ").map(str::trim).collect();
        for (j, segment) in segments.iter().enumerate() {
            if segment.chars().count() >= MIN_SEGMENT && segments[..j].contains(segment) {
                return Some(format!("{segment:?} twice in {line:?}"));
            }
        }
    }
    None
}

#[test]
fn repeated_cause_finds_a_cause_said_twice_and_only_then() {
    // What `fillmesh seed` printed for a missing file before each error left its source to
    // the chain.
    let twice = "fillmesh: /nonexistent.mp4: No such file or directory (os error 2): No such file or directory (os error 2)\n";
    assert!(repeated_cause(twice).is_some_and(|r| r.contains("No such file")));
    let once = "fillmesh: /nonexistent.mp4: No such file or directory (os error 2)\n";
    assert_eq!(repeated_cause(once), None);
    // A line said twice, though each is fine on its own.
    assert!(repeated_cause(&format!("{once}{once}")).is_some());
    // Short segments may repeat (`a: b: a`); other lines are not split.
    assert_eq!(repeated_cause("fillmesh: title: x: title\nINFO a: b: a: b\n"), None);
}

/// Runs `fillmesh args` with `limit` to finish (killed, and the test failed, past it);
/// returns its exit status and stderr.
fn run_bounded(args: &[&str], limit: std::time::Duration) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let mut child = fillmesh()
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        pipe.read_to_string(&mut text).map(|_| text)
    });
    let deadline = std::time::Instant::now() + limit;
    // Bounded by the deadline: each pass sleeps 20 ms.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fillmesh {args:?} did not finish in {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (status, reader.join().unwrap().unwrap())
}

/// A loopback TCP port nothing listens on (bound, then let go).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn each_cause_of_a_failed_command_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("title.bin");
    std::fs::write(&file, vec![7u8; 100_000]).unwrap();
    let missing = dir.path().join("missing.mp4");
    let cache = dir.path().join("steer-cache");
    std::fs::create_dir(&cache).unwrap();
    let (file, missing, cache) = (file.to_str().unwrap(), missing.to_str().unwrap(), cache.to_str().unwrap());
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let title = "0".repeat(64);
    // Each command, and what its report must name.
    let cases: [(&[&str], &str); 6] = [
        (&["seed", missing, "--origin", &closed], "No such file"),
        (&["seed", file, "--origin", &closed], "Connection refused"),
        (&["play", &title, "--tracker-http", &closed, "--steer-cache", cache], "Connection refused"),
        (&["status", "--tracker-admin", &closed], "Connection refused"),
        (&["play", "not-a-title", "--tracker-http", &closed, "--steer-cache", cache], "a title id is"),
        (&["seed", file, "--origin", &closed, "--chunk-size", "lots"], "\"lots\" is not a size"),
    ];
    for (args, cause) in cases {
        let (status, stderr) = run_bounded(args, std::time::Duration::from_secs(30));
        assert!(!status.success(), "fillmesh {args:?} succeeded: {stderr}");
        assert!(stderr.contains(cause), "fillmesh {args:?} does not say {cause:?}: {stderr}");
        assert!(
            stderr.lines().any(|l| l.starts_with("fillmesh: ") || l.starts_with("error: ")),
            "fillmesh {args:?} printed no error line: {stderr}"
        );
        if let Some(repeat) = repeated_cause(&stderr) {
            panic!("fillmesh {args:?} says a cause twice ({repeat}): {stderr}");
        }
    }
}
