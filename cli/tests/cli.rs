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
