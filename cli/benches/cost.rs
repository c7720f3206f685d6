//! The serving cost per byte: server CPU seconds per GiB served, side by side in one run,
//! from one appliance process over HTTP/3 and over HTTPS/TCP (HTTP/2 and HTTP/1.1), and from
//! nginx serving the same bytes over HTTPS/TCP when it is installed (it says so when not).
//!
//! `cargo bench -p fillmesh-cli --bench cost [-- SIZE_MIB ROUNDS CLIENTS]` (defaults: 1024 MiB,
//! 3 rounds, 4 clients). The title (BLAKE3's extendable output) is imported into a store that
//! one `fillmesh node` process (the release binary, a separate process so that its
//! `/proc/PID/stat` is its CPU alone) then serves from, verifying every chunk it reads as it
//! always does; the same bytes are a plain file under nginx's root (a test config: `sendfile
//! on`, the same self-signed certificate, `user root;` when run as root, one worker, access
//! log off). Both files are read once before the rounds, so the page cache is warm. Each round
//! runs, for every server and protocol (the order rotating from round to round), CLIENTS
//! downloads of the whole title at once, each a separate process: `fillmesh play` (HTTP/3,
//! which verifies every chunk against the manifest), `curl --http2` and `curl --http1.1`
//! (which must report every byte received and the protocol asked for). The figure is the
//! server's CPU seconds (user + system, all its threads; nginx's master and workers) over the
//! GiB served; the table shows the median of the rounds and the ratios of the same run:
//! h3/h2 and h3/h1.1 of the appliance, appliance/nginx over h2 and over h1.1.
//!
//! `COST_BASELINE_BIN=/path/to/an/older/fillmesh[,another]` adds an appliance process from each
//! of those binaries, each serving its own copy of the title (an A/B of a change in the same
//! run), and the ratios of this build's appliance to each.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fillmesh_net::{identity, tls};
use fillmesh_node::store::Store;
use fillmesh_protocol::steering::{SteerAnswer, SteerEntry};
use fillmesh_protocol::{ChunkSize, Manifest};

/// A process the bench started, stopped (killed and waited for) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops nginx as it is meant to be stopped: its master told to (SIGTERM), which ends its
/// workers and then itself; killed after 5 s. (Killing the master alone left its workers
/// running.)
fn stop_nginx(guard: &mut Guard) {
    let pid = nix::unistd::Pid::from_raw(guard.0.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    // Bounded: 50 checks, 100 ms apart.
    for _ in 0..50 {
        if matches!(guard.0.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CPU seconds (user + system, in clock ticks of 10 ms) of process `pid`, all its threads.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces; utime and
    // stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let at = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    at(11) + at(12)
}

/// The direct children of `pid` (nginx's workers).
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// One server of the run.
struct Server {
    name: String,
    guard: Guard,
    /// nginx: its workers count as well.
    with_children: bool,
    /// The URL of the title over HTTPS.
    url: String,
    /// Steering's path naming it (`None`: no HTTP/3).
    steer: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.with_children {
            stop_nginx(&mut self.guard);
        }
    }
}

impl Server {
    fn cpu(&self) -> f64 {
        let pid = self.guard.0.id();
        let mut cpu = cpu_of(pid);
        if self.with_children {
            cpu += children_of(pid).into_iter().map(cpu_of).sum::<f64>();
        }
        cpu
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Proto {
    H3,
    H2,
    H1,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::H3 => "HTTP/3",
            Proto::H2 => "HTTP/2",
            Proto::H1 => "HTTP/1.1",
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

fn free_port() -> anyhow::Result<u16> {
    // Free on both UDP and TCP: the appliance serves HTTP/3 and HTTPS on the same port.
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no port free on both UDP and TCP")
}

/// Where `nginx` is, if installed (PATH, then Debian's /usr/sbin).
fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// Waits until `url` answers a HEAD over HTTPS (bounded: 30 s).
fn wait_up(url: &str, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let ok = Command::new("curl")
            .args(["-sSkf", "-I", "-o", "/dev/null", "--max-time", "2", url])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "{what} did not come up at {url}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An appliance process from `bin` serving the store at `data` on `port`.
fn appliance(
    bin: &Path,
    name: &str,
    data: &Path,
    port: u16,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<Guard> {
    let log = std::fs::File::create(data.with_extension("log"))?;
    let child = Command::new(bin)
        .args(["node", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(data)
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env("FILLMESH_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {name} ({}): {e}", bin.display()))?;
    Ok(Guard(child))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3).max(1);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4).max(1);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_fillmesh"));
    let baselines: Vec<PathBuf> = std::env::var("COST_BASELINE_BIN")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    let dir = tempfile::tempdir()?;
    let root = dir.path();

    // The title, in 1 MiB pieces of BLAKE3's extendable output.
    let www = root.join("www");
    std::fs::create_dir_all(&www)?;
    let file = www.join("title.bin");
    {
        let mut xof = blake3::Hasher::new().update(b"fillmesh cost bench").finalize_xof();
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut piece = vec![0u8; 1 << 20];
        for _ in 0..mib {
            xof.fill(&mut piece);
            out.write_all(&piece)?;
        }
        out.flush()?;
    }
    let (title, manifest) = Manifest::from_reader(std::fs::File::open(&file)?, ChunkSize::DEFAULT)?;

    // The players' certificate (both servers), and its pin for steering.
    let cert = rcgen::generate_simple_self_signed(vec!["fillmesh".to_owned(), "localhost".to_owned()])?;
    let (cert_pem, key_pem) = (root.join("cert.pem"), root.join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem())?;
    std::fs::write(&key_pem, cert.key_pair.serialize_pem())?;
    let pin: Option<String> =
        tls::spki_sha256(cert.cert.der()).map(|p| p.iter().map(|b| format!("{b:02x}")).collect());

    // The appliances' stores, each holding the title (imported here, before the process that
    // serves it starts).
    let mut appliances = vec![("appliance".to_owned(), bin.clone())];
    for b in &baselines {
        let stem = b.file_name().map_or_else(|| "baseline".into(), |n| n.to_string_lossy().into_owned());
        appliances.push((stem, b.clone()));
    }
    let mut servers = Vec::new();
    let mut entries = std::collections::HashMap::new();
    for (name, bin) in &appliances {
        let data = root.join(name);
        let peer = identity::peer_id(&identity::load_or_create(&data)?).to_string();
        {
            let store = Store::open(&data)?;
            let staging = root.join(format!("{name}.staging"));
            std::fs::copy(&file, &staging)?;
            store.import_complete(title, "title.bin", manifest.clone(), &staging)?;
        }
        let port = free_port()?;
        let guard = appliance(bin, name, &data, port, &cert_pem, &key_pem)?;
        let url = format!("https://127.0.0.1:{port}/titles/{title}");
        entries.insert(
            name.to_string(),
            SteerEntry {
                peer_id: peer,
                url: url.clone(),
                site: "bench".into(),
                region: "bench".into(),
                cert_sha256: pin.clone(),
            },
        );
        servers.push(Server {
            name: format!("fillmesh {name}"),
            guard,
            with_children: false,
            url,
            steer: Some(name.to_string()),
        });
    }

    // nginx, when installed.
    let nginx = find_nginx();
    match &nginx {
        None => {
            println!("nginx is not installed (Debian: `apt-get install nginx`): no nginx figures this run")
        }
        Some(nginx) => {
            let port = free_port()?;
            let prefix = root.join("nginx");
            std::fs::create_dir_all(prefix.join("logs"))?;
            // As root, workers would run as `nobody` and could not read the temp dir.
            let user = if nix::unistd::geteuid().is_root() { "user root;" } else { "" };
            let conf = format!(
                "{user}\nworker_processes 1;\ndaemon off;\nmaster_process on;\npid {p}/nginx.pid;\n\
                 error_log {p}/logs/error.log warn;\nevents {{ worker_connections 256; }}\n\
                 http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_timeout 65;\n\
                 client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n\
                 uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  types {{ }}\n\
                 default_type application/octet-stream;\n\
                 server {{\n    listen 127.0.0.1:{port} ssl http2;\n    ssl_certificate {c};\n\
                 ssl_certificate_key {k};\n    ssl_protocols TLSv1.2 TLSv1.3;\n    root {w};\n  }}\n}}\n",
                p = prefix.display(),
                c = cert_pem.display(),
                k = key_pem.display(),
                w = www.display(),
            );
            let conf_path = prefix.join("nginx.conf");
            std::fs::write(&conf_path, conf)?;
            let child = Command::new(nginx)
                .arg("-p")
                .arg(&prefix)
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(prefix.join("logs/stderr.log"))?)
                .spawn()?;
            let version = Command::new(nginx)
                .arg("-v")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned());
            println!("{} (sendfile on, one worker)", version.unwrap_or_default());
            servers.push(Server {
                name: "nginx".into(),
                guard: Guard(child),
                with_children: true,
                url: format!("https://127.0.0.1:{port}/title.bin"),
                steer: None,
            });
        }
    }

    // Steering for the HTTP/3 players: `/<appliance>/steer` names that appliance alone.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answers: Arc<std::collections::HashMap<String, SteerAnswer>> = Arc::new(
        entries
            .into_iter()
            .map(|(name, entry)| {
                let answer = SteerAnswer {
                    title: title.to_string(),
                    client_ip: "127.0.0.1".into(),
                    targets: vec![entry],
                    reason: String::new(),
                    token_expires: None,
                    token: None,
                };
                (name, answer)
            })
            .collect(),
    );
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let steering = format!("http://{}", listener.local_addr()?);
    let app = common::steer::router(answers);
    // The steering server runs on its own thread (the bench's main thread waits on clients).
    std::thread::spawn(move || {
        rt.block_on(async move {
            let _ = axum::serve(listener, app).await;
        })
    });

    for s in &servers {
        wait_up(&s.url, &s.name)?;
        // Warm the page cache with the file it serves (and check it is all there).
        let _ = one_round(s, Proto::H1, 1, mib, &steering, root)?;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "title {mib} MiB (1 MiB chunks), {clients} clients at once, {rounds} rounds, page cache warm; \
         loadavg before: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );

    // Every (server, protocol) pair, in an order that rotates from round to round.
    let mut pairs = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        for p in [Proto::H3, Proto::H2, Proto::H1] {
            if p != Proto::H3 || s.steer.is_some() {
                pairs.push((i, p));
            }
        }
    }
    let mut figures: std::collections::HashMap<(usize, Proto), Vec<f64>> = Default::default();
    for round in 0..rounds {
        let mut line = Vec::new();
        for k in 0..pairs.len() {
            let (i, p) = pairs[(k + round) % pairs.len()];
            let per_gib = one_round(&servers[i], p, clients, mib, &steering, root)?;
            figures.entry((i, p)).or_default().push(per_gib);
            line.push(format!("{} {} {per_gib:.3}", servers[i].name, p.name()));
        }
        println!("round {}: {}", round + 1, line.join(", "));
    }
    println!("\n| server | protocol | CPU s/GiB (median of {rounds}) | rounds |");
    println!("|---|---|---|---|");
    let med: std::collections::HashMap<(usize, Proto), f64> =
        figures.iter().map(|(k, v)| (*k, median(v.clone()))).collect();
    for &(i, p) in &pairs {
        let all = figures[&(i, p)].iter().map(|f| format!("{f:.3}")).collect::<Vec<_>>().join(", ");
        println!("| {} | {} | {:.3} | {all} |", servers[i].name, p.name(), med[&(i, p)]);
    }
    println!();
    let nginx_at = servers.iter().position(|s| s.name == "nginx");
    for (i, s) in servers.iter().enumerate().filter(|(_, s)| s.steer.is_some()) {
        let h3 = med[&(i, Proto::H3)];
        println!(
            "{}: h3/h2 {:.2}, h3/h1.1 {:.2} (target <= 1.3)",
            s.name,
            h3 / med[&(i, Proto::H2)],
            h3 / med[&(i, Proto::H1)]
        );
        if let Some(n) = nginx_at {
            println!(
                "{}: over nginx, h2 {:.2}, h1.1 {:.2} (target <= 1.0)",
                s.name,
                med[&(i, Proto::H2)] / med[&(n, Proto::H2)],
                med[&(i, Proto::H1)] / med[&(n, Proto::H1)]
            );
        }
    }
    if nginx_at.is_none() && nginx.is_none() {
        println!("nginx is not installed: no appliance/nginx ratio");
    }
    // Each baseline against this build's appliance (the first server).
    for (j, b) in servers.iter().enumerate().skip(1).filter(|(_, s)| s.steer.is_some()) {
        for p in [Proto::H3, Proto::H2, Proto::H1] {
            println!(
                "{} / {} over {}: {:.3}",
                servers[0].name,
                b.name,
                p.name(),
                med[&(0, p)] / med[&(j, p)]
            );
        }
    }
    drop(servers);
    Ok(())
}

/// CLIENTS downloads of the title from `server` over `proto` at once; the server's CPU
/// seconds per GiB served. Every client must have succeeded and received every byte.
fn one_round(
    server: &Server,
    proto: Proto,
    clients: usize,
    mib: u64,
    steering: &str,
    root: &Path,
) -> anyhow::Result<f64> {
    let bin = env!("CARGO_BIN_EXE_fillmesh");
    let before = server.cpu();
    let mut running = Vec::new();
    for c in 0..clients {
        let mut cmd = match proto {
            Proto::H3 => {
                let steer = server
                    .steer
                    .as_deref()
                    .ok_or_else(|| anyhow::anyhow!("{} has no HTTP/3", server.name))?;
                let title = server.url.rsplit('/').next().unwrap_or_default();
                let mut cmd = Command::new(bin);
                cmd.args([
                    "play",
                    title,
                    "--tracker-http",
                    &format!("{steering}/{steer}"),
                    "--out",
                    "/dev/null",
                ])
                .arg("--steer-cache")
                .arg(root.join(format!("steer-cache-{c}")))
                .env("FILLMESH_LOG", "error");
                cmd
            }
            Proto::H2 | Proto::H1 => {
                let mut cmd = Command::new("curl");
                cmd.args(["-sSk", "-o", "/dev/null", "-w", "%{size_download} %{http_version}"])
                    .arg(if proto == Proto::H2 { "--http2" } else { "--http1.1" })
                    .arg(&server.url);
                cmd
            }
        };
        running.push(Guard(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?));
    }
    for mut g in running {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = g.0.stdout.take() {
            std::io::Read::read_to_string(&mut o, &mut out)?;
        }
        if let Some(mut e) = g.0.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err)?;
        }
        let status = g.0.wait()?;
        anyhow::ensure!(status.success(), "{} over {}: {status}: {err}", server.name, proto.name());
        if proto != Proto::H3 {
            let want_version = if proto == Proto::H2 { "2" } else { "1.1" };
            let want = format!("{} {want_version}", mib << 20);
            anyhow::ensure!(
                out.trim() == want,
                "{} over {}: got `{}`, wanted `{want}`",
                server.name,
                proto.name(),
                out.trim()
            );
        }
    }
    // The server's last packets may still be accounted a moment after the clients end.
    std::thread::sleep(Duration::from_millis(200));
    let used = server.cpu() - before;
    Ok(used / ((clients as u64 * mib) as f64 / 1024.0))
}
