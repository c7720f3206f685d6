//! Clients this project did not write, for the player servers: HTTP/3 with Python's niquests,
//! HTTPS on TCP with curl (HTTP/2 and HTTP/1.1). Each request's path is sent as it is given.
//! What they print is this file's own scripts' output: a panic on it is the test's failure.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use base64::Engine;

/// One answer as any of the clients saw it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `h3`, `h2` or `h1`, as the client says it spoke.
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the body arrived whole (not cut short by the server).
    pub whole: bool,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map_or("", |(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Requests over HTTP/3 only, each path sent as it is given (no dot-segment removal: the
/// prepared request's URL is replaced after niquests normalised it), the body read as a
/// stream so that a body cut short shows as such. Prints a JSON list of answers.
const H3: &str = r#"
import base64, json, sys, warnings
warnings.filterwarnings("ignore")
import niquests
base, requests = sys.argv[1], json.loads(sys.argv[2])
s = niquests.Session(disable_http1=True, disable_http2=True)
out = []
for method, path, rng in requests:
    p = s.prepare_request(niquests.Request(method, base + "/titles/x", headers={} if rng is None else {"Range": rng}))
    p.url = base + path
    r = s.send(p, verify=False, timeout=20, stream=True)
    body, whole = b"", True
    try:
        for piece in r.iter_content(65536):
            body += piece
    except Exception:
        whole = False
    out.append({"status": r.status_code, "version": r.http_version, "headers": list(r.headers.items()),
                "body": base64.b64encode(body).decode(), "whole": whole})
print(json.dumps(out))
"#;

/// Asks `requests` (method, path as sent, Range) of the node at `base` over HTTP/3.
pub fn h3(base: &str, requests: &[(&str, &str, Option<&str>)]) -> Vec<Answer> {
    let list = serde_json::to_string(requests).unwrap();
    let out = Command::new("python3")
        .args(["-c", H3, base, &list])
        .output()
        .expect("python3 with niquests (installed by .ci/run: python3 -m pip install niquests)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    answers
        .as_array()
        .unwrap()
        .iter()
        .map(|a| Answer {
            status: a["status"].as_u64().unwrap() as u16,
            version: match a["version"].as_u64() {
                Some(30) => "h3".into(),
                v => format!("{v:?}"),
            },
            headers: a["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| (h[0].as_str().unwrap().to_owned(), h[1].as_str().unwrap().to_owned()))
                .collect(),
            body: base64::engine::general_purpose::STANDARD.decode(a["body"].as_str().unwrap()).unwrap(),
            whole: a["whole"].as_bool().unwrap(),
        })
        .collect()
}

/// One request with curl over HTTPS on TCP (`--http2` or `--http1.1`), the path sent as it
/// is given (`--path-as-is`: no dot-segment removal).
pub fn curl(base: &str, version: &str, method: &str, path: &str, range: Option<&str>) -> Answer {
    let scratch = tempfile::tempdir().unwrap();
    let (head, body) = (scratch.path().join("head"), scratch.path().join("body"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--path-as-is", version, "--max-time", "20", "-D"])
        .arg(&head)
        .args(["-w", "%{http_code} %{http_version}"]);
    if method == "HEAD" {
        // curl writes the head where the body would go; it reads no body.
        cmd.args(["--head", "-o", "/dev/null"]);
    } else {
        cmd.arg("-o").arg(&body);
    }
    if let Some(range) = range {
        cmd.args(["-H", &format!("Range: {range}")]);
    }
    let out = cmd.arg(format!("{base}{path}")).output().expect("curl");
    let written = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, spoke) = written.split_once(' ').unwrap_or_default();
    let headers = std::fs::read_to_string(&head)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status: status.parse().unwrap_or(0),
        version: match spoke {
            "2" => "h2".into(),
            "1.1" => "h1".into(),
            v => v.into(),
        },
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
        // 18 (partial file) or 92 (HTTP/2 stream error): the body was cut short.
        whole: out.status.success(),
    }
}

/// The same requests over HTTP/3, HTTP/2 and HTTP/1.1, the answers per transport.
pub fn every_transport(
    base: &str,
    requests: &[(&str, &str, Option<&str>)],
) -> Vec<(&'static str, Vec<Answer>)> {
    let mut out = vec![("h3", h3(base, requests))];
    for (name, flag) in [("h2", "--http2"), ("h1", "--http1.1")] {
        out.push((name, requests.iter().map(|(m, p, r)| curl(base, flag, m, p, *r)).collect()));
    }
    for (name, answers) in &out {
        for a in answers {
            assert_eq!(&a.version, name, "{a:?}");
        }
    }
    out
}
